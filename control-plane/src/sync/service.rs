use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_keys::KeyType;
use sluice_proto::config::v1::config_sync_server::ConfigSync;
use sluice_proto::config::v1::{
    ControlMessage, Heartbeat, Hello, NodeMessage, SignedSnapshot, SnapshotSignature,
    Status as NodeStatus, control_message, node_message,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use sluice_proto::Role;

use super::ControlEvent;
use crate::auth::{bearer_token, verify_key};
use crate::metrics;
use crate::state::AppState;
use crate::store::{KeyRecord, NodeHello, now_ms};

/// How long a node has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest error text kept from a NACK or status, in bytes.
const MAX_ERROR: usize = 4096;
/// Most counters kept from one status report.
const MAX_COUNTERS: usize = 64;
/// Least time between two `last_seen_at` writes for one node.
const SEEN_WRITE_INTERVAL: Duration = Duration::from_secs(5);

type Outbound = mpsc::Sender<Result<ControlMessage, Status>>;

/// The `ConfigSync` gRPC service.
pub struct ConfigSyncService {
    state: AppState,
}

impl ConfigSyncService {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl ConfigSync for ConfigSyncService {
    type StreamStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<ControlMessage, Status>> + Send>>;

    async fn stream(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated("missing authorization: Bearer <service key>")
            })?;
        let token = bearer_token(header).ok_or_else(|| {
            Status::unauthenticated("expected authorization: Bearer <service key>")
        })?;
        let verified = verify_key(&self.state, token).await.map_err(Status::from)?;
        if verified.key_type != KeyType::Service {
            return Err(Status::unauthenticated("config sync needs a service key"));
        }
        let (tx, rx) = mpsc::channel(8);
        let session = Session::new(self.state.clone(), verified.record, tx);
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One node's stream.
struct Session {
    state: AppState,
    key: Arc<KeyRecord>,
    tx: Outbound,
    events: broadcast::Receiver<ControlEvent>,
    node_id: String,
    /// The version the node holds.
    applied: u64,
    /// A version the node refused: not sent again until the configuration changes.
    nacked: Option<u64>,
    /// The snapshot awaiting an answer.
    sent: Option<(u64, String)>,
    last_seen_write: Instant,
    reported: super::report::Reported,
}

/// Why a session ends.
enum End {
    /// Tell the node, then close.
    Refuse(Status),
    /// The node went away, or the server is shutting down.
    Quiet,
}

impl Session {
    fn new(state: AppState, key: Arc<KeyRecord>, tx: Outbound) -> Self {
        // Subscribe before reading anything, so no change can fall between the read and the
        // subscription.
        let events = state.hub.subscribe();
        Self {
            state,
            key,
            tx,
            events,
            node_id: String::new(),
            applied: 0,
            nacked: None,
            sent: None,
            last_seen_write: Instant::now(),
            reported: super::report::Reported::default(),
        }
    }

    async fn run(mut self, mut inbound: Streaming<NodeMessage>) {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(NodeMessage {
                kind: Some(node_message::Kind::Hello(hello)),
            }))) => hello,
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Ok(Ok(Some(_))) => {
                return self
                    .refuse(Status::invalid_argument(
                        "the first message must be a hello",
                    ))
                    .await;
            }
            Err(_) => {
                return self
                    .refuse(Status::deadline_exceeded("no hello within 10 seconds"))
                    .await;
            }
        };
        if let Err(status) = self.greet(hello).await {
            return self.refuse(status).await;
        }
        ::metrics::gauge!(metrics::SYNC_STREAMS).increment(1.0);
        let end = self.serve(&mut inbound).await;
        ::metrics::gauge!(metrics::SYNC_STREAMS).decrement(1.0);
        if let Err(e) = self
            .state
            .store
            .node_disconnected(&self.key.tenant_id, &self.node_id)
            .await
        {
            tracing::warn!(error = %e, node_id = %self.node_id, "cannot record a node's disconnection");
        }
        tracing::info!(tenant_id = %self.key.tenant_id, node_id = %self.node_id, "data plane disconnected");
        if let End::Refuse(status) = end {
            self.refuse(status).await;
        }
    }

    async fn refuse(&self, status: Status) {
        tracing::info!(tenant_id = %self.key.tenant_id, node_id = %self.node_id, code = ?status.code(), message = status.message(), "closing a config-sync stream");
        let _ = self.tx.send(Err(status)).await;
    }

    async fn greet(&mut self, hello: Hello) -> Result<(), Status> {
        validate_hello(&hello)?;
        let roles = serde_json::to_string(&hello.roles).unwrap_or_else(|_| "[]".into());
        let urls = serde_json::to_string(&hello.urls).unwrap_or_else(|_| "{}".into());
        let node = self
            .state
            .store
            .node_connected(&NodeHello {
                tenant_id: &self.key.tenant_id,
                id: &hello.node_id,
                key_id: &self.key.id,
                name: &hello.name,
                agent_version: &hello.agent_version,
                roles_json: &roles,
                held_version: i64::try_from(hello.config_version).unwrap_or(i64::MAX),
                urls_json: &urls,
            })
            .await
            .map_err(|e| Status::unavailable(format!("store: {e}")))?;
        self.node_id = hello.node_id;
        self.applied = hello.config_version;
        self.nacked = node.nacked_version.and_then(|v| u64::try_from(v).ok());
        tracing::info!(tenant_id = %self.key.tenant_id, node_id = %self.node_id, name = %hello.name, held_version = self.applied, "data plane connected");
        self.offer_snapshot().await.map_err(|end| match end {
            End::Refuse(status) => status,
            End::Quiet => Status::cancelled("closed"),
        })
    }

    async fn serve(&mut self, inbound: &mut Streaming<NodeMessage>) -> End {
        let config = &self.state.config;
        let mut heartbeat = tokio::time::interval(config.sync_heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let idle_timeout = config.sync_idle_timeout;
        let mut last_heard = Instant::now();
        let mut shutdown = self.state.shutdown.clone();
        loop {
            let step = tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        last_heard = Instant::now();
                        self.handle(message).await
                    }
                    Ok(None) => Err(End::Quiet),
                    Err(status) => {
                        tracing::warn!(node_id = %self.node_id, code = ?status.code(), message = status.message(), "bad message from a data plane");
                        Err(End::Refuse(Status::invalid_argument(format!("unreadable message: {}", status.message()))))
                    }
                },
                event = self.events.recv() => self.on_event(event).await,
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > idle_timeout {
                        Err(End::Refuse(Status::deadline_exceeded("nothing heard from the node; reconnect")))
                    } else {
                        self.send(control_message::Kind::Heartbeat(Heartbeat { sent_at_unix_ms: now_ms() })).await
                    }
                }
                _ = self.tx.closed() => Err(End::Quiet),
                () = until_true(&mut shutdown) => {
                    Err(End::Refuse(Status::unavailable("control plane shutting down; reconnect")))
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn handle(&mut self, message: NodeMessage) -> Result<(), End> {
        let tenant = self.key.tenant_id.clone();
        let store = &self.state.store;
        match message.kind {
            Some(node_message::Kind::Ack(ack)) => {
                if self.sent.as_ref() != Some(&(ack.version, ack.nonce.clone())) {
                    tracing::debug!(node_id = %self.node_id, version = ack.version, "ignoring an ack with a stale nonce");
                    return Ok(());
                }
                self.sent = None;
                self.applied = ack.version;
                self.nacked = None;
                store
                    .node_acked(&tenant, &self.node_id, as_i64(ack.version))
                    .await
                    .map_err(store_failure)?;
                ::metrics::counter!(metrics::SYNC_ACKS_TOTAL).increment(1);
                tracing::info!(tenant_id = %tenant, node_id = %self.node_id, version = ack.version, "data plane applied configuration");
            }
            Some(node_message::Kind::Nack(nack)) => {
                if self.sent.as_ref() != Some(&(nack.version, nack.nonce.clone())) {
                    tracing::debug!(node_id = %self.node_id, version = nack.version, "ignoring a nack with a stale nonce");
                    return Ok(());
                }
                self.sent = None;
                self.nacked = Some(nack.version);
                let error = truncate(&nack.error, MAX_ERROR);
                store
                    .node_nacked(&tenant, &self.node_id, as_i64(nack.version), &error)
                    .await
                    .map_err(store_failure)?;
                ::metrics::counter!(metrics::SYNC_NACKS_TOTAL).increment(1);
                tracing::warn!(tenant_id = %tenant, node_id = %self.node_id, version = nack.version, error = %error, "data plane refused configuration");
            }
            Some(node_message::Kind::Status(status)) => {
                let counters = counters_json(&status);
                let error = Some(truncate(&status.last_error, MAX_ERROR)).filter(|e| !e.is_empty());
                store
                    .node_status(
                        &tenant,
                        &self.node_id,
                        &counters,
                        &destinations_json(&status),
                        error.as_deref(),
                    )
                    .await
                    .map_err(store_failure)?;
                self.reported
                    .record(store, &tenant, &self.node_id, &counters, &status)
                    .await
                    .map_err(store_failure)?;
                self.last_seen_write = Instant::now();
            }
            Some(node_message::Kind::Heartbeat(_)) => {
                if self.last_seen_write.elapsed() >= SEEN_WRITE_INTERVAL {
                    store
                        .node_seen(&tenant, &self.node_id)
                        .await
                        .map_err(store_failure)?;
                    self.last_seen_write = Instant::now();
                }
            }
            Some(node_message::Kind::Hello(_)) => {
                return Err(End::Refuse(Status::invalid_argument(
                    "hello may only be the first message",
                )));
            }
            None => return Err(End::Refuse(Status::invalid_argument("empty message"))),
        }
        Ok(())
    }

    async fn on_event(
        &mut self,
        event: Result<ControlEvent, broadcast::error::RecvError>,
    ) -> Result<(), End> {
        let tenant = self.key.tenant_id.as_str();
        match event {
            Ok(ControlEvent::ConfigChanged { tenant_id }) if tenant_id == tenant => {
                self.offer_snapshot().await
            }
            Ok(ControlEvent::KeyRevoked { key_id, .. }) if key_id == self.key.id => {
                Err(End::Refuse(Status::unauthenticated("service key revoked")))
            }
            Ok(ControlEvent::TenantDeleted { tenant_id }) if tenant_id == tenant => {
                Err(End::Refuse(Status::unauthenticated("tenant deleted")))
            }
            Ok(_) => Ok(()),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Missed events: find out from the store what they would have said.
                tracing::warn!(missed, node_id = %self.node_id, "config-sync stream lagged behind events");
                let key = self
                    .state
                    .store
                    .key_by_public_id(&self.key.public_id)
                    .await
                    .map_err(store_failure)?;
                if key.is_none_or(|k| k.revoked_at.is_some()) {
                    return Err(End::Refuse(Status::unauthenticated("service key revoked")));
                }
                self.offer_snapshot().await
            }
            Err(broadcast::error::RecvError::Closed) => Err(End::Quiet),
        }
    }

    /// Sends the current snapshot unless the node holds it, refused it, or has it in flight.
    async fn offer_snapshot(&mut self) -> Result<(), End> {
        let current = self
            .state
            .snapshots
            .current(&self.state, &self.key.tenant_id)
            .await
            .map_err(store_failure)?;
        let Some(current) = current else {
            return Err(End::Refuse(Status::unauthenticated("tenant deleted")));
        };
        let version = current.version;
        let in_flight = self.sent.as_ref().is_some_and(|(v, _)| *v == version);
        if version == self.applied || self.nacked == Some(version) || in_flight {
            return Ok(());
        }
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        // Signed as encoded, so the node checks the very bytes it decodes.
        let body = current.encode_to_bytes();
        let signatures =
            sluice_keys::signed::SnapshotSigner::from_jwt_keys(self.state.jwt.materials())
                .sign(&body)
                .into_iter()
                .map(|(key_id, signature)| SnapshotSignature { key_id, signature })
                .collect();
        let signed = SignedSnapshot {
            snapshot: body,
            nonce: nonce.clone(),
            signatures,
        };
        self.send(control_message::Kind::SignedSnapshot(signed))
            .await?;
        self.sent = Some((version, nonce));
        ::metrics::counter!(metrics::SYNC_SNAPSHOTS_TOTAL).increment(1);
        tracing::debug!(node_id = %self.node_id, version, "snapshot sent");
        Ok(())
    }

    async fn send(&self, kind: control_message::Kind) -> Result<(), End> {
        self.tx
            .send(Ok(ControlMessage { kind: Some(kind) }))
            .await
            .map_err(|_| End::Quiet)
    }
}

fn store_failure(e: crate::store::StoreError) -> End {
    tracing::error!(error = %e, "config sync cannot reach the store");
    End::Refuse(Status::unavailable(
        "control plane store unavailable; reconnect",
    ))
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect()
}

/// Most destinations a status report is kept for.
const MAX_DESTINATIONS: usize = 256;
/// Longest name or destination error kept, in bytes.
const MAX_DESTINATION_TEXT: usize = 300;

/// The destinations' health as the fleet API serves it: names and messages cut to size, a
/// state that is one of the three known.
fn destinations_json(status: &NodeStatus) -> String {
    let text = |s: &str| truncate(s, MAX_DESTINATION_TEXT);
    let at = |ms: i64| (ms > 0).then(|| crate::api::common::rfc3339(ms));
    let destinations: Vec<serde_json::Value> = status
        .destinations
        .iter()
        .take(MAX_DESTINATIONS)
        .map(|d| {
            let state = match d.state.as_str() {
                "ok" | "failing" | "idle" => d.state.as_str(),
                _ => "idle",
            };
            serde_json::json!({
                "pipeline_id": text(&d.pipeline_id),
                "pipeline": text(&d.pipeline),
                "destination": text(&d.destination),
                "state": state,
                "last_error": Some(text(&d.last_error)).filter(|e| !e.is_empty()),
                "last_error_status": (d.last_error_status > 0).then_some(d.last_error_status),
                "last_error_at": at(d.last_error_at_unix_ms),
                "last_delivered_at": at(d.last_delivered_at_unix_ms),
                "last_5m": {"delivered": d.delivered_5m, "retried": d.retried_5m, "failed": d.failed_5m},
                "last_24h": {"delivered": d.delivered_24h, "retried": d.retried_24h, "failed": d.failed_24h},
            })
        })
        .collect();
    serde_json::Value::Array(destinations).to_string()
}

fn counters_json(status: &NodeStatus) -> String {
    let counters: serde_json::Map<String, serde_json::Value> = status
        .counters
        .iter()
        .filter(|(name, _)| {
            !name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control)
        })
        .take(MAX_COUNTERS)
        .map(|(name, value)| (name.clone(), serde_json::Value::from(*value)))
        .collect();
    serde_json::Value::Object(counters).to_string()
}

fn printable(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && !text.chars().any(char::is_control)
}

fn validate_hello(hello: &Hello) -> Result<(), Status> {
    let id_ok = !hello.node_id.is_empty()
        && hello.node_id.len() <= 64
        && hello
            .node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(Status::invalid_argument(
            "hello.node_id: 1 to 64 of A-Z, a-z, 0-9, - and _",
        ));
    }
    if !printable(&hello.name, 200) {
        return Err(Status::invalid_argument(
            "hello.name: 1 to 200 printable characters",
        ));
    }
    if !printable(&hello.agent_version, 64) {
        return Err(Status::invalid_argument(
            "hello.agent_version: 1 to 64 printable characters",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for role in &hello.roles {
        if let Err(unknown) = role.parse::<Role>() {
            return Err(Status::invalid_argument(format!("hello.roles: {unknown}")));
        }
        if !seen.insert(role) {
            return Err(Status::invalid_argument(format!(
                "hello.roles: {role} twice"
            )));
        }
    }
    for (role, url) in &hello.urls {
        if role.parse::<Role>().is_err() || !seen.contains(role) {
            return Err(Status::invalid_argument(format!(
                "hello.urls: {role:?} is not one of the node's roles"
            )));
        }
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || !printable(url, 300) || url.contains(char::is_whitespace) {
            return Err(Status::invalid_argument(format!(
                "hello.urls.{role}: an http(s) URL of at most 300 printable characters"
            )));
        }
    }
    Ok(())
}

/// Resolves once the watched flag is true (or its sender is gone).
async fn until_true(flag: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it before anything else awaits.
    let _ = flag.wait_for(|value| *value).await.map(|_| ());
}
