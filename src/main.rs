//! The one Sluice binary: parses the command line and hands over to a plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod dev;

/// mimalloc: the data plane allocates per request and per event on every core; glibc's
/// malloc cost about a tenth of the receiver's CPU in profiles (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: a hybrid event pipeline. A hosted control plane holds tenants, users, pipelines and
/// keys; data planes in your own network collect, govern, deliver and archive events.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
struct Cli {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Try Sluice on one machine: the control plane and a data plane with every role in one
    /// process, talking over real gRPC on loopback.
    ///
    /// The first run creates an owner, a demo tenant, a service key, a pipeline delivering to
    /// a built-in echo endpoint and an ingest key, and prints how to send an event and find it
    /// delivered, counted and archived. State persists under --data-dir.
    Dev(dev::DevArgs),
    /// Run the control plane: REST API, web UI and gRPC config sync.
    ///
    /// Without --database-url, state lives in SQLite under --data-dir. The first owner comes
    /// from SLUICE_ADMIN_EMAIL and SLUICE_ADMIN_PASSWORD; without them, a one-time setup
    /// token is printed to the log.
    ControlPlane(ControlPlaneArgs),
    /// Run a data plane: sync configuration from the control plane and serve the given roles.
    ///
    /// Needs SLUICE_CONTROL_URL (the control plane's gRPC address) and SLUICE_SERVICE_KEY (a
    /// service key generated in the control plane). Keeps its identity and last-known-good
    /// configuration in --state-dir, and runs on that copy while the control plane is away.
    DataPlane(Box<DataPlaneArgs>),
    /// Run SQL over a data plane's archive (its query role) and print the result.
    ///
    /// The one table is `events`; JSON columns (properties, traits, context) are read with
    /// json_get_str(properties, 'key') and friends. Example:
    /// sluice query "SELECT event, count(*) FROM events WHERE dt = '2026-11-22' GROUP BY event"
    Query(QueryArgs),
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// The SQL statement (one read-only query).
    sql: String,

    /// Base URL of a data plane running the query role.
    #[arg(
        long,
        env = "SLUICE_QUERY_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    url: String,

    /// An api or service key of the tenant, or a query token.
    #[arg(long, env = "SLUICE_QUERY_KEY", hide_env_values = true)]
    key: String,

    /// Output: an aligned table, CSV or JSON rows.
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
    format: String,
}

#[derive(Debug, Args)]
struct ControlPlaneArgs {
    /// Address of the REST API and web UI.
    #[arg(long, env = "SLUICE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,

    /// Address of the gRPC config-sync service for data planes.
    #[arg(long, env = "SLUICE_GRPC_ADDR", default_value = "127.0.0.1:8081")]
    grpc_addr: SocketAddr,

    /// PostgreSQL URL (postgres://user:pass@host/db). Default: SQLite in --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,

    /// Directory for the SQLite database and the generated key pepper.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    data_dir: PathBuf,

    /// Let anyone create an account with POST /api/v1/auth/signup.
    #[arg(long, env = "SLUICE_ALLOW_SIGNUP")]
    allow_signup: bool,

    /// Secret (32+ bytes) mixed into stored key hashes. Default: generated into --data-dir.
    /// Replicas that share a database must share it.
    #[arg(long, env = "SLUICE_KEY_PEPPER", hide_env_values = true)]
    key_pepper: Option<String>,

    /// Send cookies without the Secure attribute (only for plain-HTTP access from another host).
    #[arg(long, env = "SLUICE_INSECURE_COOKIES")]
    insecure_cookies: bool,

    /// NATS server shared by control-plane replicas, so changes and revocations reach every
    /// replica's streams. Default: this process is the only replica.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,

    /// PEM certificate chain for TLS on the gRPC port (with --tls-key).
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// A data plane's query role as your browsers reach it (http://dataplane.internal:8090):
    /// the console's archive page starts there, and its Content-Security-Policy admits it.
    #[arg(long, env = "SLUICE_UI_QUERY_URL")]
    ui_query_url: Option<String>,
}

#[derive(Debug, Args)]
struct DataPlaneArgs {
    /// Roles to run: `all`, or a comma-separated subset of proxy, receiver, processor,
    /// delivery, archiver, query.
    #[arg(long, env = "SLUICE_ROLES", default_value = "all")]
    roles: String,

    /// The one HTTP listener: the roles' routes, /health/live, /health/ready and /metrics.
    #[arg(long, env = "SLUICE_HTTP_ADDR", default_value = "127.0.0.1:8090")]
    http_addr: SocketAddr,

    /// Directory for the node id and the last-known-good configuration (mode 0700).
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = "./sluice-data/node")]
    state_dir: PathBuf,

    /// The control plane's gRPC address, e.g. https://control.example.com:8081.
    #[arg(long, env = "SLUICE_CONTROL_URL")]
    control_url: Option<String>,

    /// The service key (slk_svc_…) generated in the control plane.
    #[arg(long, env = "SLUICE_SERVICE_KEY", hide_env_values = true)]
    service_key: Option<String>,

    /// Name shown in the fleet view. Default: the host name.
    #[arg(long, env = "SLUICE_NODE_NAME")]
    node_name: Option<String>,

    /// PEM CA certificate to trust for the control plane's TLS (besides the public roots).
    #[arg(long, env = "SLUICE_CA_FILE")]
    ca_file: Option<PathBuf>,

    /// Directory of secret files (file name = secret name), read after the environment.
    #[arg(long, env = "SLUICE_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,

    /// NATS JetStream for the bus between roles (nats://…). Default: the embedded durable
    /// queue in --state-dir/bus.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,

    /// Prefix of the NATS stream and subject names, so several data planes can share one
    /// NATS server.
    #[arg(long, env = "SLUICE_NATS_PREFIX", default_value = "sluice")]
    nats_prefix: String,

    /// Most bytes one fetch of the `raw` stage takes from NATS (at least 1 MiB): smaller
    /// bounds the bursts a processor takes in at once.
    #[arg(long, env = "SLUICE_NATS_FETCH_BYTES", default_value_t = sluice_bus::nats::DEFAULT_FETCH_BYTES)]
    nats_fetch_bytes: usize,

    /// Bytes each stage's NATS stream may hold before receivers answer 503 (at least
    /// 1 MiB); applied to streams that already exist too.
    #[arg(long, env = "SLUICE_NATS_MAX_BYTES", default_value_t = sluice_bus::nats::DEFAULT_MAX_BYTES)]
    nats_max_bytes: u64,

    /// Replicas of each NATS stream (3 on a three-node cluster, at most 5); applied to
    /// streams that already exist too.
    #[arg(long, env = "SLUICE_NATS_REPLICAS", default_value_t = 1)]
    nats_replicas: usize,

    /// Packed publishes to the `raw` stage that may await NATS's acknowledgement at once;
    /// requests arriving meanwhile are stored together as one message. 0 stores each request
    /// as its own message (at most 1024).
    #[arg(long, env = "SLUICE_NATS_PACKS_IN_FLIGHT", default_value_t = sluice_bus::nats::DEFAULT_PACKS_IN_FLIGHT)]
    nats_packs_in_flight: usize,

    /// Unacknowledged bytes the embedded bus holds per stage before receivers answer 503
    /// (at least 1 MiB).
    #[arg(long, env = "SLUICE_BUS_MAX_BYTES", default_value_t = sluice_bus::embedded::DEFAULT_MAX_BYTES)]
    bus_max_bytes: u64,

    /// The proxy's public listener for browsers and SDKs (/sluice.js, /v1/*); health and
    /// metrics stay on --http-addr.
    #[arg(long, env = "SLUICE_PROXY_ADDR", default_value = "127.0.0.1:8088")]
    proxy_addr: SocketAddr,

    /// Comma-separated receiver base URLs the proxy forwards to. Default: this node's own
    /// receiver, when it runs that role.
    #[arg(long, env = "SLUICE_RECEIVER_URLS", default_value = "")]
    receiver_urls: String,

    /// Name of the proxy's first-party visitor-id cookie.
    #[arg(long, env = "SLUICE_PROXY_COOKIE_NAME", default_value = "sluice_id")]
    proxy_cookie_name: String,

    /// Domain of that cookie (e.g. example.com to share it across subdomains). Default: the
    /// proxy's own host.
    #[arg(long, env = "SLUICE_PROXY_COOKIE_DOMAIN")]
    proxy_cookie_domain: Option<String>,

    /// Take the client address from X-Forwarded-For (only behind a load balancer that sets it).
    #[arg(long, env = "SLUICE_PROXY_TRUST_FORWARDED_FOR")]
    proxy_trust_forwarded_for: bool,

    /// A MaxMind GeoIP2/GeoLite2 City database (.mmdb) for pipelines that enrich with geoip.
    #[arg(long, env = "SLUICE_GEOIP_DB")]
    geoip_db: Option<PathBuf>,

    /// The archive in a local directory [default: <state-dir>/archive].
    #[arg(long, env = "SLUICE_ARCHIVE_DIR")]
    archive_dir: Option<PathBuf>,

    /// The archive at a gs://, az:// or s3:// URL (credentials from the environment).
    #[arg(long, env = "SLUICE_ARCHIVE_URL")]
    archive_url: Option<String>,

    /// S3 bucket of the archive (instead of a local directory).
    #[arg(long, env = "S3_BUCKET")]
    s3_bucket: Option<String>,

    /// S3-compatible endpoint, http(s)://host:port, path-style (MinIO) [default: AWS].
    #[arg(long, env = "S3_ENDPOINT")]
    s3_endpoint: Option<String>,

    /// S3 access key id.
    #[arg(long, env = "S3_ACCESS_KEY", hide_env_values = true)]
    s3_access_key: Option<String>,

    /// S3 secret key.
    #[arg(long, env = "S3_SECRET_KEY", hide_env_values = true)]
    s3_secret_key: Option<String>,

    /// S3 region.
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    s3_region: String,

    /// Held event bytes that make the archiver write its files.
    #[arg(long, env = "SLUICE_ARCHIVE_FLUSH_BYTES", default_value_t = 128 * 1024 * 1024)]
    archive_flush_bytes: u64,

    /// Seconds the oldest held event waits before the archiver writes.
    #[arg(long, env = "SLUICE_ARCHIVE_FLUSH_SECS", default_value_t = 60)]
    archive_flush_secs: u64,

    /// Longest a query may run, in seconds.
    #[arg(long, env = "SLUICE_QUERY_TIMEOUT_SECS", default_value_t = 30)]
    query_timeout_secs: u64,

    /// Most rows a query may return.
    #[arg(long, env = "SLUICE_QUERY_MAX_ROWS", default_value_t = 100_000)]
    query_max_rows: usize,

    /// Memory a query may use, in bytes.
    #[arg(long, env = "SLUICE_QUERY_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024)]
    query_memory_bytes: usize,

    /// Parts a query's scan is split into and read at once; 0 picks the cores for an archive
    /// on local disk and 32 (or the cores, if more) for an object store; at most 256.
    #[arg(long, env = "SLUICE_QUERY_PARTITIONS", default_value_t = 0)]
    query_partitions: usize,
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error chain, for a person; no backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::ControlPlane(args) => {
            let raw = sluice_control_plane::RawConfig {
                http_addr: args.http_addr,
                grpc_addr: args.grpc_addr,
                database_url: non_empty(args.database_url),
                data_dir: args.data_dir,
                allow_signup: args.allow_signup,
                admin_email: non_empty(std::env::var("SLUICE_ADMIN_EMAIL").ok()),
                admin_password: non_empty(std::env::var("SLUICE_ADMIN_PASSWORD").ok()),
                key_pepper: args.key_pepper,
                secure_cookies: !args.insecure_cookies,
                nats_url: non_empty(args.nats_url),
                tls_cert: args.tls_cert,
                tls_key: args.tls_key,
                ui_query_url: non_empty(args.ui_query_url),
                ..Default::default()
            };
            let config = raw.validate().context("invalid configuration")?;
            sluice_control_plane::run(config)
                .await
                .context("control plane failed")?;
        }
        Command::DataPlane(args) => {
            let args = *args;
            let raw = sluice_data_plane::RawConfig {
                roles: args.roles,
                http_addr: args.http_addr,
                state_dir: args.state_dir,
                control_url: non_empty(args.control_url),
                service_key: non_empty(args.service_key),
                node_name: non_empty(args.node_name),
                ca_file: args.ca_file,
                secrets_dir: args.secrets_dir,
                nats_url: non_empty(args.nats_url),
                nats_prefix: args.nats_prefix,
                nats_fetch_bytes: args.nats_fetch_bytes,
                nats_max_bytes: args.nats_max_bytes,
                nats_replicas: args.nats_replicas,
                nats_packs_in_flight: args.nats_packs_in_flight,
                bus_max_bytes: args.bus_max_bytes,
                proxy_addr: args.proxy_addr,
                receiver_urls: args.receiver_urls,
                proxy_cookie_name: args.proxy_cookie_name,
                proxy_cookie_domain: non_empty(args.proxy_cookie_domain),
                proxy_trust_forwarded_for: args.proxy_trust_forwarded_for,
                geoip_db: args.geoip_db,
                archive_dir: args.archive_dir,
                archive_url: non_empty(args.archive_url),
                s3_bucket: non_empty(args.s3_bucket),
                s3_endpoint: non_empty(args.s3_endpoint),
                s3_access_key: non_empty(args.s3_access_key),
                s3_secret_key: non_empty(args.s3_secret_key),
                s3_region: args.s3_region,
                archive_flush_bytes: args.archive_flush_bytes,
                archive_flush_secs: args.archive_flush_secs,
                query_timeout_secs: args.query_timeout_secs,
                query_max_rows: args.query_max_rows,
                query_memory_bytes: args.query_memory_bytes,
                query_partitions: args.query_partitions,
                ..Default::default()
            };
            let config = raw.validate().context("invalid configuration")?;
            sluice_data_plane::run(config)
                .await
                .context("data plane failed")?;
        }
        Command::Query(args) => query::run(args).await?,
        Command::Dev(args) => dev::run(args).await?,
    }
    Ok(())
}

mod query {
    //! `sluice query`: the CLI client of a data plane's query role.

    use anyhow::Context as _;
    use serde_json::Value;
    use std::io::Write as _;

    pub async fn run(args: super::QueryArgs) -> anyhow::Result<()> {
        let format = if args.format == "csv" { "csv" } else { "json" };
        let url = format!("{}/v1/query", args.url.trim_end_matches('/'));
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&args.key)
            .json(&serde_json::json!({"sql": args.sql, "format": format}))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body = response.bytes().await.context("reading the answer")?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("{status}: {message}");
        }
        let mut out = std::io::stdout().lock();
        if format == "csv" {
            out.write_all(&body)?;
            return Ok(());
        }
        let answer: Value = serde_json::from_slice(&body).context("the answer is not JSON")?;
        if args.format == "json" {
            for row in answer["rows"].as_array().into_iter().flatten() {
                writeln!(out, "{row}")?;
            }
            return Ok(());
        }
        let columns: Vec<String> = answer["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        let rows: Vec<Vec<String>> = answer["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| columns.iter().map(|c| cell(&row[c])).collect())
            .collect();
        out.write_all(table(&columns, &rows).as_bytes())?;
        eprintln!(
            "({} rows, {} files, {:.0} ms)",
            answer["row_count"],
            answer["files_scanned"],
            answer["elapsed_ms"].as_f64().unwrap_or(0.0)
        );
        Ok(())
    }

    fn cell(value: &Value) -> String {
        match value {
            Value::Null => "NULL".into(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// Columns padded to their widest cell, with a rule under the header.
    pub fn table(columns: &[String], rows: &[Vec<String>]) -> String {
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([c.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("{}\n", padded.join(" | ").trim_end())
        };
        let mut out = line(columns);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("{}\n", rule.join("-+-")));
        for row in rows {
            out.push_str(&line(row));
        }
        out
    }
}
