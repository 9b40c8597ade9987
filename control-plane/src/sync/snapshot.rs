use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_proto::config::v1::{AccessKey, IngestKey, Pipeline, SigningKey, Snapshot};

use crate::state::AppState;
use crate::store::{StoreError, now_ms};

/// The last snapshot built per tenant, so a thousand nodes (re)connecting at one version cost
/// one read of the store, not a thousand.
#[derive(Default)]
pub struct SnapshotCache {
    by_tenant: Mutex<HashMap<String, Arc<Snapshot>>>,
}

impl SnapshotCache {
    /// The tenant's configuration at its current version (without a nonce); `None` when the
    /// tenant no longer exists.
    pub async fn current(
        &self,
        state: &AppState,
        tenant_id: &str,
    ) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let version = match state.store.tenant(tenant_id).await? {
            Some(t) => t.config_version,
            None => return Ok(None),
        };
        if let Some(cached) = self.lock().get(tenant_id)
            && cached.version == version as u64
        {
            return Ok(Some(cached.clone()));
        }
        let Some(config) = state.store.tenant_config(tenant_id).await? else {
            return Ok(None);
        };
        let snapshot = Arc::new(Snapshot {
            version: u64::try_from(config.version).unwrap_or(0),
            nonce: String::new(),
            tenant_id: config.tenant_id,
            pipelines: config
                .pipelines
                .into_iter()
                .map(|p| Pipeline {
                    id: p.id,
                    name: p.name,
                    revision: u64::try_from(p.revision).unwrap_or(0),
                    spec_json: p.spec,
                })
                .collect(),
            ingest_keys: config
                .ingest_keys
                .into_iter()
                .map(|k| IngestKey {
                    public_id: k.public_id,
                    sha256: k.sha256,
                    pipeline_id: k.pipeline_id,
                    source: k.source,
                    expires_at_unix_ms: k.expires_at.unwrap_or(0),
                })
                .collect(),
            access_keys: config
                .access_keys
                .into_iter()
                .map(|k| AccessKey {
                    public_id: k.public_id,
                    sha256: k.sha256,
                    key_type: k.key_type,
                    role: k.role.unwrap_or_default(),
                    expires_at_unix_ms: k.expires_at.unwrap_or(0),
                })
                .collect(),
            jwks_json: serde_json::to_string(&state.jwt.jwks()).unwrap_or_default(),
            issued_at_unix_ms: now_ms(),
            signing_keys: sluice_keys::signed::SnapshotSigner::from_jwt_keys(state.jwt.materials())
                .public_keys()
                .into_iter()
                .map(|(key_id, public_key)| SigningKey {
                    key_id,
                    public_key: public_key.to_vec(),
                })
                .collect(),
        });
        let mut cache = self.lock();
        let newer_cached = cache
            .get(tenant_id)
            .is_some_and(|c| c.version > snapshot.version);
        if !newer_cached {
            cache.insert(tenant_id.to_owned(), snapshot.clone());
        }
        Ok(Some(snapshot))
    }

    pub fn forget(&self, tenant_id: &str) {
        self.lock().remove(tenant_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Snapshot>>> {
        self.by_tenant.lock().unwrap_or_else(|p| p.into_inner())
    }
}
