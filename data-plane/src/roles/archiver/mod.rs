//! The archiver role: consumes `archive` and writes Parquet files to the tenant's prefix of the
//! object store, `tenant=<id>/dataset=<name>/dt=YYYY-MM-DD/hour=HH/part-<uuid>.parquet`.
//!
//! Events are held (unacknowledged, kept alive on the bus) until the file holding them exists;
//! a flush happens when the held events reach `flush_bytes` or the oldest reaches `flush_age`.
//! A crash loses nothing: held events come back and are written again.
//!
//! Each event id is archived once. A crash between a file's upload and the events'
//! acknowledgement brings the events back as *redelivered* (the embedded bus counts every
//! message it recovers after a restart as one); before writing a redelivered event the
//! archiver looks for its id in its partition's files (their bloom filters on `event_id`
//! rule out most row groups unread) and acknowledges it unwritten when found. Copies that
//! arrive as new messages (a processor that published again after a crash) are dropped by
//! the bus within its deduplication window on NATS, and by the ids of the last
//! [`RECENT_IDS`] events this archiver wrote. Compaction ([`maintain`]) keeps one row per id
//! in each partition, whatever got past the rest.
//! While the store is unreachable the archiver retries with backoff and stops fetching, so the
//! stage fills and the receivers push back.

pub mod maintain;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use sluice_archive::layout;
use sluice_archive::record::{BatchBuilder, Envelope};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ArchiverConfig;
use crate::inspect::tap::{Detail, NewRecord, Stage};
use crate::shutdown::until_true;
use crate::state::NodeState;
use crate::telemetry::metrics;
use sluice_bus::{AnyBus, Bus as _, Delivery};
use sluice_pipeline::stages::{self, ArchiveRecord};
use sluice_pipeline::time::now_ms;

/// Events gathered for one partition.
#[derive(Default)]
struct Partition {
    rows: BatchBuilder,
    /// The events' ids, for the inspector (only while it is on).
    ids: Vec<String>,
    /// Redelivered events (index in `Held::deliveries`, event id): written only if the
    /// partition's files do not hold them yet.
    suspects: Vec<(usize, String)>,
}

/// Everything held since the last flush.
#[derive(Default)]
struct Held {
    partitions: BTreeMap<(String, String, String), Partition>,
    deliveries: Vec<Delivery>,
    /// Hashes of the event ids held, to drop a second copy.
    hashes: HashSet<u64>,
    /// Copies dropped.
    duplicates: u64,
    bytes: u64,
    since: Option<Instant>,
}

/// Event ids (hashed) of the events written last, newest flush last.
#[derive(Default)]
struct Recent {
    flushes: VecDeque<Vec<u64>>,
    set: HashSet<u64>,
}

/// How many written events' ids are remembered to drop copies that come as new messages.
pub const RECENT_IDS: usize = 1_000_000;

impl Recent {
    fn contains(&self, hash: u64) -> bool {
        self.set.contains(&hash)
    }

    fn remember(&mut self, hashes: HashSet<u64>) {
        let hashes: Vec<u64> = hashes.into_iter().collect();
        self.set.extend(hashes.iter().copied());
        self.flushes.push_back(hashes);
        while self.set.len() > RECENT_IDS && self.flushes.len() > 1 {
            if let Some(old) = self.flushes.pop_front() {
                for hash in old {
                    self.set.remove(&hash);
                }
            }
        }
    }
}

/// A 64-bit hash of an event id: two different ids share one with odds of about one in
/// 10^13 at a million remembered ids.
fn id_hash(id: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

const FETCH_MAX: usize = 2000;
/// How often held events are kept alive on the bus (well inside its 30 s ack wait).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts the writer and the upkeep task ([`maintain`]), which takes erasure requests.
pub fn start(
    node: Arc<NodeState>,
    bus: AnyBus,
    store: Arc<dyn ObjectStore>,
    config: ArchiverConfig,
    erasures: tokio::sync::mpsc::Receiver<maintain::ErasureJob>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    node.archive_stats.store_up.store(1, Ordering::Relaxed);
    let upkeep = tokio::spawn(maintain::run(
        node.clone(),
        bus.clone(),
        store.clone(),
        config.clone(),
        erasures,
        stop.clone(),
    ));
    tokio::spawn(async move {
        run(node, bus, store, config, stop).await;
        let _ = upkeep.await;
    })
}

async fn run(
    node: Arc<NodeState>,
    bus: AnyBus,
    store: Arc<dyn ObjectStore>,
    config: ArchiverConfig,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(store = %config.store.describe(), flush_bytes = config.flush_bytes, flush_age_secs = config.flush_age.as_secs(), "archiver started");
    tokio::select! {
        () = until_true(&mut stop) => return,
        () = node.consumers.open(&bus, stages::ARCHIVE) => {}
    }
    let mut held = Held::default();
    let mut recent = Recent::default();
    let notes = sluice_archive::commit::Notes::default();
    let mut kept_alive = Instant::now();
    loop {
        let wait = match held.since {
            Some(since) => config
                .flush_age
                .saturating_sub(since.elapsed())
                .min(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        let fetched = tokio::select! {
            () = until_true(&mut stop) => break,
            fetched = bus.fetch(stages::ARCHIVE, FETCH_MAX, wait) => fetched,
        };
        node.consumers.outcome(stages::ARCHIVE, &fetched);
        match fetched {
            Ok(deliveries) => {
                let keep_ids = node.tap.on();
                for delivery in deliveries {
                    hold(&mut held, &recent, delivery, keep_ids);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the archive stage");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        node.archive_stats
            .buffered
            .store(held.deliveries.len() as u64, Ordering::Relaxed);
        let due = held.bytes >= config.flush_bytes
            || held.since.is_some_and(|s| s.elapsed() >= config.flush_age);
        if due && !held.deliveries.is_empty() {
            let batch = std::mem::take(&mut held);
            if !flush(&node, &bus, &store, &notes, &mut recent, batch, &mut stop).await {
                break;
            }
            kept_alive = Instant::now();
        } else if kept_alive.elapsed() >= KEEP_ALIVE && !held.deliveries.is_empty() {
            if let Err(e) = bus.keep_alive(&held.deliveries).await {
                tracing::warn!(error = %e, "cannot keep held archive events alive on the bus");
            }
            kept_alive = Instant::now();
        }
    }
    // Stopping: write what is held once; whatever is not written comes back after a restart.
    if !held.deliveries.is_empty() {
        let (_, never) = watch::channel(true);
        let mut never = never;
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            flush(&node, &bus, &store, &notes, &mut recent, held, &mut never),
        )
        .await;
    }
}

/// Adds one delivery to what is held.
fn hold(held: &mut Held, recent: &Recent, delivery: Delivery, keep_ids: bool) {
    // Whatever comes of it (written, a copy, a record that is not one), it is settled with
    // the next flush, which its age makes due.
    held.since.get_or_insert_with(Instant::now);
    let record = serde_json::from_slice::<ArchiveRecord>(&delivery.message.payload).ok();
    let parsed = record.as_ref().and_then(|r| {
        Envelope::parse(r.event.get())
            .ok()
            .map(|e| (r.dataset.as_str(), e))
    });
    let Some((dataset, event)) = parsed else {
        // Only the processor writes this stage; a record it cannot have written is a bug,
        // and keeping it would block the stage forever.
        tracing::error!(id = %delivery.message.id, "an archive record that is not one; skipping it");
        held.deliveries.push(delivery);
        return;
    };
    let dataset = if layout::is_safe_segment(dataset) {
        dataset.to_owned()
    } else {
        "events".to_owned()
    };
    let event_id = event.event_id().map(|id| id.into_owned());
    if let Some(id) = &event_id {
        let hash = id_hash(id);
        if recent.contains(hash) || !held.hashes.insert(hash) {
            held.duplicates += 1;
            held.deliveries.push(delivery);
            return;
        }
    }
    let received = event.received_at().unwrap_or_else(now_ms);
    let (dt, hour) = layout::partition(received);
    let partition = held.partitions.entry((dataset, dt, hour)).or_default();
    match event_id {
        Some(id) if delivery.redeliveries > 0 => {
            partition.suspects.push((held.deliveries.len(), id));
        }
        _ => {
            partition.rows.push(&event, received);
            if keep_ids {
                partition.ids.push(delivery.message.id.clone());
            }
        }
    }
    held.bytes += delivery.message.payload.len() as u64;
    held.deliveries.push(delivery);
}

/// Adds the redelivered events of `held` that their partition's files do not hold yet to its
/// rows; the others are dropped as copies. Retries while the store fails; false when asked to
/// stop meanwhile.
async fn settle_suspects(
    node: &Arc<NodeState>,
    view: &Arc<dyn ObjectStore>,
    notes: &sluice_archive::commit::Notes,
    held: &mut Held,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let keep_ids = node.tap.on();
    let mut backoff = Duration::from_millis(500);
    let Held {
        partitions,
        deliveries,
        duplicates,
        ..
    } = held;
    for ((dataset, dt, hour), partition) in partitions.iter_mut() {
        if partition.suspects.is_empty() {
            continue;
        }
        let candidates: HashSet<String> = partition
            .suspects
            .iter()
            .map(|(_, id)| id.clone())
            .collect();
        let key = sluice_archive::maintain::Partition {
            dataset: dataset.clone(),
            dt: dt.clone(),
            hour: hour.clone(),
        };
        let archived = loop {
            match sluice_archive::maintain::archived_ids(view, notes, &key, &candidates).await {
                Ok(archived) => break archived,
                Err(e) => {
                    node.archive_stats.store_up.store(0, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot check the archive for redelivered events; retrying");
                    tokio::select! {
                        () = until_true(stop) => return false,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        for (index, id) in std::mem::take(&mut partition.suspects) {
            if archived.contains(&id) {
                *duplicates += 1;
                continue;
            }
            let Some(delivery) = deliveries.get(index) else {
                continue;
            };
            let record = serde_json::from_slice::<ArchiveRecord>(&delivery.message.payload).ok();
            if let Some(event) = record
                .as_ref()
                .and_then(|r| Envelope::parse(r.event.get()).ok())
            {
                let received = event.received_at().unwrap_or_else(now_ms);
                partition.rows.push(&event, received);
                if keep_ids {
                    partition.ids.push(delivery.message.id.clone());
                }
            }
        }
    }
    true
}

/// Writes one file per partition, retrying until each exists, then acknowledges the events.
/// False when asked to stop before that (the events then come back after a restart).
async fn flush(
    node: &Arc<NodeState>,
    bus: &AnyBus,
    store: &Arc<dyn ObjectStore>,
    notes: &sluice_archive::commit::Notes,
    recent: &mut Recent,
    mut held: Held,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let Some(tenant_id) = node.current().map(|c| c.tenant_id.clone()) else {
        return true;
    };
    if !layout::is_safe_segment(&tenant_id) {
        tracing::error!(tenant_id = %tenant_id, "a tenant id that cannot be a path; not archiving");
        return true;
    }
    let view = sluice_archive::store::tenant_view(store.clone(), &tenant_id);
    if !settle_suspects(node, &view, notes, &mut held, stop).await {
        return false;
    }
    let started = Instant::now();
    let events = held.deliveries.len() as u64;
    let duplicates = held.duplicates;
    let hashes = std::mem::take(&mut held.hashes);
    let mut files: Vec<(Path, Bytes, Vec<String>)> = Vec::new();
    for ((dataset, dt, hour), mut partition) in held.partitions {
        let rows = partition.rows.len();
        if rows == 0 {
            continue;
        }
        let ids = std::mem::take(&mut partition.ids);
        let encoded = tokio::task::spawn_blocking(move || {
            partition
                .rows
                .finish()
                .and_then(|batch| sluice_archive::encode::parquet(&batch))
        })
        .await;
        match encoded {
            Ok(Ok(bytes)) => {
                let path =
                    layout::object_path(&tenant_id, &dataset, &dt, &hour, uuid::Uuid::now_v7());
                files.push((path, bytes, ids));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, rows, "cannot encode an archive file; the events stay on the bus");
                return true;
            }
            Err(e) => {
                tracing::error!(error = %e, "archive encoding panicked; the events stay on the bus");
                return true;
            }
        }
    }
    let stats = &node.archive_stats;
    let mut backoff = Duration::from_millis(500);
    let mut kept_alive = Instant::now();
    for (path, bytes, ids) in &files {
        loop {
            let started = Instant::now();
            let uploaded = sluice_archive::encode::upload(store, path, bytes.clone()).await;
            let outcome = if uploaded.is_ok() { "ok" } else { "error" };
            node.metrics
                .histogram(metrics::ARCHIVE_UPLOAD_SECONDS, &[("outcome", outcome)])
                .record(started.elapsed());
            match uploaded {
                Ok(()) => {
                    if !ids.is_empty() {
                        let file: Arc<str> = Arc::from(path.as_ref());
                        node.tap.record(ids.iter().map(|id| {
                            NewRecord::new(id, Stage::Archived)
                                .detail(Detail::Archived { file: file.clone() })
                        }));
                    }
                    stats.files.fetch_add(1, Ordering::Relaxed);
                    stats.store_up.store(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                    stats.store_up.store(0, Ordering::Relaxed);
                    tracing::warn!(error = %e, path = %path, retry_in_ms = backoff.as_millis() as u64, "archive upload failed; holding the events and retrying");
                    tokio::select! {
                        () = until_true(stop) => return false,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if kept_alive.elapsed() >= KEEP_ALIVE {
                        let _ = bus.keep_alive(&held.deliveries).await;
                        kept_alive = Instant::now();
                    }
                }
            }
        }
    }
    if let Err(e) = bus.ack_all(held.deliveries).await {
        tracing::warn!(error = %e, "cannot acknowledge archived events; they will be archived again");
        return true;
    }
    node.counters
        .archived
        .fetch_add(events - duplicates, Ordering::Relaxed);
    node.counters
        .archive_duplicates
        .fetch_add(duplicates, Ordering::Relaxed);
    recent.remember(hashes);
    stats.buffered.store(0, Ordering::Relaxed);
    if duplicates > 0 {
        tracing::info!(
            duplicates,
            "archive copies of events already written were dropped"
        );
    }
    tracing::debug!(
        events,
        duplicates,
        files = files.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "archived"
    );
    true
}
