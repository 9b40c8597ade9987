//! Pacing of the fixed-rate runs: open-loop workers whose requests are spread evenly in time.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How far into each period worker `worker` of `workers` sends.
fn offset(worker: usize, workers: usize, period: Duration) -> Duration {
    period.mul_f64(worker as f64 / workers.max(1) as f64)
}

/// The ticker of one of `workers` workers that each send once per `period`. Offsetting each by
/// its share of the period spreads the requests out: without it every worker fires at the same
/// instant and a "fixed rate" is really a burst of `workers` requests once per period, which
/// queues up in front of whatever is measured.
pub fn ticker(start: Instant, worker: usize, workers: usize, period: Duration) -> Interval {
    let mut tick = tokio::time::interval_at(start + offset(worker, workers, period), period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_spread_evenly_over_the_period() {
        let period = Duration::from_millis(100);
        let offsets: Vec<Duration> = (0..4).map(|w| offset(w, 4, period)).collect();
        assert_eq!(offsets, [0, 25, 50, 75].map(Duration::from_millis).to_vec());
    }
}
