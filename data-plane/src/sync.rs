//! The config-sync client: one stream to the control plane, reconnected with exponential
//! backoff and full jitter; snapshots are validated, persisted and applied before they are
//! acknowledged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_proto::config::v1::config_sync_client::ConfigSyncClient;
use sluice_proto::config::v1::{
    ControlMessage, DestinationHealth, Heartbeat, Hello, KeyUse, NodeMessage, Status,
    control_message, node_message,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::shutdown::until_true;
use crate::state::NodeState;
use sluice_pipeline::time::now_ms;

/// This build's version, reported to the control plane.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// First retry delay; doubles per failure up to the configured cap.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Largest snapshot accepted, in bytes.
const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum SyncError {
    /// The control plane refused the credentials: a revoked, expired or wrong key.
    #[error("the control plane refused the service key: {0}")]
    Rejected(String),
    #[error("cannot reach the control plane: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Stream(String),
}

impl SyncError {
    fn from_status(status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                Self::Rejected(status.message().to_owned())
            }
            _ => Self::Stream(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

/// Keeps the node in sync until shutdown.
pub async fn run(node: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    loop {
        let outcome = tokio::select! {
            outcome = session(&node) => outcome,
            () = until_true(&mut shutdown) => return,
        };
        node.connected.store(false, Ordering::Relaxed);
        let delay = match outcome {
            Ok(()) => {
                failures = 0;
                tracing::info!("config-sync stream closed by the control plane; reconnecting");
                jitter(BASE_BACKOFF)
            }
            Err(SyncError::Rejected(message)) => {
                // Retrying fast cannot help: only a new key can. Say so plainly, retry slowly.
                failures = failures.saturating_add(1);
                let wait = node.config.max_backoff;
                tracing::error!(
                    reason = %message,
                    retry_in_secs = wait.as_secs(),
                    "the control plane refused this node's service key (revoked, expired or mistyped); \
                     generate a new service key and set SLUICE_SERVICE_KEY"
                );
                node.set_last_error(format!("service key refused: {message}"));
                wait
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures, node.config.max_backoff);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "config sync interrupted");
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = until_true(&mut shutdown) => return,
        }
    }
}

async fn connect(node: &NodeState) -> Result<Channel, SyncError> {
    let mut endpoint = Endpoint::from_shared(node.config.control_url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if node.config.control_url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(ca) = &node.config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| SyncError::Stream(format!("ca file {}: {e}", ca.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect().await?)
}

async fn session(node: &Arc<NodeState>) -> Result<(), SyncError> {
    let channel = connect(node).await?;
    let mut client = ConfigSyncClient::new(channel).max_decoding_message_size(MAX_SNAPSHOT_BYTES);
    let (tx, rx) = mpsc::channel::<NodeMessage>(16);
    let held = node.current().map_or(0, |c| c.version);
    let hello = Hello {
        node_id: node.node_id.clone(),
        name: node.config.node_name.clone(),
        agent_version: AGENT_VERSION.to_owned(),
        roles: node
            .config
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        config_version: held,
        urls: node
            .config
            .urls
            .iter()
            .map(|(role, url)| (role.as_str().to_owned(), url.clone()))
            .collect(),
    };
    send(&tx, node_message::Kind::Hello(hello)).await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let bearer = format!("Bearer {}", node.config.service_key)
        .parse()
        .map_err(|_| SyncError::Rejected("the service key is not a valid header value".into()))?;
    request.metadata_mut().insert("authorization", bearer);
    let mut inbound = client
        .stream(request)
        .await
        .map_err(|s| SyncError::from_status(&s))?
        .into_inner();
    node.connected.store(true, Ordering::Relaxed);
    tracing::info!(url = %node.config.control_url, held_version = held, "connected to the control plane");

    let mut status_tick = tokio::time::interval(node.config.status_interval);
    let mut heartbeat_tick = tokio::time::interval(node.config.heartbeat);
    heartbeat_tick.tick().await;
    loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(ControlMessage { kind: Some(control_message::Kind::SignedSnapshot(signed)) })) => {
                    let reply = node.apply_signed(signed).await;
                    send(&tx, reply).await?;
                    send(&tx, node_message::Kind::Status(status(node))).await?;
                }
                Ok(Some(ControlMessage { kind: Some(control_message::Kind::Snapshot(unsigned)) })) => {
                    let reply = node.refuse(unsigned.version, unsigned.nonce, "an unsigned snapshot: this node applies only snapshots the control plane signed (upgrade the control plane)".into());
                    send(&tx, reply).await?;
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(status) => return Err(SyncError::from_status(&status)),
            },
            _ = status_tick.tick() => send(&tx, node_message::Kind::Status(status(node))).await?,
            _ = heartbeat_tick.tick() => send(&tx, node_message::Kind::Heartbeat(Heartbeat { sent_at_unix_ms: now_ms() })).await?,
        }
    }
}

async fn send(tx: &mpsc::Sender<NodeMessage>, kind: node_message::Kind) -> Result<(), SyncError> {
    tx.send(NodeMessage { kind: Some(kind) })
        .await
        .map_err(|_| SyncError::Stream("stream closed".into()))
}

fn status(node: &NodeState) -> Status {
    let current = node.current();
    Status {
        applied_version: current.as_ref().map_or(0, |c| c.version),
        roles: node
            .config
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        counters: node.counters.snapshot().into_iter().collect(),
        destinations: node
            .counters
            .health()
            .into_iter()
            .map(
                |(pipeline_id, pipeline, destination, h)| DestinationHealth {
                    pipeline_id,
                    pipeline,
                    destination,
                    state: h.state.to_owned(),
                    last_error: h.last_error.unwrap_or_default(),
                    last_error_status: h.last_error_status.map_or(0, u32::from),
                    last_error_at_unix_ms: h.last_error_ms.unwrap_or(0),
                    last_delivered_at_unix_ms: h.last_delivered_ms.unwrap_or(0),
                    delivered_5m: h.last_5m[0],
                    retried_5m: h.last_5m[1],
                    failed_5m: h.last_5m[2],
                    delivered_24h: h.last_24h[0],
                    retried_24h: h.last_24h[1],
                    failed_24h: h.last_24h[2],
                },
            )
            .collect(),
        key_use: node
            .counters
            .key_use()
            .into_iter()
            .map(|(public_id, u)| KeyUse {
                public_id,
                pipeline_id: u.pipeline_id,
                source: u.source,
                events: u.events,
                last_used_at_unix_ms: u.last_used_ms,
            })
            .collect(),
        last_error: node.last_error().unwrap_or_default(),
        config_age_seconds: current
            .as_ref()
            .map_or(0, |c| node.config_age_seconds(c) as u64),
    }
}

/// Exponential backoff with full jitter: uniformly random in [0, min(cap, base · 2^failures)].
fn backoff(failures: u32, cap: Duration) -> Duration {
    let ceiling = BASE_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(cap);
    jitter(ceiling)
}

fn jitter(ceiling: Duration) -> Duration {
    let random = sluice_keys::random::bytes::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or(u64::MAX / 2);
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    ceiling.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_is_jittered() {
        let cap = Duration::from_secs(30);
        for failures in 0..40 {
            let ceiling = BASE_BACKOFF
                .saturating_mul(1u32 << failures.min(16))
                .min(cap);
            assert!(backoff(failures, cap) <= ceiling);
        }
        let samples: Vec<_> = (0..50).map(|_| backoff(10, cap)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "jittered");
        assert!(samples.iter().all(|d| *d <= cap));
    }
}
