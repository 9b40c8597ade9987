//! The receiver: the Segment HTTP tracking API, so existing analytics SDKs send to Sluice
//! unchanged. A request is acknowledged only once every event in it is durably on the bus's
//! `raw` stage, all or none.

#[cfg(test)]
mod fuzz;
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

use crate::applied::{AppliedConfig, AppliedPipeline, IngestKeyEntry};
use crate::http::{ApiError, Authorization};
use crate::state::NodeState;
use limits::SourceLimits;
pub(crate) use segment::CALL_TYPES;
use sluice_bus::{AnyBus, Bus, BusError, Message};
use sluice_pipeline::envelope::{MAX_EVENT_DEPTH, nesting_depth};
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
) -> Result<(&'c AppliedPipeline, &'c IngestKeyEntry), ApiError> {
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

/// The body, gunzipped when sent with `Content-Encoding: gzip`, at most `limit` bytes (a
/// single event's or a batch's), with events nested at most [`MAX_EVENT_DEPTH`] levels.
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
    // A batch wraps its events in two levels: `{"batch": [...]}`.
    let wrapping = if limit == MAX_EVENT_BYTES { 0 } else { 2 };
    if nesting_depth(&bytes) > MAX_EVENT_DEPTH + wrapping {
        return Err(bad(format!(
            "an event nests objects and arrays deeper than {MAX_EVENT_DEPTH} levels"
        )));
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
    let (pipeline, source, key_id) = if let Some(signed) = signature::Signed::from_headers(headers)?
    {
        let (entry, pipeline) = config
            .ingest_key_by_id(&signed.key_id, now)
            .ok_or_else(unauthorized)?;
        signed.verify(&entry.sha256, raw_body, now)?;
        (pipeline, entry.source.as_str(), entry.public_id.as_str())
    } else {
        let key = write_key(headers, request.write_key.as_deref()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "send the write key as the Basic auth user or as Authorization: Bearer, or sign the request",
            )
        })?;
        let (pipeline, entry) = ingest_source(&config, &key, now)?;
        (pipeline, entry.source.as_str(), entry.public_id.as_str())
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
            let counters = &receiver.node.counters;
            counters
                .received
                .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
            counters.add_key_use(key_id, &pipeline.id, source, count, now);
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    fn headers(encoding: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(encoding) = encoding {
            headers.insert(header::CONTENT_ENCODING, encoding.parse().expect("value"));
        }
        headers
    }

    #[test]
    fn bodies_are_read_within_their_limits() {
        let event = br#"{"userId":"u","event":"x"}"#.to_vec();
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        // Compresses to a few hundred bytes, inflates past the batch limit: a gzip bomb.
        let bomb = gzip(&vec![b' '; MAX_BATCH_BYTES * 4]);
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
        type Case = (
            Option<&'static str>,
            Vec<u8>,
            usize,
            Result<usize, ErrorCode>,
        );
        let cases: Vec<Case> = vec![
            (None, event.clone(), MAX_EVENT_BYTES, Ok(event.len())),
            (
                Some("identity"),
                event.clone(),
                MAX_EVENT_BYTES,
                Ok(event.len()),
            ),
            (Some("gzip"), gzip(&event), MAX_EVENT_BYTES, Ok(event.len())),
            (
                Some(" GZIP "),
                gzip(&event),
                MAX_EVENT_BYTES,
                Ok(event.len()),
            ),
            (
                None,
                big.clone(),
                MAX_EVENT_BYTES,
                Err(ErrorCode::PayloadTooLarge),
            ),
            (None, big.clone(), MAX_BATCH_BYTES, Ok(big.len())),
            (
                Some("gzip"),
                gzip(&big),
                MAX_EVENT_BYTES,
                Err(ErrorCode::PayloadTooLarge),
            ),
            (
                Some("gzip"),
                bomb,
                MAX_BATCH_BYTES,
                Err(ErrorCode::PayloadTooLarge),
            ),
            (
                Some("gzip"),
                b"not gzip".to_vec(),
                MAX_EVENT_BYTES,
                Err(ErrorCode::BadRequest),
            ),
            (
                Some("br"),
                event.clone(),
                MAX_EVENT_BYTES,
                Err(ErrorCode::UnsupportedMediaType),
            ),
            (
                None,
                deep(MAX_EVENT_DEPTH),
                MAX_EVENT_BYTES,
                Ok(MAX_EVENT_DEPTH * 2),
            ),
            (
                None,
                deep(MAX_EVENT_DEPTH + 1),
                MAX_EVENT_BYTES,
                Err(ErrorCode::BadRequest),
            ),
            // A batch's own two levels do not count against its events.
            (
                None,
                deep(MAX_EVENT_DEPTH + 2),
                MAX_BATCH_BYTES,
                Ok(MAX_EVENT_DEPTH * 2 + 4),
            ),
            (
                None,
                deep(MAX_EVENT_DEPTH + 3),
                MAX_BATCH_BYTES,
                Err(ErrorCode::BadRequest),
            ),
        ];
        for (i, (encoding, body, limit, want)) in cases.into_iter().enumerate() {
            let body = Bytes::from(body);
            let got = read_body(&headers(encoding), &body, limit)
                .map(|b| b.len())
                .map_err(|e| e.code());
            assert_eq!(got, want, "case {i}: {encoding:?}, limit {limit}");
        }
    }

    #[test]
    fn the_write_key_comes_from_basic_bearer_or_the_body() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().expect("value"));
            headers
        };
        let cases: Vec<(HeaderMap, Option<&str>, Option<&str>)> = vec![
            (with("Basic d2s6"), None, Some("wk")),
            (with("Basic d2s6"), Some("body"), Some("wk")),
            (with("Bearer wk"), None, Some("wk")),
            (HeaderMap::new(), Some("body"), Some("body")),
            (HeaderMap::new(), None, None),
            // A header this node cannot read is not overridden by the body.
            (with("Digest x"), Some("body"), None),
            (with("Basic !!"), Some("body"), None),
        ];
        for (headers, body, want) in cases {
            assert_eq!(
                write_key(&headers, body).as_deref(),
                want,
                "{headers:?} {body:?}"
            );
        }
    }
}
