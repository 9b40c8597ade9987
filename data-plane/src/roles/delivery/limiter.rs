//! A destination's rate limit: a token bucket its workers share, waited on asynchronously.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(events_per_second: u32, burst: Option<u32>) -> Self {
        let rate = f64::from(events_per_second.max(1));
        let burst = f64::from(burst.unwrap_or(events_per_second).max(1));
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits until `n` events may go (a batch larger than the burst waits for a full bucket
    /// and goes; it cannot be split here).
    pub async fn acquire(&self, n: usize) {
        let want = (n as f64).min(self.burst);
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let tokens = (state.0 + now.duration_since(state.1).as_secs_f64() * self.rate)
                    .min(self.burst);
                if tokens >= want {
                    *state = (tokens - want, now);
                    return;
                }
                *state = (tokens, now);
                Duration::from_secs_f64((want - tokens) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bucket_paces_events_to_the_rate() {
        let limiter = RateLimiter::new(100, Some(10));
        let started = Instant::now();
        for _ in 0..30 {
            limiter.acquire(1).await;
        }
        // 10 from the burst, then 20 at 100/s.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(180) && took < Duration::from_millis(600),
            "{took:?}"
        );
    }
}
