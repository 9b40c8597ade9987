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
    ("js/chart.js", JS, include_bytes!("../../ui/js/chart.js")),
    ("js/review.js", JS, include_bytes!("../../ui/js/review.js")),
    (
        "js/specedit.js",
        JS,
        include_bytes!("../../ui/js/specedit.js"),
    ),
    (
        "js/pages/catalogue.js",
        JS,
        include_bytes!("../../ui/js/pages/catalogue.js"),
    ),
    (
        "js/snippets.js",
        JS,
        include_bytes!("../../ui/js/snippets.js"),
    ),
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
        "js/pages/overview.js",
        JS,
        include_bytes!("../../ui/js/pages/overview.js"),
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
const INDEX: &str = include_str!("../../ui/index.html");

/// Most JavaScript and CSS a first visit downloads (the shell, its stylesheet and the page it
/// opens), minified and uncompressed, in bytes. Other pages' modules load when visited.
pub const ASSET_BUDGET: usize = 100 * 1024;

/// One asset ready to serve: its bytes as stored and compressed, and its validator.
struct Prepared {
    content_type: &'static str,
    /// Minified, for scripts and styles.
    raw: Vec<u8>,
    gzip: Vec<u8>,
    brotli: Vec<u8>,
    etag: String,
}

/// Every asset, compressed once, and the index page pointing at the console's versioned
/// path: `/ui/v/<hash of every asset>/…`. Module imports are relative, so one prefix versions
/// them all; a new binary changes the prefix and no browser runs a stale module.
struct Console {
    version: String,
    index: Vec<u8>,
    assets: Vec<(&'static str, Prepared)>,
}

fn console() -> &'static Console {
    static CONSOLE: std::sync::OnceLock<Console> = std::sync::OnceLock::new();
    CONSOLE.get_or_init(|| {
        use sha2::Digest as _;
        let mut whole = sha2::Sha256::new();
        let assets: Vec<(&'static str, Prepared)> = ASSETS
            .iter()
            .map(|(path, content_type, stored)| {
                let raw = minified(path, stored);
                let digest = sha2::Sha256::digest(&raw);
                whole.update(digest);
                let etag = format!("\"{}\"", hex(&digest[..12]));
                let prepared = Prepared {
                    content_type,
                    gzip: gzip(&raw),
                    brotli: brotli(&raw),
                    raw,
                    etag,
                };
                (*path, prepared)
            })
            .collect();
        let version = hex(&whole.finalize()[..6]);
        let index = INDEX
            .replace("\"/ui/", &format!("\"/ui/v/{version}/"))
            .into_bytes();
        Console {
            version,
            index,
            assets,
        }
    })
}

fn minified(path: &str, stored: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(stored) {
        Ok(text) if path.ends_with(".js") => crate::ui_minify::minify_js(text).into_bytes(),
        Ok(text) if path.ends_with(".css") => crate::ui_minify::minify_css(text).into_bytes(),
        _ => stored.to_vec(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

fn brotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 9,
        lgwin: 20,
        ..Default::default()
    };
    // Reading a slice and writing a Vec cannot fail.
    let _ = brotli::BrotliCompress(&mut &bytes[..], &mut out, &params);
    out
}

/// Which encoding to send: brotli, then gzip, when the client accepts it (a `q=0` refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

fn negotiate(headers: &HeaderMap) -> Encoding {
    let Some(accept) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return Encoding::Identity;
    };
    let accepts = |wanted: &str| {
        accept.split(',').any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case(wanted) && !refused
        })
    };
    if accepts("br") {
        Encoding::Brotli
    } else if accepts("gzip") {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/config.json", get(ui_config))
        .route("/ui/v/{version}/{*path}", get(versioned_asset))
        .route("/ui/{*path}", get(asset))
}

/// The policy for every console response. `connect-src` admits any `https:` origin, plain
/// HTTP on loopback (a data plane beside the browser, as `sluice dev` runs it) and the
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
         connect-src 'self' https: http://localhost:* http://127.0.0.1:*{extra}; form-action 'self'; frame-ancestors 'none'; \
         base-uri 'none'"
    )
}

fn secured(
    state: &AppState,
    content_type: &'static str,
    cache: &'static str,
    body: Vec<u8>,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
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

/// The index is never cached: it names the current versioned path.
const NO_CACHE: &str = "no-cache";
/// A versioned asset never changes under its path.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

async fn index(State(state): State<AppState>) -> Response {
    secured(
        &state,
        "text/html; charset=utf-8",
        NO_CACHE,
        console().index.clone(),
    )
}

/// An asset under the current version is cached for good; under an older one (a page loaded
/// before an upgrade) it is today's file, revalidated every time.
async fn versioned_asset(
    State(state): State<AppState>,
    Path((version, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let cache = if version == console().version {
        IMMUTABLE
    } else {
        NO_CACHE
    };
    serve(&state, &path, &headers, cache)
}

async fn asset(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&state, &path, &headers, NO_CACHE)
}

fn serve(state: &AppState, path: &str, headers: &HeaderMap, cache: &'static str) -> Response {
    let Some((_, asset)) = console().assets.iter().find(|(name, _)| *name == path) else {
        return ApiError::not_found("no such file in the console").into_response();
    };
    let etag = HeaderValue::from_str(&asset.etag).ok();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let encoding = negotiate(headers);
    let mut response = if fresh {
        let mut r = secured(state, asset.content_type, cache, Vec::new());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let body = match encoding {
            Encoding::Brotli => asset.brotli.clone(),
            Encoding::Gzip => asset.gzip.clone(),
            Encoding::Identity => asset.raw.clone(),
        };
        secured(state, asset.content_type, cache, body)
    };
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag);
    }
    if !fresh {
        match encoding {
            Encoding::Brotli => {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
            }
            Encoding::Gzip => {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            Encoding::Identity => {}
        }
    }
    response
}

/// What the console needs to know of this deployment.
async fn ui_config(State(state): State<AppState>) -> Response {
    let config = &state.config;
    let body = serde_json::json!({
        "query_url": config.ui_query.as_ref().map(|q| q.url.clone()),
        "grpc_url": config.public_grpc_url,
        "grpc_port": state.grpc_port.get().copied().unwrap_or(config.grpc_addr.port()),
        "grpc_tls": config.tls.is_some(),
    });
    secured(
        &state,
        "application/json",
        NO_CACHE,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The modules `path` imports statically (`… from './x.js'`), with theirs, and itself.
    fn static_closure(path: &str, seen: &mut std::collections::BTreeSet<String>) {
        if !seen.insert(path.to_owned()) {
            return;
        }
        let Some((_, asset)) = console().assets.iter().find(|(name, _)| *name == path) else {
            panic!("{path} is imported but not served");
        };
        let text = String::from_utf8_lossy(&asset.raw).into_owned();
        let dir: Vec<&str> = path.split('/').collect();
        let dir = &dir[..dir.len() - 1];
        for part in text.split("from").skip(1) {
            let part = part.trim_start();
            let Some(quote) = part.chars().next().filter(|c| *c == '\'' || *c == '"') else {
                continue;
            };
            let Some(spec) = part[1..].split(quote).next() else {
                continue;
            };
            if !spec.starts_with('.') {
                continue;
            }
            let mut resolved: Vec<&str> = dir.to_vec();
            for segment in spec.split('/') {
                match segment {
                    "." => {}
                    ".." => {
                        resolved.pop();
                    }
                    name => resolved.push(name),
                }
            }
            static_closure(&resolved.join("/"), seen);
        }
    }

    /// The console stays small enough to load fast on a poor link: what a first visit
    /// downloads (minified, before compression) — the stylesheet, the shell's modules and
    /// the largest page with what it imports beyond the shell.
    #[test]
    fn scripts_and_styles_stay_within_the_budget() {
        let size = |names: &std::collections::BTreeSet<String>| -> usize {
            console()
                .assets
                .iter()
                .filter(|(name, _)| names.contains(*name))
                .map(|(_, asset)| asset.raw.len())
                .sum()
        };
        let mut shell = std::collections::BTreeSet::new();
        static_closure("js/app.js", &mut shell);
        assert!(shell.contains("js/pages/signin.js"), "{shell:?}");
        let css = console()
            .assets
            .iter()
            .filter(|(name, _)| name.ends_with(".css"))
            .map(|(_, asset)| asset.raw.len())
            .sum::<usize>();
        let (page, page_size) = console()
            .assets
            .iter()
            .filter(|(name, _)| name.starts_with("js/pages/") && !shell.contains(*name))
            .map(|(name, _)| {
                let mut closure = shell.clone();
                static_closure(name, &mut closure);
                (*name, size(&closure) - size(&shell))
            })
            .max_by_key(|(_, size)| *size)
            .expect("pages load on demand");
        let total = css + size(&shell) + page_size;
        assert!(
            total < ASSET_BUDGET,
            "a first visit to {page} downloads {total} bytes of JS and CSS, over {ASSET_BUDGET}: the shell {shell:?}"
        );
        // Everything the console has, for BENCHMARKS.md: the budget is per visit, not a cap
        // on the product's pages.
        let all: usize = console()
            .assets
            .iter()
            .filter(|(name, _)| name.ends_with(".js") || name.ends_with(".css"))
            .map(|(_, asset)| asset.raw.len())
            .sum();
        eprintln!("first visit (largest: {page}): {total} bytes; every asset: {all} bytes");
    }

    #[test]
    fn compressed_assets_decompress_to_the_originals() {
        use std::io::Read as _;
        for (name, asset) in &console().assets {
            let mut gunzipped = Vec::new();
            flate2::read::GzDecoder::new(&asset.gzip[..])
                .read_to_end(&mut gunzipped)
                .expect("test value");
            assert_eq!(gunzipped, asset.raw, "{name} gzip");
            let mut unbrotli = Vec::new();
            brotli::BrotliDecompress(&mut &asset.brotli[..], &mut unbrotli).expect("test value");
            assert_eq!(unbrotli, asset.raw, "{name} brotli");
            if asset.raw.len() > 2048 {
                assert!(
                    asset.brotli.len() < asset.raw.len() / 2,
                    "{name} compresses"
                );
            }
        }
        let index = String::from_utf8(console().index.clone()).expect("test value");
        assert!(index.contains(&format!("/ui/v/{}/js/app.js", console().version)));
    }

    #[test]
    fn encoding_follows_accept_encoding_and_its_refusals() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(v).expect("test value"),
            );
            negotiate(&h)
        };
        assert_eq!(negotiate(&HeaderMap::new()), Encoding::Identity);
        assert_eq!(with("gzip, deflate, br"), Encoding::Brotli);
        assert_eq!(with("gzip"), Encoding::Gzip);
        assert_eq!(with("br;q=0, gzip;q=0.5"), Encoding::Gzip);
        assert_eq!(with("br;q=0, gzip;q=0"), Encoding::Identity);
        assert_eq!(with("identity"), Encoding::Identity);
    }

    /// Every module the console imports is served: a missing entry would be a blank page.
    #[test]
    fn every_imported_module_is_an_asset() {
        for (name, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).expect("utf-8");
            // The imports head each module; `import` further down is text (a setup snippet).
            let head = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with('*'))
                .filter(|l| !l.starts_with("/*"))
                .take_while(|l| l.starts_with("import "));
            for line in head {
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
