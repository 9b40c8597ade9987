//! The event envelope: what the receiver puts on the bus for every event, as a type (the
//! receiver writes it straight to bytes; this is what reading it back gives).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One event as Sluice carries it between roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The client's `messageId`, or a UUIDv7 assigned on receipt: the idempotency key.
    pub message_id: String,
    pub tenant_id: String,
    pub pipeline_id: String,
    pub source: String,
    pub received_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// track, page, screen, identify, group or alias.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event name of a track call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The page or screen name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub traits: Map<String, Value>,
    #[serde(default)]
    pub context: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrations: Option<Value>,
}
