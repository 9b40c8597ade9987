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

/// How deep one event may nest objects and arrays. The receiver and the proxy refuse deeper
/// events with 400: serde_json reads at most 128 levels, so a deeper event could be neither
/// processed nor shown by the rejected and DLQ APIs.
pub const MAX_EVENT_DEPTH: usize = 64;

/// How deep `json` nests objects and arrays, counted over its bytes without parsing it
/// (brackets inside strings do not count). Invalid JSON gets a number too; parsing it is
/// what finds it invalid.
pub fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        let cases: &[(&str, usize)] = &[
            ("1", 0),
            ("{}", 1),
            (r#"{"a":[1,{"b":2}]}"#, 3),
            (r#"{"a":"[[[{{{"}"#, 1),
            (r#"{"a":"\"[[["}"#, 1),
            (r#"{"a":"\\","b":[[]]}"#, 3),
            (r#"[[],[[]],[]]"#, 3),
        ];
        for (json, want) in cases {
            assert_eq!(nesting_depth(json.as_bytes()), *want, "{json}");
        }
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(nesting_depth(deep.as_bytes()), 5000);
    }
}
