//! Config sync: the gRPC `ConfigSync.Stream` that pushes each tenant's configuration to its
//! data planes, and the hub that tells every stream (on every replica) about changes and
//! revocations.

mod hub;
pub mod report;
mod service;
mod snapshot;

pub use hub::{ChangeHub, ControlEvent};
pub use service::ConfigSyncService;
pub use snapshot::SnapshotCache;
