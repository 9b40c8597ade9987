//! The receiver end to end over HTTP: a control plane and a node in this process, keep-alive
//! load from this process too (all on the same two cores). A request counts once the receiver
//! answered 200, which it does only after the events are durable on the bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::{ms, percentile};
use serde_json::json;
use sluice_bus::Bus;
use sluice_bus::nats::{NatsBus, NatsConfig};

pub struct ReceiverArgs {
    pub nats_url: Option<String>,
    pub nats_fetch_bytes: Option<usize>,
    pub nats_packs_in_flight: Option<usize>,
    pub batch: usize,
    pub concurrency: usize,
    pub seconds: u64,
    /// Requests per second to hold (0: as fast as possible), for latency at a given load.
    pub rate: u64,
    /// Also report the slowest requests, each with when it started, to tell a periodic stall
    /// (a collector, a timer) from load, and this process's late wake-ups, to tell a stall of
    /// ours from the server's.
    pub slowest: usize,
    pub generator: Generator,
}

/// The HTTP client the load generator sends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// A lean keep-alive HTTP/1.1 client (`http1`), as `wrk` is: the least CPU taken from
    /// the receiver it measures.
    Lean,
    /// reqwest, as the figures before 2026-12-04 evening were measured.
    Reqwest,
}

/// One worker's client.
enum Sender {
    Lean(crate::http1::Connection),
    Reqwest {
        client: reqwest::Client,
        url: reqwest::Url,
        auth: String,
    },
}

impl Sender {
    async fn post(&mut self, body: Vec<u8>) -> Option<String> {
        match self {
            Self::Lean(connection) => connection.post(&body).await.err().map(|e| e.to_string()),
            Self::Reqwest { client, url, auth } => {
                match client
                    .post(url.clone())
                    .header("authorization", auth.as_str())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => Some(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Some(e.to_string()),
                }
            }
        }
    }
}

/// A `track` event with unique ids, written straight into `out` so the generator spends as
/// little of the shared cores as it can.
fn write_event(out: &mut Vec<u8>, i: u64) {
    use std::io::Write as _;
    let _ = write!(
        out,
        r#"{{"type":"track","event":"Order Completed","messageId":"m{i}","anonymousId":"a{i}","properties":{{"order_id":"o{i}","revenue":42.5,"currency":"EUR","products":[{{"sku":"sku-{i}","name":"Espresso Machine","price":42.5,"quantity":1}}]}},"context":{{"ip":"203.0.113.9","locale":"en-GB","page":{{"path":"/checkout","url":"https://shop.example.com/checkout","title":"Checkout"}},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36","library":{{"name":"analytics.js","version":"5.2.0"}}}},"timestamp":"2026-11-22T12:00:00.000Z"}}"#
    );
}

/// The size of one generated event, in bytes (for the report).
pub fn event_bytes() -> usize {
    let mut out = Vec::new();
    write_event(&mut out, 1 << 40);
    out.len()
}

/// Runs the load on the current runtime; the control plane, the node and the consumer run
/// on `server`'s, so the generator competes for the cores but not for the server's workers.
pub async fn run(args: ReceiverArgs, server: tokio::runtime::Handle) -> anyhow::Result<String> {
    if let Some(url) = &args.nats_url {
        // Start from an empty stage: what an earlier run left would fill the stream.
        let bus = NatsBus::connect(NatsConfig::new(url.clone())).await?;
        bus.delete_stages(&["raw"]).await?;
    }
    let nats_url = args.nats_url.clone();
    let fetch_bytes = args.nats_fetch_bytes;
    let packs_in_flight = args.nats_packs_in_flight;
    let world = crate::world::start(&server, json!({"sources": [{"name": "web"}]}), |node, _| {
        node.bus.nats_url = nats_url;
        if let Some(bytes) = fetch_bytes {
            node.bus.nats_fetch_bytes = bytes;
        }
        if let Some(packs) = packs_in_flight {
            node.bus.nats_packs_in_flight = packs;
        }
    })
    .await?;
    let node = &world.node;
    // Parsed once: reqwest would parse a string URL on every request.
    let path = if args.batch == 1 {
        "/v1/track"
    } else {
        "/v1/batch"
    };
    let url = reqwest::Url::parse(&format!("http://{}{path}", node.http_addr))?;
    let addr = node.http_addr;
    let auth = world.ingest_auth.clone();

    // A consumer acks what arrives, as the processor would, so the stage never fills. What it
    // acks in the measured window is reported: acknowledged writes above that rate grow a
    // backlog, so they are a burst the bus absorbs, not a rate it sustains.
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let consumer = {
        let (bus, stop, measuring, consumed) = (
            node.bus.clone(),
            stop.clone(),
            measuring.clone(),
            consumed.clone(),
        );
        server.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(deliveries) = bus.fetch("raw", 5000, Duration::from_millis(50)).await {
                    let events = deliveries.len() as u64;
                    if bus.ack_all(deliveries).await.is_ok() && measuring.load(Ordering::Relaxed) {
                        consumed.fetch_add(events, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    // With --slowest: when each runtime (and a plain thread) woke up late, to tell a stall of
    // this process from one of the server it talks to.
    let lag_probes = (args.slowest > 0).then(|| {
        let probe = |stop: Arc<AtomicBool>| async move {
            let mut late = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let before = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                let took = before.elapsed();
                if took > Duration::from_millis(8) {
                    late.push((std::time::SystemTime::now(), took));
                }
            }
            late
        };
        let thread_stop = stop.clone();
        (
            tokio::spawn(probe(stop.clone())),
            server.spawn(probe(stop.clone())),
            std::thread::spawn(move || {
                let mut late = Vec::new();
                while !thread_stop.load(Ordering::Relaxed) {
                    let before = Instant::now();
                    std::thread::sleep(Duration::from_millis(1));
                    let took = before.elapsed();
                    if took > Duration::from_millis(8) {
                        late.push((std::time::SystemTime::now(), took));
                    }
                }
                late
            }),
        )
    });
    let errors = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let per_worker_interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64));
    let mut workers = Vec::new();
    let start = tokio::time::Instant::now();
    let concurrency = args.concurrency;
    for worker in 0..concurrency {
        let mut sender = match args.generator {
            Generator::Lean => Sender::Lean(crate::http1::Connection::new(addr, path, &auth)),
            Generator::Reqwest => Sender::Reqwest {
                client: client.clone(),
                url: url.clone(),
                auth: auth.clone(),
            },
        };
        let (stop, measuring, errors, batch) =
            (stop.clone(), measuring.clone(), errors.clone(), args.batch);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = (worker as u64) << 40;
            let mut tick = per_worker_interval
                .map(|period| crate::pace::ticker(start, worker, concurrency, period));
            while !stop.load(Ordering::Relaxed) {
                if let Some(tick) = tick.as_mut() {
                    tick.tick().await;
                }
                let mut body = Vec::with_capacity(batch * 700 + 16);
                if batch == 1 {
                    n += 1;
                    write_event(&mut body, n);
                } else {
                    body.extend_from_slice(b"{\"batch\":[");
                    for i in 0..batch {
                        if i > 0 {
                            body.push(b',');
                        }
                        n += 1;
                        write_event(&mut body, n);
                    }
                    body.extend_from_slice(b"]}");
                }
                let started = Instant::now();
                let failure = sender.post(body).await;
                if measuring.load(Ordering::Relaxed) {
                    match failure {
                        None => latencies.push((started.elapsed(), started)),
                        Some(failure) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("first error: {failure}");
                            }
                        }
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let started_wall = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut timed = Vec::new();
    for worker in workers {
        timed.extend(worker.await.unwrap_or_default());
    }
    let _ = consumer.await;
    timed.sort_unstable();
    let all: Vec<Duration> = timed.iter().map(|(latency, _)| *latency).collect();
    let pct = |p: f64| ms(percentile(&all, p));
    let requests = all.len() as f64 / elapsed.as_secs_f64();
    let report = format!(
        "bus={} generator={:?} batch={} event_bytes={} concurrency={} rate={} requests={:.0}/s events={:.0}/s consumed={:.0}/s p50={:.2}ms p99={:.2}ms errors={}",
        match &args.nats_url {
            Some(_) => format!(
                "nats fetch_bytes={} packs_in_flight={}",
                args.nats_fetch_bytes
                    .unwrap_or(sluice_bus::nats::DEFAULT_FETCH_BYTES),
                args.nats_packs_in_flight
                    .unwrap_or(sluice_bus::nats::DEFAULT_PACKS_IN_FLIGHT),
            ),
            None => "embedded".into(),
        },
        args.generator,
        args.batch,
        event_bytes(),
        args.concurrency,
        if args.rate > 0 {
            args.rate.to_string()
        } else {
            "max".into()
        },
        requests,
        requests * args.batch as f64,
        consumed.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        errors.load(Ordering::Relaxed)
    );
    let slowest: Vec<String> = timed
        .iter()
        .rev()
        .take(args.slowest)
        .map(|(latency, at)| {
            format!(
                "{:.2}ms@{:.0}ms",
                ms(*latency),
                ms(at.saturating_duration_since(started))
            )
        })
        .collect();
    let report = if slowest.is_empty() {
        report
    } else {
        let unix = started_wall
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{report}\nslowest (latency@start, from unix {:.3} s): {}",
            unix.as_secs_f64(),
            slowest.join(" ")
        )
    };
    let report = match lag_probes {
        Some((generator, node, thread)) => {
            let show = |late: Vec<(std::time::SystemTime, Duration)>| {
                late.iter()
                    .map(|(at, took)| {
                        let at = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                        format!("{:.1}ms@{:.3}", ms(*took), at.as_secs_f64())
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            format!(
                "{report}\nlate wake-ups (took@unix s, ended): generator runtime: {}\nnode runtime: {}\nthread: {}",
                show(generator.await.unwrap_or_default()),
                show(node.await.unwrap_or_default()),
                show(thread.join().unwrap_or_default()),
            )
        }
        None => report,
    };
    server.spawn(world.shutdown()).await?;
    Ok(report)
}
