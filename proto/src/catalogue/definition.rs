//! The definition format. Templates (`payload`, `http.body.envelope`) are JSON values in
//! which an object with `$` keys is an expression ([`super::template`]); strings in
//! `http.url`, `http.headers` and `http.auth` interpolate `{settings.<key>}` and
//! `{secrets.<key>}`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::RateLimit;

/// One vendor (or warehouse) as the catalogue lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// What a pipeline names it by (`type: tiktok`): a-z, 0-9 and `_`, as the file is named.
    pub id: String,
    /// Raised whenever what the definition sends changes; shown in the catalogue.
    pub version: u32,
    /// The vendor's product name (`TikTok Events API`).
    pub name: String,
    pub category: Category,
    /// One sentence for the catalogue page.
    pub description: String,
    /// The documentation pages the definition follows, by their title.
    pub docs: Vec<DocPage>,
    /// What a person gives when adding it; secrets are named, never entered.
    #[serde(default)]
    pub settings: Vec<Setting>,
    /// Which event types it takes and the event name each gets (`@name` in the payload).
    /// Default: every type, without a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventNames>,
    /// The payload of one event: a template over the event, the destination's mapped output
    /// (`@output`) and its settings (`@settings.<key>`).
    pub payload: Value,
    /// Payload fields an event must produce, checked in order; an event without them goes
    /// to the DLQ unsent, with the requirement's message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<Requirement>,
    /// How payloads are sent over HTTP. Exactly one of `http` and `warehouse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDef>,
    /// How payloads are written to a warehouse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<WarehouseDef>,
    #[serde(default)]
    pub batch: BatchDef,
    /// The vendor's documented rate limit, used when the destination sets none. Default:
    /// unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// How the vendor's answer is read: the first rule that matches decides; when none
    /// does, 2xx is delivered, 408, 429 and 5xx are retried (after `Retry-After` when sent)
    /// and any other status is dead-lettered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub responses: Vec<ResponseRule>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Advertising,
    Analytics,
    Messaging,
    Forwarding,
    Warehouse,
    Webhook,
}

/// A documentation page, cited by its title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocPage {
    pub title: String,
    pub url: String,
}

/// One setting of a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// The key in the destination's `settings` (a-z, 0-9 and `_`).
    pub key: String,
    /// The form's label.
    pub label: String,
    /// The form's help text. Default: none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
    #[serde(rename = "type")]
    pub kind: SettingKind,
    /// Whether it must be given. Default: false.
    #[serde(default)]
    pub required: bool,
    /// The value when it is not given. Default: none (left out of the payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// A regular expression a string value must match in full. Default: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// What a value that does not fit is told. Default: a message from the pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The values of an `enum`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// The range of an `integer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// A placeholder for the form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

/// What a setting holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettingKind {
    String,
    /// `https://…` or `http://…`; interpolated into URLs as it is.
    Url,
    /// The name of a secret the data plane resolves from its environment or secrets file.
    Secret,
    /// One of `values`.
    Enum,
    Boolean,
    Integer,
    /// Header name → value.
    Headers,
}

/// The event types a vendor takes, each with the event name it gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventNames {
    /// A mapped output field that names the event, whatever its type. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_output: Option<String>,
    /// Event type (`track`, `page`, `screen`, `identify`, `group`, `alias`) → expression
    /// for its name. A type not listed is not sent.
    pub types: BTreeMap<String, Value>,
}

/// Payload fields an event must have: any one of `any_of` (each a path, or a list of paths
/// that must all be present).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub any_of: Vec<PathSet>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PathSet {
    One(String),
    All(Vec<String>),
}

impl PathSet {
    pub fn paths(&self) -> &[String] {
        match self {
            Self::One(path) => std::slice::from_ref(path),
            Self::All(paths) => paths,
        }
    }
}

/// An HTTP request per batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDef {
    /// The URL, with `{settings.<key>}` and `{secrets.<key>}` (percent-encoded unless the
    /// setting is a URL).
    pub url: String,
    /// Request headers besides `content-type: application/json`. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A `headers` setting whose entries are added too. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_setting: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub body: Body,
    /// Signs each request. Default: unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// How a vendor authenticates requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// A header, such as `authorization: Bearer {secrets.token}`.
    Header { name: String, value: String },
    /// A query parameter, such as `access_token={secrets.token}`.
    Query { name: String, value: String },
    /// HTTP Basic.
    Basic { username: String, password: String },
    /// An OAuth 2.0 access token, fetched from `token_url` and refreshed before it
    /// expires; sent as `authorization: Bearer <token>`.
    Oauth2 {
        token_url: String,
        grant: Grant,
        client_id: String,
        client_secret: String,
        /// For the `refresh_token` grant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    ClientCredentials,
    RefreshToken,
}

/// How a batch of payloads becomes the request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// `single` (one payload per request, as it is), `array` (a JSON array of the
    /// payloads), `auto` (`single` when the batch size is one, else `array`), or `envelope`.
    /// Default: `single`.
    #[serde(default)]
    pub format: BodyFormat,
    /// For `envelope`: a template over `@settings.<key>` in which `{"$events": true}` is
    /// the array of payloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    #[default]
    Single,
    Array,
    Auto,
    Envelope,
}

/// A signature header over the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The `secret` setting whose value signs.
    pub secret: String,
    pub header: String,
    /// `sluice_v1`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
    pub scheme: SignatureScheme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    SluiceV1,
}

/// A warehouse the data plane writes to itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WarehouseDef {
    pub engine: Engine,
    /// The `secret` setting holding the connection URL.
    pub connection: String,
    /// The setting naming the table (one table per dataset).
    pub table: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Postgres,
}

/// How many events go in one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchDef {
    /// Most events per request (1 to 10,000). Default: 1.
    #[serde(default = "one")]
    pub max_events: u32,
    /// An `integer` setting that overrides `max_events`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events_setting: Option<String>,
    /// Most payload bytes per request. Default: 1,048,576.
    #[serde(default = "mebibyte")]
    pub max_bytes: u32,
    /// How long delivery waits for a batch to fill, in milliseconds (0 to 60,000).
    /// Default: 0 (sends what is there).
    #[serde(default)]
    pub max_wait_ms: u32,
}

impl Default for BatchDef {
    fn default() -> Self {
        Self {
            max_events: one(),
            max_events_setting: None,
            max_bytes: mebibyte(),
            max_wait_ms: 0,
        }
    }
}

fn one() -> u32 {
    1
}

fn mebibyte() -> u32 {
    1 << 20
}

/// One rule of response classification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseRule {
    /// Statuses it applies to: `200`, `2xx` or `400-499`. Default: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<String>,
    /// Tests of the JSON body, all of which must hold. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<BodyTest>,
    pub verdict: VerdictKind,
    /// The error recorded: `{status}`, `{sent}` and `{body.<path>}` (with `|fallback`), and
    /// `[…]` around a part left out when a field in it is missing. Default: `HTTP <status>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A test of one body field (dot-separated, array indexes as numbers); exactly one test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyTest {
    pub path: String,
    /// The field is present (true) or absent (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Vec::is_empty")]
    pub one_of: Vec<Value>,
    /// A non-empty array or object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_empty: Option<bool>,
    /// A number in this inclusive range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<[i64; 2]>,
    /// A number smaller than the events sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub less_than_sent: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Delivered,
    Retry,
    DeadLetter,
}

impl Definition {
    pub fn setting(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    /// Names of the `secret` settings.
    pub fn secret_keys(&self) -> impl Iterator<Item = &str> {
        self.settings
            .iter()
            .filter(|s| s.kind == SettingKind::Secret)
            .map(|s| s.key.as_str())
    }
}
