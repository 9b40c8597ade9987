use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::common::{
    Page, decode_cursor, encode_cursor, page_limit, parse_rfc3339, require_role, rfc3339,
};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::role::Role;
use crate::state::AppState;
use crate::store::{AuditEntry, AuditFilter};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 200. Default: 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Only this actor: `user:<id>` or `key:<id>`.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub actor: Option<String>,
    /// Only this action (`key.revoke`), or every action under a prefix ending in `.` (`key.`).
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub action: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[param(max_length = 64)]
    pub since: Option<String>,
    /// Only entries before this time (RFC 3339).
    #[param(max_length = 64)]
    pub until: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    /// `user:<id>` or `key:<id>`.
    pub actor: String,
    /// The actor's e-mail or key name.
    pub actor_name: String,
    pub action: String,
    pub target: String,
    pub source_ip: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
    pub created_at: String,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id.to_string(),
            actor: e.actor,
            actor_name: e.actor_name,
            action: e.action,
            target: e.target,
            source_ip: e.source_ip,
            details: e.details.and_then(|d| serde_json::from_str(&d).ok()),
            created_at: rfc3339(e.created_at),
        }
    }
}

fn filter_text(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) => Err(
            ApiError::bad_request(format!("{field}: 1 to 200 printable characters")),
        ),
        other => Ok(other),
    }
}

/// The tenant's audit log, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/audit", tag = "audit", security(("bearer" = [])),
    params(("tenant_id" = String, Path), AuditQuery),
    responses((status = 200, body = Page<AuditView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<axum::Json<Page<AuditView>>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let limit = page_limit(query.limit)?;
    let before_id = query
        .cursor
        .as_deref()
        .map(|c| {
            decode_cursor(c)?
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request("cursor: not a cursor this API returned"))
        })
        .transpose()?;
    let filter = AuditFilter {
        before_id,
        actor: filter_text("actor", query.actor)?,
        action: filter_text("action", query.action)?,
        since: query
            .since
            .as_deref()
            .map(|t| parse_rfc3339("since", t))
            .transpose()?,
        until: query
            .until
            .as_deref()
            .map(|t| parse_rfc3339("until", t))
            .transpose()?,
    };
    let mut entries = state.store.audit(&tenant_id, &filter, limit + 1).await?;
    let next_cursor = (entries.len() as i64 > limit).then(|| {
        entries.truncate(limit as usize);
        entries
            .last()
            .map(|e| encode_cursor(&e.id.to_string()))
            .unwrap_or_default()
    });
    Ok(axum::Json(Page {
        data: entries.into_iter().map(AuditView::from).collect(),
        next_cursor,
    }))
}
