//! Pieces every resource shares: timestamps, cursors, pages, audit events, access checks.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::role::Role;
use crate::state::AppState;
use crate::store::AuditEvent;

/// Default and largest page sizes.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

/// RFC 3339 in UTC for a Unix time in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A client's RFC 3339 time as Unix milliseconds.
pub fn parse_rfc3339(field: &str, text: &str) -> Result<i64, ApiError> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        ApiError::invalid(format!(
            "{field}: expected an RFC 3339 time such as 2030-01-31T12:00:00Z"
        ))
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::invalid(format!("{field}: out of range")))
}

/// An opaque cursor wrapping `position`.
pub fn encode_cursor(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

pub fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
        .ok_or_else(|| ApiError::bad_request("cursor: not a cursor this API returned"))
}

/// Cursor pagination parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 200. Default: 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

pub fn page_limit(limit: Option<u32>) -> Result<i64, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(i64::from(n)),
        _ => Err(ApiError::bad_request(format!(
            "limit: between 1 and {MAX_PAGE}"
        ))),
    }
}

/// A page of results.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A list that is never paginated.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// The audit event for an action by `principal` in `tenant_id`.
pub fn audit_event(
    principal: &Principal,
    ip: ClientIp,
    tenant_id: &str,
    action: &str,
    target: String,
    details: Option<serde_json::Value>,
) -> AuditEvent {
    AuditEvent {
        tenant_id: tenant_id.to_owned(),
        actor: principal.actor(),
        actor_name: principal.actor_name(),
        action: action.to_owned(),
        target,
        source_ip: ip.to_option_string(),
        details: details.map(|d| d.to_string()),
    }
}

/// The caller's role in `tenant_id`. A tenant the caller cannot see is 404, whether or not it
/// exists, so ids do not leak.
pub async fn tenant_role(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
) -> Result<Role, ApiError> {
    let hidden = || ApiError::not_found("tenant not found");
    match principal {
        Principal::User { id, .. } => state.store.role_of(id, tenant_id).await?.ok_or_else(hidden),
        Principal::ApiKey {
            tenant_id: own,
            role,
            ..
        } if own == tenant_id => Ok(*role),
        Principal::ServiceKey { tenant_id: own, .. } if own == tenant_id => {
            Err(ApiError::forbidden(
                "service keys may only check connectivity (GET /api/v1/tenants) and sync configuration",
            ))
        }
        _ => Err(hidden()),
    }
}

/// The caller's role in `tenant_id`, which must be at least `min`.
pub async fn require_role(
    state: &AppState,
    principal: &Principal,
    tenant_id: &str,
    min: Role,
) -> Result<Role, ApiError> {
    let role = tenant_role(state, principal, tenant_id).await?;
    if role < min {
        return Err(ApiError::forbidden(format!(
            "requires the {min} role in this tenant; you are {role}"
        )));
    }
    Ok(role)
}
