//! The archive: how fast one core turns archive-stage records into zstd Parquet files, and
//! how fast SQL answers over millions of archived events — from local disk, from an S3 server
//! and, on the same files, from an independent engine (DuckDB) for comparison.
//!
//! The write path is the archiver's own, step for step: parse the stage record, parse the
//! event, take its partition, append it to the column builders, encode the file, put it in
//! the store. Only the bus around it (fetch and acknowledge) is left out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde_json::{Value, json};
use sluice_archive::record::{BatchBuilder, Envelope};
use sluice_archive::store::StoreConfig;
use sluice_archive::{encode, layout};
use sluice_pipeline::stages::ArchiveRecord;
use sluice_query::{Limits, QueryEngine};

use crate::stats::ms;

const TENANT: &str = "0193a000-0000-7000-8000-00000000be0c";
const DATASET: &str = "web_events";
/// About what the archiver's 128 MiB flush gathers from events of this size.
const FILE_EVENTS: usize = 200_000;
const EVENTS: [&str; 8] = [
    "Page Viewed",
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Signed Up",
    "Search",
    "Video Played",
];
const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
const PATHS: [&str; 6] = [
    "/",
    "/pricing",
    "/docs",
    "/checkout",
    "/blog/launch",
    "/account",
];

pub struct ArchiveArgs {
    pub events: usize,
    pub days: u32,
    pub write_events: usize,
    pub runs: usize,
    /// Untimed runs of each query before the timed ones.
    pub warmups: usize,
    /// The queries to run, by name; empty runs them all.
    pub only: Vec<String>,
    pub dir: Option<PathBuf>,
    pub s3: Option<S3Target>,
    pub python: Option<String>,
    /// Partition counts to measure the local queries with too, beside the default.
    pub local_partitions: Vec<usize>,
    /// A query's name whose `EXPLAIN ANALYZE` is printed, local and S3.
    pub explain: Option<String>,
    /// Files each hour of the data set is written as (an archiver flushing every minute
    /// writes 60).
    pub files_per_hour: usize,
    /// Compact the data set after measuring it, then measure again.
    pub compact: bool,
}

/// Where the archive is copied for the S3 measurement.
pub struct S3Target {
    pub url: String,
    /// An existing, empty bucket; `None` creates a fresh one.
    pub bucket: Option<String>,
    pub access_key: String,
    pub secret_key: String,
    /// Scan partitions to measure the S3 queries with; empty means the query role's default.
    pub partitions: Vec<usize>,
    /// Also measure the S3 queries without filters evaluated while decoding.
    pub without_pushdown: bool,
    /// Added to every request to the S3 server, as a server farther away than loopback
    /// would (0: none).
    pub latency: Duration,
}

/// xorshift64*: reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

fn rfc3339(unix_ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One archive-stage record, as the processor writes it: a track call from a browser SDK.
fn record(rng: &mut Rng, id: u64, received_ms: i64) -> Vec<u8> {
    let event = json!({
        "message_id": format!("{id:016x}-{:08x}", rng.next() as u32),
        "type": "track",
        "event": rng.pick(&EVENTS),
        "user_id": format!("u-{}", rng.below(100_000)),
        "anonymous_id": format!("a-{:016x}", rng.next()),
        "source": "web",
        "pipeline_id": "0193a000-0000-7000-8000-0000000000p1",
        "tenant_id": TENANT,
        "timestamp": rfc3339(received_ms - 45),
        "sent_at": rfc3339(received_ms - 12),
        "received_at": rfc3339(received_ms),
        "properties": {
            "revenue": rng.below(50_000) as f64 / 100.0,
            "plan": rng.pick(&PLANS),
            "sku": format!("sku-{}", rng.below(5_000)),
            "quantity": rng.below(5) + 1,
            "currency": "USD",
        },
        "context": {
            "page": {"path": rng.pick(&PATHS), "referrer": "https://www.example.com/"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
            "ip": format!("203.0.113.{}", rng.below(255)),
            "library": {"name": "analytics.js", "version": "5.2.0"},
        },
    });
    serde_json::to_vec(&json!({"dataset": DATASET, "event": event})).unwrap_or_default()
}

/// The archiver's per-file work on `records`: their partition and the encoded file.
fn archive_file(records: &[Vec<u8>]) -> anyhow::Result<((String, String), Bytes)> {
    let mut rows = BatchBuilder::default();
    let mut partition = None;
    for payload in records {
        let record: ArchiveRecord = serde_json::from_slice(payload)?;
        let event = Envelope::parse(record.event.get())?;
        let received = event.received_at().context("received_at")?;
        partition.get_or_insert_with(|| layout::partition(received));
        rows.push(&event, received);
    }
    let batch = rows.finish()?;
    Ok((partition.context("no records")?, encode::parquet(&batch)?))
}

async fn put(
    store: &Arc<dyn ObjectStore>,
    (dt, hour): &(String, String),
    bytes: Bytes,
) -> anyhow::Result<()> {
    let path = layout::object_path(TENANT, DATASET, dt, hour, uuid::Uuid::now_v7());
    encode::upload(store, &path, bytes).await?;
    Ok(())
}

/// Records for one hour, `count` of them, spread over it.
fn hour_of_records(seed: u64, start_ms: i64, count: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed | 1);
    let step = 3_600_000 / count.max(1) as i64;
    (0..count)
        .map(|i| record(&mut rng, seed << 32 | i as u64, start_ms + i as i64 * step))
        .collect()
}

pub fn run(args: ArchiveArgs) -> anyhow::Result<String> {
    let mut report = String::new();
    let scratch = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("archive"));
    let local = StoreConfig::Local(dir.clone()).open()?;

    // Write: one core, the archiver's path, files of FILE_EVENTS.
    let start_ms = 1_763_769_600_000; // 2025-11-22T00:00:00Z
    let records = hour_of_records(7, start_ms, args.write_events);
    let payload_bytes: usize = records.iter().map(Vec::len).sum();
    let one_core = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let write_dir = scratch.path().join("write");
    let write_store = StoreConfig::Local(write_dir.clone()).open()?;
    let started = Instant::now();
    let mut file_bytes = 0;
    for chunk in records.chunks(FILE_EVENTS) {
        let (partition, bytes) = archive_file(chunk)?;
        file_bytes += bytes.len();
        one_core.block_on(put(&write_store, &partition, bytes))?;
    }
    let took = started.elapsed();
    drop(records);
    report.push_str(&format!(
        "archive write, one core: {} events in {:.2} s = {:.0} events/s ({:.1} MB/s of records); \
         {:.0} B/event stored ({:.1}x smaller than the records)\n",
        args.write_events,
        took.as_secs_f64(),
        args.write_events as f64 / took.as_secs_f64(),
        payload_bytes as f64 / took.as_secs_f64() / 1e6,
        file_bytes as f64 / args.write_events as f64,
        payload_bytes as f64 / file_bytes.max(1) as f64,
    ));

    // The query data set: `events` over `days` days, one file per hour as a steady flow makes.
    let hours = args.days as usize * 24;
    let per_hour = args.events / hours;
    let files_per_hour = args.files_per_hour.max(1);
    let started = Instant::now();
    let workers = 2;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let local = local.clone();
                scope.spawn(move || -> anyhow::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    for hour in (worker..hours).step_by(workers) {
                        let hour_ms = start_ms - (hours - hour) as i64 * 3_600_000;
                        let records = hour_of_records(1000 + hour as u64, hour_ms, per_hour);
                        let per_file = records.len().div_ceil(files_per_hour);
                        for chunk in records.chunks(per_file.max(1)) {
                            let (partition, bytes) = archive_file(chunk)?;
                            runtime.block_on(put(&local, &partition, bytes))?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    let total = per_hour * hours;
    let stored = dir_size(&dir.join(layout::tenant_prefix(TENANT)))?;
    report.push_str(&format!(
        "query data set: {total} events, {} files ({} days, {files_per_hour} an hour), {:.0} MB of Parquet, written in {:.1} s\n",
        hours * files_per_hour.min(per_hour.max(1)),
        args.days,
        stored as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ));

    report.push_str(&measure(&args, &dir, &local, start_ms)?);
    if args.compact {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        report.push_str(&runtime.block_on(compact_all(&local))?);
        report.push_str(&measure(&args, &dir, &local, start_ms)?);
    }
    Ok(report)
}

/// Compacts every hour of the data set as the archiver's upkeep does, and deletes what it
/// replaced: how long it took and the files before and after.
async fn compact_all(local: &Arc<dyn ObjectStore>) -> anyhow::Result<String> {
    use sluice_archive::commit::{self, Notes};
    use sluice_archive::maintain;
    let view = sluice_archive::store::tenant_view(local.clone(), TENANT);
    let started = Instant::now();
    let partitions = maintain::live_by_partition(&view, &Notes::default()).await?;
    let before: usize = partitions.values().map(Vec::len).sum();
    let (mut after, mut bytes_in, mut bytes_out) = (0u64, 0u64, 0u64);
    for (partition, files) in partitions {
        let kept = files.len() as u64;
        match maintain::compact(&view, &partition, files, 128 * 1024 * 1024).await? {
            Some(done) => {
                after += kept - done.files_in + done.files_out;
                bytes_in += done.bytes_in;
                bytes_out += done.bytes_out;
            }
            None => after += kept,
        }
    }
    let compacted = started.elapsed();
    let now = std::time::SystemTime::now();
    commit::finish_pending(&view, now, Duration::ZERO, Duration::ZERO).await?;
    Ok(format!(
        "\ncompaction: {before} files into {after} in {:.1} s ({:.0} MB into {:.0} MB), then the replaced files deleted\n",
        compacted.as_secs_f64(),
        bytes_in as f64 / 1e6,
        bytes_out as f64 / 1e6,
    ))
}

/// The queries over the data set in `dir`: local, the extra columns, S3 and DuckDB.
fn measure(
    args: &ArchiveArgs,
    dir: &Path,
    local: &Arc<dyn ObjectStore>,
    start_ms: i64,
) -> anyhow::Result<String> {
    let mut report = String::new();
    let files = files_below(&dir.join(layout::tenant_prefix(TENANT)))?;
    report.push_str(&format!("\n{files} Parquet files in the archive\n"));
    let day = layout::partition(start_ms - 2 * 86_400_000).0;
    let week = layout::partition(start_ms - 7 * 86_400_000).0;
    let mut queries = queries(&day, &week);
    if let Some(unknown) = args
        .only
        .iter()
        .find(|name| !queries.iter().any(|q| q.name == name.as_str()))
    {
        let known: Vec<&str> = queries.iter().map(|q| q.name).collect();
        bail!("no query named {unknown:?} (known: {})", known.join(", "));
    }
    if !args.only.is_empty() {
        queries.retain(|q| args.only.iter().any(|name| name == q.name));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Measured, not limited: a month of small files takes longer than the query role's
    // default 30 s on a busy two-core machine.
    let limits = |partitions: usize| Limits {
        partitions,
        timeout: std::time::Duration::from_secs(1800),
        ..Limits::default()
    };
    let time_with = |store: &Arc<dyn ObjectStore>, limits: Limits| {
        runtime.block_on(time_queries(
            store,
            &limits,
            &queries,
            args.warmups,
            args.runs,
        ))
    };
    let local_times = time_with(local, limits(sluice_query::cores()))?;
    let explain = |store: &Arc<dyn ObjectStore>, limits: Limits| -> anyhow::Result<String> {
        let Some(name) = &args.explain else {
            return Ok(String::new());
        };
        let query = queries
            .iter()
            .find(|q| q.name == name.as_str())
            .with_context(|| format!("no query named {name:?}"))?;
        let partitions = limits.partitions;
        let engine = QueryEngine::new(store.clone(), limits);
        let sql = format!("EXPLAIN ANALYZE {}", query.sluice);
        let result = runtime
            .block_on(engine.run(TENANT, &sql))
            .map_err(|e| anyhow::anyhow!("explain {name}: {e}"))?;
        let rows = sluice_query::output::json_rows(&result.batches)?;
        let table: String = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row["plan"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        Ok(format!(
            "\nEXPLAIN ANALYZE ({partitions} partitions, {:.1} ms):\n{table}\n",
            result.elapsed.as_secs_f64() * 1e3
        ))
    };
    let mut explained = explain(local, limits(sluice_query::cores()))?;
    // More columns: local disk with other partition counts, then one per count against S3.
    let mut columns = Vec::new();
    for &partitions in &args.local_partitions {
        columns.push((
            format!("local p={partitions}"),
            time_with(local, limits(partitions))?,
        ));
    }
    if let Some(target) = &args.s3 {
        let mut store = runtime.block_on(copy_to_s3(local, target))?;
        if !target.latency.is_zero() {
            let config = object_store::throttle::ThrottleConfig {
                wait_get_per_call: target.latency,
                wait_list_per_call: target.latency,
                ..Default::default()
            };
            store = Arc::new(object_store::throttle::ThrottledStore::new(store, config));
        }
        let partitions = if target.partitions.is_empty() {
            vec![sluice_query::remote_partitions()]
        } else {
            target.partitions.clone()
        };
        explained.push_str(&explain(&store, limits(partitions[0]))?);
        for partitions in partitions {
            columns.push((
                format!("s3 p={partitions}"),
                time_with(&store, limits(partitions))?,
            ));
            if target.without_pushdown {
                columns.push((
                    format!("s3 p={partitions} np"),
                    time_with(
                        &store,
                        Limits {
                            pushdown_filters: false,
                            ..limits(partitions)
                        },
                    )?,
                ));
            }
        }
    }
    for (name, times) in &columns {
        if let Some((query, _)) = queries
            .iter()
            .zip(times)
            .zip(&local_times)
            .find(|((_, other), local)| other.1 != local.1)
        {
            bail!("{name} and local answers differ on {}", query.0.name);
        }
    }
    let duck = match &args.python {
        Some(python) => Some(duckdb(python, dir, &queries, args.warmups, args.runs)?),
        None => None,
    };

    report.push_str(&format!(
        "\nmedian of {} runs after {} warm-up(s), ms (Sluice = DataFusion via sluice-query, the query role's engine):\n",
        args.runs, args.warmups
    ));
    let heads: String = columns
        .iter()
        .map(|(name, _)| format!(" {name:>11}"))
        .collect();
    report.push_str(&format!(
        "{:<26} {:>9}{} {:>9} {:>7}  {}\n",
        "query", "local", heads, "duckdb", "ratio", "same answer"
    ));
    for (i, query) in queries.iter().enumerate() {
        let (local_ms, local_n) = &local_times[i];
        let more: String = columns
            .iter()
            .map(|(_, t)| format!(" {:>11.1}", t[i].0))
            .collect();
        let (duck_ms, same) = match &duck {
            Some(d) => (
                format!("{:.1}", d[i].0),
                if d[i].1 == *local_n { "yes" } else { "NO" },
            ),
            None => ("-".to_owned(), "-"),
        };
        let ratio = duck
            .as_ref()
            .map_or("-".to_owned(), |d| format!("{:.2}", local_ms / d[i].0));
        report.push_str(&format!(
            "{:<26} {:>9.1}{} {:>9} {:>7}  {}\n",
            query.name, local_ms, more, duck_ms, ratio, same
        ));
    }
    report.push_str(&explained);
    report.push_str("\nqueries:\n");
    for query in &queries {
        report.push_str(&format!("  {}: {}\n", query.name, query.sluice));
    }
    if let Some(d) = &duck
        && let Some(mismatch) = queries
            .iter()
            .zip(d)
            .zip(&local_times)
            .find(|((_, d), l)| d.1 != l.1)
    {
        bail!(
            "{report}\nDuckDB and Sluice disagree on {}: {:?} against {:?}",
            mismatch.0.0.name,
            mismatch.0.1.1,
            mismatch.1.1
        );
    }
    Ok(report)
}

struct Query {
    name: &'static str,
    sluice: String,
    duckdb: String,
}

/// Every query returns a count column `n`, so both engines' answers compare exactly.
fn queries(day: &str, week: &str) -> Vec<Query> {
    let both = |name, sql: String| Query {
        name,
        duckdb: sql.clone(),
        sluice: sql,
    };
    vec![
        both("count", "SELECT count(*) AS n FROM events".into()),
        both(
            "filter on event",
            "SELECT count(*) AS n FROM events WHERE event = 'Order Completed'".into(),
        ),
        both(
            "one day, one user",
            format!("SELECT count(*) AS n FROM events WHERE dt = '{day}' AND user_id = 'u-4242'"),
        ),
        both(
            "last 7 days, per event",
            format!(
                "SELECT event, count(*) AS n FROM events WHERE dt >= '{week}' \
                 GROUP BY event ORDER BY event"
            ),
        ),
        both(
            "per hour, one event",
            "SELECT hour, count(*) AS n FROM events WHERE event = 'Checkout Started' \
             GROUP BY hour ORDER BY hour"
                .into(),
        ),
        Query {
            name: "group by property",
            sluice: "SELECT json_get_str(properties, 'plan') AS plan, count(*) AS n, \
                     sum(json_get_float(properties, 'revenue')) AS revenue FROM events \
                     WHERE event = 'Order Completed' GROUP BY plan ORDER BY plan"
                .into(),
            duckdb: "SELECT json_extract_string(properties, '$.plan') AS plan, count(*) AS n, \
                     sum(CAST(json_extract(properties, '$.revenue') AS DOUBLE)) AS revenue \
                     FROM events WHERE event = 'Order Completed' GROUP BY plan ORDER BY plan"
                .into(),
        },
        Query {
            name: "group by property, all",
            sluice: "SELECT json_get_str(context, 'page', 'path') AS path, count(*) AS n \
                     FROM events GROUP BY path ORDER BY path"
                .into(),
            duckdb: "SELECT json_extract_string(context, '$.page.path') AS path, count(*) AS n \
                     FROM events GROUP BY path ORDER BY path"
                .into(),
        },
    ]
}

/// Median milliseconds and the `n` column of each query.
async fn time_queries(
    store: &Arc<dyn ObjectStore>,
    limits: &Limits,
    queries: &[Query],
    warmups: usize,
    runs: usize,
) -> anyhow::Result<Vec<(f64, Vec<i64>)>> {
    let engine = QueryEngine::new(store.clone(), limits.clone());
    let mut out = Vec::new();
    for query in queries {
        let mut times = Vec::new();
        let mut counts = Vec::new();
        for run in 0..warmups + runs {
            let started = Instant::now();
            let result = engine
                .run(TENANT, &query.sluice)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", query.name))?;
            let took = started.elapsed();
            if run >= warmups {
                times.push(took);
            }
            counts = counts_of(&sluice_query::output::json_rows(&result.batches)?);
        }
        out.push((median_ms(&mut times), counts));
    }
    Ok(out)
}

fn counts_of(rows: &Value) -> Vec<i64> {
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row["n"].as_i64())
        .collect()
}

fn median_ms(times: &mut [Duration]) -> f64 {
    times.sort();
    times.get(times.len() / 2).map_or(0.0, |d| ms(*d))
}

/// Copies the archive to the S3 server: to the given empty bucket, or to a fresh one.
async fn copy_to_s3(
    local: &Arc<dyn ObjectStore>,
    target: &S3Target,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    let url = &target.url;
    let bucket = match &target.bucket {
        Some(bucket) => bucket.clone(),
        None => {
            let bucket = format!("sluice-bench-{}", uuid::Uuid::now_v7().simple());
            let created = reqwest::Client::new()
                .put(format!("{}/{bucket}", url.trim_end_matches('/')))
                .send()
                .await
                .with_context(|| format!("the S3 server at {url}"))?;
            if !created.status().is_success() {
                bail!("cannot create bucket {bucket}: {}", created.status());
            }
            bucket
        }
    };
    let s3 = StoreConfig::S3 {
        bucket: bucket.clone(),
        endpoint: Some(url.to_owned()),
        access_key: Some(target.access_key.clone()),
        secret_key: Some(target.secret_key.clone()),
        region: "us-east-1".into(),
    }
    .open()?;
    if s3.list(None).next().await.transpose()?.is_some() {
        bail!("bucket {bucket} is not empty: the bench would count its objects too");
    }
    let objects: Vec<_> = local.list(None).try_collect().await?;
    futures_util::stream::iter(objects)
        .map(|object| {
            let (local, s3) = (local.clone(), s3.clone());
            async move {
                let bytes = local.get(&object.location).await?.bytes().await?;
                encode::upload(&s3, &object.location, bytes).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(s3)
}

/// The same queries in DuckDB (from PyPI) over the same files: median ms and counts.
fn duckdb(
    python: &str,
    dir: &Path,
    queries: &[Query],
    warmups: usize,
    runs: usize,
) -> anyhow::Result<Vec<(f64, Vec<i64>)>> {
    let script = r#"
import json, statistics, sys, time, duckdb
root, warmups, runs, queries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
con = duckdb.connect()
# The progress bar of a query over two seconds would be printed to stdout.
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{root}/dataset=*/dt=*/hour=*/*.parquet', hive_partitioning = true, hive_types = {{'dataset': VARCHAR, 'dt': VARCHAR, 'hour': VARCHAR}})")
out = []
for sql in queries:
    times = []
    for run in range(warmups + runs):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        took = (time.perf_counter() - started) * 1000
        if run >= warmups:
            times.append(took)
    names = [d[0] for d in con.execute(sql).description]
    n = names.index("n")
    out.append([statistics.median(times), [int(r[n]) for r in rows]])
print(json.dumps({"version": duckdb.__version__, "results": out}))
"#;
    let tenant_dir = dir.join(layout::tenant_prefix(TENANT));
    let sql: Vec<&str> = queries.iter().map(|q| q.duckdb.as_str()).collect();
    let output = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&tenant_dir)
        .arg(warmups.to_string())
        .arg(runs.to_string())
        .arg(serde_json::to_string(&sql)?)
        .output()
        .with_context(|| format!("running {python}"))?;
    if !output.status.success() {
        bail!(
            "duckdb: {} (pip install duckdb into that Python)",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The answer is the last line; anything DuckDB printed before it is not.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    let answer: Value = serde_json::from_str(last)
        .with_context(|| format!("duckdb printed no answer: {stdout}"))?;
    eprintln!("duckdb {}", answer["version"]);
    Ok(answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let counts = r[1]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .collect();
            (r[0].as_f64().unwrap_or(0.0), counts)
        })
        .collect())
}

/// Parquet files below `dir`.
fn files_below(dir: &Path) -> std::io::Result<usize> {
    let mut files = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files += files_below(&path)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            files += 1;
        }
    }
    Ok(files)
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
