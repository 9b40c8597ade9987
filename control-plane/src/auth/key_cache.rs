use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{KeyRecord, Store, StoreError};

/// How long a key record is trusted without asking the store again. Revocation through this
/// process invalidates at once; the TTL bounds how long another replica's revocation takes
/// to be seen until replicas share invalidations.
const TTL: Duration = Duration::from_secs(2);
/// Entries past which the cache is emptied rather than grown.
const MAX_ENTRIES: usize = 100_000;

/// Key records by public id, so an authenticated request costs no database read.
#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (Instant, Arc<KeyRecord>)>>,
    /// Bumped by every invalidation; a record read before one is not cached after it, so a
    /// revocation racing a look-up cannot be undone by the look-up's stale result.
    generation: AtomicU64,
}

impl KeyCache {
    pub async fn get(
        &self,
        store: &Store,
        public_id: &str,
    ) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        if let Some((fetched, record)) = self.read().get(public_id)
            && fetched.elapsed() < TTL
        {
            return Ok(Some(record.clone()));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let Some(record) = store.key_by_public_id(public_id).await? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        let mut entries = self.write();
        if self.generation.load(Ordering::Acquire) != generation {
            return Ok(Some(record));
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(public_id.to_owned(), (Instant::now(), record.clone()));
        Ok(Some(record))
    }

    pub fn invalidate(&self, public_id: &str) {
        let mut entries = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(public_id);
    }

    /// Forgets everything (events were missed).
    pub fn clear(&self) {
        let mut entries = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Forgets every key of a tenant (the tenant was deleted).
    pub fn invalidate_tenant(&self, tenant_id: &str) {
        let mut entries = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, (_, record)| record.tenant_id != tenant_id);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, (Instant, Arc<KeyRecord>)>> {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, (Instant, Arc<KeyRecord>)>> {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
