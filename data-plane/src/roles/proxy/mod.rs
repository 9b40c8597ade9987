//! The proxy: the first-party edge that runs in the customer's own subdomain.
//!
//! Browsers (through the `/sluice.js` collector) and SDKs send Segment-style requests to its
//! public listener. Each accepted request is checked like the receiver checks it (write key,
//! event shape, limits), the event gets the first-party id cookie's value as `anonymousId`
//! when it carries none, and the request is written to a durable disk spool *before* it is
//! answered 200. Forwarder workers drain the spool to the receivers in gzipped batches
//! ([`forward`]); while no receiver answers, events wait in the spool (bounded: when full,
//! clients get 503 with `Retry-After`), so an acknowledged event is never lost.
//!
//! The public listener serves only what browsers need; health and metrics stay on the
//! node's internal listener.

mod cookie;
mod edge;
mod edge_ids;
mod forward;
mod handoff;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};
use sluice_proto::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::ApiError;
use crate::roles::receiver::segment::{Event, Stamp};
use crate::roles::receiver::{
    CALL_TYPES, MAX_BATCH_BYTES, MAX_EVENT_BYTES, bad, locate, parse, read_body, rejected, success,
};
use crate::shutdown::until_true;
use crate::state::NodeState;
use edge::{Proxy, cors, origin, source_of};
use forward::SPOOL_STAGE;
use sluice_bus::embedded::{EmbeddedBus, EmbeddedConfig};
use sluice_bus::{Bus, BusError, Message};
use sluice_pipeline::time::now_ms;

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy spool: {0}")]
    Spool(#[from] sluice_bus::BusError),
    #[error("proxy: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("proxy: cannot build the HTTP client to the receivers: {0}")]
    Client(#[from] reqwest::Error),
}

/// The collector script, minified by hand; its size is checked by a test.
const COLLECTOR_JS: &str = include_str!("collector.js");

/// The proxy's public listener and its forwarders.
pub struct RunningProxy {
    pub addr: SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
    workers: Vec<JoinHandle<()>>,
    spool: EmbeddedBus,
}

impl RunningProxy {
    /// Waits for the listener and forwarders to stop (after the shutdown signal).
    pub async fn stopped(self) {
        if let Ok(Err(e)) = self.server.await {
            tracing::warn!(error = %e, "proxy listener ended with an error");
        }
        for worker in self.workers {
            let _ = worker.await;
        }
        if let Err(e) = self.spool.flush() {
            tracing::warn!(error = %e, "cannot persist spool acknowledgements on shutdown");
        }
    }
}

/// Opens the spool, binds the public listener and starts forwarding. `local_receiver` is
/// this node's own listener when it runs the receiver role.
pub async fn start(
    node: Arc<NodeState>,
    local_receiver: Option<SocketAddr>,
    shutdown: watch::Receiver<bool>,
) -> Result<RunningProxy, ProxyError> {
    let config = node.config.proxy.clone();
    let spool = EmbeddedBus::open(EmbeddedConfig {
        max_bytes: config.spool_max_bytes,
        ..EmbeddedConfig::new(node.config.state_dir.join("proxy-spool"))
    })?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
        addr: config.addr,
        source,
    })?;
    node.config.policy.listening_on(addr);
    let mut receivers = config.receiver_urls.clone();
    if receivers.is_empty()
        && let Some(local) = local_receiver
    {
        receivers.push(format!("http://{local}"));
    }
    let workers = forward::start(node.clone(), spool.clone(), receivers, shutdown.clone())?;
    let proxy = Arc::new(Proxy {
        node,
        spool: spool.clone(),
        config,
        collector_gzip: gzip(COLLECTOR_JS.as_bytes()),
    });
    let app = router(proxy).into_make_service_with_connect_info::<SocketAddr>();
    let mut server_shutdown = shutdown;
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { until_true(&mut server_shutdown).await })
            .await
    });
    tracing::info!(proxy_addr = %addr, "proxy listening");
    Ok(RunningProxy {
        addr,
        server,
        workers,
        spool,
    })
}

fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/sluice.js", get(collector))
        .route("/v1/batch", post(batch).options(preflight))
        .route("/v1/import", post(batch).options(preflight))
        .route("/v1/handoff", post(handoff::issue).options(preflight))
        .route(
            "/v1/handoff/accept",
            post(handoff::accept).options(preflight),
        )
        .route("/v1/{call}", post(single).options(preflight))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route").into_response() })
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
        .with_state(proxy)
}

fn gzip(bytes: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    Bytes::from(encoder.finish().unwrap_or_default())
}

async fn collector(State(proxy): State<Arc<Proxy>>, headers: HeaderMap) -> Response {
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut response = if gzip_ok {
        let mut response = proxy.collector_gzip.clone().into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        COLLECTOR_JS.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A CORS preflight: allowed when any source of the tenant lists the origin.
async fn preflight(State(proxy): State<Arc<Proxy>>, headers: HeaderMap) -> Response {
    let Some(origin) = origin(&headers) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let allowed = proxy.node.current().is_some_and(|config| {
        config
            .pipelines
            .iter()
            .flat_map(|p| &p.spec.sources)
            .any(|source| source.allows_origin(origin))
    });
    if !allowed {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!("origin {origin} is not allowed"),
        )
        .into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(response.headers_mut(), origin);
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, content-encoding, authorization"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

async fn single(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = body
        .map_err(rejected)
        .and_then(|raw| EdgeRequest::read(Some(&call), &headers, &raw));
    accept(&proxy, peer, &headers, request).await
}

async fn batch(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = body
        .map_err(rejected)
        .and_then(|raw| EdgeRequest::read(None, &headers, &raw));
    accept(&proxy, peer, &headers, request).await
}

/// Answers a request: errors carry CORS headers once the source (and so its allowed
/// origins) is known, so a page can read why it was refused.
async fn accept(
    proxy: &Proxy,
    peer: SocketAddr,
    headers: &HeaderMap,
    request: Result<EdgeRequest, ApiError>,
) -> Response {
    let mut allowed_origin = None;
    let outcome = match request {
        Ok(request) => spool(proxy, peer, headers, request, &mut allowed_origin).await,
        Err(e) => Err(e),
    };
    let mut response = match outcome {
        Ok((visitor, vendor_cookies)) => {
            let mut response = success();
            let first_party = cookie::set_cookie(&proxy.config, &visitor);
            for set in std::iter::once(first_party).chain(vendor_cookies) {
                if let Ok(value) = HeaderValue::from_str(&set) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(e) => e.into_response(),
    };
    if let Some(origin) = allowed_origin {
        cors(response.headers_mut(), origin);
    }
    response
}

/// Checks a request and writes its events to the spool; the visitor id to set as cookie, and
/// the vendor cookies to set.
async fn spool<'h>(
    proxy: &Proxy,
    peer: SocketAddr,
    headers: &'h HeaderMap,
    request: EdgeRequest,
    allowed_origin: &mut Option<&'h str>,
) -> Result<(String, Vec<String>), ApiError> {
    let Some(config) = proxy.node.current() else {
        return Err(ApiError::new(ErrorCode::Unavailable, "no configuration yet").retry_after(5));
    };
    let now = now_ms();
    let (pipeline, source_name, key_text) = source_of(
        &config,
        headers,
        request.body_key.as_deref(),
        now,
        allowed_origin,
    )?;
    let source_name = source_name.as_str();
    let visitor = cookie::visitor_id(headers, &proxy.config.cookie_name)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let client_ip = client_ip(headers, peer, proxy.config.trust_forwarded_for);
    let received_at = sluice_pipeline::time::rfc3339(now);
    let stamp = Stamp {
        tenant_id: &config.tenant_id,
        pipeline_id: &pipeline.id,
        source: source_name,
        received_at: &received_at,
    };
    let batch = request.batch;
    let mut edge_ids = edge_ids::EdgeIds::new(&pipeline.spec, headers, &visitor);
    if let Some(edge) = &mut edge_ids
        && edge.would_mint()
        && let Some(known) = cookie::visitor_id(headers, &proxy.config.cookie_name)
        && let Some(fbp) = stored_fbp(proxy, &config.tenant_id, known).await
    {
        edge.known_fbp(fbp);
    }
    let mut messages = Vec::with_capacity(request.events.len());
    let mut scratch = Vec::new();
    for (i, mut event) in request.events.into_iter().enumerate() {
        let at = |message: String| locate(batch, i, message);
        first_party(&mut event, &visitor, &client_ip);
        if let Some(edge) = &mut edge_ids {
            edge.capture(&mut event, now);
        }
        let json = serde_json::to_vec(&event).map_err(|e| bad(at(e.to_string())))?;
        if json.len() > MAX_EVENT_BYTES {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                at("the event exceeds 32 KB".into()),
            ));
        }
        // The receiver's own check, so the sender hears of a mistake now rather than never.
        let typed: Event<'_> = serde_json::from_slice(&json).map_err(|e| bad(at(e.to_string())))?;
        scratch.clear();
        let message_id = typed
            .write_envelope(&stamp, &mut scratch)
            .map_err(|message| bad(at(message)))?;
        messages.push(Message::new(
            message_id,
            forward::spool_record(&key_text, &json),
        ));
    }
    let count = messages.len() as u64;
    match proxy.spool.publish(SPOOL_STAGE, messages).await {
        Ok(()) => {
            proxy
                .node
                .proxy_stats
                .accepted
                .fetch_add(count, Ordering::Relaxed);
            proxy
                .node
                .proxy_stats
                .spool_depth
                .fetch_add(count, Ordering::Relaxed);
            let cookies = edge_ids
                .map(|edge| edge.cookies(proxy.config.cookie_domain.as_deref()))
                .unwrap_or_default();
            Ok((visitor, cookies))
        }
        Err(BusError::Full { retry_after, .. }) => Err(ApiError::new(
            ErrorCode::Unavailable,
            "the proxy's spool is full; retry later",
        )
        .retry_after(retry_after.as_secs().max(1))),
        Err(e) => {
            tracing::error!(error = %e, "cannot write events to the proxy spool");
            Err(
                ApiError::new(ErrorCode::Unavailable, "the proxy cannot store events now")
                    .retry_after(1),
            )
        }
    }
}

/// The `fbp` a known visitor's profile holds; none when the store cannot say now.
async fn stored_fbp(proxy: &Proxy, tenant: &str, visitor: String) -> Option<String> {
    let visitors = proxy.node.visitors.clone()?;
    let tenant = tenant.to_owned();
    let profile =
        tokio::task::spawn_blocking(move || visitors.identities.profile(&tenant, &visitor))
            .await
            .ok()?
            .inspect_err(|e| tracing::debug!(error = %e, "cannot read a visitor's profile"))
            .ok()??;
    profile.ids.get("fbp").map(|seen| seen.value.clone())
}

/// A Segment request as the proxy reads it: events it can add to before spooling them.
struct EdgeRequest {
    body_key: Option<String>,
    events: Vec<Map<String, Value>>,
    batch: bool,
}

impl EdgeRequest {
    /// `call` is the single-event endpoint's type, `None` for `/v1/batch`; a batch's shared
    /// `context` and `sentAt` are copied into events that have none.
    fn read(call: Option<&str>, headers: &HeaderMap, raw: &Bytes) -> Result<Self, ApiError> {
        let limit = if call.is_some() {
            MAX_EVENT_BYTES
        } else {
            MAX_BATCH_BYTES
        };
        let body = read_body(headers, raw, limit)?;
        let text_key = |v: Option<Value>| match v {
            Some(Value::String(key)) => Some(key),
            _ => None,
        };
        if let Some(call) = call {
            if !CALL_TYPES.contains(&call) {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no such endpoint /v1/{call}"),
                ));
            }
            let Value::Object(mut event) = parse(&body)? else {
                return Err(bad("the body must be a JSON object"));
            };
            let body_key = text_key(event.remove("writeKey"));
            event.insert("type".into(), Value::String(call.to_owned()));
            return Ok(Self {
                body_key,
                events: vec![event],
                batch: false,
            });
        }
        let Value::Object(mut request) = parse(&body)? else {
            return Err(bad("the body must be a JSON object with a \"batch\" array"));
        };
        let Some(Value::Array(events)) = request.remove("batch") else {
            return Err(bad("batch: an array of events is required"));
        };
        let context = request.remove("context");
        let sent_at = request.remove("sentAt");
        let mut parsed = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            let Value::Object(mut event) = event else {
                return Err(bad(format!("batch[{i}]: each event must be a JSON object")));
            };
            if let Some(context) = &context {
                event.entry("context").or_insert_with(|| context.clone());
            }
            if let Some(sent_at) = &sent_at {
                event.entry("sentAt").or_insert_with(|| sent_at.clone());
            }
            parsed.push(event);
        }
        Ok(Self {
            body_key: text_key(request.remove("writeKey")),
            events: parsed,
            batch: true,
        })
    }
}

/// What the edge knows that the event may not: the first-party visitor id, a message id
/// (so a retried forward is deduplicated downstream), and the client's address.
fn first_party(event: &mut Map<String, Value>, visitor: &str, client_ip: &str) {
    let missing = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    if missing(event.get("anonymousId")) {
        event.insert("anonymousId".into(), Value::String(visitor.to_owned()));
    }
    if missing(event.get("messageId")) {
        event.insert(
            "messageId".into(),
            Value::String(uuid::Uuid::now_v7().to_string()),
        );
    }
    let context = event
        .entry("context")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(context) = context
        && missing(context.get("ip"))
    {
        context.insert("ip".into(), Value::String(client_ip.to_owned()));
    }
}

fn client_ip(headers: &HeaderMap, peer: SocketAddr, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for
        && let Some(first) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
    {
        return first.to_owned();
    }
    peer.ip().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_fills_in_what_only_it_knows_and_keeps_what_the_event_has() {
        let mut bare = Map::new();
        first_party(&mut bare, "visitor-1", "203.0.113.9");
        assert_eq!(bare["anonymousId"], "visitor-1");
        assert_eq!(bare["context"]["ip"], "203.0.113.9");
        assert_eq!(bare["messageId"].as_str().map(str::len), Some(36));

        let Value::Object(mut given) = serde_json::json!({
            "anonymousId": "a-7", "messageId": "m-7", "context": {"ip": "198.51.100.1"}
        }) else {
            unreachable!()
        };
        first_party(&mut given, "visitor-1", "203.0.113.9");
        assert_eq!(given["anonymousId"], "a-7");
        assert_eq!(given["messageId"], "m-7");
        assert_eq!(given["context"]["ip"], "198.51.100.1");
    }

    #[test]
    fn forwarded_for_is_used_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.1"),
        );
        let peer: SocketAddr = "10.0.0.2:5000".parse().expect("addr");
        assert_eq!(client_ip(&headers, peer, true), "203.0.113.9");
        assert_eq!(client_ip(&headers, peer, false), "10.0.0.2");
        headers.insert("x-forwarded-for", HeaderValue::from_static("junk"));
        assert_eq!(client_ip(&headers, peer, true), "10.0.0.2");
    }

    #[test]
    fn the_collector_stays_under_two_kilobytes_gzipped() {
        let size = gzip(COLLECTOR_JS.as_bytes()).len();
        assert!(size <= 2048, "sluice.js is {size} bytes gzipped");
    }
}
