//! Destinations, run from their catalogue definitions (`sluice_proto::catalogue`): `shape`
//! turns a governed event (and the destination's mapped output) into the vendor's payload
//! with the definition's template — run by the processor; [`Resolved::request`] turns a
//! batch of payloads into one HTTP request and [`Resolved::classify`] reads the vendor's
//! answer with the definition's rules — run by delivery. Vendors differ in that last part:
//! GA4's Measurement Protocol answers 2xx to a malformed hit, Meta and TikTok put their
//! errors in the JSON body. A new vendor is a definition, not a module here.

mod http;
mod out;
mod payload;
pub mod template;
mod transforms;

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sluice_proto::catalogue::{Definition, HttpDef, WarehouseDef};
use sluice_proto::spec::{DestinationKind, DestinationSpec};

pub use http::signature;
pub use payload::{Request, Response, Shape, Verdict, classify_status};
pub use transforms::ga4_name;

/// Shapes an event for a destination's kind. `output` is the destination's mapped and
/// computed fields, or `None` when it defines none.
pub fn shape(
    kind: &DestinationKind,
    event: &Map<String, Value>,
    output: Option<Map<String, Value>>,
) -> Shape {
    let definition = kind.definition;
    let base = template::Context {
        event,
        output: output.as_ref(),
        settings: &kind.settings,
        name: None,
        item: None,
    };
    let name: Option<String> = match &definition.events {
        None => None,
        Some(events) => {
            let mapped = events
                .from_output
                .as_ref()
                .and_then(|field| output.as_ref()?.get(field)?.as_str());
            match mapped {
                Some(mapped) => Some(mapped.to_owned()),
                None => {
                    let kind = payload::text(event, "type").unwrap_or_default();
                    let Some(expression) = events.types.get(kind) else {
                        return Shape::NotApplicable;
                    };
                    match template::eval(expression, &base)
                        .and_then(|o| o.as_str().map(str::to_owned))
                    {
                        Some(name) => Some(name),
                        None => {
                            return Shape::Invalid(format!("{}: no event name", definition.id));
                        }
                    }
                }
            }
        }
    };
    let ctx = template::Context {
        name: name.as_deref(),
        ..base
    };
    let payload = template::eval(&definition.payload, &ctx)
        .unwrap_or_else(|| template::Out::Object(BTreeMap::new()));
    for requirement in &definition.require {
        let met = requirement
            .any_of
            .iter()
            .any(|set| set.paths().iter().all(|path| payload.get(path).is_some()));
        if !met {
            return Shape::Invalid(requirement.message.clone());
        }
    }
    match serde_json::to_vec(&payload) {
        Ok(bytes) => Shape::Payload(bytes),
        Err(e) => Shape::Invalid(format!("{}: {e}", definition.id)),
    }
}

/// This build's version, sent as the `user-agent` of every delivery.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A destination as delivery runs it: its spec, definition, settings and secrets, resolved
/// on this node.
pub struct Resolved {
    pub spec: DestinationSpec,
    pub kind: DestinationKind,
    /// Secret setting key → value.
    secrets: BTreeMap<String, String>,
}

impl Resolved {
    /// Resolves the destination's secrets by name with `resolve` (the node's environment and
    /// secret files); `Err` names one that this node does not have.
    pub fn new(
        spec: DestinationSpec,
        resolve: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let kind = spec
            .kind()
            .ok_or_else(|| format!("destination {} has no known kind", spec.name))?;
        let mut secrets = BTreeMap::new();
        for key in kind.definition.secret_keys() {
            if let Some(name) = kind.settings.get(key).and_then(Value::as_str) {
                let value = resolve(name)
                    .ok_or_else(|| format!("secret {name} is not set on this node"))?;
                secrets.insert(key.to_owned(), value);
            }
        }
        Ok(Self {
            spec,
            kind,
            secrets,
        })
    }

    pub fn definition(&self) -> &'static Definition {
        self.kind.definition
    }

    /// The secret of a `secret` setting.
    pub fn secret(&self, key: &str) -> Option<&str> {
        self.secrets.get(key).map(String::as_str)
    }

    /// `text` with every secret value (as it is, and percent-encoded as URLs carry it)
    /// replaced by `{secrets.<key>}`, for showing a request to a person.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (key, value) in &self.secrets {
            // A one- or two-character secret would blank out half the text; it is no
            // secret worth the name either.
            if value.len() < 4 {
                continue;
            }
            let placeholder = format!("{{secrets.{key}}}");
            out = out.replace(value.as_str(), &placeholder);
            out = out.replace(&payload::percent(value), &placeholder);
        }
        out
    }

    /// Changes when a secret's value does (without revealing it).
    pub fn secret_fingerprint(&self) -> String {
        if self.secrets.is_empty() {
            return String::new();
        }
        let joined: Vec<&str> = self.secrets.values().map(String::as_str).collect();
        crate::pii::sha256_hex(&joined.join("\u{0}"))[..16].to_owned()
    }

    /// Most events per request.
    pub fn max_batch(&self) -> usize {
        let batch = &self.definition().batch;
        batch
            .max_events_setting
            .as_ref()
            .and_then(|key| self.kind.settings.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(u64::from(batch.max_events))
            .max(1) as usize
    }

    /// Most payload bytes per request.
    pub fn max_bytes(&self) -> usize {
        self.definition().batch.max_bytes as usize
    }

    /// How long delivery waits for a batch to fill.
    pub fn max_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.definition().batch.max_wait_ms))
    }

    pub fn http(&self) -> Option<&'static HttpDef> {
        self.definition().http.as_ref()
    }

    pub fn warehouse(&self) -> Option<&'static WarehouseDef> {
        self.definition().warehouse.as_ref()
    }

    /// The value of a setting, defaults filled in.
    pub fn setting(&self, key: &str) -> Option<&Value> {
        self.kind.settings.get(key)
    }

    fn parts(&self) -> http::Parts<'_> {
        http::Parts {
            definition: self.definition(),
            settings: &self.kind.settings,
            secrets: &self.secrets,
        }
    }

    /// The OAuth 2.0 token request (URL and form), when the definition authenticates so.
    pub fn token_request(&self) -> Option<(String, Vec<(String, String)>)> {
        self.parts().token_request(self.http()?)
    }

    /// The request for a batch of (event id, payload) pairs, in order, sent at `now_ms`
    /// (Unix milliseconds; a signed webhook carries it); `token` is the OAuth 2.0 access
    /// token when the definition uses one.
    pub fn request(&self, batch: &[(&str, &[u8])], now_ms: i64, token: Option<&str>) -> Request {
        let mut request = match self.http() {
            Some(http) => self
                .parts()
                .request(http, self.max_batch(), batch, now_ms, token),
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
        http::classify(self.definition(), response, events)
    }
}

/// The event id of a single event; for a batch, a digest of its ids.
pub fn idempotency_key(batch: &[(&str, &[u8])]) -> String {
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

#[cfg(test)]
mod kinds_tests;
#[cfg(test)]
mod vendor_tests;
