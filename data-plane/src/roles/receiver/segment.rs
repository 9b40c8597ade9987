//! Segment API requests, read without rebuilding them: the fields Sluice routes on are typed
//! and checked, and the free-form objects (`properties`, `traits`, `context`,
//! `integrations`) pass through as the client's own JSON text — parsed once to prove it is
//! JSON, never turned into maps and written out again. That is most of an event's bytes, and
//! why the receiver keeps up with batches on two cores.
//!
//! Only a request that fails to parse is read a second time, with the path of what is wrong,
//! so the sender's 400 names the field.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The Segment call types, each its own endpoint and `type`.
pub(crate) const CALL_TYPES: [&str; 6] = ["track", "page", "screen", "identify", "group", "alias"];

/// Longest id accepted from a client (`messageId`, `userId`, …), in bytes.
const MAX_ID: usize = 512;

static EMPTY_OBJECT: LazyLock<Box<RawValue>> =
    LazyLock::new(|| RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!()));

/// An id: a string, or a number (some libraries send numeric user ids).
#[derive(Debug, Clone, PartialEq)]
pub struct Id<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Id<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl<'de> Visitor<'de> for IdVisitor {
            type Value = Id<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Id(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Id(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Id(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

/// One Segment call as sent. Unknown top-level fields are ignored, as Segment does; a JSON
/// array is refused (serde's derived structs would take one positionally).
#[derive(Debug, Default)]
pub struct Event<'a> {
    pub kind: Option<Cow<'a, str>>,
    pub message_id: Option<Id<'a>>,
    pub user_id: Option<Id<'a>>,
    pub anonymous_id: Option<Id<'a>>,
    pub group_id: Option<Id<'a>>,
    pub previous_id: Option<Id<'a>>,
    pub event: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    pub sent_at: Option<Cow<'a, str>>,
    pub timestamp: Option<Cow<'a, str>>,
    pub properties: Option<&'a RawValue>,
    pub traits: Option<&'a RawValue>,
    pub context: Option<&'a RawValue>,
    pub integrations: Option<&'a RawValue>,
    pub write_key: Option<Cow<'a, str>>,
}

/// A string (a key or a field), borrowed from the body unless it has escapes. Read with
/// `deserialize_str`, which is also what lets the error path name the key.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Event<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = Event<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut event = Event::default();
                let text = |v: Option<Text<'de>>| v.map(|t| t.0);
                while let Some(Text(key)) = map.next_key()? {
                    match key.as_ref() {
                        "type" => event.kind = text(map.next_value()?),
                        "messageId" => event.message_id = map.next_value()?,
                        "userId" => event.user_id = map.next_value()?,
                        "anonymousId" => event.anonymous_id = map.next_value()?,
                        "groupId" => event.group_id = map.next_value()?,
                        "previousId" => event.previous_id = map.next_value()?,
                        "event" => event.event = text(map.next_value()?),
                        "name" => event.name = text(map.next_value()?),
                        "sentAt" => event.sent_at = text(map.next_value()?),
                        "timestamp" => event.timestamp = text(map.next_value()?),
                        "properties" => event.properties = map.next_value()?,
                        "traits" => event.traits = map.next_value()?,
                        "context" => event.context = map.next_value()?,
                        "integrations" => event.integrations = map.next_value()?,
                        "writeKey" => event.write_key = text(map.next_value()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(event)
            }
        }
        deserializer.deserialize_map(EventVisitor)
    }
}

/// `POST /v1/batch`: events plus what they share.
#[derive(Debug, Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    batch: Vec<Event<'a>>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<Cow<'a, str>>,
    #[serde(rename = "writeKey", borrow, default)]
    write_key: Option<Cow<'a, str>>,
}

/// A parsed request: its events, in order, and the write key its body may carry.
#[derive(Debug)]
pub struct Request<'a> {
    pub events: Vec<Event<'a>>,
    pub write_key: Option<Cow<'a, str>>,
    /// Whether it came as a batch (errors then name the event's index).
    pub batch: bool,
}

impl<'a> Request<'a> {
    /// A single call (`/v1/track` → `track`): the body is the event.
    pub fn single(call: &str, body: &'a [u8]) -> Result<Self, String> {
        let mut event: Event<'a> = parse(body)?;
        // The endpoint decides the type, whatever the body says.
        event.kind = Some(Cow::Owned(call.to_owned()));
        let write_key = event.write_key.take();
        Ok(Self {
            events: vec![event],
            write_key,
            batch: false,
        })
    }

    /// `/v1/batch`: the batch's `context` and `sentAt` apply to events that have none.
    pub fn batch(body: &'a [u8]) -> Result<Self, String> {
        let batch: Batch<'a> = parse(body)?;
        let mut events = batch.batch;
        for event in &mut events {
            if event.context.is_none() {
                event.context = batch.context;
            }
            if event.sent_at.is_none() {
                event.sent_at.clone_from(&batch.sent_at);
            }
        }
        Ok(Self {
            events,
            write_key: batch.write_key,
            batch: true,
        })
    }
}

/// Parses fast; on failure, parses again tracking the path, for a message that names it.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err("the body must be a JSON object".into());
    }
    serde_json::from_slice(body).map_err(|first| {
        if first.is_syntax() || first.is_eof() {
            return format!("malformed JSON: {first}");
        }
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
            Err(e) if e.path().iter().next().is_some() => {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                format!("{path}: {}", object_wording(&inner))
            }
            _ => object_wording(&first.to_string()),
        }
    })
}

/// Says what a batch is where serde says "struct Batch".
fn object_wording(message: &str) -> String {
    message.replace(
        "expected struct Batch",
        "expected a JSON object with a \"batch\" array",
    )
}

/// What the receiver adds to an event.
pub struct Stamp<'s> {
    pub tenant_id: &'s str,
    pub pipeline_id: &'s str,
    pub source: &'s str,
    pub received_at: &'s str,
}

/// The envelope as written to the bus; the same JSON as [`sluice_pipeline::envelope::Envelope`] reads.
#[derive(Serialize)]
struct Out<'e> {
    message_id: &'e str,
    tenant_id: &'e str,
    pipeline_id: &'e str,
    source: &'e str,
    received_at: &'e str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<&'e str>,
    #[serde(rename = "type")]
    kind: &'e str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_id: Option<&'e str>,
    properties: &'e RawValue,
    traits: &'e RawValue,
    context: &'e RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    integrations: Option<&'e RawValue>,
}

fn id<'e>(value: &'e Option<Id<'_>>, field: &str) -> Result<Option<&'e str>, String> {
    match value {
        None => Ok(None),
        Some(Id(s)) if s.is_empty() => Ok(None),
        Some(Id(s)) if s.len() <= MAX_ID => Ok(Some(s)),
        Some(_) => Err(format!("{field}: at most {MAX_ID} bytes")),
    }
}

fn object<'e>(value: Option<&'e RawValue>, field: &str) -> Result<&'e RawValue, String> {
    match value {
        None => Ok(&EMPTY_OBJECT),
        Some(raw) if raw.get().starts_with('{') => Ok(raw),
        Some(_) => Err(format!("{field}: must be an object")),
    }
}

impl Event<'_> {
    /// Checks the call and appends its envelope to `out`; returns the message id.
    pub fn write_envelope(&self, stamp: &Stamp<'_>, out: &mut Vec<u8>) -> Result<String, String> {
        let kind = match self.kind.as_deref() {
            Some(kind) if CALL_TYPES.contains(&kind) => kind,
            Some(kind) => {
                return Err(format!(
                    "type: unknown type {kind:?}; one of {}",
                    CALL_TYPES.join(", ")
                ));
            }
            None => return Err("type: required".into()),
        };
        let user_id = id(&self.user_id, "userId")?;
        let anonymous_id = id(&self.anonymous_id, "anonymousId")?;
        if user_id.is_none() && anonymous_id.is_none() {
            return Err("userId or anonymousId is required".into());
        }
        let group_id = id(&self.group_id, "groupId")?;
        let previous_id = id(&self.previous_id, "previousId")?;
        match kind {
            "track" if self.event.as_deref().is_none_or(str::is_empty) => {
                return Err("event: a track call needs an event name".into());
            }
            "group" if group_id.is_none() => return Err("groupId: a group call needs it".into()),
            "alias" if previous_id.is_none() => {
                return Err("previousId: an alias call needs it".into());
            }
            _ => {}
        }
        let message_id = match id(&self.message_id, "messageId")? {
            // The id travels as a bus message id (a NATS header), where a line break would
            // end the header.
            Some(given) if given.chars().any(char::is_control) => {
                return Err("messageId: must not contain control characters".into());
            }
            Some(given) => given.to_owned(),
            None => uuid::Uuid::now_v7().to_string(),
        };
        let envelope = Out {
            message_id: &message_id,
            tenant_id: stamp.tenant_id,
            pipeline_id: stamp.pipeline_id,
            source: stamp.source,
            received_at: stamp.received_at,
            sent_at: self.sent_at.as_deref(),
            timestamp: self.timestamp.as_deref(),
            kind,
            event: self.event.as_deref(),
            name: self.name.as_deref(),
            user_id,
            anonymous_id,
            group_id,
            previous_id,
            properties: object(self.properties, "properties")?,
            traits: object(self.traits, "traits")?,
            context: object(self.context, "context")?,
            integrations: self.integrations,
        };
        serde_json::to_writer(&mut *out, &envelope).map_err(|e| e.to_string())?;
        Ok(message_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_pipeline::envelope::Envelope;

    const STAMP: Stamp<'static> = Stamp {
        tenant_id: "t",
        pipeline_id: "p",
        source: "web",
        received_at: "2026-11-22T12:00:00.000Z",
    };

    fn envelope(call: &str, body: &str) -> Result<Envelope, String> {
        let request = Request::single(call, body.as_bytes())?;
        let mut out = Vec::new();
        let id = request.events[0].write_envelope(&STAMP, &mut out)?;
        let envelope: Envelope = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
        assert_eq!(envelope.message_id, id);
        Ok(envelope)
    }

    #[test]
    fn calls_become_envelopes_the_processor_reads() {
        let e = envelope(
            "track",
            r#"{"type":"page","event":"Signed \"Up\"","userId":42,"messageId":"m-1","properties":{"plan":"pro","n":[1,2]},"extra":true}"#,
        )
        .expect("valid");
        assert_eq!(e.kind, "track", "the endpoint decides the type");
        assert_eq!(e.event.as_deref(), Some("Signed \"Up\""));
        assert_eq!(e.user_id.as_deref(), Some("42"));
        assert_eq!(e.properties["n"][1], 2);
        assert!(e.traits.is_empty() && e.context.is_empty());
        assert_eq!((e.tenant_id.as_str(), e.source.as_str()), ("t", "web"));
        let generated = envelope("page", r#"{"anonymousId":"a"}"#).expect("valid");
        assert_eq!(generated.message_id.len(), 36, "a UUIDv7");
    }

    #[test]
    fn every_mistake_is_named() {
        for (call, body, needle) in [
            ("track", r#"{"userId":"u"}"#, "event name"),
            ("track", r#"{"event":"x"}"#, "userId or anonymousId"),
            (
                "track",
                r#"{"event":"x","userId":"","anonymousId":null}"#,
                "userId or anonymousId",
            ),
            ("fly", r#"{"userId":"u"}"#, "unknown type"),
            ("group", r#"{"userId":"u"}"#, "groupId"),
            ("alias", r#"{"userId":"u"}"#, "previousId"),
            (
                "identify",
                r#"{"userId":"u","traits":[1]}"#,
                "traits: must be an object",
            ),
            (
                "identify",
                r#"{"userId":{"x":1}}"#,
                "userId: invalid type: map",
            ),
            (
                "track",
                r#"{"userId":"u","event":5}"#,
                "event: invalid type: integer",
            ),
            ("track", r#"{"userId":"u","event":"x""#, "malformed JSON"),
            ("track", "[1]", "must be a JSON object"),
            ("track", r#"  ["u", "x"]"#, "must be a JSON object"),
        ] {
            let err = envelope(call, body).expect_err(body);
            assert!(err.contains(needle), "{body}: {err}");
        }
        let broken = r#"{"userId":"u","messageId":"a\r\nNats-Msg-Id: b"}"#;
        assert!(
            envelope("page", broken)
                .expect_err("control characters")
                .contains("messageId: must not contain control characters")
        );
        let long = format!(r#"{{"userId":"{}"}}"#, "u".repeat(MAX_ID + 1));
        assert!(
            envelope("page", &long)
                .expect_err("long")
                .contains("at most 512")
        );
    }

    #[test]
    fn batches_share_their_context_and_name_the_failing_event() {
        let body = br#"{"writeKey":"k","sentAt":"s","context":{"ip":"1.2.3.4"},"batch":[
            {"type":"track","event":"a","userId":"u"},
            {"type":"page","userId":"u","context":{"own":true},"sentAt":"mine"}]}"#;
        let request = Request::batch(body).expect("valid");
        assert_eq!(request.write_key.as_deref(), Some("k"));
        let envelopes: Vec<Envelope> = request
            .events
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                e.write_envelope(&STAMP, &mut out).expect("valid");
                serde_json::from_slice(&out).expect("json")
            })
            .collect();
        assert_eq!(envelopes[0].context["ip"], "1.2.3.4");
        assert_eq!(envelopes[0].sent_at.as_deref(), Some("s"));
        assert_eq!(envelopes[1].context["own"], true);
        assert_eq!(envelopes[1].sent_at.as_deref(), Some("mine"));

        let err = Request::batch(br#"{"batch":[{"type":"track"},{"event":7}]}"#).expect_err("bad");
        assert!(err.starts_with("batch[1].event: invalid type"), "{err}");
        for body in [&br#"{"batch":[1]}"#[..], br#"{"batch":[["track","x"]]}"#] {
            let err = Request::batch(body).expect_err("bad");
            assert!(
                err.contains("batch[0]") && err.contains("a JSON object"),
                "{err}"
            );
        }
        let err = Request::batch(br#"{"events":[]}"#).expect_err("bad");
        assert!(err.contains("missing field `batch`"), "{err}");
    }
}
