//! The bus between the data-plane roles: stages (`raw`, later `deliver.<destination>`,
//! `dlq.<destination>`, `archive`) that producers publish to and consumers fetch from with
//! explicit acknowledgement. One trait, two back ends that pass one test suite:
//! [`embedded::EmbeddedBus`] (a durable on-disk queue, the zero-setup default) and
//! [`nats::NatsBus`] (NATS JetStream, for several machines).
//!
//! Contract: `publish` returns only once every message of the call is durable, and a call is
//! one unit (a crash never keeps half of it on the embedded bus; on NATS a retried call is
//! deduplicated by message id). A fetched message is redelivered if it is not acknowledged
//! within the ack timeout. Consumers of one stage share its messages.
//!
//! On NATS, a packed stage (`raw`) stores a call as one message whose parts are settled
//! together: its consumers settle what they fetch as one batch, which the processor does.

pub mod embedded;
pub mod nats;

mod contract;
mod lease;

pub use contract::{Bus, BusError, Delivery, Message, check_stage, split_by_bytes};

use std::time::Duration;

/// The back end chosen at start-up: NATS when `NATS_URL` is set, else embedded.
#[derive(Clone)]
pub enum AnyBus {
    Embedded(embedded::EmbeddedBus),
    Nats(Box<nats::NatsBus>),
}

impl Bus for AnyBus {
    async fn publish(&self, stage: &str, messages: Vec<Message>) -> Result<(), BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.publish(stage, messages).await,
            AnyBus::Nats(bus) => bus.publish(stage, messages).await,
        }
    }

    async fn open_consumer(&self, stage: &str) -> Result<(), BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.open_consumer(stage).await,
            AnyBus::Nats(bus) => bus.open_consumer(stage).await,
        }
    }

    async fn fetch(
        &self,
        stage: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.fetch(stage, max, wait).await,
            AnyBus::Nats(bus) => bus.fetch(stage, max, wait).await,
        }
    }

    async fn ack(&self, delivery: Delivery) -> Result<(), BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.ack(delivery).await,
            AnyBus::Nats(bus) => bus.ack(delivery).await,
        }
    }

    async fn ack_all(&self, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.ack_all(deliveries).await,
            AnyBus::Nats(bus) => bus.ack_all(deliveries).await,
        }
    }

    async fn depth(&self, stage: &str) -> Result<u64, BusError> {
        match self {
            AnyBus::Embedded(bus) => Bus::depth(bus, stage).await,
            AnyBus::Nats(bus) => bus.depth(stage).await,
        }
    }

    async fn browse(
        &self,
        stage: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.browse(stage, cursor, limit).await,
            AnyBus::Nats(bus) => bus.browse(stage, cursor, limit).await,
        }
    }

    async fn remove(&self, stage: &str, cursors: &[u64]) -> Result<u64, BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.remove(stage, cursors).await,
            AnyBus::Nats(bus) => bus.remove(stage, cursors).await,
        }
    }

    async fn nack(&self, delivery: Delivery, delay: Duration) -> Result<(), BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.nack(delivery, delay).await,
            AnyBus::Nats(bus) => bus.nack(delivery, delay).await,
        }
    }

    async fn keep_alive(&self, deliveries: &[Delivery]) -> Result<(), BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.keep_alive(deliveries).await,
            AnyBus::Nats(bus) => bus.keep_alive(deliveries).await,
        }
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.lease(name, holder, ttl).await,
            AnyBus::Nats(bus) => bus.lease(name, holder, ttl).await,
        }
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), BusError> {
        match self {
            AnyBus::Embedded(bus) => bus.release(name, holder).await,
            AnyBus::Nats(bus) => bus.release(name, holder).await,
        }
    }
}
