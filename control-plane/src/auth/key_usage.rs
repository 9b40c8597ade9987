use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{Store, StoreError};

/// Last-used times of keys, coalesced in memory and written in one batch per flush interval,
/// so authenticating a key never costs a database write.
#[derive(Default)]
pub struct KeyUsage {
    pending: Mutex<HashMap<String, i64>>,
}

impl KeyUsage {
    pub fn touch(&self, key_id: &str, at_ms: i64) {
        let mut pending = self.lock();
        match pending.get_mut(key_id) {
            Some(t) => *t = (*t).max(at_ms),
            None => {
                pending.insert(key_id.to_owned(), at_ms);
            }
        }
    }

    /// A use not yet written, so listings can show it before the next flush.
    pub fn pending(&self, key_id: &str) -> Option<i64> {
        self.lock().get(key_id).copied()
    }

    /// Writes every pending use. On failure the uses are put back for the next attempt.
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let batch: Vec<(String, i64)> = self.lock().drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = store.touch_keys(&batch).await {
            for (id, at) in batch {
                self.touch(&id, at);
            }
            return Err(e);
        }
        Ok(batch.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
