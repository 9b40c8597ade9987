use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sluice_keys::{JwtKeySet, KeyHasher};

use crate::auth::{KeyCache, KeyUsage, WindowLimiter};
use crate::config::Config;
use crate::store::Store;
use crate::sync::{ChangeHub, SnapshotCache};

/// Everything a request handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub config: Config,
    pub store: Store,
    pub hasher: KeyHasher,
    pub jwt: JwtKeySet,
    pub key_cache: KeyCache,
    pub key_usage: KeyUsage,
    pub login_by_ip: WindowLimiter,
    pub login_by_account: WindowLimiter,
    /// Hash of the one-time setup token, while there is no user yet.
    pub setup_token_hash: Mutex<Option<Vec<u8>>>,
    /// Bounds concurrent argon2 hashing (each holds 19 MiB).
    pub password_work: tokio::sync::Semaphore,
    pub metrics: PrometheusHandle,
    /// Tells config-sync streams (here and on other replicas) about changes.
    pub hub: ChangeHub,
    pub snapshots: SnapshotCache,
    /// Flips to true when the server shuts down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub openapi_json: OnceLock<String>,
    /// The gRPC port as bound (the configured one may be 0), for the console's setup lines.
    pub grpc_port: OnceLock<u16>,
}

/// What the server prepared before it can serve: everything [`AppState`] is made of that is
/// not built here.
pub struct StateParts {
    pub config: Config,
    pub store: Store,
    pub hasher: KeyHasher,
    pub jwt: JwtKeySet,
    pub setup_token_hash: Option<Vec<u8>>,
    pub metrics: PrometheusHandle,
    pub hub: ChangeHub,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    pub fn new(parts: StateParts) -> Self {
        let StateParts {
            config,
            store,
            hasher,
            jwt,
            setup_token_hash,
            metrics,
            hub,
            shutdown,
        } = parts;
        let password_work = tokio::sync::Semaphore::new(config.password_hash_concurrency);
        let login_by_ip = WindowLimiter::new(
            config.login_attempts_per_ip_per_minute,
            Duration::from_secs(60),
        );
        let login_by_account = WindowLimiter::new(
            config.login_failures_per_account,
            Duration::from_secs(15 * 60),
        );
        Self(Arc::new(AppInner {
            config,
            store,
            hasher,
            jwt,
            key_cache: KeyCache::default(),
            key_usage: KeyUsage::default(),
            login_by_ip,
            login_by_account,
            setup_token_hash: Mutex::new(setup_token_hash),
            password_work,
            metrics,
            hub,
            snapshots: SnapshotCache::default(),
            shutdown,
            openapi_json: OnceLock::new(),
            grpc_port: OnceLock::new(),
        }))
    }
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}
