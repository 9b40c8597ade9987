//! The web console: static files from `ui/`, compiled into the binary so it works air-gapped,
//! served with a strict Content-Security-Policy (scripts and styles from this origin only,
//! nothing inline, no framing).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

/// Path under `/ui/`, media type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../ui/favicon.svg"),
    ),
    ("js/app.js", JS, include_bytes!("../../ui/js/app.js")),
    ("js/api.js", JS, include_bytes!("../../ui/js/api.js")),
    ("js/dom.js", JS, include_bytes!("../../ui/js/dom.js")),
    ("js/diff.js", JS, include_bytes!("../../ui/js/diff.js")),
    (
        "js/dataplane.js",
        JS,
        include_bytes!("../../ui/js/dataplane.js"),
    ),
    (
        "js/pages/audit.js",
        JS,
        include_bytes!("../../ui/js/pages/audit.js"),
    ),
    (
        "js/pages/dlq.js",
        JS,
        include_bytes!("../../ui/js/pages/dlq.js"),
    ),
    (
        "js/pages/fleet.js",
        JS,
        include_bytes!("../../ui/js/pages/fleet.js"),
    ),
    (
        "js/pages/keys.js",
        JS,
        include_bytes!("../../ui/js/pages/keys.js"),
    ),
    (
        "js/pages/live.js",
        JS,
        include_bytes!("../../ui/js/pages/live.js"),
    ),
    (
        "js/pages/members.js",
        JS,
        include_bytes!("../../ui/js/pages/members.js"),
    ),
    (
        "js/pages/pipelines.js",
        JS,
        include_bytes!("../../ui/js/pages/pipelines.js"),
    ),
    (
        "js/pages/query.js",
        JS,
        include_bytes!("../../ui/js/pages/query.js"),
    ),
    (
        "js/pages/signin.js",
        JS,
        include_bytes!("../../ui/js/pages/signin.js"),
    ),
    (
        "js/pages/tenants.js",
        JS,
        include_bytes!("../../ui/js/pages/tenants.js"),
    ),
    (
        "js/pages/trace.js",
        JS,
        include_bytes!("../../ui/js/pages/trace.js"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &[u8] = include_bytes!("../../ui/index.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/config.json", get(ui_config))
        .route("/ui/{*path}", get(asset))
}

/// The policy for every console response. `connect-src` admits any `https:` origin and the
/// configured query role, because the archive page calls a data plane directly.
fn content_security_policy(state: &AppState) -> String {
    let extra = state
        .config
        .ui_query
        .as_ref()
        .map(|q| format!(" {}", q.origin))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' https:{extra}; form-action 'self'; frame-ancestors 'none'; \
         base-uri 'none'"
    )
}

fn secured(state: &AppState, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Assets change with the binary; revalidating is cheap and never serves a stale console.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(state)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    (StatusCode::OK, headers, body).into_response()
}

async fn index(State(state): State<AppState>) -> Response {
    secured(&state, "text/html; charset=utf-8", INDEX.to_vec())
}

async fn asset(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, bytes)) => secured(&state, content_type, bytes.to_vec()),
        None => ApiError::not_found("no such file in the console").into_response(),
    }
}

/// What the console needs to know of this deployment.
async fn ui_config(State(state): State<AppState>) -> Response {
    let body = serde_json::json!({
        "query_url": state.config.ui_query.as_ref().map(|q| q.url.clone()),
    });
    secured(
        &state,
        "application/json",
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// Every module the console imports is served: a missing entry would be a blank page.
    #[test]
    fn every_imported_module_is_an_asset() {
        for (name, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).expect("utf-8");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                for piece in spec.split('/') {
                    match piece {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        other => parts.push(other),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == resolved),
                    "{name} imports {spec} ({resolved}), which is not served"
                );
            }
        }
    }
}
