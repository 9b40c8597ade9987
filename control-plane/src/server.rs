//! Starting and stopping the control plane.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sluice_keys::{JwtKeySet, KeyHasher, SigningKeyMaterial};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::state::{AppState, StateParts};
use crate::store::{Store, StoreError, now_ms};
use crate::sync::{ChangeHub, ConfigSyncService, ControlEvent};
use crate::{api, metrics};

/// Issuer of every token the control plane signs.
pub const ISSUER: &str = sluice_keys::ISSUER;
/// Age after which the JWT signing key is replaced at start-up, in milliseconds (30 days).
const SIGNING_KEY_MAX_AGE_MS: i64 = 30 * 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("keys: {0}")]
    Keys(#[from] sluice_keys::KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("nats: {0}")]
    Nats(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("stored signing key {0} is corrupt")]
    CorruptSigningKey(String),
}

/// A control plane that is serving.
pub struct RunningControlPlane {
    /// Where the REST API listens (useful with port 0).
    pub http_addr: SocketAddr,
    /// Where the gRPC config-sync service listens.
    pub grpc_addr: SocketAddr,
    /// The one-time setup token, when the store had no user and no admin was configured.
    pub setup_token: Option<String>,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    flusher: JoinHandle<()>,
}

impl RunningControlPlane {
    /// Stops accepting, finishes in-flight requests, writes pending key usage, closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Ok(Err(e)) = self.server.await {
            tracing::warn!(error = %e, "http server ended with an error");
        }
        if let Ok(Err(e)) = self.grpc.await {
            tracing::warn!(error = %e, "grpc server ended with an error");
        }
        let _ = self.flusher.await;
        if let Err(e) = self.state.key_usage.flush(&self.state.store).await {
            tracing::warn!(error = %e, "final key usage flush failed");
        }
        self.state.store.close().await;
    }

    /// Resolves when the server stops on its own (an I/O failure).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}

/// Opens the store, prepares credentials, binds the HTTP listener and starts serving.
pub async fn start(config: Config) -> Result<RunningControlPlane, StartError> {
    create_private_dir(&config.data_dir)?;
    let store = match &config.database_url {
        Some(url) => Store::connect(url).await?,
        None => Store::open_sqlite(&config.data_dir).await?,
    };
    tracing::info!(backend = ?store.backend(), "store ready");
    let hasher = KeyHasher::new(&load_pepper(&config)?)?;
    let jwt = load_signing_keys(&store).await?;
    {
        use base64::Engine as _;
        let keys: Vec<String> = sluice_keys::signed::SnapshotSigner::from_jwt_keys(jwt.materials())
            .public_keys()
            .into_iter()
            .map(|(kid, public)| {
                format!(
                    "{kid}={}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public)
                )
            })
            .collect();
        // What an operator gives a node as SLUICE_CONFIG_KEYS to trust no other signer.
        tracing::info!(keys = %keys.join(","), "configuration snapshots are signed with these keys");
    }
    bootstrap_admin(&config, &store).await?;
    let setup_token = if store.count_users().await? == 0 {
        let token = sluice_keys::random::token::<24>()?;
        tracing::warn!(
            setup_token = %token,
            "no user exists yet: create the first owner with POST /api/v1/auth/setup and this one-time token \
             (or set SLUICE_ADMIN_EMAIL and SLUICE_ADMIN_PASSWORD)"
        );
        Some(token)
    } else {
        None
    };
    let setup_hash = setup_token.as_deref().map(|t| hasher.hash_text(t));
    let hub = match &config.nats_url {
        Some(url) => ChangeHub::with_nats(url)
            .await
            .map_err(|e| StartError::Nats(e.to_string()))?,
        None => ChangeHub::in_process(),
    };
    let tls = config.tls.as_ref().map(load_tls).transpose()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let state = AppState::new(StateParts {
        config,
        store,
        hasher,
        jwt,
        setup_token_hash: setup_hash,
        metrics: metrics::handle(),
        hub,
        shutdown: shutdown_rx.clone(),
    });

    let listener = TcpListener::bind(state.config.http_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: state.config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: state.config.http_addr,
        source,
    })?;
    let grpc_listener = TcpListener::bind(state.config.grpc_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: state.config.grpc_addr,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: state.config.grpc_addr,
            source,
        })?;
    let _ = state.grpc_port.set(grpc_addr.port());
    let grpc = tokio::spawn(serve_grpc(
        state.clone(),
        grpc_listener,
        tls,
        shutdown_rx.clone(),
    ));
    tokio::spawn(follow_events(state.clone(), shutdown_rx.clone()));
    let mut shutdown_rx = shutdown_rx;
    let app = api::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_shutdown.wait_for(|stop| *stop).await;
            })
            .await
    });
    let flush_state = state.clone();
    let flusher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(flush_state.config.key_usage_flush);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown_rx.wait_for(|stop| *stop) => return,
            }
            match flush_state.key_usage.flush(&flush_state.store).await {
                Ok(0) => {}
                Ok(n) => ::metrics::counter!(metrics::KEY_USAGE_FLUSHED_TOTAL).increment(n as u64),
                Err(e) => tracing::warn!(error = %e, "key usage flush failed; will retry"),
            }
            let _ = flush_state
                .store
                .purge_expired_refresh_tokens(now_ms())
                .await;
        }
    });
    tracing::info!(http_addr = %http_addr, grpc_addr = %grpc_addr, tls = state.config.tls.is_some(), "control plane listening");
    Ok(RunningControlPlane {
        http_addr,
        grpc_addr,
        setup_token,
        state,
        shutdown,
        server,
        grpc,
        flusher,
    })
}

fn create_private_dir(path: &Path) -> Result<(), StartError> {
    let err = |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// The configured pepper, or the one in `data_dir/key-pepper`, created on first start.
fn load_pepper(config: &Config) -> Result<Vec<u8>, StartError> {
    if let Some(pepper) = &config.key_pepper {
        return Ok(pepper.as_bytes().to_vec());
    }
    let path = config.data_dir.join("key-pepper");
    let err = |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pepper = sluice_keys::random::token::<32>()?.into_bytes();
            sluice_keys::private_file::write(&path, &pepper).map_err(err)?;
            tracing::info!(path = %path.display(), "generated a new key pepper");
            Ok(pepper)
        }
        Err(e) => Err(err(e)),
    }
}

/// The newest signing key signs; the one before it still verifies. A key older than 30 days is
/// replaced at start-up.
async fn load_signing_keys(store: &Store) -> Result<JwtKeySet, StartError> {
    let mut rows = store.signing_keys().await?;
    if rows
        .first()
        .is_none_or(|newest| now_ms() - newest.created_at > SIGNING_KEY_MAX_AGE_MS)
    {
        let fresh = SigningKeyMaterial::generate()?;
        if store
            .rotate_signing_key(&fresh.kid, &fresh.seed, SIGNING_KEY_MAX_AGE_MS)
            .await?
        {
            tracing::info!(kid = %fresh.kid, "new jwt signing key");
        }
        rows = store.signing_keys().await?;
    }
    let materials = rows
        .into_iter()
        .take(2)
        .map(|row| {
            let seed: [u8; 32] = row
                .seed
                .as_slice()
                .try_into()
                .map_err(|_| StartError::CorruptSigningKey(row.kid.clone()))?;
            Ok(SigningKeyMaterial { kid: row.kid, seed })
        })
        .collect::<Result<Vec<_>, StartError>>()?;
    Ok(JwtKeySet::new(materials, ISSUER)?)
}

async fn bootstrap_admin(config: &Config, store: &Store) -> Result<(), StartError> {
    let Some(admin) = &config.admin else {
        return Ok(());
    };
    if store.user_by_email(&admin.email).await?.is_some() {
        return Ok(());
    }
    let password = admin.password.clone();
    let hash = tokio::task::spawn_blocking(move || sluice_keys::hash_password(&password))
        .await
        .map_err(|e| sluice_keys::KeyError::Password(e.to_string()))??;
    match store.create_user(&admin.email, &hash).await {
        Ok(user) => {
            tracing::info!(user_id = %user.id, email = %user.email, "first owner created from SLUICE_ADMIN_EMAIL")
        }
        // Another replica created it first.
        Err(StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), StartError> {
    let mut running = start(config).await?;
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = running.wait() => tracing::error!("http server stopped unexpectedly"),
    }
    tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .ok();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Largest snapshot sent to a data plane, in bytes.
const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

fn load_tls(
    (cert, key): &(std::path::PathBuf, std::path::PathBuf),
) -> Result<tonic::transport::ServerTlsConfig, StartError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

async fn serve_grpc(
    state: AppState,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    use sluice_proto::config::v1::config_sync_server::ConfigSyncServer;
    let service = ConfigSyncServer::new(ConfigSyncService::new(state.clone()))
        .max_decoding_message_size(state.config.max_sync_message_bytes)
        .max_encoding_message_size(MAX_SNAPSHOT_BYTES);
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            },
        )
        .await
}

/// Keeps this replica's caches true to events from every replica.
async fn follow_events(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut events = state.hub.subscribe();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match event {
            Ok(ControlEvent::KeyRevoked { public_id, .. }) => {
                state.key_cache.invalidate(&public_id)
            }
            Ok(ControlEvent::TenantDeleted { tenant_id }) => {
                state.key_cache.invalidate_tenant(&tenant_id);
                state.snapshots.forget(&tenant_id);
            }
            Ok(ControlEvent::ConfigChanged { .. }) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => state.key_cache.clear(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
