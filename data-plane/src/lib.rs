//! The Sluice data plane: a node that keeps its tenant's configuration in sync with the
//! control plane (and runs on its last-known-good copy when the control plane is away), and
//! the roles that collect, govern, deliver, archive and query events inside the customer's
//! network.

mod access;
pub mod applied;
pub mod archiver;
pub mod bus;
pub mod config;
pub mod consumers;
pub mod counters;
pub mod delivery;
mod destinations;
pub mod dlq;
mod http;
mod identity;
mod lkg;
mod metrics;
mod node;
pub mod pipeline;
pub mod processor;
mod proxy;
mod query_api;
pub mod receiver;
pub mod stages;
mod sync;

pub use config::{Config, RawConfig};
pub use node::{NodeError, RunningNode, run, start};

/// This build's version, reported to the control plane.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
