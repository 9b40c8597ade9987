//! What every part of a node shares: its typed configuration, identity, the configuration
//! it runs (from the control plane or last-known-good) and its counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_pipeline::time::now_ms;
use sluice_proto::config::v1::{Ack, Nack, Snapshot, node_message};
use tokio::sync::watch;

use crate::applied::{AppliedConfig, SecretResolver};
use crate::config::Config;
use crate::inspect::tap::Tap;
use crate::lkg;
use crate::telemetry::consumers::Consumers;
use crate::telemetry::counters::{ArchiveStats, Counters, ProxyStats};
use crate::telemetry::metrics::Metrics;

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
    /// The node's own metrics recorder.
    pub metrics: Metrics,
    pub proxy_stats: ProxyStats,
    pub archive_stats: ArchiveStats,
    /// The stages the node's roles consume and whether each is being read.
    pub consumers: Consumers,
    /// The live inspector's taps.
    pub tap: Tap,
    /// The identity store and handoff key, on nodes running the processor or the proxy.
    pub visitors: Option<Arc<crate::visitors::Visitors>>,
    last_error: Mutex<Option<String>>,
}

impl NodeState {
    pub fn new(config: Config, node_id: String) -> Self {
        let secrets = SecretResolver {
            dir: config.secrets_dir.clone(),
        };
        let tap = Tap::new(config.inspect);
        Self {
            config,
            node_id,
            secrets,
            current: watch::channel(None).0,
            from_control_plane: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            counters: Counters::default(),
            metrics: Metrics::default(),
            proxy_stats: ProxyStats::default(),
            archive_stats: ArchiveStats::default(),
            consumers: Consumers::default(),
            visitors: None,
            tap,
            last_error: Mutex::new(None),
        }
    }

    /// Runs the last-known-good configuration, when one is saved and can run here, until the
    /// control plane answers.
    pub fn adopt_last_known_good(&self) {
        let Some(saved) = lkg::load(&self.config.state_dir) else {
            return;
        };
        let problems = saved.problems(&self.secrets, self.config.geoip_db.is_some());
        if problems.is_empty() {
            tracing::info!(
                version = saved.version,
                age_secs = self.config_age_seconds(&saved) as u64,
                "running on the last-known-good configuration until the control plane answers"
            );
            self.install(saved, false);
        } else {
            tracing::error!(problems = %problems.join("; "), "the last-known-good configuration cannot run here; waiting for the control plane");
        }
    }

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
