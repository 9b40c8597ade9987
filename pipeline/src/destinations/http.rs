//! A definition's HTTP half: a batch of payloads into one request, and the vendor's answer
//! into a verdict.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use sluice_proto::catalogue::{
    Auth, BodyFormat, BodyTest, Definition, Grant, HttpDef, ResponseRule, SettingKind, VerdictKind,
    status_range,
};

use super::payload::{Request, Response, Verdict, classify_status, json_array, percent};
use super::template::{self, Context, EVENTS_MARK};

/// Where a `{…}` placeholder lands: URLs percent-encode what they take (except URL
/// settings), headers take it as it is.
#[derive(Clone, Copy, PartialEq)]
enum Into {
    Url,
    Header,
}

/// A definition, its settings and its resolved secrets.
pub struct Parts<'a> {
    pub definition: &'a Definition,
    pub settings: &'a Map<String, Value>,
    pub secrets: &'a BTreeMap<String, String>,
}

impl Parts<'_> {
    fn interpolate(&self, text: &str, into: Into) -> String {
        let mut out = String::with_capacity(text.len() + 32);
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let Some(len) = rest[start..].find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let placeholder = &rest[start + 1..start + len];
            rest = &rest[start + len + 1..];
            let (value, raw) = match placeholder.split_once('.') {
                Some(("settings", key)) => {
                    let value = match self.settings.get(key) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    let url = self
                        .definition
                        .setting(key)
                        .is_some_and(|s| s.kind == SettingKind::Url);
                    (value, url)
                }
                Some(("secrets", key)) => {
                    (self.secrets.get(key).cloned().unwrap_or_default(), false)
                }
                _ => (String::new(), false),
            };
            if raw {
                // A base URL followed by a path: one slash between them.
                let value = if rest.starts_with('/') {
                    value.trim_end_matches('/')
                } else {
                    &value
                };
                out.push_str(value);
            } else if into == Into::Url {
                out.push_str(&percent(&value));
            } else {
                out.push_str(&value);
            }
        }
        out.push_str(rest);
        out
    }

    /// The request for a batch of (event id, payload) pairs; `token` is the OAuth 2.0
    /// access token when the definition uses one.
    pub fn request(
        &self,
        http: &HttpDef,
        max_batch: usize,
        batch: &[(&str, &[u8])],
        now_ms: i64,
        token: Option<&str>,
    ) -> Request {
        let payloads = || batch.iter().map(|(_, p)| *p);
        let single = || batch.first().map(|(_, p)| p.to_vec()).unwrap_or_default();
        let body = match http.body.format {
            BodyFormat::Single => single(),
            BodyFormat::Array => json_array(payloads()),
            BodyFormat::Auto if max_batch > 1 => json_array(payloads()),
            BodyFormat::Auto => single(),
            BodyFormat::Envelope => self.envelope(http, json_array(payloads())),
        };
        let mut url = self.interpolate(&http.url, Into::Url);
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        for (name, value) in &http.headers {
            headers.push((name.to_lowercase(), self.interpolate(value, Into::Header)));
        }
        if let Some(key) = &http.headers_setting
            && let Some(Value::Object(extra)) = self.settings.get(key)
        {
            for (name, value) in extra {
                headers.push((
                    name.to_lowercase(),
                    value.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        match &http.auth {
            Some(Auth::Header { name, value }) => {
                headers.push((name.to_lowercase(), self.interpolate(value, Into::Header)));
            }
            Some(Auth::Query { name, value }) => {
                let value = self.interpolate(value, Into::Header);
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&format!("{}={}", percent(name), percent(&value)));
            }
            Some(Auth::Basic { username, password }) => {
                let pair = format!(
                    "{}:{}",
                    self.interpolate(username, Into::Header),
                    self.interpolate(password, Into::Header)
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                headers.push(("authorization".into(), format!("Basic {encoded}")));
            }
            Some(Auth::Oauth2 { .. }) => {
                headers.push((
                    "authorization".into(),
                    format!("Bearer {}", token.unwrap_or_default()),
                ));
            }
            None => {}
        }
        if let Some(signed) = &http.signature
            && let Some(secret) = self.secrets.get(&signed.secret)
        {
            headers.push((
                signed.header.to_lowercase(),
                signature(secret, now_ms / 1000, &body),
            ));
        }
        Request { url, headers, body }
    }

    fn envelope(&self, http: &HttpDef, events: Vec<u8>) -> Vec<u8> {
        let empty = Map::new();
        let ctx = Context {
            event: &empty,
            output: None,
            settings: self.settings,
            name: None,
            item: None,
        };
        let Some(envelope) = http
            .body
            .envelope
            .as_ref()
            .and_then(|t| template::eval(t, &ctx))
        else {
            return events;
        };
        let written = serde_json::to_vec(&envelope).unwrap_or_default();
        let mark = format!("\"{EVENTS_MARK}\"");
        match find(&written, mark.as_bytes()) {
            Some(at) => {
                let mut body = Vec::with_capacity(written.len() + events.len());
                body.extend_from_slice(&written[..at]);
                body.extend_from_slice(&events);
                body.extend_from_slice(&written[at + mark.len()..]);
                body
            }
            None => written,
        }
    }

    /// The token request of an OAuth 2.0 definition: its URL and form.
    pub fn token_request(&self, http: &HttpDef) -> Option<(String, Vec<(String, String)>)> {
        let Some(Auth::Oauth2 {
            token_url,
            grant,
            client_id,
            client_secret,
            refresh_token,
            scope,
        }) = &http.auth
        else {
            return None;
        };
        let mut form = vec![
            (
                "grant_type".to_owned(),
                match grant {
                    Grant::ClientCredentials => "client_credentials",
                    Grant::RefreshToken => "refresh_token",
                }
                .to_owned(),
            ),
            (
                "client_id".into(),
                self.interpolate(client_id, Into::Header),
            ),
            (
                "client_secret".into(),
                self.interpolate(client_secret, Into::Header),
            ),
        ];
        if let Some(refresh) = refresh_token {
            form.push((
                "refresh_token".into(),
                self.interpolate(refresh, Into::Header),
            ));
        }
        if let Some(scope) = scope {
            form.push(("scope".into(), scope.clone()));
        }
        Some((self.interpolate(token_url, Into::Url), form))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the answer to a request of `sent` events means, by the definition's rules.
pub fn classify(definition: &Definition, response: &Response<'_>, sent: usize) -> Verdict {
    if definition.responses.is_empty() {
        return classify_status(response);
    }
    let body: Option<Value> = serde_json::from_slice(response.body).ok();
    for rule in &definition.responses {
        if rule_holds(rule, response.status, body.as_ref(), sent) {
            let error = || match &rule.error {
                Some(template) => render(template, response.status, body.as_ref(), sent),
                None => format!("HTTP {}", response.status),
            };
            return match rule.verdict {
                VerdictKind::Delivered => Verdict::Delivered,
                VerdictKind::Retry => Verdict::Retry {
                    error: error(),
                    retry_after: response.retry_after,
                },
                VerdictKind::DeadLetter => Verdict::DeadLetter {
                    error: match &rule.error {
                        Some(_) => error(),
                        None => format!("refused with HTTP {}", response.status),
                    },
                },
            };
        }
    }
    classify_status(response)
}

fn rule_holds(rule: &ResponseRule, status: u16, body: Option<&Value>, sent: usize) -> bool {
    let status_ok = rule.status.is_empty()
        || rule
            .status
            .iter()
            .filter_map(|s| status_range(s))
            .any(|(a, b)| (a..=b).contains(&status));
    status_ok && rule.body.iter().all(|test| test_holds(test, body, sent))
}

fn test_holds(test: &BodyTest, body: Option<&Value>, sent: usize) -> bool {
    let value = body.and_then(|b| field(b, &test.path));
    if let Some(exists) = test.exists {
        return value.is_some() == exists;
    }
    let Some(value) = value else {
        return false;
    };
    if let Some(want) = &test.equals {
        return same(value, want);
    }
    if let Some(other) = &test.not_equals {
        return !same(value, other);
    }
    if !test.one_of.is_empty() {
        return test.one_of.iter().any(|v| same(value, v));
    }
    if let Some(non_empty) = test.non_empty {
        let has = match value {
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => false,
        };
        return has == non_empty;
    }
    if let Some([low, high]) = test.between {
        return value.as_i64().is_some_and(|n| (low..=high).contains(&n));
    }
    if test.less_than_sent == Some(true) {
        return value.as_u64().is_some_and(|n| n < sent as u64);
    }
    false
}

/// Numbers compare by value (`1` and `1.0`), everything else as JSON.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A field of a JSON body by dot-separated path; numbers index arrays. Null is absent.
fn field<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    let mut here = body;
    for segment in path.split('.') {
        here = match here {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!here.is_null()).then_some(here)
}

/// An error template: `{status}`, `{sent}`, `{body.<path>|fallback}`, and `[…]` left out when
/// a field in it is missing.
fn render(template: &str, status: u16, body: Option<&Value>, sent: usize) -> String {
    let resolve = |name: &str| -> Option<String> {
        let (name, fallback) = match name.split_once('|') {
            Some((n, f)) => (n, Some(f)),
            None => (name, None),
        };
        let found = match name {
            "status" => Some(status.to_string()),
            "sent" => Some(sent.to_string()),
            _ => name
                .strip_prefix("body.")
                .and_then(|path| body.and_then(|b| field(b, path)))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
        };
        found.or_else(|| fallback.map(str::to_owned))
    };
    // Each `[…]` group is all or nothing; outside groups a missing field is empty.
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|c| open + c) else {
            break;
        };
        out.push_str(&fill(&rest[..open], &resolve, false).unwrap_or_default());
        if let Some(group) = fill(&rest[open + 1..close], &resolve, true) {
            out.push_str(&group);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(&fill(rest, &resolve, false).unwrap_or_default());
    out
}

/// Fills the `{…}` of a part; `None` when `strict` and a field is missing.
fn fill(part: &str, resolve: &impl Fn(&str) -> Option<String>, strict: bool) -> Option<String> {
    let mut out = String::new();
    let mut rest = part;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}').map(|e| start + e) else {
            break;
        };
        match resolve(&rest[start + 1..end]) {
            Some(value) => out.push_str(&value),
            None if strict => return None,
            None => {}
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the timestamp lets a receiver
/// refuse replays.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn error_templates_leave_out_what_is_missing() {
        let t = "Meta error [{body.error.code} ](HTTP {status}): {body.error.message|no message}";
        let with = json!({"error": {"code": 190, "message": "bad token"}});
        assert_eq!(
            render(t, 400, Some(&with), 1),
            "Meta error 190 (HTTP 400): bad token"
        );
        let without = json!({"error": {}});
        assert_eq!(
            render(t, 500, Some(&without), 1),
            "Meta error (HTTP 500): no message"
        );
        assert_eq!(render("{sent} sent", 200, None, 3), "3 sent");
    }
}
