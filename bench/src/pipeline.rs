//! End to end: from the receiver's acknowledgement to the vendor's receipt. One process holds
//! a control plane, a node running receiver, processor, delivery and archiver on the embedded
//! bus, and a vendor server on loopback (three destinations of the realistic pipeline of the
//! processor bench point at it); the load generator sends track events at a fixed rate and
//! notes when each was acknowledged; the vendor notes when each arrived. The archiver writes
//! Parquet to a local directory every [`ARCHIVE_FLUSH_SECS`], so its encoding competes for the
//! cores inside the measured window, as it does on a node that runs every role.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::stats::{ms, percentile};

pub struct PipelineArgs {
    /// Events per second to send; 0 finds the maximum first and then runs at half of it.
    pub rate: u64,
    pub seconds: u64,
    /// Events per request.
    pub batch: usize,
    /// Requests in flight for each destination that sends one event per request.
    pub concurrency: u32,
}

/// How often the archiver writes its files during the run, seconds (the role's default is
/// 60, longer than a run).
const ARCHIVE_FLUSH_SECS: u64 = 2;

type Arrivals = Arc<Mutex<HashMap<(String, String), Instant>>>;

async fn vendor(arrivals: Arrivals) -> anyhow::Result<String> {
    async fn receive(
        axum::extract::State(arrivals): axum::extract::State<Arrivals>,
        uri: axum::http::Uri,
        headers: axum::http::HeaderMap,
        body: bytes::Bytes,
    ) -> &'static str {
        let at = Instant::now();
        // Meta batches: the idempotency key names the batch; each event carries its id.
        let keys: Vec<String> = match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
            Some(key) if !key.starts_with("batch-") => vec![key.to_owned()],
            _ => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|b| {
                    b["data"].as_array().map(|events| {
                        events
                            .iter()
                            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                            .collect()
                    })
                })
                .unwrap_or_default(),
        };
        let mut arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            arrivals.entry((uri.path().to_owned(), key)).or_insert(at);
        }
        "{}"
    }
    let app = axum::Router::new().fallback(receive).with_state(arrivals);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

fn spec(vendor: &str, concurrency: u32) -> Value {
    let mut spec = crate::processor::pipeline();
    spec["destinations"] = json!([
        {"name": "crm", "consent": ["analytics"], "concurrency": concurrency,
         "filter": "type == 'track' && event == 'Order Completed' && properties.revenue > 0.0",
         "mapping": {"order_id": "properties.order_id", "revenue": "properties.revenue", "user": "user_id"},
         "computed": {"revenue_cents": "int(properties.revenue * 100.0)"},
         "webhook": {"url": format!("{vendor}/crm")}},
        {"name": "analytics", "consent": ["analytics"], "concurrency": concurrency,
         "ga4": {"measurement_id": "G-BENCH1234", "api_secret": "BENCH_GA4_SECRET", "endpoint": format!("{vendor}/ga4")}},
        {"name": "ads", "consent": ["ads"],
         "meta": {"pixel_id": "1234567890", "access_token": "BENCH_META_TOKEN", "endpoint": format!("{vendor}/meta")}}
    ]);
    spec
}

fn event(i: u64) -> Value {
    json!({"type": "track", "event": "Order Completed", "messageId": format!("e{i}"), "userId": format!("u{}", i % 1000),
        "properties": {"order_id": format!("o{i}"), "revenue": 42.5, "currency": "eur"},
        "traits": {"email": format!("user{i}@example.com")},
        "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
            "page": {"url": "https://shop.example.com/checkout"},
            "consent": {"categoryPreferences": {"analytics": true, "ads": true}}}})
}

struct Setup {
    receiver: reqwest::Url,
    auth: String,
    arrivals: Arrivals,
    archive_dir: std::path::PathBuf,
    world: crate::world::World,
}

async fn setup(server: &tokio::runtime::Handle, concurrency: u32) -> anyhow::Result<Setup> {
    let arrivals: Arrivals = Arc::default();
    let vendor_url = server.spawn(vendor(arrivals.clone())).await??;
    let mut archive_dir = std::path::PathBuf::new();
    let world = crate::world::start(server, spec(&vendor_url, concurrency), |node, dir| {
        archive_dir = dir.join("archive");
        node.archive.archive_dir = Some(archive_dir.clone());
        node.node.roles = "receiver,processor,delivery,archiver".into();
        node.archive.archive_flush_secs = ARCHIVE_FLUSH_SECS;
        node.node.secrets_dir = Some(crate::world::secrets_dir(
            dir,
            &[
                ("BENCH_GA4_SECRET", "secret"),
                ("BENCH_META_TOKEN", "token"),
            ],
        ));
    })
    .await?;
    Ok(Setup {
        receiver: reqwest::Url::parse(&format!("http://{}/v1/batch", world.node.http_addr))?,
        auth: world.ingest_auth.clone(),
        arrivals,
        archive_dir,
        world,
    })
}

/// Sends at `rate` events/s (0: as fast as possible) for `seconds`; acknowledgement times.
async fn load(
    setup: &Setup,
    rate: u64,
    seconds: u64,
    batch: usize,
    first_id: u64,
) -> (HashMap<String, Instant>, u64, Duration) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_default();
    let workers = 32u64;
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(first_id));
    let interval =
        (rate > 0).then(|| Duration::from_secs_f64(workers as f64 * batch as f64 / rate as f64));
    let started = Instant::now();
    let start = tokio::time::Instant::from_std(started);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (http, url, auth, acked, errors, stop, next) = (
            http.clone(),
            setup.receiver.clone(),
            setup.auth.clone(),
            acked.clone(),
            errors.clone(),
            stop.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = interval.map(|period| {
                crate::pace::ticker(start, worker as usize, workers as usize, period)
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(tick) = tick.as_mut() {
                    tick.tick().await;
                }
                let first = next.fetch_add(batch as u64, Ordering::Relaxed);
                let events: Vec<Value> = (first..first + batch as u64).map(event).collect();
                let ok = http
                    .post(url.clone())
                    .header("authorization", &auth)
                    .json(&json!({"batch": events}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let at = Instant::now();
                if ok {
                    let mut acked = acked.lock().unwrap_or_else(|p| p.into_inner());
                    for i in first..first + batch as u64 {
                        acked.insert(format!("e{i}"), at);
                    }
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    (acked, errors.load(Ordering::Relaxed), elapsed)
}

const PATHS: [&str; 3] = ["/crm", "/ga4/mp/collect", "/meta/1234567890/events"];

/// Waits until every acknowledged event reached every destination (or `limit` passes);
/// when the last one arrived.
async fn delivered(
    setup: &Setup,
    acked: &HashMap<String, Instant>,
    limit: Duration,
) -> Option<Instant> {
    let started = Instant::now();
    while started.elapsed() < limit {
        {
            let arrivals = setup.arrivals.lock().unwrap_or_else(|p| p.into_inner());
            let mut last = None;
            let all = acked.keys().all(|id| {
                PATHS.iter().all(
                    |path| match arrivals.get(&((*path).to_owned(), id.clone())) {
                        Some(at) => {
                            last = last.max(Some(*at));
                            true
                        }
                        None => false,
                    },
                )
            });
            if all {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

pub async fn run(args: PipelineArgs, server: tokio::runtime::Handle) -> anyhow::Result<String> {
    let setup = setup(&server, args.concurrency).await?;
    let mut report = String::new();
    // Every acknowledged event id, of both runs: what the archive must hold.
    let mut sent: HashSet<String> = HashSet::new();
    let rate = if args.rate > 0 {
        args.rate
    } else {
        // The maximum end to end: send flat out, then count until the last event reached
        // the last destination.
        let started = Instant::now();
        let (acked, _, _) = load(&setup, 0, args.seconds, args.batch, 0).await;
        let last = delivered(&setup, &acked, Duration::from_secs(300))
            .await
            .context("the backlog did not drain within 300 s")?;
        let max = acked.len() as f64 / last.duration_since(started).as_secs_f64();
        sent.extend(acked.keys().cloned());
        report.push_str(&format!(
            "maximum end to end: {max:.0} events/s ({} events, acknowledged and delivered to all three destinations)\n",
            acked.len()
        ));
        (max / 2.0) as u64
    };
    setup
        .arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    let (acked, errors, elapsed) = load(&setup, rate, args.seconds, args.batch, 1 << 40).await;
    sent.extend(acked.keys().cloned());
    let _ = delivered(&setup, &acked, Duration::from_secs(60)).await;
    let arrivals = setup
        .arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for path in PATHS {
        let mut latencies: Vec<Duration> = Vec::new();
        let mut missing = 0;
        for (id, at) in &acked {
            match arrivals.get(&(path.to_owned(), id.clone())) {
                Some(arrived) => latencies.push(arrived.saturating_duration_since(*at)),
                None => missing += 1,
            }
        }
        latencies.sort_unstable();
        report.push_str(&format!(
            "rate={rate} sent={} ({:.0}/s) batch={} destination={path} delivered={} not_delivered={missing} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms errors={errors}\n",
            acked.len(),
            acked.len() as f64 / elapsed.as_secs_f64(),
            args.batch,
            latencies.len(),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.9)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
        ));
    }
    // Everything acknowledged is archived too (the archive holds both runs' events).
    let archive = archived(&setup, &sent, Duration::from_secs(ARCHIVE_FLUSH_SECS * 5)).await?;
    let stats = &setup.world.node.state.archive_stats;
    report.push_str(&format!(
        "archived: {} of {} acknowledged events, by event id, in {} Parquet files ({} rows: {} duplicates, {} not acknowledged); {} not yet written\n",
        archive.found,
        sent.len(),
        stats.files.load(Ordering::Relaxed),
        archive.rows,
        archive.duplicates,
        archive.unknown,
        stats.buffered.load(Ordering::Relaxed),
    ));
    Ok(report)
}

/// What the archive holds of the acknowledged events.
#[derive(Debug, Default)]
struct Archived {
    /// Acknowledged events found, each counted once.
    found: usize,
    /// Rows in all files.
    rows: usize,
    /// Rows whose event id an earlier row already had.
    duplicates: usize,
    /// Rows whose event id was never acknowledged.
    unknown: usize,
}

/// Reads the event ids of the node's archive back from its Parquet files, once every
/// acknowledged event is there (or `limit` passes): events still on the bus or held by the
/// archiver are not in a file yet. By id, not by row count, so a duplicate cannot hide a loss.
async fn archived(
    setup: &Setup,
    acked: &HashSet<String>,
    limit: Duration,
) -> anyhow::Result<Archived> {
    use arrow::array::AsArray as _;
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let started = Instant::now();
    loop {
        let mut archive = Archived::default();
        let mut seen = HashSet::new();
        for entry in walk(&setup.archive_dir)? {
            let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&entry)?)?;
            let mask = ProjectionMask::columns(builder.parquet_schema(), ["event_id"]);
            for batch in builder.with_projection(mask).build()? {
                let batch = batch?;
                let ids = batch
                    .column(0)
                    .as_string_opt::<i32>()
                    .context("event_id is not a string column")?;
                for id in ids.iter().flatten() {
                    archive.rows += 1;
                    if !seen.insert(id.to_owned()) {
                        archive.duplicates += 1;
                    } else if acked.contains(id) {
                        archive.found += 1;
                    } else {
                        archive.unknown += 1;
                    }
                }
            }
        }
        if archive.found >= acked.len() || started.elapsed() >= limit {
            return Ok(archive);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    if !dir.exists() {
        return Ok(files);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
    Ok(files)
}
