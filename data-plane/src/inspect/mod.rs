//! The live inspector: taps at every stage of the node ([`tap`]), the live stream of what
//! passes them and the trace of one event ([`trace`]), served by the node itself so that the
//! browser talks to the data plane and no event byte reaches the control plane.
//!
//! ```text
//! GET /v1/live?pipeline=&source=&destination=&stage=&event=&user=&outcome=&backlog=
//!                                   Server-Sent Events: `hello`, then a `record` per stage
//!                                   passed, `lagged` when the viewer fell behind
//! GET /v1/events/{event_id}/trace   every stage one event passed, with the DLQ entry and
//!                                   the archive file
//! GET /v1/inspect                   the ring's size and limits
//! ```
//!
//! Who may call: as the query role (a key of the tenant, or a console token; viewers too).

pub mod tap;
pub mod trace;
pub mod view;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use serde_json::{Value, json};
use sluice_bus::AnyBus;
use sluice_proto::ErrorCode;
use tokio::sync::{broadcast, watch};

use crate::http::{ApiError, auth};
use crate::state::NodeState;
use view::{Filter, FilterQuery, lagged_json, record_json};

/// Records from the ring a new viewer gets first, unless it asks for another number.
const DEFAULT_BACKLOG: usize = 100;

struct Inspector {
    node: Arc<NodeState>,
    bus: AnyBus,
    archive: Option<trace::Archive>,
    stop: watch::Receiver<bool>,
}

pub fn router(
    node: Arc<NodeState>,
    bus: AnyBus,
    archive: Option<Arc<dyn object_store::ObjectStore>>,
    stop: watch::Receiver<bool>,
) -> Router {
    let cors = crate::http::browser_cors(&node.config.policy);
    let archive = archive.map(|store| trace::Archive {
        engine: sluice_query::QueryEngine::new(store.clone(), node.config.query.clone()),
        store,
    });
    Router::new()
        .route("/v1/live", get(live))
        .route("/v1/events/{event_id}/trace", get(event_trace))
        .route("/v1/inspect", get(ring))
        .layer(cors)
        .with_state(Arc::new(Inspector {
            node,
            bus,
            archive,
            stop,
        }))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn off() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "the live inspector is off on this node (SLUICE_INSPECT_RING_RECORDS=0)",
    )
}

async fn ring(
    State(api): State<Arc<Inspector>>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    auth::caller(&api.node, &headers)?;
    let (Some(stats), Some(config)) = (api.node.tap.stats(), api.node.tap.config()) else {
        return Err(off());
    };
    Ok(axum::Json(json!({
        "node_id": api.node.node_id,
        "records": stats.records,
        "bytes": stats.bytes,
        "first_seq": stats.first_seq,
        "oldest_at": stats.oldest_ms.map(sluice_pipeline::time::rfc3339),
        "ring_records": config.ring_records,
        "ring_bytes": config.ring_bytes,
        "viewers": api.node.tap.viewers(),
    })))
}

async fn event_trace(
    State(api): State<Arc<Inspector>>,
    headers: HeaderMap,
    event_id: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    auth::caller(&api.node, &headers)?;
    let Path(event_id) = event_id.map_err(|e| bad(e.body_text()))?;
    trace::trace(&api.node, &api.bus, api.archive.as_ref(), &event_id)
        .await
        .map(axum::Json)
}

/// What one viewer's stream holds between records.
struct Viewer {
    live: broadcast::Receiver<Arc<tap::TapRecord>>,
    filter: Filter,
    /// Records up to this one were in the backlog (or not wanted by it).
    upto: u64,
    stop: watch::Receiver<bool>,
}

fn record_event(record: &tap::TapRecord) -> Event {
    let event = Event::default().event("record").id(record.seq.to_string());
    event
        .json_data(record_json(record))
        .unwrap_or_else(|_| Event::default().event("record").data("{}"))
}

async fn live(
    State(api): State<Arc<Inspector>>,
    headers: HeaderMap,
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    auth::caller(&api.node, &headers)?;
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let mut filter = Filter::new(&query).map_err(bad)?;
    let tap = &api.node.tap;
    // Subscribed before the backlog is read, so nothing falls between the two.
    let live = tap.subscribe().ok_or_else(off)?;
    let ring = tap.config().map_or(0, |c| c.ring_records);
    let backlog = query.backlog.unwrap_or(DEFAULT_BACKLOG).min(ring);
    let mut upto = 0;
    let held = tap.held(backlog, |r| {
        upto = upto.max(r.seq);
        filter.matches(r)
    });
    let hello = Event::default()
        .event("hello")
        .json_data(json!({
            "node_id": api.node.node_id,
            "backlog": held.len(),
            "ring": tap.stats().map(|s| json!({"records": s.records, "bytes": s.bytes})),
        }))
        .unwrap_or_default();
    let first: Vec<Result<Event, Infallible>> = std::iter::once(hello)
        .chain(held.iter().map(|r| record_event(r)))
        .map(Ok)
        .collect();
    let viewer = Viewer {
        live,
        filter,
        upto,
        stop: api.stop.clone(),
    };
    let rest = futures_util::stream::unfold(viewer, |mut viewer| async move {
        loop {
            let received = tokio::select! {
                () = crate::shutdown::until_true(&mut viewer.stop) => return None,
                received = viewer.live.recv() => received,
            };
            match received {
                Ok(record) => {
                    if record.seq <= viewer.upto || !viewer.filter.matches(&record) {
                        continue;
                    }
                    return Some((Ok(record_event(&record)), viewer));
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    let event = Event::default()
                        .event("lagged")
                        .json_data(lagged_json(skipped))
                        .unwrap_or_default();
                    return Some((Ok(event), viewer));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter(first), rest);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
