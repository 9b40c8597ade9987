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
pub(crate) use validate::url_problem;
pub use validate::{expression_problem, is_secret_name};

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

/// One governance step. Field paths are dot-separated paths into the event as Sluice carries
/// it: `event`, `user_id`, `anonymous_id`, `properties.*`, `traits.*`, `context.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum GovernanceStep {
    /// Checks each track event's `properties` against the JSON Schema (draft 2020-12) given for
    /// its event name; an event that fails goes to the `rejected` stage with the reasons.
    ValidateSchema {
        /// Event name → JSON Schema of its `properties`.
        events: BTreeMap<String, serde_json::Value>,
        /// What happens to track events whose name has no schema. Default: `allow`.
        #[serde(default)]
        unknown_events: UnknownEvents,
    },
    /// Renames fields: `from` path → `to` path (dot-separated, e.g. `properties.sku`).
    RenameFields {
        /// Old path → new path.
        fields: BTreeMap<String, String>,
    },
    /// Converts field values to a type (`"42"` → 42 for `number`); a value that cannot be
    /// converted rejects the event.
    CoerceTypes {
        /// Path → `string`, `number`, `integer` or `boolean`.
        fields: BTreeMap<String, FieldType>,
    },
    /// Normalises string values, in the order given.
    Normalize {
        /// Path → operations (`trim`, `lowercase`, `uppercase`).
        fields: BTreeMap<String, Vec<Normalization>>,
    },
    /// Classifies personal data and hashes, redacts or drops it.
    Pii {
        /// Applied in order.
        rules: Vec<PiiRule>,
    },
    /// Adds what can be derived from the event.
    Enrich {
        /// Parses `context.userAgent` into `context.user_agent` (browser, version, os,
        /// category). Default: false.
        #[serde(default)]
        user_agent: bool,
        /// Cuts `context.ip` to its /24 (IPv4) or /48 (IPv6) network. Runs after `geoip`.
        /// Default: false.
        #[serde(default)]
        truncate_ip: bool,
        /// Looks `context.ip` up in the MaxMind database the node was given (`--geoip-db`)
        /// and sets `context.geo` (country, region, city). Default: false.
        #[serde(default)]
        geoip: bool,
        /// Sets `context.session_id`: one id per visitor (user or anonymous id) until the
        /// visitor is quiet for the timeout. Default: none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<SessionSpec>,
    },
    /// Identity: stores the vendor click and browser ids an event carries (`context.ids`, as
    /// the proxy captured them, and the parameters of `context.page.url`) on the visitor's
    /// profile in the node's identity store, attaches the profile's ids to every event as
    /// `context.ids` (and the user id the profile knows as `context.ids.user_id`), and links
    /// anonymous and user ids on `identify`, `alias` and every event carrying both. Ids whose
    /// consent category the event does not grant are neither stored nor attached; a category
    /// the event denies deletes what the profile holds of it.
    Identity {
        /// The tenant's consent category names. Default: `ads` for advertising ids,
        /// `analytics` for analytics ids and campaign tags.
        #[serde(default)]
        consent: IdentityConsent,
        /// What an event without `context.consent` grants: `all` (a site without a consent
        /// tool) or `none`. Default: `all`.
        #[serde(default)]
        without_consent: WithoutConsent,
        /// Mint a Meta browser id (`_fbp`) at the proxy when the visitor has none and
        /// advertising is granted. Default: true.
        #[serde(default = "default_true")]
        mint_fbp: bool,
        /// The tenant's other domains (`example.de`, `shop.example.com`): `sluice.js` adds a
        /// two-minute, single-use token to links to them, and the proxy there keeps the
        /// visitor's id. Default: none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cross_domain: Vec<String>,
    },
    /// Removes fields (dot-separated paths).
    DropFields {
        /// Paths to remove.
        fields: Vec<String>,
    },
}

/// The consent categories that govern identity, in the tenant's own names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityConsent {
    /// The category of click ids and advertising cookies. Default: `ads`.
    #[serde(default = "default_ads")]
    pub advertising: String,
    /// The category of analytics cookies and campaign tags. Default: `analytics`.
    #[serde(default = "default_analytics")]
    pub analytics: String,
}

fn default_ads() -> String {
    "ads".into()
}

fn default_analytics() -> String {
    "analytics".into()
}

impl Default for IdentityConsent {
    fn default() -> Self {
        Self {
            advertising: default_ads(),
            analytics: default_analytics(),
        }
    }
}

/// What an event without consent grants to the `identity` step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithoutConsent {
    #[default]
    All,
    None,
}

impl PipelineSpec {
    /// The pipeline's `identity` step, if it has one.
    pub fn identity_step(&self) -> Option<&GovernanceStep> {
        self.governance
            .iter()
            .find(|s| matches!(s, GovernanceStep::Identity { .. }))
    }
}

/// What `validate_schema` does with a track event whose name has no schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownEvents {
    /// Let it through.
    #[default]
    Allow,
    /// Reject it: only planned events pass (a tracking plan).
    Reject,
}

/// A type `coerce_types` converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Number,
    Integer,
    Boolean,
}

/// A string operation of `normalize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    Trim,
    Lowercase,
    Uppercase,
}

/// A personal-data rule: declared fields, or detectors that look at every string in
/// `properties`, `traits` and `context`; exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiiRule {
    /// Paths known to hold personal data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Kinds of personal data to find wherever they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detect: Vec<PiiKind>,
    /// What to do with what the rule finds.
    pub action: PiiAction,
}

/// Personal data a detector recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// An e-mail address anywhere in a string.
    Email,
    /// A string that is a phone number (7 to 15 digits, with `+`, spaces, dots, dashes,
    /// brackets).
    Phone,
    /// A string that is an IPv4 or IPv6 address.
    Ip,
    /// A card number (13 to 19 digits passing the Luhn check) anywhere in a string.
    Card,
}

/// What a PII rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// Replaces the value (or the match) with the hex SHA-256 of its normalised form
    /// (e-mail: trimmed and lowercased; phone and card: digits; IP: canonical).
    Hash,
    /// Replaces the value (or the match) with `[redacted]`.
    Redact,
    /// Removes the field.
    Drop,
}

/// Sessions of `enrich`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// Minutes of inactivity that end a session (1 to 1440). Default: 30.
    #[serde(default = "default_session_minutes")]
    pub timeout_minutes: u32,
}

fn default_session_minutes() -> u32 {
    30
}

/// A destination and how events are shaped for it. Its kind is a catalogue definition:
/// `type` with `settings`, or one of the sections `webhook`, `ga4` and `meta` (the same
/// definitions, their settings written as a section); exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Unique within the pipeline: lowercase letters, digits, `-` and `_`, at most 64.
    pub name: String,
    /// A definition of the catalogue (`GET /api/v1/catalogue`): `tiktok`, `postgres`,
    /// `amplitude`, … Default: none (one of the sections below).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<String>,
    /// The settings the definition lists; secrets by name, resolved on the data plane.
    /// Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Consent categories an event must grant (`context.consent.categoryPreferences`, as
    /// Segment's consent tools and `sluice.consent()` send it) to reach this destination. An
    /// event that says nothing grants nothing. Default: none required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consent: Vec<String>,
    /// A CEL expression over `type`, `event`, `name`, `user_id`, `anonymous_id`,
    /// `message_id`, `source`, `properties`, `traits` and `context`; only events for which it
    /// is true are delivered. Use `has(properties.x)` before reading a field that may be
    /// missing. Default: all events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Personal-data rules for this destination only, applied to its copy of the event before
    /// mapping. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pii: Vec<PiiRule>,
    /// Output field → input path (dot-separated). Default: the event as it is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mapping: BTreeMap<String, String>,
    /// Output field → CEL expression over the same variables as `filter`. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub computed: BTreeMap<String, String>,
    /// Output fields that must be present (besides what the kind itself requires); an event
    /// without them goes to this destination's DLQ unsent. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    /// Retries of failed deliveries. Default: 5 attempts within 24 hours.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Requests in flight at once to this destination (1 to 64). Default: 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Most events per second sent to this destination. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// How long one request may take, in milliseconds (100 to 120,000). Default: 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// A generic HTTPS webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Google Analytics 4, through the Measurement Protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ga4: Option<Ga4Spec>,
    /// Meta (Facebook) Conversions API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<MetaSpec>,
}

/// Retries: attempts spread over a window with exponential backoff and full jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 to 20). Default: 5.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The window the retries spread over, in seconds (1 to 604,800). Default: 86,400.
    #[serde(default = "default_retry_window")]
    pub within_seconds: u64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            within_seconds: default_retry_window(),
        }
    }
}

fn default_attempts() -> u32 {
    5
}

fn default_retry_window() -> u64 {
    86_400
}

/// A destination's definition and its settings, the definition's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationKind {
    pub definition: &'static crate::catalogue::Definition,
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl DestinationSpec {
    /// The catalogue id, where the settings are in the spec (`settings`, `ga4`, …) and the
    /// settings as written; `None` when the spec names no kind or several (validation
    /// refuses both).
    pub fn raw_kind(
        &self,
    ) -> Option<(
        &str,
        &'static str,
        serde_json::Map<String, serde_json::Value>,
    )> {
        let section = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::Object(map)) => Some(map),
            _ => None,
        };
        let kinds = [
            self.catalogue
                .as_deref()
                .map(|id| (id, "settings", self.settings.clone().into_iter().collect())),
            section(
                self.webhook
                    .as_ref()
                    .and_then(|w| serde_json::to_value(w).ok()),
            )
            .map(|m| ("webhook", "webhook", m)),
            section(self.ga4.as_ref().and_then(|g| serde_json::to_value(g).ok()))
                .map(|m| ("ga4", "ga4", m)),
            section(
                self.meta
                    .as_ref()
                    .and_then(|m| serde_json::to_value(m).ok()),
            )
            .map(|m| ("meta", "meta", m)),
        ];
        let mut set = kinds.into_iter().flatten();
        match (set.next(), set.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// The destination's definition and settings; `None` when it names no known kind, or
    /// several.
    pub fn kind(&self) -> Option<DestinationKind> {
        let (id, _, settings) = self.raw_kind()?;
        let definition = crate::catalogue::get(id)?;
        Some(DestinationKind {
            settings: definition.with_defaults(&settings),
            definition,
        })
    }

    /// Names of secrets this destination needs from the data plane's environment.
    pub fn secret_refs(&self) -> Vec<String> {
        let Some(kind) = self.kind() else {
            return Vec::new();
        };
        kind.definition
            .secret_keys()
            .filter_map(|key| kind.settings.get(key).and_then(|v| v.as_str()))
            .map(str::to_owned)
            .collect()
    }

    /// Requests in flight at once.
    pub fn concurrency(&self) -> u32 {
        self.concurrency.unwrap_or(4)
    }

    /// How long one request may take.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.timeout_ms.unwrap_or(10_000)))
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
    /// whose value signs each request: `X-Sluice-Signature: t=<unix seconds>,v1=<hex
    /// HMAC-SHA256 of "<t>.<body>">`. Default: unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Events per request, 1 to 1,000: one sends an object, more send an array. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
}

/// Google Analytics 4 Measurement Protocol. The event name becomes a GA4 event name
/// (snake_case, at most 40 characters), `anonymous_id` the `client_id`, and the (mapped)
/// properties its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ga4Spec {
    /// `G-XXXXXXX`.
    pub measurement_id: String,
    /// Name of the secret holding the Measurement Protocol API secret.
    pub api_secret: String,
    /// Base URL. Default: `https://www.google-analytics.com` (`https://region1.google-analytics.com`
    /// keeps data in the EU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Meta Conversions API. E-mail, phone and user ids are normalised and SHA-256 hashed on the
/// data plane, as Meta requires: the raw values never leave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetaSpec {
    /// The pixel (dataset) id.
    pub pixel_id: String,
    /// Name of the secret holding the Conversions API access token.
    pub access_token: String,
    /// `website`, `app`, `email`, `phone_call`, `chat`, `physical_store`,
    /// `system_generated` or `other`. Default: `website`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_source: Option<String>,
    /// Sends to Meta's test events tool instead of the live dataset. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_event_code: Option<String>,
    /// Base URL. Default: `https://graph.facebook.com/v21.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
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
    /// Days the dataset's events are kept, counted from the day they were received (UTC);
    /// the archiver deletes older days. 1 to 36,500. When pipelines share a dataset the
    /// longest wins, and one without it keeps the dataset forever. Default: unset (forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_days: Option<u32>,
}

/// The longest `retain_days` a pipeline may set (a hundred years).
pub const MAX_RETAIN_DAYS: u32 = 36_500;

impl Default for ArchiveSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            dataset: default_dataset(),
            retain_days: None,
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
