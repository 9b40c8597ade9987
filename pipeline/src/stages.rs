//! The bus stages between the roles, and what their messages hold.
//!
//! * `raw`: envelopes from the receivers (the processor consumes it).
//! * `deliver.<pipeline id>.<destination>`: payloads shaped for one destination (its
//!   delivery workers consume it).
//! * `dlq.<pipeline id>.<destination>`: [`DlqEntry`]s, read through the DLQ API.
//! * `archive`: [`ArchiveRecord`]s (the archiver consumes it).
//! * `rejected`: [`Rejected`] events that failed governance, read through the DLQ API.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::json_out::Object;
use crate::reject::RejectReason;

pub const RAW: &str = "raw";
pub const ARCHIVE: &str = "archive";
pub const REJECTED: &str = "rejected";

pub fn deliver(pipeline_id: &str, destination: &str) -> String {
    format!("deliver.{pipeline_id}.{destination}")
}

pub fn dlq(pipeline_id: &str, destination: &str) -> String {
    format!("dlq.{pipeline_id}.{destination}")
}

/// `("deliver" | "dlq", pipeline id, destination)` of a destination's stage name. Pipeline
/// ids hold no dot, so the first dot after the pipeline id ends it.
pub fn parse_destination_stage(stage: &str) -> Option<(&str, &str, &str)> {
    let (prefix, rest) = stage.split_once('.')?;
    if prefix != "deliver" && prefix != "dlq" {
        return None;
    }
    let (pipeline, destination) = rest.split_once('.')?;
    Some((prefix, pipeline, destination))
}

/// An event that could not be delivered: why, and the payload to replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqEntry {
    /// The event id (and idempotency key).
    pub id: String,
    pub pipeline_id: String,
    pub destination: String,
    /// RFC 3339.
    pub failed_at: String,
    /// Delivery attempts made (0 when the event was not deliverable at all).
    pub attempts: u32,
    /// The destination's last HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub error: String,
    /// The start of the destination's last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Whether `payload` is what the destination gets (a failed delivery), or the governed
    /// event, which a replay shapes again with the destination's current settings (an event
    /// the destination could not take as it was).
    pub shaped: bool,
    pub payload: Box<RawValue>,
}

/// An event that failed governance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub id: String,
    pub pipeline_id: String,
    /// RFC 3339.
    pub rejected_at: String,
    /// The class of the refusal (the rejected counter's `reason` label).
    #[serde(default)]
    pub reason_code: RejectReason,
    /// What exactly was wrong, for a person.
    pub reason: String,
    /// The envelope as received (before governance), so a replay runs it again.
    pub event: Box<RawValue>,
}

/// A governed event on its way to the archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveRecord {
    pub dataset: String,
    pub event: Box<RawValue>,
}

impl DlqEntry {
    /// The entry as the DLQ stage stores it: what `serde_json` writes, but infallibly (a
    /// record that failed to serialise must never be stored as an empty message).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.payload.get().len());
        let mut o = Object::start(&mut out);
        o.str("id", &self.id);
        o.str("pipeline_id", &self.pipeline_id);
        o.str("destination", &self.destination);
        o.str("failed_at", &self.failed_at);
        o.i64("attempts", i64::from(self.attempts));
        if let Some(status) = self.status {
            o.i64("status", i64::from(status));
        }
        o.str("error", &self.error);
        if let Some(response) = &self.response {
            o.str("response", response);
        }
        o.key("shaped")
            .extend_from_slice(if self.shaped { b"true" } else { b"false" });
        o.key("payload")
            .extend_from_slice(self.payload.get().as_bytes());
        o.end();
        out
    }
}

impl Rejected {
    /// The entry as the `rejected` stage stores it (see [`DlqEntry::to_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.event.get().len());
        let mut o = Object::start(&mut out);
        o.str("id", &self.id);
        o.str("pipeline_id", &self.pipeline_id);
        o.str("rejected_at", &self.rejected_at);
        o.str("reason_code", self.reason_code.as_str());
        o.str("reason", &self.reason);
        o.key("event")
            .extend_from_slice(self.event.get().as_bytes());
        o.end();
        out
    }
}

/// The event id a bus message id stands for (a replay's id carries a suffix).
pub fn event_id(message_id: &str) -> &str {
    match message_id.rsplit_once("#replay-") {
        Some((id, suffix)) if suffix.bytes().all(|b| b.is_ascii_digit() || b == b'-') => id,
        _ => message_id,
    }
}

/// The bytes as a JSON value, or as a JSON string when they are not JSON or nest deeper than
/// a JSON reader takes (the rejected and DLQ APIs must be able to show every entry).
pub fn raw_json(bytes: &[u8]) -> Box<RawValue> {
    if crate::envelope::nesting_depth(bytes) <= SHOWABLE_DEPTH
        && let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(bytes)
    {
        return raw;
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    crate::json_out::write_str(&mut out, &String::from_utf8_lossy(bytes));
    // A JSON string written by `write_str` is always valid JSON.
    String::from_utf8(out)
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
        .unwrap_or_else(|| RawValue::NULL.to_owned())
}

/// Deepest nesting kept as JSON in a record: serde_json reads 128 levels, and a record wraps
/// the event in a few of its own.
const SHOWABLE_DEPTH: usize = 120;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_only_what_a_json_reader_can_show() {
        assert_eq!(raw_json(br#"{"a":1}"#).get(), r#"{"a":1}"#);
        assert_eq!(raw_json(b"not json").get(), r#""not json""#);
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let kept = raw_json(deep.as_bytes());
        let shown: serde_json::Value = serde_json::from_str(kept.get()).expect("showable");
        assert_eq!(shown.as_str().map(str::len), Some(10_000));
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).expect("json")
    }

    #[test]
    fn records_are_written_as_serde_writes_them() {
        for (status, response) in [(None, None), (Some(503), Some("busy \"now\"\n".to_owned()))] {
            let entry = DlqEntry {
                id: "e\u{1}1".into(),
                pipeline_id: "p".into(),
                destination: "crm".into(),
                failed_at: "2026-12-05T00:00:00.000Z".into(),
                attempts: 5,
                status,
                error: "HTTP 503".into(),
                response,
                shaped: status.is_some(),
                payload: raw(r#"{"a":[1,2,{"b":null}]}"#),
            };
            assert_eq!(entry.to_bytes(), serde_json::to_vec(&entry).expect("serde"));
        }
        let rejected = Rejected {
            id: "e1".into(),
            pipeline_id: "p".into(),
            rejected_at: "2026-12-05T00:00:00.000Z".into(),
            reason_code: RejectReason::SchemaViolation,
            reason: "validate_schema: \"Paid\"".into(),
            event: raw(r#""not json""#),
        };
        assert_eq!(
            rejected.to_bytes(),
            serde_json::to_vec(&rejected).expect("serde")
        );
    }

    #[test]
    fn destination_stages_read_back() {
        assert_eq!(
            parse_destination_stage(&deliver("p-1", "crm.eu")),
            Some(("deliver", "p-1", "crm.eu"))
        );
        assert_eq!(
            parse_destination_stage(&dlq("p-1", "crm")),
            Some(("dlq", "p-1", "crm"))
        );
        assert_eq!(parse_destination_stage(RAW), None);
        assert_eq!(parse_destination_stage("archive.x.y"), None);
    }

    #[test]
    fn replay_ids_keep_the_event_id_recoverable() {
        assert_eq!(event_id("m-1#replay-1795000000000-3"), "m-1");
        assert_eq!(event_id("m-1"), "m-1");
        assert_eq!(event_id("odd#replay-x"), "odd#replay-x");
    }
}
