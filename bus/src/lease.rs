//! Leases on NATS: a key per lease in a JetStream key-value bucket (`<prefix>_leases`), its
//! value `<holder> <expires-at-ms>`, taken and renewed by compare-and-set on the key's
//! revision, so of two nodes asking at once exactly one gets it. A holder that dies leaves
//! its lease to run out; nodes' clocks only need to agree to well within a lease's length.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::contract::BusError;

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("lease: {e}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `(holder, expires-at-ms)` of a lease's value.
fn parse(value: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (holder, until) = text.rsplit_once(' ')?;
    Some((holder, until.parse().ok()?))
}

pub(crate) struct Leases {
    js: jetstream::Context,
    bucket: String,
    replicas: usize,
    store: OnceCell<kv::Store>,
}

impl Leases {
    pub(crate) fn new(js: jetstream::Context, prefix: &str, replicas: usize) -> Self {
        Self {
            js,
            bucket: format!("{prefix}_leases"),
            replicas,
            store: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<&kv::Store, BusError> {
        self.store
            .get_or_try_init(|| async {
                if let Ok(store) = self.js.get_key_value(&self.bucket).await {
                    return Ok(store);
                }
                // The bucket's stream as `create_key_value` would make it; that call first
                // asks for the account's limits, which this client cannot read from a NATS
                // 2.9 server (as the identity store found).
                self.js
                    .get_or_create_stream(jetstream::stream::Config {
                        name: format!("KV_{}", self.bucket),
                        description: Some("sluice leases".into()),
                        subjects: vec![format!("$KV.{}.>", self.bucket)],
                        max_messages_per_subject: 1,
                        max_message_size: 1024,
                        storage: jetstream::stream::StorageType::File,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: jetstream::stream::DiscardPolicy::New,
                        num_replicas: self.replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(unavailable)?;
                self.js
                    .get_key_value(&self.bucket)
                    .await
                    .map_err(unavailable)
            })
            .await
    }

    pub(crate) async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, BusError> {
        let store = self.store().await?;
        let now = now_ms();
        let value = Bytes::from(format!("{holder} {}", now + ttl.as_millis() as u64));
        match store.entry(name).await.map_err(unavailable)? {
            None => match store.create(name, value).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(unavailable(e)),
            },
            Some(entry) => {
                let free = entry.operation != kv::Operation::Put
                    || parse(&entry.value)
                        .is_none_or(|(owner, until)| owner == holder || until <= now);
                if !free {
                    return Ok(false);
                }
                match store.update(name, value, entry.revision).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                    Err(e) => Err(unavailable(e)),
                }
            }
        }
    }

    pub(crate) async fn release(&self, name: &str, holder: &str) -> Result<(), BusError> {
        let store = self.store().await?;
        let Some(entry) = store.entry(name).await.map_err(unavailable)? else {
            return Ok(());
        };
        if parse(&entry.value).is_some_and(|(owner, _)| owner == holder) {
            // Expired at once; a holder that lost it meanwhile changes nothing (revision).
            let freed = Bytes::from(format!("{holder} 0"));
            match store.update(name, freed, entry.revision).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_lease_value_names_its_holder_and_expiry() {
        assert_eq!(parse(b"node 1 7"), Some(("node 1", 7)));
        assert_eq!(
            parse(b"node-a 1700000000000"),
            Some(("node-a", 1_700_000_000_000))
        );
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"node x"), None);
    }
}
