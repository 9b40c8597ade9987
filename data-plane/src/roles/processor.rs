//! The processor role: takes envelopes from `raw`, governs each once with its pipeline, and
//! fans it out — one message per destination that accepts it, one for the archive. Events
//! that fail governance go to `rejected`; events a destination cannot take as they are go
//! straight to its dead-letter queue. A batch from `raw` is acknowledged only after every
//! message it produced is on the bus, so a crash or a full stage loses nothing (at worst a
//! batch is processed twice; every message keeps the event id for deduplication).
//!
//! A new configuration applies from the next batch: the batch in hand finishes with the one
//! it started with.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_bus::{AnyBus, Bus, Delivery, Message};
use sluice_pipeline::batch::{self, Compiled};
use sluice_pipeline::enrich::Enricher;
use sluice_pipeline::stages;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use bytes::Bytes;

use crate::applied::AppliedConfig;
use crate::inspect::tap::{Detail, NewRecord, Outcome, Stage, Tap};
use crate::shutdown::until_true;
use crate::state::NodeState;
use crate::telemetry::counters::Count;
use crate::telemetry::metrics;

/// Envelopes per batch from `raw`.
const BATCH: usize = 500;
/// Concurrent batches (each runs on the blocking pool, so both cores are used).
const WORKERS: usize = 2;
/// When the bus refuses the output (a full stage), the batch comes back after this.
const RETRY: Duration = Duration::from_secs(1);

struct Processor {
    node: Arc<NodeState>,
    bus: AnyBus,
    enricher: Arc<Enricher>,
    compiled: Mutex<Option<Arc<Compiled>>>,
}

pub fn start(
    node: Arc<NodeState>,
    bus: AnyBus,
    enricher: Arc<Enricher>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let processor = Arc::new(Processor {
        node,
        bus,
        enricher,
        compiled: Mutex::new(None),
    });
    (0..WORKERS)
        .map(|_| tokio::spawn(work(processor.clone(), shutdown.clone())))
        .collect()
}

async fn work(processor: Arc<Processor>, mut shutdown: watch::Receiver<bool>) {
    tokio::select! {
        () = until_true(&mut shutdown) => return,
        () = processor.node.consumers.open(&processor.bus, stages::RAW) => {}
    }
    loop {
        let fetched = tokio::select! {
            () = until_true(&mut shutdown) => return,
            fetched = processor.bus.fetch(stages::RAW, BATCH, Duration::from_secs(1)) => fetched,
        };
        processor.node.consumers.outcome(stages::RAW, &fetched);
        let deliveries = match fetched {
            Ok(d) if d.is_empty() => continue,
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "processor cannot read the raw stage");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        processor.handle(deliveries).await;
    }
}

impl Processor {
    fn compiled(&self, config: &AppliedConfig) -> Arc<Compiled> {
        let mut cached = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(compiled) = cached.as_ref()
            && compiled.version == config.version
        {
            return compiled.clone();
        }
        let compiled = Compiled::new(config.version, &config.pipelines);
        for (pipeline, error) in &compiled.failed {
            // Validation ran before the configuration was applied: this is a bug, and the
            // pipeline's events are rejected with a reason rather than lost.
            tracing::error!(pipeline = %pipeline, error = %error, "cannot compile a pipeline");
        }
        let compiled = Arc::new(compiled);
        *cached = Some(compiled.clone());
        compiled
    }

    async fn handle(&self, deliveries: Vec<Delivery>) {
        let Some(config) = self.node.current() else {
            self.give_back(deliveries, RETRY).await;
            return;
        };
        let compiled = self.compiled(&config);
        let enricher = self.enricher.clone();
        let payloads: Vec<(String, bytes::Bytes)> = deliveries
            .iter()
            .map(|d| (d.message.id.clone(), d.message.payload.clone()))
            .collect();
        let tap = &self.node.tap;
        let keep_governed = tap.watched();
        let (mut output, payloads) = match tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let output = batch::process_with(&compiled, &enricher, &payloads, keep_governed);
            (output, payloads, started.elapsed())
        })
        .await
        {
            Ok((output, payloads, took)) => {
                self.node
                    .metrics
                    .histogram(metrics::PROCESSING_BATCH_SECONDS, &[])
                    .record(took);
                (output, payloads)
            }
            Err(e) => {
                tracing::error!(error = %e, "processing a batch failed");
                self.give_back(deliveries, RETRY).await;
                return;
            }
        };
        match output.identity_error.take() {
            None => {}
            Some(sluice_identity::StoreError::Full(held)) => {
                // Not transient: the events go on with the ids they carry, unstored.
                if let Some(visitors) = &self.node.visitors {
                    visitors.store_full.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(
                    entries = held,
                    "the identity store is full; new visitors are not stored"
                );
            }
            Some(e) => {
                if let Some(visitors) = &self.node.visitors {
                    visitors.store_errors.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(error = %e, "identity store failed; the batch will be processed again");
                self.give_back(deliveries, RETRY).await;
                return;
            }
        }
        // Every stage is its own log with its own durable commit; waiting for them one after
        // another put up to four commits in a row between an event's arrival and its delivery.
        let by_stage = messages(tap, &payloads, &mut output);
        let published = futures_util::future::join_all(by_stage.into_iter().map(
            |(stage, messages)| async move {
                let started = Instant::now();
                let outcome = self.bus.publish(&stage, messages).await;
                self.node.metrics.bus_publish(&stage, started.elapsed());
                (stage, outcome)
            },
        ))
        .await;
        let mut failed = false;
        for (stage, outcome) in published {
            if let Err(e) = outcome {
                tracing::warn!(stage = %stage, error = %e, "cannot publish processed events; the batch will be processed again");
                failed = true;
            }
        }
        if failed {
            self.give_back(deliveries, RETRY).await;
            return;
        }
        if let Err(e) = self.bus.ack_all(deliveries).await {
            tracing::error!(error = %e, "cannot acknowledge a processed batch; it will be processed again");
        }
        let counters = &self.node.counters;
        counters
            .processed
            .fetch_add(output.processed, Ordering::Relaxed);
        for (reason, count) in &output.rejected {
            counters.add_rejected(*reason, *count);
        }
        for (key, tally) in output.destinations {
            let c = counters.destination(&key.pipeline_id, &key.pipeline, &key.destination);
            c.routed.fetch_add(tally.routed, Ordering::Relaxed);
            c.skipped.fetch_add(tally.skipped, Ordering::Relaxed);
            if tally.invalid > 0 {
                c.count(Count::Failed, tally.invalid);
            }
            counters.failed.fetch_add(tally.invalid, Ordering::Relaxed);
        }
    }

    async fn give_back(&self, deliveries: Vec<Delivery>, delay: Duration) {
        for delivery in deliveries {
            if let Err(e) = self.bus.nack(delivery, delay).await {
                tracing::error!(error = %e, "cannot return an event to the raw stage");
            }
        }
    }
}

/// A processed batch's messages per stage, ready to publish, with what passed recorded by the
/// inspector's taps when it is on: the envelopes as received, then each message with the
/// bytes it is published with. The benchmarks call it to measure what an idle tap costs.
pub fn messages(
    tap: &Tap,
    received: &[(String, Bytes)],
    output: &mut batch::Output,
) -> Vec<(String, Vec<Message>)> {
    let by_stage: Vec<(String, Vec<Message>)> = std::mem::take(&mut output.by_stage)
        .into_iter()
        .map(|(stage, messages)| {
            let messages = messages
                .into_iter()
                .map(|(id, payload)| Message::new(id, payload))
                .collect();
            (stage, messages)
        })
        .collect();
    if tap.on() {
        tap.record(received.iter().map(|(id, payload)| {
            // A copy: the bus may hand out slices of a larger buffer, which the ring would
            // otherwise keep alive.
            NewRecord::new(id, Stage::Received).body(Bytes::copy_from_slice(payload))
        }));
        record_outputs(tap, &by_stage, std::mem::take(&mut output.governed));
    }
    by_stage
}

fn record_outputs(tap: &Tap, by_stage: &[(String, Vec<Message>)], governed: Vec<batch::Produced>) {
    let mut records = Vec::new();
    for (stage, messages) in by_stage {
        let (kind, pipeline, destination) = match stage.as_str() {
            stages::ARCHIVE => (Stage::Governed, None, None),
            stages::REJECTED => (Stage::Rejected, None, None),
            other => match stages::parse_destination_stage(other) {
                Some((prefix, pipeline, destination)) => {
                    let kind = if prefix == "deliver" {
                        Stage::Shaped
                    } else {
                        Stage::Outcome
                    };
                    (
                        kind,
                        Some(Arc::<str>::from(pipeline)),
                        Some(Arc::<str>::from(destination)),
                    )
                }
                None => continue,
            },
        };
        for message in messages {
            let mut record = NewRecord::new(&message.id, kind).body(message.payload.clone());
            if let (Some(p), Some(d)) = (&pipeline, &destination) {
                record = record.destination(p, d);
            }
            record.detail = match kind {
                Stage::Governed => Detail::Governed { wrapped: true },
                // Not deliverable as it is: straight to the destination's DLQ.
                Stage::Outcome => Detail::Outcome {
                    outcome: Outcome::DeadLettered,
                    attempts: 0,
                    error: None,
                },
                _ => Detail::None,
            };
            records.push(record);
        }
    }
    records.extend(governed.into_iter().map(|(id, json)| {
        NewRecord::new(&id, Stage::Governed)
            .body(Bytes::from(json))
            .detail(Detail::Governed { wrapped: false })
    }));
    // Governed first, as it happened.
    records.sort_by_key(|r| match r.stage {
        Stage::Governed | Stage::Rejected => 0,
        _ => 1,
    });
    tap.record(records);
}
