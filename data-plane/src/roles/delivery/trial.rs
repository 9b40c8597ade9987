//! A test send, from the console: one sample event shaped for one destination of the running
//! configuration and sent once, with the vendor's answer returned to the browser. Served by
//! nodes that run delivery (they hold the destination's secrets); the control plane never
//! sees the event or the answer.
//!
//! ```text
//! POST /v1/destinations/{pipeline_id}/{destination}/test   {"event": {…}} (optional)
//! ```
//!
//! The sample is an `Order Completed` track call; the body's `event` replaces its top-level
//! fields (`type`, `event`, `properties`, `traits`, `context`, …). It goes through the
//! pipeline's governance (without GeoIP and without the identity store, so a test leaves no
//! profile behind), then the destination's consent (granted for the test), filter, PII rules,
//! mapping and payload; never onto the bus: it is not archived, retried or dead-lettered. Its
//! `message_id` starts with `sluice-test-`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_pipeline::destinations::{Request, Resolved, Verdict};
use sluice_pipeline::time::{now_ms, rfc3339};
use sluice_pipeline::{CelRoot, CompiledPipeline, Shaped, SkipReason};
use sluice_proto::ErrorCode;

use super::{Attempt, MAX_RESPONSE, Sink};
use crate::http::ApiError;
use crate::http::auth;
use crate::state::NodeState;

struct Trial {
    node: Arc<NodeState>,
    http: super::Guarded,
}

pub fn router(node: Arc<NodeState>) -> Result<Router, reqwest::Error> {
    let cors = crate::http::browser_cors(&node.config.policy);
    let http = super::Guarded::new(node.config.policy.clone(), None)?;
    Ok(Router::new()
        .route(
            "/v1/destinations/{pipeline_id}/{destination}/test",
            post(test_send),
        )
        .layer(cors)
        .with_state(Arc::new(Trial { node, http })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    /// Top-level fields that replace the sample's.
    #[serde(default)]
    event: Map<String, Value>,
}

/// The fields a test event may not set: the node assigns them.
const ASSIGNED: [&str; 5] = [
    "message_id",
    "tenant_id",
    "pipeline_id",
    "source",
    "received_at",
];

async fn test_send(
    State(trial): State<Arc<Trial>>,
    headers: HeaderMap,
    Path((pipeline_id, destination)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    // It sends data to a vendor, so it takes what replaying a DLQ takes.
    auth::require_write(auth::caller(&trial.node, &headers)?)?;
    let request: TestRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TestRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body: {e}")))?
    };
    if let Some(field) = ASSIGNED.iter().find(|f| request.event.contains_key(**f)) {
        return Err(ApiError::bad_request(format!(
            "event.{field}: assigned by the node for a test event"
        )));
    }
    let config = trial
        .node
        .current()
        .ok_or_else(ApiError::no_configuration)?;
    let pipeline = config
        .pipelines
        .iter()
        .find(|p| p.id == pipeline_id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such pipeline on this node"))?;
    let spec = pipeline
        .spec
        .destinations
        .iter()
        .find(|d| d.name == destination)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such destination"))?;
    let compiled =
        CompiledPipeline::compile(pipeline).map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    let target = compiled
        .destinations
        .iter()
        .find(|d| d.name == destination)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such destination"))?;

    let now = now_ms();
    let mut event = sample(now, &pipeline.id, &spec.consent, request.event);
    // Not held across the send below: the identity scope is not `Send`.
    let governed = {
        let enricher = sluice_pipeline::enrich::Enricher::new(None);
        let mut identity = sluice_pipeline::identity::IdentityScope::new(None);
        compiled.govern(&enricher, &mut identity, &mut event)
    };
    if let Err(rejection) = governed {
        return Ok(axum::Json(json!({
            "outcome": "rejected",
            "message": format!("the pipeline's governance rejects this event: {rejection}"),
            "event": event,
        })));
    }
    let root = CelRoot::default();
    let payload = match target.shape(&root, &compiled.needs, &event, &mut None) {
        Shaped::Deliver(bytes) => bytes,
        Shaped::Skip(reason) => {
            return Ok(axum::Json(json!({
                "outcome": "skipped",
                "message": match reason {
                    SkipReason::Consent => "the destination's consent rules skip this event",
                    SkipReason::Filter => "the destination's filter is false for this event",
                    SkipReason::NotApplicable => "the destination takes no events of this type or name",
                },
                "event": event,
            })));
        }
        Shaped::Invalid(why) => {
            return Ok(axum::Json(json!({
                "outcome": "invalid",
                "message": format!("this event would go to the DLQ unsent: {why}"),
                "event": event,
            })));
        }
    };

    let resolved = Resolved::new(spec.clone(), |name| trial.node.secrets.resolve(name))
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, e))?;
    let sink = Sink::of(&resolved).map_err(|e| ApiError::new(ErrorCode::Unavailable, e))?;
    let id = event["message_id"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    let Attempt {
        verdict,
        answer,
        request: sent,
    } = sink
        .attempt(&resolved, &trial.http, &[(&id, &payload)], true)
        .await;
    let took_ms = started.elapsed().as_millis() as u64;
    tracing::info!(pipeline = %pipeline.name, destination = %destination, took_ms, "test event sent");
    let (outcome, error) = match &verdict {
        Verdict::Delivered => ("delivered", None),
        Verdict::Retry { error, .. } => ("retry", Some(error.as_str())),
        Verdict::DeadLetter { error } => ("refused", Some(error.as_str())),
    };
    Ok(axum::Json(json!({
        "outcome": outcome,
        "error": error,
        "took_ms": took_ms,
        "event": event,
        "request": sent.map(|r| shown(&resolved, r)),
        "response": answer.map(|a| json!({
            "status": a.status,
            "body": String::from_utf8_lossy(&a.body[..a.body.len().min(MAX_RESPONSE)]),
        })),
        "rows": resolved.warehouse().map(|w| json!({"table": resolved.setting(&w.table)})),
    })))
}

/// The request as a person may see it: secrets named, credentials in `authorization` hidden.
fn shown(resolved: &Resolved, request: Request) -> Value {
    let headers: Map<String, Value> = request
        .headers
        .iter()
        .map(|(name, value)| {
            let value = if name.eq_ignore_ascii_case("authorization") {
                let scheme = value.split_once(' ').map_or("", |(s, _)| s);
                format!("{scheme} ‹hidden›").trim_start().to_owned()
            } else {
                resolved.redact(value)
            };
            (name.clone(), Value::String(value))
        })
        .collect();
    let body = String::from_utf8_lossy(&request.body);
    json!({
        "method": "POST",
        "url": resolved.redact(&request.url),
        "headers": headers,
        "body": serde_json::from_str::<Value>(&resolved.redact(&body))
            .unwrap_or_else(|_| Value::String(resolved.redact(&body))),
    })
}

/// An `Order Completed` call from a browser, with `overrides` replacing its fields and the
/// destination's consent categories granted.
fn sample(
    now: i64,
    pipeline_id: &str,
    consent: &[String],
    overrides: Map<String, Value>,
) -> Map<String, Value> {
    let at = rfc3339(now);
    let id = format!("sluice-test-{now}");
    let granted: Map<String, Value> = consent
        .iter()
        .map(|c| (c.clone(), Value::Bool(true)))
        .collect();
    let Value::Object(mut event) = json!({
        "message_id": id,
        "pipeline_id": pipeline_id,
        "source": "sluice-test",
        "received_at": at,
        "sent_at": at,
        "timestamp": at,
        "type": "track",
        "event": "Order Completed",
        "user_id": "sluice-test-user",
        "anonymous_id": "sluice-test-visitor",
        "properties": {
            "order_id": id,
            "value": 1.0,
            "revenue": 1.0,
            "currency": "USD",
            "products": [{"product_id": "sluice-test-sku", "name": "Test product", "price": 1.0, "quantity": 1}],
        },
        "traits": {"email": "test@example.com"},
        "context": {
            "ip": "203.0.113.10",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Sluice test event",
            "page": {"url": "https://www.example.com/checkout", "title": "Checkout", "referrer": ""},
            "library": {"name": "sluice-test", "version": env!("CARGO_PKG_VERSION")},
            "consent": {"categoryPreferences": granted},
        },
    }) else {
        unreachable!("a JSON object literal")
    };
    event.extend(overrides);
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_takes_overrides_and_grants_the_destination_s_consent() {
        let mut overrides = Map::new();
        overrides.insert("type".into(), json!("page"));
        overrides.insert("properties".into(), json!({"path": "/"}));
        let event = sample(
            1_700_000_000_000,
            "p1",
            &["marketing".to_owned()],
            overrides,
        );
        assert_eq!(event["type"], "page");
        assert_eq!(event["properties"], json!({"path": "/"}));
        assert_eq!(event["message_id"], "sluice-test-1700000000000");
        assert_eq!(
            event["context"]["consent"]["categoryPreferences"]["marketing"],
            true
        );
    }
}
