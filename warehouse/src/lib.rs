//! Warehouses the data plane writes to itself, as a destination of the catalogue
//! (`category: warehouse`). A warehouse takes a batch of events (each the JSON object the
//! pipeline shaped for it, with its event id) and writes them at most once per id, so that
//! a batch delivered again after a crash writes nothing twice.
//!
//! PostgreSQL ([`Postgres`]) is the first. ClickHouse, BigQuery and Snowflake would implement
//! the same [`Warehouse`] trait: keep a table per dataset whose columns follow the events
//! (typed where a property has one type, JSON for the rest), load a batch in one bulk
//! operation (ClickHouse `INSERT … FORMAT JSONEachRow` into a `ReplacingMergeTree` keyed
//! by id; BigQuery's Storage Write API with a `MERGE` on id; Snowflake `COPY INTO` a stage
//! then `MERGE`), and say whether a failure is worth retrying ([`WriteError`]).

mod columns;
mod postgres;

pub use columns::{Column, ColumnType, column_name};
pub use postgres::Postgres;

/// One event to write: its id (the primary key) and the shaped event.
pub struct Row<'a> {
    pub id: &'a str,
    pub event: &'a serde_json::Map<String, serde_json::Value>,
}

/// Why a batch was not written; nothing of it was.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The warehouse cannot be reached or is overloaded: try the batch again later.
    #[error("warehouse unavailable: {0}")]
    Unavailable(String),
    /// The warehouse refused the data: retrying the same rows cannot help.
    #[error("warehouse refused the rows: {0}")]
    Refused(String),
}

/// A warehouse destination.
pub trait Warehouse: Send + Sync {
    /// Writes the rows in one transaction; returns how many were new (rows whose id was
    /// already written are skipped, not counted).
    fn write(
        &self,
        rows: &[Row<'_>],
    ) -> impl std::future::Future<Output = Result<u64, WriteError>> + Send;
}
