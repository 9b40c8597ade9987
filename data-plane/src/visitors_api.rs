//! The identity API (`GET`/`DELETE /v1/identities/{id}`, for access and erasure requests)
//! and the upkeep that sweeps expired entries and counts what the store holds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::get;
use serde_json::{Value, json};
use sluice_identity::StoreError;
use sluice_proto::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::{ApiError, auth};
use crate::shutdown::until_true;
use crate::state::NodeState;
use crate::visitors::Visitors;

/// How often the entries are counted for the metric.
const COUNT_EVERY: Duration = Duration::from_secs(30);
/// How often expired entries are swept from the embedded store.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Counts the tenant's entries and sweeps expired ones, until shutdown.
pub fn upkeep(node: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let visitors = node.visitors.clone()?;
    Some(tokio::spawn(async move {
        let mut since_sweep = SWEEP_EVERY;
        loop {
            if let Some(config) = node.current() {
                let v = visitors.clone();
                let sweep = since_sweep >= SWEEP_EVERY;
                let counted = tokio::task::spawn_blocking(move || {
                    let kv = v.identities.kv();
                    if sweep && let Err(e) = kv.sweep() {
                        tracing::warn!(error = %e, "cannot sweep the identity store");
                    }
                    kv.entries(&config.tenant_id)
                })
                .await;
                if sweep {
                    since_sweep = Duration::ZERO;
                }
                match counted {
                    Ok(Ok(entries)) => visitors.entries.store(entries, Ordering::Relaxed),
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot count the identity store"),
                    Err(e) => tracing::warn!(error = %e, "identity upkeep failed"),
                }
            }
            tokio::select! {
                () = until_true(&mut shutdown) => return,
                () = tokio::time::sleep(COUNT_EVERY) => since_sweep += COUNT_EVERY,
            }
        }
    }))
}

pub fn router(node: Arc<NodeState>) -> Router {
    let cors = crate::http::browser_cors(&node.config.policy);
    Router::new()
        .route("/v1/identities/{id}", get(profile).delete(erase))
        .layer(cors)
        .with_state(node)
}

type Answer = Result<axum::Json<Value>, ApiError>;

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => {
            ApiError::new(ErrorCode::Unavailable, e.to_string()).retry_after(5)
        }
        StoreError::Full(_) | StoreError::Corrupt(_) => {
            ApiError::new(ErrorCode::Internal, e.to_string())
        }
    }
}

/// The visitor the path names, with what is needed to look them up.
fn lookup(
    node: &NodeState,
    headers: &HeaderMap,
    id: Result<UrlPath<String>, PathRejection>,
    write: bool,
) -> Result<(Arc<Visitors>, String, String), ApiError> {
    let access = auth::caller(node, headers)?;
    if write {
        auth::require_write(access)?;
    }
    let UrlPath(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if id.is_empty() || id.len() > sluice_identity::graph::MAX_KEY_ID {
        return Err(ApiError::bad_request(format!(
            "an identity is a user or anonymous id of 1 to {} bytes",
            sluice_identity::graph::MAX_KEY_ID
        )));
    }
    let visitors = node.visitors.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            "this node keeps no identities (it runs neither the processor nor the proxy)",
        )
    })?;
    let tenant = node
        .current()
        .ok_or_else(ApiError::no_configuration)?
        .tenant_id
        .clone();
    Ok((visitors, tenant, id))
}

/// A visitor's profile, by user or anonymous id: what the node holds of them.
async fn profile(
    State(node): State<Arc<NodeState>>,
    headers: HeaderMap,
    id: Result<UrlPath<String>, PathRejection>,
) -> Answer {
    let (visitors, tenant, id) = lookup(&node, &headers, id, false)?;
    let found = tokio::task::spawn_blocking(move || visitors.identities.profile(&tenant, &id))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(store_error)?;
    match found {
        Some(profile) => Ok(axum::Json(json!(profile))),
        None => Err(ApiError::new(ErrorCode::NotFound, "no profile has this id")),
    }
}

/// Erases a visitor's profile and every link to it (an erasure request).
async fn erase(
    State(node): State<Arc<NodeState>>,
    headers: HeaderMap,
    id: Result<UrlPath<String>, PathRejection>,
) -> Answer {
    let (visitors, tenant, id) = lookup(&node, &headers, id, true)?;
    let v = visitors.clone();
    let erased = tokio::task::spawn_blocking(move || v.identities.erase(&tenant, &id))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(store_error)?;
    if !erased {
        return Err(ApiError::new(ErrorCode::NotFound, "no profile has this id"));
    }
    visitors.erased.fetch_add(1, Ordering::Relaxed);
    tracing::info!("identity erased");
    Ok(axum::Json(json!({"erased": true})))
}
