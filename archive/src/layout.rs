//! Where an archived event lives:
//! `tenant=<id>/dataset=<name>/dt=YYYY-MM-DD/hour=HH/part-<uuid>.parquet`, partitioned by the
//! hour the data plane received it (UTC) — a clock the data plane owns, unlike the client's.

use object_store::path::Path;

/// The partition columns, in path order below the tenant.
pub const PARTITION_COLUMNS: [&str; 3] = ["dataset", "dt", "hour"];

/// The prefix every object of a tenant lives under.
pub fn tenant_prefix(tenant_id: &str) -> String {
    format!("tenant={tenant_id}")
}

/// `(dt, hour)` of a Unix time in milliseconds: `("2026-11-22", "09")`.
pub fn partition(unix_ms: i64) -> (String, String) {
    let secs = unix_ms.div_euclid(1000);
    let at =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (
        format!(
            "{:04}-{:02}-{:02}",
            at.year(),
            u8::from(at.month()),
            at.day()
        ),
        format!("{:02}", at.hour()),
    )
}

/// A new object's path in a partition; the uuid makes concurrent writers never collide.
pub fn object_path(tenant_id: &str, dataset: &str, dt: &str, hour: &str, id: uuid::Uuid) -> Path {
    Path::from(format!(
        "{}/dataset={dataset}/dt={dt}/hour={hour}/part-{}.parquet",
        tenant_prefix(tenant_id),
        id.as_simple()
    ))
}

/// Whether `name` can be a path segment value as is (ids and dataset names are validated to
/// this shape long before; this guards the layout against a future mistake).
pub fn is_safe_segment(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_utc_hours() {
        // 2026-11-22T09:59:59.999Z
        assert_eq!(
            partition(1_795_341_599_999),
            ("2026-11-22".into(), "09".into())
        );
        assert_eq!(partition(0), ("1970-01-01".into(), "00".into()));
        let path = object_path("t1", "events", "2026-11-22", "09", uuid::Uuid::nil());
        assert_eq!(
            path.as_ref(),
            "tenant=t1/dataset=events/dt=2026-11-22/hour=09/part-00000000000000000000000000000000.parquet"
        );
    }

    #[test]
    fn only_plain_names_are_segments() {
        assert!(is_safe_segment("web_events-2"));
        for bad in ["", "a/b", "..", "a=b", "é"] {
            assert!(!is_safe_segment(bad), "{bad}");
        }
    }
}
