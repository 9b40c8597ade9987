//! Meta Conversions API. Customer information is normalised and SHA-256 hashed here, as Meta
//! requires, so raw e-mail addresses, phone numbers and user ids never leave the data plane.

use serde_json::{Map, Value};
use sluice_proto::spec::{MetaSpec, PiiKind};

use super::ga4::percent;
use super::{Request, Shape, event_time_ms, json_array, text};
use crate::pipeline::pii::{is_sha256_hex, normalise, sha256_hex};

const DEFAULT_ENDPOINT: &str = "https://graph.facebook.com/v21.0";

/// A hashed identifier (kept as it is when it already is a SHA-256).
fn hashed(kind: Option<PiiKind>, value: &str) -> String {
    if is_sha256_hex(value) {
        value.to_ascii_lowercase()
    } else {
        sha256_hex(&normalise(kind, value))
    }
}

/// A hashed identifier as Meta takes it: a list of one.
fn hashed_list(kind: Option<PiiKind>, value: &str) -> Value {
    Value::Array(vec![Value::String(hashed(kind, value))])
}

pub fn shape(
    spec: &MetaSpec,
    event: &Map<String, Value>,
    output: Option<Map<String, Value>>,
) -> Shape {
    let name = match (
        text(event, "type"),
        output
            .as_ref()
            .and_then(|o| o.get("event_name"))
            .and_then(Value::as_str),
    ) {
        (_, Some(mapped)) => mapped.to_owned(),
        (Some("track"), None) => text(event, "event").unwrap_or_default().to_owned(),
        (Some("page"), None) => "PageView".to_owned(),
        _ => return Shape::NotApplicable,
    };
    let Some(ms) = event_time_ms(event) else {
        return Shape::Invalid("meta: no event time".into());
    };
    let first = |paths: &[&str]| paths.iter().find_map(|p| text(event, p));
    let mut user = Map::new();
    if let Some(email) = first(&["traits.email", "properties.email", "context.traits.email"]) {
        user.insert("em".into(), hashed_list(Some(PiiKind::Email), email));
    }
    if let Some(phone) = first(&["traits.phone", "properties.phone", "context.traits.phone"]) {
        user.insert("ph".into(), hashed_list(Some(PiiKind::Phone), phone));
    }
    if let Some(id) = text(event, "user_id") {
        user.insert("external_id".into(), hashed_list(None, id));
    }
    let ip = text(event, "context.ip");
    let agent = text(event, "context.userAgent");
    if let Some(ip) = ip {
        user.insert("client_ip_address".into(), Value::from(ip));
    }
    if let Some(agent) = agent {
        user.insert("client_user_agent".into(), Value::from(agent));
    }
    let identified = ["em", "ph", "external_id"]
        .iter()
        .any(|k| user.contains_key(*k))
        || (ip.is_some() && agent.is_some());
    if !identified {
        return Shape::Invalid(
            "meta: no customer information (e-mail, phone, user id, or IP address and user agent)"
                .into(),
        );
    }
    let custom = match output {
        Some(mut output) => {
            output.remove("event_name");
            output
        }
        None => event
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    };
    let action_source = spec.action_source.as_deref().unwrap_or("website");
    // Built by moving the parts in: `json!` would copy `user` and `custom` deeply.
    let mut payload = Map::new();
    payload.insert("event_name".into(), Value::String(name));
    payload.insert("event_time".into(), Value::from(ms / 1000));
    payload.insert(
        "event_id".into(),
        Value::from(text(event, "message_id").unwrap_or_default()),
    );
    payload.insert("action_source".into(), Value::from(action_source));
    payload.insert("user_data".into(), Value::Object(user));
    payload.insert("custom_data".into(), Value::Object(custom));
    if action_source == "website"
        && let Some(url) = text(event, "context.page.url")
    {
        payload.insert("event_source_url".into(), Value::from(url));
    }
    Shape::Payload(Value::Object(payload))
}

pub fn request(spec: &MetaSpec, token: &str, batch: &[(&str, &[u8])]) -> Request {
    let base = spec
        .endpoint
        .as_deref()
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/');
    let mut body = br#"{"data":"#.to_vec();
    body.extend_from_slice(&json_array(batch.iter().map(|(_, p)| *p)));
    if let Some(code) = &spec.test_event_code {
        body.extend_from_slice(format!(r#","test_event_code":"{code}""#).as_bytes());
    }
    body.push(b'}');
    Request {
        url: format!(
            "{base}/{}/events?access_token={}",
            spec.pixel_id,
            percent(token)
        ),
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> MetaSpec {
        serde_json::from_value(json!({"pixel_id": "123", "access_token": "T"})).expect("spec")
    }

    fn event(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!()
        };
        map
    }

    #[test]
    fn customer_information_leaves_only_hashed() {
        let Shape::Payload(p) = shape(
            &spec(),
            &event(
                json!({"type": "track", "event": "Purchase", "message_id": "m-1", "user_id": "u-1",
                "timestamp": "2026-11-22T12:00:00Z",
                "traits": {"email": " Ada@Example.com", "phone": "+1 (555) 123-4567"},
                "context": {"ip": "203.0.113.9", "userAgent": "UA", "page": {"url": "https://shop.example/x"}},
                "properties": {"value": 42.5, "currency": "EUR"}}),
            ),
            None,
        ) else {
            panic!("a payload")
        };
        let text = p.to_string();
        assert!(!text.contains("Ada@") && !text.contains("555"), "{text}");
        assert_eq!(p["user_data"]["em"][0], sha256_hex("ada@example.com"));
        assert_eq!(p["user_data"]["ph"][0], sha256_hex("+15551234567"));
        assert_eq!(p["user_data"]["external_id"][0], sha256_hex("u-1"));
        assert_eq!(p["event_time"], 1_795_348_800);
        assert_eq!(p["event_id"], "m-1");
        assert_eq!(p["event_source_url"], "https://shop.example/x");
        assert_eq!(p["custom_data"], json!({"value": 42.5, "currency": "EUR"}));
    }

    #[test]
    fn events_without_customer_information_are_invalid() {
        assert!(matches!(
            shape(
                &spec(),
                &event(
                    json!({"type": "track", "event": "x", "received_at": "2026-11-22T12:00:00Z"})
                ),
                None
            ),
            Shape::Invalid(_)
        ));
        let request = request(
            &spec(),
            "a b",
            &[("m-1", br#"{"a":1}"#), ("m-2", br#"{"b":2}"#)],
        );
        assert_eq!(
            request.url,
            "https://graph.facebook.com/v21.0/123/events?access_token=a%20b"
        );
        assert_eq!(request.body, br#"{"data":[{"a":1},{"b":2}]}"#);
    }
}
