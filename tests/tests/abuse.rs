//! The abuse suite's tokens and keys: forged, misaddressed, expired and other tenants'
//! credentials against a real control plane's API and a real node's query role. Each is
//! refused with its exact status and code; the genuine token beside them is accepted, so the
//! refusals are the checks' doing, not a broken setup.

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
    let version = cp.config_version(&ours).await;
    eventually(Duration::from_secs(5), "the configuration", || async {
        node.state.current().filter(|c| c.version >= version)
    })
    .await;
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
