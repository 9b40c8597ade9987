//! Counters every role adds to, reported to the control plane and exported as metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of one node.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dlq_depth: AtomicU64,
    pub archived: AtomicU64,
}

impl Counters {
    /// Name → value, as status reports and metrics carry them.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("received", self.received.load(Ordering::Relaxed)),
            ("delivered", self.delivered.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
            ("dlq_depth", self.dlq_depth.load(Ordering::Relaxed)),
            ("archived", self.archived.load(Ordering::Relaxed)),
        ])
    }
}
