//! The node's one HTTP listener: its roles' routes, health and metrics, composed for the
//! roles this node runs.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::state::NodeState;
use sluice_bus::AnyBus;
use sluice_proto::Role;

pub fn router(
    node: Arc<NodeState>,
    bus: AnyBus,
    archive: Option<Arc<dyn object_store::ObjectStore>>,
    erasures: Option<tokio::sync::mpsc::Sender<crate::roles::archiver::maintain::ErasureJob>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let mut app = Router::new();
    let query_archive = archive.filter(|_| node.config.runs(Role::Query));
    if let Some(store) = &query_archive {
        app = app.merge(crate::roles::query::router(node.clone(), store.clone()));
    }
    app = app.merge(crate::inspect::router(
        node.clone(),
        bus.clone(),
        query_archive,
        shutdown,
    ));
    if node.config.runs(Role::Receiver) {
        app = app.merge(crate::roles::receiver::router(node.clone(), bus.clone()));
    }
    app = app.merge(crate::roles::erasure::router(
        node.clone(),
        bus.clone(),
        erasures,
    ));
    if node.config.runs(Role::Processor) || node.config.runs(Role::Delivery) {
        app = app.merge(crate::roles::dlq::router(node.clone(), bus));
    }
    if node.config.runs(Role::Delivery) {
        match crate::roles::delivery::trial::router(node.clone()) {
            Ok(trial) => app = app.merge(trial),
            Err(e) => tracing::error!(error = %e, "no test sends: the http client cannot be built"),
        }
    }
    if node.visitors.is_some() {
        app = app.merge(crate::visitors_api::router(node.clone()));
    }
    app.merge(health(node))
}

fn health(node: Arc<NodeState>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": {"code": "not_found", "message": "no such route"}})),
            )
        })
        .with_state(node)
}

async fn live() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "ok"}))
}

/// Ready once a configuration is loaded (from the control plane or last-known-good) and every
/// bus stage the node's roles consume is being read. Names the node and its roles, so a check
/// can tell which process answered on a port.
async fn ready(State(node): State<Arc<NodeState>>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let connected = node.connected.load(std::sync::atomic::Ordering::Relaxed);
    let consumers = node.consumers.snapshot();
    let consumers_json: serde_json::Map<String, serde_json::Value> = consumers
        .iter()
        .map(|(stage, state)| (stage.clone(), state.describe().into()))
        .collect();
    let Some(config) = node.current() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "unavailable",
                "reason": "no configuration yet: waiting for the control plane",
                "node_id": node.node_id,
                "roles": node.config.roles,
                "control_plane_connected": connected,
                "consumers": consumers_json,
            })),
        );
    };
    let destinations: Vec<serde_json::Value> = node
        .counters
        .health()
        .into_iter()
        .map(|(pipeline_id, pipeline, destination, h)| {
            json!({
                "pipeline_id": pipeline_id,
                "pipeline": pipeline,
                "destination": destination,
                "state": h.state,
                "last_error": h.last_error,
                "last_error_status": h.last_error_status,
                "last_error_at": h.last_error_ms.map(sluice_pipeline::time::rfc3339),
                "last_delivered_at": h.last_delivered_ms.map(sluice_pipeline::time::rfc3339),
                "last_5m": {"delivered": h.last_5m[0], "retried": h.last_5m[1], "failed": h.last_5m[2]},
                "last_24h": {"delivered": h.last_24h[0], "retried": h.last_24h[1], "failed": h.last_24h[2]},
            })
        })
        .collect();
    // A failing destination is said here, not by the status code: the node itself is
    // ready, and a load balancer must not take it out for a vendor's outage.
    let failing: Vec<String> = destinations
        .iter()
        .filter(|d| d["state"] == "failing")
        .map(|d| {
            format!(
                "{}/{}",
                d["pipeline"].as_str().unwrap_or_default(),
                d["destination"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let mut body = json!({
        "status": "ok",
        "destinations": destinations,
        "failing_destinations": failing,
        "node_id": node.node_id,
        "roles": node.config.roles,
        "config_version": config.version,
        "config_age_seconds": node.config_age_seconds(&config),
        "control_plane_connected": connected,
        "source": if node.synced_from_control_plane() { "control_plane" } else { "last_known_good" },
        "consumers": consumers_json,
    });
    let not_reading: Vec<String> = consumers
        .iter()
        .filter(|(_, state)| !state.is_reading())
        .map(|(stage, state)| format!("{stage} ({})", state.describe()))
        .collect();
    // Delivery registers a destination's stage when it starts its workers, just after a
    // configuration is installed: until then the destination is not read either.
    let unstarted: Vec<String> = if node.config.runs(Role::Delivery) {
        config
            .pipelines
            .iter()
            .flat_map(|p| {
                p.spec
                    .destinations
                    .iter()
                    .map(|d| sluice_pipeline::stages::deliver(&p.id, &d.name))
            })
            .filter(|stage| !consumers.iter().any(|(s, _)| s == stage))
            .collect()
    } else {
        Vec::new()
    };
    let reason = if !unstarted.is_empty() {
        Some(format!(
            "delivery has not started {} yet",
            unstarted.join(", ")
        ))
    } else if !not_reading.is_empty() {
        Some(format!("not reading {}", not_reading.join(", ")))
    } else {
        None
    };
    match reason {
        None => (StatusCode::OK, axum::Json(body)),
        Some(reason) => {
            body["status"] = "unavailable".into();
            body["reason"] = reason.into();
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
        }
    }
}

async fn render_metrics(State(node): State<Arc<NodeState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::scrape::render(&node),
    )
}
