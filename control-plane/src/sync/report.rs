//! What a session keeps from a node's status reports beyond its latest counters: one sample
//! per minute for the overview's charts, ingest-key last use, and the tenant's first event
//! and first delivery. Each is written only when it changed, so a report every few seconds
//! costs one write.

use std::collections::HashMap;

use sluice_proto::config::v1::Status as NodeStatus;

use crate::store::{Store, StoreError, now_ms};

/// A key in steady use is written at most this often per node, in milliseconds: "last used"
/// reads to the minute, and a busy fleet must not cost a write per report per key.
const KEY_TOUCH_INTERVAL_MS: i64 = 60_000;
/// Most ingest keys one report may touch.
const MAX_KEYS: usize = 1024;
/// Prefix of per-source counters in a sample: `source:<pipeline id>/<source>`.
pub const SOURCE_PREFIX: &str = "source:";

/// What one session has already written.
#[derive(Debug, Default)]
pub struct Reported {
    last_minute: Option<i64>,
    key_last_used: HashMap<String, i64>,
    first_event: bool,
    first_delivery: bool,
}

impl Reported {
    /// Writes what this report adds: a sample if the minute turned, keys used since the last
    /// report, milestones not yet reached.
    pub async fn record(
        &mut self,
        store: &Store,
        tenant_id: &str,
        node_id: &str,
        counters_json: &str,
        status: &NodeStatus,
    ) -> Result<(), StoreError> {
        let minute = now_ms() / 60_000;
        if self.last_minute != Some(minute) {
            store
                .record_sample(
                    tenant_id,
                    node_id,
                    minute,
                    &sample_json(counters_json, status),
                )
                .await?;
            self.last_minute = Some(minute);
        }
        let touched: Vec<(String, i64)> = status
            .key_use
            .iter()
            .take(MAX_KEYS)
            .filter(|u| u.last_used_at_unix_ms > 0 && valid_public_id(&u.public_id))
            .filter(|u| {
                self.key_last_used
                    .get(&u.public_id)
                    .is_none_or(|at| u.last_used_at_unix_ms >= at + KEY_TOUCH_INTERVAL_MS)
            })
            .map(|u| (u.public_id.clone(), u.last_used_at_unix_ms.min(now_ms())))
            .collect();
        if !touched.is_empty() {
            store.touch_ingest_keys(tenant_id, &touched).await?;
            self.key_last_used.extend(touched);
        }
        let counter = |name: &str| status.counters.get(name).copied().unwrap_or(0);
        if !self.first_event && counter("received") > 0 {
            store.reach_milestone(tenant_id, "first_event").await?;
            self.first_event = true;
        }
        if !self.first_delivery && counter("delivered") > 0 {
            store.reach_milestone(tenant_id, "first_delivery").await?;
            self.first_delivery = true;
        }
        Ok(())
    }
}

fn valid_public_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The node's counters plus events per source, summed over the source's keys.
fn sample_json(counters_json: &str, status: &NodeStatus) -> String {
    let mut sample: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(counters_json).unwrap_or_default();
    let mut by_source: HashMap<String, u64> = HashMap::new();
    for u in status.key_use.iter().take(MAX_KEYS) {
        if u.pipeline_id.len() > 64 || u.source.is_empty() || u.source.len() > 100 {
            continue;
        }
        if u.source.chars().any(char::is_control) || u.pipeline_id.chars().any(char::is_control) {
            continue;
        }
        *by_source
            .entry(format!("{SOURCE_PREFIX}{}/{}", u.pipeline_id, u.source))
            .or_default() += u.events;
    }
    for (name, events) in by_source {
        sample.insert(name, serde_json::Value::from(events));
    }
    serde_json::Value::Object(sample).to_string()
}

#[cfg(test)]
mod tests {
    use sluice_proto::config::v1::KeyUse;

    use super::*;

    #[test]
    fn a_sample_sums_each_sources_keys() {
        let status = NodeStatus {
            key_use: vec![
                KeyUse {
                    public_id: "a".into(),
                    pipeline_id: "p1".into(),
                    source: "web".into(),
                    events: 3,
                    last_used_at_unix_ms: 1,
                },
                KeyUse {
                    public_id: "b".into(),
                    pipeline_id: "p1".into(),
                    source: "web".into(),
                    events: 4,
                    last_used_at_unix_ms: 1,
                },
                KeyUse {
                    public_id: "c".into(),
                    pipeline_id: "p1".into(),
                    source: "bad\nname".into(),
                    events: 9,
                    last_used_at_unix_ms: 1,
                },
            ],
            ..NodeStatus::default()
        };
        let sample: serde_json::Value =
            serde_json::from_str(&sample_json(r#"{"received":7}"#, &status)).expect("test value");
        assert_eq!(sample["received"], 7);
        assert_eq!(sample["source:p1/web"], 7);
        assert_eq!(
            sample.as_object().map(serde_json::Map::len),
            Some(2),
            "{sample}"
        );
    }
}
