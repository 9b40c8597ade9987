//! The bus stages this node's roles consume, and whether each is being read. `/health/ready`
//! and the metrics report them, so a role that cannot read its stage (the bus is unreachable,
//! its consumer cannot be created) makes the node unready instead of leaving it idle while it
//! answers that all is well.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sluice_bus::{AnyBus, Bus as _};

/// How a stage's consumer is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerState {
    /// Registered; its consumer does not exist yet.
    Starting,
    /// The last attempt to open or read the stage succeeded.
    Reading,
    /// The last attempt failed, with this error.
    Failing(String),
}

impl ConsumerState {
    pub fn is_reading(&self) -> bool {
        matches!(self, ConsumerState::Reading)
    }

    /// As `/health/ready` shows it.
    pub fn describe(&self) -> String {
        match self {
            ConsumerState::Starting => "starting".to_owned(),
            ConsumerState::Reading => "reading".to_owned(),
            ConsumerState::Failing(error) => format!("failing: {error}"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Consumers {
    stages: Mutex<BTreeMap<String, ConsumerState>>,
    /// Messages of each stage not yet acknowledged, as last sampled (see [`sample_pending`]).
    pending: Mutex<BTreeMap<String, u64>>,
}

/// How often [`sample_pending`] asks the bus for each stage's backlog.
pub const PENDING_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Samples the backlog of every stage this node consumes, every [`PENDING_SAMPLE_EVERY`], so
/// that `/metrics` can show consumer lag (`sluice_consumer_pending`) without a bus round trip
/// per scrape. Nodes of one role share each stage's consumer, so every one of them reports
/// the same backlog: alert on `max by (stage)`, not on a sum.
pub async fn sample_pending(
    consumers: &Consumers,
    bus: &AnyBus,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) {
    loop {
        for (stage, _) in consumers.snapshot() {
            match bus.depth(&stage).await {
                Ok(depth) => consumers.set_pending(&stage, depth),
                Err(e) => tracing::debug!(stage, error = %e, "cannot sample a stage's backlog"),
            }
        }
        tokio::select! {
            () = crate::shutdown::until_true(shutdown) => return,
            () = tokio::time::sleep(PENDING_SAMPLE_EVERY) => {}
        }
    }
}

impl Consumers {
    /// Registers `stage` as consumed by this node and opens its consumer, recording the
    /// outcome. The role's fetches keep the state current from then on (a failed open is
    /// retried by the first fetch, which opens the consumer too).
    pub async fn open(&self, bus: &AnyBus, stage: &str) {
        self.starting(stage);
        let opened = bus.open_consumer(stage).await;
        if let Err(e) = &opened {
            tracing::warn!(stage, error = %e, "cannot open a bus stage for reading; retrying");
        }
        self.outcome(stage, &opened);
    }

    fn stages(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ConsumerState>> {
        self.stages.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A role will consume `stage`; it counts against readiness from now on.
    pub fn starting(&self, stage: &str) {
        self.stages()
            .entry(stage.to_owned())
            .or_insert(ConsumerState::Starting);
    }

    /// The outcome of opening or reading `stage`. A stage no longer registered (its
    /// destination was removed while a worker finished its batch) stays unregistered.
    pub fn outcome<T, E: std::fmt::Display>(&self, stage: &str, result: &Result<T, E>) {
        if let Some(state) = self.stages().get_mut(stage) {
            *state = match result {
                Ok(_) => ConsumerState::Reading,
                Err(e) => ConsumerState::Failing(e.to_string()),
            };
        }
    }

    /// Nothing consumes `stage` any more.
    pub fn stopped(&self, stage: &str) {
        self.stages().remove(stage);
        self.pending_map().remove(stage);
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the backlog of `stage`, if it is still consumed here.
    pub fn set_pending(&self, stage: &str, messages: u64) {
        if self.stages().contains_key(stage) {
            self.pending_map().insert(stage.to_owned(), messages);
        }
    }

    /// The last sampled backlog of each consumed stage, by name.
    pub fn pending(&self) -> Vec<(String, u64)> {
        self.pending_map()
            .iter()
            .map(|(stage, n)| (stage.clone(), *n))
            .collect()
    }

    /// Every registered stage and its state, by name.
    pub fn snapshot(&self) -> Vec<(String, ConsumerState)> {
        self.stages()
            .iter()
            .map(|(stage, state)| (stage.clone(), state.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_reading_only_after_a_successful_outcome() {
        let consumers = Consumers::default();
        consumers.starting("raw");
        assert_eq!(
            consumers.snapshot(),
            [("raw".into(), ConsumerState::Starting)]
        );
        consumers.outcome("raw", &Err::<(), _>("connection refused"));
        assert_eq!(
            consumers.snapshot()[0].1,
            ConsumerState::Failing("connection refused".into())
        );
        consumers.outcome("raw", &Ok::<_, String>(()));
        assert!(consumers.snapshot()[0].1.is_reading());
        // Registering again (a second worker) keeps what is known.
        consumers.starting("raw");
        assert!(consumers.snapshot()[0].1.is_reading());
    }

    #[test]
    fn a_stopped_stage_is_not_brought_back_by_a_late_outcome() {
        let consumers = Consumers::default();
        consumers.starting("deliver.p.crm");
        consumers.stopped("deliver.p.crm");
        consumers.outcome("deliver.p.crm", &Ok::<_, String>(()));
        assert!(consumers.snapshot().is_empty());
    }

    #[test]
    fn a_backlog_is_kept_only_for_consumed_stages() {
        let consumers = Consumers::default();
        consumers.set_pending("raw", 7);
        assert!(consumers.pending().is_empty(), "raw is not consumed yet");
        consumers.starting("raw");
        consumers.set_pending("raw", 7);
        assert_eq!(consumers.pending(), [("raw".into(), 7)]);
        consumers.stopped("raw");
        assert!(consumers.pending().is_empty());
    }
}
