//! Delivery on one core, per destination of the catalogue: what the delivery role does for
//! each batch after the bus hands it over — build the vendor's request from the definition
//! (envelope, auth, idempotency key), send it, read and classify the answer — against a
//! local endpoint that answers at once as the vendor does; or, for PostgreSQL, the warehouse
//! write (COPY into a staging table, INSERT … ON CONFLICT, one transaction per batch).
//! Payloads are shaped before the clock starts (that is the processor's cost, measured by
//! `bench processor`). The delivery side runs on a single-threaded runtime; the endpoint, or
//! the PostgreSQL server, on the other core.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use sluice_pipeline::destinations::{Resolved, Response, Shape, Verdict, shape};
use sluice_proto::spec::DestinationSpec;
use sluice_warehouse::{Row, Warehouse};

use crate::stats::{ms, percentile};

pub struct DeliveryArgs {
    pub destination: String,
    pub events: usize,
    pub concurrency: usize,
    pub postgres_url: String,
}

/// What the local endpoint answers, as the vendor documents a success.
fn vendor_answer(destination: &str) -> &'static str {
    match destination {
        "tiktok" => r#"{"code":0,"message":"OK","request_id":"bench","data":{}}"#,
        "mixpanel" => r#"{"code":200,"num_records_imported":1000,"status":"OK"}"#,
        _ => r#"{"ok":true}"#,
    }
}

fn spec(destination: &str, base: &str) -> anyhow::Result<DestinationSpec> {
    let settings = match destination {
        "tiktok" => json!({"event_source_id": "BENCHPIXEL123", "access_token": "TIKTOK_TOKEN",
            "endpoint": format!("{base}/open_api/v1.3")}),
        "mixpanel" => json!({"project_id": "3141592", "username": "bench.sa",
            "secret": "MIXPANEL_SECRET", "endpoint": base}),
        "postgres" => {
            json!({"connection_url": "PG_URL", "schema": "bench_delivery", "table": "events"})
        }
        other => bail!("--destination: tiktok, mixpanel or postgres, not {other:?}"),
    };
    Ok(serde_json::from_value(
        json!({"name": destination, "type": destination, "settings": settings}),
    )?)
}

/// The bench's events as the processor hands them over: the processor bench's shop event.
fn events(count: usize) -> anyhow::Result<Vec<(String, Map<String, Value>)>> {
    (0..count)
        .map(|i| {
            let (id, json) = crate::processor::envelope(i, "p-bench");
            let event: Map<String, Value> = serde_json::from_slice(&json)?;
            Ok((id, event))
        })
        .collect()
}

pub fn run(args: DeliveryArgs) -> anyhow::Result<String> {
    if args.concurrency == 0 {
        bail!("--concurrency: at least 1");
    }
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = vendor_answer(&args.destination);
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}", listener.local_addr()?);
    server.spawn(async move {
        let app = axum::Router::new().fallback(move |_body: axum::body::Bytes| async move {
            ([("content-type", "application/json")], answer)
        });
        let _ = axum::serve(listener, app).await;
    });
    let spec = spec(&args.destination, &base)?;
    let pg_url = args.postgres_url.clone();
    let resolved = Resolved::new(spec, |name| {
        Some(if name == "PG_URL" {
            pg_url.clone()
        } else {
            "bench-secret".to_owned()
        })
    })
    .map_err(anyhow::Error::msg)?;
    let events = events(args.events)?;
    let payloads: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|(id, event)| match shape(&resolved.kind, event, None) {
            Shape::Payload(bytes) => Ok((id.clone(), bytes)),
            Shape::Invalid(why) => bail!("the bench event is invalid for it: {why}"),
            Shape::NotApplicable => bail!("the bench event is not for it"),
        })
        .collect::<anyhow::Result<_>>()?;
    let batch = resolved.max_batch();
    let (elapsed, latencies, bytes) = if resolved.warehouse().is_some() {
        client.block_on(write_postgres(&args, &events, batch))?
    } else {
        client.block_on(send_http(&resolved, &args, &payloads, batch))?
    };
    let mut latencies = latencies;
    latencies.sort();
    let rate = args.events as f64 / elapsed.as_secs_f64();
    Ok(format!(
        "destination={} events={} batch={batch} requests={} concurrency={} elapsed={:.2}s events_per_second={rate:.0} per_event={:.2}us request_p50={:.2}ms request_p99={:.2}ms request_max={:.2}ms body_bytes_per_event={:.0}",
        args.destination,
        args.events,
        latencies.len(),
        args.concurrency,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / args.events as f64,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
        bytes as f64 / args.events as f64,
    ))
}

/// Batches of the definition's size, `concurrency` requests in flight.
async fn send_http(
    resolved: &Resolved,
    args: &DeliveryArgs,
    payloads: &[(String, Vec<u8>)],
    batch: usize,
) -> anyhow::Result<(Duration, Vec<Duration>, usize)> {
    use futures_util::StreamExt as _;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let one = |chunk: &'_ [(String, Vec<u8>)]| {
        let http = http.clone();
        let items: Vec<(&str, &[u8])> = chunk
            .iter()
            .map(|(id, p)| (id.as_str(), p.as_slice()))
            .collect();
        let started = Instant::now();
        let request = resolved.request(&items, sluice_pipeline::time::now_ms(), None);
        let size = request.body.len();
        let sent = items.len();
        async move {
            let mut builder = http.post(&request.url).body(request.body);
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            let response = builder.send().await.context("send")?;
            let status = response.status().as_u16();
            let body = response.bytes().await.context("read")?;
            let verdict = resolved.classify(
                &Response {
                    status,
                    retry_after: None,
                    body: &body,
                },
                sent,
            );
            if verdict != Verdict::Delivered {
                bail!("the endpoint's answer was read as {verdict:?}");
            }
            Ok::<_, anyhow::Error>((started.elapsed(), size))
        }
    };
    // Warm the connections.
    for chunk in payloads.chunks(batch).take(args.concurrency) {
        one(chunk).await?;
    }
    let started = Instant::now();
    let results: Vec<anyhow::Result<(Duration, usize)>> =
        futures_util::stream::iter(payloads.chunks(batch).map(one))
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
    let elapsed = started.elapsed();
    let mut latencies = Vec::with_capacity(results.len());
    let mut bytes = 0;
    for result in results {
        let (latency, size) = result?;
        latencies.push(latency);
        bytes += size;
    }
    Ok((elapsed, latencies, bytes))
}

async fn write_batch(
    warehouse: &sluice_warehouse::Postgres,
    chunk: &[(String, Map<String, Value>)],
) -> anyhow::Result<Duration> {
    let rows: Vec<Row<'_>> = chunk.iter().map(|(id, event)| Row { id, event }).collect();
    let started = Instant::now();
    warehouse
        .write(&rows)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(started.elapsed())
}

/// Batches into a fresh table, `concurrency` transactions in flight; the table is dropped
/// afterwards.
async fn write_postgres(
    args: &DeliveryArgs,
    events: &[(String, Map<String, Value>)],
    batch: usize,
) -> anyhow::Result<(Duration, Vec<Duration>, usize)> {
    use futures_util::StreamExt as _;
    let pool = sqlx::PgPool::connect(&args.postgres_url)
        .await
        .context("PostgreSQL (--postgres-url)")?;
    sqlx::query("DROP SCHEMA IF EXISTS bench_delivery CASCADE")
        .execute(&pool)
        .await?;
    let warehouse = sluice_warehouse::Postgres::new(&args.postgres_url, "bench_delivery", "events")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let write = |chunk| write_batch(&warehouse, chunk);
    // The table and its columns are created by the first batch, outside the clock.
    let (first, rest) = events.split_at(batch.min(events.len()));
    write(first).await?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> =
        futures_util::stream::iter(rest.chunks(batch).map(write))
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
    let elapsed = started.elapsed();
    let latencies = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM bench_delivery.events")
        .fetch_one(&pool)
        .await?;
    if rows as usize != events.len() {
        bail!("{rows} rows for {} events", events.len());
    }
    sqlx::query("DROP SCHEMA bench_delivery CASCADE")
        .execute(&pool)
        .await?;
    // The first batch was outside the clock: the rate is over the rest.
    let scale = events.len() as f64 / rest.len().max(1) as f64;
    Ok((elapsed.mul_f64(scale), latencies, 0))
}
