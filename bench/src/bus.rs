//! Bus publish throughput: many concurrent producers, each call acknowledged only after the
//! messages are durable (fsync on the embedded bus, stream ack on NATS).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::stats::{ms, percentile};
use sluice_bus::embedded::{EmbeddedBus, EmbeddedConfig};
use sluice_bus::nats::{NatsBus, NatsConfig};
use sluice_bus::{Bus, Message};

pub struct BusArgs {
    pub backend: String,
    pub batch: usize,
    pub concurrency: usize,
    pub seconds: u64,
    pub nats_url: String,
    /// Replicas of the stream (3 on a three-server cluster).
    pub nats_replicas: usize,
}

/// A Segment-sized event: about 600 bytes of JSON.
fn event(i: u64) -> Message {
    let payload = format!(
        r#"{{"type":"track","event":"Order Completed","messageId":"m{i}","anonymousId":"a{i}","properties":{{"order_id":"o{i}","revenue":42.5,"currency":"EUR","products":[{{"sku":"s-1","price":21.25,"quantity":2}}]}},"context":{{"ip":"203.0.113.9","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36","page":{{"path":"/checkout","url":"https://shop.example.com/checkout"}}}},"timestamp":"2026-11-22T12:00:00Z"}}"#
    );
    Message::new(format!("m{i}"), payload)
}

async fn drive<B: Bus + Clone>(bus: B, args: &BusArgs) -> String {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let (bus, stop, measuring, batch) =
            (bus.clone(), stop.clone(), measuring.clone(), args.batch);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = (worker as u64) << 40;
            while !stop.load(Ordering::Relaxed) {
                let messages: Vec<_> = (0..batch)
                    .map(|_| {
                        n += 1;
                        event(n)
                    })
                    .collect();
                let started = Instant::now();
                let ok = bus.publish("raw", messages).await.is_ok();
                if ok && measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }));
    }
    // A consumer keeps the stage from filling up, as the processor would.
    let consumer = {
        let (bus, stop) = (bus.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(deliveries) = bus.fetch("raw", 1000, Duration::from_millis(50)).await {
                    for delivery in deliveries {
                        let _ = bus.ack(delivery).await;
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap_or_default());
    }
    let _ = consumer.await;
    all.sort_unstable();
    let pct = |p: f64| ms(percentile(&all, p));
    let calls = all.len() as f64 / elapsed.as_secs_f64();
    format!(
        "backend={} batch={} concurrency={} calls={:.0}/s events={:.0}/s p50={:.2}ms p99={:.2}ms",
        args.backend,
        args.batch,
        args.concurrency,
        calls,
        calls * args.batch as f64,
        pct(0.5),
        pct(0.99),
    )
}

pub async fn run(args: BusArgs) -> anyhow::Result<String> {
    match args.backend.as_str() {
        "embedded" => {
            let dir = tempfile::tempdir()?;
            let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path()))?;
            Ok(drive(bus, &args).await)
        }
        "nats" => {
            let prefix = format!("bench{}", std::process::id());
            let bus = NatsBus::connect(NatsConfig {
                prefix,
                replicas: args.nats_replicas,
                ..NatsConfig::new(args.nats_url.clone())
            })
            .await?;
            let report = drive(bus.clone(), &args).await;
            bus.delete_stages(&["raw"]).await?;
            Ok(report)
        }
        other => anyhow::bail!("unknown backend {other}: embedded or nats"),
    }
}
