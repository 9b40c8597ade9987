//! The shared identity store for several nodes: NATS JetStream key-value, which a deployment
//! with the NATS bus already runs. One bucket per tenant, whose `max_age` is the time to live
//! (every write renews it), and one for single-use claims.
//!
//! A transaction reads through its own writes and writes them all at its commit. Writes to
//! several keys are not atomic in NATS: a commit that fails part-way leaves the batch to be
//! processed again, and since every write sets a whole value, the graph converges.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::kv::{Kv, Result, StoreError, Txn, tenant_part};

/// How long a count of a tenant's entries is used before it is asked for again.
const COUNT_FOR: Duration = Duration::from_secs(10);
/// How long a claim is remembered, at least (a claim's own `ttl` may not be longer).
const CLAIM_AGE: Duration = Duration::from_secs(10 * 60);

/// Where the shared store is and what it may hold.
#[derive(Debug, Clone)]
pub struct NatsKvConfig {
    pub url: String,
    /// Bucket names start with this (`sluice` → `sluice_identity_<tenant>`).
    pub prefix: String,
    pub ttl: Duration,
    /// Most entries one tenant may hold (checked against a count at most 10 s old).
    pub max_entries: u64,
    /// Replicas of each bucket's stream: the bus's (`SLUICE_NATS_REPLICAS`), so that on a
    /// cluster the identity store survives a server as the bus does. A bucket made earlier
    /// keeps the replicas it was made with.
    pub replicas: usize,
}

pub struct NatsKv {
    config: NatsKvConfig,
    js: jetstream::Context,
    runtime: tokio::runtime::Handle,
    buckets: Mutex<HashMap<String, kv::Store>>,
    claims: Mutex<HashMap<String, kv::Store>>,
    counts: Mutex<HashMap<String, (u64, Instant)>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl NatsKv {
    /// Connects; the buckets are made on first use. Call from within a Tokio runtime: its
    /// handle runs the store's requests later.
    pub async fn connect(config: NatsKvConfig) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("sluice-identity")
            // A cluster's servers, comma-separated: any one of them up lets the node start.
            .connect(config.url.split(',').map(str::trim).collect::<Vec<_>>())
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to NATS at {}: {e}", config.url))
            })?;
        Ok(Self {
            js: jetstream::new(client),
            runtime: tokio::runtime::Handle::current(),
            config,
            buckets: Mutex::default(),
            claims: Mutex::default(),
            counts: Mutex::default(),
        })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn bucket(&self, tenant: &str, claims: bool) -> Result<kv::Store> {
        let cache = if claims { &self.claims } else { &self.buckets };
        if let Some(store) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(tenant) {
            return Ok(store.clone());
        }
        let kind = if claims { "claims" } else { "identity" };
        let name = format!("{}_{kind}_{}", self.config.prefix, tenant_part(tenant));
        let max_age = if claims { CLAIM_AGE } else { self.config.ttl };
        let store = self.block_on(async {
            if let Ok(store) = self.js.get_key_value(&name).await {
                return Ok(store);
            }
            // The bucket's stream as `create_key_value` would make it. That call first asks
            // for the account's limits, whose answer this client cannot read from a NATS 2.9
            // server; the stream itself is the same on every version.
            self.js
                .get_or_create_stream(jetstream::stream::Config {
                    name: format!("KV_{name}"),
                    description: Some(format!("sluice {kind} of tenant {tenant}")),
                    subjects: vec![format!("$KV.{name}.>")],
                    max_messages_per_subject: 1,
                    max_age,
                    max_message_size: 256 * 1024,
                    storage: jetstream::stream::StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    num_replicas: self.config.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable(format!("cannot make the bucket {name}: {e}")))?;
            self.js
                .get_key_value(&name)
                .await
                .map_err(|e| unavailable(format!("cannot open the bucket {name}: {e}")))
        })?;
        cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_owned(), store.clone());
        Ok(store)
    }
}

impl Kv for NatsKv {
    fn begin(&self, tenant: &str) -> Result<Box<dyn Txn + '_>> {
        Ok(Box::new(NatsTxn {
            kv: self,
            tenant: tenant.to_owned(),
            store: self.bucket(tenant, false)?,
            writes: HashMap::new(),
            reads: HashMap::new(),
        }))
    }

    fn claim(&self, tenant: &str, key: &str, ttl: Duration) -> Result<bool> {
        if ttl > CLAIM_AGE {
            return Err(StoreError::Corrupt(format!(
                "a claim lasts at most {} s",
                CLAIM_AGE.as_secs()
            )));
        }
        let store = self.bucket(tenant, true)?;
        match self.block_on(store.create(key, Bytes::from_static(b"1"))) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn entries(&self, tenant: &str) -> Result<u64> {
        if let Some((count, at)) = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            && at.elapsed() < COUNT_FOR
        {
            return Ok(*count);
        }
        let store = self.bucket(tenant, false)?;
        let info = self
            .block_on(store.stream.get_info())
            .map_err(unavailable)?;
        let count = info.state.messages;
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_owned(), (count, Instant::now()));
        Ok(count)
    }

    fn sweep(&self) -> Result<u64> {
        Ok(0)
    }
}

struct NatsTxn<'a> {
    kv: &'a NatsKv,
    tenant: String,
    store: kv::Store,
    /// Key → the value to write, or `None` to delete.
    writes: HashMap<String, Option<Vec<u8>>>,
    /// What was read, so a batch asks for a visitor once.
    reads: HashMap<String, Option<Vec<u8>>>,
}

impl Txn for NatsTxn<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(known) = self.writes.get(key).or_else(|| self.reads.get(key)) {
            return Ok(known.clone());
        }
        let value = self
            .kv
            .block_on(self.store.get(key))
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(unavailable)?;
        self.reads.insert(key.to_owned(), value.clone());
        Ok(value)
    }

    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<()> {
        self.writes.insert(key.to_owned(), Some(value));
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<()> {
        self.writes.insert(key.to_owned(), None);
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        // Keys written that held nothing when read (or were never read): new entries.
        let adds = self
            .writes
            .iter()
            .filter(|(key, value)| {
                value.is_some() && self.reads.get(*key).is_none_or(Option::is_none)
            })
            .count() as u64;
        let held = self.kv.entries(&self.tenant)?;
        if adds > 0 && held.saturating_add(adds) > self.kv.config.max_entries {
            return Err(StoreError::Full(held));
        }
        let store = &self.store;
        let outcomes =
            self.kv
                .block_on(futures_util::future::join_all(self.writes.into_iter().map(
                    |(key, value)| async move {
                        match value {
                            Some(value) => store
                                .put(&key, Bytes::from(value))
                                .await
                                .map(drop)
                                .map_err(|e| e.to_string()),
                            None => store.purge(&key).await.map_err(|e| e.to_string()),
                        }
                    },
                )));
        outcomes
            .into_iter()
            .collect::<std::result::Result<Vec<()>, _>>()
            .map_err(unavailable)?;
        if let Some((count, _)) = self
            .kv
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&self.tenant)
        {
            *count = count.saturating_add(adds);
        }
        Ok(())
    }
}
