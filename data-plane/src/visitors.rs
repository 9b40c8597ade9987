//! The node's visitors: the identity store the processor's `identity` step keeps profiles
//! in and the key that signs the proxy's cross-domain handoff tokens. The API over them and
//! their upkeep live in [`crate::visitors_api`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sluice_identity::embedded::EmbeddedKv;
use sluice_identity::handoff::HandoffKey;
use sluice_identity::nats::{NatsKv, NatsKvConfig};
use sluice_identity::{Identities, Kv, Policy, StoreError};

use crate::config::{Config, IdentityStoreConfig};

const HANDOFF_KEY_FILE: &str = "handoff-key";

/// Why the identity store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum VisitorsError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("handoff key {path}: {source}")]
    Key {
        path: String,
        source: std::io::Error,
    },
}

pub struct Visitors {
    pub identities: Arc<Identities>,
    pub handoff: HandoffKey,
    /// Entries the tenant's store holds, as last counted.
    pub entries: AtomicU64,
    /// Batches handed back because the store failed.
    pub store_errors: AtomicU64,
    /// Events whose visitor could not be stored because the store was full.
    pub store_full: AtomicU64,
    pub erased: AtomicU64,
}

/// The handoff key from the configuration, or the one kept in the state directory (made on
/// first start).
fn handoff_key(config: &Config) -> Result<HandoffKey, VisitorsError> {
    if let Some(secret) = &config.identity.handoff_secret
        && let Some(key) = HandoffKey::new(secret.clone())
    {
        return Ok(key);
    }
    let path = config.state_dir.join(HANDOFF_KEY_FILE);
    let failed = |source| VisitorsError::Key {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= 32 => HandoffKey::new(bytes)
            .ok_or_else(|| failed(std::io::Error::other("shorter than 32 bytes"))),
        Ok(_) => Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "shorter than 32 bytes: delete it to get a new one",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = vec![0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| failed(std::io::Error::other(e)))?;
            crate::identity::write_private(&path, &secret).map_err(failed)?;
            HandoffKey::new(secret).ok_or_else(|| failed(std::io::Error::other("short key")))
        }
        Err(e) => Err(failed(e)),
    }
}

pub async fn open(config: &Config) -> Result<Visitors, VisitorsError> {
    let identity = &config.identity;
    let kv: Arc<dyn Kv> = match &identity.store {
        IdentityStoreConfig::Embedded => {
            let path = config.state_dir.join("identity.redb");
            Arc::new(open_embedded(&path, identity.ttl, identity.max_entries).await?)
        }
        IdentityStoreConfig::Nats {
            url,
            prefix,
            replicas,
        } => Arc::new(
            NatsKv::connect(NatsKvConfig {
                url: url.clone(),
                prefix: prefix.clone(),
                ttl: identity.ttl,
                max_entries: identity.max_entries,
                replicas: *replicas,
            })
            .await?,
        ),
    };
    let policy = Policy {
        max_anonymous_ids: identity.max_anonymous_ids,
        ..Policy::default()
    };
    Ok(Visitors {
        identities: Arc::new(Identities::new(kv, policy)),
        handoff: handoff_key(config)?,
        entries: AtomicU64::new(0),
        store_errors: AtomicU64::new(0),
        store_full: AtomicU64::new(0),
        erased: AtomicU64::new(0),
    })
}

async fn open_embedded(path: &Path, ttl: Duration, max: u64) -> Result<EmbeddedKv, StoreError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || EmbeddedKv::open(&path, ttl, max))
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
}
