//! `sluice dev`: the whole product in one process, for trying it. The control plane (SQLite)
//! and a data plane with every role talk over real gRPC on loopback, exactly as separate
//! processes would; the first run creates an owner, a demo tenant, its keys and a pipeline
//! whose webhook destination is a built-in echo endpoint. Everything persists under
//! `--data-dir`, so a restart picks up where the last run stopped.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where everything lives: the control plane's database, the node's state and bus, the
    /// archive, and `dev.json` with the demo's credentials.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    data_dir: PathBuf,

    /// The control plane's REST API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,

    /// The control plane's gRPC config sync.
    #[arg(long, default_value = "127.0.0.1:8081")]
    grpc_addr: SocketAddr,

    /// The data plane's HTTP listener (Segment API, query, DLQ, metrics).
    #[arg(long, default_value = "127.0.0.1:8090")]
    node_addr: SocketAddr,

    /// The proxy's public listener (first-party edge, `/sluice.js`).
    #[arg(long, default_value = "127.0.0.1:8088")]
    proxy_addr: SocketAddr,

    /// The built-in echo endpoint the demo pipeline delivers to.
    #[arg(long, default_value = "127.0.0.1:8099")]
    echo_addr: SocketAddr,
}

const EMAIL: &str = "owner@example.com";

/// What the first run created, kept in `dev.json` (mode 0600: it holds secrets).
struct Demo {
    password: String,
    tenant_id: String,
    service_key: String,
    write_key: String,
    /// A viewer `api` key, for reading the REST API with curl.
    api_key: String,
}

impl Demo {
    fn to_json(&self) -> Value {
        json!({"email": EMAIL, "password": self.password, "tenant_id": self.tenant_id,
            "service_key": self.service_key, "write_key": self.write_key,
            "api_key": self.api_key})
    }

    fn from_json(value: &Value) -> Option<Self> {
        let text = |name: &str| value[name].as_str().map(str::to_owned);
        Some(Self {
            password: text("password")?,
            tenant_id: text("tenant_id")?,
            service_key: text("service_key")?,
            write_key: text("write_key")?,
            api_key: text("api_key")?,
        })
    }
}

/// What the echo endpoint has seen.
#[derive(Default)]
struct Echo {
    deliveries: u64,
    last: Option<Value>,
}

type SharedEcho = Arc<Mutex<Echo>>;

async fn echo_receive(State(echo): State<SharedEcho>, body: Bytes) -> axum::Json<Value> {
    let parsed = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let events = parsed.as_array().map_or(1, Vec::len);
    tracing::info!(
        events,
        bytes = body.len(),
        "echo destination received a delivery"
    );
    if let Ok(mut echo) = echo.lock() {
        echo.deliveries += 1;
        echo.last = Some(parsed);
    }
    axum::Json(json!({"ok": true}))
}

async fn echo_show(State(echo): State<SharedEcho>) -> axum::Json<Value> {
    let echo = echo.lock().map(|e| (e.deliveries, e.last.clone()));
    let (deliveries, last) = echo.unwrap_or_default();
    axum::Json(json!({"deliveries": deliveries, "last": last}))
}

async fn start_echo(addr: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/echo", post(echo_receive).get(echo_show))
        .with_state(SharedEcho::default());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("the echo endpoint cannot listen on {addr}"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "echo endpoint stopped");
        }
    });
    Ok(())
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let demo_file = args.data_dir.join("dev.json");
    let existing = read_demo(&demo_file)?;
    let password = match &existing {
        Some(demo) => demo.password.clone(),
        None => sluice_keys::random::token::<18>()?,
    };

    start_echo(args.echo_addr).await?;
    let control = sluice_control_plane::RawConfig {
        http_addr: args.http_addr,
        grpc_addr: args.grpc_addr,
        data_dir: args.data_dir.join("control-plane"),
        admin_email: Some(EMAIL.into()),
        admin_password: Some(password.clone()),
        // Plain HTTP on loopback: a Secure cookie would never come back.
        secure_cookies: false,
        ui_query_url: Some(format!("http://{}", args.node_addr)),
        ..Default::default()
    }
    .validate()
    .context("invalid control-plane configuration")?;
    let control = sluice_control_plane::start(control)
        .await
        .context("the control plane cannot start")?;
    let api = format!("http://{}", control.http_addr);

    let demo = match existing {
        Some(demo) => demo,
        None => {
            let demo = seed(&api, &password, args.echo_addr).await?;
            sluice_keys::private_file::write(
                &demo_file,
                &serde_json::to_vec_pretty(&demo.to_json())?,
            )
            .with_context(|| format!("cannot write {}", demo_file.display()))?;
            demo
        }
    };

    let node = {
        let mut raw = sluice_data_plane::RawConfig::default();
        raw.node.roles = "all".into();
        raw.node.http_addr = args.node_addr;
        raw.proxy.proxy_addr = args.proxy_addr;
        raw.node.state_dir = args.data_dir.join("node");
        raw.node.control_url = Some(format!("http://{}", control.grpc_addr));
        raw.node.service_key = Some(demo.service_key.clone());
        raw.node.node_name = Some("dev".into());
        // Short, so a test event shows up in an archive query within seconds.
        raw.archive.archive_flush_secs = 5;
        // And its counters reach the fleet view as quickly.
        raw.node.status_interval_secs = 2;
        // On a laptop, destinations on this machine (the demo's echo, a local mock) are what
        // one tries first; the node's own ports stay refused.
        raw.policy.policy_allow_hosts = "127.0.0.1, [::1]".into();
        raw
    }
    .validate()
    .context("invalid data-plane configuration")?;
    let proxy_addr = node.proxy.addr;
    let mut node = sluice_data_plane::start(node)
        .await
        .context("the data plane cannot start")?;
    for _ in 0..100 {
        if node.state.current().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    banner(&args, &demo, &password, &api, proxy_addr)?;

    let mut control = control;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
        () = node.wait() => tracing::error!("the data plane stopped unexpectedly"),
        () = control.wait() => tracing::error!("the control plane stopped unexpectedly"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), node.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), control.shutdown()).await;
    Ok(())
}

fn read_demo(path: &Path) -> anyhow::Result<Option<Demo>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let value: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            Demo::from_json(&value).map(Some).with_context(|| {
                format!(
                    "{} lacks the demo's credentials; delete the data directory to start afresh",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The first run's demo, created through the REST API as a person would.
async fn seed(api: &str, password: &str, echo_addr: SocketAddr) -> anyhow::Result<Demo> {
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: Option<&str>, body: Value| {
        call_api(
            &http,
            api,
            method,
            path.to_owned(),
            token.map(str::to_owned),
            body,
        )
    };
    use reqwest::Method;
    let login = call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        json!({"email": EMAIL, "password": password}),
    )
    .await
    .context("signing in as the demo owner (delete the data directory to start afresh)")?;
    let token = login["access_token"].as_str().context("no access token")?;
    let tenant = call(
        Method::POST,
        "/api/v1/tenants",
        Some(token),
        json!({"name": "demo"}),
    )
    .await?;
    let tenant_id = tenant["id"].as_str().context("tenant id")?.to_owned();
    let keys = format!("/api/v1/tenants/{tenant_id}/keys");
    let service = call(
        Method::POST,
        &keys,
        Some(token),
        json!({"name": "dev data plane", "type": "service"}),
    )
    .await?;
    let viewer = call(
        Method::POST,
        &keys,
        Some(token),
        json!({"name": "curl (viewer)", "type": "api", "role": "viewer"}),
    )
    .await?;
    let spec = json!({
        "sources": [{"name": "web"}],
        "destinations": [{"name": "echo", "webhook": {"url": format!("http://{echo_addr}/echo")}}],
        "archive": {"dataset": "web_events"},
    });
    let pipeline = call(
        Method::POST,
        &format!("/api/v1/tenants/{tenant_id}/pipelines"),
        Some(token),
        json!({"name": "web", "spec": spec}),
    )
    .await?;
    let pipeline_id = pipeline["id"].as_str().context("pipeline id")?;
    let ingest = call(
        Method::POST,
        &keys,
        Some(token),
        json!({"name": "website", "type": "ingest", "pipeline_id": pipeline_id, "source": "web"}),
    )
    .await?;
    Ok(Demo {
        password: password.to_owned(),
        tenant_id,
        service_key: service["key"].as_str().context("service key")?.to_owned(),
        write_key: ingest["key"].as_str().context("ingest key")?.to_owned(),
        api_key: viewer["key"].as_str().context("api key")?.to_owned(),
    })
}

async fn call_api(
    http: &reqwest::Client,
    api: &str,
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = http.request(method, format!("{api}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.context("the control plane's API")?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path}: {status} {body}");
    }
    Ok(body)
}

fn banner(
    args: &DevArgs,
    demo: &Demo,
    password: &str,
    api: &str,
    proxy_addr: SocketAddr,
) -> std::io::Result<()> {
    let node = format!("http://{}", args.node_addr);
    let key = &demo.service_key;
    let tenant = &demo.tenant_id;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "
Sluice is running. State is in {dir} (kept across restarts; dev.json has these secrets).

  console         {api}/  (web UI and REST API; gRPC config sync on {grpc})
  sign in         {EMAIL} / {password}
  data plane      {node}  (receiver, processor, delivery, archiver, query)
  proxy           http://{proxy_addr}  (first-party edge, serves /sluice.js)
  demo tenant     {tenant}
  service key     {key}
  write key       {write}  (the \"web\" source's ingest key)
  api key         {api_key}  (viewer: reads the REST API)

Send an event:
  curl -u '{write}:' -H 'content-type: application/json' \\
    -d '{{\"type\":\"track\",\"event\":\"Signed Up\",\"userId\":\"u-1\",\"properties\":{{\"plan\":\"pro\"}}}}' \\
    {node}/v1/track

See it delivered to the built-in echo destination:
  curl http://{echo}/echo
See the node and its counters in the fleet (or sign in at {api}/ and open Data planes):
  curl -H 'authorization: Bearer {api_key}' {api}/api/v1/tenants/{tenant}/data-planes
Query the archive (files are written every 5 s):
  sluice query \"SELECT event, count(*) AS n FROM events GROUP BY event\" --url {node} --key {key}
",
        dir = args.data_dir.display(),
        grpc = args.grpc_addr,
        write = demo.write_key,
        api_key = demo.api_key,
        echo = args.echo_addr,
    )
}
