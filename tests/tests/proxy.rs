//! The proxy end to end: a real control plane configures the nodes; requests go to the proxy's
//! public listener; what the receivers put on the bus is counted. The collector script runs
//! in Debian's Chromium (through playwright-core, `tests/browser/`).

use std::collections::HashSet;
use std::io::Write as _;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_bus::Bus;
use sluice_data_plane::RunningNode;
use sluice_tests::{
    Cp, CpOptions, eventually, free_port, page_server, run_browser_script, start_node_with,
};

struct Tenant {
    cp: Cp,
    tenant: String,
    pipeline: String,
    write_key: String,
    service_key: String,
}

async fn tenant(spec: Value) -> Tenant {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp.pipeline(&tenant, "main", spec).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service_key) = cp.service_key(&tenant).await;
    Tenant {
        cp,
        tenant,
        pipeline,
        write_key,
        service_key,
    }
}

async fn synced(t: &Tenant, node: &RunningNode) {
    let version = t.cp.config_version(&t.tenant).await;
    eventually(
        Duration::from_secs(5),
        "the node's configuration",
        || async { node.state.current().filter(|c| c.version >= version) },
    )
    .await;
}

/// Fetches from `raw` until `want` events arrived (acking them) or 15 s passed.
async fn drain(node: &RunningNode, want: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    while out.len() < want && started.elapsed() < Duration::from_secs(15) {
        for delivery in node
            .bus
            .fetch("raw", 1000, Duration::from_millis(200))
            .await
            .expect("fetch")
        {
            out.push(serde_json::from_slice(&delivery.message.payload).expect("envelope"));
            node.bus.ack(delivery).await.expect("ack");
        }
    }
    out
}

async fn metric(node: &RunningNode, name: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://{}/metrics", node.http_addr))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).expect("gzip");
    encoder.finish().expect("gzip")
}

fn web_spec(origins: &[&str]) -> Value {
    json!({"sources": [{"name": "web", "allowed_origins": origins}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_checks_spools_and_forwards_with_a_first_party_cookie() {
    let t = tenant(web_spec(&["https://shop.example"])).await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node_with(&t.cp.grpc_url, &t.service_key, state.path(), |raw| {
        raw.node.roles = "proxy,receiver".into();
    })
    .await;
    synced(&t, &node).await;
    let proxy = format!("http://{}", node.proxy_addr.expect("proxy listener"));
    let http = reqwest::Client::new();

    // A browser's first visit: no cookie, no ids; the key in the body as sendBeacon sends it.
    let first = http
        .post(format!("{proxy}/v1/track"))
        .header("origin", "https://shop.example")
        .header("content-type", "text/plain")
        .body(
            json!({"writeKey": t.write_key, "event": "Signed Up", "messageId": "m-1"}).to_string(),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(first.status(), StatusCode::OK);
    let headers = first.headers().clone();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let cookie = headers["set-cookie"].to_str().expect("ascii").to_owned();
    assert!(
        cookie.ends_with("; Max-Age=34560000; Path=/; HttpOnly; Secure; SameSite=Lax"),
        "{cookie}"
    );
    let visitor = cookie
        .strip_prefix("sluice_id=")
        .and_then(|c| c.split(';').next())
        .expect("visitor id")
        .to_owned();

    // The next request carries the cookie; a batch, gzipped, with Basic auth as SDKs send it.
    let batch = json!({"batch": [
        {"type": "page", "name": "Home", "messageId": "m-2"},
        {"type": "track", "event": "Clicked", "messageId": "m-3"},
        {"type": "identify", "anonymousId": "own-id", "traits": {"plan": "pro"}, "messageId": "m-4"},
    ]});
    let second = http
        .post(format!("{proxy}/v1/batch"))
        .header("origin", "https://shop.example")
        .header("cookie", format!("sluice_id={visitor}"))
        .header("content-encoding", "gzip")
        .basic_auth(&t.write_key, Some(""))
        .body(gzip(batch.to_string().as_bytes()))
        .send()
        .await
        .expect("send");
    assert_eq!(second.status(), StatusCode::OK);
    assert!(
        second.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .starts_with(&format!("sluice_id={visitor};")),
        "the same visitor, renewed"
    );

    // Refusals: each with its status, none reaching the bus.
    let evil = http
        .post(format!("{proxy}/v1/track"))
        .header("origin", "https://evil.example")
        .body(json!({"writeKey": t.write_key, "event": "x", "userId": "u"}).to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    for (body, status) in [
        (json!({"writeKey": "slk_ing_nope", "event": "x"}).to_string(), StatusCode::UNAUTHORIZED),
        (json!({"event": "x"}).to_string(), StatusCode::UNAUTHORIZED),
        (json!({"writeKey": t.service_key, "event": "x"}).to_string(), StatusCode::UNAUTHORIZED),
        (format!("{{\"writeKey\":\"{}\",", t.write_key), StatusCode::BAD_REQUEST),
        (json!({"writeKey": t.write_key}).to_string(), StatusCode::BAD_REQUEST),
        (
            json!({"writeKey": t.write_key, "event": "x", "properties": {"blob": "y".repeat(40_000)}}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let response = http
            .post(format!("{proxy}/v1/track"))
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), status, "{}", &body[..body.len().min(80)]);
        let error: Value = response.json().await.expect("json error");
        assert!(error["error"]["code"].is_string(), "{error}");
    }

    // Preflight for pages that send JSON.
    let preflight = |origin: &'static str| {
        http.request(Method::OPTIONS, format!("{proxy}/v1/batch"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://shop.example").await.expect("send");
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(
        preflight("https://evil.example")
            .await
            .expect("send")
            .status(),
        StatusCode::FORBIDDEN
    );

    // Concurrent forwarders keep the order within a request, not across requests.
    let mut events = drain(&node, 4).await;
    events.sort_by_key(|e| e["message_id"].as_str().map(str::to_owned));
    let ids: Vec<_> = events
        .iter()
        .map(|e| e["message_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        ["m-1", "m-2", "m-3", "m-4"],
        "all of them, nothing else"
    );
    let anonymous: Vec<_> = events
        .iter()
        .map(|e| e["anonymous_id"].as_str().expect("anon"))
        .collect();
    assert_eq!(anonymous, [visitor.as_str(), &visitor, &visitor, "own-id"]);
    assert!(
        events.iter().all(|e| e["context"]["ip"] == "127.0.0.1"),
        "{events:?}"
    );
    assert!(
        drain(&node, 1).await.is_empty(),
        "refused requests left nothing"
    );
    eventually(Duration::from_secs(5), "the forwarded count", || async {
        (metric(&node, "sluice_proxy_events_total{outcome=\"forwarded\"}").await == Some(4))
            .then_some(())
    })
    .await;

    // The collector script, gzipped; health and metrics are not on the public listener.
    let script = http
        .get(format!("{proxy}/sluice.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("send");
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().await.expect("body").contains("sendBeacon"));
    for path in ["/metrics", "/health/ready"] {
        let response = http
            .get(format!("{proxy}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_spool_until_a_receiver_is_back() {
    let t = tenant(web_spec(&[])).await;
    let (doomed_id, doomed_key) = t.cp.ingest_key(&t.tenant, &t.pipeline, "web").await;
    let receiver_port = free_port();
    let proxy_state = tempfile::tempdir().expect("tempdir");
    let start_proxy = || {
        start_node_with(&t.cp.grpc_url, &t.service_key, proxy_state.path(), |raw| {
            raw.node.roles = "proxy".into();
            raw.proxy.receiver_urls = format!("http://127.0.0.1:{receiver_port}");
        })
    };
    let proxy_node = start_proxy().await;
    synced(&t, &proxy_node).await;
    let proxy = format!("http://{}", proxy_node.proxy_addr.expect("proxy"));
    let http = reqwest::Client::new();
    let mut sent = HashSet::new();
    for request in 0..10 {
        let batch: Vec<Value> = (0..5)
            .map(|i| {
                let id = format!("spooled-{request}-{i}");
                sent.insert(id.clone());
                json!({"type": "track", "event": "Spooled", "userId": "u", "messageId": id})
            })
            .collect();
        let response = http
            .post(format!("{proxy}/v1/batch"))
            .basic_auth(&t.write_key, Some(""))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "accepted into the spool");
    }
    // Events of a key that is revoked before any receiver sees them.
    for i in 0..3 {
        let response = http
            .post(format!("{proxy}/v1/track"))
            .basic_auth(&doomed_key, Some(""))
            .json(&json!({"event": "Doomed", "userId": "u", "messageId": format!("doomed-{i}")}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
    }
    eventually(
        Duration::from_secs(5),
        "a failed forward attempt",
        || async {
            (metric(&proxy_node, "sluice_proxy_receivers_healthy").await == Some(0)).then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(&proxy_node, "sluice_proxy_spool_depth").await,
        Some(53)
    );
    t.cp.revoke(&t.tenant, &doomed_id).await;

    // The proxy restarts while the receivers are still down: the spool survives.
    proxy_node.shutdown().await;
    let proxy_node = start_proxy().await;
    synced(&t, &proxy_node).await;
    assert_eq!(
        metric(&proxy_node, "sluice_proxy_spool_depth").await,
        Some(53)
    );

    // A receiver comes up where the proxy looks for one.
    let receiver_state = tempfile::tempdir().expect("tempdir");
    let receiver = start_node_with(
        &t.cp.grpc_url,
        &t.service_key,
        receiver_state.path(),
        |raw| {
            raw.node.http_addr = format!("127.0.0.1:{receiver_port}").parse().expect("addr");
        },
    )
    .await;
    synced(&t, &receiver).await;
    let events = drain(&receiver, sent.len()).await;
    let got: HashSet<String> = events
        .iter()
        .map(|e| e["message_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        got, sent,
        "every accepted event arrives, the revoked key's do not"
    );
    assert_eq!(events.len(), sent.len(), "once each");
    eventually(Duration::from_secs(10), "the spool to empty", || async {
        let depth = metric(&proxy_node, "sluice_proxy_spool_depth").await;
        let rejected = metric(
            &proxy_node,
            "sluice_proxy_events_total{outcome=\"rejected\"}",
        )
        .await;
        (depth == Some(0) && rejected == Some(3)).then_some(())
    })
    .await;
    proxy_node.shutdown().await;
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_sends_from_a_real_browser() {
    // The page's port must be known before the pipeline allows its origin.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let page_port = listener.local_addr().expect("addr").port();
    let page_origin = format!("http://localhost:{page_port}");
    let t = tenant(web_spec(&[&page_origin])).await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = start_node_with(&t.cp.grpc_url, &t.service_key, state.path(), |raw| {
        raw.node.roles = "proxy,receiver".into();
    })
    .await;
    synced(&t, &node).await;
    let proxy = format!(
        "http://localhost:{}",
        node.proxy_addr.expect("proxy").port()
    );
    let html = format!(
        r#"<!doctype html><title>Shop</title>
<script>window.sluice = window.sluice || []; sluice.push(["track", "Early Bird", {{"queued": true}}]);</script>
<script src="{proxy}/sluice.js" data-write-key="{}" async></script>
<h1>Shop</h1>"#,
        t.write_key
    );
    let server = page_server(listener, html);
    let page_url = format!("{page_origin}/");

    let proxy_for_script = proxy.clone();
    let seen = tokio::task::spawn_blocking(move || {
        run_browser_script("collector.mjs", &[&page_url, &proxy_for_script])
    })
    .await
    .expect("join");
    assert_eq!(seen["errors"], json!([]), "no script errors: {seen}");
    let answers = seen["answers"].as_array().expect("answers");
    assert!(
        !answers.is_empty() && answers.iter().all(|s| s == 200),
        "{seen}"
    );
    let cookie = seen["cookies"]
        .as_array()
        .expect("cookies")
        .iter()
        .find(|c| c["name"] == "sluice_id")
        .unwrap_or_else(|| panic!("the proxy set its cookie: {seen}"))
        .clone();
    assert_eq!(
        (&cookie["httpOnly"], &cookie["secure"], &cookie["sameSite"]),
        (&json!(true), &json!(true), &json!("Lax")),
        "{cookie}"
    );
    let days = (cookie["expires"].as_f64().expect("expires")
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64())
        / 86_400.0;
    assert!((399.0..=400.1).contains(&days), "{days} days");
    assert!(
        !seen["scriptCookie"]
            .as_str()
            .unwrap_or_default()
            .contains("sluice_id"),
        "page scripts cannot read it"
    );

    // Forwarders keep the order within a request; the collector's timestamps give the rest.
    let mut events = drain(&node, 7).await;
    events.sort_by_key(|e| e["timestamp"].as_str().map(str::to_owned));
    let names: Vec<String> = events
        .iter()
        .map(|e| {
            e["event"]
                .as_str()
                .or(e["name"].as_str())
                .unwrap_or(e["type"].as_str().unwrap_or_default())
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "Early Bird",
            "Home",
            "Viewed Product",
            "Early Bird",
            "identify",
            "Added To Cart",
            "Left Page"
        ],
        "queued (once per page load), fetched and beaconed events"
    );
    let visitor = cookie["value"].as_str().expect("value");
    assert!(
        events.iter().all(|e| e["anonymous_id"] == visitor),
        "{events:?}"
    );
    assert!(
        events[4..].iter().all(|e| e["user_id"] == "user-42"),
        "after identify"
    );
    assert!(
        events[..4].iter().all(|e| e.get("user_id").is_none()),
        "before identify"
    );
    assert!(
        events[0]["context"].get("consent").is_none(),
        "before consent"
    );
    assert!(
        events[1..]
            .iter()
            .all(|e| e["context"]["consent"]["categoryPreferences"]
                == json!({"analytics": true, "ads": false})),
        "consent categories ride on every later event"
    );
    assert_eq!(
        events[1]["context"]["page"]["url"],
        format!("{page_origin}/")
    );
    assert_eq!(
        events[2]["properties"],
        json!({"sku": "sku-1", "price": 19.5})
    );
    assert_eq!(events[4]["traits"], json!({"plan": "pro"}));
    server.abort();
    node.shutdown().await;
}
