//! Meta Conversions API. Customer information is normalised and SHA-256 hashed here, as Meta
//! requires, so raw e-mail addresses, phone numbers and user ids never leave the data plane.

use serde_json::{Map, Value};
use sluice_proto::spec::{MetaSpec, PiiKind};

use super::payload::{
    Request, Response, Shape, Verdict, classify_status, event_time_ms, json_array, percent, text,
};
use crate::json_out::{self, Object};
use crate::pii::{is_sha256_hex, normalise, sha256_hex};

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
fn write_hashed_list(out: &mut Vec<u8>, hash: &str) {
    out.push(b'[');
    json_out::write_str(out, hash);
    out.push(b']');
}

pub fn shape(
    spec: &MetaSpec,
    event: &Map<String, Value>,
    output: Option<Map<String, Value>>,
) -> Shape {
    let mapped_name = output
        .as_ref()
        .and_then(|o| o.get("event_name"))
        .and_then(Value::as_str);
    let name = match (text(event, "type"), mapped_name) {
        (_, Some(mapped)) => mapped,
        (Some("track"), None) => text(event, "event").unwrap_or_default(),
        (Some("page"), None) => "PageView",
        _ => return Shape::NotApplicable,
    };
    let Some(ms) = event_time_ms(event) else {
        return Shape::Invalid("meta: no event time".into());
    };
    let first = |paths: &[&str]| paths.iter().find_map(|p| text(event, p));
    let email = first(&["traits.email", "properties.email", "context.traits.email"])
        .map(|email| hashed(Some(PiiKind::Email), email));
    let phone = first(&["traits.phone", "properties.phone", "context.traits.phone"])
        .map(|phone| hashed(Some(PiiKind::Phone), phone));
    // The user id the identity step knows stitches anonymous events to the user too.
    let external_id = text(event, "user_id")
        .or_else(|| text(event, "context.ids.user_id"))
        .map(|id| hashed(None, id));
    let ip = text(event, "context.ip");
    let agent = text(event, "context.userAgent");
    // Meta's own browser and click ids, as the identity step attached them.
    let fbp = text(event, "context.ids.fbp");
    let fbc = text(event, "context.ids.fbc");
    let identified = email.is_some()
        || phone.is_some()
        || external_id.is_some()
        || fbp.is_some()
        || fbc.is_some()
        || (ip.is_some() && agent.is_some());
    if !identified {
        return Shape::Invalid(
            "meta: no customer information (e-mail, phone, user id, fbp/fbc, or IP address and user agent)"
                .into(),
        );
    }
    let action_source = spec.action_source.as_deref().unwrap_or("website");
    // Written straight from the event, keys in sorted order as a serialised map has them:
    // building a `Value` first copied `properties` deeply.
    let mut out = Vec::with_capacity(512);
    let mut payload = Object::start(&mut out);
    payload.str("action_source", action_source);
    let custom = payload.key("custom_data");
    match &output {
        Some(output) => {
            let mut fields = Object::start(custom);
            for (key, value) in output.iter().filter(|(key, _)| *key != "event_name") {
                fields.value(key, value);
            }
            fields.end();
        }
        None => match event.get("properties").and_then(Value::as_object) {
            Some(properties) => json_out::write_map(custom, properties),
            None => custom.extend_from_slice(b"{}"),
        },
    }
    payload.str("event_id", text(event, "message_id").unwrap_or_default());
    payload.str("event_name", name);
    if action_source == "website"
        && let Some(url) = text(event, "context.page.url")
    {
        payload.str("event_source_url", url);
    }
    payload.i64("event_time", ms / 1000);
    let mut user = Object::start(payload.key("user_data"));
    if let Some(ip) = ip {
        user.str("client_ip_address", ip);
    }
    if let Some(agent) = agent {
        user.str("client_user_agent", agent);
    }
    // Keys in sorted order, as a serialised map has them.
    if let Some(hash) = &email {
        write_hashed_list(user.key("em"), hash);
    }
    if let Some(hash) = &external_id {
        write_hashed_list(user.key("external_id"), hash);
    }
    if let Some(fbc) = fbc {
        user.str("fbc", fbc);
    }
    if let Some(fbp) = fbp {
        user.str("fbp", fbp);
    }
    if let Some(hash) = &phone {
        write_hashed_list(user.key("ph"), hash);
    }
    user.end();
    payload.end();
    Shape::Payload(out)
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

/// Graph API error codes that mean "try again later": unknown or temporary errors (1, 2),
/// rate limits (4, 17, 32, 341, 613, 80004).
const TRANSIENT_CODES: [i64; 8] = [1, 2, 4, 17, 32, 341, 613, 80004];

/// Meta says what went wrong in the body: `{"error": {"message", "code", "is_transient", …}}`,
/// with a 400 for a rate limit as much as for a malformed event. The error's code and
/// `is_transient` decide, not the status; a 2xx that counts fewer events than were sent is
/// refused for good, so the batch is split to find the ones Meta dropped.
pub fn classify(response: &Response<'_>, events: usize) -> Verdict {
    let answer = serde_json::from_slice::<Value>(response.body).ok();
    if let Some(error) = answer.as_ref().and_then(|a| a.get("error")) {
        let code = error.get("code").and_then(Value::as_i64);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        let transient = error.get("is_transient").and_then(Value::as_bool) == Some(true)
            || code.is_some_and(|c| TRANSIENT_CODES.contains(&c));
        let error = match code {
            Some(code) => format!("Meta error {code} (HTTP {}): {message}", response.status),
            None => format!("Meta error (HTTP {}): {message}", response.status),
        };
        return if transient || response.status >= 500 {
            Verdict::Retry {
                error,
                retry_after: response.retry_after,
            }
        } else {
            Verdict::DeadLetter { error }
        };
    }
    let verdict = classify_status(response);
    if verdict == Verdict::Delivered {
        let received = answer
            .as_ref()
            .and_then(|a| a.get("events_received"))
            .and_then(Value::as_u64);
        if let Some(received) = received
            && received < events as u64
        {
            return Verdict::DeadLetter {
                error: format!("Meta received {received} of {events} events"),
            };
        }
    }
    verdict
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
        let Shape::Payload(bytes) = shape(
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
        let p: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            bytes,
            serde_json::to_vec(&p).expect("serialises"),
            "written as serialising the payload as a map would: sorted keys, compact"
        );
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
    fn the_identity_step_s_ids_are_used_by_default() {
        let Shape::Payload(bytes) = shape(
            &spec(),
            &event(
                json!({"type": "page", "message_id": "m-2", "anonymous_id": "a-1",
                "timestamp": "2026-11-22T12:00:00Z",
                "context": {"ids": {"fbc": "fb.1.1.CLICK", "fbp": "fb.1.2.3", "user_id": "u-1"}}}),
            ),
            None,
        ) else {
            panic!("a payload")
        };
        let p: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            bytes,
            serde_json::to_vec(&p).expect("serialises"),
            "sorted keys, compact"
        );
        let user = &p["user_data"];
        assert_eq!(user["fbc"], "fb.1.1.CLICK");
        assert_eq!(user["fbp"], "fb.1.2.3");
        assert_eq!(
            user["external_id"],
            json!([sha256_hex("u-1")]),
            "hashed, never raw"
        );
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
