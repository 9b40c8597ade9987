//! Readiness covers the roles, not only the configuration: a node whose processor, delivery
//! and archiver cannot read their bus stages answers 503 and names them, and is ready again
//! once they can. The bus is a NATS server of the test's own (the machine's binary on a port
//! of its own), so the test can kill it and start it again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_tests::{Cp, CpOptions, eventually, free_port, start_node_with};

/// A `nats-server` with JetStream on a port and store directory of its own.
struct NatsServer {
    child: Child,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    fn binary() -> String {
        std::env::var("SLUICE_TEST_NATS_SERVER").unwrap_or_else(|_| {
            if Path::new("/usr/sbin/nats-server").exists() {
                "/usr/sbin/nats-server".into()
            } else {
                "nats-server".into()
            }
        })
    }

    async fn start(port: u16, store: &Path) -> Self {
        let child = Command::new(Self::binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (set SLUICE_TEST_NATS_SERVER): {e}",
                    Self::binary()
                )
            });
        eventually(Duration::from_secs(10), "nats-server listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Self {
            child,
            port,
            store: store.to_owned(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn ready(url: &str) -> (StatusCode, Value) {
    let response = reqwest::get(format!("{url}/health/ready"))
        .await
        .expect("get /health/ready");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

/// The body of the first `/health/ready` answer with `status`, within `within`.
async fn until_ready_says(url: &str, status: StatusCode, within: Duration, what: &str) -> Value {
    eventually(within, what, || async {
        let (got, body) = ready(url).await;
        (got == status).then_some(body)
    })
    .await
    .0
}

/// Waits until the node is ready, and checks that it says it reads exactly `stages`.
async fn until_every_stage_is_read(url: &str, stages: &[&str], within: Duration) {
    let body = until_ready_says(url, StatusCode::OK, within, "the node ready").await;
    let want: serde_json::Map<String, Value> = stages
        .iter()
        .map(|stage| ((*stage).to_owned(), "reading".into()))
        .collect();
    assert_eq!(body["consumers"], Value::Object(want), "{body}");
}

async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("get /metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_ready_only_while_its_roles_read_their_stages() {
    let store = tempfile::tempdir().expect("tempdir");
    let mut nats = NatsServer::start(free_port(), store.path()).await;

    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let spec = json!({"sources": [{"name": "web"}], "destinations": [
        {"name": "crm", "webhook": {"url": "http://127.0.0.1:9/hook"}}]});
    let pipeline = cp.pipeline(&tenant, "main", spec).await;
    let (_, key) = cp.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");
    let nats_url = format!("nats://127.0.0.1:{}", nats.port);
    let node = start_node_with(&cp.grpc_url, &key, state.path(), |raw| {
        raw.node.roles = "processor,delivery,archiver".into();
        raw.bus.nats_url = Some(nats_url);
        raw.bus.nats_prefix = format!("ready_{}", uuid::Uuid::now_v7().simple());
    })
    .await;
    let url = format!("http://{}", node.http_addr);
    let deliver = sluice_pipeline::stages::deliver(&pipeline, "crm");

    // Every stage a role reads is listed, and the node is ready once all are read.
    until_every_stage_is_read(&url, &["archive", "raw", &deliver], Duration::from_secs(15)).await;
    let text = metrics(&url).await;
    assert!(
        text.contains("sluice_consumer_reading{stage=\"raw\"} 1"),
        "{text}"
    );

    // The bus goes away: the node says it is not ready, and which stages it cannot read.
    nats.kill();
    let body = until_ready_says(
        &url,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(30),
        "the node unready",
    )
    .await;
    assert_eq!(body["status"], "unavailable", "{body}");
    let reason = body["reason"].as_str().expect("reason");
    assert!(reason.starts_with("not reading "), "{body}");
    // Each role notices on its own next read; at least one has, and says why.
    let failing: Vec<&str> = ["raw", "archive", deliver.as_str()]
        .into_iter()
        .filter(|stage| {
            body["consumers"][*stage]
                .as_str()
                .is_some_and(|s| s.starts_with("failing: ") && s.contains("NATS"))
        })
        .collect();
    assert!(!failing.is_empty(), "{body}");
    assert_eq!(
        body["config_version"],
        cp.config_version(&tenant).await,
        "{body}"
    );
    eventually(
        Duration::from_secs(30),
        "every stage reported as not read",
        || async {
            let text = metrics(&url).await;
            ["raw", "archive", deliver.as_str()]
                .iter()
                .all(|stage| {
                    text.contains(&format!("sluice_consumer_reading{{stage=\"{stage}\"}} 0"))
                })
                .then_some(())
        },
    )
    .await;

    // The same server is back: the client reconnects and the node is ready again.
    let _nats = NatsServer::start(nats.port, &nats.store.clone()).await;
    until_every_stage_is_read(&url, &["archive", "raw", &deliver], Duration::from_secs(30)).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_only_receives_has_no_consumers_to_wait_for() {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    cp.pipeline(&tenant, "main", json!({"sources": [{"name": "web"}]}))
        .await;
    let (_, key) = cp.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node_with(&cp.grpc_url, &key, state.path(), |_| {}).await;
    let url = format!("http://{}", node.http_addr);
    until_every_stage_is_read(&url, &[], Duration::from_secs(15)).await;
    node.shutdown().await;
}
