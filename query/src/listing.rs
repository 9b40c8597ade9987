//! The `events` table, whose listing is pruned by the query's filters on `dataset` and `dt`.
//!
//! DataFusion's listing table turns only equalities on partition columns into a listing
//! prefix: a range on `dt` (the usual "the last 7 days") lists the tenant's whole archive, one
//! LIST request per 1,000 files, one after the other. This table first lists the dataset and
//! day directories (one request per dataset), keeps the days the filters allow, and lists
//! only those: a run of days that reaches the newest day in one ranged listing (S3's
//! `start-after`), older runs a directory each, concurrently. DataFusion still applies every
//! filter to what is listed, so the pruning only ever leaves out files no row of which could
//! match.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray as _, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use futures_util::stream::{BoxStream, StreamExt as _, TryStreamExt as _};
use object_store::path::{Path, PathPart};
use object_store::{ListResult, ObjectMeta, ObjectStore};
use sluice_archive::commit::{CommittedView, Notes};

/// Directory listings of one scan in flight at once.
const LIST_CONCURRENCY: usize = 16;

/// The object stores of a session's scans, by the host of their URL: each scan whose filters
/// narrow the days gets its own store, listing only those days.
#[derive(Debug, Default)]
pub(crate) struct Scans {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    next: AtomicUsize,
}

impl Scans {
    fn add(&self, store: Arc<dyn ObjectStore>) -> String {
        let host = format!("scan-{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.clone(), store);
        host
    }

    pub(crate) fn get(&self, host: &str) -> Option<Arc<dyn ObjectStore>> {
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .cloned()
    }
}

/// The tenant's `events` table.
#[derive(Debug)]
pub(crate) struct Events {
    /// The table over the whole archive, used when no filter narrows the days.
    base: ListingTable,
    options: ListingOptions,
    file_schema: SchemaRef,
    /// The tenant's view of the store, replaced files included: directories are listed here.
    raw: Arc<dyn ObjectStore>,
    notes: Notes,
    scans: Arc<Scans>,
}

impl Events {
    pub(crate) fn new(
        url: ListingTableUrl,
        options: ListingOptions,
        file_schema: SchemaRef,
        raw: Arc<dyn ObjectStore>,
        notes: Notes,
        scans: Arc<Scans>,
    ) -> Result<Self> {
        let base = ListingTable::try_new(
            ListingTableConfig::new(url)
                .with_listing_options(options.clone())
                .with_schema(file_schema.clone()),
        )?;
        Ok(Self {
            base,
            options,
            file_schema,
            raw,
            notes,
            scans,
        })
    }

    /// The day directories of each dataset, and which of them `filters` (all on `dataset` and
    /// `dt` only) allow.
    async fn select(&self, state: &dyn Session, filters: &[&Expr]) -> Result<Selection> {
        let root = self.raw.list_with_delimiter(None).await?;
        let datasets: Vec<Path> = root
            .common_prefixes
            .into_iter()
            .filter(|p| last_value(p, "dataset").is_some())
            .collect();
        let days = futures_util::future::try_join_all(
            datasets
                .iter()
                .map(|d| self.raw.list_with_delimiter(Some(d))),
        )
        .await?;
        let mut candidates: Vec<(String, String, Path)> = Vec::new();
        for (dataset, listed) in datasets.iter().zip(days) {
            let Some(name) = last_value(dataset, "dataset") else {
                continue;
            };
            for day in listed.common_prefixes {
                if let Some(dt) = last_value(&day, "dt") {
                    candidates.push((name.clone(), dt, day));
                }
            }
        }
        let allowed = evaluate(state, filters, &candidates)?;
        let mut by_dataset: Vec<DatasetDays> = datasets
            .into_iter()
            .map(|dir| DatasetDays {
                dir,
                days: Vec::new(),
            })
            .collect();
        for ((name, _, day), allowed) in candidates.into_iter().zip(allowed) {
            if let Some(d) = by_dataset
                .iter_mut()
                .find(|d| last_value(&d.dir, "dataset").as_deref() == Some(name.as_str()))
            {
                d.days.push((day, allowed));
            }
        }
        for d in &mut by_dataset {
            // The order of the keys below them: how a ranged listing meets them.
            d.days.sort_by_cached_key(|(day, _)| format!("{day}/"));
        }
        Ok(Selection {
            datasets: by_dataset,
        })
    }
}

/// Whether `filter` can choose days: it reads `dt` (and perhaps `dataset`) and nothing else.
fn about_days(filter: &Expr) -> bool {
    let columns = filter.column_refs();
    columns.iter().any(|c| c.name == "dt")
        && columns
            .iter()
            .all(|c| c.name == "dt" || c.name == "dataset")
        && !filter.is_volatile()
}

/// Which of `candidates` (dataset, dt, directory) satisfy every one of `filters`.
fn evaluate(
    state: &dyn Session,
    filters: &[&Expr],
    candidates: &[(String, String, Path)],
) -> Result<Vec<bool>> {
    let Some(predicate) = conjunction(filters.iter().map(|f| (*f).clone())) else {
        return Ok(vec![true; candidates.len()]);
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("dt", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                candidates.iter().map(|c| c.0.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                candidates.iter().map(|c| c.1.as_str()),
            )),
        ],
    )?;
    let df_schema = DFSchema::try_from(schema)?;
    let physical = state.create_physical_expr(predicate, &df_schema)?;
    let result = physical.evaluate(&batch)?.into_array(batch.num_rows())?;
    let Some(result) = result.as_boolean_opt() else {
        return Ok(vec![true; candidates.len()]);
    };
    Ok(candidates
        .iter()
        .enumerate()
        // A value written percent-encoded may differ once decoded: such a day is kept.
        .map(|(i, c)| {
            (result.is_valid(i) && result.value(i)) || c.0.contains('%') || c.1.contains('%')
        })
        .collect())
}

/// `value` of a directory whose last segment is `column=value`.
fn last_value(dir: &Path, column: &str) -> Option<String> {
    let last = dir.parts().next_back()?;
    segment_value(&last, column).map(str::to_owned)
}

fn segment_value<'a>(part: &'a PathPart<'_>, column: &str) -> Option<&'a str> {
    part.as_ref()
        .split_once('=')
        .filter(|(name, _)| *name == column)
        .map(|(_, value)| value)
}

#[async_trait]
impl TableProvider for Events {
    fn schema(&self) -> SchemaRef {
        self.base.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.base.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(|p| p.as_slice()))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        let on_days: Vec<&Expr> = args
            .filters()
            .unwrap_or(&[])
            .iter()
            .filter(|f| about_days(f))
            .collect();
        if on_days.is_empty() {
            return self.base.scan_with_args(state, args).await;
        }
        let selection = self.select(state, &on_days).await?;
        let listed: Arc<dyn ObjectStore> = Arc::new(Listed {
            inner: self.raw.clone(),
            selection: Arc::new(selection),
        });
        let host = self
            .scans
            .add(Arc::new(CommittedView::new(listed, self.notes.clone())));
        let url = ListingTableUrl::parse(format!("sluice-archive://{host}/"))?;
        let table = ListingTable::try_new(
            ListingTableConfig::new(url)
                .with_listing_options(self.options.clone())
                .with_schema(self.file_schema.clone()),
        )?;
        table.scan_with_args(state, args).await
    }
}

/// Each dataset's day directories, in key order, and whether the scan reads each.
#[derive(Debug)]
struct Selection {
    datasets: Vec<DatasetDays>,
}

#[derive(Debug)]
struct DatasetDays {
    dir: Path,
    days: Vec<(Path, bool)>,
}

impl DatasetDays {
    /// Listings of the chosen days' files, each stream a run of consecutive chosen days.
    fn listings(
        &self,
        store: &Arc<dyn ObjectStore>,
    ) -> Vec<BoxStream<'static, object_store::Result<ObjectMeta>>> {
        let chosen: Arc<HashSet<Path>> = Arc::new(
            self.days
                .iter()
                .filter(|(_, allowed)| *allowed)
                .map(|(day, _)| day.clone())
                .collect(),
        );
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.days.len() {
            if !self.days[start].1 {
                start += 1;
                continue;
            }
            let mut end = start;
            while end + 1 < self.days.len() && self.days[end + 1].1 {
                end += 1;
            }
            let reaches_newest = end + 1 == self.days.len();
            if reaches_newest && end > start {
                // Keys after the run's first day are the run's (and, at most, those of a
                // directory that sorts between its days; they are left out below).
                let chosen = chosen.clone();
                out.push(
                    store
                        .list_with_offset(Some(&self.dir), &self.days[start].0)
                        .try_filter(move |meta| {
                            std::future::ready(chosen.contains(&day_of(&meta.location)))
                        })
                        .boxed(),
                );
            } else {
                for (day, _) in &self.days[start..=end] {
                    out.push(store.list(Some(day)));
                }
            }
            start = end + 1;
        }
        out
    }
}

/// The `dataset=…/dt=…` directory of a file.
fn day_of(location: &Path) -> Path {
    Path::from_iter(location.parts().take(2))
}

/// The tenant's store, whose listing of the archive (or of one dataset) holds only the chosen
/// days. Everything else passes through.
#[derive(Debug)]
struct Listed {
    inner: Arc<dyn ObjectStore>,
    selection: Arc<Selection>,
}

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listed({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Listed {
    async fn put_opts(
        &self,
        location: &Path,
        payload: object_store::PutPayload,
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
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let parts: Vec<PathPart<'_>> = prefix.map(|p| p.parts().collect()).unwrap_or_default();
        let datasets: Vec<&DatasetDays> = match parts.as_slice() {
            [] => self.selection.datasets.iter().collect(),
            [one] if segment_value(one, "dataset").is_some() => self
                .selection
                .datasets
                .iter()
                .filter(|d| Some(&d.dir) == prefix)
                .collect(),
            _ => return self.inner.list(prefix),
        };
        let listings: Vec<_> = datasets
            .into_iter()
            .flat_map(|d| d.listings(&self.inner))
            .collect();
        futures_util::stream::iter(listings)
            .flatten_unordered(LIST_CONCURRENCY)
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
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
mod tests_support {
    use std::sync::Arc;

    use bytes::Bytes;
    use object_store::ObjectStore;
    use sluice_archive::record::{BatchBuilder, Envelope};

    pub(super) const DAY_MS: i64 = 86_400_000;
    /// 2026-11-01T00:00:00Z.
    pub(super) const FIRST_MS: i64 = 1_793_491_200_000;
    pub(super) const ROWS: u32 = 4;

    pub(super) fn rows(dataset: &str, at: i64) -> Bytes {
        let mut rows = BatchBuilder::default();
        for n in 0..ROWS {
            let text = serde_json::json!({
                "message_id": format!("{dataset}-{at}-{n}"), "type": "track", "event": "Viewed",
                "anonymous_id": "a", "source": "web", "pipeline_id": "p",
                "received_at": "2026-11-01T00:00:00Z",
            })
            .to_string();
            rows.push(&Envelope::parse(&text).expect("event"), at);
        }
        sluice_archive::encode::parquet(&rows.finish().expect("rows")).expect("parquet")
    }

    /// `events`: 2026-11-01 to 2026-11-10, two hours a day; `other`: 2026-11-01 to 03, one.
    pub(super) async fn archive() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("store"),
        );
        for (dataset, days, hours) in [("events", 10, 2), ("other", 3, 1)] {
            for day in 0..days {
                for hour in 0..hours {
                    let at = FIRST_MS + day * DAY_MS + hour * 3_600_000;
                    let (dt, hh) = sluice_archive::layout::partition(at);
                    let path = sluice_archive::layout::object_path(
                        "t",
                        dataset,
                        &dt,
                        &hh,
                        uuid::Uuid::now_v7(),
                    );
                    sluice_archive::encode::upload(&store, &path, rows(dataset, at))
                        .await
                        .expect("upload");
                }
            }
        }
        (dir, store)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{DAY_MS, FIRST_MS, ROWS, archive, rows};
    use super::*;
    use crate::{Limits, QueryEngine};
    use datafusion::prelude::{SessionContext, col, lit};

    async fn listed(
        store: &Arc<dyn ObjectStore>,
        filter: Expr,
        prefix: Option<&str>,
    ) -> Vec<String> {
        let raw = sluice_archive::store::tenant_view(store.clone(), "t");
        let url = ListingTableUrl::parse("sluice-archive://tenant/").expect("url");
        let events = Events::new(
            url,
            ListingOptions::new(Arc::new(
                datafusion::datasource::file_format::parquet::ParquetFormat::default(),
            )),
            sluice_archive::record::schema(),
            raw.clone(),
            Notes::default(),
            Arc::default(),
        )
        .expect("table");
        let state = SessionContext::new().state();
        let selection = events.select(&state, &[&filter]).await.expect("selection");
        let listed = Listed {
            inner: raw,
            selection: Arc::new(selection),
        };
        let prefix = prefix.map(Path::from);
        let mut days: Vec<String> = listed
            .list(prefix.as_ref())
            .map_ok(|m| day_of(&m.location).to_string())
            .try_collect()
            .await
            .expect("listing");
        days.sort();
        days
    }

    fn days(dataset: &str, from: u32, to: u32, files: usize) -> Vec<String> {
        (from..=to)
            .flat_map(|d| {
                std::iter::repeat_n(format!("dataset={dataset}/dt=2026-11-{d:02}"), files)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_range_on_dt_lists_only_its_days() {
        let (_dir, store) = archive().await;
        // Up to the newest day: one ranged listing per dataset.
        let newest = listed(&store, col("dt").gt_eq(lit("2026-11-08")), None).await;
        assert_eq!(newest, days("events", 8, 10, 2));
        // Days in the middle: a listing per day.
        let middle = listed(
            &store,
            col("dt").between(lit("2026-11-02"), lit("2026-11-04")),
            None,
        )
        .await;
        let mut want = days("events", 2, 4, 2);
        want.extend(days("other", 2, 3, 1));
        assert_eq!(middle, want);
        // Days apart, and a dataset's prefix as DataFusion gives it for `dataset = 'other'`.
        let apart = listed(
            &store,
            col("dt").in_list(
                vec![lit("2026-11-01"), lit("2026-11-03"), lit("2026-11-10")],
                false,
            ),
            Some("dataset=other"),
        )
        .await;
        assert_eq!(
            apart,
            [days("other", 1, 1, 1), days("other", 3, 3, 1)].concat()
        );
        // A filter on dt and dataset together.
        let both = listed(
            &store,
            col("dt")
                .lt(lit("2026-11-03"))
                .and(col("dataset").eq(lit("events"))),
            None,
        )
        .await;
        assert_eq!(both, days("events", 1, 2, 2));
        let none = listed(&store, col("dt").gt(lit("2027-01-01")), None).await;
        assert!(none.is_empty(), "{none:?}");
    }

    async fn count(engine: &QueryEngine, filter: &str) -> i64 {
        let sql = format!("SELECT count(*) AS n FROM events WHERE {filter}");
        let result = engine.run("t", &sql).await.expect(&sql);
        result.batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    }

    #[tokio::test]
    async fn queries_narrowed_by_day_count_what_the_whole_archive_holds() {
        let (_dir, store) = archive().await;
        // A compaction's output for one hour, beside the file it replaces: a query sees one.
        let raw = sluice_archive::store::tenant_view(store.clone(), "t");
        let partition = "dataset=events/dt=2026-11-09/hour=00";
        let replaced: Vec<ObjectMeta> = raw
            .list(Some(&Path::from(partition)))
            .try_collect()
            .await
            .expect("hour");
        sluice_archive::commit::replace(
            &raw,
            partition,
            &replaced,
            rows("events", FIRST_MS + 8 * DAY_MS),
            "test",
        )
        .await
        .expect("replace");
        let engine = QueryEngine::new(store, Limits::default());
        let per_file = i64::from(ROWS);
        for (filter, files) in [
            ("true", 23),
            ("dt >= '2026-11-08'", 6),
            ("dt > '2026-11-08'", 4),
            ("dt BETWEEN '2026-11-02' AND '2026-11-04'", 8),
            ("dt IN ('2026-11-01', '2026-11-10')", 5),
            ("dt = '2026-11-09'", 2),
            ("dataset = 'other' AND dt >= '2026-11-02'", 2),
            ("substr(dt, 1, 7) = '2026-11' AND dt <> '2026-11-01'", 20),
            ("dt >= '2026-11-08' OR event = 'nothing'", 6),
            ("dt < '2026-10-01'", 0),
        ] {
            assert_eq!(count(&engine, filter).await, files * per_file, "{filter}");
        }
    }
}

#[cfg(test)]
mod hostile {
    use super::tests_support::archive;
    use crate::{Limits, QueryEngine, QueryError};

    /// Statements that try to read something other than `events`, change the session, or
    /// exhaust the node: each is refused, or stopped by a limit, never run to the end.
    #[tokio::test]
    async fn hostile_and_expensive_queries_are_refused_within_the_limits() {
        let (_dir, store) = archive().await;
        let engine = QueryEngine::new(
            store,
            Limits {
                timeout: std::time::Duration::from_secs(3),
                memory_bytes: 16 * 1024 * 1024,
                max_rows: 1_000,
                ..Limits::default()
            },
        );
        let refused =
            |e: &QueryError| matches!(e, QueryError::Invalid(_) | QueryError::NotAllowed(_));
        let limited = |e: &QueryError| matches!(e, QueryError::Limit(_));
        type Expect<'a> = &'a dyn Fn(&QueryError) -> bool;
        let cases: Vec<(&str, Expect<'_>)> = vec![
            ("SELECT * FROM generate_series(1, 1000000000000)", &refused),
            ("SELECT * FROM range(1000000000000)", &refused),
            ("SELECT * FROM '/etc/passwd'", &refused),
            ("SELECT * FROM 'file:///etc/passwd'", &refused),
            ("SELECT count(*) FROM information_schema.tables", &refused),
            ("SELECT * FROM sluice.archive.other", &refused),
            ("COPY events TO '/tmp/sluice-stolen.csv'", &refused),
            (
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
                &refused,
            ),
            ("INSERT INTO events SELECT * FROM events", &refused),
            (
                "SET datafusion.execution.target_partitions = 1000",
                &refused,
            ),
            ("DROP TABLE events", &refused),
            // Calls that allocate outside the memory pool, in one go, before the timeout
            // can fire (each answered in 0.4–4.8 s with 400 MB before the check).
            ("SELECT cardinality(range(1, 2000000000))", &limited),
            ("SELECT cardinality(generate_series(1, 50000000))", &limited),
            ("SELECT length(repeat('x', 100000000))", &limited),
            ("SELECT length(lpad('x', 100000000))", &limited),
            ("SELECT cardinality(array_repeat(1, 50000000))", &limited),
            (
                "SELECT sum(length(repeat(event_id, 1000000))) FROM events",
                &limited,
            ),
            (
                "SELECT length(repeat(repeat(event_id, 100), 100)) FROM events",
                &limited,
            ),
            (
                "SELECT length(repeat(event_id, length(event_id))) FROM events",
                &limited,
            ),
            (
                "SELECT event_id FROM events WHERE event_id IN (SELECT repeat('x', 100000000))",
                &limited,
            ),
            // A cross join of five copies: 92^5 rows to compare, which the timeout alone did
            // not stop (a bare count(*) of it is answered from the statistics).
            (
                "SELECT count(*) FROM events a, events b, events c, events d, events e \
                 WHERE a.event_id <> e.event_id",
                &limited,
            ),
            // More rows than a result may hold.
            ("SELECT a.event_id FROM events a, events b", &limited),
            // Memory past the pool: a sort of everything joined with everything.
            (
                "SELECT a.event_id, b.event_id FROM events a, events b, events c ORDER BY 1, 2 LIMIT 1",
                &limited,
            ),
        ];
        for (sql, expected) in cases {
            match engine.run("t", sql).await {
                Ok(result) => panic!("{sql}: answered with {} rows", result.rows),
                Err(e) => assert!(expected(&e), "{sql}: {e:?}"),
            }
        }
        // Modest uses of the same functions are answered.
        for sql in [
            "SELECT lpad(event_id, 40, '0') FROM events LIMIT 1",
            "SELECT cardinality(range(1, 100))",
            "SELECT repeat('-', 10) || event_id FROM events LIMIT 1",
        ] {
            let result = engine.run("t", sql).await;
            assert_eq!(result.map(|r| r.rows).ok(), Some(1), "{sql}");
        }
        // An unbounded recursive query is stopped by a limit, or refused.
        let recursive = engine
            .run(
                "t",
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
            )
            .await
            .expect_err("never ends");
        assert!(limited(&recursive) || refused(&recursive), "{recursive:?}");
    }
}
