//! What delivery does with a batch after one attempt, given the destination kind's verdict:
//! pure, so every rule is a row of a table test.

use sluice_pipeline::destinations::Verdict;

/// The next step for a whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStep {
    /// Delivered: acknowledge every event.
    Ack,
    /// Refused, with more than one event in it: try each half on its own, to find the
    /// events that were refused without dead-lettering the rest.
    Split,
    /// Decide per event ([`event_step`]).
    PerEvent,
}

/// The next step for one event of a batch that was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStep {
    /// Back on its stage, to be tried again after the retry delay.
    Retry,
    /// Into the destination's dead-letter queue.
    DeadLetter,
}

pub fn batch_step(verdict: &Verdict, events: usize) -> BatchStep {
    match verdict {
        Verdict::Delivered => BatchStep::Ack,
        Verdict::DeadLetter { .. } if events > 1 => BatchStep::Split,
        Verdict::DeadLetter { .. } | Verdict::Retry { .. } => BatchStep::PerEvent,
    }
}

/// For an event that has now failed `attempts` times (this one included), out of the
/// destination's `max_attempts`.
pub fn event_step(verdict: &Verdict, attempts: u32, max_attempts: u32) -> EventStep {
    match verdict {
        Verdict::Retry { .. } if attempts < max_attempts => EventStep::Retry,
        _ => EventStep::DeadLetter,
    }
}

/// The two halves of a batch to split; the first gets the smaller half of an odd count.
pub fn halves<T>(mut batch: Vec<T>) -> (Vec<T>, Vec<T>) {
    let second = batch.split_off(batch.len() / 2);
    (batch, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> Verdict {
        Verdict::Retry {
            error: "HTTP 503".into(),
            retry_after: None,
        }
    }

    fn refused() -> Verdict {
        Verdict::DeadLetter {
            error: "refused with HTTP 400".into(),
        }
    }

    #[test]
    fn batch_steps() {
        let cases = [
            (Verdict::Delivered, 1, BatchStep::Ack),
            (Verdict::Delivered, 100, BatchStep::Ack),
            (retry(), 1, BatchStep::PerEvent),
            // A retryable failure is the whole request's: retried together, never split.
            (retry(), 100, BatchStep::PerEvent),
            (refused(), 1, BatchStep::PerEvent),
            (refused(), 2, BatchStep::Split),
            (refused(), 100, BatchStep::Split),
        ];
        for (verdict, events, want) in cases {
            assert_eq!(batch_step(&verdict, events), want, "{verdict:?} x{events}");
        }
    }

    #[test]
    fn event_steps() {
        let cases = [
            (retry(), 1, 5, EventStep::Retry),
            (retry(), 4, 5, EventStep::Retry),
            (retry(), 5, 5, EventStep::DeadLetter),
            // Redelivered past the limit (an ack wait expired): never retried again.
            (retry(), 9, 5, EventStep::DeadLetter),
            (retry(), 1, 1, EventStep::DeadLetter),
            (refused(), 1, 5, EventStep::DeadLetter),
        ];
        for (verdict, attempts, max, want) in cases {
            assert_eq!(
                event_step(&verdict, attempts, max),
                want,
                "{verdict:?} after {attempts} of {max}"
            );
        }
    }

    #[test]
    fn splitting_halves_until_single_events() {
        let cases: [(usize, usize, usize); 5] = [
            (2, 1, 1),
            (3, 1, 2),
            (4, 2, 2),
            (100, 50, 50),
            (101, 50, 51),
        ];
        for (n, first, second) in cases {
            let (a, b) = halves((0..n).collect::<Vec<_>>());
            assert_eq!((a.len(), b.len()), (first, second), "{n}");
            assert_eq!(
                a.into_iter().chain(b).collect::<Vec<_>>(),
                (0..n).collect::<Vec<_>>()
            );
        }
        // A refused batch of 8 with one bad event: at most 2·log2(8) more requests.
        let mut requests = 0;
        let mut work = std::collections::VecDeque::from([(0..8).collect::<Vec<_>>()]);
        let mut dead = Vec::new();
        while let Some(batch) = work.pop_front() {
            requests += 1;
            let verdict = if batch.contains(&5) {
                refused()
            } else {
                Verdict::Delivered
            };
            match batch_step(&verdict, batch.len()) {
                BatchStep::Ack => {}
                BatchStep::Split => {
                    let (a, b) = halves(batch);
                    work.push_front(b);
                    work.push_front(a);
                }
                BatchStep::PerEvent => dead.extend(batch),
            }
        }
        assert_eq!(dead, vec![5]);
        assert_eq!(requests, 7);
    }
}
