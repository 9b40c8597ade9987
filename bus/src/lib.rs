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

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

/// One message: an id (the event id, used for deduplication) and opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub payload: Bytes,
}

impl Message {
    pub fn new(id: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: id.into(),
            payload: payload.into(),
        }
    }

    fn size(&self) -> u64 {
        (self.id.len() + self.payload.len()) as u64
    }
}

/// A fetched message; acknowledge it with [`Bus::ack`] once it is handled.
#[derive(Debug)]
pub struct Delivery {
    pub message: Message,
    /// How many times it was delivered before (0 on the first delivery).
    pub redeliveries: u64,
    token: AckToken,
}

#[derive(Debug)]
enum AckToken {
    Embedded {
        stage: std::sync::Arc<embedded::Stage>,
        seq: u64,
    },
    Nats(Box<async_nats::jetstream::Message>),
    /// A part of a packed NATS message (see [`nats`]).
    NatsPack(std::sync::Arc<nats::Pack>),
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The stage holds as much as it may: producers should back off (HTTP 503).
    #[error("bus stage {stage} is full; retry after {retry_after:?}")]
    Full {
        stage: String,
        retry_after: Duration,
    },
    /// The back end cannot be reached or failed; retrying later may succeed.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The caller asked for something impossible (an invalid stage name, an oversized message).
    #[error("bus: {0}")]
    Invalid(String),
    #[error("bus storage: {0}")]
    Io(#[from] std::io::Error),
}

/// A bus back end.
pub trait Bus: Send + Sync + 'static {
    /// Stores `messages` on `stage` durably, all or none.
    fn publish(
        &self,
        stage: &str,
        messages: Vec<Message>,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Makes `stage` ready to be consumed — its durable consumer on NATS, its log on the
    /// embedded bus — so a role knows it can read the stage before anything arrives.
    fn open_consumer(&self, stage: &str) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Up to `max` messages of `stage`, waiting at most `wait` for the first.
    fn fetch(
        &self,
        stage: &str,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Delivery>, BusError>> + Send;

    /// Marks a delivery handled: it is never delivered again.
    fn ack(&self, delivery: Delivery) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Acknowledges many deliveries; back ends that can overlap the round trips do.
    fn ack_all(
        &self,
        deliveries: Vec<Delivery>,
    ) -> impl Future<Output = Result<(), BusError>> + Send {
        async move {
            for delivery in deliveries {
                self.ack(delivery).await?;
            }
            Ok(())
        }
    }

    /// Messages not yet acknowledged on `stage`.
    fn depth(&self, stage: &str) -> impl Future<Output = Result<u64, BusError>> + Send;

    /// Up to `limit` messages of `stage` after `cursor` (0: from the start), in order, with
    /// the cursor of each — without consuming them. For stages nobody consumes (dead-letter
    /// queues), read through an API.
    fn browse(
        &self,
        stage: &str,
        cursor: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(u64, Message)>, BusError>> + Send;

    /// Removes messages by the cursors [`Bus::browse`] gave; returns how many were there.
    fn remove(
        &self,
        stage: &str,
        cursors: &[u64],
    ) -> impl Future<Output = Result<u64, BusError>> + Send;

    /// Gives a delivery back unhandled: it is delivered again after `delay` (a retry with
    /// backoff), counting as a redelivery.
    fn nack(
        &self,
        delivery: Delivery,
        delay: Duration,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Says these deliveries are still being worked on: each is not redelivered until a full
    /// ack wait from now (the archiver holds events until their file exists).
    fn keep_alive(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// Stage names: `raw`, `archive`, `deliver.<name>`, `dlq.<name>`, …: lowercase letters,
/// digits, `-`, `_`, and dots between parts.
pub fn check_stage(stage: &str) -> Result<(), BusError> {
    let valid = !stage.is_empty()
        && stage.len() <= 200
        && stage.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(BusError::Invalid(format!("invalid stage name {stage:?}")))
    }
}

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
}
