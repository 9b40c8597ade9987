//! The NATS JetStream bus: one stream per stage (work-queue retention: a message is removed
//! once acknowledged), a durable pull consumer per stage shared by every consumer process,
//! explicit acks with redelivery after the ack wait, and `Nats-Msg-Id` set to the message id
//! so a retried publish is stored once.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;

use super::{AckToken, Bus, BusError, Delivery, Message, check_stage};

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
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "sluice".into(),
            replicas: 1,
            max_bytes: 1 << 30,
            ack_wait: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// The JetStream bus; cheap to clone.
#[derive(Clone)]
pub struct NatsBus {
    config: NatsConfig,
    js: jetstream::Context,
    consumers: std::sync::Arc<
        tokio::sync::Mutex<std::collections::HashMap<String, consumer::PullConsumer>>,
    >,
    streams: std::sync::Arc<tokio::sync::Mutex<std::collections::HashSet<String>>>,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl NatsBus {
    pub async fn connect(config: NatsConfig) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("sluice-data-plane")
            .connect(&config.url)
            .await
            .map_err(|e| {
                BusError::Unavailable(format!("cannot connect to NATS at {}: {e}", config.url))
            })?;
        Ok(Self {
            config,
            js: jetstream::new(client),
            consumers: Default::default(),
            streams: Default::default(),
        })
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
            self.js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![self.subject(stage)],
                    retention: stream::RetentionPolicy::WorkQueue,
                    storage: stream::StorageType::File,
                    discard: stream::DiscardPolicy::New,
                    max_bytes: self.config.max_bytes,
                    num_replicas: self.config.replicas,
                    duplicate_window: self.config.duplicate_window,
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?;
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
        self.ensure_stream(stage).await?;
        let subject = self.subject(stage);
        let mut acks = Vec::with_capacity(messages.len());
        for message in messages {
            let publish = jetstream::message::PublishMessage::build()
                .payload(message.payload)
                .message_id(&message.id);
            acks.push(
                self.js
                    .send_publish(subject.clone(), publish)
                    .await
                    .map_err(unavailable)?,
            );
        }
        for ack in acks {
            ack.await.map_err(|e| {
                let text = e.to_string();
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
            })?;
        }
        Ok(())
    }

    async fn fetch(
        &self,
        stage: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        let consumer = self.consumer(stage).await?;
        let mut batch = consumer
            .fetch()
            .max_messages(max.max(1))
            .expires(wait.max(Duration::from_millis(10)))
            .messages()
            .await
            .map_err(unavailable)?;
        let mut deliveries = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(unavailable)?;
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let redeliveries = message
                .info()
                .map(|i| i.delivered.saturating_sub(1) as u64)
                .unwrap_or(0);
            deliveries.push(Delivery {
                message: Message {
                    id,
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
            AckToken::Nats(message) => message.double_ack().await.map_err(unavailable),
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
            let id = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            next = message.sequence + 1;
            found.push((
                message.sequence,
                Message {
                    id,
                    payload: message.payload,
                },
            ));
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
            AckToken::Nats(message) => message
                .ack_with(jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(unavailable),
            AckToken::Embedded { .. } => Err(BusError::Invalid(
                "an embedded delivery nacked on the NATS bus".into(),
            )),
        }
    }

    async fn keep_alive(&self, deliveries: &[Delivery]) -> Result<(), BusError> {
        for delivery in deliveries {
            match &delivery.token {
                AckToken::Nats(message) => message
                    .ack_with(jetstream::AckKind::Progress)
                    .await
                    .map_err(unavailable)?,
                AckToken::Embedded { .. } => {
                    return Err(BusError::Invalid(
                        "an embedded delivery kept alive on the NATS bus".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}
