//! The embedded bus: per stage, an append-only log of checksummed records on disk plus the
//! unacknowledged messages in memory.
//!
//! * **Group commit.** One writer task per stage takes every publish waiting at that moment,
//!   appends them, and pays one `fdatasync` for all of them before answering any.
//! * **Atomic calls.** Each publish call is one record, so a crash keeps all of a call or none.
//! * **Torn tails.** Each record carries its length and a CRC-32; on start a record that does
//!   not check out at the end of the newest segment is cut off, never served as data.
//! * **Acknowledgement.** The stage keeps a commit point: every message below it is acked. It
//!   is persisted (atomic rename) within 50 ms of an ack, so after a crash at most the
//!   messages acked in those 50 ms are delivered again (at least once, never lost). Segments
//!   wholly below the commit point are deleted.
//! * **Bounded.** A stage holds at most `max_bytes` of unacknowledged messages; a publish
//!   beyond that fails with [`BusError::Full`] (the receiver answers 503 with Retry-After).
//!
//! One consumer group per stage: every consumer of a stage shares its messages.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::contract::{AckToken, Bus, BusError, Delivery, Erased, Message, check_stage};

/// This bus's stage behind a delivery's token.
fn own(stage: Arc<Erased>) -> Result<Arc<Stage>, BusError> {
    stage.downcast::<Stage>().map_err(|_| foreign())
}

fn foreign() -> BusError {
    BusError::Invalid("a delivery of another bus settled on the embedded bus".into())
}

/// Bytes of record header: body length and CRC-32.
const HEADER: usize = 8;
/// Largest record accepted when reading back, in bytes (a sanity bound against garbage).
const MAX_RECORD: usize = 256 * 1024 * 1024;
const CURSOR_FILE: &str = "cursor";
/// Obsolete segments kept for reuse per stage; more are deleted.
const MAX_SPARES: usize = 2;
const SPARE_PREFIX: &str = "spare-";
/// How often acknowledgements are persisted.
const CURSOR_FLUSH: Duration = Duration::from_millis(50);

/// The default of [`EmbeddedConfig::max_bytes`] (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The least a node may set it to: a full batch request (500 KB of events, with their
/// envelopes) must fit.
pub const MIN_MAX_BYTES: u64 = 1024 * 1024;

/// Settings of the embedded bus.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Where the stages live (one directory each).
    pub dir: PathBuf,
    /// Unacknowledged bytes a stage may hold before publishes are refused. Default: 256 MiB.
    pub max_bytes: u64,
    /// A segment file is closed and a new one begun past this size, in bytes. Default: 64 MiB.
    pub segment_bytes: u64,
    /// A fetched message not acknowledged within this time is delivered again. Default: 30 s.
    pub ack_wait: Duration,
}

impl EmbeddedConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: 64 * 1024 * 1024,
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// The embedded bus; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedBus {
    config: Arc<EmbeddedConfig>,
    stages: Arc<Mutex<HashMap<String, Arc<Stage>>>>,
}

/// One stage's queue.
#[derive(Debug)]
pub struct Stage {
    name: String,
    dir: PathBuf,
    max_bytes: u64,
    ack_wait: Duration,
    writer: mpsc::Sender<WriteRequest>,
    state: Mutex<State>,
    available: Notify,
}

#[derive(Debug)]
struct WriteRequest {
    messages: Vec<Message>,
    reply: oneshot::Sender<Result<(), BusError>>,
}

#[derive(Debug, Default)]
struct State {
    /// Durable, not handed out, in sequence order.
    pending: VecDeque<(u64, Message, u64)>,
    /// Handed out: seq → (message, deliveries so far, redeliver after).
    in_flight: BTreeMap<u64, (Message, u64, Instant)>,
    /// Acked sequence numbers at or above the commit point.
    acked_above: BTreeSet<u64>,
    /// Every sequence number below it is acknowledged.
    commit: u64,
    /// Unacknowledged bytes, counting publishes still being written.
    bytes: u64,
    /// Segment files with the first sequence number each holds, oldest first.
    segments: Vec<(u64, PathBuf)>,
    /// Obsolete segment files waiting to be overwritten as new segments.
    spares: Vec<PathBuf>,
    cursor_dirty: bool,
}

impl EmbeddedBus {
    pub fn open(config: EmbeddedConfig) -> Result<Self, BusError> {
        std::fs::create_dir_all(&config.dir)?;
        Ok(Self {
            config: Arc::new(config),
            stages: Arc::default(),
        })
    }

    fn stage(&self, name: &str) -> Result<Arc<Stage>, BusError> {
        check_stage(name)?;
        let mut stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stage) = stages.get(name) {
            return Ok(stage.clone());
        }
        let stage = Stage::open(name, &self.config)?;
        stages.insert(name.to_owned(), stage.clone());
        Ok(stage)
    }

    /// Messages of `stage` not yet acknowledged (pending or in flight).
    pub fn depth(&self, stage: &str) -> Result<usize, BusError> {
        let stage = self.stage(stage)?;
        let state = stage.lock();
        Ok(state.pending.len() + state.in_flight.len())
    }

    /// Persists every stage's acknowledgements now (on shutdown).
    pub fn flush(&self) -> Result<(), BusError> {
        let stages: Vec<_> = self
            .stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for stage in stages {
            stage.persist_cursor()?;
        }
        Ok(())
    }
}

impl Bus for EmbeddedBus {
    async fn publish(&self, stage: &str, messages: Vec<Message>) -> Result<(), BusError> {
        if messages.is_empty() {
            return Ok(());
        }
        let stage = self.stage(stage)?;
        let size: u64 = messages.iter().map(Message::size).sum();
        {
            let mut state = stage.lock();
            if state.bytes + size > stage.max_bytes {
                return Err(BusError::Full {
                    stage: stage.name.clone(),
                    retry_after: Duration::from_secs(1),
                });
            }
            state.bytes += size;
        }
        let (reply, answer) = oneshot::channel();
        let outcome = match stage.writer.send(WriteRequest { messages, reply }).await {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err(BusError::Unavailable("bus writer stopped".into()))),
            Err(_) => Err(BusError::Unavailable("bus writer stopped".into())),
        };
        if outcome.is_err() {
            stage.lock().bytes -= size;
        }
        outcome
    }

    async fn open_consumer(&self, stage: &str) -> Result<(), BusError> {
        self.stage(stage).map(|_| ())
    }

    async fn fetch(
        &self,
        stage: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        let stage = self.stage(stage)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a publish between the look and the wait is seen.
            let notified = stage.available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = stage.take(max.max(1));
            if !taken.is_empty() {
                return Ok(taken
                    .into_iter()
                    .map(|(seq, message, redeliveries)| Delivery {
                        message,
                        redeliveries,
                        token: AckToken::Embedded {
                            stage: stage.clone(),
                            seq,
                        },
                    })
                    .collect());
            }
            // Wake for new messages, or when the oldest in-flight message falls due again.
            let next_due = stage
                .lock()
                .in_flight
                .values()
                .map(|(_, _, due)| *due)
                .min();
            let until = next_due.map_or(deadline, |due| {
                deadline.min(tokio::time::Instant::from_std(due))
            });
            if tokio::time::timeout_at(until, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, delivery: Delivery) -> Result<(), BusError> {
        match delivery.token {
            AckToken::Embedded { stage, seq } => {
                own(stage)?.ack(seq);
                Ok(())
            }
            AckToken::Nats(_) | AckToken::NatsPack(_) => Err(BusError::Invalid(
                "a NATS delivery acked on the embedded bus".into(),
            )),
        }
    }

    async fn depth(&self, stage: &str) -> Result<u64, BusError> {
        EmbeddedBus::depth(self, stage).map(|d| d as u64)
    }

    async fn browse(
        &self,
        stage: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, BusError> {
        let stage = self.stage(stage)?;
        let state = stage.lock();
        // Sequence numbers start at 0; cursor 0 means "from the start", so cursors are seq + 1.
        let mut found: Vec<(u64, Message)> = state
            .pending
            .iter()
            .map(|(seq, m, _)| (*seq, m))
            .chain(state.in_flight.iter().map(|(seq, (m, _, _))| (*seq, m)))
            .filter(|(seq, _)| seq + 1 > cursor)
            .map(|(seq, m)| (seq + 1, m.clone()))
            .collect();
        found.sort_unstable_by_key(|(c, _)| *c);
        found.truncate(limit);
        Ok(found)
    }

    async fn remove(&self, stage: &str, cursors: &[u64]) -> Result<u64, BusError> {
        let stage = self.stage(stage)?;
        let seqs: Vec<u64> = cursors.iter().filter(|c| **c > 0).map(|c| c - 1).collect();
        Ok(stage.remove(&seqs))
    }

    async fn ack_all(&self, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        // Deliveries of one stage are acknowledged together; fetches return one stage's.
        let mut by_stage: Vec<(Arc<Stage>, Vec<u64>)> = Vec::new();
        for delivery in deliveries {
            let AckToken::Embedded { stage, seq } = delivery.token else {
                return Err(BusError::Invalid(
                    "a NATS delivery acked on the embedded bus".into(),
                ));
            };
            let stage = own(stage)?;
            match by_stage.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &stage)) {
                Some((_, seqs)) => seqs.push(seq),
                None => by_stage.push((stage, vec![seq])),
            }
        }
        for (stage, seqs) in by_stage {
            stage.ack_many(seqs.into_iter());
        }
        Ok(())
    }

    async fn nack(&self, delivery: Delivery, delay: Duration) -> Result<(), BusError> {
        match delivery.token {
            AckToken::Embedded { stage, seq } => {
                own(stage)?.release(seq, delay);
                Ok(())
            }
            AckToken::Nats(_) | AckToken::NatsPack(_) => Err(BusError::Invalid(
                "a NATS delivery nacked on the embedded bus".into(),
            )),
        }
    }

    async fn keep_alive(&self, deliveries: &[Delivery]) -> Result<(), BusError> {
        for delivery in deliveries {
            match &delivery.token {
                AckToken::Embedded { stage, seq } => stage
                    .downcast_ref::<Stage>()
                    .ok_or_else(foreign)?
                    .extend(*seq),
                AckToken::Nats(_) | AckToken::NatsPack(_) => {
                    return Err(BusError::Invalid(
                        "a NATS delivery kept alive on the embedded bus".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// One node owns an embedded bus (it is a directory of that node's), so nobody else can
    /// hold a lease on it.
    async fn lease(&self, _name: &str, _holder: &str, _ttl: Duration) -> Result<bool, BusError> {
        Ok(true)
    }

    async fn release(&self, _name: &str, _holder: &str) -> Result<(), BusError> {
        Ok(())
    }
}

impl Stage {
    fn open(name: &str, config: &EmbeddedConfig) -> Result<Arc<Self>, BusError> {
        let dir = config.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let commit = read_cursor(&dir)?;
        let mut state = State {
            commit,
            ..State::default()
        };
        let mut next_seq = commit;
        let entries: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect();
        let mut files: Vec<(u64, PathBuf)> = entries
            .iter()
            .filter_map(|(name, path)| {
                let first = name.strip_suffix(".log")?.parse::<u64>().ok()?;
                Some((first, path.clone()))
            })
            .collect();
        state.spares = entries
            .into_iter()
            .filter(|(name, _)| name.starts_with(SPARE_PREFIX))
            .map(|(_, path)| path)
            .collect();
        files.sort();
        let newest = files.last().map(|(first, _)| *first);
        for (first, path) in files {
            let records = read_segment(&path, first, Some(first) == newest)?;
            let mut last_seq = None;
            for (record_first, messages) in records {
                for (offset, message) in messages.into_iter().enumerate() {
                    let seq = record_first + offset as u64;
                    last_seq = Some(seq);
                    next_seq = next_seq.max(seq + 1);
                    if seq >= commit {
                        state.bytes += message.size();
                        // It may have been delivered before the restart: counted as once, so
                        // a consumer that must not repeat work checks it (the archiver does).
                        state.pending.push_back((seq, message, 1));
                    }
                }
            }
            if last_seq.is_some_and(|last| last < commit) && Some(first) != newest {
                std::fs::remove_file(&path)?;
            } else {
                state.segments.push((first, path));
            }
        }
        if !state.pending.is_empty() {
            tracing::info!(
                stage = name,
                pending = state.pending.len(),
                "bus stage recovered unacknowledged messages"
            );
        }
        let (writer, requests) = mpsc::channel(1024);
        let stage = Arc::new(Stage {
            name: name.to_owned(),
            dir,
            max_bytes: config.max_bytes,
            ack_wait: config.ack_wait,
            writer,
            state: Mutex::new(state),
            available: Notify::new(),
        });
        let log = SegmentWriter::open(&stage, next_seq, config.segment_bytes)?;
        let weak = Arc::downgrade(&stage);
        std::thread::Builder::new()
            .name(format!("bus-{name}"))
            .spawn(move || write_loop(weak, log, requests))
            .map_err(BusError::Io)?;
        let weak = Arc::downgrade(&stage);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CURSOR_FLUSH);
            loop {
                tick.tick().await;
                let Some(stage) = weak.upgrade() else { return };
                // It fsyncs: off the async workers, or every request they serve waits for it.
                let persisted = tokio::task::spawn_blocking(move || {
                    let outcome = stage.persist_cursor();
                    (stage, outcome)
                })
                .await;
                if let Ok((stage, Err(e))) = persisted {
                    tracing::error!(stage = %stage.name, error = %e, "cannot persist bus acknowledgements");
                }
            }
        });
        Ok(stage)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, max: usize) -> Vec<(u64, Message, u64)> {
        let now = Instant::now();
        let mut state = self.lock();
        // Messages whose consumer went quiet go back to the front, in order.
        let overdue: Vec<u64> = state
            .in_flight
            .iter()
            .filter(|(_, (_, _, due))| *due <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in overdue.into_iter().rev() {
            if let Some((message, deliveries, _)) = state.in_flight.remove(&seq) {
                state.pending.push_front((seq, message, deliveries));
            }
        }
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some((seq, message, deliveries)) = state.pending.pop_front() else {
                break;
            };
            state
                .in_flight
                .insert(seq, (message.clone(), deliveries + 1, now + self.ack_wait));
            taken.push((seq, message, deliveries));
        }
        taken
    }

    fn ack(&self, seq: u64) {
        self.ack_many(std::iter::once(seq));
    }

    /// Acknowledges under one lock: the writer thread takes the same lock to complete
    /// publishes, so a consumer acking one by one would hold them up.
    fn ack_many(&self, seqs: impl Iterator<Item = u64>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        for seq in seqs {
            let Some((message, _, _)) = state.in_flight.remove(&seq) else {
                continue;
            };
            state.bytes = state.bytes.saturating_sub(message.size());
            if seq < state.commit {
                continue;
            }
            state.acked_above.insert(seq);
            state.cursor_dirty = true;
        }
        while state.acked_above.remove(&state.commit) {
            state.commit += 1;
        }
    }

    /// Removes messages wherever they are (pending or in flight) as if acknowledged.
    fn remove(&self, seqs: &[u64]) -> u64 {
        let wanted: BTreeSet<u64> = seqs.iter().copied().collect();
        {
            let mut state = self.lock();
            let mut moved = Vec::new();
            state.pending.retain(|(seq, message, _)| {
                if wanted.contains(seq) {
                    moved.push((*seq, message.clone()));
                    false
                } else {
                    true
                }
            });
            // Pending ones count as in flight for a moment, so acknowledging them settles
            // the byte count and the commit point the same way.
            let due = Instant::now() + self.ack_wait;
            for (seq, message) in moved {
                state.in_flight.insert(seq, (message, 0, due));
            }
        }
        let present: Vec<u64> = {
            let state = self.lock();
            wanted
                .iter()
                .copied()
                .filter(|seq| state.in_flight.contains_key(seq))
                .collect()
        };
        let count = present.len() as u64;
        self.ack_many(present.into_iter());
        count
    }

    /// Pushes an in-flight message's redelivery a full ack wait into the future.
    fn extend(&self, seq: u64) {
        let due = Instant::now() + self.ack_wait;
        if let Some(entry) = self.lock().in_flight.get_mut(&seq) {
            entry.2 = due;
        }
    }

    /// Makes an in-flight message due again after `delay`, and wakes a fetch waiting for it.
    fn release(&self, seq: u64, delay: Duration) {
        {
            let mut state = self.lock();
            let Some(entry) = state.in_flight.get_mut(&seq) else {
                return;
            };
            entry.2 = Instant::now() + delay;
        }
        // A waiting fetch re-reads the earliest due time when woken.
        self.available.notify_waiters();
    }

    /// Writes the commit point if it moved, then recycles (or deletes) segments wholly
    /// below it.
    fn persist_cursor(&self) -> Result<(), BusError> {
        let (commit, obsolete) = {
            let mut state = self.lock();
            if !state.cursor_dirty {
                return Ok(());
            }
            state.cursor_dirty = false;
            let commit = state.commit;
            // A segment is obsolete when the next one starts at or below the commit point.
            let mut obsolete = Vec::new();
            while state.segments.len() > 1 && state.segments[1].0 <= commit {
                obsolete.push(state.segments.remove(0));
            }
            (commit, obsolete)
        };
        write_atomic(&self.dir.join(CURSOR_FILE), &commit.to_le_bytes())?;
        for (first, path) in obsolete {
            if self.lock().spares.len() < MAX_SPARES {
                let spare = self.dir.join(format!("{SPARE_PREFIX}{first:020}"));
                std::fs::rename(&path, &spare)?;
                self.lock().spares.push(spare);
            } else {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

fn read_cursor(dir: &Path) -> Result<u64, BusError> {
    match std::fs::read(dir.join(CURSOR_FILE)) {
        Ok(bytes) if bytes.len() == 8 => Ok(u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))),
        Ok(_) => Err(BusError::Invalid(format!(
            "{} is corrupt",
            dir.join(CURSOR_FILE).display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// The appending end of a stage's log.
struct SegmentWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    next_seq: u64,
    segment_bytes: u64,
}

impl SegmentWriter {
    fn open(stage: &Stage, next_seq: u64, segment_bytes: u64) -> Result<Self, BusError> {
        let newest = stage.lock().segments.last().cloned();
        let (file, size) = match newest {
            Some((_, path)) => {
                let file = OpenOptions::new().append(true).open(&path)?;
                let size = file.metadata()?.len();
                (file, size)
            }
            None => {
                let path = segment_path(&stage.dir, next_seq);
                let file = OpenOptions::new().create(true).append(true).open(&path)?;
                sync_dir(&stage.dir)?;
                stage.lock().segments.push((next_seq, path));
                (file, 0)
            }
        };
        Ok(Self {
            dir: stage.dir.clone(),
            file,
            size,
            next_seq,
            segment_bytes,
        })
    }

    /// Appends one record per batch and syncs once; returns each batch's first seq.
    fn append(&mut self, stage: &Stage, batches: &[&[Message]]) -> std::io::Result<Vec<u64>> {
        if self.size >= self.segment_bytes {
            // A recycled file may be longer than what was written to it: cut its old tail.
            self.file.set_len(self.size)?;
            let path = segment_path(&self.dir, self.next_seq);
            let spare = stage.lock().spares.pop();
            self.file = match spare {
                Some(spare) => {
                    std::fs::rename(&spare, &path)?;
                    // Overwritten from the start; what lies beyond is never read (see read_segment).
                    OpenOptions::new().write(true).open(&path)?
                }
                None => OpenOptions::new().create(true).append(true).open(&path)?,
            };
            sync_dir(&self.dir)?;
            self.size = 0;
            stage.lock().segments.push((self.next_seq, path));
        }
        let mut buffer = Vec::new();
        let mut firsts = Vec::with_capacity(batches.len());
        let mut seq = self.next_seq;
        for batch in batches {
            firsts.push(seq);
            encode_record(&mut buffer, seq, batch);
            seq += batch.len() as u64;
        }
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        self.size += buffer.len() as u64;
        self.next_seq = seq;
        Ok(firsts)
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The stage's writer thread: group commit.
fn write_loop(
    stage: std::sync::Weak<Stage>,
    mut log: SegmentWriter,
    mut requests: mpsc::Receiver<WriteRequest>,
) {
    while let Some(first) = requests.blocking_recv() {
        let mut group = vec![first];
        while group.len() < 4096 {
            match requests.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let Some(stage) = stage.upgrade() else { return };
        let batches: Vec<&[Message]> = group.iter().map(|r| r.messages.as_slice()).collect();
        match log.append(&stage, &batches) {
            Ok(firsts) => {
                {
                    let mut state = stage.lock();
                    for (request, first) in group.iter().zip(&firsts) {
                        for (offset, message) in request.messages.iter().enumerate() {
                            state
                                .pending
                                .push_back((first + offset as u64, message.clone(), 0));
                        }
                    }
                }
                stage.available.notify_waiters();
                for request in group {
                    let _ = request.reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(stage = %stage.name, error = %e, "bus write failed");
                for request in group {
                    let _ = request
                        .reply
                        .send(Err(BusError::Unavailable(format!("write failed: {e}"))));
                }
            }
        }
    }
}

/// `[len u32][crc32 u32][first_seq u64][count u32]([id_len u16][id][len u32][payload])*`
fn encode_record(out: &mut Vec<u8>, first_seq: u64, messages: &[Message]) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for message in messages {
        let id = message.id.as_bytes();
        let id_len = id.len().min(u16::MAX as usize);
        out.extend_from_slice(&(id_len as u16).to_le_bytes());
        out.extend_from_slice(&id[..id_len]);
        out.extend_from_slice(&(message.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&message.payload);
    }
    let body_len = (out.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn decode_body(body: &[u8]) -> Option<(u64, Vec<Message>)> {
    let mut at = 0;
    let mut take = |n: usize| {
        let slice = body.get(at..at + n)?;
        at += n;
        Some(slice)
    };
    let first = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut messages = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let id_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let id = String::from_utf8(take(id_len)?.to_vec()).ok()?;
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let payload = Bytes::copy_from_slice(take(len)?);
        messages.push(Message { id, payload });
    }
    (at == body.len()).then_some((first, messages))
}

/// Every record of a segment that checks out and continues the sequence from `first_seq`.
/// Where that ends before the file does, the rest is a torn write from a crash or a recycled
/// file's old records: in the newest segment it is cut off.
fn read_segment(
    path: &Path,
    first_seq: u64,
    newest: bool,
) -> Result<Vec<(u64, Vec<Message>)>, BusError> {
    let mut file = OpenOptions::new().read(true).write(newest).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut at = 0;
    let mut expected = first_seq;
    while at < bytes.len() {
        let record = bytes.get(at..at + HEADER).and_then(|header| {
            let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
            if len > MAX_RECORD {
                return None;
            }
            let body = bytes.get(at + HEADER..at + HEADER + len)?;
            if crc32fast::hash(body) != crc {
                return None;
            }
            decode_body(body)
                .filter(|(first, _)| *first == expected)
                .map(|decoded| (decoded, HEADER + len))
        });
        match record {
            Some((decoded, len)) => {
                expected += decoded.1.len() as u64;
                records.push(decoded);
                at += len;
            }
            None if newest => {
                tracing::warn!(path = %path.display(), offset = at, dropped_bytes = bytes.len() - at, "cutting a torn or stale tail off the bus log");
                file.set_len(at as u64)?;
                file.seek(SeekFrom::End(0))?;
                file.sync_all()?;
                break;
            }
            None => {
                tracing::warn!(path = %path.display(), offset = at, "a bus segment ends before its file does (a recycled file's old tail, or corruption); the rest is ignored");
                break;
            }
        }
    }
    Ok(records)
}
