use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sluice_keys::{KeyType, generate_key, key_digest};
use utoipa::ToSchema;

use super::common::{List, audit_event, parse_rfc3339, require_role, rfc3339};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ClientIp};
use crate::role::Role;
use crate::state::AppState;
use crate::store::{KeyRecord, NewIngestBinding, NewKey, new_id, now_ms};
use crate::sync::ControlEvent;
use crate::validate;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// `service` (a data plane), `api` (automation with a role) or `ingest` (a source
    /// writing events to a receiver; needs `pipeline_id` and `source`).
    #[serde(rename = "type")]
    pub key_type: NewKeyType,
    /// For `ingest` keys: the pipeline.
    pub pipeline_id: Option<String>,
    /// For `ingest` keys: the name of a source in the pipeline's spec.
    pub source: Option<String>,
    /// For `api` keys: the role the key acts with, at most the creator's. Default: `viewer`.
    pub role: Option<Role>,
    /// RFC 3339 time after which the key stops working. Default: never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// The kinds of key.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NewKeyType {
    Service,
    Api,
    Ingest,
}

impl From<NewKeyType> for KeyType {
    fn from(t: NewKeyType) -> Self {
        match t {
            NewKeyType::Service => KeyType::Service,
            NewKeyType::Api => KeyType::Api,
            NewKeyType::Ingest => KeyType::Ingest,
        }
    }
}

/// A new key. `key` is the plaintext: it is returned this once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: String,
    pub role: Option<Role>,
    /// What the UI shows instead of the key: type tag and 8-character public id.
    pub prefix: String,
    pub key: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// For ingest keys: the pipeline and source the key writes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A key as listed: never its secret or its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: String,
    pub role: Option<Role>,
    pub prefix: String,
    pub created_at: String,
    /// Who created the key (e-mail or key name).
    pub created_by: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// For ingest keys: the pipeline and source the key writes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
}

fn display_prefix(record: &KeyRecord) -> String {
    let tag = record
        .key_type
        .parse::<KeyType>()
        .map_or("???", KeyType::tag);
    format!("slk_{tag}_{}", record.public_id)
}

impl KeyView {
    fn new(record: KeyRecord, pending_use: Option<i64>) -> Self {
        let now = now_ms();
        let status = if record.revoked_at.is_some() {
            "revoked"
        } else if record.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        let last_used = match (record.last_used_at, pending_use) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Self {
            prefix: display_prefix(&record),
            role: record.role.as_deref().and_then(|r| r.parse().ok()),
            id: record.id,
            name: record.name,
            key_type: record.key_type,
            created_at: rfc3339(record.created_at),
            created_by: record.created_by,
            last_used_at: last_used.map(rfc3339),
            expires_at: record.expires_at.map(rfc3339),
            revoked_at: record.revoked_at.map(rfc3339),
            pipeline_id: record.pipeline_id,
            source: record.source,
            status,
        }
    }
}

/// Generate a key. The plaintext is in the response and nowhere else, ever.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/keys", tag = "keys", security(("bearer" = [])),
    params(("tenant_id" = String, Path)), request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, axum::Json<KeyCreated>), ApiError> {
    let actor_role = require_role(&state, &principal, &tenant_id, Role::Admin).await?;
    let name = validate::name("name", &body.name)?;
    let key_type = KeyType::from(body.key_type);
    let role = match (key_type, body.role) {
        (KeyType::Api, role) => Some(role.unwrap_or(Role::Viewer)),
        (_, None) => None,
        (_, Some(_)) => return Err(ApiError::invalid("role: only api keys have a role")),
    };
    if let Some(role) = role
        && role > actor_role
    {
        return Err(ApiError::forbidden(format!(
            "cannot create a key with the {role} role: you are {actor_role}"
        )));
    }
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|t| parse_rfc3339("expires_at", t))
        .transpose()?;
    if expires_at.is_some_and(|at| at <= now_ms()) {
        return Err(ApiError::invalid("expires_at: must be in the future"));
    }
    let binding =
        ingest_binding(&state, &tenant_id, key_type, body.pipeline_id, body.source).await?;
    let key = generate_key(key_type)?;
    let ingest = binding.map(|(pipeline_id, source)| NewIngestBinding {
        pipeline_id,
        source,
    });
    let new = NewKey {
        id: new_id(),
        tenant_id: tenant_id.clone(),
        public_id: key.public_id().to_owned(),
        key_type: key_type.as_str().to_owned(),
        name: name.clone(),
        role: role.map(|r| r.as_str().to_owned()),
        key_hash: state.hasher.hash(&key),
        created_by: principal.actor_name(),
        expires_at,
        sha256: key_digest(&key).to_vec(),
        ingest,
    };
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "key.create",
        format!("key:{}", new.id),
        Some(
            serde_json::json!({ "name": name, "type": key_type.as_str(), "role": role, "prefix": key.display_prefix() }),
        ),
    );
    let record = state.store.create_key(new, &audit).await?;
    state
        .hub
        .publish(ControlEvent::ConfigChanged {
            tenant_id: tenant_id.clone(),
        })
        .await;
    tracing::info!(tenant_id = %tenant_id, key_id = %record.id, key_type = %key_type, "key created");
    Ok((
        StatusCode::CREATED,
        axum::Json(KeyCreated {
            prefix: key.display_prefix().to_owned(),
            key: key.expose().to_owned(),
            id: record.id,
            name: record.name,
            key_type: record.key_type,
            role,
            created_at: rfc3339(record.created_at),
            expires_at: record.expires_at.map(rfc3339),
            pipeline_id: record.pipeline_id,
            source: record.source,
        }),
    ))
}

/// The tenant's keys, without secrets.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/keys", tag = "keys", security(("bearer" = [])),
    params(("tenant_id" = String, Path)),
    responses((status = 200, body = List<KeyView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<axum::Json<List<KeyView>>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let keys = state.store.keys(&tenant_id).await?;
    let data = keys
        .into_iter()
        .map(|k| {
            let pending = state.key_usage.pending(&k.id);
            KeyView::new(k, pending)
        })
        .collect();
    Ok(axum::Json(List { data }))
}

/// One key, without its secret.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/keys/{key_id}", tag = "keys", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("key_id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((tenant_id, key_id)): ApiPath<(String, String)>,
) -> Result<axum::Json<KeyView>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let key = state
        .store
        .key(&tenant_id, &key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("key not found"))?;
    let pending = state.key_usage.pending(&key.id);
    Ok(axum::Json(KeyView::new(key, pending)))
}

/// Revoke a key: its next use gets 401. Revoking a revoked key changes nothing.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/keys/{key_id}/revoke", tag = "keys", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("key_id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath((tenant_id, key_id)): ApiPath<(String, String)>,
) -> Result<axum::Json<KeyView>, ApiError> {
    let actor_role = require_role(&state, &principal, &tenant_id, Role::Admin).await?;
    let target = state
        .store
        .key(&tenant_id, &key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("key not found"))?;
    // Nobody revokes a key more powerful than themselves.
    if let Some(role) = target.role.as_deref().and_then(|r| r.parse::<Role>().ok())
        && role > actor_role
    {
        return Err(ApiError::forbidden(format!(
            "cannot revoke a key with the {role} role: you are {actor_role}"
        )));
    }
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "key.revoke",
        format!("key:{key_id}"),
        None,
    );
    let record = state
        .store
        .revoke_key(&tenant_id, &key_id, &audit)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => ApiError::not_found("key not found"),
            other => other.into(),
        })?;
    state.key_cache.invalidate(&record.public_id);
    state
        .hub
        .publish(ControlEvent::KeyRevoked {
            tenant_id: tenant_id.clone(),
            key_id: record.id.clone(),
            public_id: record.public_id.clone(),
        })
        .await;
    if record.pipeline_id.is_some() {
        state
            .hub
            .publish(ControlEvent::ConfigChanged {
                tenant_id: tenant_id.clone(),
            })
            .await;
    }
    tracing::info!(tenant_id = %tenant_id, key_id = %key_id, "key revoked");
    let pending = state.key_usage.pending(&record.id);
    Ok(axum::Json(KeyView::new(record, pending)))
}

/// For an ingest key, the pipeline and source it writes to, which must exist; other keys must
/// name neither.
async fn ingest_binding(
    state: &AppState,
    tenant_id: &str,
    key_type: KeyType,
    pipeline_id: Option<String>,
    source: Option<String>,
) -> Result<Option<(String, String)>, ApiError> {
    if key_type != KeyType::Ingest {
        if pipeline_id.is_some() || source.is_some() {
            return Err(ApiError::invalid(
                "pipeline_id, source: only ingest keys belong to a pipeline source",
            ));
        }
        return Ok(None);
    }
    let (Some(pipeline_id), Some(source)) = (pipeline_id, source) else {
        return Err(ApiError::invalid(
            "pipeline_id, source: an ingest key needs both",
        ));
    };
    let pipeline = state
        .store
        .pipeline(tenant_id, &pipeline_id)
        .await?
        .ok_or_else(|| ApiError::invalid("pipeline_id: no such pipeline in this tenant"))?;
    let spec = sluice_proto::spec::parse_json(&pipeline.spec).map_err(|_| ApiError::internal())?;
    if !spec.sources.iter().any(|s| s.name == source) {
        let known: Vec<_> = spec.sources.iter().map(|s| s.name.as_str()).collect();
        return Err(ApiError::invalid(format!(
            "source: pipeline {:?} has no source {source:?}; it has {}",
            pipeline.name,
            known.join(", ")
        )));
    }
    Ok(Some((pipeline_id, source)))
}
