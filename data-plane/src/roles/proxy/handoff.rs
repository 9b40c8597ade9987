//! Cross-domain handoff at the proxy (see [`sluice_identity::handoff`]): `POST /v1/handoff`
//! gives `sluice.js` a token for its visitor and the tenant's other domains to add it to;
//! `POST /v1/handoff/accept` on the other domain's proxy checks the token, accepts it once,
//! and sets that domain's first-party cookie to the same visitor id. `sluice.js` holds a
//! handed-off visitor's events until that answer, and adds the token to links at `mousedown`
//! and `click`, so the token is fresh when the browser follows the link.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_identity::handoff::{HandoffError, MAX_LIFETIME_SECS, PARAM};
use sluice_proto::ErrorCode;
use sluice_proto::spec::GovernanceStep;

use super::cookie;
use super::edge::{Proxy, cors, source_of};
use crate::http::ApiError;
use crate::roles::receiver::{MAX_EVENT_BYTES, read_body, rejected};
use sluice_pipeline::time::now_ms;

/// How long a used token's nonce is remembered: past its lifetime, with room for clocks.
const CLAIM_SECS: u64 = MAX_LIFETIME_SECS as u64 + 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoffBody {
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// What both endpoints check first: the body, a configuration, and a source that admits
/// the write key from this origin. Gives the body, the tenant, the pipeline's other domains
/// and the time.
fn admit<'h>(
    proxy: &Proxy,
    headers: &'h HeaderMap,
    body: Result<Bytes, BytesRejection>,
    origin: &mut Option<&'h str>,
) -> Result<(HandoffBody, String, Vec<String>, i64), ApiError> {
    let raw = body.map_err(rejected)?;
    let bytes = read_body(headers, &raw, MAX_EVENT_BYTES)?;
    let body: HandoffBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed handoff request: {e}")))?;
    let config = proxy
        .node
        .current()
        .ok_or_else(ApiError::no_configuration)?;
    let now = now_ms();
    let (pipeline, _, _) = source_of(&config, headers, body.write_key.as_deref(), now, origin)?;
    let domains = match pipeline.spec.identity_step() {
        Some(GovernanceStep::Identity { cross_domain, .. }) => cross_domain.clone(),
        _ => Vec::new(),
    };
    Ok((body, config.tenant_id.clone(), domains, now))
}

fn visitors(proxy: &Proxy) -> Result<Arc<crate::visitors::Visitors>, ApiError> {
    proxy
        .node
        .visitors
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "this proxy keeps no identities"))
}

/// The answer, with the cookies to set and CORS for the origin when it was allowed.
fn answer(outcome: Result<(Value, Vec<String>), ApiError>, origin: Option<&str>) -> Response {
    let mut response = match outcome {
        Ok((body, cookies)) => {
            let mut response = axum::Json(body).into_response();
            for set in cookies {
                if let Ok(value) = HeaderValue::from_str(&set) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(origin) = origin {
        cors(response.headers_mut(), origin);
    }
    response
}

pub(super) async fn issue(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut origin = None;
    let outcome = issued(&proxy, &headers, body, &mut origin);
    answer(outcome, origin)
}

fn issued<'h>(
    proxy: &Proxy,
    headers: &'h HeaderMap,
    body: Result<Bytes, BytesRejection>,
    origin: &mut Option<&'h str>,
) -> Result<(Value, Vec<String>), ApiError> {
    let (_, _, domains, now) = admit(proxy, headers, body, origin)?;
    // A site without other domains asks too; it hears there are none.
    if domains.is_empty() {
        return Ok((json!({"domains": []}), Vec::new()));
    }
    let visitors = visitors(proxy)?;
    let visitor = cookie::visitor_id(headers, &proxy.config.cookie_name)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let token = visitors
        .handoff
        .issue(&visitor, now / 1000, MAX_LIFETIME_SECS)
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "cannot make a handoff token"))?;
    Ok((
        json!({"token": token, "domains": domains, "param": PARAM, "expires_in": MAX_LIFETIME_SECS}),
        vec![cookie::set_cookie(&proxy.config, &visitor)],
    ))
}

pub(super) async fn accept(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut origin = None;
    let outcome = accepted(&proxy, &headers, body, &mut origin).await;
    answer(outcome, origin)
}

async fn accepted<'h>(
    proxy: &Proxy,
    headers: &'h HeaderMap,
    body: Result<Bytes, BytesRejection>,
    origin: &mut Option<&'h str>,
) -> Result<(Value, Vec<String>), ApiError> {
    let (body, tenant, _, now) = admit(proxy, headers, body, origin)?;
    let token = body
        .token
        .ok_or_else(|| ApiError::bad_request("token: the handoff token is required"))?;
    let visitors = visitors(proxy)?;
    let handoff = visitors
        .handoff
        .verify(&token, now / 1000)
        .map_err(|e| match e {
            HandoffError::Malformed => ApiError::bad_request(e.to_string()),
            HandoffError::BadSignature | HandoffError::Expired => {
                ApiError::new(ErrorCode::Forbidden, e.to_string())
            }
        })?;
    let nonce = handoff.nonce.clone();
    let fresh = tokio::task::spawn_blocking(move || {
        visitors
            .identities
            .kv()
            .claim(&tenant, &nonce, std::time::Duration::from_secs(CLAIM_SECS))
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()).retry_after(1))?;
    if !fresh {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this handoff token was used already",
        ));
    }
    tracing::debug!("visitor handed off from another domain");
    Ok((
        json!({"accepted": true}),
        vec![cookie::set_cookie(&proxy.config, &handoff.visitor)],
    ))
}
