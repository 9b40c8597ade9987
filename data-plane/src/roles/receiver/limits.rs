//! Per-source token buckets, from each source's `rate_limit` in the pipeline spec.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sluice_proto::spec::RateLimit;

#[derive(Default)]
pub struct SourceLimits {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl SourceLimits {
    /// Takes `n` tokens from the source's bucket; `Err(seconds to wait)` when there are not
    /// enough. A request is admitted whole or not at all.
    pub fn take(&self, pipeline: &str, source: &str, limit: &RateLimit, n: u32) -> Result<(), u64> {
        let rate = f64::from(limit.events_per_second.max(1));
        let burst = f64::from(limit.burst.unwrap_or(limit.events_per_second).max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry((pipeline.to_owned(), source.to_owned()))
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        let want = f64::from(n);
        if want > burst {
            // Can never fit: refuse rather than let it wait forever.
            return Err(60);
        }
        if bucket.tokens >= want {
            bucket.tokens -= want;
            Ok(())
        } else {
            Err(((want - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limits = SourceLimits::default();
        let limit = RateLimit {
            events_per_second: 10,
            burst: Some(20),
        };
        assert!(limits.take("p", "web", &limit, 20).is_ok());
        assert!(limits.take("p", "web", &limit, 1).is_err());
        assert!(
            limits.take("p", "app", &limit, 5).is_ok(),
            "sources are independent"
        );
        assert!(
            limits.take("p", "web", &limit, 21).is_err(),
            "larger than the burst"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert!(limits.take("p", "web", &limit, 2).is_ok(), "refilled");
    }
}
