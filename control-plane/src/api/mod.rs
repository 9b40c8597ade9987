//! The REST API under `/api/v1`, health and metrics. Every route is registered through
//! `utoipa_axum`'s `routes!`, so the OpenAPI document cannot miss one.

mod audit;
mod auth;
mod catalogue;
pub(crate) mod common;
mod fleet;
mod health;
mod keys;
mod members;
mod overview;
mod pipelines;
mod query_token;
mod tenants;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::metrics;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice control plane API", description = "Tenants, members, keys and audit of the Sluice control plane."),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign-in, sessions, setup and invitations"),
        (name = "tenants", description = "Tenants the caller belongs to"),
        (name = "members", description = "Members, roles and invitations of a tenant"),
        (name = "keys", description = "Service and API keys"),
        (name = "audit", description = "Every mutation, newest first"),
        (name = "pipelines", description = "Pipelines as code, with immutable revisions"),
        (name = "fleet", description = "The tenant's data planes"),
        (name = "query", description = "Tokens for querying the archive on data planes"),
        (name = "health", description = "Liveness, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A user's access token, or an `api`/`service` key (slk_…)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The routes and their OpenAPI document, before state and middleware.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::setup))
        .routes(routes!(auth::accept_invite))
        .routes(routes!(auth::signup))
        .routes(routes!(auth::me))
        .routes(routes!(auth::status))
        .routes(routes!(auth::jwks))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(
            tenants::get_tenant,
            tenants::rename_tenant,
            tenants::delete_tenant
        ))
        .routes(routes!(members::list_members, members::add_member))
        .routes(routes!(members::update_member, members::remove_member))
        .routes(routes!(members::list_invitations))
        .routes(routes!(members::revoke_invitation))
        .routes(routes!(members::renew_invitation))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::get_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(audit::list_audit))
        .routes(routes!(
            pipelines::create_pipeline,
            pipelines::list_pipelines
        ))
        .routes(routes!(
            pipelines::get_pipeline,
            pipelines::update_pipeline,
            pipelines::delete_pipeline
        ))
        .routes(routes!(pipelines::list_revisions))
        .routes(routes!(pipelines::rollback_pipeline))
        .routes(routes!(pipelines::pipeline_schema))
        .routes(routes!(catalogue::list_catalogue))
        .routes(routes!(catalogue::definition_schema))
        .routes(routes!(fleet::list_data_planes))
        .routes(routes!(overview::overview))
        .routes(routes!(overview::reach_milestone))
        .routes(routes!(query_token::issue_query_token))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi))
}

/// The OpenAPI document of every route.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().split_for_parts().1;
    add_shared_error_responses(&mut doc);
    doc
}

/// Documents, on every operation, the errors that the shared extractors and middleware can
/// answer, so no handler has to repeat them.
fn add_shared_error_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let password_endpoint = path.starts_with("/api/v1/auth/");
        let path_has_params = item.parameters.as_ref().is_some_and(|p| !p.is_empty());
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let mut shared = Vec::new();
            if operation.request_body.is_some() {
                shared.push(("400", "Malformed JSON"));
                shared.push(("413", "Body larger than the limit"));
                shared.push(("415", "Body is not application/json"));
                shared.push(("422", "Invalid content or unknown field"));
            }
            let has_params =
                path_has_params || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            if has_params {
                shared.push(("400", "Malformed path or query parameter"));
                shared.push(("404", "No such resource"));
            }
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                shared.push(("401", "Missing, invalid, revoked or expired credentials"));
            }
            if password_endpoint && operation.request_body.is_some() {
                shared.push(("429", "Too many attempts from this client; see Retry-After"));
            }
            if operation.request_body.is_some() || has_params {
                shared.push(("503", "Database unavailable; retry later"));
            }
            for (status, description) in shared {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description).into());
            }
        }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let (router, mut doc) = api_router().split_for_parts();
    add_shared_error_responses(&mut doc);
    let json = doc.to_pretty_json().unwrap_or_default();
    let _ = state.openapi_json.set(json);
    router
        .merge(crate::ui::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
        .layer(middleware::from_fn(reject_control_characters))
        .layer(middleware::from_fn(refuse_cross_site_auth))
        .layer(middleware::from_fn(record_metrics))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| ApiError::internal().into_response(),
        ))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        sluice_proto::ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// No id contains a control character, so a path with one (`%00`, `%0A`) names nothing. Refusing
/// it here keeps such bytes from ever reaching the database, where PostgreSQL would reject NUL
/// in text with an error that is the server's, not the client's.
async fn reject_control_characters(request: Request, next: Next) -> Response {
    if has_encoded_control_character(request.uri().path()) {
        return ApiError::not_found("no such resource").into_response();
    }
    next.run(request).await
}

/// The sign-in endpoints set and read the refresh cookie, so a page on another site must not
/// be able to call them with the visitor's browser (login CSRF, forced sign-out). Browsers say
/// where a request comes from in `Sec-Fetch-Site` and `Origin`; clients that send neither
/// (curl, SDKs) hold no cookie of a victim and pass.
async fn refuse_cross_site_auth(request: Request, next: Next) -> Response {
    if request.method() == axum::http::Method::POST
        && request.uri().path().starts_with("/api/v1/auth/")
        && is_cross_site(request.headers())
    {
        return ApiError::forbidden(
            "cross-site request refused: sign in from the Sluice console's own origin",
        )
        .into_response();
    }
    next.run(request).await
}

fn is_cross_site(headers: &axum::http::HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (None, _) => false,
        (Some(origin), Some(host)) => {
            origin != format!("http://{host}") && origin != format!("https://{host}")
        }
        (Some(_), None) => true,
    }
}

fn has_encoded_control_character(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().any(|b| b.is_ascii_control())
        || bytes.windows(3).any(|w| {
            w[0] == b'%'
                && std::str::from_utf8(&w[1..])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .is_some_and(|b| b.is_ascii_control())
        })
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    ::metrics::counter!(metrics::HTTP_REQUESTS_TOTAL, "method" => method.clone(), "route" => route.clone(), "status" => status.as_u16().to_string())
        .increment(1);
    ::metrics::histogram!(metrics::HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("request answered 500");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::{has_encoded_control_character, is_cross_site};

    #[test]
    fn auth_calls_from_another_site_are_spotted() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, axum::http::HeaderValue::from_static(v));
            }
            map
        };
        assert!(!is_cross_site(&headers(&[])));
        assert!(!is_cross_site(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        assert!(is_cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(is_cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!is_cross_site(&headers(&[
            ("origin", "https://cp.example.com"),
            ("host", "cp.example.com")
        ])));
        assert!(is_cross_site(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "cp.example.com")
        ])));
        assert!(is_cross_site(&headers(&[
            ("origin", "null"),
            ("host", "cp.example.com")
        ])));
    }

    #[test]
    fn control_characters_in_paths_are_spotted_encoded_or_not() {
        assert!(has_encoded_control_character("/api/v1/tenants/%00"));
        assert!(has_encoded_control_character("/api/v1/tenants/a%0Ab"));
        assert!(has_encoded_control_character("/api/v1/tenants/%7f"));
        assert!(!has_encoded_control_character(
            "/api/v1/tenants/01a2-b3/keys"
        ));
        assert!(!has_encoded_control_character("/api/v1/tenants/caf%C3%A9"));
        assert!(!has_encoded_control_character("/api/v1/tenants/100%25"));
    }
}
