//! What the proxy's endpoints share: its state, the origin check against a source's allowed
//! origins and the CORS answer that goes with it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use sluice_bus::embedded::EmbeddedBus;
use sluice_proto::ErrorCode;

use crate::config::ProxyConfig;
use crate::http::ApiError;
use crate::roles::receiver::{ingest_source, write_key};
use crate::state::NodeState;

pub(super) struct Proxy {
    pub(super) node: Arc<NodeState>,
    pub(super) spool: EmbeddedBus,
    pub(super) config: ProxyConfig,
    pub(super) collector_gzip: Bytes,
}

pub(super) fn origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| !o.is_empty())
}

pub(super) fn cors(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The pipeline and source of the request's write key (`(pipeline, source, key)`), its
/// origin checked against the source's allowed origins and kept for the CORS answer.
pub(super) fn source_of<'c, 'h>(
    config: &'c crate::applied::AppliedConfig,
    headers: &'h HeaderMap,
    body_key: Option<&str>,
    now: i64,
    allowed_origin: &mut Option<&'h str>,
) -> Result<(&'c sluice_pipeline::AppliedPipeline, String, String), ApiError> {
    let key_text = write_key(headers, body_key).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "send the write key as writeKey in the body, the Basic auth user or Authorization: Bearer",
        )
    })?;
    let (pipeline, key_entry) = ingest_source(config, &key_text, now)?;
    let source_name = key_entry.source.clone();
    let source = pipeline.spec.sources.iter().find(|s| s.name == source_name);
    if let Some(origin) = origin(headers) {
        if !source.is_some_and(|s| s.allows_origin(origin)) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "origin {origin} may not send to source {source_name}: add it to the source's allowed_origins"
                ),
            ));
        }
        *allowed_origin = Some(origin);
    }
    Ok((pipeline, source_name, key_text))
}
