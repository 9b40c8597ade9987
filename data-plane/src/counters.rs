//! Counters every role adds to, reported to the control plane (counts only, never a payload)
//! and exported as metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The counters of one node.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events the receiver put on the bus.
    pub received: AtomicU64,
    /// Events the processor governed and routed.
    pub processed: AtomicU64,
    /// Events that failed governance (on the `rejected` stage).
    pub rejected: AtomicU64,
    /// Events delivered, over all destinations.
    pub delivered: AtomicU64,
    /// Events moved to a dead-letter queue, over all destinations.
    pub failed: AtomicU64,
    /// Events in dead-letter queues now, over all destinations.
    pub dlq_depth: AtomicU64,
    /// Events written to the archive.
    pub archived: AtomicU64,
    destinations: Mutex<BTreeMap<String, Arc<DestinationCounters>>>,
}

/// One destination's counters.
#[derive(Debug, Default)]
pub struct DestinationCounters {
    /// Routed to it by the processor.
    pub routed: AtomicU64,
    /// Not for it (consent, filter, or nothing its kind sends).
    pub skipped: AtomicU64,
    pub delivered: AtomicU64,
    /// Failed attempts that will be tried again.
    pub retried: AtomicU64,
    /// Moved to its dead-letter queue.
    pub failed: AtomicU64,
    pub dlq_depth: AtomicU64,
}

const NAMES: [&str; 6] = [
    "routed",
    "skipped",
    "delivered",
    "retried",
    "failed",
    "dlq_depth",
];

impl DestinationCounters {
    fn values(&self) -> [u64; 6] {
        [
            &self.routed,
            &self.skipped,
            &self.delivered,
            &self.retried,
            &self.failed,
            &self.dlq_depth,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

impl Counters {
    /// The counters of a destination, named `<pipeline name>/<destination>`.
    pub fn destination(&self, pipeline: &str, destination: &str) -> Arc<DestinationCounters> {
        self.destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(format!("{pipeline}/{destination}"))
            .or_default()
            .clone()
    }

    /// Name → value, as status reports carry them: the node's totals, and
    /// `<pipeline>/<destination>.<counter>` per destination.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::from([
            ("received".to_owned(), self.received.load(Ordering::Relaxed)),
            (
                "processed".to_owned(),
                self.processed.load(Ordering::Relaxed),
            ),
            ("rejected".to_owned(), self.rejected.load(Ordering::Relaxed)),
            (
                "delivered".to_owned(),
                self.delivered.load(Ordering::Relaxed),
            ),
            ("failed".to_owned(), self.failed.load(Ordering::Relaxed)),
            (
                "dlq_depth".to_owned(),
                self.dlq_depth.load(Ordering::Relaxed),
            ),
            ("archived".to_owned(), self.archived.load(Ordering::Relaxed)),
        ]);
        for (name, counters) in self
            .destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            for (counter, value) in NAMES.iter().zip(counters.values()) {
                out.insert(format!("{name}.{counter}"), value);
            }
        }
        out
    }

    /// Per destination: name and values, for metrics.
    pub fn by_destination(&self) -> Vec<(String, [(&'static str, u64); 6])> {
        self.destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, c)| {
                let values = c.values();
                (name.clone(), std::array::from_fn(|i| (NAMES[i], values[i])))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_report_under_their_pipeline() {
        let counters = Counters::default();
        counters.received.fetch_add(3, Ordering::Relaxed);
        counters
            .destination("main", "crm")
            .delivered
            .fetch_add(2, Ordering::Relaxed);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot["received"], 3);
        assert_eq!(snapshot["main/crm.delivered"], 2);
        assert_eq!(snapshot["main/crm.failed"], 0);
        assert_eq!(counters.by_destination()[0].1[2], ("delivered", 2));
    }
}
