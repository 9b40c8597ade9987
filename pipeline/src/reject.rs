//! Why the processor refused an event: one enum that is the `reason` label of the rejected
//! counter, the `reason_code` of an entry in the `rejected` stage, and its documentation.

use serde::{Deserialize, Serialize};

/// The class of a rejection; the entry's free text says exactly what was wrong.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The bus message is not an event envelope (not UTF-8, not a JSON object).
    BadEnvelope,
    /// The envelope names a pipeline the running configuration does not have (any more).
    UnknownPipeline,
    /// A track event whose name is not in the tracking plan, which rejects unknown events.
    UnknownEvent,
    /// The event's properties break its JSON Schema in the tracking plan.
    SchemaViolation,
    /// A field could not be converted to the type `coerce_types` asks for.
    CoercionFailed,
    /// `rename_fields` could not write the new field (its parent is not an object).
    RenameFailed,
    /// An entry written before rejections were classified.
    #[default]
    Unclassified,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        RejectReason::BadEnvelope,
        RejectReason::UnknownPipeline,
        RejectReason::UnknownEvent,
        RejectReason::SchemaViolation,
        RejectReason::CoercionFailed,
        RejectReason::RenameFailed,
        RejectReason::Unclassified,
    ];

    /// As a metric label and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadEnvelope => "bad_envelope",
            RejectReason::UnknownPipeline => "unknown_pipeline",
            RejectReason::UnknownEvent => "unknown_event",
            RejectReason::SchemaViolation => "schema_violation",
            RejectReason::CoercionFailed => "coercion_failed",
            RejectReason::RenameFailed => "rename_failed",
            RejectReason::Unclassified => "unclassified",
        }
    }
}

/// A refused event: the class and the text a person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_json_names() {
        for reason in RejectReason::ALL {
            assert_eq!(
                serde_json::to_value(reason).expect("json"),
                serde_json::Value::from(reason.as_str())
            );
        }
    }
}
