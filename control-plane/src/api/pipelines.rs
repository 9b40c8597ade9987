//! Pipelines as code: create and update from JSON or YAML, immutable revisions, roll back.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use sluice_proto::spec::{self, PipelineSpec, SpecError};
use utoipa::{IntoParams, ToSchema};

use super::common::{List, audit_event, require_role, rfc3339};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientIp};
use crate::role::Role;
use crate::state::AppState;
use crate::store::{NewRevision, PipelineRecord, RevisionRecord, StoreError};
use crate::sync::ControlEvent;
use crate::validate;

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineView {
    pub id: String,
    pub name: String,
    /// The current revision (1 for a new pipeline).
    pub revision: i64,
    /// The tenant's configuration version this revision produced.
    pub config_version: i64,
    /// The spec; its JSON Schema is at `/api/v1/schemas/pipeline.json`.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The current revision as its author wrote it (YAML comments kept), when it came as
    /// text; the console edits this.
    pub source: Option<String>,
    /// The current revision's change message.
    pub message: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<PipelineRecord> for PipelineView {
    fn from(p: PipelineRecord) -> Self {
        Self {
            spec: serde_json::from_str(&p.spec).unwrap_or(serde_json::Value::Null),
            source: p.source,
            message: p.message,
            id: p.id,
            name: p.name,
            revision: p.revision,
            config_version: p.config_version,
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevisionView {
    pub revision: i64,
    pub config_version: i64,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub created_at: String,
    /// Who made the change (e-mail or key name).
    pub created_by: String,
    /// The document as written, when it came as text.
    pub source: Option<String>,
    /// Why, in the author's words.
    pub message: Option<String>,
}

impl From<RevisionRecord> for RevisionView {
    fn from(r: RevisionRecord) -> Self {
        Self {
            spec: serde_json::from_str(&r.spec).unwrap_or(serde_json::Value::Null),
            source: r.source,
            message: r.message,
            revision: r.revision,
            config_version: r.config_version,
            created_at: rfc3339(r.created_at),
            created_by: r.created_by,
        }
    }
}

/// A pipeline as JSON. (A YAML body is the spec alone, with the name in `?name=`.)
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    /// 1 to 200 characters, unique in the tenant. Optional when updating.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Why this change, kept with the revision and in the audit log; at most 500 characters.
    #[schema(max_length = 500)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PipelineQuery {
    /// The pipeline's name, for YAML bodies (which hold only the spec).
    #[param(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// The change message, for YAML bodies.
    #[param(max_length = 500)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The revision whose spec becomes the next revision.
    #[schema(minimum = 1)]
    pub revision: i64,
    /// Why; default "roll back to revision N".
    #[schema(max_length = 500)]
    pub message: Option<String>,
}

/// Most characters in a change message.
const MAX_MESSAGE: usize = 500;

fn change_message(message: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(message) = message
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
    else {
        return Ok(None);
    };
    if message.chars().count() > MAX_MESSAGE || message.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "message: one line of at most {MAX_MESSAGE} characters"
        )));
    }
    Ok(Some(message))
}

/// A request's pipeline: its name, its validated spec, the text as written and why.
struct Submitted {
    name: Option<String>,
    spec: PipelineSpec,
    source: Option<String>,
    message: Option<String>,
}

/// The name and validated spec of a request, from JSON (`{"name","spec"}`) or YAML (the spec).
fn read_body(
    headers: &HeaderMap,
    body: &Bytes,
    query: PipelineQuery,
) -> Result<Submitted, ApiError> {
    let query_name = query.name;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (name, parsed, source, message) = match media.as_str() {
        "application/json" => {
            let body: PipelineBody = serde_json::from_slice(body).map_err(|e| {
                let code = if e.is_syntax() || e.is_eof() {
                    ApiError::bad_request
                } else {
                    ApiError::invalid
                };
                code(format!("body: {e}"))
            })?;
            let message = body.message.or(query.message);
            (
                body.name.or(query_name),
                spec::parse_value(body.spec),
                None,
                message,
            )
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("body: YAML must be UTF-8"))?;
            (
                query_name,
                spec::parse_yaml(text),
                Some(text.to_owned()),
                query.message,
            )
        }
        _ => {
            return Err(ApiError::new(
                sluice_proto::ErrorCode::UnsupportedMediaType,
                "send {\"name\",\"spec\"} as application/json, or the spec as application/yaml",
            ));
        }
    };
    let spec = parsed.map_err(|e| spec_errors(vec![e]))?;
    spec.validate().map_err(spec_errors)?;
    let name = name.map(|n| validate::name("name", &n)).transpose()?;
    Ok(Submitted {
        name,
        spec,
        source,
        message: change_message(message)?,
    })
}

fn spec_errors(errors: Vec<SpecError>) -> ApiError {
    let first = errors
        .first()
        .map(|e| {
            if e.path.is_empty() {
                format!("spec: {}", e.message)
            } else {
                format!("spec.{e}")
            }
        })
        .unwrap_or_default();
    let message = match errors.len() {
        1 => first,
        n => format!("{first} (and {} more)", n - 1),
    };
    ApiError {
        details: errors,
        ..ApiError::invalid(message)
    }
}

fn canonical(spec: &PipelineSpec) -> Result<String, ApiError> {
    serde_json::to_string(spec).map_err(|_| ApiError::internal())
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("pipeline not found"),
        other => other.into(),
    }
}

/// Create a pipeline: `{"name","spec"}` as JSON, or the spec as YAML with `?name=`.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/pipelines", tag = "pipelines", security(("bearer" = [])),
    params(("tenant_id" = String, Path), PipelineQuery),
    request_body(content(
        (PipelineBody = "application/json"),
        (String = "application/yaml"),
    )),
    responses((status = 201, body = PipelineView), (status = 403, body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Invalid spec; `details` lists every problem with its path and line", body = ErrorBody)))]
pub async fn create_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PipelineQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<PipelineView>), ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Member).await?;
    let submitted = read_body(&headers, &body, query)?;
    let name = submitted
        .name
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "pipeline.create",
        String::new(),
        Some(serde_json::json!({ "name": name, "message": submitted.message })),
    );
    let spec = canonical(&submitted.spec)?;
    let actor = principal.actor_name();
    let pipeline = state
        .store
        .create_pipeline(
            &tenant_id,
            &name,
            &NewRevision {
                spec: &spec,
                source: submitted.source.as_deref(),
                message: submitted.message.as_deref(),
                created_by: &actor,
            },
            audit,
        )
        .await?;
    state
        .hub
        .publish(ControlEvent::ConfigChanged {
            tenant_id: tenant_id.clone(),
        })
        .await;
    tracing::info!(tenant_id = %tenant_id, pipeline_id = %pipeline.id, config_version = pipeline.config_version, "pipeline created");
    Ok((StatusCode::CREATED, axum::Json(pipeline.into())))
}

/// The tenant's pipelines at their current revisions.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/pipelines", tag = "pipelines", security(("bearer" = [])),
    params(("tenant_id" = String, Path)),
    responses((status = 200, body = List<PipelineView>)))]
pub async fn list_pipelines(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<axum::Json<List<PipelineView>>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let pipelines = state.store.pipelines(&tenant_id).await?;
    Ok(axum::Json(List {
        data: pipelines.into_iter().map(PipelineView::from).collect(),
    }))
}

/// One pipeline at its current revision.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}", tag = "pipelines", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("pipeline_id" = String, Path)),
    responses((status = 200, body = PipelineView)))]
pub async fn get_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((tenant_id, pipeline_id)): ApiPath<(String, String)>,
) -> Result<axum::Json<PipelineView>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let pipeline = state
        .store
        .pipeline(&tenant_id, &pipeline_id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline not found"))?;
    Ok(axum::Json(pipeline.into()))
}

/// Replace a pipeline's spec (and optionally its name): a new revision.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}", tag = "pipelines", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("pipeline_id" = String, Path), PipelineQuery),
    request_body(content(
        (PipelineBody = "application/json"),
        (String = "application/yaml"),
    )),
    responses((status = 200, body = PipelineView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn update_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath((tenant_id, pipeline_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<PipelineQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<PipelineView>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Member).await?;
    let submitted = read_body(&headers, &body, query)?;
    let details = match (&submitted.name, &submitted.message) {
        (None, None) => None,
        (name, message) => Some(serde_json::json!({ "name": name, "message": message })),
    };
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "pipeline.update",
        format!("pipeline:{pipeline_id}"),
        details,
    );
    let spec = canonical(&submitted.spec)?;
    let actor = principal.actor_name();
    let pipeline = state
        .store
        .update_pipeline(
            &tenant_id,
            &pipeline_id,
            submitted.name.as_deref(),
            &NewRevision {
                spec: &spec,
                source: submitted.source.as_deref(),
                message: submitted.message.as_deref(),
                created_by: &actor,
            },
            &audit,
        )
        .await
        .map_err(not_found)?;
    state
        .hub
        .publish(ControlEvent::ConfigChanged {
            tenant_id: tenant_id.clone(),
        })
        .await;
    tracing::info!(tenant_id = %tenant_id, pipeline_id = %pipeline_id, revision = pipeline.revision, config_version = pipeline.config_version, "pipeline updated");
    Ok(axum::Json(pipeline.into()))
}

/// Delete a pipeline; its ingest keys are revoked.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}", tag = "pipelines", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("pipeline_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 403, body = ErrorBody)))]
pub async fn delete_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath((tenant_id, pipeline_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Member).await?;
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "pipeline.delete",
        format!("pipeline:{pipeline_id}"),
        None,
    );
    let revoked = state
        .store
        .delete_pipeline(&tenant_id, &pipeline_id, &audit)
        .await
        .map_err(not_found)?;
    for public_id in revoked {
        state.key_cache.invalidate(&public_id);
    }
    state
        .hub
        .publish(ControlEvent::ConfigChanged { tenant_id })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A pipeline's revisions, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}/revisions", tag = "pipelines", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("pipeline_id" = String, Path)),
    responses((status = 200, body = List<RevisionView>)))]
pub async fn list_revisions(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((tenant_id, pipeline_id)): ApiPath<(String, String)>,
) -> Result<axum::Json<List<RevisionView>>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Viewer).await?;
    let revisions = state.store.revisions(&tenant_id, &pipeline_id).await?;
    if revisions.is_empty() {
        return Err(ApiError::not_found("pipeline not found"));
    }
    Ok(axum::Json(List {
        data: revisions.into_iter().map(RevisionView::from).collect(),
    }))
}

/// Roll back: a new revision whose spec equals an earlier one's.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/pipelines/{pipeline_id}/rollback", tag = "pipelines", security(("bearer" = [])),
    params(("tenant_id" = String, Path), ("pipeline_id" = String, Path)), request_body = RollbackBody,
    responses((status = 200, body = PipelineView), (status = 403, body = ErrorBody),
        (status = 422, description = "The old spec is no longer valid", body = ErrorBody)))]
pub async fn rollback_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    ApiPath((tenant_id, pipeline_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<RollbackBody>,
) -> Result<axum::Json<PipelineView>, ApiError> {
    require_role(&state, &principal, &tenant_id, Role::Member).await?;
    let old = state
        .store
        .revision(&tenant_id, &pipeline_id, body.revision)
        .await?
        .ok_or_else(|| ApiError::not_found("no such revision of this pipeline"))?;
    // Validation rules may have tightened since: an old spec must still pass them.
    let spec = spec::parse_json(&old.spec).map_err(|e| spec_errors(vec![e]))?;
    spec.validate().map_err(spec_errors)?;
    let message = change_message(body.message)?
        .unwrap_or_else(|| format!("roll back to revision {}", body.revision));
    let audit = audit_event(
        &principal,
        ip,
        &tenant_id,
        "pipeline.rollback",
        format!("pipeline:{pipeline_id}"),
        Some(serde_json::json!({ "to_revision": body.revision, "message": message })),
    );
    let spec = canonical(&spec)?;
    let actor = principal.actor_name();
    let pipeline = state
        .store
        .update_pipeline(
            &tenant_id,
            &pipeline_id,
            None,
            &NewRevision {
                spec: &spec,
                source: old.source.as_deref(),
                message: Some(&message),
                created_by: &actor,
            },
            &audit,
        )
        .await
        .map_err(not_found)?;
    state
        .hub
        .publish(ControlEvent::ConfigChanged { tenant_id })
        .await;
    Ok(axum::Json(pipeline.into()))
}

/// The JSON Schema of the pipeline spec, generated from the types both planes use.
#[utoipa::path(get, path = "/api/v1/schemas/pipeline.json", tag = "pipelines",
    responses((status = 200, description = "JSON Schema (draft 2020-12)", body = Object)))]
pub async fn pipeline_schema() -> axum::Json<serde_json::Value> {
    axum::Json(spec::json_schema())
}
