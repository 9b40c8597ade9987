//! Property tests that throw generated and random input at the three parsers a client or a
//! configuration reaches: the receiver's envelope parser, the pipeline spec validator, and
//! CEL filters and computed fields as the processor compiles and runs them. Each property:
//! never a panic, and whatever is accepted is usable by the next stage (an accepted event is
//! an envelope the processor reads; a valid spec compiles; a compiled expression runs).
//!
//! Bounded by proptest's case count (`PROPTEST_CASES`, 256 by default per property), so CI
//! runs them with the other unit tests; raise it locally for a longer run.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sluice_pipeline::AppliedPipeline;
use sluice_pipeline::batch::{Compiled, process};
use sluice_pipeline::enrich::Enricher;

use super::segment::{Request, Stamp};

const STAMP: Stamp<'static> = Stamp {
    tenant_id: "t",
    pipeline_id: "p",
    source: "web",
    received_at: "2026-11-22T12:00:00.000Z",
};

/// JSON values up to a few levels deep, with the keys a Segment event and a spec use.
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "type",
        "event",
        "userId",
        "anonymousId",
        "messageId",
        "properties",
        "traits",
        "context",
        "timestamp",
        "sentAt",
        "batch",
        "writeKey",
        "integrations",
        "name",
        "sources",
        "destinations",
        "governance",
        "webhook",
        "url",
        "filter",
        "computed",
        "settings",
        "archive",
        "retain_days",
        "pii",
        "drop",
        "x",
        "",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-zA-Z0-9 ._:/@-]{0,24}".prop_map(Value::String),
        prop::sample::select(vec![
            "track",
            "identify",
            "page",
            "screen",
            "group",
            "alias",
            "2026-11-22T12:00:00Z",
            "https://hooks.example.com/x",
            "web",
            "Order Completed"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..8).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

/// What the receiver does with a body: parse it, write each event's envelope, and check that
/// the processor can read every envelope it wrote.
fn receive(body: &[u8]) {
    let requests = [Request::batch(body), Request::single("track", body)];
    for request in requests.into_iter().flatten() {
        for event in &request.events {
            let mut out = Vec::new();
            if event.write_envelope(&STAMP, &mut out).is_ok() {
                let parsed: Value = serde_json::from_slice(&out).expect("the envelope is JSON");
                assert!(
                    parsed.get("message_id").is_some_and(Value::is_string),
                    "{parsed}"
                );
                serde_json::from_slice::<sluice_pipeline::envelope::Envelope>(&out)
                    .expect("the processor reads it");
            }
        }
    }
}

/// CEL-ish source: tokens of the language, in any order.
fn expression() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "event",
        "properties",
        "properties.revenue",
        "context.page.path",
        "type",
        "userId",
        "traits.email",
        "==",
        "!=",
        "<",
        ">=",
        "&&",
        "||",
        "!",
        "+",
        "-",
        "*",
        "/",
        "%",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        ".",
        "?",
        "in",
        "has(",
        "size(",
        "int(",
        "string(",
        "matches(",
        "startsWith(",
        "'Order Completed'",
        "\"x\"",
        "0",
        "1",
        "-1",
        "9223372036854775807",
        "1.5",
        "true",
        "false",
        "null",
        "b'x'",
        "[1, 2]",
        "{'a': 1}",
        " ",
    ]);
    prop::collection::vec(token, 1..14).prop_map(|t| t.concat())
}

fn pipeline(spec: Value) -> Option<AppliedPipeline> {
    let spec = sluice_proto::spec::parse_value(spec).ok()?;
    spec.validate().ok()?;
    Some(AppliedPipeline {
        id: "p".into(),
        name: "main".into(),
        revision: 1,
        spec,
    })
}

fn events() -> Vec<(String, Vec<u8>)> {
    let samples = [
        json!({"type": "track", "event": "Order Completed", "userId": "u-1",
               "properties": {"revenue": 42.5, "items": [1, 2]}, "context": {"page": {"path": "/"}}}),
        json!({"type": "identify", "anonymousId": "a-1", "traits": {"email": "a@example.com"}}),
        json!({"type": "page", "anonymousId": "a-2", "properties": {}}),
    ];
    samples
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let text = body.to_string();
            let request =
                Request::single(body["type"].as_str().unwrap_or("track"), text.as_bytes())
                    .expect("a sample event");
            let mut out = Vec::new();
            request.events[0]
                .write_envelope(&STAMP, &mut out)
                .expect("a sample envelope");
            (format!("e-{i}"), out)
        })
        .collect()
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_receiver(body in prop::collection::vec(any::<u8>(), 0..512)) {
        receive(&body);
    }

    #[test]
    fn generated_events_are_refused_or_readable_by_the_processor(value in json_value()) {
        let body = serde_json::to_vec(&value).expect("json");
        receive(&body);
        let batch = serde_json::to_vec(&json!({"batch": [value]})).expect("json");
        receive(&batch);
    }

    #[test]
    fn generated_specs_are_refused_or_compile(value in json_value()) {
        let text = value.to_string();
        if let Ok(spec) = sluice_proto::spec::parse_json(&text)
            && spec.validate().is_ok()
        {
            let applied = AppliedPipeline { id: "p".into(), name: "main".into(), revision: 1, spec };
            let compiled = Compiled::new(1, [&applied]);
            prop_assert!(compiled.failed.is_empty(), "{:?}", compiled.failed);
        }
    }

    #[test]
    fn cel_filters_and_computed_fields_are_refused_or_run(filter in expression(), computed in expression()) {
        let spec = json!({
            "sources": [{"name": "web"}],
            "destinations": [{
                "name": "hook",
                "webhook": {"url": "https://hooks.example.com/in"},
                "filter": filter,
                "computed": {"value": computed},
            }],
        });
        if let Some(applied) = pipeline(spec) {
            let compiled = Compiled::new(1, [&applied]);
            let output = process(&compiled, &Enricher::new(None), &events());
            prop_assert_eq!(output.processed, 3);
        }
    }
}

#[test]
fn the_generators_reach_the_accepting_paths() {
    // The properties above would pass vacuously if nothing generated were ever accepted.
    let mut event = Map::new();
    event.insert("event".into(), json!("Order Completed"));
    event.insert("userId".into(), json!("u-1"));
    receive(&serde_json::to_vec(&Value::Object(event)).expect("json"));
    let spec = json!({
        "sources": [{"name": "web"}],
        "destinations": [{"name": "hook", "webhook": {"url": "https://hooks.example.com/in"},
            "filter": "event == 'Order Completed'", "computed": {"value": "properties.revenue * 2"}}],
    });
    let applied = pipeline(spec).expect("a valid spec");
    let compiled = Compiled::new(1, [&applied]);
    assert!(compiled.failed.is_empty());
    let output = process(&compiled, &Enricher::new(None), &events());
    assert_eq!(output.processed, 3);
    assert!(
        !output.by_stage.is_empty(),
        "the order went to the destination"
    );
}
