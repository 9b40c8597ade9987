//! The receiver: the Segment HTTP tracking API, so existing analytics SDKs send to Sluice
//! unchanged. A request is acknowledged only once every event in it is durably on the bus's
//! `raw` stage, all or none.

mod limits;
pub(crate) mod segment;
mod signature;

use std::borrow::Cow;
use std::io::Read as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use sluice_keys::{KeyType, ParsedKey};
use sluice_proto::ErrorCode;

use crate::applied::{AppliedConfig, AppliedPipeline};
use crate::http::{ApiError, Authorization};
use crate::state::NodeState;
use limits::SourceLimits;
pub(crate) use segment::CALL_TYPES;
use sluice_bus::{AnyBus, Bus, BusError, Message};
use sluice_pipeline::time::now_ms;
use sluice_pipeline::time::rfc3339;

/// Segment's limit on one event, in bytes.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Segment's limit on one batch request, in bytes (after decompression).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// What the envelope adds to an event (tenant, pipeline, source, ids, times), in bytes.
const ENVELOPE_OVERHEAD: usize = 512;
/// The stage events are published to.
pub const RAW_STAGE: &str = "raw";

struct Receiver {
    node: Arc<NodeState>,
    bus: AnyBus,
    limits: SourceLimits,
}

/// The receiver's routes.
pub fn router(node: Arc<NodeState>, bus: AnyBus) -> Router {
    let receiver = Arc::new(Receiver {
        node,
        bus,
        limits: SourceLimits::default(),
    });
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/import", post(batch))
        .route("/v1/{call}", post(single))
        // Compressed bodies are bounded here, decompressed ones in `read_body`.
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
        .with_state(receiver)
}

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

async fn single(
    State(receiver): State<Arc<Receiver>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body.map_err(rejected)?;
    if !CALL_TYPES.contains(&call.as_str()) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no such endpoint /v1/{call}"),
        ));
    }
    let body = read_body(&headers, &raw, MAX_EVENT_BYTES)?;
    let request = segment::Request::single(&call, &body).map_err(bad)?;
    receive(&receiver, &headers, &raw, request).await
}

async fn batch(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body.map_err(rejected)?;
    let body = read_body(&headers, &raw, MAX_BATCH_BYTES)?;
    let request = segment::Request::batch(&body).map_err(bad)?;
    receive(&receiver, &headers, &raw, request).await
}

/// The pipeline and source a write key sends to: an unexpired ingest key of this tenant's
/// configuration, else 401.
pub(crate) fn ingest_source<'c>(
    config: &'c AppliedConfig,
    key: &str,
    now: i64,
) -> Result<(&'c AppliedPipeline, &'c str), ApiError> {
    let unauthorized = || {
        ApiError::new(
            ErrorCode::Unauthorized,
            "unknown, revoked or expired write key",
        )
    };
    let key: ParsedKey = key.parse().map_err(|_| unauthorized())?;
    if key.key_type() != KeyType::Ingest {
        return Err(unauthorized());
    }
    config.ingest_source(&key, now).ok_or_else(unauthorized)
}

/// Prefixes an event's error with its place in a batch.
pub(crate) fn locate(batch: bool, i: usize, message: String) -> String {
    if batch {
        format!("batch[{i}]: {message}")
    } else {
        message
    }
}

/// A body the server would not read: too large (413), or the connection failed (400).
pub(crate) fn rejected(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "the request exceeds 500 KB")
    } else {
        bad(rejection.body_text())
    }
}

pub(crate) fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))
}

/// The body, gunzipped when sent with `Content-Encoding: gzip`, at most `limit` bytes.
pub(crate) fn read_body<'b>(
    headers: &HeaderMap,
    body: &'b Bytes,
    limit: usize,
) -> Result<Cow<'b, [u8]>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            if limit == MAX_EVENT_BYTES {
                "the event exceeds 32 KB"
            } else {
                "the batch exceeds 500 KB"
            },
        )
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let bytes = match encoding.trim().to_ascii_lowercase().as_str() {
        "gzip" => {
            let mut out = Vec::new();
            let decoder = flate2::read::GzDecoder::new(body.as_ref());
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("the body is not valid gzip: {e}")))?;
            Cow::Owned(out)
        }
        "identity" | "" => Cow::Borrowed(body.as_ref()),
        other => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("unsupported Content-Encoding {other}"),
            ));
        }
    };
    if bytes.len() > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The write key: HTTP Basic user (Segment's libraries), Bearer, or `writeKey` in the body
/// when no `Authorization` header is sent. A header this node cannot read sends no key.
pub(crate) fn write_key(headers: &HeaderMap, in_body: Option<&str>) -> Option<String> {
    if headers.contains_key(header::AUTHORIZATION) {
        return match Authorization::from_headers(headers)? {
            Authorization::Bearer(token) => Some(token.to_owned()),
            Authorization::Basic { user } => Some(user),
        };
    }
    in_body.map(str::to_owned)
}

async fn receive(
    receiver: &Receiver,
    headers: &HeaderMap,
    raw_body: &[u8],
    request: segment::Request<'_>,
) -> Result<Response, ApiError> {
    let Some(config) = receiver.node.current() else {
        return Err(ApiError::no_configuration());
    };
    let unauthorized = || {
        ApiError::new(
            ErrorCode::Unauthorized,
            "unknown, revoked or expired write key",
        )
    };
    let now = now_ms();
    let (pipeline, source) = if let Some(signed) = signature::Signed::from_headers(headers)? {
        let (entry, pipeline) = config
            .ingest_key_by_id(&signed.key_id, now)
            .ok_or_else(unauthorized)?;
        signed.verify(&entry.sha256, raw_body, now)?;
        (pipeline, entry.source.as_str())
    } else {
        let key = write_key(headers, request.write_key.as_deref()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "send the write key as the Basic auth user or as Authorization: Bearer, or sign the request",
            )
        })?;
        ingest_source(&config, &key, now)?
    };
    if request.events.is_empty() {
        return Ok(success());
    }
    let received_at = rfc3339(now);
    let stamp = segment::Stamp {
        tenant_id: &config.tenant_id,
        pipeline_id: &pipeline.id,
        source,
        received_at: &received_at,
    };
    // Every envelope goes into one buffer; each message is a slice of it.
    let mut buffer = Vec::with_capacity(raw_body.len() + request.events.len() * ENVELOPE_OVERHEAD);
    let mut spans = Vec::with_capacity(request.events.len());
    for (i, event) in request.events.iter().enumerate() {
        let at = |message: String| locate(request.batch, i, message);
        let start = buffer.len();
        let id = event
            .write_envelope(&stamp, &mut buffer)
            .map_err(|message| bad(at(message)))?;
        // The envelope is the event plus a few hundred bytes of ids and times.
        if buffer.len() - start > MAX_EVENT_BYTES + ENVELOPE_OVERHEAD {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                at("the event exceeds 32 KB".into()),
            ));
        }
        spans.push((id, start..buffer.len()));
    }
    let buffer = Bytes::from(buffer);
    let messages: Vec<Message> = spans
        .into_iter()
        .map(|(id, span)| Message::new(id, buffer.slice(span)))
        .collect();
    let rate = pipeline
        .spec
        .sources
        .iter()
        .find(|s| s.name == source)
        .and_then(|s| s.rate_limit.as_ref());
    if let Some(rate) = rate
        && let Err(wait) = receiver
            .limits
            .take(&pipeline.id, source, rate, messages.len() as u32)
    {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("source {source} is over its rate limit"),
        )
        .retry_after(wait));
    }
    let count = messages.len() as u64;
    let started = std::time::Instant::now();
    let published = receiver.bus.publish(RAW_STAGE, messages).await;
    receiver
        .node
        .metrics
        .bus_publish(RAW_STAGE, started.elapsed());
    match published {
        Ok(()) => {
            receiver
                .node
                .counters
                .received
                .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
            Ok(success())
        }
        Err(BusError::Full { retry_after, .. }) => Err(ApiError::new(
            ErrorCode::Unavailable,
            "the event queue is full; retry later",
        )
        .retry_after(retry_after.as_secs().max(1))),
        Err(e) => {
            tracing::error!(error = %e, "cannot put events on the bus");
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "the event queue is unavailable; retry later",
            )
            .retry_after(1))
        }
    }
}

pub(crate) fn success() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"success":true}"#,
    )
        .into_response()
}
