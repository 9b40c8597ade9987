//! The destination catalogue: the definitions both planes are built with, for the console's
//! forms and for anyone writing a pipeline by hand. Public, like the pipeline schema: it is
//! the product's documentation, not a tenant's data.

use sluice_proto::catalogue::{self, Definition};

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Catalogue {
    /// Every destination a pipeline can name by `type`, by category then name.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<&'static Definition>,
}

/// The destination catalogue (`proto/catalogue/*.yaml`): each definition's settings,
/// events, payload template, batching, rate limit and response rules.
#[utoipa::path(get, path = "/api/v1/catalogue", tag = "pipelines",
    responses((status = 200, body = Catalogue)))]
pub async fn list_catalogue() -> axum::Json<Catalogue> {
    let mut data: Vec<&'static Definition> = catalogue::all().iter().collect();
    data.sort_by(|a, b| (a.category, &a.name).cmp(&(b.category, &b.name)));
    axum::Json(Catalogue { data })
}

/// The JSON Schema of a destination definition, for writing one.
#[utoipa::path(get, path = "/api/v1/schemas/destination-definition.json", tag = "pipelines",
    responses((status = 200, description = "JSON Schema (draft 2020-12)", body = Object)))]
pub async fn definition_schema() -> axum::Json<serde_json::Value> {
    axum::Json(catalogue::json_schema())
}
