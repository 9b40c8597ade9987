//! A batch of envelopes from `raw` through governance and every destination's shaping: what
//! the processor role runs on its blocking pool and the benchmarks run without a bus. Pure
//! CPU work: the caller publishes what comes out and acknowledges the batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::engine::{AppliedPipeline, Bindings, CelRoot, CompiledPipeline, Shaped};
use crate::enrich::Enricher;
use crate::reject::{RejectReason, Rejection};
use crate::stages::{self, DlqEntry, Rejected, raw_json};
use crate::{json_out, time};

/// The pipelines of one configuration version, compiled.
pub struct Compiled {
    pub version: u64,
    by_id: HashMap<String, Arc<CompiledPipeline>>,
    /// Pipelines that did not compile, with why (validation ran before the configuration
    /// was applied, so each is a bug; their events are rejected, not lost).
    pub failed: Vec<(String, String)>,
}

impl Compiled {
    /// Compiles every pipeline of a configuration version.
    pub fn new<'p>(version: u64, pipelines: impl IntoIterator<Item = &'p AppliedPipeline>) -> Self {
        let mut by_id = HashMap::new();
        let mut failed = Vec::new();
        for pipeline in pipelines {
            match CompiledPipeline::compile(pipeline) {
                Ok(compiled) => {
                    by_id.insert(pipeline.id.clone(), Arc::new(compiled));
                }
                Err(e) => failed.push((pipeline.name.clone(), e)),
            }
        }
        Self {
            version,
            by_id,
            failed,
        }
    }
}

/// One destination's counts in a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationTally {
    pub routed: u64,
    pub skipped: u64,
    /// Not deliverable as it is: straight to the destination's DLQ.
    pub invalid: u64,
}

/// Where a destination's counts belong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DestinationKey {
    pub pipeline_id: String,
    pub pipeline: String,
    pub destination: String,
}

/// A message to publish: its id (the event id) and payload.
pub type Produced = (String, Vec<u8>);

/// What one batch produced: messages (id, payload) per stage, in the order they were made.
#[derive(Default)]
pub struct Output {
    pub by_stage: Vec<(String, Vec<Produced>)>,
    pub processed: u64,
    /// Rejected events by class.
    pub rejected: BTreeMap<RejectReason, u64>,
    pub destinations: BTreeMap<DestinationKey, DestinationTally>,
    /// Governed events of pipelines that do not archive, when asked for (the live
    /// inspector shows them; an archived event's record already holds it).
    pub governed: Vec<Produced>,
    /// The identity store failed: nothing of this batch may be published; process it again.
    pub identity_error: Option<sluice_identity::StoreError>,
}

impl Output {
    /// Adds a message to a stage; stages are few per batch, so a scan beats hashing.
    fn push(&mut self, stage: &str, id: &str, payload: Vec<u8>) {
        let message = (id.to_owned(), payload);
        match self.by_stage.iter_mut().find(|(s, _)| s == stage) {
            Some((_, messages)) => messages.push(message),
            None => self.by_stage.push((stage.to_owned(), vec![message])),
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Governs and routes a batch of (event id, envelope JSON).
pub fn process<P: AsRef<[u8]>>(
    compiled: &Compiled,
    enricher: &Enricher,
    batch: &[(String, P)],
) -> Output {
    process_with(compiled, enricher, batch, false)
}

/// [`process`], also keeping the governed events of pipelines that do not archive when
/// `keep_governed` (in [`Output::governed`]).
pub fn process_with<P: AsRef<[u8]>>(
    compiled: &Compiled,
    enricher: &Enricher,
    batch: &[(String, P)],
    keep_governed: bool,
) -> Output {
    let mut out = Output::default();
    let now = time::rfc3339(time::now_ms());
    let root = CelRoot::default();
    // Per event, per destination counts; summed by name once per batch.
    let mut tally: Vec<(Arc<CompiledPipeline>, Vec<DestinationTally>)> = Vec::new();
    let mut identity = crate::identity::IdentityScope::new(enricher.identities.as_deref());
    for (id, payload) in batch {
        let payload: &[u8] = payload.as_ref();
        out.processed += 1;
        let reject = |out: &mut Output, pipeline_id: &str, rejection: Rejection| {
            *out.rejected.entry(rejection.reason).or_default() += 1;
            let record = Rejected {
                id: id.clone(),
                pipeline_id: pipeline_id.to_owned(),
                rejected_at: now.clone(),
                reason_code: rejection.reason,
                reason: rejection.detail,
                event: raw_json(payload),
            };
            out.push(stages::REJECTED, id, record.to_bytes());
        };
        // UTF-8 checked once for the whole envelope: `from_slice` checks every string
        // separately, which showed in the profile.
        let parsed = std::str::from_utf8(payload)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()));
        let mut event: Map<String, Value> = match parsed {
            Ok(event) => event,
            Err(e) => {
                let why = format!("not an event envelope: {e}");
                reject(&mut out, "", Rejection::new(RejectReason::BadEnvelope, why));
                continue;
            }
        };
        let pipeline_id = event
            .get("pipeline_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(pipeline) = compiled.by_id.get(&pipeline_id) else {
            let why = "the event's pipeline does not exist (any more)";
            reject(
                &mut out,
                &pipeline_id,
                Rejection::new(RejectReason::UnknownPipeline, why),
            );
            continue;
        };
        if let Err(rejection) = pipeline.govern(enricher, &mut identity, &mut event) {
            reject(&mut out, &pipeline_id, rejection);
            continue;
        }
        if let Some(dataset) = &pipeline.archive_dataset {
            out.push(stages::ARCHIVE, id, archive_record(dataset, &event));
        } else if keep_governed {
            let mut json = Vec::with_capacity(1024);
            json_out::write_map(&mut json, &event);
            out.governed.push((id.clone(), json));
        }
        let mut bindings: Option<Bindings<'_>> = None;
        let mut counts = vec![DestinationTally::default(); pipeline.destinations.len()];
        let mut governed: Option<Box<RawValue>> = None;
        for (destination, counts) in pipeline.destinations.iter().zip(&mut counts) {
            match destination.shape(&root, &pipeline.needs, &event, &mut bindings) {
                Shaped::Deliver(bytes) => {
                    counts.routed += 1;
                    out.push(&destination.deliver_stage, id, bytes);
                }
                Shaped::Skip(_) => counts.skipped += 1,
                Shaped::Invalid(error) => {
                    counts.invalid += 1;
                    let payload = governed
                        .get_or_insert_with(|| {
                            map_json(&event).unwrap_or_else(|| raw_json(payload))
                        })
                        .clone();
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
                        payload,
                    };
                    out.push(&destination.dlq_stage, id, entry.to_bytes());
                }
            }
        }
        tally.push((pipeline.clone(), counts));
    }
    for (pipeline, counts) in tally {
        for (destination, counts) in pipeline.destinations.iter().zip(counts) {
            let total = out
                .destinations
                .entry(DestinationKey {
                    pipeline_id: pipeline.id.clone(),
                    pipeline: pipeline.name.clone(),
                    destination: destination.name.clone(),
                })
                .or_default();
            total.routed += counts.routed;
            total.skipped += counts.skipped;
            total.invalid += counts.invalid;
        }
    }
    out.identity_error = identity.finish();
    out
}

/// One configuration's processing for benchmarks: the same code the processor runs.
pub struct Engine {
    compiled: Compiled,
    enricher: Arc<Enricher>,
}

impl Engine {
    pub fn new<'p>(
        version: u64,
        pipelines: impl IntoIterator<Item = &'p AppliedPipeline>,
        enricher: Arc<Enricher>,
    ) -> Self {
        Self {
            compiled: Compiled::new(version, pipelines),
            enricher,
        }
    }

    /// Processes a batch of (event id, envelope JSON); messages produced per stage.
    pub fn run<P: AsRef<[u8]>>(&self, batch: &[(String, P)]) -> BTreeMap<String, usize> {
        process(&self.compiled, &self.enricher, batch)
            .by_stage
            .into_iter()
            .map(|(stage, messages)| (stage, messages.len()))
            .collect()
    }
}

/// An archive record written in one pass: the event is serialised once, straight into it.
fn archive_record(dataset: &str, event: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(br#"{"dataset":"#);
    json_out::write_str(&mut out, dataset);
    out.extend_from_slice(br#","event":"#);
    json_out::write_map(&mut out, event);
    out.push(b'}');
    out
}

/// The governed event as raw JSON.
fn map_json(event: &Map<String, Value>) -> Option<Box<RawValue>> {
    let mut out = Vec::with_capacity(1024);
    json_out::write_map(&mut out, event);
    String::from_utf8(out)
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
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

    #[test]
    fn what_is_not_json_is_kept_as_a_json_string() {
        assert_eq!(raw_json(br#"{"a":1}"#).get(), r#"{"a":1}"#);
        assert_eq!(raw_json(b"not \"json\"").get(), r#""not \"json\"""#);
        assert_eq!(raw_json(&[0xff, b'x']).get(), "\"\u{fffd}x\"");
    }

    #[test]
    fn rejections_are_counted_by_class_and_stored_with_their_text() {
        let compiled = Compiled::new(1, []);
        let batch = [
            ("a".to_owned(), b"{oops".as_slice()),
            ("b".to_owned(), br#"{"pipeline_id":"gone"}"#.as_slice()),
        ];
        let out = process(&compiled, &Enricher::new(None), &batch);
        assert_eq!(
            out.rejected,
            BTreeMap::from([
                (RejectReason::BadEnvelope, 1),
                (RejectReason::UnknownPipeline, 1)
            ])
        );
        let (stage, messages) = &out.by_stage[0];
        assert_eq!(stage, stages::REJECTED);
        let first: Rejected = serde_json::from_slice(&messages[0].1).expect("a record");
        assert_eq!(first.reason_code, RejectReason::BadEnvelope);
        assert!(
            first.reason.starts_with("not an event envelope"),
            "{}",
            first.reason
        );
        assert_eq!(first.event.get(), r#""{oops""#);
    }
}
