//! How files of a partition are replaced (compaction, erasure) without a reader ever seeing an
//! event twice or not at all.
//!
//! Object stores cannot swap several objects at once, so a replacement is three steps:
//! 1. a **note** `_sluice/replaced/<id>.json` naming the files it replaces is written;
//! 2. the **output** `rewrite-<id>.parquet` is written next to them: from this moment the
//!    replacement is committed;
//! 3. the replaced files are deleted ([`finish_pending`]) once no query can still be reading
//!    them: a query that listed them before step 2 reads them whole.
//!
//! A reader lists a partition, then reads the note of every `rewrite-<id>.parquet` it listed
//! and leaves out the files that note names ([`live`]). A note without its output is a
//! replacement that never committed and changes nothing. Notes are deleted only
//! [`NOTE_GRACE`] after their replaced files are gone, so a reader's note always outlives the
//! listing it was read for. A crash at any step leaves a state readers see correctly, and
//! [`finish_pending`] completes it.
//!
//! An engine that lists the prefix itself (DuckDB's `read_parquet`, Athena, Trino) ignores the
//! notes: between steps 2 and 3 it sees the replaced rows twice, and it never misses one.
//!
//! Paths here are relative to a tenant's view of the store (`dataset=…/dt=…/hour=…/…`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};

use crate::ArchiveError;

/// Where the notes of replacements live, below a tenant's prefix (outside every partition, so
/// a reader of `dataset=*/dt=*/hour=*/*.parquet` never lists them).
pub const NOTES_DIR: &str = "_sluice/replaced";
/// The name prefix of a replacement's output file.
pub const OUTPUT_PREFIX: &str = "rewrite-";
/// How long a note is kept after the files it names are deleted: far longer than a query's
/// listing can be older than its note lookups.
pub const NOTE_GRACE: Duration = Duration::from_secs(3600);

/// What a note records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Note {
    /// The partition directory (`dataset=…/dt=…/hour=…`).
    pub partition: String,
    /// File names in that directory the output replaces.
    pub replaces: Vec<String>,
    /// Why: `compaction` or `erasure`.
    pub reason: String,
}

/// The id of a replacement output, from its file name.
pub fn output_id(file_name: &str) -> Option<&str> {
    file_name
        .strip_prefix(OUTPUT_PREFIX)?
        .strip_suffix(".parquet")
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn note_path(id: &str) -> Path {
    Path::from(format!("{NOTES_DIR}/{id}.json"))
}

/// Notes already read, by output id (`None`: the output has no note any more). A note never
/// changes once written, so entries never go stale.
#[derive(Debug, Clone, Default)]
pub struct Notes(Arc<Mutex<HashMap<String, Option<Arc<Note>>>>>);

/// Notes kept in memory at most; a data plane has a few per compacted partition.
const NOTES_CACHED: usize = 100_000;

impl Notes {
    async fn get(
        &self,
        store: &dyn ObjectStore,
        id: &str,
    ) -> Result<Option<Arc<Note>>, ArchiveError> {
        if let Some(known) = self.lock().get(id) {
            return Ok(known.clone());
        }
        let note = match store.get(&note_path(id)).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                Some(Arc::new(serde_json::from_slice::<Note>(&bytes).map_err(
                    |e| ArchiveError::Config(format!("replacement note {id}: {e}")),
                )?))
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let mut cache = self.lock();
        if cache.len() >= NOTES_CACHED {
            cache.clear();
        }
        cache.insert(id.to_owned(), note.clone());
        Ok(note)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<Note>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn parent_and_name(path: &Path) -> (String, String) {
    let text = path.as_ref();
    match text.rsplit_once('/') {
        Some((parent, name)) => (parent.to_owned(), name.to_owned()),
        None => (String::new(), text.to_owned()),
    }
}

/// The objects of a listing a reader should read: without the files that committed
/// replacements replace. The listing must be taken before this is called.
pub async fn live(
    store: &dyn ObjectStore,
    notes: &Notes,
    listed: Vec<ObjectMeta>,
) -> Result<Vec<ObjectMeta>, ArchiveError> {
    let mut replaced: HashSet<(String, String)> = HashSet::new();
    for meta in &listed {
        let (parent, name) = parent_and_name(&meta.location);
        let Some(id) = output_id(&name) else { continue };
        if let Some(note) = notes.get(store, id).await?
            && note.partition == parent
        {
            replaced.extend(note.replaces.iter().map(|r| (parent.clone(), r.clone())));
        }
    }
    if replaced.is_empty() {
        return Ok(listed);
    }
    Ok(listed
        .into_iter()
        .filter(|meta| !replaced.contains(&parent_and_name(&meta.location)))
        .collect())
}

/// The live Parquet files of one partition directory (`dataset=…/dt=…/hour=…`).
pub async fn live_files(
    store: &dyn ObjectStore,
    notes: &Notes,
    partition: &str,
) -> Result<Vec<ObjectMeta>, ArchiveError> {
    let listed: Vec<ObjectMeta> = store
        .list(Some(&Path::from(partition)))
        .try_filter(|m| std::future::ready(m.location.as_ref().ends_with(".parquet")))
        .try_collect()
        .await?;
    live(store, notes, listed).await
}

/// Replaces `replaced` (files of `partition`) by one file holding `output`, committed once
/// this returns `Ok`; the replaced files stay for readers that listed them until
/// [`finish_pending`] (or the caller) deletes them. Returns the output's path.
pub async fn replace(
    store: &Arc<dyn ObjectStore>,
    partition: &str,
    replaced: &[ObjectMeta],
    output: Bytes,
    reason: &str,
) -> Result<Path, ArchiveError> {
    let id = uuid::Uuid::now_v7().as_simple().to_string();
    let note = Note {
        partition: partition.to_owned(),
        replaces: replaced
            .iter()
            .map(|m| parent_and_name(&m.location).1)
            .collect(),
        reason: reason.to_owned(),
    };
    let body = serde_json::to_vec(&note)
        .map_err(|e| ArchiveError::Config(format!("replacement note: {e}")))?;
    store
        .put(&note_path(&id), PutPayload::from(Bytes::from(body)))
        .await?;
    let path = Path::from(format!("{partition}/{OUTPUT_PREFIX}{id}.parquet"));
    crate::encode::upload(store, &path, output).await?;
    Ok(path)
}

/// Deletes `paths`; one already gone is not an error.
pub async fn delete_all(
    store: &Arc<dyn ObjectStore>,
    paths: impl Iterator<Item = Path>,
) -> Result<u64, ArchiveError> {
    let paths: Vec<Path> = paths.collect();
    let locations = futures_util::stream::iter(paths.into_iter().map(Ok)).boxed();
    let mut deleted = store.delete_stream(locations);
    let mut count = 0;
    while let Some(outcome) = deleted.next().await {
        match outcome {
            Ok(_) => count += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(count)
}

/// What [`finish_pending`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Replaced files deleted.
    pub files_deleted: u64,
    /// Notes deleted (their grace had passed).
    pub notes_deleted: u64,
}

/// Deletes the files committed replacements replaced once their notes are `keep` old (the
/// longest a query runs), including what a crash left, and deletes notes `keep + grace`
/// old: for each such note, if its output exists the replaced files are deleted (again); a
/// note whose output never appeared changes nothing and just goes.
pub async fn finish_pending(
    store: &Arc<dyn ObjectStore>,
    now: std::time::SystemTime,
    keep: Duration,
    grace: Duration,
) -> Result<Finished, ArchiveError> {
    let notes: Vec<ObjectMeta> = store
        .list(Some(&Path::from(NOTES_DIR)))
        .try_collect()
        .await?;
    let mut done = Finished::default();
    for meta in notes {
        let (_, name) = parent_and_name(&meta.location);
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        let age = now
            .duration_since(meta.last_modified.into())
            .unwrap_or_default();
        if age < keep {
            continue;
        }
        let note: Note = match store.get(&meta.location).await {
            Ok(found) => match serde_json::from_slice(&found.bytes().await?) {
                Ok(note) => note,
                Err(_) => continue,
            },
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let output = Path::from(format!("{}/{OUTPUT_PREFIX}{id}.parquet", note.partition));
        let committed = match store.head(&output).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if committed {
            done.files_deleted += delete_all(
                store,
                note.replaces
                    .iter()
                    .map(|r| Path::from(format!("{}/{r}", note.partition))),
            )
            .await?;
        }
        if age >= keep + grace {
            done.notes_deleted += delete_all(store, std::iter::once(meta.location)).await?;
        }
    }
    Ok(done)
}

/// A view of a tenant's archive whose listings hold only live files ([`live`]): what the
/// query role reads through, so a query never sees a replaced file next to its replacement.
/// Everything else passes through.
#[derive(Debug)]
pub struct CommittedView {
    inner: Arc<dyn ObjectStore>,
    notes: Notes,
}

impl CommittedView {
    pub fn new(inner: Arc<dyn ObjectStore>, notes: Notes) -> Self {
        Self { inner, notes }
    }
}

impl std::fmt::Display for CommittedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommittedView({})", self.inner)
    }
}

fn not_live(e: ArchiveError) -> object_store::Error {
    match e {
        ArchiveError::Store(e) => e,
        other => object_store::Error::Generic {
            store: "archive",
            source: Box::new(other),
        },
    }
}

#[async_trait::async_trait]
impl ObjectStore for CommittedView {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listing = self.inner.list(prefix);
        let (inner, notes) = (self.inner.clone(), self.notes.clone());
        futures_util::stream::once(async move {
            let listed: Vec<ObjectMeta> = listing.try_collect().await?;
            live(inner.as_ref(), &notes, listed).await.map_err(not_live)
        })
        .map_ok(|live| futures_util::stream::iter(live.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        result.objects = live(self.inner.as_ref(), &self.notes, result.objects)
            .await
            .map_err(not_live)?;
        Ok(result)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    async fn put(store: &Arc<dyn ObjectStore>, path: &str) {
        store
            .put(&Path::from(path), PutPayload::from_static(b"x"))
            .await
            .expect("put");
    }

    async fn names(store: &Arc<dyn ObjectStore>, partition: &str) -> Vec<String> {
        let mut names: Vec<String> = live_files(store.as_ref(), &Notes::default(), partition)
            .await
            .expect("live")
            .into_iter()
            .map(|m| parent_and_name(&m.location).1)
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_reader_sees_old_files_or_the_output_never_both() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let partition = "dataset=events/dt=2026-11-01/hour=00";
        for name in ["part-a.parquet", "part-b.parquet", "part-c.parquet"] {
            put(&store, &format!("{partition}/{name}")).await;
        }
        let replaced: Vec<ObjectMeta> = live_files(store.as_ref(), &Notes::default(), partition)
            .await
            .expect("live")
            .into_iter()
            .filter(|m| !m.location.as_ref().ends_with("part-c.parquet"))
            .collect();

        // Crash after the note: nothing changed for readers, and the note goes after its grace.
        let id = "0".repeat(32);
        let note = Note {
            partition: partition.into(),
            replaces: vec!["part-a.parquet".into(), "part-b.parquet".into()],
            reason: "compaction".into(),
        };
        store
            .put(
                &note_path(&id),
                PutPayload::from(serde_json::to_vec(&note).expect("json")),
            )
            .await
            .expect("note");
        assert_eq!(
            names(&store, partition).await,
            ["part-a.parquet", "part-b.parquet", "part-c.parquet"]
        );
        // Crash after the output: readers see only the output and the untouched file.
        put(&store, &format!("{partition}/{OUTPUT_PREFIX}{id}.parquet")).await;
        let output = format!("{OUTPUT_PREFIX}{id}.parquet");
        assert_eq!(
            names(&store, partition).await,
            ["part-c.parquet", output.as_str()]
        );
        let keep = Duration::from_secs(30);
        let finished = finish_pending(&store, std::time::SystemTime::now(), keep, NOTE_GRACE)
            .await
            .expect("finish");
        assert_eq!(finished, Finished::default(), "a query may still read them");
        let soon = std::time::SystemTime::now() + keep;
        let finished = finish_pending(&store, soon, keep, NOTE_GRACE)
            .await
            .expect("finish");
        assert_eq!(
            finished,
            Finished {
                files_deleted: 2,
                notes_deleted: 0
            }
        );
        assert_eq!(
            names(&store, partition).await,
            ["part-c.parquet", output.as_str()]
        );
        let later = soon + NOTE_GRACE;
        let finished = finish_pending(&store, later, keep, NOTE_GRACE)
            .await
            .expect("finish");
        assert_eq!(finished.notes_deleted, 1);

        // A whole replacement of the two remaining files.
        let live = live_files(store.as_ref(), &Notes::default(), partition)
            .await
            .expect("live");
        let path = replace(
            &store,
            partition,
            &live,
            Bytes::from_static(b"y"),
            "erasure",
        )
        .await
        .expect("replace");
        assert_eq!(names(&store, partition).await, [parent_and_name(&path).1]);
        // `replaced` (a and b) are long gone: deleting them again is fine.
        delete_all(&store, replaced.into_iter().map(|m| m.location))
            .await
            .expect("deleting what is gone is not an error");
    }

    #[test]
    fn only_well_formed_outputs_have_ids() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(output_id(&format!("rewrite-{id}.parquet")), Some(id));
        for bad in ["part-x.parquet", "rewrite-.parquet", "rewrite-../x.parquet"] {
            assert_eq!(output_id(bad), None, "{bad}");
        }
    }
}
