//! The embedded identity store: one redb file in the node's state directory. redb commits
//! are durable and atomic (copy-on-write B-trees with checksummed commits), so a `kill -9`
//! loses at most the batch in hand, which the processor then processes again.

use std::path::Path;
use std::time::Duration;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::kv::{Kv, Result, StoreError, Txn};

/// Key (`<tenant>/<key>`) → expiry (ms since the epoch, little-endian) followed by the value.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("identity");
/// Tenant → live entries, kept in the same transactions as the entries.
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("identity_counts");

pub struct EmbeddedKv {
    db: Database,
    ttl_ms: i64,
    max_entries: u64,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The value if it has not expired at `now`.
fn live(stored: &[u8], now: i64) -> Option<&[u8]> {
    let (expiry, value) = stored.split_first_chunk::<8>()?;
    (i64::from_le_bytes(*expiry) > now).then_some(value)
}

impl EmbeddedKv {
    /// Opens (or creates) the store at `path`. `ttl`: how long an entry lives after its last
    /// write; `max_entries`: most entries one tenant may hold.
    pub fn open(path: &Path, ttl: Duration, max_entries: u64) -> Result<Self> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(ENTRIES).map_err(unavailable)?;
        txn.open_table(COUNTS).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        Ok(Self {
            db,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            max_entries,
        })
    }
}

impl Kv for EmbeddedKv {
    fn begin(&self, tenant: &str) -> Result<Box<dyn Txn + '_>> {
        Ok(Box::new(EmbeddedTxn {
            txn: self.db.begin_write().map_err(unavailable)?,
            tenant: tenant.to_owned(),
            now: now_ms(),
            ttl_ms: self.ttl_ms,
            max_entries: self.max_entries,
            added: 0,
        }))
    }

    fn claim(&self, tenant: &str, key: &str, ttl: Duration) -> Result<bool> {
        let txn = self.db.begin_write().map_err(unavailable)?;
        let now = now_ms();
        let full_key = format!("{tenant}/claim.{key}");
        let fresh = {
            let mut table = txn.open_table(ENTRIES).map_err(unavailable)?;
            let taken = table
                .get(full_key.as_str())
                .map_err(unavailable)?
                .is_some_and(|v| live(v.value(), now).is_some());
            if !taken {
                let expiry = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(0));
                table
                    .insert(full_key.as_str(), expiry.to_le_bytes().as_slice())
                    .map_err(unavailable)?;
            }
            !taken
        };
        txn.commit().map_err(unavailable)?;
        Ok(fresh)
    }

    fn entries(&self, tenant: &str) -> Result<u64> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(COUNTS).map_err(unavailable)?;
        Ok(table
            .get(tenant)
            .map_err(unavailable)?
            .map_or(0, |v| v.value()))
    }

    fn sweep(&self) -> Result<u64> {
        let now = now_ms();
        let txn = self.db.begin_write().map_err(unavailable)?;
        let mut removed = 0u64;
        {
            let mut table = txn.open_table(ENTRIES).map_err(unavailable)?;
            let mut expired = Vec::new();
            for entry in table.iter().map_err(unavailable)? {
                let (key, value) = entry.map_err(unavailable)?;
                if live(value.value(), now).is_none() {
                    expired.push(key.value().to_owned());
                }
            }
            let mut counts = txn.open_table(COUNTS).map_err(unavailable)?;
            for key in expired {
                table.remove(key.as_str()).map_err(unavailable)?;
                // Claims are not counted entries.
                let Some((tenant, rest)) = key.split_once('/') else {
                    continue;
                };
                if rest.starts_with("claim.") {
                    continue;
                }
                let count = counts
                    .get(tenant)
                    .map_err(unavailable)?
                    .map_or(0, |v| v.value());
                counts
                    .insert(tenant, count.saturating_sub(1))
                    .map_err(unavailable)?;
                removed += 1;
            }
        }
        txn.commit().map_err(unavailable)?;
        Ok(removed)
    }
}

struct EmbeddedTxn {
    txn: redb::WriteTransaction,
    tenant: String,
    now: i64,
    ttl_ms: i64,
    max_entries: u64,
    /// Entries added (less removed) by this transaction, applied to the count on commit.
    added: i64,
}

impl EmbeddedTxn {
    fn key(&self, key: &str) -> String {
        format!("{}/{key}", self.tenant)
    }

    fn count(&self) -> Result<u64> {
        let counts = self.txn.open_table(COUNTS).map_err(unavailable)?;
        Ok(counts
            .get(self.tenant.as_str())
            .map_err(unavailable)?
            .map_or(0, |v| v.value()))
    }
}

impl Txn for EmbeddedTxn {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(key);
        let table = self.txn.open_table(ENTRIES).map_err(unavailable)?;
        let value = table.get(key.as_str()).map_err(unavailable)?;
        Ok(value.and_then(|v| live(v.value(), self.now).map(<[u8]>::to_vec)))
    }

    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<()> {
        let key = self.key(key);
        let mut stored = Vec::with_capacity(8 + value.len());
        stored.extend_from_slice(&self.now.saturating_add(self.ttl_ms).to_le_bytes());
        stored.extend_from_slice(&value);
        let existed = {
            let table = self.txn.open_table(ENTRIES).map_err(unavailable)?;
            table.get(key.as_str()).map_err(unavailable)?.is_some()
        };
        if !existed {
            let held = self.count()?.saturating_add_signed(self.added);
            if held >= self.max_entries {
                return Err(StoreError::Full(held));
            }
            self.added += 1;
        }
        let mut table = self.txn.open_table(ENTRIES).map_err(unavailable)?;
        table
            .insert(key.as_str(), stored.as_slice())
            .map_err(unavailable)?;
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<()> {
        let key = self.key(key);
        let mut table = self.txn.open_table(ENTRIES).map_err(unavailable)?;
        if table.remove(key.as_str()).map_err(unavailable)?.is_some() {
            self.added -= 1;
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let this = *self;
        if this.added != 0 {
            let count = this.count()?.saturating_add_signed(this.added);
            let mut counts = this.txn.open_table(COUNTS).map_err(unavailable)?;
            counts
                .insert(this.tenant.as_str(), count)
                .map_err(unavailable)?;
        }
        this.txn.commit().map_err(unavailable)
    }
}
