//! The archive's format, shared by the archiver that writes it and the query role that reads
//! it: one Arrow schema ([`record`]), the Hive layout of object paths ([`layout`]), Parquet
//! encoding ([`encode`]) and the object stores it lives in ([`store`]).
//!
//! Any engine that reads Hive-partitioned Parquet (Athena, Trino, Spark, DuckDB) reads the same
//! files: nothing here is specific to Sluice's own reader.

pub mod commit;
pub mod encode;
pub mod layout;
pub mod locate;
pub mod maintain;
pub mod record;
pub mod store;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The store's settings are incomplete or contradictory.
    #[error("archive settings: {0}")]
    Config(String),
    /// The object store failed; retrying later may succeed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Another node is rewriting the archive; retrying later may succeed.
    #[error("busy: {0}")]
    Busy(String),
}
