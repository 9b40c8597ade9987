//! The `identity` governance step: vendor ids read from the event, filtered by its consent,
//! kept on the visitor's profile and attached to the event as `context.ids`.
//!
//! A batch shares one store transaction ([`IdentityScope`]); a store that fails makes the
//! processor hand the whole batch back, so no event leaves with half of what the store knew.

use serde_json::{Map, Value};
use sluice_identity::capture::{self, Ids};
use sluice_identity::consent::ConsentNames;
use sluice_identity::graph::Observation;
use sluice_identity::{Identities, Session, StoreError, vendors};

use crate::path;

/// Most ids read from an event's own `context.ids`.
const MAX_EVENT_IDS: usize = 64;

/// One batch's use of the identity store.
pub struct IdentityScope<'a> {
    identities: Option<&'a Identities>,
    session: Option<(String, Session<'a>)>,
    /// The first store error of the batch: the batch must be processed again.
    pub error: Option<StoreError>,
    /// The store was full for a visitor of the batch (not an error: they go unstored).
    full: Option<u64>,
}

impl<'a> IdentityScope<'a> {
    pub fn new(identities: Option<&'a Identities>) -> Self {
        Self {
            identities,
            session: None,
            error: None,
            full: None,
        }
    }

    fn session(&mut self, tenant: &str) -> Option<&mut Session<'a>> {
        let identities = self.identities?;
        if self.error.is_some() {
            return None;
        }
        if self.session.as_ref().is_some_and(|(t, _)| t != tenant)
            && let Err(e) = self.commit_open()
        {
            self.error = Some(e);
            return None;
        }
        if self.session.is_none() {
            match identities.session(tenant) {
                Ok(session) => self.session = Some((tenant.to_owned(), session)),
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
            }
        }
        self.session.as_mut().map(|(_, s)| s)
    }

    fn commit_open(&mut self) -> Result<(), StoreError> {
        match self.session.take() {
            Some((_, session)) => session.commit(),
            None => Ok(()),
        }
    }

    /// Commits what the batch changed; the error to hand the batch back for, or
    /// [`StoreError::Full`] when some visitors could not be stored.
    pub fn finish(mut self) -> Option<StoreError> {
        if self.error.is_none()
            && let Err(e) = self.commit_open()
        {
            self.error = Some(e);
        }
        self.error.or(self.full.map(StoreError::Full))
    }
}

fn text<'e>(event: &'e Map<String, Value>, at: &str) -> Option<&'e str> {
    path::get(event, at)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The ids an event brings: its own `context.ids` (as the proxy captured them from cookies
/// and the URL, or as a server sent them) and the parameters of its page URL.
pub fn captured(event: &Map<String, Value>, now_ms: i64) -> Ids {
    let mut ids = Ids::new();
    for at in ["context.page.search", "context.page.url"] {
        if let Some(url) = text(event, at) {
            let search;
            let url = if at.ends_with("search") && !url.starts_with('?') {
                search = format!("?{url}");
                &search
            } else {
                url
            };
            capture::from_url(url, now_ms, &mut ids);
        }
    }
    if let Some(given) = path::get(event, "context.ids").and_then(Value::as_object) {
        for (name, value) in given.iter().take(MAX_EVENT_IDS) {
            if let Some(value) = value.as_str()
                && vendors::category(name).is_some()
                && capture::valid_value(value)
            {
                // The edge saw the click first: its `fbc` keeps the click's time.
                ids.insert(name.clone(), value.to_owned());
            }
        }
    }
    ids
}

/// Runs the step on one event.
pub fn apply(
    consent: &ConsentNames,
    scope: &mut IdentityScope<'_>,
    event: &mut Map<String, Value>,
    now_ms: i64,
) {
    let preferences =
        path::get(event, "context.consent.categoryPreferences").and_then(Value::as_object);
    let decision = consent.decide(preferences);
    let mut ids = captured(event, now_ms);
    ids.retain(|name, _| vendors::category(name).is_some_and(|c| decision.grants(c)));
    let tenant = text(event, "tenant_id").unwrap_or_default().to_owned();
    let resolved = match scope.session(&tenant) {
        Some(session) => {
            let observation = Observation {
                anonymous_id: text(event, "anonymous_id"),
                user_id: text(event, "user_id"),
                previous_id: (text(event, "type") == Some("alias"))
                    .then(|| text(event, "previous_id"))
                    .flatten(),
                ids: ids.clone(),
                revoked: decision.revoked.clone(),
                granted: decision.granted.clone(),
                consent: decision.given.clone(),
                now_ms,
            };
            match session.observe(observation) {
                Ok(resolved) => Some(resolved),
                Err(StoreError::Full(held)) => {
                    scope.full = Some(held);
                    None
                }
                Err(e) => {
                    scope.error = Some(e);
                    None
                }
            }
        }
        None => None,
    };
    let (ids, user_id) = match resolved {
        Some(resolved) => (resolved.ids, resolved.user_id),
        None => (ids, None),
    };
    let mut attached: Map<String, Value> = ids
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect();
    if let Some(user_id) = user_id {
        attached.insert("user_id".into(), Value::String(user_id));
    }
    let context = event
        .entry("context")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(context) = context {
        if attached.is_empty() {
            context.remove("ids");
        } else {
            context.insert("ids".into(), Value::Object(attached));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names() -> ConsentNames {
        ConsentNames {
            advertising: "ads".into(),
            analytics: "analytics".into(),
            grant_without_consent: true,
        }
    }

    fn event(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!()
        };
        map
    }

    #[test]
    fn without_a_store_the_event_s_own_ids_are_filtered_and_attached() {
        let mut e = event(json!({
            "tenant_id": "t", "anonymous_id": "a",
            "context": {
                "page": {"url": "https://x.example/?gclid=G&utm_source=mail"},
                "ids": {"fbp": "fb.1.1.2", "made_up": "x", "fbc": "bad value"},
                "consent": {"categoryPreferences": {"ads": false, "analytics": true}}
            }
        }));
        apply(&names(), &mut IdentityScope::new(None), &mut e, 7);
        assert_eq!(e["context"]["ids"], json!({"utm_source": "mail"}));
        let mut granted = event(json!({
            "context": {"page": {"search": "fbclid=F"}, "ids": {"fbp": "fb.1.1.2"}}
        }));
        apply(&names(), &mut IdentityScope::new(None), &mut granted, 7);
        assert_eq!(
            granted["context"]["ids"],
            json!({"fbc": "fb.1.7.F", "fbp": "fb.1.1.2"})
        );
        let mut nothing = event(json!({"context": {"ids": {"fbp": 5}}}));
        apply(&names(), &mut IdentityScope::new(None), &mut nothing, 7);
        assert!(nothing["context"].get("ids").is_none());
    }
}
