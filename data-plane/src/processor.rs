//! The processor role: takes envelopes from `raw`, governs each once with its pipeline, and
//! fans it out — one message per destination that accepts it, one for the archive. Events
//! that fail governance go to `rejected`; events a destination cannot take as they are go
//! straight to its dead-letter queue. A batch from `raw` is acknowledged only after every
//! message it produced is on the bus, so a crash or a full stage loses nothing (at worst a
//! batch is processed twice; every message keeps the event id for deduplication).
//!
//! A new configuration applies from the next batch: the batch in hand finishes with the one
//! it started with.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::applied::AppliedConfig;
use crate::bus::{AnyBus, Bus, Delivery, Message};
use crate::consumers;
use crate::node::{NodeState, now_ms, until_true};
use crate::pipeline::enrich::Enricher;
use crate::pipeline::{Bindings, CelRoot, CompiledPipeline, Shaped, json_out};
use crate::receiver::rfc3339;
use crate::stages::{self, DlqEntry, Rejected};

/// Envelopes per batch from `raw`.
const BATCH: usize = 500;
/// Concurrent batches (each runs on the blocking pool, so both cores are used).
const WORKERS: usize = 2;
/// When the bus refuses the output (a full stage), the batch comes back after this.
const RETRY: Duration = Duration::from_secs(1);

/// The pipelines of one configuration version, compiled.
struct Compiled {
    version: u64,
    by_id: HashMap<String, Arc<CompiledPipeline>>,
}

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
        () = consumers::open(&processor.node, &processor.bus, stages::RAW) => {}
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

/// What one batch produced: messages per stage, in the order they were made.
#[derive(Default)]
struct Output {
    by_stage: Vec<(String, Vec<Message>)>,
    processed: u64,
    rejected: u64,
    /// Per destination (pipeline name, destination name): routed, skipped, invalid.
    destinations: BTreeMap<(String, String), [u64; 3]>,
}

impl Output {
    /// Adds a message to a stage; stages are few per batch, so a scan beats hashing.
    fn push(&mut self, stage: &str, id: &str, payload: Vec<u8>) {
        let message = Message::new(id, payload);
        match self.by_stage.iter_mut().find(|(s, _)| s == stage) {
            Some((_, messages)) => messages.push(message),
            None => self.by_stage.push((stage.to_owned(), vec![message])),
        }
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
        let compiled = Arc::new(compile(config));
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
        let output =
            match tokio::task::spawn_blocking(move || process(&compiled, &enricher, &payloads))
                .await
            {
                Ok(output) => output,
                Err(e) => {
                    tracing::error!(error = %e, "processing a batch failed");
                    self.give_back(deliveries, RETRY).await;
                    return;
                }
            };
        // Every stage is its own log with its own durable commit; waiting for them one after
        // another put up to four commits in a row between an event's arrival and its delivery.
        let published = futures_util::future::join_all(output.by_stage.into_iter().map(
            |(stage, messages)| async move {
                let outcome = self.bus.publish(&stage, messages).await;
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
        counters
            .rejected
            .fetch_add(output.rejected, Ordering::Relaxed);
        for ((pipeline, destination), [routed, skipped, invalid]) in output.destinations {
            let c = counters.destination(&pipeline, &destination);
            c.routed.fetch_add(routed, Ordering::Relaxed);
            c.skipped.fetch_add(skipped, Ordering::Relaxed);
            c.failed.fetch_add(invalid, Ordering::Relaxed);
            counters.failed.fetch_add(invalid, Ordering::Relaxed);
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

/// Compiles every pipeline of a configuration.
fn compile(config: &AppliedConfig) -> Compiled {
    let mut by_id = HashMap::new();
    for pipeline in &config.pipelines {
        match CompiledPipeline::compile(pipeline) {
            Ok(compiled) => {
                by_id.insert(pipeline.id.clone(), Arc::new(compiled));
            }
            // Validation ran before the configuration was applied; this is a bug, and the
            // pipeline's events are rejected with a reason rather than lost.
            Err(e) => {
                tracing::error!(pipeline = %pipeline.name, error = %e, "cannot compile a pipeline")
            }
        }
    }
    Compiled {
        version: config.version,
        by_id,
    }
}

/// One configuration's processing outside the role, for benchmarks: the same code the
/// processor runs on the blocking pool, without the bus.
pub struct Engine {
    compiled: Arc<Compiled>,
    enricher: Arc<Enricher>,
}

impl Engine {
    pub fn new(config: &AppliedConfig, enricher: Arc<Enricher>) -> Self {
        Self {
            compiled: Arc::new(compile(config)),
            enricher,
        }
    }

    /// Processes a batch of (event id, envelope JSON); messages produced per stage.
    pub fn run(&self, batch: &[(String, bytes::Bytes)]) -> BTreeMap<String, usize> {
        process(&self.compiled, &self.enricher, batch)
            .by_stage
            .into_iter()
            .map(|(stage, messages)| (stage, messages.len()))
            .collect()
    }
}

/// Governs and routes a batch; pure CPU work, run on the blocking pool.
fn process(compiled: &Compiled, enricher: &Enricher, batch: &[(String, bytes::Bytes)]) -> Output {
    let mut out = Output::default();
    let now = rfc3339(now_ms());
    let root = CelRoot::default();
    // Per event, per destination counts; summed by name once per batch.
    let mut tally: Vec<(Arc<CompiledPipeline>, Vec<[u64; 3]>)> = Vec::new();
    for (id, payload) in batch {
        out.processed += 1;
        let reject = |out: &mut Output, pipeline_id: &str, reason: String| {
            out.rejected += 1;
            let record = Rejected {
                id: id.clone(),
                pipeline_id: pipeline_id.to_owned(),
                rejected_at: now.clone(),
                reason,
                event: raw_json(payload),
            };
            out.push(
                stages::REJECTED,
                id,
                serde_json::to_vec(&record).unwrap_or_default(),
            );
        };
        // UTF-8 checked once for the whole envelope: `from_slice` checks every string
        // separately, which showed in the profile.
        let parsed = std::str::from_utf8(payload)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()));
        let mut event: Map<String, Value> = match parsed {
            Ok(event) => event,
            Err(e) => {
                reject(&mut out, "", format!("not an event envelope: {e}"));
                continue;
            }
        };
        let pipeline_id = event
            .get("pipeline_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(pipeline) = compiled.by_id.get(&pipeline_id) else {
            reject(
                &mut out,
                &pipeline_id,
                "the event's pipeline does not exist (any more)".into(),
            );
            continue;
        };
        if let Err(reason) = pipeline.govern(enricher, &mut event) {
            reject(&mut out, &pipeline_id, reason);
            continue;
        }
        if let Some(dataset) = &pipeline.archive_dataset {
            out.push(stages::ARCHIVE, id, archive_record(dataset, &event));
        }
        let mut bindings: Option<Bindings<'_>> = None;
        let mut counts = vec![[0u64; 3]; pipeline.destinations.len()];
        for (destination, counts) in pipeline.destinations.iter().zip(&mut counts) {
            match destination.shape(&root, &pipeline.needs, &event, &mut bindings) {
                Shaped::Deliver(bytes) => {
                    counts[0] += 1;
                    out.push(&destination.deliver_stage, id, bytes);
                }
                Shaped::Skip(_) => counts[1] += 1,
                Shaped::Invalid(error) => {
                    counts[2] += 1;
                    let entry = DlqEntry {
                        id: id.clone(),
                        pipeline_id: pipeline.id.clone(),
                        destination: destination.name.clone(),
                        failed_at: now.clone(),
                        attempts: 0,
                        status: None,
                        error,
                        response: None,
                        shaped: false,
                        payload: serde_json::value::to_raw_value(&event)
                            .unwrap_or_else(|_| raw_json(payload)),
                    };
                    out.push(
                        &destination.dlq_stage,
                        id,
                        serde_json::to_vec(&entry).unwrap_or_default(),
                    );
                }
            }
        }
        tally.push((pipeline.clone(), counts));
    }
    for (pipeline, counts) in tally {
        for (destination, [routed, skipped, invalid]) in pipeline.destinations.iter().zip(counts) {
            let total = out
                .destinations
                .entry((pipeline.name.clone(), destination.name.clone()))
                .or_default();
            total[0] += routed;
            total[1] += skipped;
            total[2] += invalid;
        }
    }
    out
}

/// An [`ArchiveRecord`] written in one pass: the event is serialised once, straight into it.
fn archive_record(dataset: &str, event: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(br#"{"dataset":"#);
    json_out::write_str(&mut out, dataset);
    out.extend_from_slice(br#","event":"#);
    json_out::write_map(&mut out, event);
    out.push(b'}');
    out
}

/// The bytes as a JSON value, or as a JSON string when they are not JSON.
fn raw_json(bytes: &[u8]) -> Box<RawValue> {
    serde_json::from_slice::<Box<RawValue>>(bytes).unwrap_or_else(|_| {
        serde_json::value::to_raw_value(&String::from_utf8_lossy(bytes)).unwrap_or_else(|_| {
            RawValue::from_string("null".into()).unwrap_or_else(|_| unreachable!())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_records_read_back() {
        let Value::Object(event) = serde_json::json!({"message_id": "m", "note": "a \"quote\""})
        else {
            unreachable!()
        };
        let bytes = archive_record("events", &event);
        let record: stages::ArchiveRecord = serde_json::from_slice(&bytes).expect("a record");
        assert_eq!(record.dataset, "events");
        assert_eq!(
            serde_json::from_str::<Value>(record.event.get()).expect("json"),
            Value::Object(event)
        );
    }
}
