//! The receiver end to end: a real control plane hands the node its pipeline and ingest keys;
//! Segment-style requests go to the node; what arrives on the bus is counted.

use std::io::Write as _;
use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_data_plane::RunningNode;
use sluice_tests::{Cp, CpOptions, eventually, start_node};

struct Setup {
    _cp: Cp,
    node: RunningNode,
    url: String,
    write_key: String,
    _state: tempfile::TempDir,
}

async fn setup(spec: Value) -> Setup {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp.pipeline(&tenant, "main", spec).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service) = cp.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node(&cp.grpc_url, &service, state.path()).await;
    let version = cp.config_version(&tenant).await;
    eventually(
        Duration::from_secs(5),
        "the node to get its ingest key",
        || async { node.state.current().filter(|c| c.version == version) },
    )
    .await;
    let url = format!("http://{}", node.http_addr);
    Setup {
        _cp: cp,
        node,
        url,
        write_key,
        _state: state,
    }
}

fn spec() -> Value {
    json!({"sources": [{"name": "web"}]})
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

async fn send(
    url: &str,
    path: &str,
    auth: Option<String>,
    body: Vec<u8>,
    gzip: bool,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let body = if gzip {
        request = request.header("content-encoding", "gzip");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).expect("gzip");
        encoder.finish().expect("gzip")
    } else {
        body
    };
    let response = request.body(body).send().await.expect("send");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Everything on the raw stage now, acknowledged, as envelopes.
async fn drain(node: &RunningNode) -> Vec<Value> {
    sluice_tests::drain_stage(&node.bus, "raw")
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("envelope json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_segment_call_type_reaches_the_bus() {
    let s = setup(spec()).await;
    let calls = [
        (
            "/v1/track",
            json!({"userId": "u1", "event": "Order Completed", "properties": {"revenue": 9.5}, "messageId": "msg-1"}),
        ),
        ("/v1/page", json!({"anonymousId": "a1", "name": "Home"})),
        ("/v1/screen", json!({"userId": "u1", "name": "Settings"})),
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": {"email": "u1@example.com"}}),
        ),
        ("/v1/group", json!({"userId": "u1", "groupId": "g1"})),
        ("/v1/alias", json!({"userId": "u1", "previousId": "a1"})),
    ];
    for (path, body) in &calls {
        let (status, answer) = send(
            &s.url,
            path,
            Some(basic(&s.write_key)),
            body.to_string().into_bytes(),
            false,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        assert_eq!(answer, json!({"success": true}));
    }
    // Bearer auth, gzip, and a batch with shared context.
    let batch = json!({"batch": [
        {"type": "track", "userId": "u2", "event": "Signed Up"},
        {"type": "identify", "anonymousId": "a2", "traits": {"plan": "pro"}}
    ], "context": {"library": {"name": "analytics-python"}}, "sentAt": "2026-11-22T12:00:00Z"});
    let (status, answer) = send(
        &s.url,
        "/v1/batch",
        Some(format!("Bearer {}", s.write_key)),
        batch.to_string().into_bytes(),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // writeKey in the body, as some libraries send it.
    let body = json!({"writeKey": s.write_key, "batch": [{"type": "page", "anonymousId": "a3"}]});
    assert_eq!(
        send(
            &s.url,
            "/v1/import",
            None,
            body.to_string().into_bytes(),
            false
        )
        .await
        .0,
        StatusCode::OK
    );

    let events = drain(&s.node).await;
    assert_eq!(events.len(), 9);
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "track", "page", "screen", "identify", "group", "alias", "track", "identify", "page"
        ]
    );
    let first = &events[0];
    assert_eq!(
        first["message_id"], "msg-1",
        "the client's messageId is kept"
    );
    assert_eq!(
        (first["source"].as_str(), first["event"].as_str()),
        (Some("web"), Some("Order Completed"))
    );
    assert!(
        first["tenant_id"].is_string()
            && first["received_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(
        events[1]["message_id"].as_str().map(str::len),
        Some(36),
        "a UUIDv7 when the client sent none"
    );
    assert_eq!(
        events[6]["context"]["library"]["name"], "analytics-python",
        "batch context applies"
    );
    assert_eq!(events[6]["sent_at"], "2026-11-22T12:00:00Z");
    let metrics = reqwest::get(format!("{}/metrics", s.url))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("sluice_events_total{stage=\"received\"} 9"),
        "{metrics}"
    );
}

/// (path, authorization, body, expected status, expected error code)
type BadCase = (
    &'static str,
    Option<String>,
    Vec<u8>,
    StatusCode,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_exact_status_and_nothing_reaches_the_bus() {
    let s = setup(spec()).await;
    let auth = || Some(basic(&s.write_key));
    let huge = "x".repeat(33 * 1024);
    let big_batch: Vec<Value> = (0..20).map(|i| json!({"type": "track", "userId": "u", "event": format!("e{i}"), "properties": {"pad": "y".repeat(30 * 1024)}})).collect();
    // Nested 5,000 levels deep: serde_json cannot read it back, so it is refused at the door.
    let deep = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    let too_deep = format!(
        r#"{{"userId":"u","event":"x","properties":{{"p":{}}}}}"#,
        deep(5000)
    );
    let too_deep_batch = format!(
        r#"{{"batch":[{{"type":"track","userId":"u","event":"x","properties":{{"p":{}}}}}]}}"#,
        deep(70)
    );
    let cases: Vec<BadCase> = vec![
        ("/v1/track", auth(), too_deep.into_bytes(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/v1/batch", auth(), too_deep_batch.into_bytes(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/v1/track", auth(), b"{\"userId\":".to_vec(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/v1/track", auth(), b"[1,2]".to_vec(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/v1/track", auth(), json!({"userId": "u"}).to_string().into_bytes(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/v1/track", auth(), json!({"event": "x"}).to_string().into_bytes(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/v1/track", auth(), json!({"userId": "u", "event": "x", "properties": {"p": huge}}).to_string().into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("/v1/batch", auth(), json!({"batch": big_batch}).to_string().into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("/v1/batch", auth(), json!({"batch": [{"type": "fly", "userId": "u"}]}).to_string().into_bytes(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/v1/batch", auth(), json!({"batch": [{"type": "track", "userId": "u", "event": "ok"}, {"type": "track", "event": "no id"}]}).to_string().into_bytes(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/v1/batch", auth(), json!({"events": []}).to_string().into_bytes(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/v1/track", None, json!({"userId": "u", "event": "x"}).to_string().into_bytes(), StatusCode::UNAUTHORIZED, "unauthorized"),
        ("/v1/track", Some(basic("wrong")), json!({"userId": "u", "event": "x"}).to_string().into_bytes(), StatusCode::UNAUTHORIZED, "unauthorized"),
        ("/v1/fly", auth(), json!({"userId": "u"}).to_string().into_bytes(), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (path, auth, body, status, code) in cases {
        let (got, answer) = send(&s.url, path, auth, body, false).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{path}: {answer}");
    }
    // A well-formed key of another kind, and a forged ingest key, are refused too.
    let forged = sluice_keys::generate_key(sluice_keys::KeyType::Ingest).expect("key");
    let (got, _) = send(
        &s.url,
        "/v1/track",
        Some(basic(forged.expose())),
        json!({"userId": "u", "event": "x"})
            .to_string()
            .into_bytes(),
        false,
    )
    .await;
    assert_eq!(got, StatusCode::UNAUTHORIZED);
    // Not gzip although it says so.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/track", s.url))
        .header("authorization", basic(&s.write_key))
        .header("content-encoding", "gzip")
        .body("not gzip")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(drain(&s.node).await.is_empty(), "nothing reached the bus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_rate_limit_gets_429() {
    let s = setup(
        json!({"sources": [{"name": "web", "rate_limit": {"events_per_second": 1, "burst": 3}}]}),
    )
    .await;
    let event = json!({"userId": "u", "event": "x"})
        .to_string()
        .into_bytes();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            send(
                &s.url,
                "/v1/track",
                Some(basic(&s.write_key)),
                event.clone(),
                false,
            )
            .await
            .0,
        );
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/track", s.url))
        .header("authorization", basic(&s.write_key))
        .body(event)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(drain(&s.node).await.len(), 3);
}

fn sign(write_key: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::Mac as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(write_key.as_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&digest).expect("hmac");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

async fn send_signed(
    url: &str,
    key_id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/track"))
        .header("content-type", "application/json")
        .header("x-sluice-key-id", key_id)
        .header("x-timestamp", timestamp.to_string())
        .header("x-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_sources_may_sign_instead_of_sending_the_key() {
    let s = setup(spec()).await;
    let key_id = s.write_key.split('_').nth(2).expect("public id").to_owned();
    let body = json!({"userId": "backend-user", "event": "Invoice Paid"})
        .to_string()
        .into_bytes();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;

    let (status, answer) =
        send_signed(&s.url, &key_id, now, &sign(&s.write_key, now, &body), &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let stale = now - 6 * 60 * 1000;
    let tampered = json!({"userId": "backend-user", "event": "Invoice Refunded"})
        .to_string()
        .into_bytes();
    for (what, key_id, timestamp, signature, body) in [
        (
            "stale",
            key_id.as_str(),
            stale,
            sign(&s.write_key, stale, &body),
            &body,
        ),
        (
            "tampered body",
            key_id.as_str(),
            now,
            sign(&s.write_key, now, &body),
            &tampered,
        ),
        (
            "other key",
            key_id.as_str(),
            now,
            sign("slk_ing_wrong", now, &body),
            &body,
        ),
        (
            "unknown key id",
            "ZZZZZZZZ",
            now,
            sign(&s.write_key, now, &body),
            &body,
        ),
        (
            "not hex",
            key_id.as_str(),
            now,
            "sha256=zz".to_owned(),
            &body,
        ),
    ] {
        let (status, answer) = send_signed(&s.url, key_id, timestamp, &signature, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized", "{what}");
    }
    let events = drain(&s.node).await;
    assert_eq!(events.len(), 1, "only the valid signed request arrived");
    assert_eq!(events[0]["event"], "Invoice Paid");
}
