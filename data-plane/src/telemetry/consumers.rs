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
}
