//! Processor and delivery end to end: a real control plane configures a node running the
//! receiver, processor and delivery roles; events go in through the Segment API; real HTTP
//! servers on loopback stand in for the vendors and count what arrives.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_data_plane::RunningNode;
use sluice_tests::{Cp, CpOptions, Reply, Vendor, eventually, start_node_with};

struct World {
    cp: Cp,
    tenant: String,
    pipeline: String,
    write_key: String,
    service_key: String,
    node: RunningNode,
    receiver: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A control plane, a pipeline with `spec`, and a node running receiver, processor and
/// delivery with `secrets` in its secrets directory.
async fn world(spec: Value, secrets: &[(&str, &str)]) -> World {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp.pipeline(&tenant, "main", spec).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service_key) = cp.service_key(&tenant).await;
    let secrets_dir = tempfile::tempdir().expect("tempdir");
    for (name, value) in secrets {
        std::fs::write(secrets_dir.path().join(name), value).expect("secret");
    }
    let state = tempfile::tempdir().expect("tempdir");
    let secrets_path = secrets_dir.path().to_path_buf();
    let node = start_node_with(&cp.grpc_url, &service_key, state.path(), |raw| {
        raw.node.roles = "receiver,processor,delivery".into();
        raw.node.secrets_dir = Some(secrets_path);
        raw.node.status_interval_secs = 1;
    })
    .await;
    let receiver = format!("http://{}", node.http_addr);
    let world = World {
        cp,
        tenant,
        pipeline,
        write_key,
        service_key,
        node,
        receiver,
        _dirs: (secrets_dir, state),
    };
    world.synced().await;
    world
}

impl World {
    async fn synced(&self) {
        let version = self.cp.config_version(&self.tenant).await;
        eventually(
            Duration::from_secs(5),
            "the node's configuration",
            || async { self.node.state.current().filter(|c| c.version >= version) },
        )
        .await;
    }

    async fn send(&self, events: Vec<Value>) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/batch", self.receiver))
            .basic_auth(&self.write_key, Some(""))
            .json(&json!({"batch": events}))
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{:?}",
            response.text().await
        );
    }

    /// A call to the node's DLQ API with `key`.
    async fn dlq(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.receiver))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// An `api` key with the viewer role, once the node knows it.
    async fn viewer_key(&self) -> String {
        let (status, viewer) = self
            .cp
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{}/keys", self.tenant),
                Some(json!({"name": "auditor", "type": "api", "role": "viewer"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let viewer = viewer["key"].as_str().expect("key").to_owned();
        self.synced().await;
        viewer
    }

    /// The fleet's counters of this node, as the control plane last heard them.
    async fn counters(&self) -> Value {
        self.cp
            .data_planes(&self.tenant)
            .await
            .first()
            .map(|n| n["counters"].clone())
            .unwrap_or(Value::Null)
    }
}

fn track(id: &str, extra: Value) -> Value {
    let mut event = json!({"type": "track", "event": "Order Completed", "userId": "u-1", "messageId": id,
        "properties": {"order_id": format!("o-{id}"), "revenue": 42.5}});
    if let (Value::Object(event), Value::Object(extra)) = (&mut event, extra) {
        for (k, v) in extra {
            event.insert(k, v);
        }
    }
    event
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn webhook(name: &str, url: String, extra: Value) -> Value {
    let mut destination = json!({"name": name, "webhook": {"url": url}});
    if let (Value::Object(d), Value::Object(extra)) = (&mut destination, extra) {
        for (k, v) in extra {
            d.insert(k, v);
        }
    }
    destination
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_delivered_once_signed_and_failures_retried() {
    let vendor = Vendor::start().await;
    vendor.script(
        "/flaky",
        vec![Reply::Status(500), Reply::Status(503), Reply::Status(502)],
    );
    let spec = json!({"sources": [{"name": "web"}], "destinations": [
        {"name": "ok", "webhook": {"url": format!("{}/ok", vendor.url), "signing_secret": "HOOK_SECRET",
            "headers": {"X-Team": "growth"}}},
        webhook("flaky", format!("{}/flaky", vendor.url), json!({"retry": {"max_attempts": 5, "within_seconds": 2}})),
    ]});
    let w = world(spec, &[("HOOK_SECRET", "s3cret")]).await;
    let sent = ids("e", 3);
    w.send(sent.iter().map(|id| track(id, json!({}))).collect())
        .await;
    let want: BTreeSet<String> = sent.iter().cloned().collect();
    eventually(
        Duration::from_secs(10),
        "both destinations to accept all",
        || async {
            (vendor.accepted_keys("/ok") == want && vendor.accepted_keys("/flaky") == want)
                .then_some(())
        },
    )
    .await;

    for request in vendor.received("/ok") {
        let (t, v1) = request.headers["x-sluice-signature"]
            .split_once(",v1=")
            .expect("t=…,v1=…");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
        mac.update(format!("{}.", t.trim_start_matches("t=")).as_bytes());
        mac.update(&request.body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1, expected, "the signature covers the body sent");
        assert_eq!(request.headers["x-team"], "growth");
        let body = request.json();
        assert_eq!(
            body["message_id"],
            request.key(),
            "idempotency key = event id"
        );
        assert_eq!(body["properties"]["revenue"], 42.5);
    }
    let flaky = vendor.received("/flaky");
    assert_eq!(flaky.len(), 6, "three failures, then each event once");
    let accepted = flaky.iter().filter(|r| r.status == 200).count();
    assert_eq!(accepted, 3, "delivered once each");
    eventually(Duration::from_secs(5), "the fleet counters", || async {
        let c = w.counters().await;
        (c["main/flaky.delivered"] == 3 && c["main/flaky.retried"] == 3 && c["delivered"] == 6)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_dead_lettered_at_once_and_replayed_later() {
    let vendor = Vendor::start().await;
    vendor.always("/hook", Reply::Status(400));
    let spec = json!({"sources": [{"name": "web"}], "destinations": [webhook("hook", format!("{}/hook", vendor.url), json!({}))]});
    let w = world(spec, &[]).await;
    w.send(vec![track("r-1", json!({})), track("r-2", json!({}))])
        .await;
    let path = format!("/v1/dlq/{}/hook", w.pipeline);
    let entries = eventually(Duration::from_secs(10), "two dead letters", || async {
        let (status, body) = w.dlq(Method::GET, &path, &w.service_key, None).await;
        (status == StatusCode::OK && body["data"].as_array().is_some_and(|d| d.len() == 2))
            .then_some(body)
    })
    .await
    .0;
    let first = &entries["data"][0];
    assert_eq!(
        (first["status"].as_u64(), first["attempts"].as_u64()),
        (Some(400), Some(1)),
        "{first}"
    );
    assert!(
        first["response"]
            .as_str()
            .unwrap_or_default()
            .contains("answer"),
        "{first}"
    );
    assert_eq!(first["payload"]["message_id"], first["id"]);
    assert_eq!(vendor.received("/hook").len(), 2, "a 4xx is not retried");

    // Who may look and who may act.
    let (status, _) = w.dlq(Method::GET, &path, "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let viewer = w.viewer_key().await;
    let (status, _) = w.dlq(Method::GET, &path, &viewer, None).await;
    assert_eq!(status, StatusCode::OK, "viewers read");
    let (status, _) = w
        .dlq(
            Method::POST,
            &format!("{path}/replay"),
            &viewer,
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "viewers do not replay");
    let (status, body) = w
        .dlq(
            Method::POST,
            &format!("{path}/replay"),
            &w.service_key,
            Some(json!({"all": true, "cursors": [1]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = w
        .dlq(
            Method::GET,
            &format!("/v1/dlq/{}/nope", w.pipeline),
            &w.service_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The destination recovers; a replay delivers with the original idempotency keys.
    vendor.always("/hook", Reply::Status(200));
    let (status, body) = w
        .dlq(
            Method::POST,
            &format!("{path}/replay"),
            &w.service_key,
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{body}"
    );
    let want: BTreeSet<String> = ["r-1".to_owned(), "r-2".to_owned()].into();
    eventually(Duration::from_secs(10), "the replayed events", || async {
        (vendor.accepted_keys("/hook") == want).then_some(())
    })
    .await;
    let (_, overview) = w.dlq(Method::GET, "/v1/dlq", &w.service_key, None).await;
    assert_eq!(overview["data"][0]["depth"], 0, "{overview}");
    eventually(Duration::from_secs(5), "the fleet counters", || async {
        let c = w.counters().await;
        (c["main/hook.failed"] == 2 && c["main/hook.delivered"] == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_rate_limits_are_retried_then_dead_lettered() {
    let vendor = Vendor::start().await;
    vendor.always("/slow", Reply::Slow(Duration::from_millis(1500)));
    vendor.script("/limited", vec![Reply::RetryAfter(429, 1)]);
    let spec = json!({"sources": [{"name": "web"}], "destinations": [
        webhook("slow", format!("{}/slow", vendor.url), json!({"timeout_ms": 200, "retry": {"max_attempts": 3, "within_seconds": 1}})),
        // Retry-After is a floor; the short window keeps the jittered wait below it.
        webhook("limited", format!("{}/limited", vendor.url), json!({"retry": {"max_attempts": 5, "within_seconds": 2}})),
    ]});
    let w = world(spec, &[]).await;
    w.send(vec![track("t-1", json!({}))]).await;
    let path = format!("/v1/dlq/{}/slow", w.pipeline);
    let entries = eventually(
        Duration::from_secs(15),
        "the timed-out event in the DLQ",
        || async {
            let (_, body) = w.dlq(Method::GET, &path, &w.service_key, None).await;
            body["data"]
                .as_array()
                .is_some_and(|d| d.len() == 1)
                .then_some(body)
        },
    )
    .await
    .0;
    let entry = &entries["data"][0];
    assert_eq!(entry["attempts"], 3, "{entry}");
    assert_eq!(entry["error"], "no answer within 200 ms", "{entry}");
    assert!(entry.get("status").is_none());

    let limited = eventually(Duration::from_secs(10), "the retry after 429", || async {
        let r = vendor.received("/limited");
        (r.len() == 2).then_some(r)
    })
    .await
    .0;
    assert_eq!((limited[0].status, limited[1].status), (429, 200));
    assert!(
        limited[1].at.duration_since(limited[0].at) >= Duration::from_millis(950),
        "Retry-After is honoured: {:?}",
        limited[1].at.duration_since(limited[0].at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_slow_destination_does_not_delay_a_healthy_one() {
    let vendor = Vendor::start().await;
    vendor.always("/slow", Reply::Slow(Duration::from_secs(3)));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let spec = json!({"sources": [{"name": "web"}], "destinations": [
        webhook("dead", format!("http://{dead}/gone"), json!({"concurrency": 1})),
        webhook("slow", format!("{}/slow", vendor.url), json!({"concurrency": 2})),
        webhook("healthy", format!("{}/fast", vendor.url), json!({})),
    ]});
    let w = world(spec, &[]).await;
    let mut sent_at = std::collections::HashMap::new();
    for round in 0..20 {
        let batch: Vec<Value> = ids(&format!("h{round}"), 10)
            .iter()
            .map(|id| track(id, json!({})))
            .collect();
        let at = Instant::now();
        for event in &batch {
            sent_at.insert(event["messageId"].as_str().expect("id").to_owned(), at);
        }
        w.send(batch).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eventually(
        Duration::from_secs(10),
        "the healthy destination to get all 200",
        || async { (vendor.accepted_keys("/fast").len() == 200).then_some(()) },
    )
    .await;
    let mut latencies: Vec<Duration> = vendor
        .received("/fast")
        .iter()
        .map(|r| r.at.duration_since(sent_at[&r.key()]))
        .collect();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    assert!(
        p99 < Duration::from_millis(300),
        "healthy p99 {p99:?} while others are stuck"
    );
    assert!(
        vendor.received("/slow").len() < 20,
        "the slow one is still working through its backlog"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_and_consent_are_enforced_on_what_leaves() {
    let vendor = Vendor::start().await;
    let spec = json!({"sources": [{"name": "web"}],
    "governance": [
        {"step": "pii", "rules": [{"detect": ["card"], "action": "redact"}]},
        {"step": "enrich", "truncate_ip": true}
    ],
    "destinations": [
        webhook("crm", format!("{}/crm", vendor.url), json!({"consent": ["analytics"],
            "pii": [{"fields": ["traits.email"], "action": "hash"}]})),
        webhook("ads", format!("{}/ads", vendor.url), json!({"consent": ["ads"]})),
        {"name": "meta", "consent": ["ads"], "meta": {"pixel_id": "123", "access_token": "META_TOKEN",
            "endpoint": format!("{}/meta", vendor.url)}},
        {"name": "ga4", "ga4": {"measurement_id": "G-TEST1234", "api_secret": "GA4_SECRET",
            "endpoint": format!("{}/ga", vendor.url)}}
    ]});
    let w = world(
        spec,
        &[("META_TOKEN", "tok en"), ("GA4_SECRET", "ga-secret")],
    )
    .await;
    let event = |id: &str, ads: bool| {
        track(
            id,
            json!({
                "traits": {"email": "Ada@Example.com"},
                "properties": {"order_id": "o-1", "revenue": 42.5, "note": "paid with 4111 1111 1111 1111"},
                "context": {"ip": "203.0.113.77", "userAgent": "UA",
                    "consent": {"categoryPreferences": {"analytics": true, "ads": ads}}}
            }),
        )
    };
    w.send(vec![event("c-1", false), event("c-2", true)]).await;
    eventually(
        Duration::from_secs(10),
        "every destination's share",
        || async {
            (vendor.accepted_keys("/crm").len() == 2
                && vendor.accepted_keys("/ads").len() == 1
                && vendor.received("/meta/123/events").len() == 1
                && vendor.received("/ga/mp/collect").len() == 2)
                .then_some(())
        },
    )
    .await;
    let everything: Vec<u8> = ["/crm", "/ads", "/meta/123/events", "/ga/mp/collect"]
        .iter()
        .flat_map(|p| vendor.received(p))
        .flat_map(|r| r.body)
        .collect();
    let text = String::from_utf8_lossy(&everything);
    assert!(!text.contains("4111"), "a card number left: {text}");
    assert!(!text.contains("203.0.113.77"), "a full IP address left");
    let crm = String::from_utf8_lossy(
        &vendor
            .received("/crm")
            .iter()
            .flat_map(|r| r.body.clone())
            .collect::<Vec<_>>(),
    )
    .into_owned();
    assert!(
        !crm.to_lowercase().contains("ada@example.com"),
        "the CRM hashes e-mail: {crm}"
    );
    let email_hash = hex(&Sha256::digest(b"ada@example.com"));
    assert!(crm.contains(&email_hash));
    assert_eq!(
        vendor.accepted_keys("/ads"),
        ["c-2".to_owned()].into(),
        "only the event that consents to ads"
    );

    let meta = &vendor.received("/meta/123/events")[0];
    assert_eq!(meta.query, "access_token=tok%20en");
    let body = meta.json();
    assert_eq!(body["data"][0]["event_id"], "c-2");
    assert_eq!(body["data"][0]["user_data"]["em"][0], email_hash.as_str());
    let ga = &vendor.received("/ga/mp/collect")[0];
    assert_eq!(ga.query, "measurement_id=G-TEST1234&api_secret=ga-secret");
    assert_eq!(ga.json()["events"][0]["name"], "order_completed");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_change_mid_stream_loses_nothing() {
    let vendor = Vendor::start().await;
    let spec = |version: u32| {
        json!({"sources": [{"name": "web"}], "destinations": [
            {"name": "hook", "webhook": {"url": format!("{}/hook", vendor.url), "headers": {"X-Version": version.to_string()}}}
        ]})
    };
    let w = world(spec(1), &[]).await;
    let mut sent = BTreeSet::new();
    let sender = {
        let (url, key) = (w.receiver.clone(), w.write_key.clone());
        let batches: Vec<Vec<String>> = (0..30).map(|b| ids(&format!("m{b}"), 10)).collect();
        for batch in &batches {
            sent.extend(batch.iter().cloned());
        }
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for batch in batches {
                let events: Vec<Value> = batch.iter().map(|id| track(id, json!({}))).collect();
                let response = http
                    .post(format!("{url}/v1/batch"))
                    .basic_auth(&key, Some(""))
                    .json(&json!({"batch": events}))
                    .send()
                    .await
                    .expect("send");
                assert_eq!(response.status(), StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    for version in 2..=3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        w.cp.update_pipeline(&w.tenant, &w.pipeline, spec(version))
            .await;
    }
    sender.await.expect("sender");
    eventually(Duration::from_secs(15), "every event delivered", || async {
        (vendor.accepted_keys("/hook") == sent).then_some(())
    })
    .await;
    let versions: BTreeSet<String> = vendor
        .received("/hook")
        .iter()
        .map(|r| r.headers["x-version"].clone())
        .collect();
    assert!(
        versions.contains("1") && versions.contains("3"),
        "{versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_fail_governance_are_kept_with_the_reason_and_replayable() {
    let vendor = Vendor::start().await;
    let strict = json!({"sources": [{"name": "web"}],
        "governance": [{"step": "validate_schema", "events": {"Order Completed": {"type": "object", "required": ["coupon"]}}}],
        "destinations": [webhook("hook", format!("{}/hook", vendor.url), json!({}))]});
    let w = world(strict, &[]).await;
    w.send(vec![
        track("g-1", json!({})),
        track("g-2", json!({"properties": {"coupon": "X"}})),
    ])
    .await;
    let rejected = eventually(Duration::from_secs(10), "the rejected event", || async {
        let (_, body) = w
            .dlq(Method::GET, "/v1/rejected", &w.service_key, None)
            .await;
        body["data"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
            .then_some(body)
    })
    .await
    .0;
    let entry = &rejected["data"][0];
    assert_eq!(entry["id"], "g-1");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("\"coupon\" is a required property"),
        "{entry}"
    );
    eventually(Duration::from_secs(10), "the valid event", || async {
        (vendor.accepted_keys("/hook") == ["g-2".to_owned()].into()).then_some(())
    })
    .await;
    // The plan is relaxed; the rejected event is run through governance again.
    w.cp.update_pipeline(
        &w.tenant,
        &w.pipeline,
        json!({"sources": [{"name": "web"}],
            "destinations": [webhook("hook", format!("{}/hook", vendor.url), json!({}))]}),
    )
    .await;
    w.synced().await;
    let (status, body) = w
        .dlq(
            Method::POST,
            "/v1/rejected/replay",
            &w.service_key,
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    eventually(Duration::from_secs(10), "the replayed event", || async {
        (vendor.accepted_keys("/hook") == ["g-1".to_owned(), "g-2".to_owned()].into()).then_some(())
    })
    .await;
}

/// A test send from the console's API: one sample event shaped for a catalogue destination
/// and sent once, the vendor's answer returned with the secret named, not shown; nothing
/// reaches the bus. Bad requests get clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_shapes_one_sample_event_and_returns_the_vendor_s_answer() {
    let vendor = Vendor::start().await;
    let path = "/open_api/v1.3/event/track/";
    vendor.always(
        path,
        Reply::Json(200, r#"{"code":0,"message":"OK"}"#, Duration::ZERO),
    );
    let spec = json!({"sources": [{"name": "web"}],
        "governance": [{"step": "validate_schema", "events": {"Order Completed":
            {"type": "object", "required": ["order_id"]}}}],
        "destinations": [
        {"name": "tiktok", "type": "tiktok", "consent": ["ads"], "settings": {
            "event_source_id": "PIXEL123", "access_token": "TIKTOK_TOKEN",
            "endpoint": format!("{}/open_api/v1.3", vendor.url)}},
        {"name": "hook", "filter": "event == 'Signed Up'", "webhook": {"url": format!("{}/hook", vendor.url)}}]});
    let w = world(spec, &[("TIKTOK_TOKEN", "tt-very-secret")]).await;
    let test = |destination: &str| format!("/v1/destinations/{}/{destination}/test", w.pipeline);
    let send = async |destination: &str, body: Option<Value>| {
        w.dlq(Method::POST, &test(destination), &w.service_key, body)
            .await
    };

    let (status, answer) = send("tiktok", Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "delivered", "{answer}");
    assert_eq!(answer["response"]["status"], 200);
    assert_eq!(answer["response"]["body"], r#"{"code":0,"message":"OK"}"#);
    assert_eq!(
        answer["request"]["headers"]["access-token"], "{secrets.access_token}",
        "{answer}"
    );
    assert!(!answer.to_string().contains("tt-very-secret"), "{answer}");
    let sent = vendor.received(path);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].headers["access-token"], "tt-very-secret");
    let event = &sent[0].json()["data"][0];
    assert_eq!(event["event"], "CompletePayment", "{event}");
    assert_eq!(
        answer["request"]["body"],
        sent[0].json(),
        "the body shown is the body sent"
    );
    assert!(
        event["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("sluice-test-")),
        "{event}"
    );

    // The body's event replaces the sample's fields; a filter that is false says so.
    let (status, answer) = send("hook", None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "skipped", "{answer}");
    let (_, answer) = send("hook", Some(json!({"event": {"event": "Signed Up"}}))).await;
    assert_eq!(answer["outcome"], "delivered", "{answer}");
    assert_eq!(vendor.received("/hook")[0].json()["event"], "Signed Up");
    // The pipeline's governance runs first: an order without its id is rejected, unsent.
    let (status, answer) = send(
        "tiktok",
        Some(json!({"event": {"properties": {"revenue": 1}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["outcome"], "rejected", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("order_id")),
        "{answer}"
    );
    assert_eq!(
        vendor.received(path).len(),
        1,
        "a rejected event is not sent"
    );
    // A vendor's refusal is the outcome, not an error of the call.
    vendor.always(
        path,
        Reply::Json(
            200,
            r#"{"code":40001,"message":"Invalid pixel code"}"#,
            Duration::ZERO,
        ),
    );
    let (status, answer) = send("tiktok", Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["outcome"], "refused", "{answer}");
    assert_eq!(
        answer["error"], "TikTok error 40001 (HTTP 200): Invalid pixel code",
        "{answer}"
    );

    // Bad requests.
    let cases = [
        (test("nope"), json!({}), StatusCode::NOT_FOUND),
        (
            "/v1/destinations/nope/tiktok/test".to_owned(),
            json!({}),
            StatusCode::NOT_FOUND,
        ),
        (test("tiktok"), json!({"evnt": {}}), StatusCode::BAD_REQUEST),
        (
            test("tiktok"),
            json!({"event": {"message_id": "mine"}}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, body, want) in cases {
        let (status, answer) = w.dlq(Method::POST, &path, &w.service_key, Some(body)).await;
        assert_eq!(status, want, "{path}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let (status, _) = w.dlq(Method::POST, &test("tiktok"), "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let viewer = w.viewer_key().await;
    let (status, _) = w.dlq(Method::POST, &test("tiktok"), &viewer, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "viewers do not send");
    assert_eq!(
        vendor.received(path).len(),
        2,
        "no request for a refused call"
    );
    // A test event never reaches the bus: nothing was archived or delivered besides.
    assert_eq!(vendor.received("/hook").len(), 1);
}
