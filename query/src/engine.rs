//! One session per query, seeing one tenant's archive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTableUrl};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::TableScopedPath;
use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, CachedFileMetadata, CachedFileMetadataEntry, FileMetadataCache,
    FileStatisticsCache,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures_util::StreamExt as _;
use object_store::ObjectStore;
use sluice_archive::layout::PARTITION_COLUMNS;

use crate::QueryError;
use crate::listing::{Events, Scans};

/// The one URL the session can resolve: the tenant's view of the archive.
const ARCHIVE_URL: &str = "sluice-archive://tenant/";

/// What one query may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock time for planning and running. Default: 30 s.
    pub timeout: Duration,
    /// Rows returned at most; more is an error, never a silent cut. Default: 100,000.
    pub max_rows: usize,
    /// Memory for joins, sorts and aggregations; no spilling to disk. Default: 256 MiB.
    pub memory_bytes: usize,
    /// Parts a query's scan is split into and read at once. More than the cores pays on an
    /// object store, where each read waits on the network rather than on a core. Default:
    /// the machine's cores.
    pub partitions: usize,
    /// Evaluate filters while decoding (late materialization): the filter's columns are read
    /// and tested first, the other columns of a row group only where rows matched. Default:
    /// true.
    pub pushdown_filters: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
            memory_bytes: 256 * 1024 * 1024,
            partitions: cores(),
            pushdown_filters: true,
        }
    }
}

/// This machine's cores, as the scheduler lets the process use them: the default partitions
/// for an archive on local disk.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Parts read at once from an object store, whatever the cores: its reads wait on the network
/// and on the server, so many are kept in flight. Against Garage on loopback a GROUP BY over
/// 168 files took 1,230 ms with 2 parts, 846 with 8, 759 with 16 and 627 with 32 (BENCHMARKS.md).
const REMOTE_PARTITIONS: usize = 32;

/// The default partitions for an archive in an object store.
pub fn remote_partitions() -> usize {
    cores().max(REMOTE_PARTITIONS)
}

/// Runs of a query whose files were replaced under it, at most.
const ATTEMPTS: u32 = 4;

/// A finished query.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// Parquet files the plan reads, after partition pruning.
    pub files_scanned: usize,
    pub elapsed: Duration,
}

/// Runs queries over the archive in `store`.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    store: Arc<dyn ObjectStore>,
    limits: Limits,
    caches: SharedCaches,
}

#[derive(Clone, Default)]
struct SharedCaches(Arc<Mutex<HashMap<String, TenantCaches>>>);

impl std::fmt::Debug for SharedCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedCaches")
    }
}

/// Parquet footers and file statistics, kept across a tenant's queries: archive files never
/// change once written, and every entry is checked against the file's size and modification
/// time before use. Per tenant, so no query ever sees another tenant's entries.
#[derive(Clone)]
struct TenantCaches {
    metadata: Arc<FileMetadataCache>,
    statistics: Arc<FileStatisticsCache>,
    /// Notes of compactions and erasures (which files an output replaces).
    notes: sluice_archive::commit::Notes,
}

/// Bytes each tenant's footer cache may hold.
const METADATA_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Bytes each tenant's statistics cache may hold.
const STATISTICS_CACHE_BYTES: usize = 8 * 1024 * 1024;
/// Tenants whose caches are kept; a data plane serves one, tests and tools a few.
const CACHED_TENANTS: usize = 16;

/// A registry that knows exactly the tenant's archive (and the views of it that a scan
/// narrowed to some days): neither the local file system nor anything else a URL could name.
#[derive(Debug)]
struct OnlyArchive {
    view: Arc<dyn ObjectStore>,
    scans: Arc<Scans>,
}

impl ObjectStoreRegistry for OnlyArchive {
    fn register_store(
        &self,
        _url: &url::Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    fn get_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let host = url.host_str().unwrap_or_default();
        if url.scheme() == "sluice-archive" && host == "tenant" {
            Ok(self.view.clone())
        } else if let Some(scan) = (url.scheme() == "sluice-archive")
            .then(|| self.scans.get(host))
            .flatten()
        {
            Ok(scan)
        } else {
            Err(DataFusionError::Plan(format!(
                "only the events table can be read, not {url}"
            )))
        }
    }
}

/// What a query answers when a file it had listed was deleted under it (a compaction or an
/// erasure replaced it); [`QueryEngine::run`] runs such a query again.
const VANISHED: &str = "an archive file was replaced while the query read it";

/// Whether `error` is a file of the listing that is gone.
fn vanished(error: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(object_store::Error::NotFound { .. }) = error.downcast_ref::<object_store::Error>()
    {
        return true;
    }
    if let Some(DataFusionError::ObjectStore(e)) = error.downcast_ref::<DataFusionError>() {
        return matches!(**e, object_store::Error::NotFound { .. });
    }
    if let Some(parquet::errors::ParquetError::External(inner)) =
        error.downcast_ref::<parquet::errors::ParquetError>()
    {
        return vanished(inner.as_ref());
    }
    error.source().is_some_and(vanished)
}

fn classify(error: DataFusionError) -> QueryError {
    if vanished(&error) {
        return QueryError::Unavailable(VANISHED.to_owned());
    }
    match error {
        DataFusionError::ResourcesExhausted(m) => QueryError::Limit(format!(
            "the query needs more than the memory limit allows ({m}); aggregate, filter or narrow dt/hour"
        )),
        DataFusionError::SQL(e, _) => QueryError::Invalid(format!("sql: {e}")),
        DataFusionError::Plan(m) if m_is_permission(&m) => QueryError::NotAllowed(m),
        DataFusionError::Plan(m) => QueryError::Invalid(m),
        DataFusionError::SchemaError(e, _) => QueryError::Invalid(e.to_string()),
        DataFusionError::NotImplemented(m) => QueryError::Invalid(format!("not supported: {m}")),
        DataFusionError::ObjectStore(e) => QueryError::Unavailable(e.to_string()),
        DataFusionError::Execution(m) if m.contains("Unsupported SQL statement") => {
            QueryError::NotAllowed(m)
        }
        DataFusionError::Execution(m) => QueryError::Invalid(m),
        DataFusionError::Diagnostic(_, inner) => classify(*inner),
        DataFusionError::Collection(mut errors) if !errors.is_empty() => classify(errors.remove(0)),
        DataFusionError::Configuration(m) => QueryError::Invalid(m),
        DataFusionError::Context(context, inner) => match classify(*inner) {
            QueryError::Invalid(m) => QueryError::Invalid(format!("{context}: {m}")),
            other => other,
        },
        other => QueryError::Internal(other.to_string()),
    }
}

fn m_is_permission(message: &str) -> bool {
    message.contains("not supported") && message.contains("SQLOptions")
}

impl QueryEngine {
    pub fn new(store: Arc<dyn ObjectStore>, limits: Limits) -> Self {
        Self {
            store,
            limits,
            caches: SharedCaches::default(),
        }
    }

    fn caches(&self, tenant_id: &str) -> TenantCaches {
        let mut caches = self.caches.0.lock().unwrap_or_else(|p| p.into_inner());
        if !caches.contains_key(tenant_id) && caches.len() >= CACHED_TENANTS {
            caches.clear();
        }
        caches
            .entry(tenant_id.to_owned())
            .or_insert_with(|| TenantCaches {
                metadata: Arc::new(DefaultCache::<
                    object_store::path::Path,
                    CachedFileMetadataEntry,
                >::new(METADATA_CACHE_BYTES)),
                statistics: Arc::new(DefaultCache::<TableScopedPath, CachedFileMetadata>::new(
                    STATISTICS_CACHE_BYTES,
                )),
                notes: sluice_archive::commit::Notes::default(),
            })
            .clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn session(&self, tenant_id: &str) -> Result<SessionContext, QueryError> {
        let caches = self.caches(tenant_id);
        // Listings show live files only: never a compacted file next to the files it replaced.
        let raw = sluice_archive::store::tenant_view(self.store.clone(), tenant_id);
        let view: Arc<dyn ObjectStore> = Arc::new(sluice_archive::commit::CommittedView::new(
            raw.clone(),
            caches.notes.clone(),
        ));
        let scans = Arc::new(Scans::default());
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(OnlyArchive {
                view,
                scans: scans.clone(),
            }))
            .with_cache_manager(
                CacheManagerConfig::default()
                    .with_file_metadata_cache(Some(caches.metadata))
                    .with_metadata_cache_limit(METADATA_CACHE_BYTES)
                    .with_file_statistics_cache(Some(caches.statistics))
                    .with_file_statistics_cache_limit(STATISTICS_CACHE_BYTES),
            )
            .with_memory_limit(self.limits.memory_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(classify)?;
        let mut config = SessionConfig::new()
            .with_target_partitions(self.limits.partitions.max(1))
            .with_information_schema(false)
            .with_default_catalog_and_schema("sluice", "archive");
        // Evaluate filters while decoding (late materialization): a query on one event never
        // decodes the JSON columns of the others.
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = self.limits.pushdown_filters;
        parquet.reorder_filters = self.limits.pushdown_filters;
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_table_functions(Default::default())
            .build();
        datafusion_functions_json::register_all(&mut state).map_err(classify)?;
        let ctx = SessionContext::new_with_state(state);
        let partition_cols = PARTITION_COLUMNS
            .iter()
            .map(|c| ((*c).to_owned(), DataType::Utf8))
            .collect();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partition_cols);
        let url = ListingTableUrl::parse(ARCHIVE_URL).map_err(classify)?;
        let table = Events::new(
            url,
            options,
            sluice_archive::record::schema(),
            raw,
            caches.notes,
            scans,
        )
        .map_err(classify)?;
        ctx.register_table("events", Arc::new(table))
            .map_err(classify)?;
        Ok(ctx)
    }

    /// Runs `sql` over `tenant_id`'s archive within the limits.
    pub async fn run(&self, tenant_id: &str, sql: &str) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let attempts = async {
            let mut attempt = 1;
            loop {
                match self.run_unbounded(tenant_id, sql).await {
                    // A compaction or erasure deleted a file the query had listed: its
                    // replacement is live now, so the next run reads that instead.
                    Err(QueryError::Unavailable(m)) if m == VANISHED && attempt < ATTEMPTS => {
                        attempt += 1;
                    }
                    other => break other,
                }
            }
        };
        match tokio::time::timeout(self.limits.timeout, attempts).await {
            Ok(result) => result.map(|mut r| {
                r.elapsed = started.elapsed();
                r
            }),
            Err(_) => Err(QueryError::Limit(format!(
                "the query ran longer than the {} s limit; filter on dt and hour to read less",
                self.limits.timeout.as_secs_f64()
            ))),
        }
    }

    async fn run_unbounded(&self, tenant_id: &str, sql: &str) -> Result<QueryResult, QueryError> {
        if !sluice_archive::layout::is_safe_segment(tenant_id) {
            return Err(QueryError::Internal("not a tenant id".into()));
        }
        let ctx = self.session(tenant_id)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| match e {
                DataFusionError::Plan(m) if m.contains("not supported") => {
                    QueryError::NotAllowed(format!("only read-only queries of events: {m}"))
                }
                other => classify(other),
            })?;
        crate::amplify::check(frame.logical_plan())?;
        let plan = frame.create_physical_plan().await.map_err(classify)?;
        let unconditioned = joins_without_condition(&plan);
        if unconditioned > MAX_UNCONDITIONED_JOINS {
            // Such a join computes rows faster than the timeout can stop it: it only fires
            // when the plan yields, and a join of join products may not for minutes.
            return Err(QueryError::Limit(format!(
                "the query has {unconditioned} joins without an equality condition (at most {MAX_UNCONDITIONED_JOINS}); join on a column"
            )));
        }
        let files_scanned = files_in(&plan);
        let schema = plan.schema();
        let mut stream = execute_stream(plan, ctx.task_ctx()).map_err(classify)?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(classify)?;
            rows += batch.num_rows();
            if rows > self.limits.max_rows {
                return Err(QueryError::Limit(format!(
                    "the result has more than {} rows; add a LIMIT or aggregate",
                    self.limits.max_rows
                )));
            }
            batches.push(batch);
        }
        Ok(QueryResult {
            schema,
            batches,
            rows,
            files_scanned,
            elapsed: Duration::ZERO,
        })
    }
}

/// Joins without an equality condition a query may have: a cross join of `events` with
/// itself is a fair question; one of three copies is not.
const MAX_UNCONDITIONED_JOINS: usize = 1;

/// Cross and nested-loop joins in `plan`.
fn joins_without_condition(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let name = plan.name();
    let own = usize::from(name == "CrossJoinExec" || name == "NestedLoopJoinExec");
    own + plan
        .children()
        .into_iter()
        .map(joins_without_condition)
        .sum::<usize>()
}

/// Parquet files every scan in `plan` reads.
fn files_in(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        .map_or(0, |scan| scan.file_groups.iter().map(|g| g.len()).sum());
    own + plan.children().into_iter().map(files_in).sum::<usize>()
}
