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

pub const RAW: &str = "raw";
pub const ARCHIVE: &str = "archive";
pub const REJECTED: &str = "rejected";

pub fn deliver(pipeline_id: &str, destination: &str) -> String {
    format!("deliver.{pipeline_id}.{destination}")
}

pub fn dlq(pipeline_id: &str, destination: &str) -> String {
    format!("dlq.{pipeline_id}.{destination}")
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
