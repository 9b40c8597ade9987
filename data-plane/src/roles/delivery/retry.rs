//! When to try a failed delivery again: exponential backoff with full jitter, the ceilings of
//! all retries adding up to the destination's window (by default 5 attempts over 24 hours:
//! ceilings of 5.6 min, 33 min, 3.3 h and 20 h).

use std::time::Duration;

use sluice_proto::spec::RetrySpec;

/// Each retry's ceiling is this many times the previous one's.
const FACTOR: f64 = 6.0;

/// The longest wait before the next attempt, after `failed` attempts (1 or more).
pub fn ceiling(spec: &RetrySpec, failed: u32) -> Duration {
    let retries = spec.max_attempts.saturating_sub(1).max(1);
    let sum: f64 = (0..retries).map(|k| FACTOR.powi(k as i32)).sum();
    let first = spec.within_seconds as f64 / sum;
    let k = failed.saturating_sub(1).min(retries - 1);
    Duration::from_secs_f64(first * FACTOR.powi(k as i32))
}

/// The wait before the next attempt: uniform between nothing and the ceiling (full jitter),
/// and never shorter than what the destination asked for with `Retry-After`.
pub fn delay(spec: &RetrySpec, failed: u32, retry_after: Option<Duration>) -> Duration {
    let jittered = ceiling(spec, failed).mul_f64(fraction());
    let window = Duration::from_secs(spec.within_seconds);
    jittered.max(retry_after.unwrap_or_default().min(window))
}

fn fraction() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_attempts_spread_over_a_day() {
        let spec = RetrySpec::default();
        let ceilings: Vec<f64> = (1..=4).map(|n| ceiling(&spec, n).as_secs_f64()).collect();
        let total: f64 = ceilings.iter().sum();
        assert!((total - 86_400.0).abs() < 1.0, "{ceilings:?}");
        assert!((ceilings[0] - 333.6).abs() < 1.0, "{ceilings:?}");
        assert!(
            ceilings
                .windows(2)
                .all(|w| (w[1] / w[0] - FACTOR).abs() < 1e-9)
        );
        for n in 1..=4 {
            for _ in 0..100 {
                assert!(delay(&spec, n, None) <= ceiling(&spec, n));
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_within_the_window() {
        let spec = RetrySpec {
            max_attempts: 3,
            within_seconds: 10,
        };
        assert!(delay(&spec, 1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        assert!(delay(&spec, 1, Some(Duration::from_secs(3600))) <= Duration::from_secs(10));
        let one = RetrySpec {
            max_attempts: 1,
            within_seconds: 10,
        };
        assert_eq!(
            ceiling(&one, 1),
            Duration::from_secs(10),
            "no panic without retries"
        );
    }
}
