//! The contract between the Sluice control plane and its data planes: the error codes both
//! speak, the config-sync protocol (`sluice.config.v1`), and the pipeline spec with the one
//! validation both planes run.

pub mod catalogue;
pub mod error_code;
pub mod role;
pub mod spec;

pub use error_code::ErrorCode;
pub use role::Role;

/// The generated config-sync protocol.
#[cfg(feature = "grpc")]
pub mod config {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
        tonic::include_proto!("sluice.config.v1");
    }
}
