//! A data-plane node: identity, configuration (from the control plane or last-known-good),
//! the HTTP listener and the sync loop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::config::v1::{Ack, Nack, Snapshot, node_message};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::applied::{AppliedConfig, SecretResolver};
use crate::bus::AnyBus;
use crate::bus::embedded::{EmbeddedBus, EmbeddedConfig};
use crate::bus::nats::{NatsBus, NatsConfig};
use crate::config::Config;
use crate::counters::Counters;
use crate::{http, identity, lkg, sync};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Bus(#[from] crate::bus::BusError),
    #[error("{0}")]
    GeoIp(String),
    #[error("{0}")]
    Archive(#[from] sluice_archive::ArchiveError),
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Resolves once the watched flag is true (or its sender is gone).
pub async fn until_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it before anything else awaits.
    let _ = flag.wait_for(|value| *value).await.map(|_| ());
}

/// What every part of the node shares.
pub struct NodeState {
    pub config: Config,
    pub node_id: String,
    pub secrets: SecretResolver,
    current: watch::Sender<Option<Arc<AppliedConfig>>>,
    /// Whether the running configuration came from the control plane in this process's life
    /// (false while running on last-known-good).
    from_control_plane: AtomicBool,
    pub connected: AtomicBool,
    pub rejected: AtomicU64,
    pub counters: Counters,
    pub proxy_stats: crate::proxy::ProxyStats,
    pub archive_stats: crate::archiver::ArchiveStats,
    /// The stages the node's roles consume and whether each is being read.
    pub consumers: crate::consumers::Consumers,
    last_error: Mutex<Option<String>>,
}

impl NodeState {
    /// Notified of every configuration the node starts running.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<AppliedConfig>>> {
        self.current.subscribe()
    }

    /// The running configuration; readers always see a whole one.
    pub fn current(&self) -> Option<Arc<AppliedConfig>> {
        self.current.borrow().clone()
    }

    pub fn synced_from_control_plane(&self) -> bool {
        self.from_control_plane.load(Ordering::Relaxed)
    }

    pub fn config_age_seconds(&self, config: &AppliedConfig) -> f64 {
        (now_ms() - config.received_at_unix_ms).max(0) as f64 / 1000.0
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_last_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    fn install(&self, config: AppliedConfig, from_control_plane: bool) {
        self.from_control_plane
            .store(from_control_plane, Ordering::Relaxed);
        self.current.send_replace(Some(Arc::new(config)));
    }

    /// Validates, persists and installs a snapshot; the answer to send back.
    pub async fn apply_snapshot(self: &Arc<Self>, snapshot: Snapshot) -> node_message::Kind {
        let (version, nonce) = (snapshot.version, snapshot.nonce.clone());
        let node = self.clone();
        // Validation reads secret files and persisting fsyncs: keep both off the executor.
        let outcome = tokio::task::spawn_blocking(move || {
            let config = AppliedConfig::from_snapshot(
                &snapshot,
                &node.secrets,
                node.config.geoip_db.is_some(),
                now_ms(),
            )?;
            lkg::save(&node.config.state_dir, &config)
                .map_err(|e| format!("cannot persist the configuration: {e}"))?;
            Ok::<_, String>(config)
        })
        .await
        .unwrap_or_else(|e| Err(format!("validation failed: {e}")));
        match outcome {
            Ok(config) => {
                self.install(config, true);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(version, "configuration applied");
                node_message::Kind::Ack(Ack { version, nonce })
            }
            Err(error) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                self.set_last_error(error.clone());
                tracing::warn!(version, error = %error, "configuration refused; keeping the current one");
                node_message::Kind::Nack(Nack {
                    version,
                    nonce,
                    error,
                })
            }
        }
    }
}

/// A node that is serving.
pub struct RunningNode {
    pub http_addr: SocketAddr,
    /// The proxy's public listener, when the node runs the proxy role.
    pub proxy_addr: Option<SocketAddr>,
    pub state: Arc<NodeState>,
    /// The bus the node's roles use.
    pub bus: AnyBus,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    sync: JoinHandle<()>,
    proxy: Option<crate::proxy::RunningProxy>,
    /// Processor workers and the delivery supervisor.
    roles: Vec<JoinHandle<()>>,
}

impl RunningNode {
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.sync.await;
        if let Some(proxy) = self.proxy {
            proxy.stopped().await;
        }
        for role in self.roles {
            let _ = role.await;
        }
        if let Ok(Err(e)) = self.server.await {
            tracing::warn!(error = %e, "http server ended with an error");
        }
        if let AnyBus::Embedded(bus) = &self.bus
            && let Err(e) = bus.flush()
        {
            tracing::warn!(error = %e, "cannot persist bus acknowledgements on shutdown");
        }
    }

    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}

/// Loads identity and last-known-good, binds the HTTP listener, and starts syncing.
pub async fn start(config: Config) -> Result<RunningNode, NodeError> {
    let state_err = |source| NodeError::StateDir {
        path: config.state_dir.display().to_string(),
        source,
    };
    identity::private_dir(&config.state_dir).map_err(state_err)?;
    let node_id = identity::node_id(&config.state_dir).map_err(state_err)?;
    let secrets = SecretResolver {
        dir: config.secrets_dir.clone(),
    };
    let (current, _) = watch::channel(None);
    let node = Arc::new(NodeState {
        config,
        node_id,
        secrets,
        current,
        from_control_plane: AtomicBool::new(false),
        connected: AtomicBool::new(false),
        rejected: AtomicU64::new(0),
        counters: Counters::default(),
        proxy_stats: crate::proxy::ProxyStats::default(),
        archive_stats: crate::archiver::ArchiveStats::default(),
        consumers: crate::consumers::Consumers::default(),
        last_error: Mutex::new(None),
    });
    if let Some(saved) = lkg::load(&node.config.state_dir) {
        let problems = saved.problems(&node.secrets, node.config.geoip_db.is_some());
        if problems.is_empty() {
            tracing::info!(
                version = saved.version,
                age_secs = node.config_age_seconds(&saved) as u64,
                "running on the last-known-good configuration until the control plane answers"
            );
            node.install(saved, false);
        } else {
            tracing::error!(problems = %problems.join("; "), "the last-known-good configuration cannot run here; waiting for the control plane");
        }
    }
    let listener = TcpListener::bind(node.config.http_addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: node.config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: node.config.http_addr,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let bus = match &node.config.nats_url {
        Some(url) => AnyBus::Nats(Box::new(
            NatsBus::connect(NatsConfig {
                prefix: node.config.nats_prefix.clone(),
                packed_fetch_bytes: node.config.nats_fetch_bytes,
                max_bytes: node.config.nats_max_bytes as i64,
                replicas: node.config.nats_replicas,
                packs_in_flight: node.config.nats_packs_in_flight,
                ..NatsConfig::new(url.clone())
            })
            .await?,
        )),
        None => AnyBus::Embedded(EmbeddedBus::open(EmbeddedConfig {
            max_bytes: node.config.bus_max_bytes,
            ..EmbeddedConfig::new(node.config.state_dir.join("bus"))
        })?),
    };
    let archive = if node.config.runs("archiver") || node.config.runs("query") {
        Some(node.config.archiver.store.open()?)
    } else {
        None
    };
    let app = http::router(node.clone(), bus.clone(), archive.clone());
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { until_true(&mut server_shutdown).await })
            .await
    });
    let proxy = if node.config.runs("proxy") {
        let local_receiver = node.config.runs("receiver").then_some(http_addr);
        Some(crate::proxy::start(node.clone(), local_receiver, shutdown_rx.clone()).await?)
    } else {
        None
    };
    let mut roles = Vec::new();
    if node.config.runs("processor") {
        let geoip = match &node.config.geoip_db {
            Some(path) => Some(Arc::new(
                crate::pipeline::enrich::GeoIp::open(path).map_err(NodeError::GeoIp)?,
            )),
            None => None,
        };
        let enricher = Arc::new(crate::pipeline::enrich::Enricher::new(geoip));
        roles.extend(crate::processor::start(
            node.clone(),
            bus.clone(),
            enricher,
            shutdown_rx.clone(),
        ));
    }
    if node.config.runs("delivery") {
        roles.push(crate::delivery::start(
            node.clone(),
            bus.clone(),
            shutdown_rx.clone(),
        ));
    }
    if node.config.runs("archiver")
        && let Some(store) = &archive
    {
        roles.push(crate::archiver::start(
            node.clone(),
            bus.clone(),
            store.clone(),
            node.config.archiver.clone(),
            shutdown_rx.clone(),
        ));
    }
    let sync = tokio::spawn(sync::run(node.clone(), shutdown_rx));
    tracing::info!(http_addr = %http_addr, node_id = %node.node_id, roles = ?node.config.roles, "data plane listening");
    Ok(RunningNode {
        http_addr,
        proxy_addr: proxy.as_ref().map(|p| p.addr),
        proxy,
        roles,
        state: node,
        bus,
        shutdown,
        server,
        sync,
    })
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(config: Config) -> Result<(), NodeError> {
    let mut running = start(config).await?;
    tokio::select! {
        () = shutdown_signal() => tracing::info!("shutting down"),
        () = running.wait() => tracing::error!("http server stopped unexpectedly"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), running.shutdown()).await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
