//! Destination kinds. Each kind is one module with two halves: `shape` turns a governed event
//! (and the destination's mapped output) into the payload the kind delivers — run by the
//! processor — and `request` turns a batch of payloads into one HTTP request — run by
//! delivery. Adding a kind is a module here, a variant in the spec and its validation.

mod ga4;
mod meta;
mod webhook;

use serde_json::{Map, Value};
use sluice_proto::spec::{DestinationKind, DestinationSpec};

use crate::applied::SecretResolver;

/// What a kind makes of one event.
pub enum Shape {
    /// The payload to deliver, as JSON.
    Payload(Vec<u8>),
    /// The kind has nothing to send for this event (a GA4 destination and an identify call).
    NotApplicable,
    /// The event lacks what the vendor requires; it goes to the DLQ unsent.
    Invalid(String),
}

/// Shapes an event for a kind. `output` is the destination's mapped and computed fields, or
/// `None` when it defines none.
pub fn shape(
    kind: DestinationKind<'_>,
    event: &Map<String, Value>,
    output: Option<Map<String, Value>>,
) -> Shape {
    match kind {
        DestinationKind::Webhook(_) => webhook::shape(event, output),
        DestinationKind::Ga4(_) => ga4::shape(event, output),
        DestinationKind::Meta(spec) => meta::shape(spec, event, output),
    }
}

/// One HTTP request, ready to send.
#[derive(Debug)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A destination as delivery runs it: its spec and its secrets, resolved on this node.
pub struct Resolved {
    pub spec: DestinationSpec,
    secret: Option<String>,
}

impl Resolved {
    /// Resolves the destination's secret; `Err` names one that this node does not have.
    pub fn new(spec: DestinationSpec, secrets: &SecretResolver) -> Result<Self, String> {
        let secret = match spec.secret_refs().first() {
            Some(name) => Some(
                secrets
                    .resolve(name)
                    .ok_or_else(|| format!("secret {name} is not set on this node"))?,
            ),
            None => None,
        };
        Ok(Self { spec, secret })
    }

    /// Changes when the secret's value does (without revealing it).
    pub fn secret_fingerprint(&self) -> String {
        self.secret
            .as_deref()
            .map(|s| crate::pipeline::pii::sha256_hex(s)[..16].to_owned())
            .unwrap_or_default()
    }

    /// Most events per request.
    pub fn max_batch(&self) -> usize {
        match self.spec.kind() {
            Some(DestinationKind::Webhook(w)) => w.batch_size.unwrap_or(1) as usize,
            Some(DestinationKind::Meta(_)) => 100,
            Some(DestinationKind::Ga4(_)) | None => 1,
        }
    }

    /// The request for a batch of (event id, payload) pairs, in order.
    pub fn request(&self, batch: &[(&str, &[u8])]) -> Request {
        let mut request = match self.spec.kind() {
            Some(DestinationKind::Webhook(spec)) => {
                webhook::request(spec, self.secret.as_deref(), batch)
            }
            Some(DestinationKind::Ga4(spec)) => {
                ga4::request(spec, self.secret.as_deref().unwrap_or_default(), batch)
            }
            Some(DestinationKind::Meta(spec)) => {
                meta::request(spec, self.secret.as_deref().unwrap_or_default(), batch)
            }
            None => Request {
                url: String::new(),
                headers: Vec::new(),
                body: Vec::new(),
            },
        };
        // Every request says which events it carries, so a vendor (or a test server) can
        // drop a retried one.
        request
            .headers
            .push(("idempotency-key".into(), idempotency_key(batch)));
        request.headers.push((
            "user-agent".into(),
            format!("Sluice/{}", crate::AGENT_VERSION),
        ));
        request
    }
}

/// The event id of a single event; for a batch, a digest of its ids.
fn idempotency_key(batch: &[(&str, &[u8])]) -> String {
    match batch {
        [(id, _)] => crate::dlq::event_id(id).to_owned(),
        many => {
            let joined: Vec<&str> = many
                .iter()
                .map(|(id, _)| crate::dlq::event_id(id))
                .collect();
            format!(
                "batch-{}",
                &crate::pipeline::pii::sha256_hex(&joined.join(","))[..32]
            )
        }
    }
}

/// Joins JSON payloads into a JSON array without parsing them again.
fn json_array<'a>(payloads: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
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
fn text<'a>(event: &'a Map<String, Value>, path: &str) -> Option<&'a str> {
    crate::pipeline::path::get(event, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Unix milliseconds of the event: its `timestamp`, else when it was received.
fn event_time_ms(event: &Map<String, Value>) -> Option<i64> {
    text(event, "timestamp")
        .and_then(crate::pipeline::enrich::parse_rfc3339_ms)
        .or_else(|| text(event, "received_at").and_then(crate::pipeline::enrich::parse_rfc3339_ms))
}
