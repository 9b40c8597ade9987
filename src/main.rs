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

    /// The gRPC URL data planes reach this control plane at (https://sluice.example.com:8081),
    /// written into the console's data-plane setup lines. Default: the console's host with the
    /// gRPC port.
    #[arg(long, env = "SLUICE_PUBLIC_GRPC_URL")]
    public_grpc_url: Option<String>,
}

/// The data plane's settings: the sections of its configuration, each flag's default written
/// once, in `sluice_data_plane::config`.
#[derive(Debug, Args)]
struct DataPlaneArgs {
    #[command(flatten)]
    config: sluice_data_plane::RawConfig,
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
                public_grpc_url: non_empty(args.public_grpc_url),
                ..Default::default()
            };
            let config = raw.validate().context("invalid configuration")?;
            sluice_control_plane::run(config)
                .await
                .context("control plane failed")?;
        }
        Command::DataPlane(args) => {
            let args = *args;
            let raw = args.config;
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
