//! The first three kinds (GA4, Meta, webhook), now catalogue definitions: these are the
//! assertions their hand-written modules had, unchanged, run against the definitions.

use serde_json::{Map, Value, json};
use sluice_proto::spec::{DestinationKind, DestinationSpec};

use super::*;
use crate::pii::sha256_hex;

fn event(value: Value) -> Map<String, Value> {
    let Value::Object(map) = value else {
        unreachable!()
    };
    map
}

fn spec(destination: Value) -> DestinationSpec {
    serde_json::from_value(destination).expect("spec")
}

fn kind(destination: Value) -> DestinationKind {
    spec(destination).kind().expect("a known kind")
}

fn ga4() -> DestinationKind {
    kind(json!({"name": "ga", "ga4": {"measurement_id": "G-ABC123", "api_secret": "GA_SECRET"}}))
}

fn meta() -> DestinationKind {
    kind(json!({"name": "fb", "meta": {"pixel_id": "123", "access_token": "T"}}))
}

fn payload(shape: Shape) -> (Vec<u8>, Value) {
    let Shape::Payload(bytes) = shape else {
        panic!("a payload")
    };
    let value = serde_json::from_slice(&bytes).expect("json");
    (bytes, value)
}

#[test]
fn ga4_uses_the_identity_step_s_ids_by_default() {
    let (_, p) = payload(shape(
        &ga4(),
        &event(json!({"type": "page", "anonymous_id": "a-1",
            "timestamp": "2026-11-22T12:00:00.000Z",
            "context": {"ids": {"ga_client_id": "123.456", "user_id": "u-9"}}})),
        None,
    ));
    assert_eq!(
        p["client_id"], "123.456",
        "GA's own client id, as gtag.js has it"
    );
    assert_eq!(p["user_id"], "u-9", "the user the profile knows");
}

#[test]
fn events_become_measurement_protocol_payloads() {
    let (bytes, p) = payload(shape(
        &ga4(),
        &event(
            json!({"type": "track", "event": "Order Completed", "anonymous_id": "a-1",
            "user_id": "u-1", "timestamp": "2026-11-22T12:00:00.000Z",
            "properties": {"revenue": 42.5, "Coupon Code": "X", "nested": {"no": 1},
                "items": [{"item_id": "sku-1"}]}}),
        ),
        None,
    ));
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
            &ga4(),
            &event(json!({"type": "identify", "anonymous_id": "a"})),
            None
        ),
        Shape::NotApplicable
    ));
    assert!(matches!(
        shape(&ga4(), &event(json!({"type": "page"})), None),
        Shape::Invalid(_)
    ));
}

#[test]
fn a_page_view_carries_its_location_and_a_long_value_is_cut() {
    let (_, p) = payload(shape(
        &ga4(),
        &event(json!({"type": "page", "anonymous_id": "a",
            "context": {"page": {"url": "https://shop.example/x", "title": "X"}},
            "properties": {"long": "y".repeat(150)}})),
        None,
    ));
    let params = &p["events"][0]["params"];
    assert_eq!(p["events"][0]["name"], "page_view");
    assert_eq!(params["page_location"], "https://shop.example/x");
    assert_eq!(params["page_title"], "X");
    assert_eq!(params["long"].as_str().map(str::len), Some(100));
}

#[test]
fn ga4_requests_and_answers() {
    let resolved = Resolved::new(
        spec(
            json!({"name": "ga", "ga4": {"measurement_id": "G-ABC123", "api_secret": "GA_SECRET",
            "endpoint": "http://127.0.0.1:9/"}}),
        ),
        |_| Some("s e/cret".into()),
    )
    .expect("resolved");
    let request = resolved.request(&[("m-1", br#"{"a":1}"#)], 0, None);
    assert_eq!(
        request.url,
        "http://127.0.0.1:9/mp/collect?measurement_id=G-ABC123&api_secret=s%20e%2Fcret"
    );
    assert_eq!(request.body, br#"{"a":1}"#);
    let answer = |body: &[u8]| {
        resolved.classify(
            &Response {
                status: 200,
                retry_after: None,
                body,
            },
            1,
        )
    };
    assert_eq!(answer(b""), Verdict::Delivered);
    assert_eq!(answer(br#"{"validationMessages":[]}"#), Verdict::Delivered);
    assert_eq!(
        answer(br#"{"validationMessages":[{"fieldPath":"events","description":"bad name"}]}"#),
        Verdict::DeadLetter {
            error: "GA4 refused the hit: events: bad name".into()
        }
    );
    assert_eq!(
        answer(br#"{"validationMessages":[{"description":"bad name"}]}"#),
        Verdict::DeadLetter {
            error: "GA4 refused the hit: bad name".into()
        }
    );
}

#[test]
fn customer_information_leaves_only_hashed() {
    let (bytes, p) = payload(shape(
        &meta(),
        &event(
            json!({"type": "track", "event": "Purchase", "message_id": "m-1", "user_id": "u-1",
            "timestamp": "2026-11-22T12:00:00Z",
            "traits": {"email": " Ada@Example.com", "phone": "+1 (555) 123-4567"},
            "context": {"ip": "203.0.113.9", "userAgent": "UA", "page": {"url": "https://shop.example/x"}},
            "properties": {"value": 42.5, "currency": "EUR"}}),
        ),
        None,
    ));
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
    assert_eq!(p["action_source"], "website");
}

#[test]
fn meta_uses_the_identity_step_s_ids_by_default() {
    let (bytes, p) = payload(shape(
        &meta(),
        &event(
            json!({"type": "page", "message_id": "m-2", "anonymous_id": "a-1",
            "timestamp": "2026-11-22T12:00:00Z",
            "context": {"ids": {"fbc": "fb.1.1.CLICK", "fbp": "fb.1.2.3", "user_id": "u-1"}}}),
        ),
        None,
    ));
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
    assert_eq!(p["event_name"], "PageView");
}

#[test]
fn a_mapped_event_name_and_custom_data_replace_the_event_s() {
    let output = event(json!({"event_name": "Lead", "value": 5}));
    let (_, p) = payload(shape(
        &meta(),
        &event(
            json!({"type": "identify", "user_id": "u", "timestamp": "2026-11-22T12:00:00Z",
            "properties": {"ignored": true}}),
        ),
        Some(output),
    ));
    assert_eq!(p["event_name"], "Lead");
    assert_eq!(p["custom_data"], json!({"value": 5}));
}

#[test]
fn events_without_customer_information_are_invalid() {
    assert!(matches!(
        shape(
            &meta(),
            &event(json!({"type": "track", "event": "x", "received_at": "2026-11-22T12:00:00Z"})),
            None
        ),
        Shape::Invalid(ref why) if why.starts_with("meta: no customer information")
    ));
    assert!(matches!(
        shape(&meta(), &event(json!({"type": "track", "event": "x", "user_id": "u"})), None),
        Shape::Invalid(ref why) if why == "meta: no event time"
    ));
    let resolved = Resolved::new(
        spec(json!({"name": "fb", "meta": {"pixel_id": "123", "access_token": "T"}})),
        |_| Some("a b".into()),
    )
    .expect("resolved");
    let request = resolved.request(&[("m-1", br#"{"a":1}"#), ("m-2", br#"{"b":2}"#)], 0, None);
    assert_eq!(
        request.url,
        "https://graph.facebook.com/v21.0/123/events?access_token=a%20b"
    );
    assert_eq!(request.body, br#"{"data":[{"a":1},{"b":2}]}"#);
    let tested = Resolved::new(
        spec(json!({"name": "fb", "meta": {"pixel_id": "123", "access_token": "T", "test_event_code": "TEST123"}})),
        |_| Some("t".into()),
    )
    .expect("resolved");
    assert_eq!(
        tested.request(&[("m-1", br#"{"a":1}"#)], 0, None).body,
        br#"{"data":[{"a":1}],"test_event_code":"TEST123"}"#
    );
}

#[test]
fn meta_answers_are_read_from_the_body() {
    let resolved = Resolved::new(
        spec(json!({"name": "fb", "meta": {"pixel_id": "123", "access_token": "T"}})),
        |_| Some("t".into()),
    )
    .expect("resolved");
    let answer = |status: u16, body: &[u8], sent: usize| {
        resolved.classify(
            &Response {
                status,
                retry_after: None,
                body,
            },
            sent,
        )
    };
    assert_eq!(
        answer(200, br#"{"events_received":2}"#, 2),
        Verdict::Delivered
    );
    assert_eq!(
        answer(200, br#"{"events_received":1}"#, 2),
        Verdict::DeadLetter {
            error: "Meta received 1 of 2 events".into()
        }
    );
    assert_eq!(
        answer(400, br#"{"error":{"code":17,"message":"rate"}}"#, 1),
        Verdict::Retry {
            error: "Meta error 17 (HTTP 400): rate".into(),
            retry_after: None
        }
    );
    assert_eq!(
        answer(
            400,
            br#"{"error":{"code":100,"message":"bad","is_transient":true}}"#,
            1
        ),
        Verdict::Retry {
            error: "Meta error 100 (HTTP 400): bad".into(),
            retry_after: None
        }
    );
    assert_eq!(
        answer(400, br#"{"error":{"code":100,"message":"bad"}}"#, 1),
        Verdict::DeadLetter {
            error: "Meta error 100 (HTTP 400): bad".into()
        }
    );
    assert_eq!(
        answer(503, br#"{"error":{"message":"down"}}"#, 1),
        Verdict::Retry {
            error: "Meta error (HTTP 503): down".into(),
            retry_after: None
        }
    );
    assert_eq!(
        answer(503, b"", 1),
        Verdict::Retry {
            error: "HTTP 503".into(),
            retry_after: None
        }
    );
}

#[test]
fn webhooks_send_the_event_and_sign_it() {
    let resolved = Resolved::new(
        spec(
            json!({"name": "hook", "webhook": {"url": "https://hooks.example/in/",
            "headers": {"X-Team": "growth"}, "signing_secret": "HOOK_SECRET", "batch_size": 10}}),
        ),
        |_| Some("s3cret".into()),
    )
    .expect("resolved");
    assert_eq!(resolved.max_batch(), 10);
    let e = event(json!({"type": "track", "event": "x", "properties": {"a": 1}}));
    let (bytes, _) = payload(shape(&resolved.kind, &e, None));
    assert_eq!(
        bytes,
        serde_json::to_vec(&e).expect("serialises"),
        "the event as it is"
    );
    let request = resolved.request(&[("m-1", &bytes)], 1_700_000_000_000, None);
    assert_eq!(
        request.url, "https://hooks.example/in/",
        "a webhook URL is kept as written"
    );
    let mut expected = b"[".to_vec();
    expected.extend_from_slice(&bytes);
    expected.push(b']');
    assert_eq!(
        request.body, expected,
        "a batching webhook always sends an array"
    );
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-team").as_deref(), Some("growth"));
    assert_eq!(
        header("x-sluice-signature"),
        Some(signature("s3cret", 1_700_000_000, &expected))
    );
    assert_eq!(header("idempotency-key").as_deref(), Some("m-1"));
    let single = Resolved::new(
        spec(json!({"name": "hook", "webhook": {"url": "https://hooks.example/in"}})),
        |_| None,
    )
    .expect("resolved");
    assert_eq!(single.request(&[("m-1", b"{}")], 0, None).body, b"{}");
    let mapped = event(json!({"order": 7}));
    let (bytes, _) = payload(shape(&single.kind, &e, Some(mapped)));
    assert_eq!(bytes, br#"{"order":7}"#, "mapped fields replace the event");
}

#[test]
fn signatures_cover_the_time_and_the_body() {
    let a = signature("s3cret", 1_700_000_000, b"{}");
    assert!(
        a.starts_with("t=1700000000,v1=") && a.len() == 16 + 64,
        "{a}"
    );
    assert_ne!(a, signature("s3cret", 1_700_000_001, b"{}"));
    assert_ne!(a, signature("s3cret", 1_700_000_000, b"[]"));
    assert_ne!(a, signature("other", 1_700_000_000, b"{}"));
}

#[test]
fn a_request_shown_to_a_person_names_its_secrets_instead_of_showing_them() {
    let resolved = Resolved::new(
        spec(
            json!({"name": "ga", "ga4": {"measurement_id": "G-ABC123", "api_secret": "GA_SECRET"}}),
        ),
        |name| (name == "GA_SECRET").then(|| "s3cr/et+value".to_owned()),
    )
    .expect("resolved");
    let request = resolved.request(&[("e1", b"{\"a\":1}".as_slice())], 0, None);
    assert!(
        request.url.contains("s3cr%2Fet%2Bvalue"),
        "the real request carries it: {}",
        request.url
    );
    let shown = resolved.redact(&request.url);
    assert!(!shown.contains("s3cr"), "{shown}");
    assert!(shown.contains("{secrets.api_secret}"), "{shown}");
    assert_eq!(
        resolved.redact("raw s3cr/et+value here"),
        "raw {secrets.api_secret} here"
    );
}
