//! SQL over one tenant's archive, with DataFusion.
//!
//! Every query gets a fresh session that knows one table, `events`, and one object store: a
//! view of the archive below `tenant=<id>/`. There is no other catalog, no table function, no
//! URL table and no statement but a query (DDL, DML, `COPY` and `SET` are refused), so another
//! tenant's files cannot be named, let alone read. Limits: a statement timeout, a maximum
//! number of rows returned and a memory pool without spilling; a query over one is refused
//! with a clear error, never half-answered.

mod amplify;
mod engine;
mod listing;
pub mod output;

pub use engine::{Limits, QueryEngine, QueryResult, cores, remote_partitions};
pub use output::Format;

use sluice_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse or plan: a syntax error, an unknown column or function.
    #[error("{0}")]
    Invalid(String),
    /// The statement is not a read-only query of `events`.
    #[error("{0}")]
    NotAllowed(String),
    /// The query ran into one of the limits.
    #[error("{0}")]
    Limit(String),
    /// The archive could not be read; retrying later may succeed.
    #[error("the archive cannot be read: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::BadRequest,
            Self::NotAllowed(_) => ErrorCode::Forbidden,
            Self::Limit(_) => ErrorCode::LimitExceeded,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}
