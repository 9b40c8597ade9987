//! The receiver: the Segment HTTP tracking API, so existing analytics SDKs send to Sluice
//! unchanged. A request is acknowledged only once every event in it is durably on the bus's
//! `raw` stage, all or none.

mod envelope;
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
use base64::Engine as _;
use serde_json::{Value, json};
use sluice_keys::{KeyType, ParsedKey};
use sluice_proto::ErrorCode;

use crate::applied::{AppliedConfig, AppliedPipeline};
use crate::bus::{AnyBus, Bus, BusError, Message};
use crate::node::{NodeState, now_ms};
pub use envelope::{Envelope, rfc3339};
use limits::SourceLimits;

/// Segment's limit on one event, in bytes.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Segment's limit on one batch request, in bytes (after decompression).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// What the envelope adds to an event (tenant, pipeline, source, ids, times), in bytes.
const ENVELOPE_OVERHEAD: usize = 512;
/// The stage events are published to.
pub const RAW_STAGE: &str = "raw";

pub(crate) const CALL_TYPES: [&str; 6] = ["track", "page", "screen", "identify", "group", "alias"];

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

/// An error answered to a sender, in the shape every Sluice API uses.
#[derive(Debug)]
pub struct ReceiveError {
    code: ErrorCode,
    message: String,
    retry_after: Option<u64>,
}

impl ReceiveError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, telling the sender when to retry (`Retry-After`, in seconds).
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for ReceiveError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut response = (self.code.http_status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

pub(crate) fn bad(message: impl Into<String>) -> ReceiveError {
    ReceiveError::new(ErrorCode::BadRequest, message)
}

async fn single(
    State(receiver): State<Arc<Receiver>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ReceiveError> {
    let raw = body.map_err(rejected)?;
    if !CALL_TYPES.contains(&call.as_str()) {
        return Err(ReceiveError::new(
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
) -> Result<Response, ReceiveError> {
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
) -> Result<(&'c AppliedPipeline, &'c str), ReceiveError> {
    let unauthorized = || {
        ReceiveError::new(
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
pub(crate) fn rejected(rejection: BytesRejection) -> ReceiveError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ReceiveError::new(ErrorCode::PayloadTooLarge, "the request exceeds 500 KB")
    } else {
        bad(rejection.body_text())
    }
}

pub(crate) fn parse(body: &[u8]) -> Result<Value, ReceiveError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))
}

/// The body, gunzipped when sent with `Content-Encoding: gzip`, at most `limit` bytes.
pub(crate) fn read_body<'b>(
    headers: &HeaderMap,
    body: &'b Bytes,
    limit: usize,
) -> Result<Cow<'b, [u8]>, ReceiveError> {
    let too_large = || {
        ReceiveError::new(
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
            return Err(ReceiveError::new(
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

/// The write key: HTTP Basic user (Segment's libraries), Bearer, or `writeKey` in the body.
pub(crate) fn write_key(headers: &HeaderMap, in_body: Option<&str>) -> Option<String> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(header) = header {
        let (scheme, value) = header.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            return Some(
                text.split_once(':')
                    .map_or(text.clone(), |(user, _)| user.to_owned()),
            );
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(value.trim().to_owned());
        }
        return None;
    }
    in_body.map(str::to_owned)
}

async fn receive(
    receiver: &Receiver,
    headers: &HeaderMap,
    raw_body: &[u8],
    request: segment::Request<'_>,
) -> Result<Response, ReceiveError> {
    let Some(config) = receiver.node.current() else {
        return Err(ReceiveError {
            retry_after: Some(5),
            ..ReceiveError::new(ErrorCode::Unavailable, "no configuration yet")
        });
    };
    let unauthorized = || {
        ReceiveError::new(
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
            ReceiveError::new(
                ErrorCode::Unauthorized,
                "send the write key as the Basic auth user or as Authorization: Bearer, or sign the request",
            )
        })?;
        ingest_source(&config, &key, now)?
    };
    if request.events.is_empty() {
        return Ok(success());
    }
    let received_at = envelope::rfc3339(now);
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
            return Err(ReceiveError::new(
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
        return Err(ReceiveError {
            retry_after: Some(wait),
            ..ReceiveError::new(
                ErrorCode::RateLimited,
                format!("source {source} is over its rate limit"),
            )
        });
    }
    let count = messages.len() as u64;
    match receiver.bus.publish(RAW_STAGE, messages).await {
        Ok(()) => {
            receiver
                .node
                .counters
                .received
                .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
            Ok(success())
        }
        Err(BusError::Full { retry_after, .. }) => Err(ReceiveError {
            retry_after: Some(retry_after.as_secs().max(1)),
            ..ReceiveError::new(
                ErrorCode::Unavailable,
                "the event queue is full; retry later",
            )
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot put events on the bus");
            Err(ReceiveError {
                retry_after: Some(1),
                ..ReceiveError::new(
                    ErrorCode::Unavailable,
                    "the event queue is unavailable; retry later",
                )
            })
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
