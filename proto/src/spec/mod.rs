//! The pipeline spec: what a person writes (YAML or JSON) to say where events come from, how
//! they are governed, where they go and how they are archived. Both planes parse it with
//! [`parse_json`]/[`parse_yaml`] and check it with [`PipelineSpec::validate`], so the control
//! plane never stores what a data plane would refuse for reasons the spec alone shows.
//!
//! Adding a governance step or a destination kind is one enum variant (or one optional field
//! on [`DestinationSpec`]) plus its arm in `validate`.

mod parse;
mod validate;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use parse::{SpecError, parse_json, parse_value, parse_yaml};
pub use validate::is_secret_name;

/// A pipeline: sources, governance, destinations, archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Where events come from. Each source gets its own ingest keys.
    pub sources: Vec<SourceSpec>,
    /// Steps applied once to every event, in order, before any destination sees it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub governance: Vec<GovernanceStep>,
    /// Where events are delivered, each with its own shaping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationSpec>,
    /// Archiving to the data plane's object store.
    #[serde(default)]
    pub archive: ArchiveSpec,
}

/// A named source of events (a website, an app, a backend service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Unique within the pipeline: lowercase letters, digits, `-` and `_`, at most 64.
    pub name: String,
    /// Per-source rate limit on the receiver. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Web origins whose pages may send this source's events through the proxy
    /// (`https://www.example.com`, `https://*.example.com` for any subdomain, or `*` for any).
    /// Browser requests from other origins are refused. Default: none (server-side only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
}

impl SourceSpec {
    /// Whether a page at `origin` (as browsers send it: `scheme://host[:port]`) may send
    /// this source's events.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|pattern| origin_matches(pattern, origin))
    }
}

/// `pattern` is `*`, an exact origin, or `scheme://*.domain[:port]` for its subdomains.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case(origin) {
        return true;
    }
    let (Some((scheme, host)), Some((origin_scheme, origin_host))) =
        (pattern.split_once("://"), origin.split_once("://"))
    else {
        return false;
    };
    let Some(domain) = host.strip_prefix("*.") else {
        return false;
    };
    let origin_host = origin_host.to_ascii_lowercase();
    scheme.eq_ignore_ascii_case(origin_scheme)
        && origin_host
            .strip_suffix(&domain.to_ascii_lowercase())
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
}

/// A token bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate, in events per second (1 to 1,000,000).
    pub events_per_second: u32,
    /// Largest burst, in events. Default: one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// One governance step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum GovernanceStep {
    /// Renames fields: `from` path → `to` path (dot-separated, e.g. `properties.sku`).
    RenameFields {
        /// Old path → new path.
        fields: BTreeMap<String, String>,
    },
    /// Removes fields (dot-separated paths).
    DropFields {
        /// Paths to remove.
        fields: Vec<String>,
    },
}

/// A destination and how events are shaped for it. Exactly one kind field is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Unique within the pipeline: lowercase letters, digits, `-` and `_`, at most 64.
    pub name: String,
    /// Only events for which this condition holds are delivered. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Output field → input path (dot-separated). Default: the event as it is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mapping: BTreeMap<String, String>,
    /// A generic HTTPS webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// The kind of a destination, borrowed from its spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DestinationKind<'a> {
    Webhook(&'a WebhookSpec),
}

impl DestinationSpec {
    /// The destination's kind; `None` when the spec sets none (validation refuses that).
    pub fn kind(&self) -> Option<DestinationKind<'_>> {
        self.webhook.as_ref().map(DestinationKind::Webhook)
    }

    /// Names of secrets this destination needs from the data plane's environment.
    pub fn secret_refs(&self) -> Vec<&str> {
        match self.kind() {
            Some(DestinationKind::Webhook(w)) => {
                w.signing_secret.iter().map(String::as_str).collect()
            }
            None => Vec::new(),
        }
    }
}

/// POSTs events as JSON to a URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `https://…` (or `http://…` for endpoints inside the customer's network).
    pub url: String,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Name of a secret (resolved on the data plane from its environment or secrets file)
    /// whose value signs each request (`X-Sluice-Signature`). Default: unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Events per request, 1 to 1,000. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
}

/// Archiving settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSpec {
    /// Whether governed events are archived. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The dataset (partition `dataset=<name>`). Default: `events`.
    #[serde(default = "default_dataset")]
    pub dataset: String,
}

impl Default for ArchiveSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            dataset: default_dataset(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_dataset() -> String {
    "events".to_owned()
}

/// The JSON Schema of [`PipelineSpec`], generated from the types.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PipelineSpec)).unwrap_or(serde_json::Value::Null)
}
