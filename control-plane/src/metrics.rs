//! Every metric name the control plane emits, in one place.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Requests served, by `method`, `route` and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "sluice_http_requests_total";
/// Request latency in seconds, by `method` and `route`.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "sluice_http_request_duration_seconds";
/// Requests refused for missing, invalid, revoked or expired credentials.
pub const AUTH_FAILURES_TOTAL: &str = "sluice_auth_failures_total";
/// Sign-ins, by `outcome` (`ok`, `bad_credentials`, `rate_limited`).
pub const LOGINS_TOTAL: &str = "sluice_logins_total";
/// Open config-sync streams on this replica.
pub const SYNC_STREAMS: &str = "sluice_sync_streams";
/// Snapshots sent to data planes.
pub const SYNC_SNAPSHOTS_TOTAL: &str = "sluice_sync_snapshots_total";
/// Snapshots data planes applied.
pub const SYNC_ACKS_TOTAL: &str = "sluice_sync_acks_total";
/// Snapshots data planes refused.
pub const SYNC_NACKS_TOTAL: &str = "sluice_sync_nacks_total";
/// Key last-used times written to the store.
pub const KEY_USAGE_FLUSHED_TOTAL: &str = "sluice_key_usage_flushed_total";

/// The process-wide Prometheus recorder, installed on first use. One process may run several
/// servers (tests, `sluice dev`); they share it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; ours then stays empty.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// HELP text for every metric (`promtool check metrics` wants it on each).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests served, by method, route and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency in seconds, by method and route."
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        "Requests refused for missing, invalid, revoked or expired credentials."
    );
    describe_counter!(LOGINS_TOTAL, "Sign-ins, by outcome.");
    describe_gauge!(SYNC_STREAMS, "Open config-sync streams on this replica.");
    describe_counter!(SYNC_SNAPSHOTS_TOTAL, "Snapshots sent to data planes.");
    describe_counter!(SYNC_ACKS_TOTAL, "Snapshots data planes applied.");
    describe_counter!(SYNC_NACKS_TOTAL, "Snapshots data planes refused.");
    describe_counter!(
        KEY_USAGE_FLUSHED_TOTAL,
        "Key last-used times written to the store."
    );
}
