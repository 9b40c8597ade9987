//! Runs the catalogue's payload templates (the language is described, and checked, in
//! `sluice_proto::catalogue::template`). What an expression yields borrows from the event
//! where it can, so a payload that copies `properties` does not copy them twice.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sluice_proto::spec::PiiKind;

pub use super::out::{Context, EVENTS_MARK, Out};
use super::transforms;
use crate::pii::{is_sha256_hex, normalise, sha256_hex};

/// The objects `parts` yield, merged in order (a later key replaces an earlier one); parts
/// that yield nothing or no object are passed over.
fn merge<'a>(parts: &'a [Value], ctx: &Context<'a>) -> Option<Out<'a>> {
    let mut fields: BTreeMap<Cow<'a, str>, Out<'a>> = BTreeMap::new();
    for part in parts {
        match eval(part, ctx) {
            Some(Out::Object(object)) => fields.extend(object),
            Some(Out::Map(map) | Out::Borrowed(Value::Object(map))) => fields.extend(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Out::Borrowed(v))),
            ),
            Some(Out::Owned(Value::Object(map))) => {
                fields.extend(map.into_iter().map(|(k, v)| (Cow::Owned(k), Out::Owned(v))))
            }
            _ => {}
        }
    }
    (!fields.is_empty()).then_some(Out::Object(fields))
}

/// Evaluates a template; `None` when it yields nothing.
pub fn eval<'a>(template: &'a Value, ctx: &Context<'a>) -> Option<Out<'a>> {
    match template {
        Value::Object(object) if sluice_proto::catalogue::is_expression(object) => {
            expression(object, ctx)
        }
        Value::Object(object) => {
            let fields: BTreeMap<Cow<'a, str>, Out<'a>> = object
                .iter()
                .filter_map(|(k, v)| {
                    let key = sluice_proto::catalogue::literal_key(k);
                    Some((Cow::Borrowed(key), eval(v, ctx)?))
                })
                .collect();
            (!fields.is_empty()).then_some(Out::Object(fields))
        }
        Value::Array(items) => {
            let items: Vec<Out<'a>> = items.iter().filter_map(|v| eval(v, ctx)).collect();
            (!items.is_empty()).then_some(Out::Array(items))
        }
        scalar => Some(Out::Borrowed(scalar)),
    }
}

/// A path into the event, or `@output`, `@settings.<key>`, `@item`, `@name`, `@event`.
pub fn lookup<'a>(path: &str, ctx: &Context<'a>) -> Option<Out<'a>> {
    let found = if let Some(special) = path.strip_prefix('@') {
        let (root, rest) = match special.split_once('.') {
            Some((root, rest)) => (root, Some(rest)),
            None => (special, None),
        };
        match (root, rest) {
            ("output", None) => Out::Map(ctx.output?),
            ("output", Some(rest)) => Out::Borrowed(crate::path::get(ctx.output?, rest)?),
            ("settings", Some(key)) => Out::Borrowed(ctx.settings.get(key)?),
            ("item", None) => Out::Borrowed(ctx.item?),
            ("item", Some(rest)) => Out::Borrowed(crate::path::get(ctx.item?.as_object()?, rest)?),
            ("name", None) => Out::Owned(Value::String(ctx.name?.to_owned())),
            ("event", None) => Out::Map(ctx.event),
            _ => return None,
        }
    } else {
        Out::Borrowed(crate::path::get(ctx.event, path)?)
    };
    Some(found).filter(|out| !out.is_nothing())
}

fn expression<'a>(e: &'a Map<String, Value>, ctx: &Context<'a>) -> Option<Out<'a>> {
    let mut out = if let Some(paths) = e.get("$path") {
        match paths {
            Value::Array(paths) => paths
                .iter()
                .filter_map(Value::as_str)
                .find_map(|p| lookup(p, ctx)),
            Value::String(path) => lookup(path, ctx),
            _ => None,
        }
    } else if let Some(value) = e.get("$value") {
        Some(Out::Borrowed(value))
    } else if e.contains_key("$events") {
        return Some(Out::Events);
    } else if let Some(Value::Array(parts)) = e.get("$merge") {
        merge(parts, ctx)
    } else if e.contains_key("$time") {
        super::payload::event_time_ms(ctx.event).map(|ms| Out::Owned(Value::from(ms)))
    } else {
        None
    };
    if let Some(Value::Object(tests)) = e.get("$if") {
        let holds = tests.iter().all(|(path, want)| {
            lookup(path, ctx).and_then(|o| o.value().cloned()).as_ref() == Some(want)
        });
        if !holds {
            return None;
        }
    }
    if out.is_none()
        && let Some(default) = e.get("$default")
    {
        out = Some(Out::Borrowed(default));
    }
    if let Some(Value::Object(names)) = e.get("$names")
        && let Some(renamed) = out
            .as_ref()
            .and_then(Out::as_str)
            .and_then(|n| names.get(n))
    {
        out = Some(Out::Borrowed(renamed));
    }
    if let Some(name) = e.get("$fn").and_then(Value::as_str) {
        out = transforms::apply(name, out, ctx);
    }
    let mut out = out?;
    if let Some(format) = e.get("$time").and_then(Value::as_str) {
        let ms = if e.contains_key("$path") || e.contains_key("$value") {
            time_of(out.value()?)?
        } else {
            out.value()?.as_i64()?
        };
        out = Out::Owned(format_time(ms, format)?);
    }
    if let Some(template) = e.get("$each") {
        let items: &'a [Value] = match out {
            Out::Borrowed(Value::Array(items)) => items,
            _ => return None,
        };
        let mapped: Vec<Out<'a>> = items
            .iter()
            .filter_map(|item| {
                eval(
                    template,
                    &Context {
                        item: Some(item),
                        ..*ctx
                    },
                )
            })
            .collect();
        out = Out::Array(mapped);
    }
    if let Some(Value::Array(keys)) = e.get("$omit") {
        let omit = |k: &str| keys.iter().any(|o| o.as_str() == Some(k));
        let map: &'a Map<String, Value> = match out {
            Out::Map(map) => map,
            Out::Borrowed(Value::Object(map)) => map,
            other => return Some(other),
        };
        out = Out::Object(
            map.iter()
                .filter(|(k, _)| !omit(k))
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Out::Borrowed(v)))
                .collect(),
        );
    }
    if let Some(kind) = e.get("$hash").and_then(Value::as_str) {
        let text = match out.value()? {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Number(n) => Cow::Owned(n.to_string()),
            _ => return None,
        };
        out = Out::Owned(Value::String(hashed(kind, &text)));
    }
    if let Some(kind) = e.get("$as").and_then(Value::as_str) {
        out = convert(out, kind)?;
    }
    Some(out)
}

/// A hashed identifier (kept as it is when it already is a SHA-256).
pub fn hashed(kind: &str, value: &str) -> String {
    if is_sha256_hex(value.trim()) {
        return value.trim().to_ascii_lowercase();
    }
    match kind {
        "email" => sha256_hex(&normalise(Some(PiiKind::Email), value)),
        "phone" => sha256_hex(&normalise(Some(PiiKind::Phone), value)),
        "exact" => sha256_hex(value),
        _ => sha256_hex(&normalise(None, value)),
    }
}

fn convert<'a>(out: Out<'a>, kind: &str) -> Option<Out<'a>> {
    if kind == "list" {
        return Some(Out::Array(vec![out]));
    }
    let value = out.value()?;
    let converted = match (kind, value) {
        ("string", Value::String(_))
        | ("number", Value::Number(_))
        | ("boolean", Value::Bool(_)) => {
            return Some(out);
        }
        ("string", Value::Number(n)) => Value::String(n.to_string()),
        ("string", Value::Bool(b)) => Value::String(b.to_string()),
        ("number", Value::String(s)) => Value::from(s.trim().parse::<f64>().ok()?),
        ("integer", Value::Number(n)) => Value::from(
            n.as_i64()
                .or_else(|| n.as_f64().map(|f| f.round() as i64))?,
        ),
        ("integer", Value::String(s)) => Value::from(s.trim().parse::<i64>().ok()?),
        ("boolean", Value::String(s)) => Value::Bool(match s.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return None,
        }),
        _ => return None,
    };
    Some(Out::Owned(converted))
}

/// Unix milliseconds from an RFC 3339 string or a number (milliseconds when it is past
/// 10^11, else seconds).
fn time_of(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => crate::time::parse_rfc3339_ms(s),
        Value::Number(n) => {
            let n = n.as_f64()?;
            Some(if n.abs() >= 1e11 {
                n as i64
            } else {
                (n * 1000.0) as i64
            })
        }
        _ => None,
    }
}

fn format_time(ms: i64, format: &str) -> Option<Value> {
    Some(match format {
        "unix_seconds" => Value::from(ms.div_euclid(1000)),
        "unix_millis" => Value::from(ms),
        "unix_micros" => Value::from(ms * 1000),
        "rfc3339" => Value::String(crate::time::rfc3339(ms)),
        "rfc3339_seconds" => {
            let full = crate::time::rfc3339(ms);
            // `…T12:00:00.000Z` without its fraction.
            Value::String(match full.rsplit_once('.') {
                Some((seconds, _)) => format!("{seconds}Z"),
                None => full,
            })
        }
        "google_ads" => {
            let full = crate::time::rfc3339(ms);
            let (date, rest) = full.split_once('T')?;
            Value::String(format!("{date} {}+00:00", rest.get(..8)?))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(template: Value, event: Value) -> Option<Value> {
        let event = event.as_object().cloned().unwrap_or_default();
        let settings = json!({"pixel": "P1", "mode": "live"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let ctx = Context {
            event: &event,
            output: None,
            settings: &settings,
            name: Some("Purchase"),
            item: None,
        };
        eval(&template, &ctx).map(|o| serde_json::to_value(&o).expect("serialises"))
    }

    #[test]
    fn merged_objects_take_literal_dollar_keys_and_later_keys_win() {
        let event = json!({"message_id": "m1", "user_id": "u1",
            "properties": {"plan": "pro", "time": "overridden", "nested": {"a": 1}}});
        let template = json!({"$merge": [
            {"$path": "properties"},
            {"time": {"$value": 7}, "$$insert_id": {"$path": "message_id"}, "distinct_id": {"$path": "user_id"}},
            {"$path": "properties.missing"},
        ]});
        assert_eq!(
            run(template, event.clone()),
            Some(
                json!({"plan": "pro", "time": 7, "nested": {"a": 1}, "$insert_id": "m1", "distinct_id": "u1"})
            )
        );
        // A literal object of `$$` keys only is not an expression.
        assert_eq!(
            run(json!({"$$os": {"$value": "Linux"}}), event.clone()),
            Some(json!({"$os": "Linux"}))
        );
        assert_eq!(run(json!({"$merge": [{"$path": "nope"}]}), event), None);
    }

    #[test]
    fn expressions_follow_their_documented_order() {
        let event = json!({"type": "track", "event": "Order Completed", "timestamp": "2026-11-22T12:00:00.250Z",
            "traits": {"email": " Ada@Example.com "}, "properties": {"total": "42.5", "empty": "",
            "products": [{"sku": "a", "qty": 2}, {"sku": "b"}]}});
        let cases = [
            (
                json!({"$path": ["properties.empty", "properties.total"], "$as": "number"}),
                Some(json!(42.5)),
            ),
            (json!({"$path": "properties.nope"}), None),
            (
                json!({"$path": "properties.nope", "$default": "x"}),
                Some(json!("x")),
            ),
            (
                json!({"$path": "event", "$names": {"Order Completed": "CompletePayment"}}),
                Some(json!("CompletePayment")),
            ),
            (
                json!({"$path": "event", "$fn": "snake_case"}),
                Some(json!("order_completed")),
            ),
            (json!({"$time": "unix_seconds"}), Some(json!(1_795_348_800))),
            (
                json!({"$time": "unix_millis"}),
                Some(json!(1_795_348_800_250_i64)),
            ),
            (
                json!({"$time": "rfc3339_seconds"}),
                Some(json!("2026-11-22T12:00:00Z")),
            ),
            (
                json!({"$time": "google_ads"}),
                Some(json!("2026-11-22 12:00:00+00:00")),
            ),
            (
                json!({"$path": "traits.email", "$hash": "email", "$as": "list"}),
                Some(json!([sha256_hex("ada@example.com")])),
            ),
            (
                json!({"$path": "properties.products", "$each": {"id": {"$path": "@item.sku"}, "n": {"$path": "@item.qty", "$default": 1}}}),
                Some(json!([{"id": "a", "n": 2}, {"id": "b", "n": 1}])),
            ),
            (
                json!({"$path": "properties", "$omit": ["products", "empty"]}),
                Some(json!({"total": "42.5"})),
            ),
            (json!({"$path": "@settings.pixel"}), Some(json!("P1"))),
            (json!({"$path": "@name"}), Some(json!("Purchase"))),
            (
                json!({"$value": "web", "$if": {"@settings.mode": "test"}}),
                None,
            ),
            (
                json!({"$value": "web", "$if": {"@settings.mode": "live"}}),
                Some(json!("web")),
            ),
            // A literal object left empty is left out; one with a field stays.
            (
                json!({"a": {"b": {"$path": "nope"}}, "c": 1}),
                Some(json!({"c": 1})),
            ),
        ];
        for (template, want) in cases {
            assert_eq!(run(template.clone(), event.clone()), want, "{template}");
        }
    }

    #[test]
    fn payload_paths_reach_into_what_was_built() {
        let event = json!({"user_id": "u"});
        let event = event.as_object().cloned().unwrap_or_default();
        let settings = Map::new();
        let ctx = Context {
            event: &event,
            output: None,
            settings: &settings,
            name: None,
            item: None,
        };
        let template = json!({"user": {"ids": [{"$path": "user_id"}]}});
        let out = eval(&template, &ctx).expect("a payload");
        assert_eq!(
            out.get("user.ids.0")
                .and_then(|o| o.as_str().map(str::to_owned)),
            Some("u".into())
        );
        assert!(out.get("user.email").is_none());
    }
}
