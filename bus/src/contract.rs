//! What every back end promises (see the crate's documentation): the message and delivery
//! types, the errors, the [`Bus`] trait and the rule for stage names.

use std::future::Future;
use std::sync::Arc;
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

    pub(crate) fn size(&self) -> u64 {
        (self.id.len() + self.payload.len()) as u64
    }
}

/// A fetched message; acknowledge it with [`Bus::ack`] once it is handled.
#[derive(Debug)]
pub struct Delivery {
    pub message: Message,
    /// How many times it was delivered before (0 on the first delivery). A message the
    /// embedded bus recovers after a restart counts as delivered once: it may have been.
    pub redeliveries: u64,
    pub(crate) token: AckToken,
}

/// Fetched deliveries cut, in order, into groups whose payloads (each counted with
/// `per_message` bytes more, for a separator) stay within `max_bytes`; a single larger
/// message goes alone.
pub fn split_by_bytes(
    deliveries: Vec<Delivery>,
    max_bytes: usize,
    per_message: usize,
) -> std::collections::VecDeque<Vec<Delivery>> {
    let mut groups = std::collections::VecDeque::new();
    let mut current = Vec::new();
    let mut size = 0;
    for delivery in deliveries {
        let len = delivery.message.payload.len() + per_message;
        if !current.is_empty() && size + len > max_bytes {
            groups.push_back(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(delivery);
    }
    if !current.is_empty() {
        groups.push_back(current);
    }
    groups
}

/// How a back end finds a delivery again to settle it. Its parts are the back ends' own
/// types, erased here so that this contract does not depend on them (each back end takes its
/// own back with a downcast, and refuses another's).
pub(crate) enum AckToken {
    /// The embedded bus: its `Stage` and the message's sequence number.
    Embedded { stage: Arc<Erased>, seq: u64 },
    /// NATS: the JetStream message.
    Nats(Box<Erased>),
    /// NATS: a part of a packed message, settled with its other parts (its `Pack`).
    NatsPack(Arc<Erased>),
}

pub(crate) type Erased = dyn std::any::Any + Send + Sync;

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckToken::Embedded { seq, .. } => write!(f, "Embedded({seq})"),
            AckToken::Nats(_) => f.write_str("Nats"),
            AckToken::NatsPack(_) => f.write_str("NatsPack"),
        }
    }
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

    /// Takes the lease `name` for `holder` until `ttl` from now, or renews it when `holder`
    /// has it already: true while `holder` holds it, false while another holder's lease
    /// runs. Nodes that share a bus take turns with it at work two of them must not do at
    /// once (rewriting a tenant's archive). The embedded bus has one node: always true.
    fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, BusError>> + Send;

    /// Gives the lease `name` up, if `holder` has it.
    fn release(
        &self,
        name: &str,
        holder: &str,
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
