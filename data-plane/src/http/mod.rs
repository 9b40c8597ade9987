//! What every HTTP API of the node shares: the one error type answered to clients, the
//! `Authorization` header parser and who may call the node's own APIs.

pub mod auth;
mod authorization;
mod error;

pub use authorization::{Authorization, bearer_token};
pub use error::ApiError;
