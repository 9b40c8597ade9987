//! Drains the proxy's spool to the receivers: gzipped Segment batches over keep-alive
//! connections, round robin over the receivers that pass their health check, the next
//! receiver on a failure, and backoff (the events wait in the spool) when none answers.
//!
//! A spooled event leaves the spool only when a receiver acknowledged it (durably on its
//! bus) or refused it for good. A refused batch is split in halves until the refused events
//! are alone, so one bad event never holds back the others; those are moved to the spool's
//! `rejected` stage with the receiver's answer, never dropped.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{StatusCode, header};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::shutdown::until_true;
use crate::state::NodeState;
use sluice_bus::embedded::EmbeddedBus;
use sluice_bus::{Bus, Delivery, Message};
use sluice_pipeline::time::now_ms;

/// The spool's stage of events waiting for a receiver.
pub(super) const SPOOL_STAGE: &str = "spool";
/// Events every receiver refused for good (with the reason), kept for inspection.
pub(super) const REJECTED_STAGE: &str = "rejected";

/// Concurrent forwarders, each with one batch in flight.
const WORKERS: usize = 4;
/// Events per fetch from the spool (one or more batches to the receivers).
const FETCH_MAX: usize = 500;
/// Uncompressed bytes of events per request: under the receiver's 500 KB batch limit.
const BATCH_BYTES: usize = 400 * 1024;
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delays while no receiver takes events: 250 ms doubling to 30 s, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A spooled event: its write key, a newline, the event's JSON.
pub fn spool_record(write_key: &str, event_json: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(write_key.len() + 1 + event_json.len());
    record.extend_from_slice(write_key.as_bytes());
    record.push(b'\n');
    record.extend_from_slice(event_json);
    record
}

fn split_record(payload: &Bytes) -> Option<(&str, &[u8])> {
    let newline = payload.iter().position(|b| *b == b'\n')?;
    let key = std::str::from_utf8(&payload[..newline]).ok()?;
    Some((key, &payload[newline + 1..]))
}

/// The receivers, with the outcome of their last health check.
struct Receivers {
    urls: Vec<String>,
    healthy: Vec<AtomicBool>,
    next: AtomicUsize,
}

impl Receivers {
    /// The next healthy receiver (round robin) not in `tried`.
    fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|i| !tried.contains(i) && self.healthy[*i].load(Ordering::Relaxed))
    }

    fn healthy_count(&self) -> u64 {
        self.healthy
            .iter()
            .filter(|h| h.load(Ordering::Relaxed))
            .count() as u64
    }
}

struct Forwarder {
    node: Arc<NodeState>,
    spool: EmbeddedBus,
    receivers: Receivers,
    http: reqwest::Client,
}

/// Starts the health checker and the forwarders; they stop when `shutdown` turns true.
pub fn start(
    node: Arc<NodeState>,
    spool: EmbeddedBus,
    urls: Vec<String>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, reqwest::Error> {
    let depth = spool.depth(SPOOL_STAGE).unwrap_or(0) as u64;
    if depth > 0 {
        tracing::info!(
            events = depth,
            "proxy spool holds events from before; forwarding them"
        );
    }
    node.proxy_stats.spool_depth.store(depth, Ordering::Relaxed);
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()?;
    let forwarder = Arc::new(Forwarder {
        node,
        spool,
        receivers: Receivers {
            // Until the first check says otherwise, every receiver is worth a try.
            healthy: urls.iter().map(|_| AtomicBool::new(true)).collect(),
            urls,
            next: AtomicUsize::new(0),
        },
        http,
    });
    let mut tasks = vec![tokio::spawn(check_health(
        forwarder.clone(),
        shutdown.clone(),
    ))];
    for _ in 0..WORKERS {
        tasks.push(tokio::spawn(forward(forwarder.clone(), shutdown.clone())));
    }
    Ok(tasks)
}

async fn check_health(forwarder: Arc<Forwarder>, mut shutdown: watch::Receiver<bool>) {
    let receivers = &forwarder.receivers;
    loop {
        for (i, url) in receivers.urls.iter().enumerate() {
            let ready = forwarder
                .http
                .get(format!("{url}/health/ready"))
                .timeout(HEALTH_INTERVAL)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            let was = receivers.healthy[i].swap(ready, Ordering::Relaxed);
            if was != ready {
                if ready {
                    tracing::info!(receiver = %url, "receiver is ready again");
                } else {
                    tracing::warn!(receiver = %url, "receiver failed its health check");
                }
            }
        }
        forwarder
            .node
            .proxy_stats
            .receivers_healthy
            .store(receivers.healthy_count(), Ordering::Relaxed);
        tokio::select! {
            () = until_true(&mut shutdown) => return,
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
    }
}

/// What became of one request to the receivers.
enum Outcome {
    Accepted,
    /// Nobody took it now; try again after the delay.
    Retry(Duration),
    /// A receiver refused it for good.
    Refused {
        status: u16,
        answer: String,
    },
}

async fn forward(forwarder: Arc<Forwarder>, mut shutdown: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        let fetched = tokio::select! {
            () = until_true(&mut shutdown) => return,
            fetched = forwarder.spool.fetch(SPOOL_STAGE, FETCH_MAX, Duration::from_secs(1)) => fetched,
        };
        let deliveries = match fetched {
            Ok(deliveries) => deliveries,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the proxy spool");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for (key, group) in by_write_key(deliveries) {
            forwarder.forward_group(&key, group, &mut failures).await;
        }
    }
}

/// Groups deliveries by write key, keeping their order; records that cannot be read are
/// grouped under an empty key (and refused by the receivers like any wrong key).
fn by_write_key(deliveries: Vec<Delivery>) -> Vec<(String, Vec<Delivery>)> {
    let mut groups: Vec<(String, Vec<Delivery>)> = Vec::new();
    for delivery in deliveries {
        let key = split_record(&delivery.message.payload)
            .map(|(key, _)| key.to_owned())
            .unwrap_or_default();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(delivery),
            None => groups.push((key, vec![delivery])),
        }
    }
    groups
}

fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << failures.min(10));
    let capped = exp.min(BACKOFF_MAX);
    // Full jitter on the upper half, so retries of many proxies spread out.
    let jitter = rand_fraction();
    capped / 2 + capped.mul_f64(jitter / 2.0)
}

fn rand_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

impl Forwarder {
    async fn forward_group(&self, key: &str, group: Vec<Delivery>, failures: &mut u32) {
        // Requests of at most BATCH_BYTES of events.
        let mut work = sluice_bus::split_by_bytes(group, BATCH_BYTES, 0);
        while let Some(chunk) = work.pop_front() {
            match self.post(key, &chunk, *failures).await {
                Outcome::Accepted => {
                    *failures = 0;
                    self.settled(chunk.len(), false);
                    for delivery in chunk {
                        self.ack(delivery).await;
                    }
                }
                Outcome::Retry(delay) => {
                    *failures = failures.saturating_add(1);
                    tracing::warn!(
                        events = chunk.len(),
                        retry_in_ms = delay.as_millis() as u64,
                        "no receiver took the events; they wait in the spool"
                    );
                    for delivery in chunk.into_iter().chain(work.drain(..).flatten()) {
                        if let Err(e) = self.spool.nack(delivery, delay).await {
                            tracing::error!(error = %e, "cannot return events to the spool");
                        }
                    }
                    return;
                }
                Outcome::Refused { status, answer } if chunk.len() > 1 => {
                    tracing::debug!(status, events = chunk.len(), answer = %answer, "a batch was refused; splitting it to find the refused events");
                    let mut first = chunk;
                    let second = first.split_off(first.len() / 2);
                    work.push_front(second);
                    work.push_front(first);
                }
                Outcome::Refused { status, answer } => {
                    for delivery in chunk {
                        self.reject(delivery, status, &answer).await;
                    }
                }
            }
        }
    }

    fn settled(&self, events: usize, rejected: bool) {
        let stats = &self.node.proxy_stats;
        let n = events as u64;
        if rejected {
            stats.rejected.fetch_add(n, Ordering::Relaxed);
        } else {
            stats.forwarded.fetch_add(n, Ordering::Relaxed);
        }
        let _ = stats
            .spool_depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(n))
            });
    }

    async fn ack(&self, delivery: Delivery) {
        if let Err(e) = self.spool.ack(delivery).await {
            tracing::error!(error = %e, "cannot acknowledge a forwarded event in the spool");
        }
    }

    /// Moves an event every receiver refuses to the `rejected` stage, with the answer.
    async fn reject(&self, delivery: Delivery, status: u16, answer: &str) {
        let event = split_record(&delivery.message.payload)
            .and_then(|(_, json)| serde_json::from_slice::<serde_json::Value>(json).ok())
            .unwrap_or(serde_json::Value::Null);
        let record = json!({
            "rejected_at": sluice_pipeline::time::rfc3339(now_ms()),
            "status": status,
            "answer": answer,
            "event": event,
        });
        // A `Value` always prints as JSON.
        let message = Message::new(delivery.message.id.clone(), record.to_string());
        if let Err(e) = self.spool.publish(REJECTED_STAGE, vec![message]).await {
            // Keep it in the spool rather than lose it; it comes back later.
            tracing::error!(error = %e, "cannot set a refused event aside; retrying later");
            let _ = self.spool.nack(delivery, BACKOFF_MAX).await;
            return;
        }
        tracing::warn!(message_id = %delivery.message.id, status, answer = %answer, "receivers refuse this event; kept in the proxy spool's rejected stage");
        self.settled(1, true);
        self.ack(delivery).await;
    }

    /// One attempt per healthy receiver, until one answers for good.
    async fn post(&self, key: &str, chunk: &[Delivery], failures: u32) -> Outcome {
        let body = batch_body(chunk);
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
        );
        let mut tried = Vec::new();
        let mut retry_after = None;
        while let Some(i) = self.receivers.pick(&tried) {
            tried.push(i);
            let url = &self.receivers.urls[i];
            let sent = self
                .http
                .post(format!("{url}/v1/batch"))
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_ENCODING, "gzip")
                .header(header::AUTHORIZATION, &auth)
                .body(body.clone())
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    tracing::warn!(receiver = %url, error = %e, "receiver unreachable; trying the next");
                    self.receivers.healthy[i].store(false, Ordering::Relaxed);
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                return Outcome::Accepted;
            }
            let wait = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let answer = response.text().await.unwrap_or_default();
            match status {
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::SERVICE_UNAVAILABLE => {
                    retry_after = retry_after.max(wait);
                }
                s if s.is_server_error() => {
                    tracing::warn!(receiver = %url, status = s.as_u16(), answer = %answer, "receiver failed; trying the next");
                    self.receivers.healthy[i].store(false, Ordering::Relaxed);
                }
                s => {
                    return Outcome::Refused {
                        status: s.as_u16(),
                        answer,
                    };
                }
            }
        }
        if tried.is_empty() {
            // Nobody is healthy: the next health check is what can change that.
            return Outcome::Retry(HEALTH_INTERVAL);
        }
        Outcome::Retry(retry_after.unwrap_or_default().max(backoff(failures)))
    }
}

/// `{"batch":[…]}` from the spooled events' JSON as it is, gzipped.
fn batch_body(chunk: &[Delivery]) -> Bytes {
    let mut json = Vec::with_capacity(
        chunk
            .iter()
            .map(|d| d.message.payload.len() + 1)
            .sum::<usize>()
            + 16,
    );
    json.extend_from_slice(b"{\"batch\":[");
    for (i, delivery) in chunk.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        let event = split_record(&delivery.message.payload).map_or(&b"null"[..], |(_, e)| e);
        json.extend_from_slice(event);
    }
    json.extend_from_slice(b"]}");
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(&json);
    Bytes::from(encoder.finish().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_key_and_event() {
        let record = Bytes::from(spool_record("slk_ing_x", br#"{"a":1}"#));
        assert_eq!(
            split_record(&record),
            Some(("slk_ing_x", &br#"{"a":1}"#[..]))
        );
        assert_eq!(split_record(&Bytes::from_static(b"no newline")), None);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        for failures in 0..40 {
            let delay = backoff(failures);
            let ceiling = BACKOFF_MIN
                .saturating_mul(1u32 << failures.min(10))
                .min(BACKOFF_MAX);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{failures}: {delay:?}"
            );
        }
        assert!(backoff(30) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn receivers_rotate_and_skip_the_unhealthy_and_the_tried() {
        let receivers = Receivers {
            urls: vec!["a".into(), "b".into(), "c".into()],
            healthy: vec![
                AtomicBool::new(true),
                AtomicBool::new(false),
                AtomicBool::new(true),
            ],
            next: AtomicUsize::new(0),
        };
        let picks: Vec<_> = (0..4).filter_map(|_| receivers.pick(&[])).collect();
        assert!(picks.iter().all(|i| *i != 1), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2), "{picks:?}");
        assert_eq!(receivers.pick(&[0, 2]), None);
        assert_eq!(receivers.healthy_count(), 2);
    }
}
