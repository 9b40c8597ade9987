//! Every metric the data plane exports, in one place, rendered in the Prometheus text format
//! from the node's own state.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::node::NodeState;

/// The configuration version the node runs (0: none yet).
pub const CONFIG_VERSION: &str = "sluice_config_version";
/// Seconds since the running configuration was received from the control plane.
pub const CONFIG_AGE_SECONDS: &str = "sluice_config_age_seconds";
/// 1 while the config-sync stream is open.
pub const CONTROL_PLANE_CONNECTED: &str = "sluice_control_plane_connected";
/// Snapshots refused by this node.
pub const CONFIG_REJECTED_TOTAL: &str = "sluice_config_rejected_total";
/// Events by stage (`received`, `delivered`, `failed`, `archived`) and the DLQ depth.
pub const EVENTS_TOTAL: &str = "sluice_events_total";
pub const DLQ_DEPTH: &str = "sluice_dlq_depth";
/// Per destination (`<pipeline>/<destination>`): routed, skipped, delivered, retried,
/// failed (moved to the DLQ) and the DLQ depth.
pub const DESTINATION_EVENTS_TOTAL: &str = "sluice_destination_events_total";
/// Proxy: events by outcome (`accepted` into the spool, `forwarded` to a receiver,
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
/// Per bus stage a role of the node consumes: 1 while it is read, 0 while its consumer is
/// starting or failing.
pub const CONSUMER_READING: &str = "sluice_consumer_reading";

pub fn render(node: &NodeState) -> String {
    let mut out = String::new();
    let current = node.current();
    let version = current.as_ref().map_or(0, |c| c.version);
    let age = current.as_ref().map_or(0.0, |c| node.config_age_seconds(c));
    let connected = u8::from(node.connected.load(Ordering::Relaxed));
    let rejected = node.rejected.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP {CONFIG_VERSION} Configuration version the node runs (0: none)."
    );
    let _ = writeln!(
        out,
        "# TYPE {CONFIG_VERSION} gauge\n{CONFIG_VERSION} {version}"
    );
    let _ = writeln!(
        out,
        "# HELP {CONFIG_AGE_SECONDS} Seconds since the running configuration came from the control plane."
    );
    let _ = writeln!(
        out,
        "# TYPE {CONFIG_AGE_SECONDS} gauge\n{CONFIG_AGE_SECONDS} {age:.3}"
    );
    let _ = writeln!(
        out,
        "# HELP {CONTROL_PLANE_CONNECTED} 1 while the config-sync stream is open."
    );
    let _ = writeln!(
        out,
        "# TYPE {CONTROL_PLANE_CONNECTED} gauge\n{CONTROL_PLANE_CONNECTED} {connected}"
    );
    let _ = writeln!(
        out,
        "# HELP {CONFIG_REJECTED_TOTAL} Snapshots this node refused."
    );
    let _ = writeln!(
        out,
        "# TYPE {CONFIG_REJECTED_TOTAL} counter\n{CONFIG_REJECTED_TOTAL} {rejected}"
    );
    let counters = node.counters.snapshot();
    let _ = writeln!(
        out,
        "# HELP {EVENTS_TOTAL} Events by stage.\n# TYPE {EVENTS_TOTAL} counter"
    );
    for stage in [
        "received",
        "processed",
        "rejected",
        "delivered",
        "failed",
        "archived",
    ] {
        let _ = writeln!(
            out,
            "{EVENTS_TOTAL}{{stage=\"{stage}\"}} {}",
            counters.get(stage).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {DLQ_DEPTH} Events waiting in dead-letter queues.\n# TYPE {DLQ_DEPTH} gauge"
    );
    let _ = writeln!(
        out,
        "{DLQ_DEPTH} {}",
        counters.get("dlq_depth").copied().unwrap_or(0)
    );
    let destinations = node.counters.by_destination();
    if !destinations.is_empty() {
        let _ = writeln!(
            out,
            "# HELP {DESTINATION_EVENTS_TOTAL} Events per destination by outcome (dlq_depth is a gauge).\n# TYPE {DESTINATION_EVENTS_TOTAL} counter"
        );
        for (name, values) in &destinations {
            for (outcome, value) in values {
                let _ = writeln!(
                    out,
                    "{DESTINATION_EVENTS_TOTAL}{{destination=\"{name}\",outcome=\"{outcome}\"}} {value}"
                );
            }
        }
    }
    let consumers = node.consumers.snapshot();
    if !consumers.is_empty() {
        let _ = writeln!(
            out,
            "# HELP {CONSUMER_READING} 1 while a role reads this bus stage, 0 while it cannot.\n# TYPE {CONSUMER_READING} gauge"
        );
        for (stage, state) in &consumers {
            let _ = writeln!(
                out,
                "{CONSUMER_READING}{{stage=\"{stage}\"}} {}",
                u8::from(state.is_reading())
            );
        }
    }
    if node.config.runs("archiver") {
        let stats = &node.archive_stats;
        for (name, kind, help, value) in [
            (
                ARCHIVE_FILES_TOTAL,
                "counter",
                "Parquet files written to the archive.",
                &stats.files,
            ),
            (
                ARCHIVE_UPLOAD_FAILURES_TOTAL,
                "counter",
                "Archive uploads that failed and are retried.",
                &stats.upload_failures,
            ),
            (
                ARCHIVE_BUFFERED_EVENTS,
                "gauge",
                "Events held until their archive file is written.",
                &stats.buffered,
            ),
            (
                ARCHIVE_STORE_UP,
                "gauge",
                "1 when the object store took the last upload.",
                &stats.store_up,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
    if node.config.runs("proxy") {
        let proxy = &node.proxy_stats;
        let _ = writeln!(
            out,
            "# HELP {PROXY_EVENTS_TOTAL} Proxy events by outcome.\n# TYPE {PROXY_EVENTS_TOTAL} counter"
        );
        for (outcome, value) in [
            ("accepted", &proxy.accepted),
            ("forwarded", &proxy.forwarded),
            ("rejected", &proxy.rejected),
        ] {
            let _ = writeln!(
                out,
                "{PROXY_EVENTS_TOTAL}{{outcome=\"{outcome}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP {PROXY_SPOOL_DEPTH} Events in the proxy's spool waiting for a receiver.\n# TYPE {PROXY_SPOOL_DEPTH} gauge\n{PROXY_SPOOL_DEPTH} {}",
            proxy.spool_depth.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP {PROXY_RECEIVERS_HEALTHY} Receivers that passed their last health check.\n# TYPE {PROXY_RECEIVERS_HEALTHY} gauge\n{PROXY_RECEIVERS_HEALTHY} {}",
            proxy.receivers_healthy.load(Ordering::Relaxed)
        );
    }
    out
}
