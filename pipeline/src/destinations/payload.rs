//! What every destination kind shares: the shapes of its three halves' results and small
//! helpers for writing payloads.

use std::time::Duration;

use serde_json::{Map, Value};

/// What a kind makes of one event.
pub enum Shape {
    /// The payload to deliver, as JSON.
    Payload(Vec<u8>),
    /// The kind has nothing to send for this event (a GA4 destination and an identify call).
    NotApplicable,
    /// The event lacks what the vendor requires; it goes to the DLQ unsent.
    Invalid(String),
}

/// One HTTP request, ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A vendor's answer, as delivery read it.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: u16,
    /// `Retry-After`, when the vendor sent one in seconds.
    pub retry_after: Option<Duration>,
    /// The start of the body (at most a few KiB).
    pub body: &'a [u8],
}

/// What became of a request, as the destination's kind reads its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt later.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Refused for good: to the dead-letter queue (a batch is split first, to find the
    /// events that were refused).
    DeadLetter {
        error: String,
    },
}

/// The rule of most HTTP APIs: 2xx is delivered; 408, 429 and 5xx are worth retrying; any
/// other status is refused for good.
pub fn classify_status(response: &Response<'_>) -> Verdict {
    let code = response.status;
    if (200..300).contains(&code) {
        Verdict::Delivered
    } else if code == 408 || code == 429 || (500..600).contains(&code) {
        Verdict::Retry {
            error: format!("HTTP {code}"),
            retry_after: response.retry_after,
        }
    } else {
        Verdict::DeadLetter {
            error: format!("refused with HTTP {code}"),
        }
    }
}

/// Percent-encodes a query parameter value.
pub fn percent(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Joins JSON payloads into a JSON array without parsing them again.
pub fn json_array<'a>(payloads: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, payload) in payloads.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(payload);
    }
    out.push(b']');
    out
}

/// A string field of the event, if it is one.
pub fn text<'a>(event: &'a Map<String, Value>, path: &str) -> Option<&'a str> {
    crate::path::get(event, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Unix milliseconds of the event: its `timestamp`, else when it was received.
pub fn event_time_ms(event: &Map<String, Value>) -> Option<i64> {
    text(event, "timestamp")
        .and_then(crate::time::parse_rfc3339_ms)
        .or_else(|| text(event, "received_at").and_then(crate::time::parse_rfc3339_ms))
}
