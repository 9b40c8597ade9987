//! A harness for end-to-end tests of both planes: real control planes and data planes on
//! ephemeral ports, talking real gRPC over loopback, on SQLite or the machine's PostgreSQL
//! and NATS. The tests are in `tests/tests/`; the tests of the `sluice` binary itself are
//! `tests/cli.rs`, a test target of the root package.

#![allow(clippy::unwrap_used)]

pub mod nats_cluster;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_control_plane::{RawConfig, RunningControlPlane};
use sluice_data_plane::RunningNode;
use sqlx::Connection as _;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const PASSWORD: &str = "correct horse battery";
/// Shared by replicas of one test so key hashes agree.
pub const PEPPER: &str = "a test pepper that is at least thirty-two bytes long";

pub fn postgres_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("SLUICE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// The S3-compatible server the archive tests use (`.ci/run` starts one on port 9000).
pub fn s3_url() -> String {
    std::env::var("SLUICE_TEST_S3_URL").unwrap_or_else(|_| "http://127.0.0.1:9000".to_owned())
}

/// A port on 127.0.0.1 that nothing listens on now, for a server the test starts later; never
/// the same port twice in one test process. The kernel may hand a just-released port out
/// again, and two services given one port leave one dead while the other answers its health
/// checks.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return port;
        }
    }
}

/// A fresh PostgreSQL database for one test; unreachable PostgreSQL fails the test.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let admin = postgres_url();
        let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for these tests: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub async fn drop_database(self) {
        let mut conn = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .ok();
    }
}

/// Options for a control plane under test.
#[derive(Default, Clone)]
pub struct CpOptions {
    pub database_url: Option<String>,
    pub nats_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// PEM certificate and key for TLS on the gRPC port.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A control plane on ephemeral ports, with a signed-in owner.
pub struct Cp {
    pub running: Option<RunningControlPlane>,
    pub base: String,
    pub grpc_url: String,
    pub token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cp {
    pub async fn start(options: CpOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let raw = RawConfig {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: options.database_url,
            data_dir: options.data_dir.unwrap_or_else(|| dir.path().to_path_buf()),
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(PASSWORD.into()),
            key_pepper: Some(PEPPER.into()),
            nats_url: options.nats_url,
            tls_cert: options.tls.as_ref().map(|(cert, _)| cert.clone()),
            tls_key: options.tls.as_ref().map(|(_, key)| key.clone()),
            login_attempts_per_ip_per_minute: 1000,
            ..RawConfig::default()
        };
        let running = sluice_control_plane::start(raw.validate().unwrap())
            .await
            .expect("control plane starts");
        let base = format!("http://{}", running.http_addr);
        let scheme = if running.state.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let grpc_url = format!("{scheme}://{}", running.grpc_addr);
        let http = reqwest::Client::new();
        let login: Value = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"]
            .as_str()
            .expect("signed in")
            .to_owned();
        Self {
            running: Some(running),
            base,
            grpc_url,
            token,
            http,
            _dir: dir,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// A person's query token for `tenant`'s data planes (10 minutes), as the console gets it.
    pub async fn query_token(&self, tenant: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/query-token"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["expires_in"], 600);
        body["token"].as_str().expect("token").to_owned()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn tenant(&self, name: &str) -> String {
        let (status, body) = self
            .call(Method::POST, "/api/v1/tenants", Some(json!({"name": name})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// A service key: (id, plaintext).
    pub async fn service_key(&self, tenant: &str) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/keys"),
                Some(json!({"name": "dp", "type": "service"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates a pipeline from a JSON spec; returns its id.
    pub async fn pipeline(&self, tenant: &str, name: &str, spec: Value) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/pipelines"),
                Some(json!({"name": name, "spec": spec})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Replaces a pipeline's spec; returns the tenant's new config version.
    pub async fn update_pipeline(&self, tenant: &str, pipeline: &str, spec: Value) -> u64 {
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/api/v1/tenants/{tenant}/pipelines/{pipeline}"),
                Some(json!({"spec": spec})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["config_version"].as_u64().unwrap()
    }

    /// An ingest key for `source` of a pipeline: (id, plaintext).
    pub async fn ingest_key(&self, tenant: &str, pipeline: &str, source: &str) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/keys"),
                Some(json!({"name": "site", "type": "ingest", "pipeline_id": pipeline, "source": source})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn revoke(&self, tenant: &str, key_id: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/keys/{key_id}/revoke"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub async fn config_version(&self, tenant: &str) -> u64 {
        let (_, body) = self
            .call(Method::GET, &format!("/api/v1/tenants/{tenant}"), None)
            .await;
        body["config_version"].as_u64().unwrap()
    }

    pub async fn data_planes(&self, tenant: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                Method::GET,
                &format!("/api/v1/tenants/{tenant}/data-planes"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().unwrap().clone()
    }
}

/// A minimal valid spec with one source; `tag` makes each version different.
/// Every message on `stage` now, each acknowledged, in the order fetched.
pub async fn drain_stage<B: sluice_bus::Bus>(bus: &B, stage: &str) -> Vec<sluice_bus::Message> {
    let mut out = Vec::new();
    loop {
        let deliveries = bus
            .fetch(stage, 1000, Duration::from_millis(300))
            .await
            .expect("fetch");
        if deliveries.is_empty() {
            return out;
        }
        for delivery in deliveries {
            out.push(delivery.message.clone());
            bus.ack(delivery).await.expect("ack");
        }
    }
}

pub fn spec(tag: &str) -> Value {
    json!({"sources": [{"name": "web"}], "governance": [{"step": "drop_fields", "fields": [format!("properties.{tag}")]}]})
}

/// Starts a data-plane node syncing from `grpc_url` with `key`, state in `state_dir`.
pub async fn start_node(grpc_url: &str, key: &str, state_dir: &Path) -> RunningNode {
    start_node_trusting(grpc_url, key, state_dir, None).await
}

/// The node policy's allowed hosts for tests, whose vendors listen on loopback.
pub const LOOPBACK_ALLOWED: &str = "127.0.0.1";

/// Starts a node like [`start_node`] after `configure` adjusted its settings (roles, ports).
pub async fn start_node_with(
    grpc_url: &str,
    key: &str,
    state_dir: &Path,
    configure: impl FnOnce(&mut sluice_data_plane::RawConfig),
) -> RunningNode {
    let mut raw = {
        let mut raw = sluice_data_plane::RawConfig::default();
        raw.node.roles = "receiver".into();
        raw.node.http_addr = "127.0.0.1:0".parse().unwrap();
        raw.proxy.proxy_addr = "127.0.0.1:0".parse().unwrap();
        raw.node.state_dir = state_dir.to_path_buf();
        raw.node.control_url = Some(grpc_url.to_owned());
        raw.node.service_key = Some(key.to_owned());
        raw.node.node_name = Some("test-node".into());
        raw.node.max_backoff_secs = 2;
        // The tests' vendors listen on loopback, which the default policy refuses.
        raw.policy.policy_allow_hosts = LOOPBACK_ALLOWED.into();
        raw
    };
    configure(&mut raw);
    sluice_data_plane::start(raw.validate().unwrap())
        .await
        .expect("data plane starts")
}

/// Like [`start_node`], trusting the PEM CA in `ca_file` for the control plane's TLS.
pub async fn start_node_trusting(
    grpc_url: &str,
    key: &str,
    state_dir: &Path,
    ca_file: Option<&Path>,
) -> RunningNode {
    start_node_with(grpc_url, key, state_dir, |raw| {
        raw.node.ca_file = ca_file.map(Path::to_path_buf);
    })
    .await
}

/// Polls `check` every 20 ms until it yields a value or `within` passes (then panics with
/// `what`). Returns the value and how long it took.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return (value, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A vendor API on loopback: answers each path as scripted (then 200), and records every
/// request with what it answered, so tests can count deliveries by idempotency key.
#[derive(Clone)]
pub struct Vendor {
    pub url: String,
    inner: std::sync::Arc<std::sync::Mutex<VendorState>>,
}

/// How the vendor answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with a `Retry-After` header, in seconds.
    RetryAfter(u16, u64),
    /// Answers 200 only after this long.
    Slow(Duration),
    /// A status with this JSON body (after the wait), as a vendor that answers in the body.
    Json(u16, &'static str, Duration),
    /// A redirect (301, 302, 307 or 308) to this URL.
    Redirect(u16, String),
}

/// A request the vendor received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: String,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn key(&self) -> String {
        self.headers
            .get("idempotency-key")
            .cloned()
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct VendorState {
    scripts: std::collections::HashMap<String, std::collections::VecDeque<Reply>>,
    always: std::collections::HashMap<String, Reply>,
    received: Vec<Received>,
    /// (path, idempotency key) of every request as it arrived, answered or not.
    arrivals: Vec<(String, String)>,
    /// The bodies of those requests, as they arrived.
    arrived_bodies: Vec<(String, Vec<u8>)>,
}

impl Vendor {
    pub async fn start() -> Self {
        use axum::extract::State;
        use axum::http::{HeaderMap, Uri};

        let inner = std::sync::Arc::new(std::sync::Mutex::new(VendorState::default()));
        async fn answer(
            State(inner): State<std::sync::Arc<std::sync::Mutex<VendorState>>>,
            uri: Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::response::Response {
            use axum::response::IntoResponse as _;
            let path = uri.path().to_owned();
            let reply = {
                let mut state = inner.lock().unwrap();
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                state.arrivals.push((path.clone(), key));
                state.arrived_bodies.push((path.clone(), body.to_vec()));
                let scripted = state.scripts.get_mut(&path).and_then(|s| s.pop_front());
                scripted
                    .or_else(|| state.always.get(&path).cloned())
                    .unwrap_or(Reply::Status(200))
            };
            let at = Instant::now();
            let status = match &reply {
                Reply::Status(s) | Reply::RetryAfter(s, _) | Reply::Redirect(s, _) => *s,
                Reply::Slow(wait) => {
                    tokio::time::sleep(*wait).await;
                    200
                }
                Reply::Json(s, _, wait) => {
                    tokio::time::sleep(*wait).await;
                    *s
                }
            };
            inner.lock().unwrap().received.push(Received {
                path,
                query: uri.query().unwrap_or_default().to_owned(),
                headers: headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            v.to_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
                body: body.to_vec(),
                at,
                status,
            });
            let code = reqwest::StatusCode::from_u16(status).unwrap();
            let body = match &reply {
                Reply::Json(_, body, _) => (*body).to_owned(),
                _ => format!("{{\"answer\":{status}}}"),
            };
            let mut response = (
                axum::http::StatusCode::from_u16(code.as_u16()).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response();
            if let Reply::RetryAfter(_, secs) = reply {
                response
                    .headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
            } else if let Reply::Redirect(_, to) = reply {
                response
                    .headers_mut()
                    .insert("location", to.parse().unwrap());
            }
            response
        }
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner }
    }

    /// Answers the next requests to `path` with `replies`, in order (then as always).
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.inner
            .lock()
            .unwrap()
            .scripts
            .insert(path.to_owned(), replies.into());
    }

    /// Answers every request to `path` with `reply` once the script is used up.
    pub fn always(&self, path: &str, reply: Reply) {
        self.inner
            .lock()
            .unwrap()
            .always
            .insert(path.to_owned(), reply);
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.inner
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests arrived, on any path.
    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().arrivals.len()
    }

    /// The idempotency key of every request to `path` as it arrived, including requests whose
    /// sender went away before the answer.
    pub fn arrivals(&self, path: &str) -> Vec<String> {
        self.inner
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// The JSON body of every request to `path` as it arrived, including requests whose
    /// sender went away before the answer.
    pub fn arrived_bodies(&self, path: &str) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .arrived_bodies
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| serde_json::from_slice(body).unwrap_or(Value::Null))
            .collect()
    }

    /// Idempotency keys the vendor accepted (answered 2xx), each once.
    pub fn accepted_keys(&self, path: &str) -> std::collections::BTreeSet<String> {
        self.received(path)
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(Received::key)
            .collect()
    }
}

/// Relays TCP to `upstream`, keeping every byte that passes either way: put it between the
/// planes to show what crosses.
pub async fn recording_relay(
    upstream: String,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, kept.clone()));
            tokio::spawn(pipe(sr, cw, kept.clone()));
        }
    });
    (format!("http://{addr}"), seen)
}

/// A TCP relay to `upstream` that, while `on` is set, replaces `needle` by `with` (of the same
/// length) in what upstream sends back: a man in the middle of the config-sync stream, who
/// edits a snapshot without breaking HTTP/2's framing.
pub async fn tampering_relay(
    upstream: String,
    needle: &'static [u8],
    with: &'static [u8],
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> String {
    assert_eq!(needle.len(), with.len());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let ignored = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            tokio::spawn(pipe(cr, sw, ignored.clone()));
            let on = on.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut from, mut to) = (sr, cw);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match from.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let chunk = &mut buf[..n];
                    if on.load(std::sync::atomic::Ordering::Relaxed) {
                        let mut i = 0;
                        while i + needle.len() <= chunk.len() {
                            if &chunk[i..i + needle.len()] == needle {
                                chunk[i..i + needle.len()].copy_from_slice(with);
                                i += needle.len();
                            } else {
                                i += 1;
                            }
                        }
                    }
                    if to.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                seen.lock().expect("lock").extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether any of `needles` is in `wire`: the ones that are.
pub fn crossed<'a>(wire: &[u8], needles: &[&'a str]) -> Vec<&'a str> {
    needles
        .iter()
        .copied()
        .filter(|n| wire.windows(n.len()).any(|w| w == n.as_bytes()))
        .collect()
}

/// Serves one HTML page on `listener`.
pub fn page_server(listener: std::net::TcpListener, html: String) -> tokio::task::JoinHandle<()> {
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Runs a script of `tests/browser/` with node; its stdout as JSON.
pub fn run_browser_script(script: &str, args: &[&str]) -> Value {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "browser tests need playwright-core: run `npm ci --prefix tests/browser` (bash .ci/run does) and install Debian's chromium"
    );
    let output = std::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .output()
        .expect("node runs (install Node.js)");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// Writes the archive one archiver would have written over `days` days from the day of
/// `first_ms` (UTC): for each of the first `hours` hours of a day, `files` small files of
/// `per_file` events each. Event `d<day>-h<hour>-f<file>-<n>` has user `u-<n % 10>`.
/// Returns the events written.
pub async fn write_small_archive(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    tenant: &str,
    first_ms: i64,
    (days, hours, files, per_file): (u32, u32, u32, u32),
) -> u64 {
    use sluice_archive::record::{BatchBuilder, Envelope};
    let mut written = 0;
    for day in 0..days {
        for hour in 0..hours {
            let at = first_ms + i64::from(day) * 86_400_000 + i64::from(hour) * 3_600_000;
            let (dt, hh) = sluice_archive::layout::partition(at);
            for file in 0..files {
                let mut rows = BatchBuilder::default();
                for n in 0..per_file {
                    let name = ["Order Completed", "Page Viewed"][(n % 2) as usize];
                    let text = json!({
                        "message_id": format!("d{day}-h{hour}-f{file}-{n}"),
                        "type": "track", "event": name,
                        "user_id": format!("u-{}", n % 10), "anonymous_id": format!("a-{}", n % 10),
                        "source": "web", "pipeline_id": "p",
                        "properties": {"revenue": n},
                        "received_at": sluice_pipeline::time::rfc3339(at + i64::from(n)),
                    })
                    .to_string();
                    let event = Envelope::parse(&text).expect("an event");
                    rows.push(&event, at + i64::from(n));
                }
                let bytes = sluice_archive::encode::parquet(&rows.finish().expect("rows"))
                    .expect("parquet");
                let path = sluice_archive::layout::object_path(
                    tenant,
                    "events",
                    &dt,
                    &hh,
                    uuid::Uuid::now_v7(),
                );
                sluice_archive::encode::upload(store, &path, bytes)
                    .await
                    .expect("upload");
                written += u64::from(per_file);
            }
        }
    }
    written
}
