//! What `/metrics` shows: the node's counters and state mirrored into its recorder at scrape
//! time (the same numbers its status reports carry), then rendered with the histograms the
//! roles record as they work.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::NodeState;
use crate::telemetry::metrics::{self as m, Metrics};
use sluice_proto::Role;

fn load(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

pub fn render(node: &NodeState) -> String {
    let metrics = &node.metrics;
    let current = node.current();
    let version = current.as_ref().map_or(0, |c| c.version);
    let age = current.as_ref().map_or(0.0, |c| node.config_age_seconds(c));
    metrics.gauge(m::CONFIG_VERSION, &[]).set(version as f64);
    metrics.gauge(m::CONFIG_AGE_SECONDS, &[]).set(age);
    metrics
        .gauge(m::CONTROL_PLANE_CONNECTED, &[])
        .set(f64::from(u8::from(node.connected.load(Ordering::Relaxed))));
    metrics
        .counter(m::CONFIG_REJECTED_TOTAL, &[])
        .absolute(load(&node.rejected));
    metrics
        .counter(m::CONFIG_SIGNATURE_FAILURES_TOTAL, &[])
        .absolute(load(&node.forged));
    events(node, metrics);
    destinations(node, metrics);
    for (stage, state) in node.consumers.snapshot() {
        metrics
            .gauge(m::CONSUMER_READING, &[("stage", &stage)])
            .set(f64::from(u8::from(state.is_reading())));
    }
    for (stage, pending) in node.consumers.pending() {
        metrics
            .gauge(m::CONSUMER_PENDING, &[("stage", &stage)])
            .set(pending as f64);
    }
    if node.config.runs(Role::Archiver) {
        let stats = &node.archive_stats;
        metrics
            .counter(m::ARCHIVE_FILES_TOTAL, &[])
            .absolute(load(&stats.files));
        metrics
            .counter(m::ARCHIVE_UPLOAD_FAILURES_TOTAL, &[])
            .absolute(load(&stats.upload_failures));
        metrics
            .gauge(m::ARCHIVE_BUFFERED_EVENTS, &[])
            .set(load(&stats.buffered) as f64);
        metrics
            .gauge(m::ARCHIVE_STORE_UP, &[])
            .set(load(&stats.store_up) as f64);
        let counters = &node.counters;
        for (name, value) in [
            (m::ARCHIVE_DUPLICATES_TOTAL, &counters.archive_duplicates),
            (
                m::ARCHIVE_COMPACTED_FILES_TOTAL,
                &counters.archive_compacted_files,
            ),
            (
                m::ARCHIVE_EXPIRED_FILES_TOTAL,
                &counters.archive_expired_files,
            ),
        ] {
            metrics.counter(name, &[]).absolute(load(value));
        }
    }
    metrics
        .counter(m::ERASURES_TOTAL, &[])
        .absolute(load(&node.counters.erasures));
    if node.config.runs(Role::Proxy) {
        let proxy = &node.proxy_stats;
        for (outcome, value) in [
            ("accepted", &proxy.accepted),
            ("forwarded", &proxy.forwarded),
            ("rejected", &proxy.rejected),
        ] {
            metrics
                .counter(m::PROXY_EVENTS_TOTAL, &[("outcome", outcome)])
                .absolute(load(value));
        }
        metrics
            .gauge(m::PROXY_SPOOL_DEPTH, &[])
            .set(load(&proxy.spool_depth) as f64);
        metrics
            .gauge(m::PROXY_RECEIVERS_HEALTHY, &[])
            .set(load(&proxy.receivers_healthy) as f64);
    }
    if let Some(visitors) = &node.visitors {
        metrics
            .gauge(m::IDENTITY_ENTRIES, &[])
            .set(load(&visitors.entries) as f64);
        metrics
            .counter(m::IDENTITY_STORE_ERRORS_TOTAL, &[])
            .absolute(load(&visitors.store_errors));
        metrics
            .counter(m::IDENTITY_STORE_FULL_TOTAL, &[])
            .absolute(load(&visitors.store_full));
        metrics
            .counter(m::IDENTITY_ERASED_TOTAL, &[])
            .absolute(load(&visitors.erased));
    }
    metrics.render()
}

fn events(node: &NodeState, metrics: &Metrics) {
    let counters = &node.counters;
    for (stage, value) in [
        ("received", &counters.received),
        ("processed", &counters.processed),
        ("rejected", &counters.rejected),
        ("delivered", &counters.delivered),
        ("failed", &counters.failed),
        ("archived", &counters.archived),
    ] {
        metrics
            .counter(m::EVENTS_TOTAL, &[("stage", stage)])
            .absolute(load(value));
    }
    for (reason, value) in counters.rejected_by_reason() {
        metrics
            .counter(m::REJECTED_TOTAL, &[("reason", reason.as_str())])
            .absolute(value);
    }
    metrics
        .gauge(m::DLQ_DEPTH, &[])
        .set(load(&counters.dlq_depth) as f64);
}

fn destinations(node: &NodeState, metrics: &Metrics) {
    for d in node.counters.by_destination() {
        let labels = [
            ("pipeline_id", d.pipeline_id.as_str()),
            ("pipeline", d.pipeline.as_str()),
            ("destination", d.destination.as_str()),
        ];
        for (outcome, value) in d.values {
            if outcome == "dlq_depth" {
                metrics
                    .gauge(m::DESTINATION_DLQ_DEPTH, &labels)
                    .set(value as f64);
            } else {
                let mut labels = labels.to_vec();
                labels.push(("outcome", outcome));
                metrics
                    .counter(m::DESTINATION_EVENTS_TOTAL, &labels)
                    .absolute(value);
            }
        }
    }
}
