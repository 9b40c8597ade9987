//! The abuse suite against a real control plane and a real node: forged, misaddressed,
//! expired and other tenants' credentials on the control plane's API and the node's query
//! role; gzip bombs, 100,000-event batches, injected cookies and foreign origins at the
//! receiver and the proxy. Each is refused with its exact status and code, and a genuine
//! request beside them is accepted, so the refusals are the checks' doing, not a broken setup.

use std::io::Write as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_keys::{JwtKeySet, SigningKeyMaterial};
use sluice_tests::{Cp, CpOptions, eventually, start_node_with};

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims")
}

/// `claims` under `alg: none`, with no signature.
fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!("{}.{}.", b64(&header), b64(claims))
}

/// `claims` signed with HMAC-SHA256 keyed by `secret`: the public key used as a shared secret.
fn hs256(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let signing_input = format!("{}.{}", b64(&header), b64(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// The forgeries of a genuine token's claims, each with what makes it one.
fn forgeries(cp: &Cp, genuine: &Value) -> Vec<(&'static str, String)> {
    let jwt = &cp.running.as_ref().expect("running").state.jwt;
    let kid = jwt.current_kid().to_owned();
    let x = jwt.jwks().keys[0].x.clone();
    let with = |change: Value| {
        let mut claims = genuine.clone();
        for (k, v) in change.as_object().expect("object") {
            claims[k] = v.clone();
        }
        jwt.sign(&claims).expect("sign")
    };
    let stranger = JwtKeySet::new(
        vec![SigningKeyMaterial {
            kid: kid.clone(),
            seed: [7; 32],
        }],
        sluice_keys::ISSUER,
    )
    .expect("key set");
    vec![
        (
            "expired",
            with(json!({"iat": now() - 7200, "exp": now() - 3600})),
        ),
        ("another issuer", with(json!({"iss": "attacker"}))),
        ("no expiry", {
            let mut claims = genuine.clone();
            claims.as_object_mut().expect("object").remove("exp");
            jwt.sign(&claims).expect("sign")
        }),
        ("alg none", unsigned(&kid, genuine)),
        (
            "HS256 keyed by the public key",
            hs256(&kid, genuine, x.as_bytes()),
        ),
        (
            "HS256 keyed by the raw public key",
            hs256(&kid, genuine, &URL_SAFE_NO_PAD.decode(&x).expect("x")),
        ),
        (
            "another key under the same kid",
            stranger.sign(genuine).expect("sign"),
        ),
        ("garbage", "a.b.c".to_owned()),
    ]
}

/// Waits until `node` runs `tenant`'s current configuration.
async fn configured(cp: &Cp, tenant: &str, node: &sluice_data_plane::RunningNode) {
    let version = cp.config_version(tenant).await;
    eventually(Duration::from_secs(5), "the configuration", || async {
        node.state.current().filter(|c| c.version >= version)
    })
    .await;
}

async fn status_and_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_misaddressed_expired_and_foreign_credentials_are_refused_on_both_planes() {
    let cp = Cp::start(CpOptions::default()).await;
    let ours = cp.tenant("ours").await;
    let theirs = cp.tenant("theirs").await;
    let spec = json!({"sources": [{"name": "web"}]});
    let pipeline = cp.pipeline(&ours, "main", spec.clone()).await;
    let their_pipeline = cp.pipeline(&theirs, "main", spec).await;
    let (_, service_key) = cp.service_key(&ours).await;
    let (_, their_service_key) = cp.service_key(&theirs).await;
    let ingest_key = cp.ingest_key(&ours, &pipeline, "web").await.1;
    let their_ingest_key = cp.ingest_key(&theirs, &their_pipeline, "web").await.1;
    let state = tempfile::tempdir().expect("tempdir");
    let archive = tempfile::tempdir().expect("tempdir");
    let archive_dir = archive.path().to_path_buf();
    let node = start_node_with(&cp.grpc_url, &service_key, state.path(), |raw| {
        raw.node.roles = "receiver,query".into();
        raw.archive.archive_dir = Some(archive_dir);
    })
    .await;
    configured(&cp, &ours, &node).await;
    let http = reqwest::Client::new();
    let query = |token: String| {
        let request = http
            .post(format!("http://{}/v1/query", node.http_addr))
            .bearer_auth(token)
            .json(&json!({"sql": "SELECT 1 AS one"}));
        async move { status_and_code(request.send().await.expect("send")).await }
    };
    let api = |token: String| {
        let request = http
            .get(format!("{}/api/v1/tenants/{ours}", cp.base))
            .bearer_auth(token);
        async move { status_and_code(request.send().await.expect("send")).await }
    };
    let ok = (StatusCode::OK, String::new());
    let unauthorized = (StatusCode::UNAUTHORIZED, "unauthorized".to_owned());

    // The node's query role.
    let genuine = cp.query_token(&ours).await;
    assert_eq!(query(genuine.clone()).await, ok, "the genuine token");
    let claims = claims_of(&genuine);
    for (what, forged) in forgeries(&cp, &claims) {
        assert_eq!(query(forged).await, unauthorized, "a query token: {what}");
    }
    let theirs_token = cp.query_token(&theirs).await;
    assert_eq!(
        query(theirs_token).await,
        (StatusCode::FORBIDDEN, "forbidden".to_owned()),
        "another tenant's query token"
    );
    for (what, credential) in [
        (
            "the console's access token (audience sluice-api)",
            cp.token.clone(),
        ),
        ("an ingest key", ingest_key.clone()),
        ("another tenant's service key", their_service_key.clone()),
        ("another tenant's ingest key", their_ingest_key),
    ] {
        assert_eq!(query(credential).await, unauthorized, "{what}");
    }

    // The control plane's API.
    assert_eq!(
        api(cp.token.clone()).await.0,
        StatusCode::OK,
        "the genuine token"
    );
    for (what, forged) in forgeries(&cp, &claims_of(&cp.token)) {
        assert_eq!(api(forged).await, unauthorized, "an access token: {what}");
    }
    for (what, credential) in [
        ("a query token (audience query)", genuine),
        ("an ingest key", ingest_key),
    ] {
        assert_eq!(api(credential).await, unauthorized, "{what}");
    }
    // Another tenant's service key reaches nothing of ours (existence does not leak).
    assert_eq!(
        api(their_service_key).await,
        (StatusCode::NOT_FOUND, "not_found".to_owned()),
        "another tenant's service key"
    );
    node.shutdown().await;
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).expect("gzip");
    encoder.finish().expect("gzip")
}

const SHOP: &str = "https://shop.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_floods_injected_cookies_and_foreign_origins_are_turned_away_at_the_door() {
    let cp = Cp::start(CpOptions::default()).await;
    let tenant = cp.tenant("shop").await;
    let spec = json!({"sources": [{"name": "web", "allowed_origins": [SHOP]}],
        "governance": [{"step": "identity"}]});
    let pipeline = cp.pipeline(&tenant, "main", spec).await;
    let write_key = cp.ingest_key(&tenant, &pipeline, "web").await.1;
    let (_, service_key) = cp.service_key(&tenant).await;
    let state = tempfile::tempdir().expect("tempdir");
    let archive = tempfile::tempdir().expect("tempdir");
    let archive_dir = archive.path().to_path_buf();
    let node = start_node_with(&cp.grpc_url, &service_key, state.path(), |raw| {
        raw.node.roles = "receiver,proxy,query".into();
        raw.archive.archive_dir = Some(archive_dir);
        // The console's APIs answer any origin by default (bearer tokens, never cookies);
        // an operator who names the console's origin gets only that one.
        raw.policy.policy_query_origins = SHOP.into();
    })
    .await;
    configured(&cp, &tenant, &node).await;
    let receiver = format!("http://{}", node.http_addr);
    let proxy = format!("http://{}", node.proxy_addr.expect("proxy"));
    let http = reqwest::Client::new();

    // 64 MiB of spaces in 64 KiB; 100,000 small events, plain (7 MB) and gzipped.
    let bomb = gzip(&vec![b' '; 64 << 20]);
    let flood: Vec<Value> = (0..100_000)
        .map(|i| json!({"type": "track", "event": "Flood", "userId": "u", "messageId": format!("flood-{i}")}))
        .collect();
    let flood = serde_json::to_vec(&json!({"batch": flood})).expect("json");
    let flood_gzipped = gzip(&flood);
    let too_large = (
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large".to_owned(),
    );
    for base in [&receiver, &proxy] {
        for (what, body, gzipped) in [
            ("a gzip bomb", bomb.clone(), true),
            ("100,000 events", flood.clone(), false),
            ("100,000 events, gzipped", flood_gzipped.clone(), true),
        ] {
            let mut request = http
                .post(format!("{base}/v1/batch"))
                .basic_auth(&write_key, Some(""))
                .header("content-type", "application/json")
                // A server that refuses a body unread closes the connection; a pooled one
                // would fail the next request instead of this one.
                .header("connection", "close");
            if gzipped {
                request = request.header("content-encoding", "gzip");
            }
            // The receiver's and the proxy's limit on a request's body (500 KiB).
            let past_the_limit = body.len() > 500 * 1024;
            match request.body(body).send().await {
                Ok(response) => {
                    assert_eq!(status_and_code(response).await, too_large, "{base}: {what}");
                }
                // A body past the limit by its Content-Length is answered 413 before it is
                // read; the server may close while the client is still writing it.
                Err(e) if past_the_limit && e.is_request() => {}
                Err(e) => panic!("{base}: {what}: {e}"),
            }
        }
    }

    // Cookies: what the browser sends and what the page URL carries never become attributes
    // or headers of the proxy's answer. A well-formed click beside them is kept.
    let page =
        |url: &str| json!({"type": "page", "name": "Landing", "context": {"page": {"url": url}}});
    let visit = |cookie: &'static str, event: Value| {
        let request = http
            .post(format!("{proxy}/v1/page"))
            .basic_auth(&write_key, Some(""))
            .header("origin", SHOP)
            .header("cookie", cookie)
            .json(&event);
        async move {
            let response = request.send().await.expect("send");
            assert_eq!(response.status(), StatusCode::OK);
            response
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let set = visit(
        "sluice_id=visitor-1",
        page(&format!("{SHOP}/?fbclid=GOODCLICK")),
    )
    .await;
    assert!(
        set.iter().any(|c| c.starts_with("sluice_id=visitor-1;")),
        "{set:?}"
    );
    assert!(
        set.iter().any(|c| c.starts_with("_fbc=")
            && c.split(';')
                .next()
                .is_some_and(|v| v.ends_with(".GOODCLICK"))),
        "{set:?}"
    );
    for (cookie, url) in [
        (
            "sluice_id=\"a; Domain=evil.example\"",
            format!("{SHOP}/?fbclid=X%3B%20Domain%3Devil.example"),
        ),
        (
            "sluice_id=a%0D%0ASet-Cookie:%20admin=1",
            format!("{SHOP}/?fbclid=X%0D%0ASet-Cookie:%20admin=1"),
        ),
        (
            "sluice_id=../../etc; _fbc=fb.1.1.x;Domain=evil.example",
            format!("{SHOP}/?fbclid=%22%3E%3Cscript%3E"),
        ),
    ] {
        let set = visit(cookie, page(&url)).await;
        for line in &set {
            let lower = line.to_ascii_lowercase();
            assert!(
                !lower.contains("evil")
                    && !lower.contains("admin")
                    && !lower.contains("domain=")
                    && !lower.contains("script"),
                "{cookie} / {url}: {line}"
            );
        }
        let visitor = set
            .iter()
            .find_map(|c| c.strip_prefix("sluice_id="))
            .and_then(|c| c.split(';').next())
            .expect("a visitor id");
        assert!(
            visitor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "a well-formed visitor id from {cookie:?}: {visitor}"
        );
        assert!(
            set.iter().all(|c| !c.starts_with("_fbc=")),
            "no click from {url}: {set:?}"
        );
    }

    // Origins: only the source's own is answered, never reflected, never `*`.
    let preflight = |url: String, origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    for foreign in [
        "https://evil.example",
        "https://shop.example.evil.example",
        "https://evilshop.example",
        "http://shop.example",
        "null",
    ] {
        let refused = preflight(format!("{proxy}/v1/batch"), foreign)
            .await
            .expect("send");
        assert!(
            refused
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{foreign}"
        );
        assert_eq!(
            status_and_code(refused).await,
            (StatusCode::FORBIDDEN, "forbidden".to_owned()),
            "a preflight from {foreign}"
        );
        let post = http
            .post(format!("{proxy}/v1/track"))
            .basic_auth(&write_key, Some(""))
            .header("origin", foreign)
            .json(&json!({"event": "Foreign", "userId": "u"}))
            .send()
            .await
            .expect("send");
        assert!(
            post.headers().get("access-control-allow-origin").is_none(),
            "{foreign}"
        );
        assert_eq!(
            status_and_code(post).await,
            (StatusCode::FORBIDDEN, "forbidden".to_owned()),
            "an event from {foreign}"
        );
        for path in ["/v1/query", "/v1/identities/u", "/v1/batch"] {
            let answer = preflight(format!("{receiver}{path}"), foreign)
                .await
                .expect("send");
            let allowed = answer.headers().get("access-control-allow-origin");
            assert!(allowed.is_none(), "{path} from {foreign}: {allowed:?}");
        }
    }
    let allowed = preflight(format!("{proxy}/v1/batch"), SHOP)
        .await
        .expect("send");
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(allowed.headers()["access-control-allow-origin"], SHOP);

    // What reached the bus: the four page views the proxy accepted, nothing else.
    let arrived = eventually(
        Duration::from_secs(10),
        "the accepted page views",
        || async {
            let text = reqwest::get(format!("{receiver}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let accepted: u64 = text.lines().find_map(|l| {
                l.strip_prefix("sluice_proxy_events_total{outcome=\"forwarded\"}")?
                    .trim()
                    .parse()
                    .ok()
            })?;
            (accepted >= 4).then_some(accepted)
        },
    )
    .await
    .0;
    let raw = sluice_tests::drain_stage(&node.bus, "raw").await;
    assert_eq!(
        (arrived, raw.len()),
        (4, 4),
        "only the four accepted page views"
    );
    node.shutdown().await;
}
