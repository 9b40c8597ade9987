//! Destination kinds. Each kind is one module with three parts: `shape` turns a governed
//! event (and the destination's mapped output) into the payload the kind delivers — run by
//! the processor; `request` turns a batch of payloads into one HTTP request and `classify`
//! reads the vendor's answer as delivered, retry or dead-letter — run by delivery. Vendors
//! differ in that last part: GA4's Measurement Protocol answers 2xx to a malformed hit (only
//! its validation endpoint says why), Meta puts its errors, and whether they are transient,
//! in the JSON body. Adding a kind is a module here, a variant in the spec and its validation.

mod ga4;
mod meta;
mod payload;
mod webhook;

use serde_json::{Map, Value};
use sluice_proto::spec::{DestinationKind, DestinationSpec};

pub use payload::{Request, Response, Shape, Verdict, classify_status};

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

/// This build's version, sent as the `user-agent` of every delivery.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A destination as delivery runs it: its spec and its secrets, resolved on this node.
pub struct Resolved {
    pub spec: DestinationSpec,
    secret: Option<String>,
}

impl Resolved {
    /// Resolves the destination's secret by name with `resolve` (the node's environment and
    /// secret files); `Err` names one that this node does not have.
    pub fn new(
        spec: DestinationSpec,
        resolve: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let secret = match spec.secret_refs().first() {
            Some(name) => Some(
                resolve(name).ok_or_else(|| format!("secret {name} is not set on this node"))?,
            ),
            None => None,
        };
        Ok(Self { spec, secret })
    }

    /// Changes when the secret's value does (without revealing it).
    pub fn secret_fingerprint(&self) -> String {
        self.secret
            .as_deref()
            .map(|s| crate::pii::sha256_hex(s)[..16].to_owned())
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

    /// The request for a batch of (event id, payload) pairs, in order, sent at `now_ms`
    /// (Unix milliseconds; a signed webhook carries it).
    pub fn request(&self, batch: &[(&str, &[u8])], now_ms: i64) -> Request {
        let mut request = match self.spec.kind() {
            Some(DestinationKind::Webhook(spec)) => {
                webhook::request(spec, self.secret.as_deref(), batch, now_ms)
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
        request
            .headers
            .push(("user-agent".into(), format!("Sluice/{}", AGENT_VERSION)));
        request
    }

    /// What the vendor's answer to a request of `events` events means.
    pub fn classify(&self, response: &Response<'_>, events: usize) -> Verdict {
        match self.spec.kind() {
            Some(DestinationKind::Ga4(_)) => ga4::classify(response),
            Some(DestinationKind::Meta(_)) => meta::classify(response, events),
            Some(DestinationKind::Webhook(_)) | None => classify_status(response),
        }
    }
}

/// The event id of a single event; for a batch, a digest of its ids.
fn idempotency_key(batch: &[(&str, &[u8])]) -> String {
    match batch {
        [(id, _)] => crate::stages::event_id(id).to_owned(),
        many => {
            let joined: Vec<&str> = many
                .iter()
                .map(|(id, _)| crate::stages::event_id(id))
                .collect();
            format!("batch-{}", &crate::pii::sha256_hex(&joined.join(","))[..32])
        }
    }
}
