//! Counters every role adds to, reported to the control plane (counts only, never a payload)
//! and exported as metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_pipeline::RejectReason;

/// The counters of one node.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events the receiver put on the bus.
    pub received: AtomicU64,
    /// Events the processor governed and routed.
    pub processed: AtomicU64,
    /// Events that failed governance (on the `rejected` stage).
    pub rejected: AtomicU64,
    /// The same, by class, in the order of [`RejectReason::ALL`].
    rejected_by_reason: [AtomicU64; RejectReason::ALL.len()],
    /// Events delivered, over all destinations.
    pub delivered: AtomicU64,
    /// Events moved to a dead-letter queue, over all destinations.
    pub failed: AtomicU64,
    /// Events in dead-letter queues now, over all destinations.
    pub dlq_depth: AtomicU64,
    /// Events written to the archive.
    pub archived: AtomicU64,
    /// Archive copies of events already written, dropped by the archiver or by compaction.
    pub archive_duplicates: AtomicU64,
    /// Small archive files merged by compaction.
    pub archive_compacted_files: AtomicU64,
    /// Archive files deleted by retention (`retain_days`).
    pub archive_expired_files: AtomicU64,
    /// Erasure requests carried out.
    pub erasures: AtomicU64,
    /// Archive rows, dead letters and identity profiles removed by erasures.
    pub erased: AtomicU64,
    /// By (pipeline id, destination name).
    destinations: Mutex<BTreeMap<(String, String), Arc<DestinationCounters>>>,
    /// By ingest key public id.
    key_use: Mutex<BTreeMap<String, KeyUse>>,
}

/// How one ingest key was used since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUse {
    pub pipeline_id: String,
    pub source: String,
    pub events: u64,
    pub last_used_ms: i64,
}

/// Most ingest keys tracked: past it, a new key's use is not counted (a node's keys are
/// those of one tenant, so this is never reached by a real configuration).
const MAX_TRACKED_KEYS: usize = 4096;

/// One destination's counters.
#[derive(Debug, Default)]
pub struct DestinationCounters {
    /// The pipeline's name, as it was last seen (a rename keeps the id).
    pipeline: Mutex<String>,
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
    /// Whether it is delivering, and its recent counts.
    health: Mutex<Health>,
}

/// What a destination's counts went up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Delivered,
    Retried,
    Failed,
}

/// How a destination is doing, as the health check, the status report and the console
/// show it. Counts and the vendor's last error message only: never a payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    /// `ok` (its last attempt delivered), `failing` (its last attempt failed) or `idle`
    /// (nothing attempted since the node started).
    pub state: &'static str,
    pub last_delivered_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_status: Option<u16>,
    pub last_error_ms: Option<i64>,
    /// delivered, retried, failed over the last 5 minutes.
    pub last_5m: [u64; 3],
    /// delivered, retried, failed over the last 24 hours.
    pub last_24h: [u64; 3],
}

/// Longest vendor error message kept, in bytes.
const MAX_ERROR: usize = 300;
/// Minutes of per-minute counts kept (24 hours).
const MINUTES: i64 = 24 * 60;

#[derive(Debug, Default)]
struct Health {
    last_delivered_ms: Option<i64>,
    last_error: Option<(i64, Option<u16>, String)>,
    /// (minute since the epoch, [delivered, retried, failed]), oldest first.
    minutes: std::collections::VecDeque<(i64, [u64; 3])>,
}

impl Health {
    fn add(&mut self, now_ms: i64, count: Count, n: u64) {
        let minute = now_ms / 60_000;
        if self.minutes.back().is_none_or(|(m, _)| *m != minute) {
            self.minutes.push_back((minute, [0; 3]));
        }
        while self
            .minutes
            .front()
            .is_some_and(|(m, _)| minute - *m >= MINUTES)
        {
            self.minutes.pop_front();
        }
        if let Some((_, counts)) = self.minutes.back_mut() {
            counts[count as usize] += n;
        }
        if count == Count::Delivered {
            self.last_delivered_ms = Some(now_ms);
        }
    }

    fn since(&self, now_ms: i64, minutes: i64) -> [u64; 3] {
        let now = now_ms / 60_000;
        let mut out = [0; 3];
        for (m, counts) in &self.minutes {
            if now - *m < minutes {
                for (o, c) in out.iter_mut().zip(counts) {
                    *o += c;
                }
            }
        }
        out
    }
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
    /// Adds to a count and to the destination's recent counts.
    pub fn count(&self, count: Count, n: u64) {
        self.count_at(sluice_pipeline::time::now_ms(), count, n);
    }

    fn count_at(&self, now_ms: i64, count: Count, n: u64) {
        let total = match count {
            Count::Delivered => &self.delivered,
            Count::Retried => &self.retried,
            Count::Failed => &self.failed,
        };
        total.fetch_add(n, Ordering::Relaxed);
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(now_ms, count, n);
    }

    /// A failed attempt: the vendor's status, when it answered, and what was wrong.
    pub fn attempt_failed(&self, status: Option<u16>, error: &str) {
        let mut error = error.to_owned();
        if error.len() > MAX_ERROR {
            let mut cut = MAX_ERROR;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
            error.push('…');
        }
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error = Some((sluice_pipeline::time::now_ms(), status, error));
    }

    pub fn health(&self) -> HealthReport {
        self.health_at(sluice_pipeline::time::now_ms())
    }

    fn health_at(&self, now_ms: i64) -> HealthReport {
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let error_ms = health.last_error.as_ref().map(|(at, _, _)| *at);
        let state = match (health.last_delivered_ms, error_ms) {
            (None, None) => "idle",
            (Some(ok), Some(failed)) if failed > ok => "failing",
            (None, Some(_)) => "failing",
            _ => "ok",
        };
        HealthReport {
            state,
            last_delivered_ms: health.last_delivered_ms,
            last_error: health.last_error.as_ref().map(|(_, _, e)| e.clone()),
            last_error_status: health.last_error.as_ref().and_then(|(_, s, _)| *s),
            last_error_ms: error_ms,
            last_5m: health.since(now_ms, 5),
            last_24h: health.since(now_ms, MINUTES),
        }
    }

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

/// A destination's counters, as `/metrics` shows them.
pub struct DestinationValues {
    pub pipeline_id: String,
    pub pipeline: String,
    pub destination: String,
    /// (outcome, value) for `routed` … `failed`, then `dlq_depth`.
    pub values: [(&'static str, u64); 6],
}

impl Counters {
    /// The counters of a destination, by its pipeline's id.
    pub fn destination(
        &self,
        pipeline_id: &str,
        pipeline: &str,
        destination: &str,
    ) -> Arc<DestinationCounters> {
        let counters = self
            .destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((pipeline_id.to_owned(), destination.to_owned()))
            .or_default()
            .clone();
        let mut name = counters.pipeline.lock().unwrap_or_else(|p| p.into_inner());
        if *name != pipeline {
            pipeline.clone_into(&mut name);
        }
        drop(name);
        counters
    }

    /// Counts `events` accepted with the ingest key `public_id` at `at_ms`.
    pub fn add_key_use(
        &self,
        public_id: &str,
        pipeline_id: &str,
        source: &str,
        events: u64,
        at_ms: i64,
    ) {
        let mut uses = self.key_use.lock().unwrap_or_else(|p| p.into_inner());
        if !uses.contains_key(public_id) && uses.len() >= MAX_TRACKED_KEYS {
            return;
        }
        let entry = uses.entry(public_id.to_owned()).or_default();
        if entry.pipeline_id != pipeline_id || entry.source != source {
            pipeline_id.clone_into(&mut entry.pipeline_id);
            source.clone_into(&mut entry.source);
        }
        entry.events += events;
        entry.last_used_ms = entry.last_used_ms.max(at_ms);
    }

    /// Every ingest key's use, by public id.
    pub fn key_use(&self) -> Vec<(String, KeyUse)> {
        self.key_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, u)| (id.clone(), u.clone()))
            .collect()
    }

    /// Counts `n` events refused for `reason`.
    pub fn add_rejected(&self, reason: RejectReason, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
        if let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) {
            self.rejected_by_reason[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Rejected events per class.
    pub fn rejected_by_reason(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .iter()
            .zip(&self.rejected_by_reason)
            .map(|(reason, n)| (*reason, n.load(Ordering::Relaxed)))
    }

    /// Name → value, as status reports carry them: the node's totals, and
    /// `<pipeline name>/<destination>.<counter>` per destination.
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
            (
                "archive_duplicates".to_owned(),
                self.archive_duplicates.load(Ordering::Relaxed),
            ),
            (
                "archive_compacted_files".to_owned(),
                self.archive_compacted_files.load(Ordering::Relaxed),
            ),
            (
                "archive_expired_files".to_owned(),
                self.archive_expired_files.load(Ordering::Relaxed),
            ),
            ("erasures".to_owned(), self.erasures.load(Ordering::Relaxed)),
            ("erased".to_owned(), self.erased.load(Ordering::Relaxed)),
        ]);
        for d in self.by_destination() {
            for (counter, value) in d.values {
                *out.entry(format!("{}/{}.{counter}", d.pipeline, d.destination))
                    .or_default() += value;
            }
        }
        out
    }

    /// Every destination's health: (pipeline id, pipeline name, destination, report).
    pub fn health(&self) -> Vec<(String, String, String, HealthReport)> {
        self.destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((pipeline_id, destination), c)| {
                (
                    pipeline_id.clone(),
                    c.pipeline.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                    destination.clone(),
                    c.health(),
                )
            })
            .collect()
    }

    /// Every destination's counters, for metrics.
    pub fn by_destination(&self) -> Vec<DestinationValues> {
        self.destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((pipeline_id, destination), c)| {
                let values = c.values();
                DestinationValues {
                    pipeline_id: pipeline_id.clone(),
                    pipeline: c.pipeline.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                    destination: destination.clone(),
                    values: std::array::from_fn(|i| (NAMES[i], values[i])),
                }
            })
            .collect()
    }
}

/// What the proxy counts, for metrics.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Events accepted into the spool.
    pub accepted: AtomicU64,
    /// Events a receiver acknowledged.
    pub forwarded: AtomicU64,
    /// Events every receiver refused for good, moved to the spool's `rejected` stage.
    pub rejected: AtomicU64,
    /// Events in the spool, not yet acknowledged by a receiver.
    pub spool_depth: AtomicU64,
    /// Receivers that passed their last health check.
    pub receivers_healthy: AtomicU64,
}

/// What the archiver reports as metrics.
#[derive(Debug, Default)]
pub struct ArchiveStats {
    pub files: AtomicU64,
    pub upload_failures: AtomicU64,
    /// Events held, waiting for their file.
    pub buffered: AtomicU64,
    /// 1 when the last upload succeeded (or none failed yet), 0 while the store fails.
    pub store_up: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_report_under_their_pipeline() {
        let counters = Counters::default();
        counters.received.fetch_add(3, Ordering::Relaxed);
        counters
            .destination("p1", "main", "crm")
            .delivered
            .fetch_add(2, Ordering::Relaxed);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot["received"], 3);
        assert_eq!(snapshot["main/crm.delivered"], 2);
        assert_eq!(snapshot["main/crm.failed"], 0);
        // A rename keeps the series (keyed by id) and reports under the new name.
        counters.destination("p1", "renamed", "crm");
        let by_destination = counters.by_destination();
        assert_eq!(by_destination.len(), 1);
        assert_eq!(by_destination[0].pipeline_id, "p1");
        assert_eq!(by_destination[0].pipeline, "renamed");
        assert_eq!(by_destination[0].values[2], ("delivered", 2));
    }

    #[test]
    fn key_use_adds_up_and_keeps_the_latest_time() {
        let counters = Counters::default();
        counters.add_key_use("k1", "p1", "web", 3, 2_000);
        counters.add_key_use("k1", "p1", "web", 2, 1_000);
        counters.add_key_use("k2", "p1", "ios", 1, 5_000);
        let uses = counters.key_use();
        assert_eq!(uses.len(), 2);
        assert_eq!(uses[0].0, "k1");
        assert_eq!(uses[0].1.events, 5);
        assert_eq!(
            uses[0].1.last_used_ms, 2_000,
            "an older batch does not move it back"
        );
        assert_eq!(uses[1].1.source, "ios");
    }

    #[test]
    fn health_follows_the_last_attempt_and_counts_recent_minutes() {
        let c = DestinationCounters::default();
        assert_eq!(c.health().state, "idle");
        let t0 = 1_795_000_000_000;
        c.count_at(t0, Count::Delivered, 3);
        assert_eq!(c.health_at(t0).state, "ok");
        c.attempt_failed(Some(503), &"x".repeat(1000));
        let failing = c.health();
        assert_eq!(failing.state, "failing");
        assert_eq!(failing.last_error_status, Some(503));
        assert!(failing.last_error.expect("kept").len() <= MAX_ERROR + 3);
        c.count_at(t0 + 10 * 60_000, Count::Retried, 2);
        c.count_at(t0 + 11 * 60_000, Count::Failed, 1);
        let report = c.health_at(t0 + 12 * 60_000);
        assert_eq!(report.last_5m, [0, 2, 1]);
        assert_eq!(report.last_24h, [3, 2, 1]);
        assert_eq!(c.delivered.load(Ordering::Relaxed), 3);
        // A day later only the newest counts are left.
        let later = c.health_at(t0 + (MINUTES + 10) * 60_000);
        assert_eq!(later.last_24h, [0, 0, 1]);
    }

    #[test]
    fn rejections_count_by_reason_and_in_total() {
        let counters = Counters::default();
        counters.add_rejected(RejectReason::SchemaViolation, 2);
        counters.add_rejected(RejectReason::BadEnvelope, 1);
        assert_eq!(counters.rejected.load(Ordering::Relaxed), 3);
        let by_reason: BTreeMap<_, _> = counters.rejected_by_reason().collect();
        assert_eq!(by_reason[&RejectReason::SchemaViolation], 2);
        assert_eq!(by_reason[&RejectReason::UnknownPipeline], 0);
    }
}
