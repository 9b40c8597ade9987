use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries past which expired windows are swept, so an attacker cycling keys cannot grow the
/// map without bound.
const SWEEP_THRESHOLD: usize = 10_000;

/// Fixed-window counters per key: at most `limit` hits per `window`.
pub struct WindowLimiter {
    limit: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (Instant, u32)>>,
}

impl WindowLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a hit; `Err(seconds to wait)` when the window is already full.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        self.update(key, true)
    }

    /// Like [`hit`](Self::hit) without counting: whether another hit would be allowed.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.update(key, false)
    }

    pub fn reset(&self, key: &str) {
        self.lock().remove(key);
    }

    fn update(&self, key: &str, count: bool) -> Result<(), u64> {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= SWEEP_THRESHOLD {
            let window = self.window;
            entries.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = entries.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            let wait = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(wait.as_secs().max(1));
        }
        if count {
            entry.1 += 1;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u32)>> {
        // A panic while holding the lock leaves only counters behind; they are still usable.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_with_a_wait() {
        let limiter = WindowLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(limiter.hit("ip").is_ok());
        }
        let wait = limiter.hit("ip").expect_err("fourth hit");
        assert!((1..=60).contains(&wait));
        assert!(limiter.check("ip").is_err());
        assert!(limiter.hit("other").is_ok(), "keys are independent");
        limiter.reset("ip");
        assert!(limiter.hit("ip").is_ok());
    }

    #[test]
    fn check_does_not_count() {
        let limiter = WindowLimiter::new(1, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(limiter.check("a").is_ok());
        }
        assert!(limiter.hit("a").is_ok());
        assert!(limiter.hit("a").is_err());
    }

    #[test]
    fn a_new_window_starts_fresh() {
        let limiter = WindowLimiter::new(1, Duration::from_millis(20));
        assert!(limiter.hit("a").is_ok());
        assert!(limiter.hit("a").is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(limiter.hit("a").is_ok());
    }
}
