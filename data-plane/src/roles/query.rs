//! `POST /v1/query` on the node: SQL over this tenant's archive, for the web UI (straight from
//! the browser, with a short-lived token the control plane issued to a signed-in person) and
//! for the CLI and automation (with an `api` or `service` key of the tenant). The results never
//! pass through the control plane.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use object_store::ObjectStore;
use serde::Deserialize;
use serde_json::json;
use sluice_proto::ErrorCode;
use sluice_query::{Format, QueryEngine, QueryError};

use crate::http::ApiError;
use crate::state::NodeState;

/// Largest SQL text accepted, in bytes.
const MAX_BODY: usize = 64 * 1024;

struct QueryApi {
    node: Arc<NodeState>,
    engine: QueryEngine,
}

pub fn router(node: Arc<NodeState>, store: Arc<dyn ObjectStore>) -> Router {
    let cors = crate::http::browser_cors(&node.config.policy);
    let engine = QueryEngine::new(store, node.config.query.clone());
    Router::new()
        .route("/v1/query", post(query))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(cors)
        .with_state(Arc::new(QueryApi { node, engine }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
}

fn failed(error: QueryError) -> ApiError {
    ApiError::new(error.code(), error.to_string())
}

async fn query(
    State(api): State<Arc<QueryApi>>,
    headers: HeaderMap,
    body: Result<axum::Json<QueryRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    crate::http::auth::caller(&api.node, &headers)?;
    let axum::Json(request) = body.map_err(|e| {
        let code = match e.status().as_u16() {
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            _ => ErrorCode::BadRequest,
        };
        ApiError::new(
            code,
            format!(
                "{}; send {{\"sql\": \"SELECT …\", \"format\": \"json\"}}",
                e.body_text()
            ),
        )
    })?;
    let format = match request.format.as_deref() {
        None => Format::Json,
        Some(name) => Format::parse(name)
            .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "format: json, csv or arrow"))?,
    };
    if request.sql.trim().is_empty() {
        return Err(ApiError::new(ErrorCode::BadRequest, "sql: empty"));
    }
    let tenant_id = api
        .node
        .current()
        .map(|c| c.tenant_id.clone())
        .ok_or_else(|| {
            ApiError::new(ErrorCode::Unavailable, "no configuration yet").retry_after(5)
        })?;
    let result = api
        .engine
        .run(&tenant_id, &request.sql)
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "query refused");
            failed(e)
        })?;
    let elapsed_ms = result.elapsed.as_secs_f64() * 1000.0;
    tracing::info!(
        rows = result.rows,
        files = result.files_scanned,
        elapsed_ms,
        "query answered"
    );
    let meta = [
        ("x-sluice-rows", result.rows.to_string()),
        ("x-sluice-files-scanned", result.files_scanned.to_string()),
        ("x-sluice-elapsed-ms", format!("{elapsed_ms:.1}")),
    ];
    let mut response = match format {
        Format::Json => {
            let rows = sluice_query::output::json_rows(&result.batches).map_err(failed)?;
            let columns: Vec<_> = result
                .schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect();
            axum::Json(json!({
                "columns": columns,
                "rows": rows,
                "row_count": result.rows,
                "files_scanned": result.files_scanned,
                "elapsed_ms": elapsed_ms,
            }))
            .into_response()
        }
        Format::Csv => sluice_query::output::csv(&result.batches)
            .map_err(failed)?
            .into_response(),
        Format::Arrow => sluice_query::output::arrow_stream(&result.schema, &result.batches)
            .map_err(failed)?
            .into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    for (name, value) in meta {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}
