//! Short-lived tokens that let a signed-in person query their data planes' archives, watch
//! events live and browse dead-letter queues straight from the browser: the data plane verifies them with the public keys in its configuration,
//! so the query and its results never pass through the control plane.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::common::require_role;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::role::Role;
use crate::state::AppState;

/// How long a query token lives, in seconds.
pub const QUERY_TOKEN_TTL_SECS: i64 = 600;

#[derive(Debug, Serialize, Deserialize)]
struct QueryClaims {
    sub: String,
    tenant: String,
    /// The person's role in the tenant: a data plane lets viewers read (query, the live
    /// inspector, traces, DLQ listings) and members and above also replay or purge.
    role: String,
    aud: String,
    iss: String,
    iat: i64,
    exp: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryToken {
    /// Send as `Authorization: Bearer` to a data plane's browser-facing APIs: `POST
    /// /v1/query`, `GET /v1/live`, `GET /v1/events/{id}/trace` and the DLQ.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    pub tenant_id: String,
}

/// A token for querying the tenant's archive on its data planes (audience `query`).
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/query-token", tag = "query", security(("bearer" = [])),
    params(("tenant_id" = String, Path)),
    responses((status = 200, body = QueryToken)))]
pub async fn issue_query_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<axum::Json<QueryToken>, ApiError> {
    // The tenant check comes first so that a key outside the tenant gets the same 404 as
    // every other route gives it: which tenants exist does not leak.
    let role = require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let Principal::User { id, .. } = &principal else {
        return Err(ApiError::forbidden(
            "query tokens are for people; a key queries the data plane directly",
        ));
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = QueryClaims {
        sub: id.clone(),
        tenant: tenant_id.clone(),
        role: role.as_str().to_owned(),
        aud: sluice_keys::QUERY_AUDIENCE.to_owned(),
        iss: state.jwt.issuer().to_owned(),
        iat: now,
        exp: now + QUERY_TOKEN_TTL_SECS,
    };
    let token = state.jwt.sign(&claims)?;
    Ok(axum::Json(QueryToken {
        token,
        expires_in: QUERY_TOKEN_TTL_SECS,
        tenant_id,
    }))
}
