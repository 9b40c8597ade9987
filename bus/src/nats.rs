//! The NATS JetStream bus: one stream per stage (work-queue retention: a message is removed
//! once acknowledged), a durable pull consumer per stage shared by every consumer process,
//! explicit acks with redelivery after the ack wait, and `Nats-Msg-Id` set to the message id
//! so a retried publish is stored once.
//!
//! On a *packed* stage (`raw` by default) one publish call is stored in one JetStream message
//! (split only to stay under the server's payload limit): a batch request costs the server one
//! store and one acknowledgement instead of one per event, and each pack is stored whole. Its
//! deliveries are settled together: the stored message is acknowledged once every part is,
//! and comes back whole if any part is given back or left unsettled. The processor settles a
//! fetched batch as one anyway. `depth` counts stored messages.
//!
//! Calls on a packed stage also share stored messages under load: a few packs may await the
//! server's acknowledgement at once ([`NatsConfig::packs_in_flight`]), and the calls that
//! arrive meanwhile are stored together in the next one. A call alone is sent at once, as
//! itself; a call is never split across packs unless it is larger than one. The server
//! deduplicates a pack by its id, derived from its messages' ids: a retried call is stored
//! once only if it ends up in a pack of the same messages (alone both times, say).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::contract::{AckToken, Bus, BusError, Delivery, Erased, Message, check_stage};

/// This bus's message behind a delivery's token.
fn own_message(message: Box<Erased>) -> Result<Box<jetstream::Message>, BusError> {
    message
        .downcast::<jetstream::Message>()
        .map_err(|_| foreign())
}

fn own_pack(pack: Arc<Erased>) -> Result<Arc<Pack>, BusError> {
    pack.downcast::<Pack>().map_err(|_| foreign())
}

fn foreign() -> BusError {
    BusError::Invalid("a delivery of another bus settled on the NATS bus".into())
}

/// Header of a packed message: how many messages it holds.
const PACK_HEADER: &str = "Sluice-Pack";
/// Largest packed payload, bytes: half of the server's default `max_payload` (1 MiB); less
/// on a server that allows less (half of its `max_payload`).
const PACK_BYTES: usize = 512 * 1024;
/// The server's default `max_payload`, bytes: the least a fetch's byte budget may be, so any
/// one stored message fits.
pub const MIN_FETCH_BYTES: usize = 1024 * 1024;
/// The default byte budget of one fetch of a packed stage (4 MiB).
pub const DEFAULT_FETCH_BYTES: usize = 4 * 1024 * 1024;
/// The default bytes a stage's stream holds (1 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// The most replicas a JetStream stream can have.
pub const MAX_REPLICAS: usize = 5;
/// The default of [`NatsConfig::packs_in_flight`].
pub const DEFAULT_PACKS_IN_FLIGHT: usize = 4;
/// The most [`NatsConfig::packs_in_flight`] may be.
pub const MAX_PACKS_IN_FLIGHT: usize = 1024;
/// How long after its expiry a fetch still waits for what the server sent before it. The
/// client library itself waits 5 s for the server's closing status, which a NATS 2.9 server
/// does not always send: the consumer would sit on the messages it has for those 5 s.
const FETCH_GRACE: Duration = Duration::from_millis(200);
/// Publish calls waiting for a pack, per stage, before callers wait to hand theirs over.
const PACK_QUEUE: usize = 4096;
/// How long a publish may take before it is reported unavailable. async-nats bounds the wait
/// for the server's acknowledgement (5 s), not the send: after a cluster lost its stream
/// leader, sends were seen waiting over 30 s, and the receiver's requests with them.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the NATS bus.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:4222`.
    pub url: String,
    /// Prefix of stream and subject names, so several installations can share a server.
    /// Default: `sluice`.
    pub prefix: String,
    /// Replicas per stream (3 on a cluster). Default: 1.
    pub replicas: usize,
    /// Bytes a stage's stream may hold before publishes are refused. Default: 1 GiB.
    pub max_bytes: i64,
    /// A fetched message not acknowledged within this time is delivered again. Default: 30 s.
    pub ack_wait: Duration,
    /// How long a message id is remembered for deduplication. Default: 2 minutes.
    pub duplicate_window: Duration,
    /// Stages whose publish calls are stored packed: a call's messages in one JetStream
    /// message, with the calls that arrive with it. Default: `raw`.
    pub packed_stages: Vec<String>,
    /// Most bytes one fetch of a packed stage returns: a fetch's `max` counts stored
    /// messages, and a pack can hold thousands of events, so this keeps a consumer's batch
    /// bounded. At least [`MIN_FETCH_BYTES`]. Default: 4 MiB.
    pub packed_fetch_bytes: usize,
    /// Packed publishes to one stage that may await the server's acknowledgement at once.
    /// Calls arriving while that many are in flight are stored together as one message, so
    /// under load the server stores and acknowledges one message per group of concurrent
    /// calls rather than one per call; 0 stores every call as its own message (so a retried
    /// call within the duplicate window is always stored once, not only when it and the
    /// first were both stored alone). At most [`MAX_PACKS_IN_FLIGHT`]. Default: 4.
    pub packs_in_flight: usize,
}

/// The stage packed by default: the receiver's `raw` stage, where most messages pass (the
/// bus knows stages only by name; the pipeline crate owns the list).
pub const PACKED_BY_DEFAULT: &str = "raw";

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "sluice".into(),
            replicas: 1,
            max_bytes: DEFAULT_MAX_BYTES as i64,
            ack_wait: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
            packed_stages: vec![PACKED_BY_DEFAULT.to_owned()],
            packed_fetch_bytes: DEFAULT_FETCH_BYTES,
            packs_in_flight: DEFAULT_PACKS_IN_FLIGHT,
        }
    }
}

/// The JetStream bus; cheap to clone.
#[derive(Clone)]
pub struct NatsBus {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    consumers: std::sync::Arc<
        tokio::sync::Mutex<std::collections::HashMap<String, consumer::PullConsumer>>,
    >,
    streams: std::sync::Arc<tokio::sync::Mutex<std::collections::HashSet<String>>>,
    /// Largest packed payload on this server, bytes (see [`PACK_BYTES`]).
    pack_bytes: usize,
    /// Per packed stage, the task that gathers concurrent calls into packs.
    packers: Arc<std::sync::Mutex<std::collections::HashMap<String, mpsc::Sender<PackRequest>>>>,
    leases: Arc<crate::lease::Leases>,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl NatsBus {
    pub async fn connect(config: NatsConfig) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("sluice-data-plane")
            // A cluster's servers, comma-separated: any one of them up lets the node start.
            .connect(config.url.split(',').map(str::trim).collect::<Vec<_>>())
            .await
            .map_err(|e| {
                BusError::Unavailable(format!("cannot connect to NATS at {}: {e}", config.url))
            })?;
        // A single server refuses to create a replicated stream but accepts an update of an
        // existing one to several replicas and reports it, which would hide the mistake.
        if config.replicas > 1 && client.server_info().cluster.is_none() {
            return Err(BusError::Invalid(format!(
                "{} replicas need a NATS cluster; the server at {} is not in one",
                config.replicas, config.url
            )));
        }
        let pack_bytes = PACK_BYTES.min(client.server_info().max_payload / 2);
        let js = jetstream::new(client.clone());
        Ok(Self {
            leases: Arc::new(crate::lease::Leases::new(
                js.clone(),
                &config.prefix,
                config.replicas,
            )),
            config,
            pack_bytes,
            js,
            client,
            consumers: Default::default(),
            streams: Default::default(),
            packers: Default::default(),
        })
    }

    /// An error while the client is between connections. A fetch then would not fail: it
    /// would wait out its expiry and come back empty, and a role that cannot read its stage
    /// would look idle instead of cut off.
    fn connected(&self) -> Result<(), BusError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(BusError::Unavailable(format!(
                "not connected to the NATS server ({state})"
            ))),
        }
    }

    fn stream_name(&self, stage: &str) -> String {
        format!("{}_{}", self.config.prefix, stage)
            .to_uppercase()
            .replace(['.', '-'], "_")
    }

    fn subject(&self, stage: &str) -> String {
        format!("{}.bus.{stage}", self.config.prefix)
    }

    async fn ensure_stream(&self, stage: &str) -> Result<String, BusError> {
        check_stage(stage)?;
        let name = self.stream_name(stage);
        let mut known = self.streams.lock().await;
        if !known.contains(&name) {
            let wanted = stream::Config {
                name: name.clone(),
                subjects: vec![self.subject(stage)],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::New,
                max_bytes: self.config.max_bytes,
                num_replicas: self.config.replicas,
                duplicate_window: self.config.duplicate_window,
                ..Default::default()
            };
            let existing = self
                .js
                .get_or_create_stream(wanted.clone())
                .await
                .map_err(|e| {
                    BusError::Unavailable(format!("cannot create the NATS stream {name}: {e}"))
                })?;
            // A stream made by an earlier start keeps its settings; the operator's current
            // ones are applied to it, so changing a limit does not need a manual step.
            let have = &existing.cached_info().config;
            if let Some(changed) = limits_changed(have, &wanted) {
                self.js.update_stream(&wanted).await.map_err(|e| {
                    BusError::Unavailable(format!(
                        "cannot change {changed} of the NATS stream {name}: {e}"
                    ))
                })?;
                tracing::info!(
                    stream = %name,
                    changed,
                    max_bytes = wanted.max_bytes,
                    replicas = wanted.num_replicas,
                    "updated nats stream settings"
                );
            }
            known.insert(name.clone());
        }
        Ok(name)
    }

    async fn consumer(&self, stage: &str) -> Result<consumer::PullConsumer, BusError> {
        let name = self.ensure_stream(stage).await?;
        let mut consumers = self.consumers.lock().await;
        if let Some(consumer) = consumers.get(stage) {
            return Ok(consumer.clone());
        }
        let durable = "workers".to_owned();
        let stream = self.js.get_stream(&name).await.map_err(unavailable)?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(unavailable)?;
        consumers.insert(stage.to_owned(), consumer.clone());
        Ok(consumer)
    }

    fn is_packed(&self, stage: &str) -> bool {
        self.config.packed_stages.iter().any(|s| s == stage)
    }

    /// Hands a call to its stage's packer and waits until the pack holding it is stored.
    async fn publish_in_pack(
        &self,
        stage: &str,
        messages: Vec<Message>,
        bytes: usize,
    ) -> Result<(), BusError> {
        let stopped = || BusError::Unavailable(format!("the publisher of stage {stage} stopped"));
        let (reply, stored) = oneshot::channel();
        self.packer(stage)
            .send(PackRequest {
                messages,
                bytes,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        tokio::time::timeout(PUBLISH_TIMEOUT, stored)
            .await
            .map_err(|_| publish_timed_out(stage))?
            .map_err(|_| stopped())?
            .map_err(|text| publish_error(stage, text))
    }

    /// The stage's packer, started on first use (again if it ever stopped).
    fn packer(&self, stage: &str) -> mpsc::Sender<PackRequest> {
        let mut packers = self.packers.lock().unwrap_or_else(|p| p.into_inner());
        match packers.get(stage) {
            Some(packer) if !packer.is_closed() => return packer.clone(),
            Some(_) => tracing::warn!(stage, "restarting the nats publisher of a stage"),
            None => {}
        }
        let (packer, requests) = mpsc::channel(PACK_QUEUE);
        tokio::spawn(run_packer(
            self.js.clone(),
            self.subject(stage),
            requests,
            self.config.packs_in_flight.clamp(1, MAX_PACKS_IN_FLIGHT),
            self.pack_bytes,
        ));
        packers.insert(stage.to_owned(), packer.clone());
        packer
    }

    /// Deletes the streams of these stages (tests clean up with it).
    pub async fn delete_stages(&self, stages: &[&str]) -> Result<(), BusError> {
        for stage in stages {
            let _ = self.js.delete_stream(self.stream_name(stage)).await;
        }
        Ok(())
    }
}

impl Bus for NatsBus {
    async fn publish(&self, stage: &str, messages: Vec<Message>) -> Result<(), BusError> {
        if messages.is_empty() {
            return Ok(());
        }
        // A message id travels as a header value, which cannot hold a line break (and the
        // client library would panic on one, in the packer every caller shares).
        if let Some(bad) = messages.iter().find(|m| m.id.contains(['\r', '\n'])) {
            return Err(BusError::Invalid(format!(
                "message id {:?} contains a line break",
                bad.id
            )));
        }
        self.ensure_stream(stage).await?;
        let subject = self.subject(stage);
        let stored = if self.is_packed(stage) {
            let bytes = packed_bytes(&messages);
            if self.config.packs_in_flight > 0 && bytes <= self.pack_bytes {
                return self.publish_in_pack(stage, messages, bytes).await;
            }
            packs(messages, self.pack_bytes)
        } else {
            messages.into_iter().map(Stored::plain).collect()
        };
        let publish_all = async {
            let mut acks = Vec::with_capacity(stored.len());
            for stored in stored {
                let publish = stored.publish();
                acks.push(
                    self.js
                        .send_publish(subject.clone(), publish)
                        .await
                        .map_err(unavailable)?,
                );
            }
            for ack in acks {
                ack.await.map_err(|e| publish_error(stage, e.to_string()))?;
            }
            Ok(())
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, publish_all)
            .await
            .unwrap_or_else(|_| Err(publish_timed_out(stage)))
    }

    async fn open_consumer(&self, stage: &str) -> Result<(), BusError> {
        self.connected()?;
        self.consumer(stage).await.map(|_| ())
    }

    async fn fetch(
        &self,
        stage: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        self.connected()?;
        let consumer = self.consumer(stage).await?;
        let expires = wait.max(Duration::from_millis(10));
        let deadline = tokio::time::Instant::now() + expires + FETCH_GRACE;
        let mut fetch = consumer.fetch().max_messages(max.max(1)).expires(expires);
        if self.is_packed(stage) {
            fetch = fetch.max_bytes(self.config.packed_fetch_bytes.max(MIN_FETCH_BYTES));
        }
        let mut batch = fetch.messages().await.map_err(unavailable)?;
        let mut deliveries = Vec::new();
        // The server delivers nothing for this request after its expiry, so past the deadline
        // the batch is whole even if its closing status never came.
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, batch.next()).await {
            let message = match message {
                Ok(message) => message,
                // The server ends a fetch that reached its byte budget with a 409: what came
                // before it is the batch.
                Err(e) if !deliveries.is_empty() && e.to_string().contains("Exceeds MaxBytes") => {
                    break;
                }
                Err(e) => return Err(unavailable(e)),
            };
            let redeliveries = message
                .info()
                .map(|i| i.delivered.saturating_sub(1) as u64)
                .unwrap_or(0);
            if let Some(parts) = unpack(pack_header(message.headers.as_ref()), &message.payload) {
                let pack = Arc::new(Pack {
                    unsettled: AtomicUsize::new(parts.len()),
                    given_back: std::sync::Mutex::new(None),
                    message,
                });
                deliveries.extend(parts.into_iter().map(|message| Delivery {
                    message,
                    redeliveries,
                    token: AckToken::NatsPack(pack.clone()),
                }));
                continue;
            }
            deliveries.push(Delivery {
                message: Message {
                    id: message_id(message.headers.as_ref()),
                    payload: message.payload.clone(),
                },
                redeliveries,
                token: AckToken::Nats(Box::new(message)),
            });
        }
        Ok(deliveries)
    }

    async fn ack(&self, delivery: Delivery) -> Result<(), BusError> {
        match delivery.token {
            // The double ack waits for the server's confirmation: once it returns, the
            // message will not be delivered again.
            AckToken::Nats(message) => own_message(message)?
                .double_ack()
                .await
                .map_err(unavailable),
            AckToken::NatsPack(pack) => own_pack(pack)?.settle(None).await,
            AckToken::Embedded { .. } => Err(BusError::Invalid(
                "an embedded delivery acked on the NATS bus".into(),
            )),
        }
    }

    async fn depth(&self, stage: &str) -> Result<u64, BusError> {
        let name = self.ensure_stream(stage).await?;
        let stream = self.js.get_stream(&name).await.map_err(unavailable)?;
        let info = stream.get_info().await.map_err(unavailable)?;
        Ok(info.state.messages)
    }

    async fn browse(
        &self,
        stage: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, BusError> {
        let name = self.ensure_stream(stage).await?;
        let stream = self.js.get_stream(&name).await.map_err(unavailable)?;
        let subject = self.subject(stage);
        let mut found = Vec::new();
        let mut next = cursor + 1;
        while found.len() < limit {
            let message = match stream
                .get_first_raw_message_by_subject(&subject, next)
                .await
            {
                Ok(message) => message,
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                    break;
                }
                Err(e) => return Err(unavailable(e)),
            };
            next = message.sequence + 1;
            // A packed message is browsed as its parts, each with the message's cursor.
            match unpack(pack_header(Some(&message.headers)), &message.payload) {
                Some(parts) => found.extend(parts.into_iter().map(|m| (message.sequence, m))),
                None => found.push((
                    message.sequence,
                    Message {
                        id: message_id(Some(&message.headers)),
                        payload: message.payload,
                    },
                )),
            }
        }
        Ok(found)
    }

    async fn remove(&self, stage: &str, cursors: &[u64]) -> Result<u64, BusError> {
        let name = self.ensure_stream(stage).await?;
        let stream = self.js.get_stream(&name).await.map_err(unavailable)?;
        let mut removed = 0;
        for seq in cursors {
            if stream.delete_message(*seq).await.unwrap_or(false) {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn ack_all(&self, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        // One round trip each, but all in flight at once.
        futures_util::future::try_join_all(deliveries.into_iter().map(|d| self.ack(d)))
            .await
            .map(|_| ())
    }

    async fn nack(&self, delivery: Delivery, delay: Duration) -> Result<(), BusError> {
        match delivery.token {
            AckToken::Nats(message) => own_message(message)?
                .ack_with(jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(unavailable),
            AckToken::NatsPack(pack) => own_pack(pack)?.settle(Some(delay)).await,
            AckToken::Embedded { .. } => Err(BusError::Invalid(
                "an embedded delivery nacked on the NATS bus".into(),
            )),
        }
    }

    async fn keep_alive(&self, deliveries: &[Delivery]) -> Result<(), BusError> {
        let mut last_pack: Option<&Pack> = None;
        for delivery in deliveries {
            match &delivery.token {
                AckToken::Nats(message) => message
                    .downcast_ref::<jetstream::Message>()
                    .ok_or_else(foreign)?
                    .ack_with(jetstream::AckKind::Progress)
                    .await
                    .map_err(unavailable)?,
                // Parts of one pack arrive together: one progress report covers them.
                AckToken::NatsPack(pack) => {
                    let pack = pack.downcast_ref::<Pack>().ok_or_else(foreign)?;
                    if last_pack.is_none_or(|last| !std::ptr::eq(last, pack)) {
                        pack.message
                            .ack_with(jetstream::AckKind::Progress)
                            .await
                            .map_err(unavailable)?;
                        last_pack = Some(pack);
                    }
                }
                AckToken::Embedded { .. } => {
                    return Err(BusError::Invalid(
                        "an embedded delivery kept alive on the NATS bus".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        self.leases.lease(name, holder, ttl).await
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), BusError> {
        self.leases.release(name, holder).await
    }
}

/// The names of the settings an existing stream holds differently from `wanted`, if any.
fn limits_changed(have: &stream::Config, wanted: &stream::Config) -> Option<String> {
    let mut changed = Vec::new();
    if have.max_bytes != wanted.max_bytes {
        changed.push("max_bytes");
    }
    if have.num_replicas != wanted.num_replicas {
        changed.push("replicas");
    }
    if have.duplicate_window != wanted.duplicate_window {
        changed.push("duplicate_window");
    }
    (!changed.is_empty()).then(|| changed.join(", "))
}

fn publish_timed_out(stage: &str) -> BusError {
    BusError::Unavailable(format!(
        "publishing to stage {stage} took over {} s",
        PUBLISH_TIMEOUT.as_secs()
    ))
}

/// What a refused publish means for its caller: a full stream asks producers to back off.
fn publish_error(stage: &str, text: String) -> BusError {
    if text.contains("maximum bytes")
        || text.contains("maximum messages")
        || text.contains("resource limits")
    {
        BusError::Full {
            stage: stage.to_owned(),
            retry_after: Duration::from_secs(1),
        }
    } else {
        BusError::Unavailable(text)
    }
}

/// A publish call waiting for its pack; told the server's refusal, if any.
struct PackRequest {
    messages: Vec<Message>,
    bytes: usize,
    reply: oneshot::Sender<Result<(), String>>,
}

/// The bytes `messages` take in a pack.
fn packed_bytes(messages: &[Message]) -> usize {
    messages.iter().map(|m| 8 + m.size() as usize).sum()
}

/// Gathers one stage's publish calls into packs: whatever waits when a pack may be sent goes
/// in it (up to `pack_bytes`, whole calls only), with at most `in_flight` packs awaiting the
/// server's acknowledgement. Every caller of a pack is told its one outcome.
async fn run_packer(
    js: jetstream::Context,
    subject: String,
    mut requests: mpsc::Receiver<PackRequest>,
    in_flight: usize,
    pack_bytes: usize,
) {
    let mut awaiting = FuturesUnordered::new();
    let mut carried: Option<PackRequest> = None;
    loop {
        while awaiting.len() >= in_flight {
            awaiting.next().await;
        }
        let first = match carried.take() {
            Some(request) => request,
            None => tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
                Some(()) = awaiting.next(), if !awaiting.is_empty() => continue,
            },
        };
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while let Ok(next) = requests.try_recv() {
            if bytes + next.bytes > pack_bytes {
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            group.push(next);
        }
        let mut messages = Vec::with_capacity(group.iter().map(|r| r.messages.len()).sum());
        let mut replies = Vec::with_capacity(group.len());
        for request in group {
            messages.extend(request.messages);
            replies.push(request.reply);
        }
        let sent = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            js.send_publish(subject.clone(), pack(messages).publish()),
        )
        .await;
        awaiting.push(async move {
            let outcome = match sent {
                Ok(Ok(ack)) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out sending the pack to NATS".to_owned()),
            };
            for reply in replies {
                // A caller that went away (its client hung up) needs no answer.
                let _ = reply.send(outcome.clone());
            }
        });
    }
    while awaiting.next().await.is_some() {}
}

/// A stored message's `Nats-Msg-Id`.
fn message_id(headers: Option<&async_nats::HeaderMap>) -> String {
    headers
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// A packed message's count of parts, from its headers.
fn pack_header(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers.and_then(|h| h.get(PACK_HEADER)).map(|v| v.as_str())
}

/// One JetStream message to store.
#[derive(Debug)]
struct Stored {
    id: String,
    /// How many messages it packs; `None` for a plain message.
    packed: Option<usize>,
    payload: Bytes,
}

impl Stored {
    fn plain(message: Message) -> Self {
        Self {
            id: message.id,
            packed: None,
            payload: message.payload,
        }
    }

    fn publish(self) -> jetstream::message::PublishMessage {
        let mut publish = jetstream::message::PublishMessage::build().payload(self.payload);
        if let Some(count) = self.packed {
            publish = publish.header(PACK_HEADER, count.to_string().as_str());
        }
        publish.message_id(self.id)
    }
}

/// The JetStream messages `messages` become on a packed stage: as few as fit under
/// `pack_bytes`. A lone message is stored as itself; a pack's id is derived from its
/// messages' ids, so the same messages packed again are deduplicated like a retried message.
fn packs(messages: Vec<Message>, pack_bytes: usize) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut group: Vec<Message> = Vec::new();
    let mut bytes = 0;
    for message in messages {
        let size = packed_bytes(std::slice::from_ref(&message));
        if !group.is_empty() && bytes + size > pack_bytes {
            out.push(pack(std::mem::take(&mut group)));
            bytes = 0;
        }
        bytes += size;
        group.push(message);
    }
    if !group.is_empty() {
        out.push(pack(group));
    }
    out
}

fn pack(mut group: Vec<Message>) -> Stored {
    if group.len() == 1 {
        return Stored::plain(group.remove(0));
    }
    let mut ids = Sha256::new();
    let mut payload = BytesMut::with_capacity(packed_bytes(&group));
    for message in &group {
        ids.update(message.id.as_bytes());
        ids.update([0]);
        payload.put_u32(message.id.len() as u32);
        payload.put_slice(message.id.as_bytes());
        payload.put_u32(message.payload.len() as u32);
        payload.put_slice(&message.payload);
    }
    let digest: String = ids.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Stored {
        id: format!("pack-{}-{}-{digest}", group.len(), group[0].id),
        packed: Some(group.len()),
        payload: payload.freeze(),
    }
}

/// The parts of a packed message, or `None` when it is not one (or not a well-formed one,
/// which is then delivered as it is).
fn unpack(count: Option<&str>, payload: &Bytes) -> Option<Vec<Message>> {
    let count: usize = count?.parse().ok()?;
    let mut parts = Vec::with_capacity(count.min(100_000));
    let mut rest = payload.clone();
    let take = |rest: &mut Bytes| -> Option<Bytes> {
        if rest.remaining() < 4 {
            return None;
        }
        let len = rest.get_u32() as usize;
        (rest.remaining() >= len).then(|| rest.split_to(len))
    };
    while rest.has_remaining() {
        let Some(id) = take(&mut rest).and_then(|id| String::from_utf8(id.to_vec()).ok()) else {
            break;
        };
        let Some(payload) = take(&mut rest) else {
            break;
        };
        parts.push(Message { id, payload });
    }
    // An empty pack would never be settled, so it is not one.
    if parts.is_empty() || parts.len() != count || rest.has_remaining() {
        tracing::error!(
            count,
            parts = parts.len(),
            "a packed bus message that does not hold what it says; delivering it as it is"
        );
        return None;
    }
    Some(parts)
}

/// One stored message holding several deliveries, settled once all of them are.
#[derive(Debug)]
pub(super) struct Pack {
    message: jetstream::Message,
    unsettled: AtomicUsize,
    /// The longest delay a part was given back with, if any was.
    given_back: std::sync::Mutex<Option<Duration>>,
}

impl Pack {
    async fn settle(&self, give_back: Option<Duration>) -> Result<(), BusError> {
        if let Some(delay) = give_back {
            let mut given_back = self.given_back.lock().unwrap_or_else(|p| p.into_inner());
            *given_back = Some(given_back.map_or(delay, |d| d.max(delay)));
        }
        if self.unsettled.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        let given_back = *self.given_back.lock().unwrap_or_else(|p| p.into_inner());
        match given_back {
            // The double ack waits for the server's confirmation, as for a single message.
            None => self.message.double_ack().await.map_err(unavailable),
            Some(delay) => self
                .message
                .ack_with(jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(unavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(stored: &Stored) -> Option<Vec<Message>> {
        let count = stored.packed.map(|n| n.to_string());
        unpack(count.as_deref(), &stored.payload)
    }

    #[test]
    fn a_pack_holds_its_messages_and_is_named_by_them() {
        let messages: Vec<Message> = (0..3)
            .map(|i| Message::new(format!("e-{i}"), format!("payload {i}")))
            .collect();
        let built = packs(messages.clone(), PACK_BYTES);
        assert_eq!(built.len(), 1);
        assert_eq!(built[0].packed, Some(3));
        assert_eq!(parts(&built[0]), Some(messages.clone()));
        let again = packs(messages.clone(), PACK_BYTES);
        assert_eq!(built[0].id, again[0].id, "a retried call has the same id");
        assert!(built[0].id.starts_with("pack-3-e-0-"), "{}", built[0].id);
        let other = packs(
            vec![
                messages[0].clone(),
                messages[2].clone(),
                messages[1].clone(),
            ],
            PACK_BYTES,
        );
        assert_ne!(built[0].id, other[0].id, "other messages, another id");
    }

    #[test]
    fn lone_messages_stay_themselves_and_large_calls_are_split() {
        let lone = packs(vec![Message::new("only", "x")], PACK_BYTES);
        assert_eq!(lone[0].id, "only");
        assert_eq!(lone[0].packed, None);
        let big: Vec<Message> = (0..5)
            .map(|i| Message::new(format!("b-{i}"), vec![b'x'; 200 * 1024]))
            .collect();
        let built = packs(big.clone(), PACK_BYTES);
        assert_eq!(
            built.len(),
            3,
            "two per pack under the limit, then the last alone"
        );
        assert!(built.iter().all(|s| s.payload.len() <= PACK_BYTES));
        let back: Vec<Message> = built
            .iter()
            .flat_map(|s| {
                parts(s).unwrap_or_else(|| vec![Message::new(s.id.clone(), s.payload.clone())])
            })
            .collect();
        assert_eq!(back, big);
    }

    #[test]
    fn a_malformed_pack_is_delivered_as_it_is() {
        for payload in [
            &b"\0\0\0\x05ab"[..],
            b"",
            b"\0\0\0\x01a\0\0\0\x01b",
            b"\0\0\0\x01a\0\0\0\x01b\0\0\0\x01c\0\0\0\x01dz",
        ] {
            assert!(unpack(Some("2"), &Bytes::copy_from_slice(payload)).is_none());
        }
        assert!(unpack(Some("many"), &Bytes::new()).is_none());
        assert!(
            unpack(Some("0"), &Bytes::new()).is_none(),
            "nothing to settle"
        );
        assert!(unpack(None, &Bytes::from_static(b"\0\0\0\x01a\0\0\0\x01b")).is_none());
    }
}
