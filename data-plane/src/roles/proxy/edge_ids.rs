//! Vendor ids at the edge: only the proxy sees the browser's first-party cookies, so it reads
//! them (and the page URL's click ids) into `context.ids` for the processor's `identity`
//! step, and sets Meta's `_fbp` and `_fbc` from the server when the browser has none, for
//! pipelines with that step. What consent does not grant is not minted here and is cut by
//! the step.

use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};
use sluice_identity::capture::{self, Ids};
use sluice_identity::consent::ConsentNames;
use sluice_identity::vendors::Category;
use sluice_proto::spec::{GovernanceStep, PipelineSpec, WithoutConsent};

/// Browsers cap cookie lifetimes at 400 days.
const MAX_AGE_SECS: u64 = 400 * 24 * 60 * 60;

/// What the proxy does for one pipeline's identity step.
pub struct EdgeIds {
    consent: ConsentNames,
    mint_fbp: bool,
    /// The visitor id the request's events carry: a minted `_fbp` is derived from it.
    visitor: String,
    /// The request's `Cookie` headers, joined.
    cookies: String,
    /// The `_fbp` minted for this request, once (or the one the visitor's profile holds).
    minted: Option<String>,
    /// `_fbc` to set: a click the browser's cookie does not hold yet.
    new_fbc: Option<String>,
}

impl EdgeIds {
    /// `None` when the pipeline has no identity step: its events are left as they are.
    pub fn new(spec: &PipelineSpec, headers: &HeaderMap, visitor: &str) -> Option<Self> {
        let Some(GovernanceStep::Identity {
            consent,
            without_consent,
            mint_fbp,
            ..
        }) = spec.identity_step()
        else {
            return None;
        };
        let cookies = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        Some(Self {
            consent: ConsentNames {
                advertising: consent.advertising.clone(),
                analytics: consent.analytics.clone(),
                grant_without_consent: *without_consent == WithoutConsent::All,
            },
            mint_fbp: *mint_fbp,
            visitor: visitor.to_owned(),
            cookies,
            minted: None,
            new_fbc: None,
        })
    }

    /// Whether the browser lacks an `_fbp` the proxy would mint: ask the store first, so a
    /// visitor known from another node or domain keeps theirs.
    pub fn would_mint(&self) -> bool {
        let mut ids = Ids::new();
        capture::from_cookies(&self.cookies, &mut ids);
        self.mint_fbp && !ids.contains_key("fbp")
    }

    /// The `_fbp` the visitor's profile holds, used instead of a new one.
    pub fn known_fbp(&mut self, fbp: String) {
        if capture::valid_value(&fbp) {
            self.minted = Some(fbp);
        }
    }

    /// Adds the ids of the page URL and the cookies to the event's `context.ids`.
    pub fn capture(&mut self, event: &mut Map<String, Value>, now_ms: i64) {
        let page = |key: &str| {
            event
                .get("context")
                .and_then(|c| c.get("page"))
                .and_then(|p| p.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let mut ids = Ids::new();
        if let Some(search) = page("search") {
            let search = if search.starts_with('?') {
                search
            } else {
                format!("?{search}")
            };
            capture::from_url(&search, now_ms, &mut ids);
        }
        if let Some(url) = page("url") {
            capture::from_url(&url, now_ms, &mut ids);
        }
        let mut from_cookies = Ids::new();
        capture::from_cookies(&self.cookies, &mut from_cookies);
        if let Some(fbc) = ids.get("fbc")
            && from_cookies
                .get("fbc")
                .is_none_or(|c| capture::meta_click(c) != capture::meta_click(fbc))
        {
            self.new_fbc = Some(fbc.clone());
        }
        capture::from_cookies(&self.cookies, &mut ids);
        let preferences = event
            .get("context")
            .and_then(|c| c.get("consent"))
            .and_then(|c| c.get("categoryPreferences"))
            .and_then(Value::as_object);
        let advertising = self
            .consent
            .decide(preferences)
            .grants(Category::Advertising);
        if !advertising {
            self.new_fbc = None;
        }
        if self.mint_fbp && advertising && !ids.contains_key("fbp") {
            let fbp = self
                .minted
                .get_or_insert_with(|| capture::mint_fbp(&self.visitor, now_ms))
                .clone();
            ids.insert("fbp".into(), fbp);
        }
        if ids.is_empty() {
            return;
        }
        let context = event
            .entry("context")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(context) = context {
            let attached = context
                .entry("ids")
                .or_insert_with(|| Value::Object(Map::new()));
            if !attached.is_object() {
                *attached = Value::Object(Map::new());
            }
            if let Value::Object(attached) = attached {
                for (name, value) in ids {
                    attached.insert(name, Value::String(value));
                }
            }
        }
    }

    /// The `Set-Cookie` values for the ids the proxy keeps for the browser: readable by the
    /// page (Meta's pixel reads them), set by the server so browsers keep them.
    pub fn cookies(&self, domain: Option<&str>) -> Vec<String> {
        let cookie = |name: &str, value: &str| {
            let mut c =
                format!("{name}={value}; Max-Age={MAX_AGE_SECS}; Path=/; Secure; SameSite=Lax");
            if let Some(domain) = domain {
                c.push_str("; Domain=");
                c.push_str(domain);
            }
            c
        };
        let mut out = Vec::new();
        if let Some(fbp) = &self.minted {
            out.push(cookie("_fbp", fbp));
        }
        if let Some(fbc) = &self.new_fbc {
            out.push(cookie("_fbc", fbc));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn spec(step: Value) -> PipelineSpec {
        serde_json::from_value(json!({"sources": [{"name": "web"}], "governance": [step]}))
            .expect("spec")
    }

    fn event(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!()
        };
        map
    }

    #[test]
    fn the_edge_reads_cookies_and_clicks_and_mints_fbp_when_granted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("_ga=GA1.1.111.222; sluice_id=v"),
        );
        let mut edge =
            EdgeIds::new(&spec(json!({"step": "identity"})), &headers, "visitor-1").expect("step");
        let mut e = event(json!({"context": {"page": {"url": "https://s.example/?fbclid=F1"}}}));
        edge.capture(&mut e, 1_000);
        let ids = &e["context"]["ids"];
        assert_eq!(ids["fbc"], "fb.1.1000.F1");
        assert_eq!(ids["ga_client_id"], "111.222");
        let fbp = ids["fbp"].as_str().expect("minted").to_owned();
        let cookies = edge.cookies(Some("example.com"));
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        assert!(cookies[0].starts_with(&format!("_fbp={fbp}; Max-Age=34560000")));
        assert!(
            cookies[1].starts_with("_fbc=fb.1.1000.F1;")
                && cookies[1].ends_with("Domain=example.com")
        );
    }

    #[test]
    fn nothing_is_minted_without_advertising_consent_or_the_step() {
        let headers = HeaderMap::new();
        let mut edge =
            EdgeIds::new(&spec(json!({"step": "identity"})), &headers, "visitor-1").expect("step");
        let mut e = event(json!({"context": {
            "page": {"search": "fbclid=F2&utm_source=x"},
            "consent": {"categoryPreferences": {"ads": false, "analytics": true}}}}));
        edge.capture(&mut e, 1);
        assert!(e["context"]["ids"].get("fbp").is_none());
        assert!(edge.cookies(None).is_empty());
        let plain = spec(json!({"step": "drop_fields", "fields": ["x"]}));
        assert!(EdgeIds::new(&plain, &headers, "visitor-1").is_none());
    }
}
