//! What every identity store back end promises: a key-value store per tenant with
//! transactions, a time to live, one-time claims and a count of what it holds. The graph
//! ([`crate::graph`]) is written once on top of it; `tests/contract.rs` holds both back ends
//! to it.
//!
//! Calls block: the embedded store does disk I/O, the NATS store waits on its runtime. Call
//! them from blocking threads (`spawn_blocking`), never from an async task.

use std::time::Duration;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or written now; try again later.
    #[error("identity store unavailable: {0}")]
    Unavailable(String),
    /// The tenant's store holds as many entries as it may.
    #[error("the identity store of this tenant is full ({0} entries)")]
    Full(u64),
    /// A stored value is not what this version writes (a bug or a foreign writer).
    #[error("identity store: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A key-value store holding the identity graphs of tenants. Keys are at most 128 bytes of
/// `A-Z a-z 0-9 . _ -`; values expire after the store's time to live unless written again.
pub trait Kv: Send + Sync {
    /// A transaction on one tenant's entries: it sees its own writes; [`Txn::commit`] makes
    /// them visible to others.
    fn begin(&self, tenant: &str) -> Result<Box<dyn Txn + '_>>;

    /// Records `key` as used for `ttl`: `true` the first time, `false` while it is
    /// recorded — on every node sharing the store (single-use tokens).
    fn claim(&self, tenant: &str, key: &str, ttl: Duration) -> Result<bool>;

    /// How many entries the tenant holds, as last counted (profiles and links).
    fn entries(&self, tenant: &str) -> Result<u64>;

    /// Removes what has expired; returns how many entries went. A back end whose server
    /// expires entries itself returns 0.
    fn sweep(&self) -> Result<u64>;
}

/// One transaction of [`Kv::begin`].
pub trait Txn {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>>;
    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<()>;
    fn delete(&mut self, key: &str) -> Result<()>;
    fn commit(self: Box<Self>) -> Result<()>;
}

/// The tenant id as a name part (`[A-Za-z0-9_]`): a tenant id is a UUID, but a store must
/// not trust that.
pub fn tenant_part(tenant: &str) -> String {
    tenant
        .bytes()
        .take(64)
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}
