//! The Sluice control plane: tenants, users, keys and audit behind a REST API, and (soon) the
//! gRPC config sync that pushes configuration to data planes.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod role;
pub mod server;
pub mod state;
pub mod store;
pub mod sync;
pub mod ui;
mod ui_minify;
pub mod validate;

pub use config::{Config, RawConfig};
pub use server::{RunningControlPlane, StartError, run, start};
