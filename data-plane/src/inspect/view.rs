//! Reading records: what a viewer sees of one (JSON), and which records a viewer asked for.
//! All of it runs in the viewer's task, never on a role's path.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::tap::{Detail, Stage, TapRecord};
use sluice_pipeline::time::rfc3339;

/// A record as the live stream and the trace show it.
pub fn record_json(record: &TapRecord) -> Value {
    let mut out = Map::new();
    out.insert("seq".into(), record.seq.into());
    out.insert("at".into(), rfc3339(record.at_ms).into());
    out.insert("event_id".into(), (*record.event_id).into());
    out.insert("stage".into(), record.stage.as_str().into());
    if let Some(p) = &record.pipeline_id {
        out.insert("pipeline_id".into(), (**p).into());
    }
    if let Some(d) = &record.destination {
        out.insert("destination".into(), (**d).into());
    }
    let body = record.body.as_deref().map(json_or_text);
    match &record.detail {
        Detail::None => {}
        Detail::Governed { wrapped } => {
            // The archive record around the event: show the event.
            if *wrapped && let Some(Value::Object(mut wrapper)) = body.clone() {
                if let Some(dataset) = wrapper.remove("dataset") {
                    out.insert("dataset".into(), dataset);
                }
                if let Some(event) = wrapper.remove("event") {
                    out.insert("body".into(), event);
                }
            }
        }
        Detail::Attempt {
            status,
            latency_ms,
            error,
            response,
        } => {
            out.insert("status".into(), (*status).into());
            out.insert("latency_ms".into(), (*latency_ms).into());
            if let Some(e) = error {
                out.insert("error".into(), (**e).into());
            }
            if let Some(r) = response {
                out.insert("response".into(), json_or_text(r));
            }
        }
        Detail::Outcome {
            outcome,
            attempts,
            error,
        } => {
            out.insert("outcome".into(), outcome.as_str().into());
            out.insert("attempts".into(), (*attempts).into());
            if let super::tap::Outcome::Retrying { next_attempt_ms } = outcome {
                out.insert("next_attempt_at".into(), rfc3339(*next_attempt_ms).into());
            }
            if let Some(e) = error {
                out.insert("error".into(), (**e).into());
            }
        }
        Detail::Archived { file } => {
            out.insert("file".into(), (**file).into());
        }
    }
    if record.stage == Stage::Rejected
        && let Some(Value::Object(rejected)) = &body
    {
        for key in ["reason_code", "reason"] {
            if let Some(v) = rejected.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
        if let Some(event) = rejected.get("event") {
            out.insert("body".into(), event.clone());
        }
    }
    if !out.contains_key("body")
        && let Some(body) = body
    {
        out.insert("body".into(), body);
    }
    Value::Object(out)
}

/// Bytes as JSON when they are, else as text.
fn json_or_text(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// What the envelope says of an event: what the filters that are not on every record match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EventMeta {
    #[serde(default)]
    pub pipeline_id: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub anonymous_id: Option<String>,
}

impl EventMeta {
    /// The envelope's metadata from a record that carries the event, if it does.
    pub fn of(record: &TapRecord) -> Option<EventMeta> {
        let body = record.body.as_deref()?;
        match (&record.stage, &record.detail) {
            (Stage::Received, _) => serde_json::from_slice(body).ok(),
            (Stage::Governed, Detail::Governed { wrapped: true }) => {
                #[derive(Deserialize)]
                struct Wrapped {
                    event: EventMeta,
                }
                serde_json::from_slice::<Wrapped>(body)
                    .ok()
                    .map(|w| w.event)
            }
            (Stage::Governed, _) => serde_json::from_slice(body).ok(),
            (Stage::Rejected, _) => {
                #[derive(Deserialize)]
                struct Refused {
                    event: EventMeta,
                }
                serde_json::from_slice::<Refused>(body)
                    .ok()
                    .map(|r| r.event)
            }
            _ => None,
        }
    }

    /// The event name a person looks for: a track call's event, else the page or screen
    /// name, else the call's type.
    pub fn label(&self) -> Option<&str> {
        self.event
            .as_deref()
            .or(self.name.as_deref())
            .or(self.kind.as_deref())
    }
}

/// What a viewer asked for (each field empty means any).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterQuery {
    pub pipeline: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
    /// Comma-separated stage names.
    pub stage: Option<String>,
    pub event: Option<String>,
    /// Matches the user id or the anonymous id.
    pub user: Option<String>,
    /// delivered, retrying, dead_lettered or rejected: only the records that say so.
    pub outcome: Option<String>,
    /// Records from the ring to send first (the newest that match). Default: 100.
    pub backlog: Option<usize>,
}

/// Most events a viewer's filter remembers the envelope of.
const KNOWN_EVENTS: usize = 50_000;

/// A viewer's filter, with what it has learnt of the events it saw.
pub struct Filter {
    pipeline: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    stages: Option<HashSet<Stage>>,
    event: Option<String>,
    user: Option<String>,
    outcome: Option<String>,
    known: HashMap<Arc<str>, Option<EventMeta>>,
}

pub const OUTCOMES: [&str; 4] = ["delivered", "retrying", "dead_lettered", "rejected"];

impl Filter {
    pub fn new(query: &FilterQuery) -> Result<Self, String> {
        let nonempty = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
        let stages = match nonempty(&query.stage) {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(|name| {
                        Stage::parse(name.trim()).ok_or_else(|| {
                            let all: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
                            format!("stage: {name:?} is not one of {}", all.join(", "))
                        })
                    })
                    .collect::<Result<HashSet<Stage>, String>>()?,
            ),
        };
        let outcome = nonempty(&query.outcome);
        if let Some(o) = &outcome
            && !OUTCOMES.contains(&o.as_str())
        {
            return Err(format!("outcome: one of {}", OUTCOMES.join(", ")));
        }
        Ok(Self {
            pipeline: nonempty(&query.pipeline),
            source: nonempty(&query.source),
            destination: nonempty(&query.destination),
            stages,
            event: nonempty(&query.event),
            user: nonempty(&query.user),
            outcome,
            known: HashMap::new(),
        })
    }

    fn needs_meta(&self) -> bool {
        self.source.is_some() || self.event.is_some() || self.user.is_some()
    }

    /// Learns what a record says of its event; a later record of the same event (a vendor
    /// payload has no envelope) is matched by what was learnt.
    fn learn(&mut self, record: &TapRecord) {
        if !self.needs_meta() && self.pipeline.is_none() {
            return;
        }
        if matches!(
            record.stage,
            Stage::Received | Stage::Governed | Stage::Rejected
        ) && let Some(meta) = EventMeta::of(record)
        {
            if self.known.len() >= KNOWN_EVENTS {
                self.known.clear();
            }
            self.known.insert(Arc::from(&*record.event_id), Some(meta));
        }
    }

    pub fn matches(&mut self, record: &TapRecord) -> bool {
        self.learn(record);
        if let Some(stages) = &self.stages
            && !stages.contains(&record.stage)
        {
            return false;
        }
        if let Some(want) = &self.outcome {
            let said = match &record.detail {
                Detail::Outcome { outcome, .. } => Some(outcome.as_str()),
                _ if record.stage == Stage::Rejected => Some("rejected"),
                _ => None,
            };
            if said != Some(want.as_str()) {
                return false;
            }
        }
        if let (Some(want), Some(got)) = (&self.destination, &record.destination)
            && **got != *want
        {
            return false;
        }
        if self.destination.is_some()
            && record.destination.is_none()
            && matches!(
                record.stage,
                Stage::Shaped | Stage::Attempt | Stage::Outcome
            )
        {
            return false;
        }
        let meta = self.known.get(&*record.event_id).and_then(Option::as_ref);
        if let Some(want) = &self.pipeline {
            let got = record
                .pipeline_id
                .as_deref()
                .or(meta.and_then(|m| m.pipeline_id.as_deref()));
            if got != Some(want.as_str()) {
                return false;
            }
        }
        if !self.needs_meta() {
            return true;
        }
        let Some(meta) = meta else {
            return false;
        };
        if let Some(want) = &self.source
            && meta.source.as_deref() != Some(want.as_str())
        {
            return false;
        }
        if let Some(want) = &self.event
            && meta.label() != Some(want.as_str())
        {
            return false;
        }
        if let Some(want) = &self.user
            && meta.user_id.as_deref() != Some(want.as_str())
            && meta.anonymous_id.as_deref() != Some(want.as_str())
        {
            return false;
        }
        true
    }
}

/// What the live stream says when a viewer fell behind.
pub fn lagged_json(skipped: u64) -> Value {
    json!({ "skipped": skipped, "why": "this viewer fell behind the node; these records were not sent (narrow the filters to see every one)" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::tap::{NewRecord, Outcome, Tap};
    use bytes::Bytes;

    fn ring() -> Tap {
        Tap::new(crate::config::InspectConfig {
            ring_records: 100,
            ring_bytes: 1 << 20,
        })
    }

    fn envelope(id: &str, event: &str, user: &str) -> Bytes {
        Bytes::from(
            json!({"message_id": id, "pipeline_id": "p1", "source": "web", "type": "track", "event": event, "anonymous_id": user})
                .to_string(),
        )
    }

    #[test]
    fn later_stages_match_by_what_the_envelope_said() {
        let tap = ring();
        let (p, d): (Arc<str>, Arc<str>) = ("p1".into(), "crm".into());
        tap.record([
            NewRecord::new("a", Stage::Received).body(envelope("a", "Signup", "u1")),
            NewRecord::new("b", Stage::Received).body(envelope("b", "Paid", "u2")),
            NewRecord::new("a", Stage::Shaped)
                .destination(&p, &d)
                .body(Bytes::from_static(b"{\"x\":1}")),
            NewRecord::new("b", Stage::Shaped)
                .destination(&p, &d)
                .body(Bytes::from_static(b"{\"x\":2}")),
            NewRecord::new("a", Stage::Outcome)
                .destination(&p, &d)
                .detail(Detail::Outcome {
                    outcome: Outcome::Delivered,
                    attempts: 1,
                    error: None,
                }),
        ]);
        let seen = |query: FilterQuery| {
            let mut filter = Filter::new(&query).expect("valid");
            tap.held(usize::MAX, |r| filter.matches(r))
                .iter()
                .map(|r| format!("{}:{}", r.event_id, r.stage.as_str()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seen(FilterQuery {
                event: Some("Signup".into()),
                ..Default::default()
            }),
            ["a:received", "a:shaped", "a:outcome"]
        );
        assert_eq!(
            seen(FilterQuery {
                user: Some("u2".into()),
                stage: Some("shaped".into()),
                ..Default::default()
            }),
            ["b:shaped"]
        );
        assert_eq!(
            seen(FilterQuery {
                outcome: Some("delivered".into()),
                ..Default::default()
            }),
            ["a:outcome"]
        );
        assert_eq!(
            seen(FilterQuery {
                destination: Some("other".into()),
                ..Default::default()
            }),
            ["a:received", "b:received"]
        );
    }

    #[test]
    fn bad_filters_say_what_is_accepted() {
        let e = Filter::new(&FilterQuery {
            stage: Some("received,sent".into()),
            ..Default::default()
        })
        .err()
        .expect("refused");
        assert!(e.contains("\"sent\"") && e.contains("archived"), "{e}");
        assert!(
            Filter::new(&FilterQuery {
                outcome: Some("lost".into()),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn a_record_shows_its_event_not_its_wrapper() {
        let tap = ring();
        tap.record([NewRecord::new("a", Stage::Governed)
            .body(Bytes::from_static(
                br#"{"dataset":"events","event":{"message_id":"a"}}"#,
            ))
            .detail(Detail::Governed { wrapped: true })]);
        let shown = record_json(&tap.held(1, |_| true)[0]);
        assert_eq!(shown["body"], json!({"message_id": "a"}));
        assert_eq!(shown["dataset"], "events");
        assert_eq!(shown["stage"], "governed");
    }
}
