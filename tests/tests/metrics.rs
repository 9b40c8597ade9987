//! Both planes' `/metrics` as Prometheus reads them: a pipeline named with a quote and a
//! backslash must not break the scrape, every metric has HELP text (`promtool check metrics`,
//! Prometheus's own linter, passes), series are keyed by pipeline id with the name as a label,
//! rejections are counted by reason, and the latency histograms fill as events flow.

use std::io::Write as _;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sluice_tests::{Cp, CpOptions, Reply, Vendor, eventually, start_node_with};

/// `promtool` from Prometheus (Debian's `prometheus` package; `.ci/run` installs it).
fn promtool() -> String {
    std::env::var("SLUICE_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

/// Runs `promtool check metrics` on a scrape; panics with its findings when it complains.
fn lint(what: &str, text: &str) {
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (install Debian's prometheus package): {e}",
                promtool()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the scrape");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed on the {what}:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_planes_pass_promtool_with_a_hostile_pipeline_name() {
    let vendor = Vendor::start().await;
    vendor.always("/hook", Reply::Status(200));
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let name = r#"a"b\"#;
    let spec = json!({
        "sources": [{"name": "web"}],
        "governance": [{"step": "validate_schema", "events": {"Order Completed": {
            "type": "object", "required": ["order_id"],
            "properties": {"order_id": {"type": "string"}}}}}],
        "destinations": [{"name": "hook", "webhook": {"url": format!("{}/hook", vendor.url)}}]
    });
    let pipeline = cp.pipeline(&tenant, name, spec).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service_key) = cp.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node_with(&cp.grpc_url, &service_key, state.path(), |raw| {
        raw.node.roles = "receiver,processor,delivery".into();
    })
    .await;
    let version = cp.config_version(&tenant).await;
    eventually(Duration::from_secs(5), "the configuration", || async {
        node.state.current().filter(|c| c.version >= version)
    })
    .await;
    let receiver = format!("http://{}", node.http_addr);
    let events = json!({"batch": [
        {"type": "track", "event": "Order Completed", "anonymousId": "a1", "properties": {"order_id": "o1"}},
        {"type": "track", "event": "Order Completed", "anonymousId": "a2", "properties": {"order_id": 7}}
    ]});
    let response = reqwest::Client::new()
        .post(format!("{receiver}/v1/batch"))
        .basic_auth(&write_key, Some(""))
        .json(&events)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let (text, _) = eventually(Duration::from_secs(10), "one delivery", || async {
        let text = scrape(&receiver).await;
        text.contains("sluice_events_total{stage=\"delivered\"} 1")
            .then_some(text)
    })
    .await;
    lint("data plane", &text);
    let labels = format!(r#"pipeline_id="{pipeline}",pipeline="a\"b\\",destination="hook""#);
    assert!(
        text.contains(&format!(
            "sluice_destination_events_total{{{labels},outcome=\"delivered\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains("sluice_rejected_total{reason=\"schema_violation\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sluice_rejected_total{reason=\"bad_envelope\"} 0"),
        "{text}"
    );
    for histogram in [
        format!("sluice_delivery_request_seconds_count{{{labels},outcome=\"delivered\"}} 1"),
        "sluice_bus_publish_seconds_count{stage=\"raw\"} 1".to_owned(),
        "sluice_processing_batch_seconds_count ".to_owned(),
        "sluice_bus_publish_seconds_count{stage=\"deliver\"}".to_owned(),
    ] {
        assert!(text.contains(&histogram), "{histogram} in\n{text}");
    }
    lint("control plane", &scrape(&cp.base).await);
    node.shutdown().await;
}
