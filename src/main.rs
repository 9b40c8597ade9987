//! The one Sluice binary: parses the command line and hands over to a plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

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
    DataPlane(DataPlaneArgs),
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
                ..Default::default()
            };
            let config = raw.validate().context("invalid configuration")?;
            sluice_control_plane::run(config)
                .await
                .context("control plane failed")?;
        }
        Command::DataPlane(args) => {
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
                proxy_addr: args.proxy_addr,
                receiver_urls: args.receiver_urls,
                proxy_cookie_name: args.proxy_cookie_name,
                proxy_cookie_domain: non_empty(args.proxy_cookie_domain),
                proxy_trust_forwarded_for: args.proxy_trust_forwarded_for,
                geoip_db: args.geoip_db,
                ..Default::default()
            };
            let config = raw.validate().context("invalid configuration")?;
            sluice_data_plane::run(config)
                .await
                .context("data plane failed")?;
        }
    }
    Ok(())
}
