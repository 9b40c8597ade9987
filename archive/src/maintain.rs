//! Keeping an archive correct and small for months: which events a partition already holds
//! (so a redelivered event is not written twice), compaction of a partition's small files,
//! erasure of a person's rows, and retention. Every rewrite goes through [`crate::commit`],
//! so a reader never sees an event twice or not at all, and a crash at any point leaves the
//! archive whole.
//!
//! Paths are relative to a tenant's view of the store.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
#[expect(
    deprecated,
    reason = "parquet 59 deprecates its object_store reader for a hand-written AsyncFileReader (apache/arrow-rs#10308); it still works, and DataFusion reads the same files"
)]
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

use crate::ArchiveError;
use crate::commit::{self, Notes};

/// A partition directory: `dataset=<d>/dt=<YYYY-MM-DD>/hour=<HH>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    pub dataset: String,
    pub dt: String,
    pub hour: String,
}

impl Partition {
    pub fn dir(&self) -> String {
        format!("dataset={}/dt={}/hour={}", self.dataset, self.dt, self.hour)
    }

    /// The partition of a data file's path, when it is one.
    pub fn of(path: &Path) -> Option<Self> {
        let mut parts = path.as_ref().split('/');
        let dataset = parts.next()?.strip_prefix("dataset=")?;
        let dt = parts.next()?.strip_prefix("dt=")?;
        let hour = parts.next()?.strip_prefix("hour=")?;
        let file = parts.next()?;
        (parts.next().is_none() && file.ends_with(".parquet")).then(|| Self {
            dataset: dataset.to_owned(),
            dt: dt.to_owned(),
            hour: hour.to_owned(),
        })
    }

    /// Unix milliseconds at which the partition's hour ends, when its name is a valid hour.
    pub fn ends_at_ms(&self) -> Option<i64> {
        let mut ymd = self.dt.splitn(3, '-').map(str::parse::<u16>);
        let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day))) = (ymd.next(), ymd.next(), ymd.next())
        else {
            return None;
        };
        let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
        let day =
            time::Date::from_calendar_date(i32::from(year), month, u8::try_from(day).ok()?).ok()?;
        let hour: u8 = self.hour.parse().ok().filter(|h| *h < 24)?;
        let start = day.with_hms(hour, 0, 0).ok()?.assume_utc();
        Some((start.unix_timestamp() + 3600) * 1000)
    }
}

/// Every live data file of the tenant, by partition.
pub async fn live_by_partition(
    store: &Arc<dyn ObjectStore>,
    notes: &Notes,
) -> Result<BTreeMap<Partition, Vec<ObjectMeta>>, ArchiveError> {
    let listed: Vec<ObjectMeta> = store
        .list(None)
        .try_filter(|m| std::future::ready(Partition::of(&m.location).is_some()))
        .try_collect()
        .await?;
    let mut out: BTreeMap<Partition, Vec<ObjectMeta>> = BTreeMap::new();
    for meta in commit::live(store.as_ref(), notes, listed).await? {
        if let Some(partition) = Partition::of(&meta.location) {
            out.entry(partition).or_default().push(meta);
        }
    }
    Ok(out)
}

fn column_index(
    builder_schema: &parquet::schema::types::SchemaDescriptor,
    name: &str,
) -> Option<usize> {
    (0..builder_schema.num_columns()).find(|i| builder_schema.column(*i).name() == name)
}

/// Of `wanted` values, those a column of the file holds. Each row group's bloom filter rules
/// out most groups before a value is read.
async fn values_held(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    column: &str,
    wanted: &HashSet<String>,
) -> Result<HashSet<String>, ArchiveError> {
    #[expect(deprecated, reason = "see the import")]
    let reader =
        ParquetObjectReader::new(store.clone(), meta.location.clone()).with_file_size(meta.size);
    let mut builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let metadata = builder.metadata().clone();
    let schema = metadata.file_metadata().schema_descr();
    let Some(index) = column_index(schema, column) else {
        return Ok(HashSet::new());
    };
    let mut groups = Vec::new();
    for group in 0..metadata.num_row_groups() {
        let maybe = match builder
            .get_row_group_column_bloom_filter(group, index)
            .await?
        {
            Some(bloom) => wanted.iter().any(|v| bloom.check(v.as_str())),
            None => true,
        };
        if maybe {
            groups.push(group);
        }
    }
    let mut held = HashSet::new();
    if groups.is_empty() {
        return Ok(held);
    }
    let mut batches = builder
        .with_projection(ProjectionMask::leaves(schema, [index]))
        .with_row_groups(groups)
        .build()?;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        if let Some(values) = batch.column(0).as_any().downcast_ref::<StringArray>() {
            for i in 0..values.len() {
                if values.is_valid(i) && wanted.contains(values.value(i)) {
                    held.insert(values.value(i).to_owned());
                }
            }
        }
    }
    Ok(held)
}

/// Of `candidates`, the event ids the partition's live files already hold.
pub async fn archived_ids(
    store: &Arc<dyn ObjectStore>,
    notes: &Notes,
    partition: &Partition,
    candidates: &HashSet<String>,
) -> Result<HashSet<String>, ArchiveError> {
    let mut found = HashSet::new();
    if candidates.is_empty() {
        return Ok(found);
    }
    for meta in commit::live_files(store.as_ref(), notes, &partition.dir()).await? {
        found.extend(values_held(store, &meta, "event_id", candidates).await?);
        if found.len() == candidates.len() {
            break;
        }
    }
    Ok(found)
}

/// Every row of a file.
async fn read_all(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
) -> Result<Vec<RecordBatch>, ArchiveError> {
    let bytes = store.get(&meta.location).await?.bytes().await?;
    blocking(move || {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ArchiveError::Config(format!("archive maintenance panicked: {e}")))?
}

/// The rows of `batches` for which `keep` says yes, as one sorted file's bytes, with the rows
/// kept and dropped.
fn rewrite(
    batches: Vec<RecordBatch>,
    mut keep: impl FnMut(&RecordBatch, usize) -> bool,
) -> Result<(Bytes, u64, u64), ArchiveError> {
    let schema = crate::record::schema();
    let mut kept = Vec::with_capacity(batches.len());
    let (mut rows, mut dropped) = (0u64, 0u64);
    for batch in batches {
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(keep(&batch, i)))
            .collect();
        let filtered = arrow::compute::filter_record_batch(&batch, &mask)?;
        dropped += (batch.num_rows() - filtered.num_rows()) as u64;
        rows += filtered.num_rows() as u64;
        kept.push(filtered);
    }
    let all = arrow::compute::concat_batches(&schema, &kept)?;
    let sorted = crate::record::sorted(&all)?;
    Ok((crate::encode::parquet(&sorted)?, rows, dropped))
}

fn text_at<'a>(batch: &'a RecordBatch, column: &str, row: usize) -> Option<&'a str> {
    let values = batch
        .column_by_name(column)?
        .as_any()
        .downcast_ref::<StringArray>()?;
    values.is_valid(row).then(|| values.value(row))
}

/// What one compaction of a partition did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub files_in: u64,
    pub files_out: u64,
    pub rows: u64,
    /// Rows dropped because another row of the partition has the same event id.
    pub duplicates: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Merges the partition's small files (under half of `target_bytes`) into files of up to
/// `target_bytes`, keeping one row per event id. Nothing happens unless two files are small.
pub async fn compact(
    store: &Arc<dyn ObjectStore>,
    partition: &Partition,
    files: Vec<ObjectMeta>,
    target_bytes: u64,
) -> Result<Option<Compaction>, ArchiveError> {
    let (mut small, large): (Vec<ObjectMeta>, Vec<ObjectMeta>) =
        files.into_iter().partition(|m| m.size < target_bytes / 2);
    if small.len() < 2 {
        return Ok(None);
    }
    // Ids of the files that stay as they are: a small file's copy of one of them goes.
    let mut seen: HashSet<String> = HashSet::new();
    for meta in &large {
        for batch in read_all(store, meta).await? {
            if let Some(ids) = batch
                .column_by_name("event_id")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            {
                seen.extend(ids.iter().flatten().map(str::to_owned));
            }
        }
    }
    small.sort_by_key(|m| m.location.clone());
    let mut bins: Vec<Vec<ObjectMeta>> = Vec::new();
    let mut bin_bytes = 0u64;
    for meta in small {
        if bins.is_empty() || bin_bytes + meta.size > target_bytes {
            bins.push(Vec::new());
            bin_bytes = 0;
        }
        bin_bytes += meta.size;
        if let Some(bin) = bins.last_mut() {
            bin.push(meta);
        }
    }
    let mut done = Compaction::default();
    let dir = partition.dir();
    for bin in bins {
        if bin.len() < 2 && done.files_in > 0 {
            // A last file alone is not worth rewriting; the next pass takes it with whatever
            // arrives (its copies of other files' ids, if any, stay until then).
            continue;
        }
        let mut batches = Vec::new();
        for meta in &bin {
            batches.extend(read_all(store, meta).await?);
        }
        let mut bin_seen = std::mem::take(&mut seen);
        let (bytes, rows, duplicates, bin_seen) = blocking(move || {
            let (bytes, rows, duplicates) = rewrite(batches, |batch, row| {
                text_at(batch, "event_id", row).is_none_or(|id| bin_seen.insert(id.to_owned()))
            })?;
            Ok((bytes, rows, duplicates, bin_seen))
        })
        .await?;
        seen = bin_seen;
        done.files_in += bin.len() as u64;
        done.bytes_in += bin.iter().map(|m| m.size).sum::<u64>();
        done.bytes_out += bytes.len() as u64;
        done.rows += rows;
        done.duplicates += duplicates;
        commit::replace(store, &dir, &bin, bytes, "compaction").await?;
        done.files_out += 1;
    }
    Ok((done.files_in > 0).then_some(done))
}

/// Whose rows an erasure removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    pub user_ids: HashSet<String>,
    pub anonymous_ids: HashSet<String>,
}

/// What an erasure removed from the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    pub files_scanned: u64,
    /// Files that held the person's rows, rewritten without them. They stay for the queries
    /// that may be reading them until the caller deletes them.
    pub files_rewritten: Vec<String>,
    pub rows_removed: u64,
}

/// Removes every row of `person` from what the tenant's archive shows, one file at a time
/// (each rewrite is committed whole; a crash leaves some files done and the rest as they
/// were, and running the erasure again finishes it). The files that held the rows are
/// replaced, not yet deleted: delete [`Erasure::files_rewritten`] once no query reads them.
pub async fn erase(
    store: &Arc<dyn ObjectStore>,
    notes: &Notes,
    person: &Person,
) -> Result<Erasure, ArchiveError> {
    let mut done = Erasure::default();
    let files: Vec<(Partition, ObjectMeta)> = live_by_partition(store, notes)
        .await?
        .into_iter()
        .flat_map(|(p, files)| files.into_iter().map(move |m| (p.clone(), m)))
        .collect();
    done.files_scanned = files.len() as u64;
    let person = Arc::new(person.clone());
    // Bloom filters first, many files at once: most files hold none of the person's rows.
    let holding: Vec<(Partition, ObjectMeta)> = futures_util::stream::iter(files)
        .map(|(partition, meta)| {
            let (store, person) = (store.clone(), person.clone());
            async move {
                let users = values_held(&store, &meta, "user_id", &person.user_ids).await?;
                let anonymous =
                    values_held(&store, &meta, "anonymous_id", &person.anonymous_ids).await?;
                Ok::<_, ArchiveError>(
                    (!users.is_empty() || !anonymous.is_empty()).then_some((partition, meta)),
                )
            }
        })
        .buffer_unordered(16)
        .try_filter_map(|found| std::future::ready(Ok(found)))
        .try_collect()
        .await?;
    for (partition, meta) in holding {
        let batches = read_all(store, &meta).await?;
        let who = person.clone();
        let (bytes, _, removed) = blocking(move || {
            rewrite(batches, |batch, row| {
                let user = text_at(batch, "user_id", row).is_some_and(|u| who.user_ids.contains(u));
                let anonymous = text_at(batch, "anonymous_id", row)
                    .is_some_and(|a| who.anonymous_ids.contains(a));
                !(user || anonymous)
            })
        })
        .await?;
        if removed == 0 {
            continue;
        }
        commit::replace(
            store,
            &partition.dir(),
            std::slice::from_ref(&meta),
            bytes,
            "erasure",
        )
        .await?;
        done.rows_removed += removed;
        done.files_rewritten.push(meta.location.to_string());
    }
    done.files_rewritten.sort();
    Ok(done)
}

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Days (`dt` partitions) removed.
    pub days: u64,
    pub files: u64,
}

/// Deletes every day of `dataset` before `first_kept` (`YYYY-MM-DD`).
pub async fn expire(
    store: &Arc<dyn ObjectStore>,
    dataset: &str,
    first_kept: &str,
) -> Result<Expiry, ArchiveError> {
    let mut done = Expiry::default();
    let days = store
        .list_with_delimiter(Some(&Path::from(format!("dataset={dataset}"))))
        .await?;
    for prefix in days.common_prefixes {
        let Some(day) = prefix
            .parts()
            .next_back()
            .and_then(|p| p.as_ref().strip_prefix("dt=").map(str::to_owned))
        else {
            continue;
        };
        if day.as_str() >= first_kept {
            continue;
        }
        let objects: Vec<Path> = store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        done.files += commit::delete_all(store, objects.into_iter()).await?;
        done.days += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BatchBuilder, Envelope};
    use object_store::local::LocalFileSystem;

    /// One file of `events` (id, user) in `partition`, as the archiver writes it.
    async fn file(store: &Arc<dyn ObjectStore>, partition: &Partition, events: &[(&str, &str)]) {
        let mut rows = BatchBuilder::default();
        for (id, user) in events {
            let text = serde_json::json!({
                "message_id": id, "type": "track", "event": "Order Completed", "user_id": user,
                "anonymous_id": format!("anon-{user}"), "source": "web", "pipeline_id": "p",
                "received_at": format!("{}T{}:30:00Z", partition.dt, partition.hour),
            })
            .to_string();
            let event = Envelope::parse(&text).expect("event");
            let at = event.received_at().expect("time");
            rows.push(&event, at);
        }
        let bytes = crate::encode::parquet(&rows.finish().expect("batch")).expect("parquet");
        let path = Path::from(format!(
            "{}/part-{}.parquet",
            partition.dir(),
            uuid::Uuid::now_v7().as_simple()
        ));
        crate::encode::upload(store, &path, bytes)
            .await
            .expect("upload");
    }

    fn hour(h: u8) -> Partition {
        Partition {
            dataset: "events".into(),
            dt: format!("2026-11-{:02}", 1 + h / 24),
            hour: format!("{:02}", h % 24),
        }
    }

    /// Event ids of every live row, in the order read.
    async fn rows(store: &Arc<dyn ObjectStore>) -> Vec<String> {
        let mut ids = Vec::new();
        for files in live_by_partition(store, &Notes::default())
            .await
            .expect("list")
            .values()
        {
            for meta in files {
                for batch in read_all(store, meta).await.expect("read") {
                    for row in 0..batch.num_rows() {
                        ids.push(text_at(&batch, "event_id", row).expect("id").to_owned());
                    }
                }
            }
        }
        ids
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_erasure_and_retention_on_real_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("store"));
        let notes = Notes::default();
        // 48 hours, three small files each; e-2 of each hour is written twice (a redelivery
        // before the archiver checked), and user u-7 has an event in every hour.
        for h in 0..48u8 {
            let p = hour(h);
            let id = |n: u32| format!("{h}-e-{n}");
            let (a, b, c) = (id(1), id(2), id(3));
            file(&store, &p, &[(&a, "u-1"), (&b, "u-2")]).await;
            file(&store, &p, &[(&b, "u-2"), (&c, "u-7")]).await;
            file(&store, &p, &[(&id(4), "u-3")]).await;
        }
        let before = rows(&store).await;
        assert_eq!(before.len(), 48 * 5);

        let p = hour(5);
        let candidates: HashSet<String> = ["5-e-2", "5-e-9", "6-e-2"].map(String::from).into();
        let held = archived_ids(&store, &notes, &p, &candidates)
            .await
            .expect("ids");
        assert_eq!(held, HashSet::from(["5-e-2".to_owned()]));

        let mut compacted = Compaction::default();
        for (partition, files) in live_by_partition(&store, &notes).await.expect("list") {
            let done = compact(&store, &partition, files, 128 * 1024 * 1024)
                .await
                .expect("compact")
                .expect("three small files are compacted");
            compacted.files_in += done.files_in;
            compacted.files_out += done.files_out;
            compacted.duplicates += done.duplicates;
        }
        assert_eq!(
            (
                compacted.files_in,
                compacted.files_out,
                compacted.duplicates
            ),
            (144, 48, 48)
        );
        let after = rows(&store).await;
        assert_eq!(after.len(), 48 * 4);
        assert_eq!(
            after.iter().collect::<HashSet<_>>().len(),
            after.len(),
            "no id twice"
        );
        let by_partition = live_by_partition(&store, &notes).await.expect("list");
        assert!(by_partition.values().all(|files| files.len() == 1));
        // Compacting again does nothing.
        let (partition, files) = by_partition.into_iter().next().expect("a partition");
        assert_eq!(
            compact(&store, &partition, files, 128 * 1024 * 1024)
                .await
                .expect("compact"),
            None
        );

        let person = Person {
            user_ids: HashSet::from(["u-7".to_owned()]),
            anonymous_ids: HashSet::new(),
        };
        let erased = erase(&store, &notes, &person).await.expect("erase");
        assert_eq!((erased.files_scanned, erased.rows_removed), (48, 48));
        assert_eq!(erased.files_rewritten.len(), 48);
        let left = rows(&store).await;
        assert_eq!(left.len(), 48 * 3);
        assert!(
            left.iter().all(|id| !id.ends_with("-e-3")),
            "none of u-7's rows is left"
        );
        // By anonymous id, nothing of u-7 is left either; u-1's go.
        let person = Person {
            user_ids: HashSet::new(),
            anonymous_ids: HashSet::from(["anon-u-7".to_owned(), "anon-u-1".to_owned()]),
        };
        assert_eq!(
            erase(&store, &notes, &person)
                .await
                .expect("erase")
                .rows_removed,
            48
        );

        // Retention: the first day goes, the second stays.
        let expired = expire(&store, "events", "2026-11-02")
            .await
            .expect("expire");
        assert_eq!(expired.days, 1);
        let left = rows(&store).await;
        assert_eq!(left.len(), 24 * 2);
        assert!(
            left.iter()
                .all(|id| id.split('-').next().and_then(|h| h.parse::<u8>().ok()) >= Some(24))
        );
        // What the rewrites left behind (notes) goes once their grace is over.
        let later = std::time::SystemTime::now() + commit::NOTE_GRACE;
        let finished =
            commit::finish_pending(&store, later, std::time::Duration::ZERO, commit::NOTE_GRACE)
                .await
                .expect("finish");
        assert_eq!(finished.notes_deleted, 48 * 3);
    }

    #[test]
    fn partitions_are_read_from_paths_and_end_on_the_hour() {
        let p = Partition::of(&Path::from(
            "dataset=events/dt=2026-11-22/hour=09/part-x.parquet",
        ))
        .expect("a data file");
        assert_eq!(p.dir(), "dataset=events/dt=2026-11-22/hour=09");
        // 2026-11-22T10:00:00Z
        assert_eq!(p.ends_at_ms(), Some(1_795_341_600_000));
        for other in [
            "_sluice/replaced/x.json",
            "dataset=events/dt=2026-11-22/hour=09/x.json",
            "dataset=events/dt=2026-11-22/part-x.parquet",
        ] {
            assert_eq!(Partition::of(&Path::from(other)), None, "{other}");
        }
    }
}
