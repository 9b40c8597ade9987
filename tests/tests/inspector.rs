//! The live inspector end to end: a real control plane configures a node (receiver,
//! processor, delivery, archiver, query) through a TCP relay that records every byte between
//! the planes; a local vendor fails, then recovers; a second destination points at a dead
//! port. The live stream shows the failed attempts and then the delivery, health says which
//! destination fails and why, a trace follows one event into the archive after the ring has
//! let it go, another tenant sees nothing, and no event byte ever crosses to the control plane.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_tests::{
    Cp, CpOptions, Reply, Vendor, eventually, free_port, recording_relay, start_node_with,
};

/// A live stream's events as they arrive: (event name, data).
struct Live {
    events: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Live {
    async fn open(url: &str, token: &str) -> Result<Live, (StatusCode, Value)> {
        let mut response = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("live");
        if response.status() != StatusCode::OK {
            let status = response.status();
            return Err((status, response.json().await.unwrap_or(Value::Null)));
        }
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "server-sent events"
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let out = events.clone();
        tokio::spawn(async move {
            let mut text = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    let mut name = "message".to_owned();
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            name = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if !data.is_empty() {
                        let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                        out.lock().expect("lock").push((name, value));
                    }
                }
            }
        });
        Ok(Live { events })
    }

    fn records(&self) -> Vec<Value> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|(name, _)| name == "record")
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn of(records: &[Value], event_id: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["event_id"] == event_id)
        .map(|r| {
            let mut step = r["stage"].as_str().unwrap_or_default().to_owned();
            if let Some(d) = r["destination"].as_str() {
                step = format!("{step}:{d}");
            }
            if let Some(status) = r["status"].as_u64() {
                step = format!("{step}:{status}");
            }
            if let Some(outcome) = r["outcome"].as_str() {
                step = format!("{step}:{outcome}");
            }
            step
        })
        .collect()
}

async fn get(url: &str, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_shows_every_stage_live_and_traces_an_event_into_the_archive() {
    let vendor = Vendor::start().await;
    vendor.script("/hook", vec![Reply::Status(500), Reply::Status(503)]);
    let dead = format!("http://127.0.0.1:{}/gone", free_port());
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let spec = json!({"sources": [{"name": "web"}],
        "governance": [{"step": "pii", "rules": [{"fields": ["properties.email"], "action": "hash"}]}],
        "destinations": [
            {"name": "hook", "webhook": {"url": format!("{}/hook", vendor.url)},
                "retry": {"max_attempts": 5, "within_seconds": 2}},
            {"name": "dead", "webhook": {"url": dead}, "retry": {"max_attempts": 2, "within_seconds": 1}},
        ],
        "archive": {"dataset": "web_events"}});
    let pipeline = cp.pipeline(&tenant, "main", spec).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service_key) = cp.service_key(&tenant).await;
    let upstream = cp.grpc_url.trim_start_matches("http://").to_owned();
    let (relay_url, wire) = recording_relay(upstream).await;
    let state = tempfile::tempdir().expect("tempdir");
    let archive = tempfile::tempdir().expect("tempdir");
    let archive_dir = archive.path().to_path_buf();
    let node = start_node_with(&relay_url, &service_key, state.path(), |raw| {
        raw.node.roles = "receiver,processor,delivery,archiver,query".into();
        raw.node.status_interval_secs = 1;
        raw.archive.archive_dir = Some(archive_dir);
        raw.archive.archive_flush_secs = 1;
        raw.inspect.inspect_ring_records = 80;
    })
    .await;
    let base = format!("http://{}", node.http_addr);
    let version = cp.config_version(&tenant).await;
    eventually(Duration::from_secs(5), "the configuration", || async {
        node.state.current().filter(|c| c.version >= version)
    })
    .await;

    // A person watches every event named "Checkout"; a second viewer watches only outcomes.
    let person = cp.query_token(&tenant).await;
    let live = Live::open(&format!("{base}/v1/live?event=Checkout"), &person)
        .await
        .expect("the live stream opens");
    let outcomes = Live::open(
        &format!("{base}/v1/live?outcome=dead_lettered"),
        &service_key,
    )
    .await
    .expect("the live stream opens");
    let marker = "inspector-secret-7f3a";
    let send = |events: Vec<Value>| {
        let (base, key) = (base.clone(), write_key.clone());
        async move {
            let response = reqwest::Client::new()
                .post(format!("{base}/v1/batch"))
                .basic_auth(key, Some(""))
                .json(&json!({"batch": events}))
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    send(vec![
        json!({"type": "track", "event": "Checkout", "messageId": "ev-1", "userId": "u-inspected",
            "properties": {"note": marker, "email": "ana@example.com"}}),
        json!({"type": "track", "event": "Browse", "messageId": "ev-other", "userId": "u-2"}),
    ])
    .await;

    // The failed attempts, then the delivery; the dead destination's connection errors,
    // then its dead letter.
    let (steps, _) = eventually(
        Duration::from_secs(20),
        "ev-1's way in the live stream",
        || async {
            let steps = of(&live.records(), "ev-1");
            (steps.contains(&"outcome:hook:delivered".to_owned())
                && steps.contains(&"outcome:dead:dead_lettered".to_owned())
                && steps.contains(&"archived".to_owned()))
            .then_some(steps)
        },
    )
    .await;
    let position = |step: &str| {
        steps
            .iter()
            .position(|s| s == step)
            .unwrap_or_else(|| panic!("{step} in {steps:?}"))
    };
    assert!(position("received") < position("governed"), "{steps:?}");
    assert!(position("governed") < position("shaped:hook"), "{steps:?}");
    // The vendor's first two answers (500, 503) go to whichever requests come first.
    let failed = steps
        .iter()
        .position(|s| s == "attempt:hook:500" || s == "attempt:hook:503")
        .unwrap_or_else(|| panic!("a failed attempt in {steps:?}"));
    assert!(failed < position("outcome:hook:retrying"), "{steps:?}");
    assert!(position("outcome:hook:retrying") < position("attempt:hook:200"));
    assert!(position("attempt:hook:200") < position("outcome:hook:delivered"));
    assert!(
        of(&live.records(), "ev-other").is_empty(),
        "the filter leaves other events out"
    );
    let records = live.records();
    let governed = records
        .iter()
        .find(|r| r["event_id"] == "ev-1" && r["stage"] == "governed")
        .expect("governed");
    assert_eq!(governed["body"]["properties"]["note"], marker);
    assert_ne!(
        governed["body"]["properties"]["email"], "ana@example.com",
        "the PII rule applies to what the tap shows after it"
    );
    let received = records
        .iter()
        .find(|r| r["event_id"] == "ev-1" && r["stage"] == "received")
        .expect("received");
    assert_eq!(received["body"]["user_id"], "u-inspected");
    let retrying = records
        .iter()
        .find(|r| r["event_id"] == "ev-1" && r["outcome"] == "retrying")
        .expect("retrying");
    assert!(retrying["next_attempt_at"].is_string(), "{retrying}");
    assert!(
        records.iter().any(|r| r["stage"] == "attempt"
            && r["destination"] == "dead"
            && r["error"].as_str().is_some_and(|e| e.contains("connect"))),
        "the dead destination's attempts say why"
    );
    eventually(
        Duration::from_secs(5),
        "the outcome viewer's dead letters",
        || async {
            let seen = outcomes.records();
            (seen.iter().all(|r| r["outcome"] == "dead_lettered")
                && seen
                    .iter()
                    .any(|r| r["event_id"] == "ev-1" && r["body"]["error"].is_string()))
            .then_some(())
        },
    )
    .await;

    // Health: the dead destination is failing with its error; hook recovered. The node is
    // still ready (a vendor's outage is not the node's).
    let (status, ready) = get(&format!("{base}/health/ready"), "").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let health = |body: &Value, name: &str| {
        body["destinations"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["destination"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(health(&ready, "hook")["state"], "ok", "{ready}");
    assert_eq!(health(&ready, "dead")["state"], "failing", "{ready}");
    assert!(
        health(&ready, "dead")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect"))
    );
    assert!(
        health(&ready, "hook")["last_5m"]["retried"].as_u64() >= Some(2),
        "{ready}"
    );
    assert_eq!(ready["failing_destinations"], json!(["main/dead"]));
    eventually(
        Duration::from_secs(10),
        "the fleet's destination health",
        || async {
            let nodes = cp.data_planes(&tenant).await;
            let node = nodes.first()?;
            (health(node, "dead")["state"] == "failing"
                && health(node, "hook")["state"] == "ok"
                && health(node, "hook")["last_24h"]["delivered"].as_u64() >= Some(1))
            .then_some(())
        },
    )
    .await;

    // The trace from the ring: every stage, the DLQ entry and the archive file.
    let (status, trace) = get(&format!("{base}/v1/events/ev-1/trace"), &person).await;
    assert_eq!(status, StatusCode::OK, "{trace}");
    assert_eq!(trace["from"], "ring");
    let file = trace["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|r| r["stage"] == "archived"))
        .and_then(|r| r["file"].as_str())
        .expect("the archive file")
        .to_owned();
    assert!(archive.path().join(&file).exists(), "{file}");
    assert_eq!(trace["dlq"][0]["destination"], "dead", "{trace}");

    // Enough events to roll the ring over: the trace then comes from the archive and the DLQ.
    send(
        (0..60)
            .map(|i| json!({"type": "track", "event": "Fill", "anonymousId": "a-1", "messageId": format!("fill-{i}")}))
            .collect(),
    )
    .await;
    let (trace, _) = eventually(
        Duration::from_secs(30),
        "a trace from the archive",
        || async {
            let (status, trace) = get(&format!("{base}/v1/events/ev-1/trace"), &service_key).await;
            (status == StatusCode::OK && trace["from"] == "archive").then_some(trace)
        },
    )
    .await;
    let copy = &trace["archive"]["copies"][0];
    assert_eq!(copy["row"]["event"], "Checkout", "{trace}");
    assert_eq!(copy["files"], json!([file]), "{trace}");
    assert!(
        trace["dlq"].as_array().is_some_and(|d| d
            .iter()
            .any(|e| e["destination"] == "dead" && e["id"] == "ev-1")),
        "{trace}"
    );
    let (status, body) = get(&format!("{base}/v1/events/nope/trace"), &service_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let long = "x".repeat(300);
    let (status, _) = get(&format!("{base}/v1/events/{long}/trace"), &service_key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Bad filters are the caller's mistake.
    let (status, body) = get(&format!("{base}/v1/live?stage=sent"), &service_key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = get(&format!("{base}/v1/live?colour=red"), &service_key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Another tenant's person and key get nothing.
    let other = cp.tenant("globex").await;
    let foreign = cp.query_token(&other).await;
    let (status, _) = Live::open(&format!("{base}/v1/live"), &foreign)
        .await
        .err()
        .expect("refused");
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get(&format!("{base}/v1/events/ev-1/trace"), &foreign).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, other_key) = cp.service_key(&other).await;
    let (status, _) = get(&format!("{base}/v1/events/ev-1/trace"), &other_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&format!("{base}/v1/live"), &write_key).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "ingest keys only send events"
    );

    // Nothing of any event crossed between the planes while all this ran.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let wire = wire.lock().expect("lock").clone();
    assert!(wire.len() > 1000, "the relay carried the sync stream");
    let needles = [
        marker,
        "ev-1",
        "u-inspected",
        "ana@example.com",
        "fill-1",
        "Checkout",
    ];
    let crossed = sluice_tests::crossed(&wire, &needles);
    assert!(
        crossed.is_empty(),
        "{crossed:?} crossed to the control plane"
    );
    node.shutdown().await;
}
