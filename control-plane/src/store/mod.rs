//! The control plane's persistent state, on SQLite (the embedded default) or PostgreSQL.
//!
//! Both back ends run the same SQL through sqlx's `Any` driver: every column is TEXT, BIGINT
//! or a byte string, and times are Unix milliseconds, so the two agree exactly. Each back end
//! has its own migrations (the DDL dialects differ); the shared contract suite in
//! `tests/store_contract.rs` holds them to the same behaviour.
//!
//! Every mutation that a person or key makes is written in one transaction together with its
//! audit entry: nothing is half-written, and nothing happens unaudited.

mod audit;
mod error;
mod keys;
mod members;
mod nodes;
mod pipelines;
mod refresh;
mod samples;
pub mod signing;
mod tenants;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

pub use audit::{AuditEntry, AuditEvent, AuditFilter};
pub use error::StoreError;
pub use keys::{KeyRecord, NewIngestBinding, NewKey};
pub use members::{AcceptedInvitation, Invitation, Member, NewInvitation};
pub use nodes::{NodeHello, NodeRecord};
pub use pipelines::{IngestKeyRecord, NewRevision, PipelineRecord, RevisionRecord, TenantConfig};
pub use refresh::RefreshOutcome;
pub use samples::{Milestone, SAMPLE_RETENTION_MS, Sample};
pub use tenants::{Tenant, TenantWithRole};
pub use users::User;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the SQLite database `control-plane.db` in `data_dir`.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("control-plane.db");
        Self::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(StoreError::from)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(250));
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers proceed while one writer commits; foreign keys are
                        // off by default in SQLite and the cascades depend on them.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Self { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// A transaction that will write. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first cannot be upgraded once another
    /// writer has committed (SQLITE_BUSY_SNAPSHOT), and waiting does not help, whereas
    /// waiting for the lock does (busy_timeout).
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A read-only transaction that sees one consistent state of the database.
    pub(crate) async fn read_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers; used by `/health/ready`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection; pending writes finish first.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A new time-ordered id (UUIDv7), so ids sort by creation and make stable cursors.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
