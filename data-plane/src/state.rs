//! What every part of a node shares: its typed configuration, identity, the configuration
//! it runs (from the control plane or last-known-good) and its counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_pipeline::time::now_ms;
use sluice_proto::config::v1::{Ack, Nack, SignedSnapshot, Snapshot, node_message};
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
    /// Snapshots refused because their signature did not check out.
    pub forged: AtomicU64,
    /// The control plane's snapshot keys this node trusts.
    trust: crate::trust::Trust,
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
        let trust = crate::trust::Trust::open(&config.state_dir, config.config_keys.clone());
        Self {
            config,
            node_id,
            secrets,
            current: watch::channel(None).0,
            from_control_plane: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            forged: AtomicU64::new(0),
            trust,
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
        let problems = saved.problems(
            &self.secrets,
            &self.config.policy,
            self.config.geoip_db.is_some(),
        );
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

    /// Checks a signed snapshot's signatures and version, then validates, persists and
    /// installs it; the answer to send back.
    pub async fn apply_signed(self: &Arc<Self>, signed: SignedSnapshot) -> node_message::Kind {
        let verified = match self.trust.verify(&signed) {
            Ok(verified) => verified,
            Err(refusal) => {
                self.forged.fetch_add(1, Ordering::Relaxed);
                let version = signed.decode_unverified().map_or(0, |s| s.version);
                tracing::error!(version, error = %refusal, "configuration refused: its signature does not check out");
                return self.refuse(version, signed.nonce, refusal.to_string());
            }
        };
        let version = verified.snapshot.version;
        let known = self
            .current()
            .map(|c| c.version)
            .max(lkg::load(&self.config.state_dir).map(|c| c.version))
            .unwrap_or(0);
        if version < known {
            tracing::error!(
                version,
                known,
                "configuration refused: older than the one this node had"
            );
            return self.refuse(
                version,
                signed.nonce,
                format!(
                    "version {version} is older than version {known}, which this node already had: a replayed or rolled-back snapshot"
                ),
            );
        }
        let answer = self.apply_snapshot(verified.snapshot).await;
        if matches!(answer, node_message::Kind::Ack(_))
            && let Err(e) = self.trust.pin(verified.announced)
        {
            tracing::error!(error = %e, "cannot pin the control plane's configuration keys");
        }
        answer
    }

    /// Refuses a snapshot: counted, kept as the last error, and the Nack to send.
    pub fn refuse(&self, version: u64, nonce: String, error: String) -> node_message::Kind {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.set_last_error(error.clone());
        tracing::warn!(version, error = %error, "configuration refused; keeping the current one");
        node_message::Kind::Nack(Nack {
            version,
            nonce,
            error,
        })
    }

    /// Validates, persists and installs a snapshot; the answer to send back.
    async fn apply_snapshot(self: &Arc<Self>, snapshot: Snapshot) -> node_message::Kind {
        let (version, nonce) = (snapshot.version, snapshot.nonce.clone());
        // Validation reads secret files and persisting fsyncs: keep both off the executor.
        // The blocking task outlives a shutdown that drops this future, so it takes only what
        // it needs, never the node (whose stores a restarted node must be able to reopen).
        let (secrets, policy) = (self.secrets.clone(), self.config.policy.clone());
        let (has_geoip, state_dir) = (
            self.config.geoip_db.is_some(),
            self.config.state_dir.clone(),
        );
        let outcome = tokio::task::spawn_blocking(move || {
            let config =
                AppliedConfig::from_snapshot(&snapshot, &secrets, &policy, has_geoip, now_ms())?;
            lkg::save(&state_dir, &config)
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
            Err(error) => self.refuse(version, nonce, error),
        }
    }
}
