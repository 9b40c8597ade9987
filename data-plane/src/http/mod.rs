//! What every HTTP API of the node shares: the one error type answered to clients, the
//! `Authorization` header parser and who may call the node's own APIs.

pub mod auth;
mod authorization;
mod error;

pub use authorization::{Authorization, bearer_token};
pub use error::ApiError;

use axum::http::{HeaderName, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// CORS for the APIs the console calls from the browser (query, live, traces, DLQ). Any
/// origin by default: the caller proves itself with a bearer token, never a cookie, so a page
/// on another origin gains nothing it did not already hold. The node's policy may name the
/// origins (SLUICE_POLICY_QUERY_ORIGINS); others then get no CORS headers, so browsers do not
/// send them the bearer calls.
pub fn browser_cors(policy: &std::sync::Arc<crate::policy::Policy>) -> CorsLayer {
    let origins = if policy.any_origin() {
        AllowOrigin::any()
    } else {
        let policy = policy.clone();
        AllowOrigin::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|o| policy.allows_origin(o))
        })
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([
            HeaderName::from_static("x-sluice-rows"),
            HeaderName::from_static("x-sluice-files-scanned"),
            HeaderName::from_static("x-sluice-elapsed-ms"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}
