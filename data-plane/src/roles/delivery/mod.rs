//! The delivery role: per destination, workers that take shaped payloads from its
//! `deliver.<pipeline>.<destination>` stage and send them, at least once.
//!
//! * Isolation: every destination has its own stage, its own workers (its `concurrency`) and
//!   its own rate limit, so one that is down or slow holds up only itself.
//! * The destination's kind reads each answer (`classify`: GA4 answers 2xx to a malformed
//!   hit, Meta reports errors in its JSON body). Retries what it calls transient (408, 429,
//!   5xx, timeouts and connection errors for most) with exponential backoff and full
//!   jitter, honouring `Retry-After`; the event waits on the bus in between. After the last
//!   attempt, or at once when refused for good, it goes to the destination's DLQ with the
//!   answer. A refused batch is split until the refused events are alone ([`decide`]).
//! * A supervisor starts and stops workers as destinations are added, changed or removed;
//!   a worker finishes the batch in hand first.

pub mod decide;
mod guard;
mod limiter;
mod oauth;
pub mod retry;
pub mod trial;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_bus::{AnyBus, Bus, Delivery, Message};
use sluice_pipeline::destinations::{Request, Resolved, Response, Verdict};
use sluice_pipeline::stages::{self, DlqEntry};
use sluice_pipeline::time::{now_ms, rfc3339};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::applied::AppliedConfig;
use crate::inspect::tap::{self, Detail, NewRecord, Outcome, Stage};
use crate::shutdown::until_true;
use crate::state::NodeState;
use crate::telemetry::counters::{Count, DestinationCounters};
use crate::telemetry::metrics;
use decide::{BatchStep, EventStep};
pub use guard::Guarded;
use limiter::RateLimiter;

/// How much of a destination's answer a DLQ entry (and the inspector) keeps, in bytes.
const MAX_RESPONSE: usize = crate::inspect::tap::MAX_RESPONSE;
/// How often DLQ depths are read for status and metrics.
const DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// A destination as its workers run it.
pub struct Destination {
    pub pipeline_id: String,
    /// The pipeline's name, a label of the destination's metrics.
    pipeline: String,
    pub name: String,
    /// The pipeline id and name as the inspector's records share them.
    tap_pipeline: Arc<str>,
    tap_name: Arc<str>,
    stage: String,
    dlq: String,
    resolved: Resolved,
    limiter: Option<RateLimiter>,
    counters: Arc<DestinationCounters>,
    sink: Sink,
}

/// Where a destination's batches go.
enum Sink {
    /// One HTTP request per batch, as the definition builds it.
    Http(oauth::Tokens),
    /// A warehouse the node writes to itself.
    Postgres(sluice_warehouse::Postgres),
}

impl Sink {
    fn of(resolved: &Resolved) -> Result<Self, String> {
        let Some(warehouse) = resolved.warehouse() else {
            return Ok(Self::Http(oauth::Tokens::default()));
        };
        let url = resolved
            .secret(&warehouse.connection)
            .ok_or("the warehouse's connection secret is not set")?;
        let setting = |key: &str| {
            resolved
                .setting(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        match warehouse.engine {
            sluice_proto::catalogue::Engine::Postgres => sluice_warehouse::Postgres::new(
                url,
                resolved
                    .setting("schema")
                    .and_then(|v| v.as_str())
                    .unwrap_or("public"),
                &setting(&warehouse.table),
            )
            .map(Self::Postgres)
            .map_err(|e| e.to_string()),
        }
    }
}

/// What one attempt at a batch came to.
struct Attempt {
    verdict: Verdict,
    /// The vendor's answer, when there was one.
    answer: Option<Answer>,
    /// The request as sent, when asked for (a test send shows it).
    request: Option<Request>,
}

impl Attempt {
    fn of(verdict: Verdict) -> Self {
        Self {
            verdict,
            answer: None,
            request: None,
        }
    }
}

impl Sink {
    /// Sends a batch of (bus id, payload) pairs once; `keep_request` keeps a copy of the
    /// request for the caller.
    async fn attempt(
        &self,
        resolved: &Resolved,
        http: &Guarded,
        items: &[(&str, &[u8])],
        keep_request: bool,
    ) -> Attempt {
        let tokens = match self {
            Sink::Postgres(warehouse) => return Attempt::of(write_rows(warehouse, items).await),
            Sink::Http(tokens) => tokens,
        };
        let token = if resolved.token_request().is_some() {
            match tokens.get(http, resolved).await {
                Ok(token) => Some(token),
                Err(error) => {
                    return Attempt::of(Verdict::Retry {
                        error,
                        retry_after: None,
                    });
                }
            }
        } else {
            None
        };
        let request = resolved.request(items, now_ms(), token.as_deref());
        let kept = keep_request.then(|| request.clone());
        let mut attempt = match post(http, request, resolved.spec.timeout()).await {
            // The node's policy refuses where this would go: retrying changes nothing.
            Err(SendFailure::Refused(error)) => Attempt::of(Verdict::DeadLetter { error }),
            Ok(answer) => {
                if answer.status == 401 && token.is_some() {
                    tokens.forget().await;
                }
                let response = Response {
                    status: answer.status,
                    retry_after: answer.retry_after,
                    body: &answer.body,
                };
                Attempt {
                    verdict: resolved.classify(&response, items.len()),
                    answer: Some(answer),
                    request: None,
                }
            }
            Err(SendFailure::Failed(error)) => Attempt::of(Verdict::Retry {
                error,
                retry_after: None,
            }),
        };
        attempt.request = kept;
        attempt
    }
}

struct Running {
    fingerprint: String,
    destination: Arc<Destination>,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

/// Starts the supervisor; it stops every worker when `shutdown` turns true. Fails when the
/// HTTP client cannot be built (its TLS roots cannot load): delivering without the timeouts
/// set here would hang on a vendor that stops answering.
pub fn start(
    node: Arc<NodeState>,
    bus: AnyBus,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, reqwest::Error> {
    let http = Guarded::new(node.config.policy.clone(), Some(Duration::from_secs(90)))?;
    Ok(tokio::spawn(supervise(node, bus, http, shutdown)))
}

async fn supervise(
    node: Arc<NodeState>,
    bus: AnyBus,
    http: Guarded,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut config = node.subscribe();
    let mut running: HashMap<(String, String), Running> = HashMap::new();
    let mut depths = tokio::time::interval(DEPTH_INTERVAL);
    let current = config.borrow_and_update().clone();
    reconcile(&node, &bus, &http, &mut running, current.as_deref()).await;
    loop {
        tokio::select! {
            () = until_true(&mut shutdown) => break,
            changed = config.changed() => {
                if changed.is_err() {
                    break;
                }
                let current = config.borrow_and_update().clone();
                reconcile(&node, &bus, &http, &mut running, current.as_deref()).await;
            }
            _ = depths.tick() => update_depths(&node, &bus, &running).await,
        }
    }
    for run in running.values() {
        let _ = run.stop.send(true);
    }
    for run in running.into_values() {
        for worker in run.workers {
            let _ = worker.await;
        }
    }
}

/// Makes the running workers match the configuration.
async fn reconcile(
    node: &Arc<NodeState>,
    bus: &AnyBus,
    http: &Guarded,
    running: &mut HashMap<(String, String), Running>,
    config: Option<&AppliedConfig>,
) {
    let mut wanted: HashMap<(String, String), (String, Destination)> = HashMap::new();
    for pipeline in config.map(|c| c.pipelines.as_slice()).unwrap_or_default() {
        for spec in &pipeline.spec.destinations {
            let resolved = match Resolved::new(spec.clone(), |name| node.secrets.resolve(name)) {
                Ok(resolved) => resolved,
                Err(e) => {
                    // The configuration was checked for this before it was applied.
                    tracing::error!(destination = %spec.name, error = %e, "cannot run a destination");
                    continue;
                }
            };
            let sink = match Sink::of(&resolved) {
                Ok(sink) => sink,
                Err(e) => {
                    tracing::error!(destination = %spec.name, error = %e, "cannot run a destination");
                    continue;
                }
            };
            let fingerprint = format!(
                "{}|{}",
                serde_json::to_string(spec).unwrap_or_default(),
                resolved.secret_fingerprint()
            );
            let destination = Destination {
                pipeline_id: pipeline.id.clone(),
                name: spec.name.clone(),
                tap_pipeline: Arc::from(pipeline.id.as_str()),
                tap_name: Arc::from(spec.name.as_str()),
                stage: stages::deliver(&pipeline.id, &spec.name),
                dlq: stages::dlq(&pipeline.id, &spec.name),
                // The vendor's documented limit, unless the destination sets its own.
                limiter: spec
                    .rate_limit
                    .as_ref()
                    .or(resolved.definition().rate_limit.as_ref())
                    .map(|r| RateLimiter::new(r.events_per_second, r.burst)),
                sink,
                counters: node
                    .counters
                    .destination(&pipeline.id, &pipeline.name, &spec.name),
                pipeline: pipeline.name.clone(),
                resolved,
            };
            wanted.insert(
                (pipeline.id.clone(), spec.name.clone()),
                (fingerprint, destination),
            );
        }
    }
    let stale: Vec<(String, String)> = running
        .iter()
        .filter(|(key, run)| {
            wanted
                .get(*key)
                .is_none_or(|(fp, _)| *fp != run.fingerprint)
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in stale {
        if let Some(run) = running.remove(&key) {
            let _ = run.stop.send(true);
            node.consumers.stopped(&run.destination.stage);
            tracing::info!(pipeline_id = %key.0, destination = %key.1, "destination workers stopping");
            // The workers finish their batch in hand on their own; no need to wait here.
            drop(run.workers);
        }
    }
    for (key, (fingerprint, destination)) in wanted {
        if running.contains_key(&key) {
            continue;
        }
        let destination = Arc::new(destination);
        // Counted against readiness before its workers first run.
        node.consumers.starting(&destination.stage);
        let (stop, stop_rx) = watch::channel(false);
        let workers = (0..destination.resolved.spec.concurrency())
            .map(|_| {
                tokio::spawn(work(
                    destination.clone(),
                    node.clone(),
                    bus.clone(),
                    http.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        tracing::info!(pipeline_id = %key.0, destination = %key.1, workers = destination.resolved.spec.concurrency(), "destination workers started");
        running.insert(
            key,
            Running {
                fingerprint,
                destination,
                stop,
                workers,
            },
        );
    }
}

async fn update_depths(
    node: &NodeState,
    bus: &AnyBus,
    running: &HashMap<(String, String), Running>,
) {
    let mut total = 0;
    for run in running.values() {
        if let Ok(depth) = bus.depth(&run.destination.dlq).await {
            run.destination
                .counters
                .dlq_depth
                .store(depth, Ordering::Relaxed);
            total += depth;
        }
    }
    node.counters.dlq_depth.store(total, Ordering::Relaxed);
}

async fn work(
    destination: Arc<Destination>,
    node: Arc<NodeState>,
    bus: AnyBus,
    http: Guarded,
    mut stop: watch::Receiver<bool>,
) {
    let max = destination.resolved.max_batch();
    tokio::select! {
        () = until_true(&mut stop) => return,
        () = node.consumers.open(&bus, &destination.stage) => {}
    }
    loop {
        let fetched = tokio::select! {
            () = until_true(&mut stop) => return,
            fetched = bus.fetch(&destination.stage, max, Duration::from_secs(1)) => fetched,
        };
        node.consumers.outcome(&destination.stage, &fetched);
        let mut deliveries = match fetched {
            Ok(d) if d.is_empty() => continue,
            Ok(d) => d,
            Err(e) => {
                tracing::error!(destination = %destination.name, error = %e, "cannot read a destination's stage");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // A batching vendor waits a little for its batch to fill: fewer, fuller requests.
        let wait = destination.resolved.max_wait();
        if !wait.is_zero() && deliveries.len() < max {
            let deadline = Instant::now() + wait;
            while deliveries.len() < max {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match bus
                    .fetch(&destination.stage, max - deliveries.len(), left)
                    .await
                {
                    Ok(more) if !more.is_empty() => deliveries.extend(more),
                    _ => break,
                }
            }
        }
        if let Some(limiter) = &destination.limiter {
            limiter.acquire(deliveries.len()).await;
        }
        destination.send(deliveries, &node, &bus, &http).await;
    }
}

/// A vendor's answer as read here: the status, `Retry-After` and the start of the body.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Destination {
    async fn send(
        &self,
        deliveries: Vec<Delivery>,
        node: &NodeState,
        bus: &AnyBus,
        http: &Guarded,
    ) {
        // No request carries more than the definition's bytes (a comma between payloads).
        let mut work = sluice_bus::split_by_bytes(deliveries, self.resolved.max_bytes(), 1);
        while let Some(batch) = work.pop_front() {
            let started = Instant::now();
            let (verdict, answer) = self.attempt(&batch, http).await;
            let outcome = match &verdict {
                Verdict::Delivered => "delivered",
                Verdict::Retry { .. } => "retry",
                Verdict::DeadLetter { .. } => "dead_letter",
            };
            node.metrics
                .histogram(
                    metrics::DELIVERY_REQUEST_SECONDS,
                    &[
                        ("pipeline_id", &self.pipeline_id),
                        ("pipeline", &self.pipeline),
                        ("destination", &self.name),
                        ("outcome", outcome),
                    ],
                )
                .record(started.elapsed());
            let status = answer.as_ref().map(|a| a.status);
            let failure = match &verdict {
                Verdict::Delivered => None,
                Verdict::Retry { error, .. } | Verdict::DeadLetter { error } => {
                    Some(error.as_str())
                }
            };
            if let Some(error) = failure {
                self.counters.attempt_failed(status, error);
            }
            if node.tap.on() {
                let latency_ms = started.elapsed().as_millis() as u64;
                let error: Option<Arc<str>> = failure.map(Arc::from);
                let response = answer.as_ref().map(|a| tap::response_start(&a.body));
                node.tap.record(batch.iter().map(|d| {
                    NewRecord::new(&d.message.id, Stage::Attempt)
                        .destination(&self.tap_pipeline, &self.tap_name)
                        .detail(Detail::Attempt {
                            status,
                            latency_ms,
                            error: error.clone(),
                            response: response.clone(),
                        })
                }));
            }
            let response = answer.map(|a| String::from_utf8_lossy(&a.body).into_owned());
            match decide::batch_step(&verdict, batch.len()) {
                BatchStep::Ack => {
                    let n = batch.len() as u64;
                    if node.tap.on() {
                        node.tap.record(
                            batch
                                .iter()
                                .map(|d| self.outcome(d, Outcome::Delivered, None)),
                        );
                    }
                    if let Err(e) = bus.ack_all(batch).await {
                        tracing::warn!(destination = %self.name, error = %e, "delivered but not acknowledged; the events may be sent again");
                    }
                    self.counters.count(Count::Delivered, n);
                    node.counters.delivered.fetch_add(n, Ordering::Relaxed);
                }
                BatchStep::Split => {
                    tracing::debug!(destination = %self.name, status = ?status, events = batch.len(), "a batch was refused; splitting it to find the refused events");
                    let (first, second) = decide::halves(batch);
                    work.push_front(second);
                    work.push_front(first);
                }
                BatchStep::PerEvent => {
                    let (error, retry_after) = match &verdict {
                        Verdict::Retry { error, retry_after } => (error.as_str(), *retry_after),
                        Verdict::DeadLetter { error } => (error.as_str(), None),
                        Verdict::Delivered => ("", None),
                    };
                    let max_attempts = self.resolved.spec.retry.max_attempts;
                    for delivery in batch {
                        let attempts = u32::try_from(delivery.redeliveries + 1).unwrap_or(u32::MAX);
                        match decide::event_step(&verdict, attempts, max_attempts) {
                            EventStep::DeadLetter => {
                                let failure = Failure {
                                    attempts,
                                    status,
                                    error,
                                    response: response.clone(),
                                };
                                self.dead_letter(delivery, failure, node, bus).await;
                            }
                            EventStep::Retry => {
                                let wait =
                                    retry::delay(&self.resolved.spec.retry, attempts, retry_after);
                                tracing::debug!(destination = %self.name, message_id = %delivery.message.id, attempt = attempts, retry_in_ms = wait.as_millis() as u64, error = %error, "delivery failed; retrying later");
                                self.counters.count(Count::Retried, 1);
                                if node.tap.on() {
                                    let next_attempt_ms = now_ms() + wait.as_millis() as i64;
                                    node.tap.record([self.outcome(
                                        &delivery,
                                        Outcome::Retrying { next_attempt_ms },
                                        Some(error),
                                    )]);
                                }
                                if let Err(e) = bus.nack(delivery, wait).await {
                                    tracing::error!(destination = %self.name, error = %e, "cannot schedule a retry; the event comes back after the ack wait");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// One attempt at a batch: the verdict, and the vendor's answer when there was one.
    async fn attempt(&self, batch: &[Delivery], http: &Guarded) -> (Verdict, Option<Answer>) {
        let items: Vec<(&str, &[u8])> = batch
            .iter()
            .map(|d| (d.message.id.as_str(), d.message.payload.as_ref()))
            .collect();
        let attempt = self.sink.attempt(&self.resolved, http, &items, false).await;
        (attempt.verdict, attempt.answer)
    }

    /// Moves an event to the destination's DLQ with what went wrong; only then is it
    /// acknowledged, so it is never lost in between.
    async fn dead_letter(
        &self,
        delivery: Delivery,
        failure: Failure<'_>,
        node: &NodeState,
        bus: &AnyBus,
    ) {
        let entry = DlqEntry {
            id: delivery.message.id.clone(),
            pipeline_id: self.pipeline_id.clone(),
            destination: self.name.clone(),
            failed_at: rfc3339(now_ms()),
            attempts: failure.attempts,
            status: failure.status,
            error: failure.error.to_owned(),
            response: failure.response,
            shaped: true,
            payload: stages::raw_json(&delivery.message.payload),
        };
        let message = Message::new(delivery.message.id.clone(), entry.to_bytes());
        let started = Instant::now();
        let published = bus.publish(&self.dlq, vec![message.clone()]).await;
        node.metrics.bus_publish(&self.dlq, started.elapsed());
        if let Err(e) = published {
            tracing::error!(destination = %self.name, error = %e, "cannot write to the dead-letter queue; retrying the event later");
            let _ = bus.nack(delivery, Duration::from_secs(5)).await;
            return;
        }
        tracing::warn!(destination = %self.name, message_id = %entry.id, attempts = entry.attempts, status = ?entry.status, error = %entry.error, "event moved to the dead-letter queue");
        if node.tap.on() {
            let record = self
                .outcome(&delivery, Outcome::DeadLettered, Some(&entry.error))
                .body(message.payload.clone());
            node.tap.record([record]);
        }
        if let Err(e) = bus.ack(delivery).await {
            tracing::warn!(destination = %self.name, error = %e, "dead-lettered but not acknowledged; it may be tried again");
        }
        self.counters.count(Count::Failed, 1);
        node.counters.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The inspector's record of where one event's delivery ended up.
    fn outcome(&self, delivery: &Delivery, outcome: Outcome, error: Option<&str>) -> NewRecord {
        NewRecord::new(&delivery.message.id, Stage::Outcome)
            .destination(&self.tap_pipeline, &self.tap_name)
            .detail(Detail::Outcome {
                outcome,
                attempts: u32::try_from(delivery.redeliveries + 1).unwrap_or(u32::MAX),
                error: error.map(Arc::from),
            })
    }
}

/// Why an event is dead-lettered.
struct Failure<'e> {
    attempts: u32,
    status: Option<u16>,
    error: &'e str,
    response: Option<String>,
}

/// A warehouse write as a verdict: unavailable is retried, refused data is split down to
/// the refused events like a vendor's 400.
async fn write_rows(warehouse: &sluice_warehouse::Postgres, items: &[(&str, &[u8])]) -> Verdict {
    use sluice_warehouse::{Row, Warehouse, WriteError};
    let events: Vec<(&str, serde_json::Map<String, serde_json::Value>)> = items
        .iter()
        .map(|(id, payload)| {
            (
                stages::event_id(id),
                serde_json::from_slice(payload).unwrap_or_default(),
            )
        })
        .collect();
    let rows: Vec<Row<'_>> = events.iter().map(|(id, event)| Row { id, event }).collect();
    match warehouse.write(&rows).await {
        Ok(_) => Verdict::Delivered,
        Err(WriteError::Unavailable(error)) => Verdict::Retry {
            error,
            retry_after: None,
        },
        Err(WriteError::Refused(error)) => Verdict::DeadLetter { error },
    }
}

/// Why a request got no answer.
enum SendFailure {
    /// The node's policy refuses where it would go.
    Refused(String),
    /// It could not be sent, or no answer came.
    Failed(String),
}

/// Sends a request; the vendor's answer, or why there was none.
async fn post(http: &Guarded, request: Request, timeout: Duration) -> Result<Answer, SendFailure> {
    let mut builder = http
        .post(&request.url)
        .map_err(|refusal| SendFailure::Refused(refusal.to_string()))?
        .timeout(timeout)
        .body(request.body);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.map_err(|e| {
        if let Some(refusal) = guard::refusal(&e) {
            return SendFailure::Refused(refusal.to_string());
        }
        // Never the URL: it may carry an API secret (GA4, Meta).
        SendFailure::Failed(if e.is_timeout() {
            format!("no answer within {} ms", timeout.as_millis())
        } else if e.is_connect() {
            format!("cannot connect: {}", e.without_url())
        } else {
            e.without_url().to_string()
        })
    })?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = read_some(response).await;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// The start of an answer's body.
async fn read_some(mut response: reqwest::Response) -> Vec<u8> {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_RESPONSE {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(MAX_RESPONSE);
    bytes
}
