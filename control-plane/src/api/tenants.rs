use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{
    Page, PageQuery, audit_event, decode_cursor, encode_cursor, page_limit, require_role, rfc3339,
    tenant_role,
};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientIp};
use crate::role::Role;
use crate::state::AppState;
use crate::store::{Tenant, TenantWithRole};
use crate::validate;

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    /// The caller's role; null for a service key.
    pub role: Option<Role>,
    /// Monotonic version of the tenant's configuration.
    pub config_version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl TenantView {
    fn new(tenant: Tenant, role: Option<Role>) -> Self {
        Self {
            created_at: rfc3339(tenant.created_at),
            updated_at: rfc3339(tenant.updated_at),
            id: tenant.id,
            name: tenant.name,
            role,
            config_version: tenant.config_version,
        }
    }
}

impl From<TenantWithRole> for TenantView {
    fn from(t: TenantWithRole) -> Self {
        Self::new(t.tenant, Some(t.role))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1 to 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameTenant {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
}

/// Create a tenant; the caller becomes its owner.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", security(("bearer" = [])), request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = TenantView),
        (status = 401, body = ErrorBody), (status = 403, description = "Keys cannot create tenants", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, axum::Json<TenantView>), ApiError> {
    let Principal::User { id: user_id, .. } = &principal else {
        return Err(ApiError::forbidden(
            "keys act within their own tenant and cannot create tenants",
        ));
    };
    let name = validate::name("name", &body.name)?;
    let audit = audit_event(
        &principal,
        ip,
        "",
        "tenant.create",
        String::new(),
        Some(serde_json::json!({ "name": name })),
    );
    let tenant = state.store.create_tenant(&name, user_id, audit).await?;
    tracing::info!(tenant_id = %tenant.id, "tenant created");
    Ok((
        StatusCode::CREATED,
        axum::Json(TenantView::new(tenant, Some(Role::Owner))),
    ))
}

/// The caller's tenants. With a key: exactly the key's own tenant (the connectivity check a
/// data-plane operator runs).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", security(("bearer" = [])), params(PageQuery),
    responses(
        (status = 200, description = "The caller's tenants", body = Page<TenantView>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    ))]
pub async fn list_tenants(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<TenantView>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let (own_tenant, role) = match &principal {
        Principal::User { id, .. } => {
            let mut rows = state
                .store
                .tenants_of_user(id, after.as_deref(), limit + 1)
                .await?;
            let next_cursor = (rows.len() as i64 > limit).then(|| {
                rows.truncate(limit as usize);
                rows.last()
                    .map(|t| encode_cursor(&t.tenant.id))
                    .unwrap_or_default()
            });
            return Ok(axum::Json(Page {
                data: rows.into_iter().map(TenantView::from).collect(),
                next_cursor,
            }));
        }
        Principal::ApiKey {
            tenant_id, role, ..
        } => (tenant_id, Some(*role)),
        Principal::ServiceKey { tenant_id, .. } => (tenant_id, None),
    };
    let tenant = match after {
        // The one tenant was on the first page.
        Some(_) => None,
        None => state.store.tenant(own_tenant).await?,
    };
    Ok(axum::Json(Page {
        data: tenant
            .into_iter()
            .map(|t| TenantView::new(t, role))
            .collect(),
        next_cursor: None,
    }))
}

/// One tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}", tag = "tenants", security(("bearer" = [])),
    params(("tenant_id" = String, Path)),
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<axum::Json<TenantView>, ApiError> {
    let role = match &principal {
        // The connectivity check may also name the key's tenant directly.
        Principal::ServiceKey { tenant_id: own, .. } if *own == tenant_id => None,
        _ => Some(tenant_role(&state, &principal, &tenant_id).await?),
    };
    let tenant = state
        .store
        .tenant(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    Ok(axum::Json(TenantView::new(tenant, role)))
}

/// Rename a tenant (owner only).
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant_id}", tag = "tenants", security(("bearer" = [])),
    params(("tenant_id" = String, Path)), request_body = RenameTenant,
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rename_tenant(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<RenameTenant>,
) -> Result<axum::Json<TenantView>, ApiError> {
    let role = require_role(&state, &principal, &tenant_id, Role::Owner).await?;
    let name = validate::name("name", &body.name)?;
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "tenant.rename",
        format!("tenant:{tenant_id}"),
        Some(serde_json::json!({ "name": name })),
    );
    let tenant = state.store.rename_tenant(&tenant_id, &name, &audit).await?;
    Ok(axum::Json(TenantView::new(tenant, Some(role))))
}

/// Delete a tenant and everything in it (owner only).
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant_id}", tag = "tenants", security(("bearer" = [])),
    params(("tenant_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Owner).await?;
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "tenant.delete",
        format!("tenant:{tenant_id}"),
        None,
    );
    state.store.delete_tenant(&tenant_id, &audit).await?;
    state.key_cache.invalidate_tenant(&tenant_id);
    state
        .hub
        .publish(crate::sync::ControlEvent::TenantDeleted {
            tenant_id: tenant_id.clone(),
        })
        .await;
    tracing::info!(tenant_id = %tenant_id, actor = %principal.actor(), "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}
