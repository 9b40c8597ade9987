//! Google Analytics 4 through the Measurement Protocol: one event per request, named the GA4
//! way, with scalar parameters.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sluice_proto::spec::Ga4Spec;

use super::payload::{
    Request, Response, Shape, Verdict, classify_status, event_time_ms, percent, text,
};
use crate::json_out::Object;

const DEFAULT_ENDPOINT: &str = "https://www.google-analytics.com";
/// GA4's limits on names and string parameter values.
const MAX_NAME: usize = 40;
const MAX_VALUE: usize = 100;

/// A GA4 event or parameter name: snake_case, starting with a letter, at most 40 characters.
pub fn ga4_name(name: &str) -> Cow<'_, str> {
    if is_ga4_name(name) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 2);
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    let mut named = if trimmed.starts_with(|c: char| c.is_ascii_alphabetic()) {
        trimmed.to_owned()
    } else {
        format!("e_{trimmed}")
    };
    // Only ASCII was written, so a byte length is a character count.
    named.truncate(MAX_NAME);
    Cow::Owned(named)
}

/// Whether a name already is what [`ga4_name`] would make of it (most property keys are).
fn is_ga4_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() <= MAX_NAME
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.last() != Some(&b'_')
        && !name.contains("__")
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The parameters, by GA4 name (a later key wins when two names meet), borrowed from the
/// event where they need no change.
fn params(source: &Map<String, Value>) -> BTreeMap<Cow<'_, str>, Cow<'_, Value>> {
    let mut params = BTreeMap::new();
    for (key, value) in source {
        let value = match value {
            Value::String(s) if s.len() <= MAX_VALUE => Cow::Borrowed(value),
            Value::String(s) => Cow::Owned(Value::String(s.chars().take(MAX_VALUE).collect())),
            Value::Number(_) | Value::Bool(_) => Cow::Borrowed(value),
            // GA4's one structured parameter: the items of an e-commerce event.
            Value::Array(_) if key == "items" => Cow::Borrowed(value),
            _ => continue,
        };
        params.insert(ga4_name(key), value);
    }
    params
}

pub fn shape(event: &Map<String, Value>, output: Option<Map<String, Value>>) -> Shape {
    let kind = text(event, "type").unwrap_or_default();
    let name = match kind {
        "track" => ga4_name(text(event, "event").unwrap_or("event")),
        "page" => Cow::Borrowed("page_view"),
        "screen" => Cow::Borrowed("screen_view"),
        _ => return Shape::NotApplicable,
    };
    // GA's own client id (from the `_ga` cookie, attached by the identity step) joins the
    // events to what gtag.js sent for the same browser.
    let Some(client_id) = text(event, "context.ids.ga_client_id")
        .or_else(|| text(event, "anonymous_id"))
        .or_else(|| text(event, "user_id"))
    else {
        return Shape::Invalid("ga4: no client_id (anonymous_id or user_id)".into());
    };
    let empty = Map::new();
    let source = match &output {
        Some(output) => output,
        None => event
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty),
    };
    let mut params = params(source);
    if kind == "page" {
        for (param, path) in [
            ("page_location", "context.page.url"),
            ("page_title", "context.page.title"),
            ("page_referrer", "context.page.referrer"),
        ] {
            if let Some(value) = text(event, path) {
                params
                    .entry(Cow::Borrowed(param))
                    .or_insert_with(|| Cow::Owned(Value::from(value)));
            }
        }
    }
    // Keys in sorted order, as a serialised map has them.
    let mut out = Vec::with_capacity(256);
    let mut payload = Object::start(&mut out);
    payload.str("client_id", client_id);
    let events = payload.key("events");
    events.push(b'[');
    let mut one = Object::start(&mut *events);
    one.str("name", &name);
    let mut written = Object::start(one.key("params"));
    for (param, value) in &params {
        written.value(param, value);
    }
    written.end();
    one.end();
    events.push(b']');
    if let Some(ms) = event_time_ms(event) {
        payload.i64("timestamp_micros", ms * 1000);
    }
    if let Some(user_id) = text(event, "user_id").or_else(|| text(event, "context.ids.user_id")) {
        payload.str("user_id", user_id);
    }
    payload.end();
    Shape::Payload(out)
}

pub fn request(spec: &Ga4Spec, api_secret: &str, batch: &[(&str, &[u8])]) -> Request {
    let base = spec
        .endpoint
        .as_deref()
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/');
    Request {
        url: format!(
            "{base}/mp/collect?measurement_id={}&api_secret={}",
            spec.measurement_id,
            percent(api_secret)
        ),
        headers: vec![("content-type".into(), "application/json".into())],
        body: batch.first().map(|(_, p)| p.to_vec()).unwrap_or_default(),
    }
}

/// The Measurement Protocol answers 2xx to every hit, malformed or not; only its validation
/// endpoint (`…/debug/mp/collect`) lists what is wrong, in `validationMessages`. A hit that
/// has such messages is refused for good: sending it again cannot help.
pub fn classify(response: &Response<'_>) -> Verdict {
    let verdict = classify_status(response);
    if verdict != Verdict::Delivered {
        return verdict;
    }
    let messages = serde_json::from_slice::<Value>(response.body)
        .ok()
        .and_then(|answer| answer.get("validationMessages").cloned());
    match messages.as_ref().and_then(Value::as_array) {
        Some(messages) if !messages.is_empty() => {
            let first = &messages[0];
            let text = first
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("invalid hit");
            let field = first.get("fieldPath").and_then(Value::as_str);
            Verdict::DeadLetter {
                error: match field {
                    Some(field) => format!("GA4 refused the hit: {field}: {text}"),
                    None => format!("GA4 refused the hit: {text}"),
                },
            }
        }
        _ => Verdict::Delivered,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!()
        };
        map
    }

    #[test]
    fn names_follow_ga4_rules() {
        assert_eq!(ga4_name("Order Completed"), "order_completed");
        assert_eq!(ga4_name("  Added -- To Cart!"), "added_to_cart");
        assert_eq!(ga4_name("3D View"), "e_3d_view");
        assert_eq!(ga4_name(&"x".repeat(60)).len(), 40);
        for name in ["order_id", "a__b", "b_", "_b", "x1", "1x", "Sku", "ok"] {
            if is_ga4_name(name) {
                assert_eq!(ga4_name(name), name, "{name} is taken as it is");
            } else {
                assert_ne!(ga4_name(name), name, "{name} is rewritten");
            }
        }
    }

    #[test]
    fn the_identity_step_s_ids_are_used_by_default() {
        let Shape::Payload(bytes) = shape(
            &event(json!({"type": "page", "anonymous_id": "a-1",
                "timestamp": "2026-11-22T12:00:00.000Z",
                "context": {"ids": {"ga_client_id": "123.456", "user_id": "u-9"}}})),
            None,
        ) else {
            panic!("a payload")
        };
        let p: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            p["client_id"], "123.456",
            "GA's own client id, as gtag.js has it"
        );
        assert_eq!(p["user_id"], "u-9", "the user the profile knows");
    }

    #[test]
    fn events_become_measurement_protocol_payloads() {
        let Shape::Payload(bytes) = shape(
            &event(
                json!({"type": "track", "event": "Order Completed", "anonymous_id": "a-1",
                "user_id": "u-1", "timestamp": "2026-11-22T12:00:00.000Z",
                "properties": {"revenue": 42.5, "Coupon Code": "X", "nested": {"no": 1},
                    "items": [{"item_id": "sku-1"}]}}),
            ),
            None,
        ) else {
            panic!("a payload")
        };
        let p: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            bytes,
            serde_json::to_vec(&p).expect("serialises"),
            "written as serialising the payload as a map would: sorted keys, compact"
        );
        assert_eq!(p["client_id"], "a-1");
        assert_eq!(p["user_id"], "u-1");
        assert_eq!(p["timestamp_micros"], 1_795_348_800_000_000_i64);
        assert_eq!(p["events"][0]["name"], "order_completed");
        assert_eq!(
            p["events"][0]["params"],
            json!({"revenue": 42.5, "coupon_code": "X", "items": [{"item_id": "sku-1"}]})
        );
        assert!(matches!(
            shape(
                &event(json!({"type": "identify", "anonymous_id": "a"})),
                None
            ),
            Shape::NotApplicable
        ));
        assert!(matches!(
            shape(&event(json!({"type": "page"})), None),
            Shape::Invalid(_)
        ));
    }
}
