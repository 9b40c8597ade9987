//! The dead-letter API on the node's internal listener. Event data stays in the customer's
//! network: these routes are served by the data plane, never the control plane.
//!
//! ```text
//! GET    /v1/dlq                                       every destination's DLQ depth, and rejected
//! GET    /v1/dlq/{pipeline_id}/{destination}?cursor=&limit=   entries, oldest first
//! POST   /v1/dlq/{pipeline_id}/{destination}/replay    {"cursors":[…]} or {"all":true}
//! DELETE /v1/dlq/{pipeline_id}/{destination}           {"cursors":[…]} or {"all":true}
//! GET    /v1/rejected?cursor=&limit=                    events that failed governance
//! POST   /v1/rejected/replay                            run them through governance again
//! DELETE /v1/rejected                                   purge
//! ```
//!
//! A replayed message gets the bus id `<event id>#replay-<n>` (NATS would otherwise take it
//! for a duplicate of the original within its deduplication window); delivery still sends the
//! event id as the idempotency key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_proto::ErrorCode;

use crate::http::ApiError;
use crate::http::auth::{self, Access};
use crate::state::NodeState;
use sluice_bus::{AnyBus, Bus, Message};
use sluice_pipeline::stages::{self, DlqEntry, Rejected};
use sluice_pipeline::{CelRoot, CompiledPipeline, Shaped};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
/// Entries replayed or purged per page when acting on all of them.
const PAGE: usize = 500;

struct Dlq {
    node: Arc<NodeState>,
    bus: AnyBus,
    replays: AtomicU64,
}

pub fn router(node: Arc<NodeState>, bus: AnyBus) -> Router {
    let cors = crate::http::browser_cors(&node.config.policy);
    let dlq = Arc::new(Dlq {
        node,
        bus,
        replays: AtomicU64::new(0),
    });
    Router::new()
        .route("/v1/dlq", get(overview))
        .route(
            "/v1/dlq/{pipeline_id}/{destination}",
            get(list).delete(purge),
        )
        .route("/v1/dlq/{pipeline_id}/{destination}/replay", post(replay))
        .route("/v1/rejected", get(list_rejected).delete(purge_rejected))
        .route("/v1/rejected/replay", post(replay_rejected))
        .layer(cors)
        .with_state(dlq)
}

type Answer = Result<axum::Json<Value>, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    cursor: u64,
    limit: Option<usize>,
}

/// Which entries an action is for.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Selection {
    #[serde(default)]
    cursors: Vec<u64>,
    #[serde(default)]
    all: bool,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn selection(body: Result<axum::Json<Selection>, JsonRejection>) -> Result<Selection, ApiError> {
    let axum::Json(selection) = body.map_err(|e| bad(e.body_text()))?;
    if selection.all != selection.cursors.is_empty() {
        return Err(bad("give either cursors (from a listing) or \"all\": true"));
    }
    Ok(selection)
}

fn page(query: Result<Query<Page>, QueryRejection>) -> Result<(u64, usize), ApiError> {
    let Query(page) = query.map_err(|e| bad(e.body_text()))?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(format!("limit: between 1 and {MAX_LIMIT}")));
    }
    Ok((page.cursor, limit))
}

impl Dlq {
    /// The stage of a destination the running configuration has, else 404.
    fn destination(
        &self,
        pipeline_id: &str,
        destination: &str,
    ) -> Result<(String, String), ApiError> {
        let config = self.node.current().ok_or_else(|| {
            ApiError::new(ErrorCode::Unavailable, "no configuration yet").retry_after(5)
        })?;
        let pipeline = config
            .pipelines
            .iter()
            .find(|p| p.id == pipeline_id)
            .filter(|p| p.spec.destinations.iter().any(|d| d.name == destination))
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such destination"))?;
        Ok((
            stages::dlq(&pipeline.id, destination),
            pipeline.name.clone(),
        ))
    }

    fn replay_id(&self, event_id: &str) -> String {
        let n = self.replays.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}#replay-{}-{n}",
            event_id,
            sluice_pipeline::time::now_ms()
        )
    }

    /// The entries an action is for, a page at a time (a DLQ may hold millions).
    async fn pages(&self, stage: &str, selection: &Selection) -> Result<Pages, ApiError> {
        let scope = if selection.all {
            // What is there now: a replay may add entries behind the last one (a replayed
            // event rejected again), and those wait for the next request.
            Scope::All {
                remaining: self.bus.depth(stage).await.map_err(unavailable)?,
            }
        } else {
            Scope::Cursors(selection.cursors.iter().copied().collect())
        };
        let cursor = match &scope {
            Scope::Cursors(wanted) => wanted.first().map_or(0, |c| c.saturating_sub(1)),
            Scope::All { .. } => 0,
        };
        Ok(Pages {
            stage: stage.to_owned(),
            scope,
            cursor,
        })
    }
}

/// Which entries of a stage [`Pages`] yields.
enum Scope {
    Cursors(std::collections::BTreeSet<u64>),
    /// Every entry, up to this many more.
    All {
        remaining: u64,
    },
}

/// The selected entries of a stage, read page by page in cursor order.
struct Pages {
    stage: String,
    scope: Scope,
    cursor: u64,
}

impl Pages {
    /// The next page of selected entries; `None` once there are no more.
    async fn next(&mut self, bus: &AnyBus) -> Result<Option<Vec<(u64, Message)>>, ApiError> {
        loop {
            let done = match &self.scope {
                Scope::Cursors(wanted) => wanted.last().is_none_or(|last| self.cursor >= *last),
                Scope::All { remaining } => *remaining == 0,
            };
            if done {
                return Ok(None);
            }
            let page = bus
                .browse(&self.stage, self.cursor, PAGE)
                .await
                .map_err(unavailable)?;
            let Some(end) = page.last().map(|(c, _)| *c) else {
                return Ok(None);
            };
            self.cursor = end;
            let selected: Vec<(u64, Message)> = match &mut self.scope {
                Scope::Cursors(wanted) => page
                    .into_iter()
                    .filter(|(c, _)| wanted.contains(c))
                    .collect(),
                Scope::All { remaining } => {
                    let take = usize::try_from(*remaining).unwrap_or(usize::MAX);
                    let page: Vec<_> = page.into_iter().take(take).collect();
                    *remaining -= page.len() as u64;
                    page
                }
            };
            if !selected.is_empty() {
                return Ok(Some(selected));
            }
        }
    }
}

fn unavailable(e: sluice_bus::BusError) -> ApiError {
    tracing::error!(error = %e, "the dead-letter API cannot reach the bus");
    ApiError::new(
        ErrorCode::Unavailable,
        "the bus is unavailable; retry later",
    )
    .retry_after(1)
}

fn entry_json(cursor: u64, message: &Message) -> Value {
    let mut value: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("cursor".into(), json!(cursor));
    }
    value
}

async fn overview(State(dlq): State<Arc<Dlq>>, headers: HeaderMap) -> Answer {
    auth::caller(&dlq.node, &headers)?;
    let config = dlq.node.current().ok_or_else(|| {
        ApiError::new(ErrorCode::Unavailable, "no configuration yet").retry_after(5)
    })?;
    let mut data = Vec::new();
    for pipeline in &config.pipelines {
        for destination in &pipeline.spec.destinations {
            let depth = dlq
                .bus
                .depth(&stages::dlq(&pipeline.id, &destination.name))
                .await
                .map_err(unavailable)?;
            data.push(
                json!({"pipeline_id": pipeline.id, "pipeline": pipeline.name,
                "destination": destination.name, "depth": depth}),
            );
        }
    }
    let rejected = dlq.bus.depth(stages::REJECTED).await.map_err(unavailable)?;
    Ok(axum::Json(json!({"data": data, "rejected": rejected})))
}

async fn list(
    State(dlq): State<Arc<Dlq>>,
    headers: HeaderMap,
    Path((pipeline_id, destination)): Path<(String, String)>,
    query: Result<Query<Page>, QueryRejection>,
) -> Answer {
    auth::caller(&dlq.node, &headers)?;
    let (cursor, limit) = page(query)?;
    let (stage, _) = dlq.destination(&pipeline_id, &destination)?;
    listing(&dlq.bus, &stage, cursor, limit).await
}

async fn listing(bus: &AnyBus, stage: &str, cursor: u64, limit: usize) -> Answer {
    let entries = bus
        .browse(stage, cursor, limit)
        .await
        .map_err(unavailable)?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|(c, _)| *c))
        .flatten();
    Ok(axum::Json(json!({
        "data": entries.iter().map(|(c, m)| entry_json(*c, m)).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

async fn replay(
    State(dlq): State<Arc<Dlq>>,
    headers: HeaderMap,
    Path((pipeline_id, destination)): Path<(String, String)>,
    body: Result<axum::Json<Selection>, JsonRejection>,
) -> Answer {
    auth::require_write(auth::caller(&dlq.node, &headers)?)?;
    let selection = selection(body)?;
    let (stage, _) = dlq.destination(&pipeline_id, &destination)?;
    let config = dlq.node.current();
    let compiled = config
        .as_ref()
        .and_then(|c| c.pipelines.iter().find(|p| p.id == pipeline_id))
        .map(CompiledPipeline::compile)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    let target = compiled
        .as_ref()
        .and_then(|p| p.destinations.iter().find(|d| d.name == destination));
    let compiled_needs = compiled
        .as_ref()
        .map(|p| p.needs.clone())
        .unwrap_or_default();
    let (mut replayed, mut skipped, mut still_invalid) = (0u64, 0u64, Vec::new());
    let root = CelRoot::default();
    let mut pages = dlq.pages(&stage, &selection).await?;
    while let Some(page) = pages.next(&dlq.bus).await? {
        for (cursor, message) in page {
            let Ok(entry) = serde_json::from_slice::<DlqEntry>(&message.payload) else {
                still_invalid.push(json!({"cursor": cursor, "error": "not a DLQ entry"}));
                continue;
            };
            let payload = if entry.shaped {
                Some(entry.payload.get().as_bytes().to_vec())
            } else {
                // Shaped again with the destination's settings as they are now.
                let event: serde_json::Map<String, Value> =
                    serde_json::from_str(entry.payload.get()).unwrap_or_default();
                match target.map(|d| d.shape(&root, &compiled_needs, &event, &mut None)) {
                    Some(Shaped::Deliver(bytes)) => Some(bytes),
                    Some(Shaped::Skip(_)) => None,
                    Some(Shaped::Invalid(why)) => {
                        still_invalid.push(json!({"cursor": cursor, "id": entry.id, "error": why}));
                        continue;
                    }
                    None => {
                        still_invalid.push(
                        json!({"cursor": cursor, "id": entry.id, "error": "no such destination"}),
                    );
                        continue;
                    }
                }
            };
            if let Some(payload) = payload {
                let id = dlq.replay_id(&entry.id);
                dlq.bus
                    .publish(
                        &stages::deliver(&pipeline_id, &destination),
                        vec![Message::new(id, payload)],
                    )
                    .await
                    .map_err(unavailable)?;
                replayed += 1;
            } else {
                skipped += 1;
            }
            dlq.bus
                .remove(&stage, &[cursor])
                .await
                .map_err(unavailable)?;
        }
    }
    tracing::info!(pipeline_id = %pipeline_id, destination = %destination, replayed, skipped, still_invalid = still_invalid.len(), "dead letters replayed");
    Ok(axum::Json(
        json!({"replayed": replayed, "skipped": skipped, "still_invalid": still_invalid}),
    ))
}

async fn purge(
    State(dlq): State<Arc<Dlq>>,
    headers: HeaderMap,
    Path((pipeline_id, destination)): Path<(String, String)>,
    body: Result<axum::Json<Selection>, JsonRejection>,
) -> Answer {
    auth::require_write(auth::caller(&dlq.node, &headers)?)?;
    let selection = selection(body)?;
    let (stage, _) = dlq.destination(&pipeline_id, &destination)?;
    purged(&dlq, &stage, &selection).await
}

async fn purged(dlq: &Dlq, stage: &str, selection: &Selection) -> Answer {
    let mut purged = 0;
    let mut pages = dlq.pages(stage, selection).await?;
    while let Some(page) = pages.next(&dlq.bus).await? {
        let cursors: Vec<u64> = page.into_iter().map(|(c, _)| c).collect();
        purged += dlq.bus.remove(stage, &cursors).await.map_err(unavailable)?;
    }
    tracing::info!(stage, purged, "dead letters purged");
    Ok(axum::Json(json!({"purged": purged})))
}

async fn list_rejected(
    State(dlq): State<Arc<Dlq>>,
    headers: HeaderMap,
    query: Result<Query<Page>, QueryRejection>,
) -> Answer {
    auth::caller(&dlq.node, &headers)?;
    let (cursor, limit) = page(query)?;
    listing(&dlq.bus, stages::REJECTED, cursor, limit).await
}

async fn replay_rejected(
    State(dlq): State<Arc<Dlq>>,
    headers: HeaderMap,
    body: Result<axum::Json<Selection>, JsonRejection>,
) -> Answer {
    auth::require_write(auth::caller(&dlq.node, &headers)?)?;
    let selection = selection(body)?;
    let mut replayed = 0u64;
    let mut pages = dlq.pages(stages::REJECTED, &selection).await?;
    while let Some(page) = pages.next(&dlq.bus).await? {
        for (cursor, message) in page {
            if let Ok(rejected) = serde_json::from_slice::<Rejected>(&message.payload) {
                let id = dlq.replay_id(&rejected.id);
                let envelope = rejected.event.get().as_bytes().to_vec();
                dlq.bus
                    .publish(stages::RAW, vec![Message::new(id, envelope)])
                    .await
                    .map_err(unavailable)?;
                replayed += 1;
            }
            dlq.bus
                .remove(stages::REJECTED, &[cursor])
                .await
                .map_err(unavailable)?;
        }
    }
    Ok(axum::Json(json!({"replayed": replayed})))
}

async fn purge_rejected(
    State(dlq): State<Arc<Dlq>>,
    headers: HeaderMap,
    body: Result<axum::Json<Selection>, JsonRejection>,
) -> Answer {
    let access: Access = auth::caller(&dlq.node, &headers)?;
    auth::require_write(access)?;
    let selection = selection(body)?;
    purged(&dlq, stages::REJECTED, &selection).await
}

/// Whether any string in `value` is one of `ids`.
fn mentions(value: &Value, ids: &std::collections::HashSet<&str>) -> bool {
    match value {
        Value::String(s) => ids.contains(s.as_str()),
        Value::Array(items) => items.iter().any(|v| mentions(v, ids)),
        Value::Object(map) => map.values().any(|v| mentions(v, ids)),
        _ => false,
    }
}

/// Removes every dead letter and rejected event that names one of `ids` (as any string value
/// of the entry: the event's `user_id` or `anonymous_id`, or where a destination's payload put
/// them). Returns (dead letters, rejected events) removed.
pub async fn erase_mentions(
    bus: &AnyBus,
    node: &NodeState,
    ids: &std::collections::HashSet<&str>,
) -> Result<(u64, u64), sluice_bus::BusError> {
    let mut stages_of: Vec<String> = node
        .current()
        .map(|config| {
            config
                .pipelines
                .iter()
                .flat_map(|p| {
                    p.spec
                        .destinations
                        .iter()
                        .map(|d| stages::dlq(&p.id, &d.name))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .unwrap_or_default();
    stages_of.push(stages::REJECTED.to_owned());
    let (mut dead, mut rejected) = (0, 0);
    for stage in stages_of {
        let mut cursor = 0;
        loop {
            let page = bus.browse(&stage, cursor, PAGE).await?;
            let Some(end) = page.last().map(|(c, _)| *c) else {
                break;
            };
            cursor = end;
            let gone: Vec<u64> = page
                .iter()
                .filter(|(_, m)| {
                    serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| mentions(&v, ids))
                })
                .map(|(c, _)| *c)
                .collect();
            if !gone.is_empty() {
                let removed = bus.remove(&stage, &gone).await?;
                if stage == stages::REJECTED {
                    rejected += removed;
                } else {
                    dead += removed;
                }
            }
        }
    }
    Ok((dead, rejected))
}
