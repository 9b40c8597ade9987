//! The taps: what passed each stage of this node, kept in one bounded ring and handed to live
//! viewers as it happens.
//!
//! Recording is cheap by construction: a record holds the bytes the stage already had
//! (reference-counted, never re-serialised) and a few ids; nothing is parsed or formatted
//! until someone reads it. With no viewer connected nothing is sent anywhere; with the
//! inspector off (`ring_records = 0`) the roles skip the taps altogether.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::config::InspectConfig;

/// How much of a vendor's answer a tap keeps, in bytes.
pub const MAX_RESPONSE: usize = 4096;
/// Records a slow viewer may fall behind before it skips some (and is told how many).
const LIVE_BUFFER: usize = 4096;
/// What a record costs beyond its bytes, in bytes (ids, times, the allocation).
const RECORD_OVERHEAD: usize = 160;

/// A stage of an event's way through the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// As the client sent it, after authentication (the envelope on `raw`).
    Received,
    /// After governance: the event as archived and shaped from.
    Governed,
    /// Refused by governance.
    Rejected,
    /// Shaped for one destination: the payload its vendor gets.
    Shaped,
    /// One delivery attempt and the vendor's answer.
    Attempt,
    /// Where a destination's delivery ended up: delivered, retrying or dead-lettered.
    Outcome,
    /// Written to an archive file.
    Archived,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Received,
        Stage::Governed,
        Stage::Rejected,
        Stage::Shaped,
        Stage::Attempt,
        Stage::Outcome,
        Stage::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Received => "received",
            Stage::Governed => "governed",
            Stage::Rejected => "rejected",
            Stage::Shaped => "shaped",
            Stage::Attempt => "attempt",
            Stage::Outcome => "outcome",
            Stage::Archived => "archived",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// How a destination's delivery of an event ended (so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Failed; tried again at `next_attempt_ms`.
    Retrying {
        next_attempt_ms: i64,
    },
    /// In the destination's dead-letter queue (the record's body is the entry).
    DeadLettered,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retrying { .. } => "retrying",
            Outcome::DeadLettered => "dead_lettered",
        }
    }
}

/// What a record says beyond its stage and body.
#[derive(Debug, Clone)]
pub enum Detail {
    None,
    /// The governed event; `wrapped` when the body is the archive record around it.
    Governed {
        wrapped: bool,
    },
    Attempt {
        /// The vendor's HTTP status, when it answered.
        status: Option<u16>,
        latency_ms: u64,
        /// What was wrong, when the attempt failed.
        error: Option<Arc<str>>,
        /// The start of the vendor's answer (at most [`MAX_RESPONSE`] bytes).
        response: Option<Bytes>,
    },
    Outcome {
        outcome: Outcome,
        attempts: u32,
        error: Option<Arc<str>>,
    },
    Archived {
        file: Arc<str>,
    },
}

/// One stage an event passed, as recorded.
#[derive(Debug)]
pub struct TapRecord {
    /// Increases by one per record on this node: a viewer's position.
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The event id (a replay's bus id is recorded under the event it replays).
    pub event_id: Box<str>,
    pub stage: Stage,
    /// Known for every stage after governance.
    pub pipeline_id: Option<Arc<str>>,
    /// The destination, for shaped, attempt and outcome records.
    pub destination: Option<Arc<str>>,
    pub body: Option<Bytes>,
    pub detail: Detail,
}

impl TapRecord {
    fn weight(&self) -> usize {
        let response = match &self.detail {
            Detail::Attempt {
                response: Some(r), ..
            } => r.len(),
            _ => 0,
        };
        RECORD_OVERHEAD + self.event_id.len() + self.body.as_ref().map_or(0, Bytes::len) + response
    }
}

/// A record to add (the tap numbers and times it).
pub struct NewRecord {
    pub event_id: Box<str>,
    pub stage: Stage,
    pub pipeline_id: Option<Arc<str>>,
    pub destination: Option<Arc<str>>,
    pub body: Option<Bytes>,
    pub detail: Detail,
}

impl NewRecord {
    pub fn new(event_id: &str, stage: Stage) -> Self {
        Self {
            event_id: sluice_pipeline::stages::event_id(event_id).into(),
            stage,
            pipeline_id: None,
            destination: None,
            body: None,
            detail: Detail::None,
        }
    }

    pub fn pipeline(mut self, pipeline_id: &Arc<str>) -> Self {
        self.pipeline_id = Some(pipeline_id.clone());
        self
    }

    pub fn destination(mut self, pipeline_id: &Arc<str>, destination: &Arc<str>) -> Self {
        self.pipeline_id = Some(pipeline_id.clone());
        self.destination = Some(destination.clone());
        self
    }

    pub fn body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }

    pub fn detail(mut self, detail: Detail) -> Self {
        self.detail = detail;
        self
    }
}

/// The node's taps: off, or a ring and a live channel.
pub struct Tap {
    inner: Option<Inner>,
}

struct Inner {
    config: InspectConfig,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<TapRecord>>,
    seq: AtomicU64,
}

#[derive(Default)]
struct Ring {
    records: VecDeque<Arc<TapRecord>>,
    bytes: usize,
}

/// How full the ring is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    pub records: usize,
    pub bytes: usize,
    /// The first sequence number still held (every later one is held too).
    pub first_seq: u64,
    pub oldest_ms: Option<i64>,
}

impl Tap {
    pub fn new(config: InspectConfig) -> Self {
        if config.ring_records == 0 {
            return Self { inner: None };
        }
        Self {
            inner: Some(Inner {
                config,
                ring: Mutex::new(Ring::default()),
                live: broadcast::channel(LIVE_BUFFER).0,
                seq: AtomicU64::new(1),
            }),
        }
    }

    /// Whether the inspector is on: roles skip building records when it is not.
    #[inline]
    pub fn on(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether a live viewer is connected (what is worth extra work only then).
    pub fn watched(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.live.receiver_count() > 0)
    }

    /// Live viewers connected now.
    pub fn viewers(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |inner| inner.live.receiver_count())
    }

    /// Adds records, oldest first, under one lock; evicts the oldest beyond the ring's limits.
    pub fn record(&self, records: impl IntoIterator<Item = NewRecord>) {
        let Some(inner) = &self.inner else {
            return;
        };
        let at_ms = sluice_pipeline::time::now_ms();
        let watched = inner.live.receiver_count() > 0;
        let mut ring = inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        for new in records {
            let record = Arc::new(TapRecord {
                seq: inner.seq.fetch_add(1, Ordering::Relaxed),
                at_ms,
                event_id: new.event_id,
                stage: new.stage,
                pipeline_id: new.pipeline_id,
                destination: new.destination,
                body: new.body,
                detail: new.detail,
            });
            ring.bytes += record.weight();
            if watched {
                // Only fails when the last viewer has just gone.
                let _ = inner.live.send(record.clone());
            }
            ring.records.push_back(record);
        }
        while ring.records.len() > inner.config.ring_records
            || (ring.bytes > inner.config.ring_bytes && ring.records.len() > 1)
        {
            match ring.records.pop_front() {
                Some(old) => ring.bytes = ring.bytes.saturating_sub(old.weight()),
                None => break,
            }
        }
    }

    /// A live feed of every record from now on, or `None` when the inspector is off.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Arc<TapRecord>>> {
        self.inner.as_ref().map(|inner| inner.live.subscribe())
    }

    /// The records held that `keep` accepts, oldest first (the newest `limit` of them).
    /// `keep` sees every record in order, so a filter can learn from an event's earlier
    /// stages; it runs outside the ring's lock.
    pub fn held(
        &self,
        limit: usize,
        mut keep: impl FnMut(&TapRecord) -> bool,
    ) -> Vec<Arc<TapRecord>> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let all: Vec<Arc<TapRecord>> = inner
            .ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records
            .iter()
            .cloned()
            .collect();
        let mut out: Vec<Arc<TapRecord>> = all.into_iter().filter(|r| keep(r)).collect();
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        out
    }

    /// Every record of one event the ring holds, oldest first.
    pub fn of_event(&self, event_id: &str) -> Vec<Arc<TapRecord>> {
        self.held(usize::MAX, |r| &*r.event_id == event_id)
    }

    pub fn stats(&self) -> Option<RingStats> {
        let inner = self.inner.as_ref()?;
        let ring = inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        Some(RingStats {
            records: ring.records.len(),
            bytes: ring.bytes,
            first_seq: ring
                .records
                .front()
                .map_or_else(|| inner.seq.load(Ordering::Relaxed), |r| r.seq),
            oldest_ms: ring.records.front().map(|r| r.at_ms),
        })
    }

    pub fn config(&self) -> Option<InspectConfig> {
        self.inner.as_ref().map(|inner| inner.config)
    }
}

/// The start of a vendor's answer, as a tap keeps it.
pub fn response_start(body: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&body[..body.len().min(MAX_RESPONSE)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(records: usize, bytes: usize) -> Tap {
        Tap::new(InspectConfig {
            ring_records: records,
            ring_bytes: bytes,
        })
    }

    fn received(id: &str, body: &[u8]) -> NewRecord {
        NewRecord::new(id, Stage::Received).body(Bytes::copy_from_slice(body))
    }

    #[test]
    fn the_ring_keeps_the_newest_records_within_its_count() {
        let tap = tap(3, 1 << 20);
        tap.record((0..5).map(|i| received(&format!("e{i}"), b"{}")));
        let held = tap.held(usize::MAX, |_| true);
        let ids: Vec<&str> = held.iter().map(|r| &*r.event_id).collect();
        assert_eq!(ids, ["e2", "e3", "e4"]);
        let stats = tap.stats().expect("on");
        assert_eq!((stats.records, stats.first_seq), (3, 3));
    }

    #[test]
    fn the_ring_keeps_within_its_bytes() {
        let tap = tap(1000, 10_000);
        let body = vec![b'x'; 3000];
        tap.record((0..10).map(|i| received(&format!("e{i}"), &body)));
        let stats = tap.stats().expect("on");
        assert!(stats.bytes <= 10_000, "{stats:?}");
        assert_eq!(stats.records, 3);
        assert_eq!(&*tap.held(1, |_| true)[0].event_id, "e9");
    }

    #[test]
    fn a_replay_is_recorded_under_its_event() {
        let tap = tap(10, 1 << 20);
        tap.record([
            received("m-1", b"{}"),
            NewRecord::new("m-1#replay-1795000000000-0", Stage::Received),
            received("m-2", b"{}"),
        ]);
        assert_eq!(tap.of_event("m-1").len(), 2);
    }

    #[test]
    fn off_records_nothing_and_feeds_no_one() {
        let tap = tap(0, 0);
        assert!(!tap.on());
        tap.record([received("m", b"{}")]);
        assert!(tap.held(10, |_| true).is_empty());
        assert!(tap.subscribe().is_none());
    }

    #[test]
    fn viewers_get_what_is_recorded_after_they_came() {
        let tap = tap(10, 1 << 20);
        tap.record([received("before", b"{}")]);
        let mut live = tap.subscribe().expect("on");
        assert!(tap.watched());
        tap.record([received("after", b"{}")]);
        let got = live.try_recv().expect("a record");
        assert_eq!(&*got.event_id, "after");
        assert!(live.try_recv().is_err());
    }
}
