//! Identity end to end: a visitor arrives through the proxy from an ad click, identifies
//! later, and Meta's and GA4's payloads at a vendor on loopback carry the click and browser
//! ids and the hashed user id; the profile can be read and erased; with the NATS store, a
//! second node knows what the first one stored.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest as _;
use sluice_data_plane::RunningNode;
use sluice_tests::{
    Cp, CpOptions, Vendor, eventually, page_server, recording_relay, run_browser_script,
    start_node_with,
};

struct World {
    cp: Cp,
    tenant: String,
    write_key: String,
    service_key: String,
    vendor: Vendor,
    secrets: tempfile::TempDir,
    nats_prefix: String,
}

fn spec(vendor: &Vendor) -> Value {
    spec_with(vendor, json!(["*"]), json!({"step": "identity"}))
}

fn spec_with(vendor: &Vendor, origins: Value, identity: Value) -> Value {
    json!({
        "sources": [{"name": "web", "allowed_origins": origins}],
        "governance": [identity],
        "destinations": [
            {"name": "hook", "webhook": {"url": format!("{}/hook", vendor.url)}},
            {"name": "meta", "meta": {"pixel_id": "123", "access_token": "META_TOKEN",
                "endpoint": format!("{}/meta", vendor.url)}},
            {"name": "ga4", "ga4": {"measurement_id": "G-TEST1234", "api_secret": "GA4_SECRET",
                "endpoint": format!("{}/ga", vendor.url)}}
        ]
    })
}

async fn world() -> World {
    world_with(spec).await
}

async fn world_with(spec: impl FnOnce(&Vendor) -> Value) -> World {
    let vendor = Vendor::start().await;
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("acme").await;
    let pipeline = cp.pipeline(&tenant, "main", spec(&vendor)).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service_key) = cp.service_key(&tenant).await;
    let secrets = tempfile::tempdir().expect("tempdir");
    for (name, value) in [("META_TOKEN", "meta-token"), ("GA4_SECRET", "ga-secret")] {
        std::fs::write(secrets.path().join(name), value).expect("secret");
    }
    World {
        cp,
        tenant,
        write_key,
        service_key,
        vendor,
        secrets,
        nats_prefix: format!("it{}", &uuid::Uuid::now_v7().simple().to_string()[20..]),
    }
}

impl World {
    async fn node(&self, state: &std::path::Path, nats: bool) -> RunningNode {
        self.node_via(&self.cp.grpc_url, state, nats).await
    }

    /// A node that reaches the control plane at `grpc_url` (a recording relay, say).
    async fn node_via(&self, grpc_url: &str, state: &std::path::Path, nats: bool) -> RunningNode {
        let secrets = self.secrets.path().to_path_buf();
        let node = start_node_with(grpc_url, &self.service_key, state, |raw| {
            raw.node.roles = "proxy,receiver,processor,delivery".into();
            raw.node.secrets_dir = Some(secrets);
            if nats {
                raw.identity.identity_store = "nats".into();
                raw.identity.identity_nats_url = Some(sluice_tests::nats_url());
                // One prefix per world: nodes share the identity bucket only under the same one.
                raw.bus.nats_prefix = self.nats_prefix.clone();
            }
        })
        .await;
        let version = self.cp.config_version(&self.tenant).await;
        eventually(
            Duration::from_secs(5),
            "the node's configuration",
            || async { node.state.current().filter(|c| c.version >= version) },
        )
        .await;
        node
    }
}

/// Sends one event through the proxy with `cookies`; the `Set-Cookie` values answered.
async fn send(node: &RunningNode, write_key: &str, cookies: &str, event: Value) -> Vec<String> {
    let proxy = node.proxy_addr.expect("proxy");
    let mut request = reqwest::Client::new()
        .post(format!("http://{proxy}/v1/batch"))
        .json(&json!({"writeKey": write_key, "batch": [event]}));
    if !cookies.is_empty() {
        request = request.header("cookie", cookies);
    }
    let response = request.send().await.expect("send");
    let set: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
    set
}

fn cookie_value(set: &[String], name: &str) -> Option<String> {
    set.iter().find_map(|c| {
        c.split(';')
            .next()?
            .strip_prefix(&format!("{name}="))
            .map(str::to_owned)
    })
}

fn page(url: &str) -> Value {
    json!({"type": "page", "name": "Landing", "context": {"page": {"url": url}, "userAgent": "UA"}})
}

fn sha256(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every Meta event and every GA4 payload the vendor received.
fn payloads(vendor: &Vendor) -> (Vec<Value>, Vec<Value>) {
    let meta = vendor
        .received("/meta/123/events")
        .iter()
        .flat_map(|r| r.json()["data"].as_array().cloned().unwrap_or_default())
        .collect();
    let ga = vendor
        .received("/ga/mp/collect")
        .iter()
        .map(|r| r.json())
        .collect();
    (meta, ga)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_from_an_ad_click_is_known_to_meta_and_ga4_before_and_after_identify() {
    let w = world().await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = w.node(state.path(), false).await;

    // The landing: an ad click in the URL, GA's cookie, no visitor id yet.
    let set = send(
        &node,
        &w.write_key,
        "_ga=GA1.1.1111.2222",
        page("https://shop.example/?fbclid=FBCLICK1&gclid=GCLICK1&utm_source=news"),
    )
    .await;
    let visitor = cookie_value(&set, "sluice_id").expect("visitor cookie");
    let fbp = cookie_value(&set, "_fbp").expect("an fbp minted at the edge");
    let fbc = cookie_value(&set, "_fbc").expect("the click kept as _fbc");
    assert!(fbp.starts_with("fb.1.") && fbc.starts_with("fb.1.") && fbc.ends_with(".FBCLICK1"));
    assert!(
        set.iter()
            .any(|c| c.starts_with("_fbp=") && !c.contains("HttpOnly")),
        "Meta's pixel may read _fbp: {set:?}"
    );
    let cookies = format!("sluice_id={visitor}; _ga=GA1.1.1111.2222; _fbp={fbp}; _fbc={fbc}");
    // A later page without the click (the browser sends back what the landing set), then the
    // identify, then a purchase without a user id.
    send(
        &node,
        &w.write_key,
        &cookies,
        page("https://shop.example/p/1"),
    )
    .await;
    send(
        &node,
        &w.write_key,
        &cookies,
        json!({"type": "identify", "userId": "user-7", "traits": {"plan": "pro"}}),
    )
    .await;
    let again = send(
        &node,
        &w.write_key,
        &cookies,
        json!({"type": "track", "event": "Purchase", "properties": {"value": 10},
            "context": {"userAgent": "UA"}}),
    )
    .await;
    assert!(
        cookie_value(&again, "_fbp").is_none(),
        "a browser with _fbp keeps it"
    );

    let (meta, ga) = eventually(
        Duration::from_secs(15),
        "3 events at Meta and GA4",
        || async {
            let (meta, ga) = payloads(&w.vendor);
            (meta.len() >= 3 && ga.len() >= 3).then_some((meta, ga))
        },
    )
    .await
    .0;
    for event in &meta {
        let user = &event["user_data"];
        assert_eq!(user["fbc"], fbc.as_str(), "{event}");
        assert_eq!(user["fbp"], fbp.as_str(), "{event}");
    }
    let purchase = meta
        .iter()
        .find(|e| e["event_name"] == "Purchase")
        .expect("the purchase");
    assert_eq!(
        purchase["user_data"]["external_id"],
        json!([sha256("user-7")]),
        "the anonymous purchase is stitched to the user, hashed"
    );
    for payload in &ga {
        assert_eq!(
            payload["client_id"], "1111.2222",
            "GA's own client id: {payload}"
        );
    }
    assert!(ga.iter().any(|p| p["user_id"] == "user-7"));
    assert!(
        !format!("{meta:?}").contains("user-7"),
        "Meta never sees the raw user id"
    );

    // The profile, then its erasure.
    let api = format!("http://{}/v1/identities", node.http_addr);
    let client = reqwest::Client::new();
    let profile: Value = client
        .get(format!("{api}/user-7"))
        .bearer_auth(&w.service_key)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(profile["anonymous_ids"], json!([visitor]));
    assert_eq!(profile["ids"]["gclid"]["value"], "GCLICK1");
    let unauthorized = client
        .delete(format!("{api}/user-7"))
        .send()
        .await
        .expect("delete");
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let erased = client
        .delete(format!("{api}/user-7"))
        .bearer_auth(&w.service_key)
        .send()
        .await
        .expect("delete");
    assert_eq!(erased.status(), StatusCode::OK);
    for id in ["user-7", visitor.as_str()] {
        let gone = client
            .get(format!("{api}/{id}"))
            .bearer_auth(&w.service_key)
            .send()
            .await
            .expect("get");
        assert_eq!(gone.status(), StatusCode::NOT_FOUND, "{id}");
    }
    let long = client
        .get(format!("{api}/{}", "x".repeat(300)))
        .bearer_auth(&w.service_key)
        .send()
        .await
        .expect("get");
    assert_eq!(long.status(), StatusCode::BAD_REQUEST);
    let metrics = reqwest::get(format!("http://{}/metrics", node.http_addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("sluice_identity_erased_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_identity_entries"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_denied_mints_and_attaches_no_advertising_id() {
    let w = world().await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = w.node(state.path(), false).await;
    let mut event = page("https://shop.example/?fbclid=DENIED&utm_source=mail");
    event["context"]["consent"] = json!({"categoryPreferences": {"ads": false, "analytics": true}});
    event["context"]["ip"] = json!("203.0.113.5");
    let set = send(&node, &w.write_key, "_fbp=fb.1.1.99", event).await;
    assert!(
        cookie_value(&set, "_fbp").is_none() && cookie_value(&set, "_fbc").is_none(),
        "{set:?}"
    );
    let (meta, ga) = eventually(
        Duration::from_secs(15),
        "the page at Meta and GA4",
        || async {
            let (meta, ga) = payloads(&w.vendor);
            (!meta.is_empty() && !ga.is_empty()).then_some((meta, ga))
        },
    )
    .await
    .0;
    let user = &meta[0]["user_data"];
    assert!(
        user.get("fbc").is_none() && user.get("fbp").is_none(),
        "{user}"
    );
    let visitor = cookie_value(&set, "sluice_id").expect("visitor");
    let profile: Value = reqwest::Client::new()
        .get(format!("http://{}/v1/identities/{visitor}", node.http_addr))
        .bearer_auth(&w.service_key)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(profile["ids"]["utm_source"]["value"], "mail");
    assert!(profile["ids"].get("fbp").is_none(), "not stored: {profile}");
    assert_eq!(ga.len(), 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_profiles_through_nats() {
    let w = world().await;
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let a = w.node(a_dir.path(), true).await;
    let b = w.node(b_dir.path(), true).await;
    let set = send(
        &a,
        &w.write_key,
        "",
        page("https://shop.example/?gclid=SHARED1"),
    )
    .await;
    let visitor = cookie_value(&set, "sluice_id").expect("visitor");
    let fbp = cookie_value(&set, "_fbp").expect("fbp");
    eventually(
        Duration::from_secs(10),
        "node a stored the visitor",
        || async {
            let status = reqwest::Client::new()
                .get(format!("http://{}/v1/identities/{visitor}", b.http_addr))
                .bearer_auth(&w.service_key)
                .send()
                .await
                .ok()?
                .status();
            (status == StatusCode::OK).then_some(())
        },
    )
    .await;
    // Node b sees the visitor for the first time, without the click or the fbp cookie.
    send(
        &b,
        &w.write_key,
        &format!("sluice_id={visitor}"),
        json!({"type": "track", "event": "Signed Up", "context": {"userAgent": "UA", "ip": "203.0.113.8"}}),
    )
    .await;
    let signed_up = eventually(
        Duration::from_secs(15),
        "node b's event at Meta",
        || async {
            payloads(&w.vendor)
                .0
                .into_iter()
                .find(|e| e["event_name"] == "Signed Up")
        },
    )
    .await
    .0;
    assert_eq!(signed_up["user_data"]["fbp"], fbp.as_str(), "{signed_up}");
    a.shutdown().await;
    b.shutdown().await;
}

/// What the webhook received: every event as the pipeline gave it.
fn hooked(vendor: &Vendor) -> Vec<Value> {
    vendor.received("/hook").iter().map(|r| r.json()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_crosses_domains_in_a_real_browser_and_keeps_their_ids() {
    // Chromium resolves *.localhost to loopback and treats it as a secure context: two sites,
    // two pages, one proxy answering on both names (as a proxy per domain would).
    let shop_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let brand_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let shop = format!(
        "http://shop.localhost:{}",
        shop_listener.local_addr().expect("addr").port()
    );
    let brand = format!(
        "http://brand.localhost:{}",
        brand_listener.local_addr().expect("addr").port()
    );
    let origins = json!([shop, brand]);
    let w = world_with(|vendor| {
        spec_with(
            vendor,
            origins,
            json!({"step": "identity", "cross_domain": ["shop.localhost", "brand.localhost"]}),
        )
    })
    .await;
    // Everything between the planes passes a relay that keeps it.
    let (relay, wire) =
        recording_relay(w.cp.grpc_url.trim_start_matches("http://").to_owned()).await;
    let state = tempfile::tempdir().expect("tempdir");
    let node = w.node_via(&relay, state.path(), false).await;
    let proxy_port = node.proxy_addr.expect("proxy").port();
    page_server(
        shop_listener,
        format!(
            r#"<!doctype html><title>Shop</title><link rel="icon" href="data:,">
<script src="http://shop.localhost:{proxy_port}/sluice.js" data-write-key="{}" async></script>
<a id="brand" href="{brand}/?from=shop">Our other brand</a>"#,
            w.write_key
        ),
    );
    page_server(
        brand_listener,
        format!(
            r#"<!doctype html><title>Brand</title><link rel="icon" href="data:,">
<script src="http://brand.localhost:{proxy_port}/sluice.js" data-write-key="{}" async></script>"#,
            w.write_key
        ),
    );

    let landing = format!("{shop}/?fbclid=FBXCLICK9&gclid=GCXCLICK9&utm_source=news");
    let brand_for_script = brand.clone();
    let node_url = format!("http://{}", node.http_addr);
    let key = w.service_key.clone();
    let seen = tokio::task::spawn_blocking(move || {
        run_browser_script(
            "crossdomain.mjs",
            &[
                &landing,
                &brand_for_script,
                &proxy_port.to_string(),
                &node_url,
                &key,
            ],
        )
    })
    .await
    .expect("join");
    assert_eq!(seen["errors"], json!([]), "no script errors: {seen}");
    let cookie = |site: &str, name: &str| -> Option<String> {
        seen[site].as_array()?.iter().find(|c| c["name"] == name)?["value"]
            .as_str()
            .map(str::to_owned)
    };
    let visitor =
        cookie("shopCookies", "sluice_id").unwrap_or_else(|| panic!("shop's cookie: {seen}"));
    assert_eq!(
        cookie("brandCookies", "sluice_id").as_deref(),
        Some(visitor.as_str()),
        "the brand's own first-party cookie holds the same id: {seen}"
    );
    let fbp = cookie("shopCookies", "_fbp").unwrap_or_else(|| panic!("fbp minted: {seen}"));
    assert_eq!(
        cookie("brandCookies", "_fbp").as_deref(),
        Some(fbp.as_str()),
        "the brand's proxy gives the visitor the same _fbp: {seen}"
    );
    assert!(
        seen["brandUrl"]
            .as_str()
            .is_some_and(|u| !u.contains("_sluice")),
        "the token leaves the address bar: {seen}"
    );

    // Five events: the landing and a product view on the shop (the view after identify),
    // then the identify itself, and two on the brand that know nothing but the cookie.
    let events = eventually(
        Duration::from_secs(20),
        "the events at the webhook",
        || async {
            let events = hooked(&w.vendor);
            (events.len() >= 5).then_some(events)
        },
    )
    .await
    .0;
    assert!(
        events.iter().all(|e| e["anonymous_id"] == visitor.as_str()),
        "one anonymous id on both domains: {events:?}"
    );
    let brand_events: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["context"]["page"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&brand))
        })
        .collect();
    assert_eq!(brand_events.len(), 2, "{events:?}");
    for event in &brand_events {
        assert!(
            event.get("user_id").is_none(),
            "the brand's page never saw the user id"
        );
        assert_eq!(
            event["context"]["ids"]["user_id"], "user-9",
            "stitched: {event}"
        );
        assert_eq!(event["context"]["ids"]["gclid"], "GCXCLICK9", "{event}");
    }

    let (meta, ga) = payloads(&w.vendor);
    let landing = meta
        .iter()
        .find(|e| {
            e["event_name"] == "PageView"
                && e["event_source_url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with(&shop))
        })
        .unwrap_or_else(|| panic!("the landing at Meta: {meta:?}"));
    assert!(
        landing["user_data"].get("external_id").is_none(),
        "before the identify"
    );
    for event in &meta {
        let user = &event["user_data"];
        assert!(
            user["fbc"]
                .as_str()
                .is_some_and(|c| c.starts_with("fb.1.") && c.ends_with(".FBXCLICK9")),
            "{event}"
        );
        assert_eq!(user["fbp"], fbp.as_str(), "{event}");
    }
    let after: Vec<&Value> = meta
        .iter()
        .filter(|e| {
            e["event_name"] != "PageView"
                || e["event_source_url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with(&brand))
        })
        .collect();
    assert!(after.len() >= 3, "{meta:?}");
    for event in after {
        assert_eq!(
            event["user_data"]["external_id"],
            json!([sha256("user-9")]),
            "{event}"
        );
    }
    assert!(
        !format!("{meta:?}").contains("user-9"),
        "Meta never sees the raw user id"
    );
    assert!(ga.len() >= 4, "{ga:?}");
    for payload in &ga {
        assert_eq!(
            payload["client_id"], "1234.5678",
            "GA's client id on both domains: {payload}"
        );
    }
    assert!(
        ga.iter().filter(|p| p["user_id"] == "user-9").count() >= 3,
        "GA4 knows the user after the identify, on the brand too: {ga:?}"
    );

    // The token was for one crossing: shown again, it is refused.
    let token = seen["token"]
        .as_str()
        .unwrap_or_else(|| panic!("the token: {seen}"));
    let again = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{proxy_port}/v1/handoff/accept"))
        .header("origin", &brand)
        .header("content-type", "text/plain")
        .body(json!({"token": token, "writeKey": w.write_key}).to_string())
        .send()
        .await
        .expect("accept");
    assert_eq!(again.status(), StatusCode::CONFLICT);

    // None of it crossed to the control plane.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wire = wire.lock().expect("lock").clone();
    assert!(wire.len() > 1000, "the relay carried the sync stream");
    let crossed = sluice_tests::crossed(
        &wire,
        &[
            &visitor,
            &fbp,
            "FBXCLICK9",
            "GCXCLICK9",
            "1234.5678",
            "user-9",
            token,
        ],
    );
    assert!(
        crossed.is_empty(),
        "{crossed:?} crossed to the control plane"
    );
    node.shutdown().await;
}
