//! The Sluice data plane: a node that keeps its tenant's configuration in sync with the
//! control plane (and runs on its last-known-good copy when the control plane is away), and
//! the roles that collect, govern, deliver, archive and query events inside the customer's
//! network.
//!
//! This module is the composition root: [`start`] builds the node from its parts and nothing
//! below imports it. Beside it, the node's own state ([`state`], [`sync`], last-known-good,
//! identity), [`config`], [`http`] (the error every API answers with and who may call),
//! [`telemetry`] (counters, metrics, consumers), the live [`inspect`]or and [`roles`].

pub mod applied;
pub mod config;
pub mod http;
mod identity;
pub mod inspect;
mod lkg;
pub mod policy;
pub mod roles;
mod routes;
mod scrape;
mod shutdown;
pub mod state;
mod sync;
pub mod telemetry;
pub mod trust;
pub mod visitors;
mod visitors_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_bus::AnyBus;
use sluice_bus::embedded::{EmbeddedBus, EmbeddedConfig};
use sluice_bus::nats::{NatsBus, NatsConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{BusConfig, Config, RawConfig};
use shutdown::until_true;
use sluice_proto::Role;
use state::NodeState;

pub use sync::AGENT_VERSION;

/// Why a node cannot start.
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
    Bus(#[from] sluice_bus::BusError),
    #[error("{0}")]
    GeoIp(String),
    #[error("{0}")]
    Archive(#[from] sluice_archive::ArchiveError),
    #[error("{0}")]
    Proxy(#[from] roles::proxy::ProxyError),
    #[error("identity store: {0}")]
    Visitors(#[from] visitors::VisitorsError),
    #[error("delivery: cannot build the HTTP client: {0}")]
    DeliveryClient(reqwest::Error),
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
    proxy: Option<roles::proxy::RunningProxy>,
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
    let state_dir = config.state_dir.display().to_string();
    let state_err = |source| NodeError::StateDir {
        path: state_dir.clone(),
        source,
    };
    identity::private_dir(&config.state_dir).map_err(state_err)?;
    let node_id = identity::node_id(&config.state_dir).map_err(state_err)?;
    let keeps_visitors = config.runs(Role::Processor) || config.runs(Role::Proxy);
    let visitors = if keeps_visitors {
        Some(Arc::new(visitors::open(&config).await?))
    } else {
        None
    };
    let mut state = NodeState::new(config, node_id);
    state.visitors = visitors;
    let node = Arc::new(state);
    node.adopt_last_known_good();
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
    node.config.policy.listening_on(http_addr);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let bus = match &node.config.bus {
        BusConfig::Nats {
            url,
            prefix,
            fetch_bytes,
            max_bytes,
            replicas,
            packs_in_flight,
        } => AnyBus::Nats(Box::new(
            NatsBus::connect(NatsConfig {
                prefix: prefix.clone(),
                packed_fetch_bytes: *fetch_bytes,
                max_bytes: i64::try_from(*max_bytes).unwrap_or(i64::MAX),
                replicas: *replicas,
                packs_in_flight: *packs_in_flight,
                ..NatsConfig::new(url.clone())
            })
            .await?,
        )),
        BusConfig::Embedded { max_bytes } => AnyBus::Embedded(EmbeddedBus::open(EmbeddedConfig {
            max_bytes: *max_bytes,
            ..EmbeddedConfig::new(node.config.state_dir.join("bus"))
        })?),
    };
    let archive = if node.config.runs(Role::Archiver) || node.config.runs(Role::Query) {
        Some(node.config.archiver.store.open()?)
    } else {
        None
    };
    let (erasures, erasure_jobs) = if node.config.runs(Role::Archiver) && archive.is_some() {
        let (send, take) = tokio::sync::mpsc::channel(roles::archiver::maintain::QUEUED_ERASURES);
        (Some(send), Some(take))
    } else {
        (None, None)
    };
    let app = routes::router(
        node.clone(),
        bus.clone(),
        archive.clone(),
        erasures,
        shutdown_rx.clone(),
    );
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { until_true(&mut server_shutdown).await })
            .await
    });
    let proxy = if node.config.runs(Role::Proxy) {
        let local_receiver = node.config.runs(Role::Receiver).then_some(http_addr);
        Some(roles::proxy::start(node.clone(), local_receiver, shutdown_rx.clone()).await?)
    } else {
        None
    };
    let mut roles = Vec::new();
    if node.config.runs(Role::Processor) {
        let geoip = match &node.config.geoip_db {
            Some(path) => Some(Arc::new(
                sluice_pipeline::enrich::GeoIp::open(path).map_err(NodeError::GeoIp)?,
            )),
            None => None,
        };
        let mut enricher = sluice_pipeline::enrich::Enricher::new(geoip);
        if let Some(visitors) = &node.visitors {
            enricher = enricher.with_identities(visitors.identities.clone());
        }
        let enricher = Arc::new(enricher);
        roles.extend(roles::processor::start(
            node.clone(),
            bus.clone(),
            enricher,
            shutdown_rx.clone(),
        ));
    }
    if node.config.runs(Role::Delivery) {
        roles.push(
            roles::delivery::start(node.clone(), bus.clone(), shutdown_rx.clone())
                .map_err(NodeError::DeliveryClient)?,
        );
    }
    if let (Some(store), Some(jobs)) = (&archive, erasure_jobs) {
        roles.push(roles::archiver::start(
            node.clone(),
            bus.clone(),
            store.clone(),
            node.config.archiver.clone(),
            jobs,
            shutdown_rx.clone(),
        ));
    }
    roles.extend(visitors_api::upkeep(node.clone(), shutdown_rx.clone()));
    roles.push({
        let (node, bus, mut shutdown) = (node.clone(), bus.clone(), shutdown_rx.clone());
        tokio::spawn(async move {
            telemetry::consumers::sample_pending(&node.consumers, &bus, &mut shutdown).await;
        })
    });
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
