//! Every metric the data plane exports, in one place, through the `metrics` crate into a
//! Prometheus recorder of the node's own (one process may run several nodes: tests, `sluice
//! dev`), so each node's `/metrics` shows only its own series.
//!
//! Counters that status reports also carry are counted once, in [`super::counters`], and
//! mirrored into the recorder when `/metrics` is scraped; latencies are recorded as they
//! happen, into histograms.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder as _, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

/// The configuration version the node runs (0: none yet).
pub const CONFIG_VERSION: &str = "sluice_config_version";
/// Seconds since the running configuration was received from the control plane.
pub const CONFIG_AGE_SECONDS: &str = "sluice_config_age_seconds";
/// 1 while the config-sync stream is open.
pub const CONTROL_PLANE_CONNECTED: &str = "sluice_control_plane_connected";
/// Snapshots refused by this node.
pub const CONFIG_REJECTED_TOTAL: &str = "sluice_config_rejected_total";
/// Snapshots refused because their signature did not verify (altered or forged): alert on it.
pub const CONFIG_SIGNATURE_FAILURES_TOTAL: &str = "sluice_config_signature_failures_total";
/// Events by `stage` (`received`, `processed`, `rejected`, `delivered`, `failed`,
/// `archived`).
pub const EVENTS_TOTAL: &str = "sluice_events_total";
/// Events refused by governance, by `reason` (a `RejectReason`).
pub const REJECTED_TOTAL: &str = "sluice_rejected_total";
/// Events waiting in dead-letter queues, over all destinations.
pub const DLQ_DEPTH: &str = "sluice_dlq_depth";
/// Per destination (`pipeline_id`, `pipeline` name, `destination`), by `outcome`: routed,
/// skipped, delivered, retried, failed (moved to the DLQ).
pub const DESTINATION_EVENTS_TOTAL: &str = "sluice_destination_events_total";
/// Per destination: events in its dead-letter queue.
pub const DESTINATION_DLQ_DEPTH: &str = "sluice_destination_dlq_depth";
/// Proxy: events by `outcome` (`accepted` into the spool, `forwarded` to a receiver,
/// `rejected` for good by the receivers).
pub const PROXY_EVENTS_TOTAL: &str = "sluice_proxy_events_total";
/// Proxy: events in the disk spool waiting for a receiver.
pub const PROXY_SPOOL_DEPTH: &str = "sluice_proxy_spool_depth";
/// Proxy: receivers that passed their last health check.
pub const PROXY_RECEIVERS_HEALTHY: &str = "sluice_proxy_receivers_healthy";
/// Archiver: Parquet files written.
pub const ARCHIVE_FILES_TOTAL: &str = "sluice_archive_files_total";
/// Archiver: failed uploads (each is retried; events stay held on the bus).
pub const ARCHIVE_UPLOAD_FAILURES_TOTAL: &str = "sluice_archive_upload_failures_total";
/// Archiver: events held until their file is written.
pub const ARCHIVE_BUFFERED_EVENTS: &str = "sluice_archive_buffered_events";
/// Archiver: 1 when the object store took the last upload, 0 while uploads fail.
pub const ARCHIVE_STORE_UP: &str = "sluice_archive_store_up";
/// Archiver: copies of events already archived that were dropped (redeliveries, replays).
pub const ARCHIVE_DUPLICATES_TOTAL: &str = "sluice_archive_duplicates_total";
/// Archiver: small files merged by compaction.
pub const ARCHIVE_COMPACTED_FILES_TOTAL: &str = "sluice_archive_compacted_files_total";
/// Archiver: files deleted by a dataset's retention (`retain_days`).
pub const ARCHIVE_EXPIRED_FILES_TOTAL: &str = "sluice_archive_expired_files_total";
/// Erasure requests carried out (`POST /v1/erasure`).
pub const ERASURES_TOTAL: &str = "sluice_erasures_total";
/// Identity: entries (profiles and their links) the tenant's identity store holds, as last
/// counted (bounded by `identity_max_entries`).
pub const IDENTITY_ENTRIES: &str = "sluice_identity_entries";
/// Identity: batches the processor handed back because the identity store failed.
pub const IDENTITY_STORE_ERRORS_TOTAL: &str = "sluice_identity_store_errors_total";
/// Identity: batches whose new visitors could not be stored because the store was full.
pub const IDENTITY_STORE_FULL_TOTAL: &str = "sluice_identity_store_full_total";
/// Identity: profiles erased through `DELETE /v1/identities/{id}`.
pub const IDENTITY_ERASED_TOTAL: &str = "sluice_identity_erased_total";
/// Per bus `stage` a role of the node consumes: 1 while it is read, 0 while its consumer
/// is starting or failing.
pub const CONSUMER_READING: &str = "sluice_consumer_reading";
/// Per bus `stage` a role of the node consumes: messages not yet acknowledged (waiting or in
/// flight), sampled every 10 s. Every node of a role reports its stage's shared backlog.
pub const CONSUMER_PENDING: &str = "sluice_consumer_pending";
/// Seconds to publish one batch of messages to the bus (until durable), by `stage` kind
/// (`raw`, `deliver`, `dlq`, `archive`, `rejected`, …).
pub const BUS_PUBLISH_SECONDS: &str = "sluice_bus_publish_seconds";
/// Seconds the processor spends on one batch from `raw` (governance and shaping).
pub const PROCESSING_BATCH_SECONDS: &str = "sluice_processing_batch_seconds";
/// Seconds per request to a destination's vendor, by destination and `outcome`
/// (`delivered`, `retry`, `dead_letter`).
pub const DELIVERY_REQUEST_SECONDS: &str = "sluice_delivery_request_seconds";
/// Seconds to upload one archive file to object storage, by `outcome` (`ok`, `error`).
pub const ARCHIVE_UPLOAD_SECONDS: &str = "sluice_archive_upload_seconds";

/// Every metric with its kind, unit and help text (`promtool check metrics` wants HELP on
/// each).
const DESCRIPTIONS: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        CONFIG_VERSION,
        Kind::Gauge,
        None,
        "Configuration version the node runs (0: none).",
    ),
    (
        CONFIG_AGE_SECONDS,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Seconds since the running configuration came from the control plane.",
    ),
    (
        CONTROL_PLANE_CONNECTED,
        Kind::Gauge,
        None,
        "1 while the config-sync stream is open.",
    ),
    (
        CONFIG_REJECTED_TOTAL,
        Kind::Counter,
        None,
        "Snapshots this node refused.",
    ),
    (
        CONFIG_SIGNATURE_FAILURES_TOTAL,
        Kind::Counter,
        None,
        "Snapshots refused because their signature did not verify.",
    ),
    (EVENTS_TOTAL, Kind::Counter, None, "Events by stage."),
    (
        REJECTED_TOTAL,
        Kind::Counter,
        None,
        "Events refused by governance, by reason.",
    ),
    (
        DLQ_DEPTH,
        Kind::Gauge,
        None,
        "Events waiting in dead-letter queues.",
    ),
    (
        DESTINATION_EVENTS_TOTAL,
        Kind::Counter,
        None,
        "Events per destination by outcome.",
    ),
    (
        DESTINATION_DLQ_DEPTH,
        Kind::Gauge,
        None,
        "Events in a destination's dead-letter queue.",
    ),
    (
        PROXY_EVENTS_TOTAL,
        Kind::Counter,
        None,
        "Proxy events by outcome.",
    ),
    (
        PROXY_SPOOL_DEPTH,
        Kind::Gauge,
        None,
        "Events in the proxy's spool waiting for a receiver.",
    ),
    (
        PROXY_RECEIVERS_HEALTHY,
        Kind::Gauge,
        None,
        "Receivers that passed their last health check.",
    ),
    (
        ARCHIVE_FILES_TOTAL,
        Kind::Counter,
        None,
        "Parquet files written to the archive.",
    ),
    (
        ARCHIVE_UPLOAD_FAILURES_TOTAL,
        Kind::Counter,
        None,
        "Archive uploads that failed and are retried.",
    ),
    (
        ARCHIVE_BUFFERED_EVENTS,
        Kind::Gauge,
        None,
        "Events held until their archive file is written.",
    ),
    (
        ARCHIVE_STORE_UP,
        Kind::Gauge,
        None,
        "1 when the object store took the last upload.",
    ),
    (
        ARCHIVE_DUPLICATES_TOTAL,
        Kind::Counter,
        None,
        "Copies of events already archived that the archiver or compaction dropped.",
    ),
    (
        ARCHIVE_COMPACTED_FILES_TOTAL,
        Kind::Counter,
        None,
        "Small archive files merged by compaction.",
    ),
    (
        ARCHIVE_EXPIRED_FILES_TOTAL,
        Kind::Counter,
        None,
        "Archive files deleted by a dataset's retention.",
    ),
    (
        ERASURES_TOTAL,
        Kind::Counter,
        None,
        "Erasure requests carried out.",
    ),
    (
        IDENTITY_ENTRIES,
        Kind::Gauge,
        None,
        "Entries (profiles and links) the tenant's identity store holds, as last counted.",
    ),
    (
        IDENTITY_STORE_ERRORS_TOTAL,
        Kind::Counter,
        None,
        "Batches handed back because the identity store failed.",
    ),
    (
        IDENTITY_STORE_FULL_TOTAL,
        Kind::Counter,
        None,
        "Batches whose new visitors went unstored because the identity store was full.",
    ),
    (
        IDENTITY_ERASED_TOTAL,
        Kind::Counter,
        None,
        "Profiles erased through the identity API.",
    ),
    (
        CONSUMER_READING,
        Kind::Gauge,
        None,
        "1 while a role reads this bus stage, 0 while it cannot.",
    ),
    (
        CONSUMER_PENDING,
        Kind::Gauge,
        None,
        "Messages of a bus stage this node consumes not yet acknowledged, sampled every 10 s.",
    ),
    (
        BUS_PUBLISH_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Seconds to publish a batch to a bus stage until it is durable.",
    ),
    (
        PROCESSING_BATCH_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Seconds the processor spends governing and shaping one batch.",
    ),
    (
        DELIVERY_REQUEST_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Seconds per request to a destination's vendor, by outcome.",
    ),
    (
        ARCHIVE_UPLOAD_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Seconds to upload one archive file, by outcome.",
    ),
];

/// Histogram buckets, in seconds: from a fast durable commit to a slow vendor.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One node's recorder.
pub struct Metrics {
    recorder: PrometheusRecorder,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Labels as the recorder takes them.
pub type Labels<'l> = &'l [(&'static str, &'l str)];

fn key(name: &'static str, labels: Labels<'_>) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect::<Vec<_>>(),
    )
}

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Metrics {
    pub fn new() -> Self {
        // Setting buckets fails only for an empty list.
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        for (name, kind, unit, help) in DESCRIPTIONS {
            let name = KeyName::from_const_str(name);
            let help = metrics::SharedString::const_str(help);
            match kind {
                Kind::Counter => recorder.describe_counter(name, *unit, help),
                Kind::Gauge => recorder.describe_gauge(name, *unit, help),
                Kind::Histogram => recorder.describe_histogram(name, *unit, help),
            }
        }
        Self { recorder }
    }

    pub fn counter(&self, name: &'static str, labels: Labels<'_>) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels: Labels<'_>) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    pub fn histogram(&self, name: &'static str, labels: Labels<'_>) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// Records a bus publish of `stage` that took `took`.
    pub fn bus_publish(&self, stage: &str, took: Duration) {
        let kind = stage.split('.').next().unwrap_or(stage);
        self.histogram(BUS_PUBLISH_SECONDS, &[("stage", kind)])
            .record(took);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_named_here_is_described() {
        let source = include_str!("metrics.rs");
        let named: Vec<&str> = source
            .lines()
            .filter_map(|line| line.strip_prefix("pub const "))
            .filter_map(|rest| rest.split('"').nth(1))
            .filter(|name| name.starts_with("sluice_"))
            .collect();
        assert!(named.len() > 20, "{named:?}");
        for name in named {
            assert!(
                DESCRIPTIONS
                    .iter()
                    .any(|(described, ..)| *described == name),
                "{name} has no help text in DESCRIPTIONS"
            );
        }
    }

    #[test]
    fn label_values_are_escaped_and_every_metric_has_help() {
        let metrics = Metrics::new();
        metrics
            .counter(DESTINATION_EVENTS_TOTAL, &[("pipeline", "a\"b\\")])
            .increment(2);
        metrics
            .counter(DESTINATION_EVENTS_TOTAL, &[("pipeline", "two\nlines")])
            .increment(1);
        metrics.bus_publish("deliver.p.d", Duration::from_millis(3));
        let text = metrics.render();
        assert!(
            text.contains(r#"sluice_destination_events_total{pipeline="a\"b\\"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_destination_events_total{pipeline="two\nlines"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# HELP sluice_destination_events_total "),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_bus_publish_seconds_bucket{stage="deliver",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# HELP sluice_bus_publish_seconds "),
            "{text}"
        );
    }

    #[test]
    fn nodes_do_not_share_series() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.counter(EVENTS_TOTAL, &[("stage", "received")])
            .increment(1);
        assert!(!b.render().contains("sluice_events_total{"));
    }
}
