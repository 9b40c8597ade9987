//! The fleet: every data-plane node of a tenant, as it last reported.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::common::{List, require_role, rfc3339};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::role::Role;
use crate::state::AppState;
use crate::store::{NodeRecord, now_ms};

#[derive(Debug, Serialize, ToSchema)]
pub struct DataPlaneView {
    /// The node's stable id.
    pub id: String,
    pub name: String,
    pub agent_version: String,
    pub roles: Vec<String>,
    /// Whether the node has a config-sync stream open now.
    pub connected: bool,
    /// The configuration version the node runs.
    pub applied_version: i64,
    /// The tenant's current configuration version, for comparison.
    pub config_version: i64,
    /// A version the node refused (not sent again until the configuration changes).
    pub nacked_version: Option<i64>,
    pub first_seen_at: String,
    pub last_seen_at: String,
    /// Why the node last refused a configuration, or the last error it reported.
    pub last_error: Option<String>,
    /// received, delivered, failed, dlq_depth, archived, …
    #[schema(value_type = Object)]
    pub counters: serde_json::Value,
    /// How each destination is doing: `state` (ok, failing, idle), the vendor's last error,
    /// delivered / retried / failed over the last 5 minutes and 24 hours.
    #[schema(value_type = Vec<Object>)]
    pub destinations: serde_json::Value,
    /// Where clients reach the node, by role (`receiver`, `proxy`, `query`), as it advertised.
    #[schema(value_type = Object)]
    pub urls: serde_json::Value,
}

fn view(node: NodeRecord, config_version: i64, stale_after_ms: i64) -> DataPlaneView {
    // A replica that died cannot mark its streams closed; silence says it for them.
    let connected = node.connected == 1 && now_ms() - node.last_seen_at < stale_after_ms;
    DataPlaneView {
        roles: serde_json::from_str(&node.roles).unwrap_or_default(),
        counters: serde_json::from_str(&node.counters).unwrap_or_else(|_| serde_json::json!({})),
        destinations: serde_json::from_str(&node.destinations)
            .unwrap_or_else(|_| serde_json::json!([])),
        urls: serde_json::from_str(&node.urls).unwrap_or_else(|_| serde_json::json!({})),
        id: node.id,
        name: node.name,
        agent_version: node.agent_version,
        connected,
        applied_version: node.applied_version,
        config_version,
        nacked_version: node.nacked_version,
        first_seen_at: rfc3339(node.first_seen_at),
        last_seen_at: rfc3339(node.last_seen_at),
        last_error: node.last_error,
    }
}

/// The tenant's data planes with their latest status.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/data-planes", tag = "fleet", security(("bearer" = [])),
    params(("tenant_id" = String, Path)),
    responses((status = 200, body = List<DataPlaneView>)))]
pub async fn list_data_planes(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<axum::Json<List<DataPlaneView>>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let tenant = state
        .store
        .tenant(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    let nodes = state.store.nodes(&tenant_id).await?;
    let stale_after_ms =
        i64::try_from((state.config.sync_idle_timeout * 2).as_millis()).unwrap_or(i64::MAX);
    Ok(axum::Json(List {
        data: nodes
            .into_iter()
            .map(|n| view(n, tenant.config_version, stale_after_ms))
            .collect(),
    }))
}
