//! Governance: the steps every event of a pipeline goes through once, in the spec's order.
//! A step that cannot accept an event says why; the processor puts it on the `rejected`
//! stage with that reason.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use sluice_proto::spec::{FieldType, GovernanceStep, Normalization, PiiRule, UnknownEvents};

use crate::enrich::Enricher;
use crate::identity::IdentityScope;
use crate::reject::{RejectReason, Rejection};
use crate::{path, pii};

/// Schema errors quoted in a rejection, at most.
const MAX_SCHEMA_ERRORS: usize = 5;

/// A governance step, ready to run.
pub enum Step {
    Schema {
        by_event: HashMap<String, jsonschema::Validator>,
        reject_unknown: bool,
    },
    Rename(Vec<(String, String)>),
    Coerce(Vec<(String, FieldType)>),
    Normalize(Vec<(String, Vec<Normalization>)>),
    Pii(Vec<PiiRule>),
    Enrich {
        user_agent: bool,
        truncate_ip: bool,
        geoip: bool,
        session_minutes: Option<u32>,
    },
    Drop(Vec<String>),
    Identity(sluice_identity::consent::ConsentNames),
}

/// Compiles the spec's steps (JSON Schemas once, not per event).
pub fn compile(steps: &[GovernanceStep]) -> Result<Vec<Step>, String> {
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            Ok(match step {
                GovernanceStep::ValidateSchema {
                    events,
                    unknown_events,
                } => Step::Schema {
                    by_event: events
                        .iter()
                        .map(|(name, schema)| {
                            jsonschema::validator_for(schema)
                                .map(|v| (name.clone(), v))
                                .map_err(|e| format!("governance[{i}].events.{name}: {e}"))
                        })
                        .collect::<Result<_, String>>()?,
                    reject_unknown: *unknown_events == UnknownEvents::Reject,
                },
                GovernanceStep::RenameFields { fields } => {
                    Step::Rename(fields.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
                }
                GovernanceStep::CoerceTypes { fields } => {
                    Step::Coerce(fields.iter().map(|(p, t)| (p.clone(), *t)).collect())
                }
                GovernanceStep::Normalize { fields } => Step::Normalize(
                    fields
                        .iter()
                        .map(|(p, ops)| (p.clone(), ops.clone()))
                        .collect(),
                ),
                GovernanceStep::Pii { rules } => Step::Pii(rules.clone()),
                GovernanceStep::Enrich {
                    user_agent,
                    truncate_ip,
                    geoip,
                    session,
                } => Step::Enrich {
                    user_agent: *user_agent,
                    truncate_ip: *truncate_ip,
                    geoip: *geoip,
                    session_minutes: session.as_ref().map(|s| s.timeout_minutes),
                },
                GovernanceStep::DropFields { fields } => Step::Drop(fields.clone()),
                GovernanceStep::Identity {
                    consent,
                    without_consent,
                    ..
                } => Step::Identity(sluice_identity::consent::ConsentNames {
                    advertising: consent.advertising.clone(),
                    analytics: consent.analytics.clone(),
                    grant_without_consent: *without_consent
                        == sluice_proto::spec::WithoutConsent::All,
                }),
            })
        })
        .collect()
}

/// Runs every step on an event; `Err` is why it is rejected.
pub fn run(
    steps: &[Step],
    enricher: &Enricher,
    identity: &mut IdentityScope<'_>,
    event: &mut Map<String, Value>,
) -> Result<(), Rejection> {
    for step in steps {
        match step {
            Step::Schema {
                by_event,
                reject_unknown,
            } => check_schema(by_event, *reject_unknown, event)?,
            Step::Rename(fields) => {
                for (from, to) in fields {
                    if let Some(value) = path::remove(event, from)
                        && !path::set(event, to, value)
                    {
                        return Err(Rejection::new(
                            RejectReason::RenameFailed,
                            format!("rename_fields: cannot write {to}"),
                        ));
                    }
                }
            }
            Step::Coerce(fields) => {
                for (field, to) in fields {
                    if let Some(value) = path::get_mut(event, field)
                        && !value.is_null()
                    {
                        *value = coerce(value, *to).map_err(|why| {
                            Rejection::new(
                                RejectReason::CoercionFailed,
                                format!("coerce_types: {field}: {why}"),
                            )
                        })?;
                    }
                }
            }
            Step::Normalize(fields) => {
                for (field, operations) in fields {
                    if let Some(Value::String(text)) = path::get_mut(event, field) {
                        for operation in operations {
                            *text = match operation {
                                Normalization::Trim => text.trim().to_owned(),
                                Normalization::Lowercase => text.to_lowercase(),
                                Normalization::Uppercase => text.to_uppercase(),
                            };
                        }
                    }
                }
            }
            Step::Pii(rules) => pii::apply(rules, event),
            Step::Enrich {
                user_agent,
                truncate_ip,
                geoip,
                session_minutes,
            } => enricher.apply(event, *user_agent, *truncate_ip, *geoip, *session_minutes),
            Step::Drop(fields) => {
                for field in fields {
                    path::remove(event, field);
                }
            }
            Step::Identity(consent) => {
                crate::identity::apply(consent, identity, event, crate::time::now_ms());
            }
        }
    }
    Ok(())
}

fn check_schema(
    by_event: &HashMap<String, jsonschema::Validator>,
    reject_unknown: bool,
    event: &Map<String, Value>,
) -> Result<(), Rejection> {
    if event.get("type").and_then(Value::as_str) != Some("track") {
        return Ok(());
    }
    let name = event.get("event").and_then(Value::as_str).unwrap_or("");
    let Some(validator) = by_event.get(name) else {
        return if reject_unknown {
            Err(Rejection::new(
                RejectReason::UnknownEvent,
                format!("validate_schema: {name:?} is not in the tracking plan"),
            ))
        } else {
            Ok(())
        };
    };
    let empty = Value::Object(Map::new());
    let properties = event.get("properties").unwrap_or(&empty);
    if validator.is_valid(properties) {
        return Ok(());
    }
    let problems: Vec<String> = validator
        .iter_errors(properties)
        .take(MAX_SCHEMA_ERRORS)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = at.trim_start_matches('/').replace('/', ".");
            if at.is_empty() {
                format!("properties: {e}")
            } else {
                format!("properties.{at}: {e}")
            }
        })
        .collect();
    Err(Rejection::new(
        RejectReason::SchemaViolation,
        format!("validate_schema: {name:?}: {}", problems.join("; ")),
    ))
}

fn coerce(value: &Value, to: FieldType) -> Result<Value, String> {
    let not = |what: &str| format!("{value} is not {what}");
    match (to, value) {
        (FieldType::String, Value::String(_)) => Ok(value.clone()),
        (FieldType::String, Value::Number(_) | Value::Bool(_)) => {
            Ok(Value::String(value.to_string()))
        }
        (FieldType::String, _) => Err(not("a string")),
        (FieldType::Number, Value::Number(_)) => Ok(value.clone()),
        (FieldType::Number, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| not("a number")),
        (FieldType::Number, Value::Bool(b)) => Ok(Value::from(u8::from(*b))),
        (FieldType::Number, _) => Err(not("a number")),
        (FieldType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(value.clone()),
        (FieldType::Integer, Value::Number(n)) => {
            whole(n.as_f64()).ok_or_else(|| not("an integer"))
        }
        (FieldType::Integer, Value::String(s)) => {
            let s = s.trim();
            s.parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| whole(s.parse::<f64>().ok()))
                .ok_or_else(|| not("an integer"))
        }
        (FieldType::Integer, Value::Bool(b)) => Ok(Value::from(u8::from(*b))),
        (FieldType::Integer, _) => Err(not("an integer")),
        (FieldType::Boolean, Value::Bool(_)) => Ok(value.clone()),
        (FieldType::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(not("a boolean")),
        },
        (FieldType::Boolean, Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(Value::Bool(false)),
            Some(1) => Ok(Value::Bool(true)),
            _ => Err(not("a boolean")),
        },
        (FieldType::Boolean, _) => Err(not("a boolean")),
    }
}

/// An integer value of a float without a fraction, within i64.
fn whole(f: Option<f64>) -> Option<Value> {
    let f = f?;
    // i64::MAX as f64 rounds up, so compare strictly below 2^63.
    (f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f))
        .then(|| Value::from(f as i64))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn steps(spec: Value) -> Vec<Step> {
        let steps: Vec<GovernanceStep> = serde_json::from_value(spec).expect("steps");
        compile(&steps).expect("compiles")
    }

    fn run_on(steps: &[Step], event: Value) -> Result<Value, String> {
        let Value::Object(mut event) = event else {
            unreachable!()
        };
        run(
            steps,
            &Enricher::new(None),
            &mut IdentityScope::new(None),
            &mut event,
        )
        .map_err(|r| r.detail)?;
        Ok(Value::Object(event))
    }

    fn reason_of(steps: &[Step], event: Value) -> RejectReason {
        let Value::Object(mut event) = event else {
            unreachable!()
        };
        run(
            steps,
            &Enricher::new(None),
            &mut IdentityScope::new(None),
            &mut event,
        )
        .expect_err("rejected")
        .reason
    }

    #[test]
    fn each_refusal_is_classified() {
        let plan = steps(
            json!([{"step": "validate_schema", "unknown_events": "reject", "events": {
            "Paid": {"type": "object", "properties": {"amount": {"type": "number"}}}}}]),
        );
        let coerce =
            steps(json!([{"step": "coerce_types", "fields": {"properties.n": "integer"}}]));
        let rename =
            steps(json!([{"step": "rename_fields", "fields": {"properties.a": "properties.s.b"}}]));
        let cases = [
            (
                &plan,
                json!({"type": "track", "event": "Paid", "properties": {"amount": "x"}}),
                RejectReason::SchemaViolation,
            ),
            (
                &plan,
                json!({"type": "track", "event": "Other"}),
                RejectReason::UnknownEvent,
            ),
            (
                &coerce,
                json!({"properties": {"n": "many"}}),
                RejectReason::CoercionFailed,
            ),
            (
                &rename,
                json!({"properties": {"a": 1, "s": "text"}}),
                RejectReason::RenameFailed,
            ),
        ];
        for (steps, event, reason) in cases {
            assert_eq!(reason_of(steps, event.clone()), reason, "{event}");
        }
    }

    #[test]
    fn a_tracking_plan_rejects_what_breaks_it_with_the_reasons() {
        let plan = steps(
            json!([{"step": "validate_schema", "unknown_events": "reject", "events": {
            "Order Completed": {"type": "object", "required": ["order_id"],
                "properties": {"order_id": {"type": "string"}, "revenue": {"type": "number"}}}}}]),
        );
        let ok = json!({"type": "track", "event": "Order Completed", "properties": {"order_id": "o1", "revenue": 5}});
        assert!(run_on(&plan, ok).is_ok());
        let bad =
            json!({"type": "track", "event": "Order Completed", "properties": {"revenue": "lots"}});
        let why = run_on(&plan, bad).expect_err("invalid");
        assert!(
            why.contains("properties.revenue:")
                && why.contains("\"order_id\" is a required property"),
            "{why}"
        );
        let unknown = json!({"type": "track", "event": "Clicked", "properties": {}});
        assert!(
            run_on(&plan, unknown)
                .expect_err("unplanned")
                .contains("not in the tracking plan")
        );
        assert!(
            run_on(&plan, json!({"type": "page", "name": "Home"})).is_ok(),
            "only track events"
        );
    }

    #[test]
    fn fields_are_renamed_coerced_normalised_and_dropped_in_order() {
        let governance = steps(json!([
            {"step": "rename_fields", "fields": {"properties.product_id": "properties.sku"}},
            {"step": "coerce_types", "fields": {"properties.quantity": "integer", "properties.price": "number",
                "properties.gift": "boolean", "properties.zip": "string"}},
            {"step": "normalize", "fields": {"traits.email": ["trim", "lowercase"], "properties.currency": ["uppercase"]}},
            {"step": "drop_fields", "fields": ["context.secret", "properties.missing"]}
        ]));
        let out = run_on(&governance, json!({
            "properties": {"product_id": "p-1", "quantity": "3", "price": " 9.5", "gift": "yes", "zip": 1234, "currency": "eur"},
            "traits": {"email": "  Ada@Example.com "},
            "context": {"secret": 1, "kept": 2}
        })).expect("valid");
        assert_eq!(out["properties"]["sku"], "p-1");
        assert!(out["properties"].get("product_id").is_none());
        assert_eq!(
            (
                &out["properties"]["quantity"],
                &out["properties"]["price"],
                &out["properties"]["gift"],
                &out["properties"]["zip"]
            ),
            (&json!(3), &json!(9.5), &json!(true), &json!("1234"))
        );
        assert_eq!(out["traits"]["email"], "ada@example.com");
        assert_eq!(out["properties"]["currency"], "EUR");
        assert_eq!(out["context"], json!({"kept": 2}));
        let why =
            run_on(&governance, json!({"properties": {"quantity": "three"}})).expect_err("bad");
        assert_eq!(
            why,
            "coerce_types: properties.quantity: \"three\" is not an integer"
        );
    }

    #[test]
    fn coercion_is_exact() {
        assert_eq!(coerce(&json!(2.0), FieldType::Integer), Ok(json!(2)));
        assert!(coerce(&json!(2.5), FieldType::Integer).is_err());
        assert!(
            coerce(&json!("1e400"), FieldType::Number).is_err(),
            "not finite"
        );
        assert!(coerce(&json!({"a": 1}), FieldType::String).is_err());
        assert_eq!(coerce(&json!(0), FieldType::Boolean), Ok(json!(false)));
    }
}
