//! Load benchmarks on loopback. The server runs on its own runtime and threads, the load
//! generator on another, both in this process, so the figures include the client's cost on
//! the same two cores (a conservative measurement).
//!
//! ```sh
//! cargo run --release -p sluice-bench -- tenants --auth service-key --seconds 10 --concurrency 32
//! ```

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// The same allocator as the `sluice` binary, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod archive;
mod bus;
mod delivery;
mod http1;
mod identity;
mod pace;
mod pipeline;
mod processor;
mod receiver;
mod stats;
mod sync;
mod world;

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Sluice load benchmarks on loopback")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Authenticated `GET /api/v1/tenants`, the connectivity check data planes and scripts run.
    Tenants {
        /// Which credential authenticates each request.
        #[arg(long, value_enum, default_value = "service-key")]
        auth: Auth,
        #[command(flatten)]
        load: Load,
    },
    /// `POST /api/v1/auth/login`: deliberately slow (argon2id), to document its cost.
    Login {
        #[command(flatten)]
        load: Load,
    },
    /// The receiver over HTTP (Segment API), acknowledged only after the durable bus write.
    Receiver {
        /// NATS for the bus; default the embedded bus.
        #[arg(long)]
        nats_url: Option<String>,
        /// Events per request: 1 uses /v1/track, more use /v1/batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Measured seconds (after a 2-second warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests per second to hold; 0 for as fast as possible.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Byte budget of one fetch of the packed `raw` stage on NATS (the node's
        /// `nats_fetch_bytes`); by default the node's default.
        #[arg(long)]
        nats_fetch_bytes: Option<usize>,
        /// Packed publishes to `raw` awaiting NATS's acknowledgement at once (the node's
        /// `nats_packs_in_flight`; 0: each request its own message); by default the node's.
        #[arg(long)]
        nats_packs_in_flight: Option<usize>,
        /// Also list the N slowest requests with when each started in the measured window,
        /// and every late wake-up (over 8 ms for a 1 ms sleep) of this process's runtimes and
        /// of a plain thread, with wall-clock times.
        #[arg(long, default_value_t = 0)]
        slowest: usize,
        /// The load generator's HTTP client.
        #[arg(long, value_enum, default_value_t = receiver::Generator::Lean)]
        generator: receiver::Generator,
    },
    /// End to end: receiver acknowledgement to vendor receipt, through processor and delivery.
    Pipeline {
        /// Events per second; 0 measures the maximum, then runs at half of it.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Events per request.
        #[arg(long, default_value_t = 10)]
        batch: usize,
        /// Requests in flight per destination that sends one event per request (the webhook
        /// and GA4; the spec allows 1 to 64).
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
    },
    /// Archive write throughput on one core, then SQL over an archived data set from local
    /// disk, from an S3 server (`--s3-url`) and in DuckDB (`--python` with duckdb installed).
    Archive {
        /// Events in the query data set.
        #[arg(long, default_value_t = 10_000_000)]
        events: usize,
        /// Days the data set spans (one file per hour).
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Events for the one-core write measurement.
        #[arg(long, default_value_t = 1_000_000)]
        write_events: usize,
        /// Timed runs per query (after the warm-ups).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Untimed runs of each query before the timed ones (0 times the first, cold run).
        #[arg(long, default_value_t = 1)]
        warmups: usize,
        /// Only these queries, by name (comma-separated: `count`, `filter on event`,
        /// `group by property`, …); all by default.
        #[arg(long, value_delimiter = ',')]
        queries: Vec<String>,
        /// Where to write the archive (a temporary directory by default).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// An S3-compatible server to copy the archive to and query it there.
        #[arg(long)]
        s3_url: Option<String>,
        /// An existing, empty bucket on that server (by default the bench creates a fresh
        /// one with an unsigned `PUT`, which servers that check signatures refuse).
        #[arg(long)]
        s3_bucket: Option<String>,
        /// The access key the S3 server expects.
        #[arg(long, default_value = "bench")]
        s3_access_key: String,
        /// The secret key the S3 server expects.
        #[arg(long, default_value = "bench")]
        s3_secret_key: String,
        /// Scan partitions for the S3 queries, one column each (comma-separated; by default
        /// the query role's default for an object store).
        #[arg(long, value_delimiter = ',')]
        s3_partitions: Vec<usize>,
        /// More scan partition counts for the local queries, one column each beside the
        /// default (comma-separated).
        #[arg(long, value_delimiter = ',')]
        local_partitions: Vec<usize>,
        /// Also measure the S3 queries without filters evaluated while decoding (columns
        /// marked `np`).
        #[arg(long)]
        s3_without_pushdown: bool,
        /// Milliseconds added to every request to the S3 server (a GET waits that long
        /// before it is sent), as a server farther away than loopback would.
        #[arg(long, default_value_t = 0)]
        s3_latency_ms: u64,
        /// Files each hour of the query data set is written as (an archiver flushing every
        /// minute writes 60: 1,440 a day).
        #[arg(long, default_value_t = 1)]
        files_per_hour: usize,
        /// Compact the data set as the archiver does after measuring it, then measure again.
        #[arg(long)]
        compact: bool,
        /// Print `EXPLAIN ANALYZE` (the scan's bytes, requests' time, pages pruned) of the
        /// named query (`count`, `group by property`, …) on local disk and on S3 after the
        /// timings.
        #[arg(long)]
        explain: Option<String>,
        /// A Python with `duckdb` installed, to run the same queries on the same files.
        #[arg(long)]
        python: Option<String>,
    },
    /// Processor throughput on one core: five governance steps, three destinations.
    Processor {
        /// Events to process.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// The live inspector's tap: `none` (processing alone, as before the inspector),
        /// `off` (the node's code with the inspector turned off) or `idle` (on, recording into
        /// its ring, no viewer connected).
        #[arg(long, default_value = "none")]
        tap: String,
    },
    /// Delivery to one destination of the catalogue on one core: request building, sending
    /// and reading the answer against a local endpoint, or batches written to PostgreSQL.
    Delivery {
        /// `tiktok`, `mixpanel` or `postgres`.
        #[arg(long, default_value = "tiktok")]
        destination: String,
        /// Events to deliver.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Requests (or transactions) in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
        postgres_url: String,
    },
    /// The `identity` step's cost on one core: the processor bench with and without it, over
    /// the embedded store or NATS key-value.
    Identity {
        /// Events to process.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Distinct visitors the events come from (event i is visitor i % visitors).
        #[arg(long, default_value_t = 20_000)]
        visitors: usize,
        /// `embedded` or `nats`.
        #[arg(long, default_value = "embedded")]
        store: String,
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
    },
    /// Bus publish throughput: concurrent producers, each call acknowledged once durable.
    Bus {
        /// `embedded` or `nats`.
        #[arg(long, default_value = "embedded")]
        backend: String,
        /// Messages per publish call.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Concurrent producers.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Measured seconds (after a 2-second warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// NATS servers, comma-separated (a cluster's servers).
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Replicas of the bench's stream: 3 for R3 on a three-server cluster.
        #[arg(long, default_value_t = 1)]
        nats_replicas: usize,
    },
    /// Config sync: from a pipeline change to every simulated node's ACK, and memory per idle
    /// node. Runs the control plane as a separate process (`--sluice-bin`).
    Sync {
        /// Simulated data-plane nodes, each with its own connection and stream.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Pipeline changes to propagate.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// The sluice binary. Default: next to this one.
        #[arg(long)]
        sluice_bin: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Auth {
    ServiceKey,
    ApiKey,
    Jwt,
}

#[derive(Debug, clap::Args)]
struct Load {
    /// Measured duration, in seconds (after a 2-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests in flight at once (one keep-alive connection each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// PostgreSQL URL; default: SQLite in a temporary directory.
    #[arg(long)]
    database_url: Option<String>,
}

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "benchmark password";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Scenario::Pipeline {
        rate,
        seconds,
        batch,
        concurrency,
    } = &cli.scenario
    {
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let args = pipeline::PipelineArgs {
            rate: *rate,
            seconds: *seconds,
            batch: *batch,
            concurrency: *concurrency,
        };
        print!(
            "{}",
            client_rt.block_on(pipeline::run(args, server_rt.handle().clone()))?
        );
        return Ok(());
    }
    if let Scenario::Archive {
        events,
        days,
        write_events,
        runs,
        warmups,
        queries,
        dir,
        s3_url,
        s3_bucket,
        s3_access_key,
        s3_secret_key,
        s3_partitions,
        local_partitions,
        s3_without_pushdown,
        s3_latency_ms,
        explain,
        python,
        files_per_hour,
        compact,
    } = &cli.scenario
    {
        if *compact && s3_bucket.is_some() {
            bail!(
                "--compact copies the archive to S3 twice, to fresh buckets: leave out --s3-bucket"
            );
        }
        if !s3_partitions.is_empty() && s3_url.is_none() {
            bail!("--s3-partitions measures S3 queries: give --s3-url too");
        }
        if *runs == 0 {
            bail!("--runs must be at least 1 (the warm-ups are not timed)");
        }
        if s3_partitions.contains(&0) || local_partitions.contains(&0) {
            bail!("partition counts must be at least 1");
        }
        let args = archive::ArchiveArgs {
            events: *events,
            days: *days,
            write_events: *write_events,
            runs: *runs,
            warmups: *warmups,
            only: queries.clone(),
            dir: dir.clone(),
            s3: s3_url.as_ref().map(|url| archive::S3Target {
                url: url.clone(),
                bucket: s3_bucket.clone(),
                access_key: s3_access_key.clone(),
                secret_key: s3_secret_key.clone(),
                partitions: s3_partitions.clone(),
                without_pushdown: *s3_without_pushdown,
                latency: std::time::Duration::from_millis(*s3_latency_ms),
            }),
            python: python.clone(),
            local_partitions: local_partitions.clone(),
            explain: explain.clone(),
            files_per_hour: *files_per_hour,
            compact: *compact,
        };
        print!("{}", archive::run(args)?);
        return Ok(());
    }
    if let Scenario::Delivery {
        destination,
        events,
        concurrency,
        postgres_url,
    } = &cli.scenario
    {
        println!(
            "{}",
            delivery::run(delivery::DeliveryArgs {
                destination: destination.clone(),
                events: *events,
                concurrency: *concurrency,
                postgres_url: postgres_url.clone(),
            })?
        );
        return Ok(());
    }
    if let Scenario::Identity {
        events,
        visitors,
        store,
        nats_url,
    } = &cli.scenario
    {
        println!(
            "{}",
            identity::run(identity::IdentityArgs {
                events: *events,
                visitors: *visitors,
                store: store.clone(),
                nats_url: nats_url.clone(),
            })?
        );
        return Ok(());
    }
    if let Scenario::Processor { events, tap } = &cli.scenario {
        let tap = match tap.as_str() {
            "none" => None,
            "off" => Some(false),
            "idle" => Some(true),
            other => anyhow::bail!("--tap: none, off or idle, not {other:?}"),
        };
        println!(
            "{}",
            processor::run(processor::ProcessorArgs {
                events: *events,
                tap
            })?
        );
        return Ok(());
    }
    if let Scenario::Receiver {
        nats_url,
        batch,
        concurrency,
        seconds,
        rate,
        nats_fetch_bytes,
        nats_packs_in_flight,
        slowest,
        generator,
    } = &cli.scenario
    {
        let args = receiver::ReceiverArgs {
            nats_url: nats_url.clone(),
            nats_fetch_bytes: *nats_fetch_bytes,
            nats_packs_in_flight: *nats_packs_in_flight,
            slowest: *slowest,
            batch: *batch,
            concurrency: *concurrency,
            seconds: *seconds,
            rate: *rate,
            generator: *generator,
        };
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        println!(
            "{}",
            client_rt.block_on(receiver::run(args, server_rt.handle().clone()))?
        );
        return Ok(());
    }
    if let Scenario::Bus {
        backend,
        batch,
        concurrency,
        seconds,
        nats_url,
        nats_replicas,
    } = &cli.scenario
    {
        let args = bus::BusArgs {
            backend: backend.clone(),
            batch: *batch,
            concurrency: *concurrency,
            seconds: *seconds,
            nats_url: nats_url.clone(),
            nats_replicas: *nats_replicas,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        println!("{}", runtime.block_on(bus::run(args))?);
        return Ok(());
    }
    if let Scenario::Sync {
        nodes,
        rounds,
        sluice_bin,
    } = &cli.scenario
    {
        let sluice_bin = match sluice_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("sluice"),
        };
        let args = sync::SyncArgs {
            nodes: *nodes,
            rounds: *rounds,
            sluice_bin,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        println!("scenario=sync");
        println!("{}", runtime.block_on(sync::run(args))?);
        return Ok(());
    }
    let (auth, load, path) = match &cli.scenario {
        Scenario::Tenants { auth, load } => (Some(*auth), load, "/api/v1/tenants"),
        Scenario::Login { load } => (None, load, "/api/v1/auth/login"),
        Scenario::Sync { .. }
        | Scenario::Bus { .. }
        | Scenario::Receiver { .. }
        | Scenario::Processor { .. }
        | Scenario::Identity { .. }
        | Scenario::Delivery { .. }
        | Scenario::Archive { .. }
        | Scenario::Pipeline { .. } => {
            unreachable!("handled above")
        }
    };
    let dir = tempfile::tempdir()?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load.server_threads)
        .enable_all()
        .build()?;
    let raw = sluice_control_plane::RawConfig {
        http_addr: "127.0.0.1:0".parse()?,
        grpc_addr: "127.0.0.1:0".parse()?,
        database_url: load.database_url.clone(),
        data_dir: dir.path().to_path_buf(),
        admin_email: Some(EMAIL.into()),
        admin_password: Some(PASSWORD.into()),
        // The login scenario measures hashing, not the limiter.
        login_attempts_per_ip_per_minute: u32::MAX,
        login_failures_per_account: u32::MAX,
        ..Default::default()
    };
    let config = raw.validate()?;
    let cp = server_rt
        .block_on(sluice_control_plane::start(config))
        .context("start control plane")?;
    let base = format!("http://{}", cp.http_addr);

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load.client_threads)
        .enable_all()
        .build()?;
    let report = client_rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(load.concurrency)
            .build()?;
        let token = login(&http, &base).await?;
        let credential = match auth {
            None => None,
            Some(Auth::Jwt) => Some(token),
            Some(kind) => Some(setup_key(&http, &base, &token, kind).await?),
        };
        let request = Arc::new(RequestSpec {
            url: format!("{base}{path}"),
            credential,
            login: auth.is_none(),
        });
        run_load(&http, request, load).await
    })?;
    println!(
        "scenario={path} auth={auth:?} backend={} concurrency={} seconds={} server_threads={} client_threads={}",
        if load.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        load.concurrency,
        load.seconds,
        load.server_threads,
        load.client_threads
    );
    println!("{report}");
    server_rt.block_on(cp.shutdown());
    Ok(())
}

async fn login(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    response["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("login failed")
}

async fn setup_key(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    auth: Auth,
) -> anyhow::Result<String> {
    let tenant: Value = http
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(token)
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let tenant_id = tenant["id"].as_str().context("tenant")?;
    let body = match auth {
        Auth::ApiKey => json!({"name": "bench", "type": "api", "role": "viewer"}),
        _ => json!({"name": "bench", "type": "service"}),
    };
    let key: Value = http
        .post(format!("{base}/api/v1/tenants/{tenant_id}/keys"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    key["key"].as_str().map(str::to_owned).context("key")
}

struct RequestSpec {
    url: String,
    credential: Option<String>,
    login: bool,
}

async fn one_request(http: &reqwest::Client, spec: &RequestSpec) -> bool {
    let request = if spec.login {
        http.post(&spec.url)
            .json(&json!({"email": EMAIL, "password": PASSWORD}))
    } else {
        http.get(&spec.url)
    };
    let request = match &spec.credential {
        Some(c) => request.bearer_auth(c),
        None => request,
    };
    match request.send().await {
        Ok(response) => {
            let ok = response.status().is_success();
            // Read the body so the connection is reused.
            let _ = response.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

async fn run_load(
    http: &reqwest::Client,
    spec: Arc<RequestSpec>,
    load: &Load,
) -> anyhow::Result<String> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..load.concurrency {
        let (http, spec, measuring, stop, errors) = (
            http.clone(),
            spec.clone(),
            measuring.clone(),
            stop.clone(),
            errors.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = one_request(&http, &spec).await;
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(load.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await?);
    }
    if all.is_empty() {
        bail!("no request succeeded");
    }
    all.sort_unstable();
    let pct = |p: f64| stats::ms(stats::percentile(&all, p));
    Ok(format!(
        "requests={} errors={} throughput={:.0}/s p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        all.len(),
        errors.load(Ordering::Relaxed),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    ))
}
