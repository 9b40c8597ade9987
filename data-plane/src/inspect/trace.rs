//! `GET /v1/events/{event_id}/trace`: every stage one event passed on this node — from the
//! inspector's ring while it holds the event, and from the archive and the dead-letter queues
//! after that (or when the inspector is off).

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_bus::{AnyBus, Bus as _};
use sluice_pipeline::stages;
use sluice_proto::ErrorCode;

use super::tap::{Stage, TapRecord};
use super::view::record_json;
use crate::http::ApiError;
use crate::state::NodeState;

/// Entries of each dead-letter queue read, at most, looking for one event: a trace must
/// answer quickly even when a queue holds millions.
const DLQ_SCAN: usize = 10_000;
const DLQ_PAGE: usize = 500;
/// Longest event id looked up.
const MAX_ID: usize = 256;

/// Where a trace looks once the ring has let the event go.
pub struct Archive {
    pub store: Arc<dyn object_store::ObjectStore>,
    pub engine: sluice_query::QueryEngine,
}

pub async fn trace(
    node: &NodeState,
    bus: &AnyBus,
    archive: Option<&Archive>,
    event_id: &str,
) -> Result<Value, ApiError> {
    if event_id.is_empty() || event_id.len() > MAX_ID || event_id.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("event_id: 1 to {MAX_ID} printable characters"),
        ));
    }
    let config = node.current().ok_or_else(|| {
        ApiError::new(ErrorCode::Unavailable, "no configuration yet").retry_after(5)
    })?;
    let held = node.tap.of_event(event_id);
    let in_ring = !held.is_empty();
    let stages_json: Vec<Value> = held.iter().map(|r| record_json(r)).collect();
    let archived_in_ring = held.iter().any(|r| r.stage == Stage::Archived);
    let dead_lettered_in_ring: Vec<&TapRecord> = held
        .iter()
        .map(Arc::as_ref)
        .filter(|r| {
            matches!(
                r.detail,
                super::tap::Detail::Outcome {
                    outcome: super::tap::Outcome::DeadLettered,
                    ..
                }
            )
        })
        .collect();

    // The DLQ entries: from the ring when it saw them, else from the queues themselves.
    let mut dlq = Vec::new();
    let mut dlq_complete = true;
    if dead_lettered_in_ring.is_empty() {
        for pipeline in &config.pipelines {
            for destination in &pipeline.spec.destinations {
                let stage = stages::dlq(&pipeline.id, &destination.name);
                let (found, complete) = scan(bus, &stage, event_id).await?;
                dlq_complete &= complete;
                dlq.extend(found);
            }
        }
    } else {
        for record in dead_lettered_in_ring {
            dlq.push(record_json(record)["body"].clone());
        }
    }
    let (rejected, rejected_complete) = if in_ring {
        (Vec::new(), true)
    } else {
        scan(bus, stages::REJECTED, event_id).await?
    };

    let mut archived = Value::Null;
    if !archived_in_ring && let Some(archive) = archive {
        archived = from_archive(archive, &config.tenant_id, event_id).await?;
    }
    let found = in_ring || !dlq.is_empty() || !rejected.is_empty() || !archived.is_null();
    if !found {
        let ring = node.tap.stats();
        return Err(ApiError::new(
            ErrorCode::NotFound,
            match ring {
                Some(ring) if archive.is_some() => format!(
                    "no event {event_id:?} on this node: not in the inspector's ring (it holds the last {} records), a dead-letter queue, the rejected events or the archive (events reach the archive when the archiver flushes)",
                    ring.records
                ),
                Some(ring) => format!(
                    "no event {event_id:?} on this node: not in the inspector's ring (it holds the last {} records), a dead-letter queue or the rejected events; this node does not run the query role, so the archive was not searched",
                    ring.records
                ),
                None => format!(
                    "no event {event_id:?} on this node (the inspector is off, so only the dead-letter queues, the rejected events and the archive were searched)"
                ),
            },
        ));
    }
    Ok(json!({
        "event_id": event_id,
        "node_id": node.node_id,
        "from": if in_ring { "ring" } else { "archive" },
        "stages": stages_json,
        "dlq": dlq,
        "rejected": rejected,
        "archive": archived,
        "complete": dlq_complete && rejected_complete,
    }))
}

/// Entries of one stage with the event's id (its replays included), and whether the whole
/// stage was read.
async fn scan(bus: &AnyBus, stage: &str, event_id: &str) -> Result<(Vec<Value>, bool), ApiError> {
    let mut found = Vec::new();
    let mut cursor = 0;
    let mut read = 0;
    while read < DLQ_SCAN {
        let page = bus.browse(stage, cursor, DLQ_PAGE).await.map_err(|e| {
            ApiError::new(ErrorCode::Unavailable, format!("bus: {e}")).retry_after(1)
        })?;
        let last = page.len() < DLQ_PAGE;
        for (at, message) in &page {
            cursor = *at;
            if stages::event_id(&message.id) == event_id {
                let mut entry: Value =
                    serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut entry {
                    map.insert("cursor".into(), (*at).into());
                    map.insert("stage".into(), stage.into());
                }
                found.push(entry);
            }
        }
        read += page.len();
        if last {
            return Ok((found, true));
        }
    }
    Ok((found, false))
}

/// The archived copies of the event: the row and the file holding it.
async fn from_archive(
    archive: &Archive,
    tenant_id: &str,
    event_id: &str,
) -> Result<Value, ApiError> {
    // Single quotes doubled: the id is a string literal, never SQL.
    let literal = event_id.replace('\'', "''");
    let sql = format!(
        "SELECT dataset, dt, hour, event_id, type, event, name, source, pipeline_id, user_id, anonymous_id, \
         CAST(received_at AS VARCHAR) AS received_at, properties, context FROM events WHERE event_id = '{literal}' LIMIT 10"
    );
    let result = archive
        .engine
        .run(tenant_id, &sql)
        .await
        .map_err(|e| ApiError::new(e.code(), format!("archive: {e}")))?;
    let rows = sluice_query::output::json_rows(&result.batches)
        .map_err(|e| ApiError::new(e.code(), format!("archive: {e}")))?;
    let rows = match rows {
        Value::Array(rows) if !rows.is_empty() => rows,
        _ => return Ok(Value::Null),
    };
    let mut copies = Vec::new();
    for row in rows {
        let part = |key: &str| {
            row.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (dataset, dt, hour) = (part("dataset"), part("dt"), part("hour"));
        let files = sluice_archive::locate::files_holding(
            &archive.store,
            tenant_id,
            (&dataset, &dt, &hour),
            event_id,
        )
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("archive: {e}")))?;
        copies.push(json!({ "row": row, "files": files }));
    }
    Ok(json!({ "copies": copies }))
}
