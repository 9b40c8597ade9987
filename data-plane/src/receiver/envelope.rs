//! The event envelope: what the receiver puts on the bus for every event.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::CALL_TYPES;

/// Longest id accepted from a client (`messageId`, `userId`, …), in bytes.
const MAX_ID: usize = 512;

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

/// A Segment id field: a string, or a number as Segment's libraries sometimes send.
fn id(event: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match event.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_ID => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::String(_)) => Err(format!("{field}: at most {MAX_ID} bytes")),
        Some(_) => Err(format!("{field}: must be a string")),
    }
}

fn text(event: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match event.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{field}: must be a string")),
    }
}

fn object(event: &mut Map<String, Value>, field: &str) -> Result<Map<String, Value>, String> {
    match event.remove(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(format!("{field}: must be an object")),
    }
}

impl Envelope {
    /// Validates a Segment call and wraps it; the error says what is wrong, for a 400.
    pub fn from_segment(
        mut event: Map<String, Value>,
        tenant_id: &str,
        pipeline_id: &str,
        source: &str,
        received_at: &str,
    ) -> Result<Self, String> {
        let kind = match event.get("type") {
            Some(Value::String(kind)) if CALL_TYPES.contains(&kind.as_str()) => kind.clone(),
            Some(Value::String(kind)) => {
                return Err(format!(
                    "type: unknown type {kind:?}; one of {}",
                    CALL_TYPES.join(", ")
                ));
            }
            _ => return Err("type: required".into()),
        };
        let user_id = id(&event, "userId")?;
        let anonymous_id = id(&event, "anonymousId")?;
        if user_id.is_none() && anonymous_id.is_none() {
            return Err("userId or anonymousId is required".into());
        }
        let event_name = text(&event, "event")?;
        let group_id = id(&event, "groupId")?;
        let previous_id = id(&event, "previousId")?;
        match kind.as_str() {
            "track" if event_name.as_deref().is_none_or(str::is_empty) => {
                return Err("event: a track call needs an event name".into());
            }
            "group" if group_id.is_none() => return Err("groupId: a group call needs it".into()),
            "alias" if previous_id.is_none() => {
                return Err("previousId: an alias call needs it".into());
            }
            _ => {}
        }
        let message_id =
            id(&event, "messageId")?.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        Ok(Envelope {
            message_id,
            tenant_id: tenant_id.to_owned(),
            pipeline_id: pipeline_id.to_owned(),
            source: source.to_owned(),
            received_at: received_at.to_owned(),
            sent_at: text(&event, "sentAt")?,
            timestamp: text(&event, "timestamp")?,
            event: event_name,
            name: text(&event, "name")?,
            user_id,
            anonymous_id,
            group_id,
            previous_id,
            properties: object(&mut event, "properties")?,
            traits: object(&mut event, "traits")?,
            context: object(&mut event, "context")?,
            integrations: event.remove("integrations"),
            kind,
        })
    }
}

/// RFC 3339 in UTC with milliseconds, for a Unix time in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wrap(value: Value) -> Result<Envelope, String> {
        let Value::Object(map) = value else {
            panic!("object")
        };
        Envelope::from_segment(map, "t", "p", "web", "2026-11-22T12:00:00.000Z")
    }

    #[test]
    fn segment_calls_are_wrapped_and_checked() {
        let e = wrap(json!({"type": "track", "event": "Signed Up", "userId": 42, "messageId": "m-1", "properties": {"plan": "pro"}})).expect("valid");
        assert_eq!(
            (
                e.message_id.as_str(),
                e.user_id.as_deref(),
                e.event.as_deref()
            ),
            ("m-1", Some("42"), Some("Signed Up"))
        );
        assert_eq!(e.properties["plan"], "pro");
        let generated = wrap(json!({"type": "page", "anonymousId": "a"})).expect("valid");
        assert_eq!(generated.message_id.len(), 36, "a UUIDv7");
        for (bad, needle) in [
            (json!({"type": "track", "userId": "u"}), "event name"),
            (
                json!({"type": "track", "event": "x"}),
                "userId or anonymousId",
            ),
            (json!({"type": "fly", "userId": "u"}), "unknown type"),
            (json!({"type": "group", "userId": "u"}), "groupId"),
            (json!({"type": "alias", "userId": "u"}), "previousId"),
            (
                json!({"type": "identify", "userId": "u", "traits": [1]}),
                "traits: must be an object",
            ),
            (
                json!({"type": "identify", "userId": {"x": 1}}),
                "userId: must be a string",
            ),
        ] {
            let err = wrap(bad.clone()).expect_err("invalid");
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_345_783_123), "2026-11-22T11:09:43.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
