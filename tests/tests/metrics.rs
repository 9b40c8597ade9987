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

/// `prometheus` from Prometheus (Debian's `prometheus` package, which brings promtool).
fn prometheus_binary() -> String {
    std::env::var("SLUICE_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into())
}

/// A real Prometheus scraping `targets` every second, on an ephemeral port.
struct Prometheus {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(targets: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs: String = targets
            .iter()
            .map(|(job, target)| {
                format!(
                    "  - job_name: {job}\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{target}']\n"
                )
            })
            .collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}"),
        )
        .expect("write config");
        let port = sluice_tests::free_port();
        let child = std::process::Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (install Debian's prometheus package): {e}",
                    prometheus_binary()
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(30), "prometheus ready", || async {
            let ready = reqwest::get(format!("{url}/-/ready")).await.ok()?;
            ready.status().is_success().then_some(())
        })
        .await;
        Self {
            url,
            child,
            _dir: dir,
        }
    }

    /// An instant query's result vector; panics on a query Prometheus refuses.
    async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each chart's alert rules (`files/alerts.yaml`): name and expression.
fn alert_rules(chart: &str) -> Vec<(String, String)> {
    let path = format!(
        "{}/../deploy/helm/{chart}/files/alerts.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("alerts.yaml");
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert").to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect()
}

/// Each chart's dashboard queries (`files/dashboard.json`): panel title and expression, with
/// Grafana's `$__rate_interval` filled in.
fn dashboard_queries(chart: &str) -> Vec<(String, String)> {
    let path = format!(
        "{}/../deploy/helm/{chart}/files/dashboard.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard.json"))
            .expect("json");
    board["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| {
                    let expr = t["expr"]
                        .as_str()
                        .expect("expr")
                        .replace("$__rate_interval", "30s");
                    (title.clone(), expr)
                })
        })
        .collect()
}

fn metric_names(expr: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("sluice_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The charts' dashboards and alerts are only as good as the series they name: a real
/// Prometheus scrapes a control plane and a node running every role but query while events
/// flow, a configuration is refused and a credential is wrong; then every dashboard query
/// must return series, and every metric an alert names must exist, with each alert's own
/// expression accepted by Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_alert_metric_is_served_by_the_planes() {
    let vendor = Vendor::start().await;
    vendor.always("/hook", Reply::Status(200));
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let spec = |url: &str| {
        json!({
            "sources": [{"name": "web"}],
            "governance": [{"step": "validate_schema", "events": {"Order Completed": {
                "type": "object", "required": ["order_id"]}}}],
            "destinations": [{"name": "hook", "webhook": {"url": url}}],
            "archive": {"dataset": "web_events"}
        })
    };
    let hook = format!("{}/hook", vendor.url);
    let pipeline = cp.pipeline(&tenant, "web", spec(&hook)).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service_key) = cp.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");
    let archive = tempfile::tempdir().expect("tempdir");
    let node = start_node_with(&cp.grpc_url, &service_key, state.path(), |raw| {
        raw.node.roles = "proxy,receiver,processor,delivery,archiver".into();
        raw.archive.archive_dir = Some(archive.path().to_path_buf());
        raw.archive.archive_flush_secs = 1;
    })
    .await;
    let version = cp.config_version(&tenant).await;
    eventually(Duration::from_secs(10), "the configuration", || async {
        node.state.current().filter(|c| c.version >= version)
    })
    .await;
    let receiver = format!("http://{}", node.http_addr);
    let proxy = format!("http://{}", node.proxy_addr.expect("proxy"));
    let client = reqwest::Client::new();
    for (base, order) in [
        (&receiver, json!("o1")),
        (&receiver, json!(7)),
        (&proxy, json!("o2")),
    ] {
        let response = client
            .post(format!("{base}/v1/track"))
            .basic_auth(&write_key, Some(""))
            .json(&json!({"event": "Order Completed", "anonymousId": "a1",
                          "properties": {"order_id": order}}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
    }
    // A wrong credential at the control plane, and a configuration the node refuses (its
    // policy holds cloud metadata addresses back).
    let refused = client
        .get(format!("{}/api/v1/auth/me", cp.base))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    cp.update_pipeline(
        &tenant,
        &pipeline,
        spec("http://169.254.169.254/latest/meta-data"),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "deliveries, archive files, a NACK and a backlog sample",
        || async {
            let text = scrape(&receiver).await;
            (text.contains("sluice_events_total{stage=\"delivered\"} 2")
                && text.contains("sluice_events_total{stage=\"archived\"} 2")
                && !text.contains("sluice_config_rejected_total 0")
                && text.contains("sluice_consumer_pending{"))
            .then_some(())
        },
    )
    .await;
    let cp_addr = cp.base.trim_start_matches("http://").to_owned();
    let node_addr = node.http_addr.to_string();
    let prometheus = Prometheus::start(&[
        ("sluice-control-plane", &cp_addr),
        ("sluice-data-plane", &node_addr),
    ])
    .await;
    // rate() over 30 s needs two samples of every series.
    eventually(
        Duration::from_secs(30),
        "a few scrapes of both planes",
        || async {
            let up = prometheus.query("count_over_time(up[30s]) >= 4").await;
            (up.len() == 2).then_some(())
        },
    )
    .await;

    let mut empty = Vec::new();
    for chart in ["sluice-data-plane", "sluice-control-plane"] {
        for (title, expr) in dashboard_queries(chart) {
            if prometheus.query(&expr).await.is_empty() {
                empty.push(format!("{chart}: {title}: {expr}"));
            }
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries that return no series:\n{}",
        empty.join("\n")
    );

    let mut missing = Vec::new();
    for chart in ["sluice-data-plane", "sluice-control-plane"] {
        let rules = alert_rules(chart);
        assert!(rules.len() >= 5, "{chart}: {rules:?}");
        for (alert, expr) in rules {
            prometheus.query(&expr).await;
            for name in metric_names(&expr) {
                if prometheus.query(&format!("count({name})")).await.is_empty() {
                    missing.push(format!("{chart}: {alert}: {name}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "alerts name metrics no plane serves:\n{}",
        missing.join("\n")
    );
    // The data plane's rules include the signature-failure alert the node counts.
    assert!(
        alert_rules("sluice-data-plane")
            .iter()
            .any(|(_, expr)| expr.contains("sluice_config_signature_failures_total"))
    );
    node.shutdown().await;
}
