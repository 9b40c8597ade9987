//! Erasure of one person's data on the node (GDPR article 17, CCPA deletion):
//!
//! ```text
//! POST /v1/erasure   {"user_id": "…"} or {"anonymous_id": "…"}   admins and the service key
//! GET  /v1/erasures  the receipts, oldest first
//! ```
//!
//! The person is first widened to every id the identity store links to them (a user's
//! anonymous ids before they signed in), then removed from the archive (each file holding
//! their rows is rewritten without them, atomically for readers), the dead-letter queues and
//! rejected events, and last the identity store. The receipt says what was removed and is
//! kept on the node (`state_dir/erasures.jsonl`) with the id only as a SHA-256; the control
//! plane sees counts only. An erasure that fails part-way can be sent again: each part
//! removes what is left.
//!
//! Parts a node does not hold (the archive on a node without the archiver, the identity store
//! on one without the processor or proxy) are `null` in the receipt: send the request to
//! those nodes too.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sluice_archive::maintain::Person;
use sluice_proto::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::http::ApiError;
use crate::http::auth;
use crate::roles::archiver::maintain::ErasureJob;
use crate::state::NodeState;
use sluice_bus::AnyBus;

/// Longest id an erasure names, in bytes.
const MAX_ID: usize = 256;
const RECEIPTS: &str = "erasures.jsonl";

struct Erasures {
    node: Arc<NodeState>,
    bus: AnyBus,
    archive: Option<mpsc::Sender<ErasureJob>>,
    /// One erasure at a time, so receipts are written whole and in order.
    lock: tokio::sync::Mutex<()>,
}

pub fn router(
    node: Arc<NodeState>,
    bus: AnyBus,
    archive: Option<mpsc::Sender<ErasureJob>>,
) -> Router {
    let cors = crate::http::browser_cors(&node.config.policy);
    let state = Arc::new(Erasures {
        node,
        bus,
        archive,
        lock: tokio::sync::Mutex::new(()),
    });
    Router::new()
        .route("/v1/erasure", post(erase))
        .route("/v1/erasures", get(receipts))
        .layer(cors)
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    user_id: Option<String>,
    anonymous_id: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn sha256(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The ids the identity store links to `id`, with `id` itself.
async fn widen(node: &NodeState, tenant: &str, kind: &str, id: &str) -> Result<Person, ApiError> {
    let mut person = Person::default();
    if kind == "user_id" {
        person.user_ids.insert(id.to_owned());
    } else {
        person.anonymous_ids.insert(id.to_owned());
    }
    if let Some(visitors) = node.visitors.clone() {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        let profile =
            tokio::task::spawn_blocking(move || visitors.identities.profile(&tenant, &id))
                .await
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(|e| {
                    ApiError::new(ErrorCode::Unavailable, format!("identity store: {e}"))
                        .retry_after(5)
                })?;
        if let Some(profile) = profile {
            person.user_ids.extend(profile.user_id);
            person.anonymous_ids.extend(profile.anonymous_ids);
        }
    }
    Ok(person)
}

async fn erase(
    State(state): State<Arc<Erasures>>,
    headers: HeaderMap,
    body: Result<axum::Json<Request>, JsonRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    auth::require_admin(auth::caller(&state.node, &headers)?)?;
    let axum::Json(request) = body.map_err(|e| bad(e.body_text()))?;
    let (kind, id) = match (request.user_id, request.anonymous_id) {
        (Some(id), None) => ("user_id", id),
        (None, Some(id)) => ("anonymous_id", id),
        _ => return Err(bad("give one of user_id or anonymous_id")),
    };
    if id.is_empty() || id.len() > MAX_ID {
        return Err(bad(format!("{kind}: 1 to {MAX_ID} bytes")));
    }
    let tenant = state
        .node
        .current()
        .ok_or_else(ApiError::no_configuration)?
        .tenant_id
        .clone();
    let _one = state.lock.lock().await;
    let started = std::time::Instant::now();
    let person = widen(&state.node, &tenant, kind, &id).await?;

    let archive = match &state.archive {
        Some(jobs) => {
            let (reply, answer) = oneshot::channel();
            jobs.try_send(ErasureJob {
                person: person.clone(),
                reply,
            })
            .map_err(|_| {
                ApiError::new(ErrorCode::Unavailable, "the archiver is busy; retry later")
                    .retry_after(30)
            })?;
            let erased = answer
                .await
                .map_err(|_| ApiError::new(ErrorCode::Unavailable, "the archiver stopped"))?
                .map_err(|e| {
                    tracing::warn!(error = %e, "an erasure could not finish in the archive");
                    ApiError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "the archive cannot be rewritten now ({e}); send the request again"
                        ),
                    )
                    .retry_after(30)
                })?;
            Some(erased)
        }
        None => None,
    };

    let ids: HashSet<&str> = person
        .user_ids
        .iter()
        .chain(&person.anonymous_ids)
        .map(String::as_str)
        .collect();
    let (dead_letters, rejected) = crate::roles::dlq::erase_mentions(&state.bus, &state.node, &ids)
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("the bus: {e}; send the request again"),
            )
            .retry_after(5)
        })?;

    let profiles = match state.node.visitors.clone() {
        Some(visitors) => {
            let (tenant, all): (String, Vec<String>) = (
                tenant.clone(),
                ids.iter().map(|s| (*s).to_owned()).collect(),
            );
            let erased = tokio::task::spawn_blocking(move || {
                let mut erased = 0u64;
                for id in all {
                    if visitors.identities.erase(&tenant, &id)? {
                        erased += 1;
                    }
                }
                Ok::<_, sluice_identity::StoreError>(erased)
            })
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| {
                ApiError::new(ErrorCode::Unavailable, format!("identity store: {e}")).retry_after(5)
            })?;
            Some(erased)
        }
        None => None,
    };

    let removed = archive.as_ref().map_or(0, |a| a.rows_removed)
        + dead_letters
        + rejected
        + profiles.unwrap_or(0);
    let receipt = json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "at": sluice_pipeline::time::rfc3339(sluice_pipeline::time::now_ms()),
        "subject": {"kind": kind, "sha256": sha256(&id)},
        "ids_linked": ids.len(),
        "archive": archive.as_ref().map(|a| json!({
            "files_scanned": a.files_scanned,
            "files_rewritten": a.files_rewritten,
            "rows_removed": a.rows_removed,
        })),
        "dead_letters_removed": dead_letters,
        "rejected_removed": rejected,
        "identity_profiles_removed": profiles,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    keep(&state.node, &receipt)?;
    state.node.counters.erasures.fetch_add(1, Ordering::Relaxed);
    state
        .node
        .counters
        .erased
        .fetch_add(removed, Ordering::Relaxed);
    tracing::info!(
        rows_removed = archive.as_ref().map_or(0, |a| a.rows_removed),
        files_rewritten = archive.as_ref().map_or(0, |a| a.files_rewritten.len()),
        dead_letters,
        rejected,
        profiles = profiles.unwrap_or(0),
        "erasure carried out"
    );
    Ok(axum::Json(receipt))
}

/// Appends a receipt to the node's audit file.
fn keep(node: &NodeState, receipt: &Value) -> Result<(), ApiError> {
    let path = node.config.state_dir.join(RECEIPTS);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let mut line = receipt.to_string();
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.sync_data()
    };
    write().map_err(|e| {
        tracing::error!(error = %e, path = %path.display(), "cannot keep an erasure receipt");
        ApiError::new(
            ErrorCode::Internal,
            "the erasure was carried out but its receipt could not be kept",
        )
    })
}

async fn receipts(
    State(state): State<Arc<Erasures>>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    auth::require_admin(auth::caller(&state.node, &headers)?)?;
    let path = state.node.config.state_dir.join(RECEIPTS);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ApiError::new(ErrorCode::Internal, e.to_string())),
    };
    let data: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    Ok(axum::Json(json!({"data": data})))
}
