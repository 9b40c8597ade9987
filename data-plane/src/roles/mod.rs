//! The roles a node runs, each a module that owns its tasks and routes. A role imports the
//! node's shared parts (`state`, `http`, `telemetry`, `config`) and the pipeline and bus
//! crates, never the composition root; the proxy reuses the receiver's request reading.
//!
//! * [`receiver`]: the Segment HTTP tracking API, onto the bus's `raw` stage.
//! * [`proxy`]: the first-party collector endpoint with its own disk spool, forwarding to
//!   receivers.
//! * [`processor`]: `raw` through the pipeline engine to every destination's stage, the
//!   archive and the rejected stage.
//! * [`delivery`]: each destination's stage to its vendor, with retries and a DLQ.
//! * [`dlq`]: the API over dead letters and rejected events (list, replay, purge).
//! * [`archiver`]: the `archive` stage to Parquet files in object storage.
//! * [`query`]: SQL over the archive.

pub mod archiver;
pub mod delivery;
pub mod dlq;
pub mod erasure;
pub mod processor;
pub mod proxy;
pub mod query;
pub mod receiver;
