//! Who may use the node's own APIs (DLQ now, query later): the node's service key, or any
//! service or api key of the tenant, verified against the digests in the configuration —
//! the control plane is never asked, so the APIs work while it is away.

use axum::http::HeaderMap;
use sluice_keys::{KeyType, ParsedKey};
use sluice_proto::ErrorCode;
use subtle::ConstantTimeEq as _;

use super::bearer_token;
use crate::http::ApiError;
use crate::state::NodeState;
use sluice_pipeline::time::now_ms;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Read (an api key with the viewer role).
    Read,
    /// Read and change (service keys, api keys of members and above).
    Write,
}

/// The caller's access from `Authorization: Bearer <key>`, or a 401.
pub fn caller(node: &NodeState, headers: &HeaderMap) -> Result<Access, ApiError> {
    let unauthorized = |message: &str| ApiError::new(ErrorCode::Unauthorized, message);
    let token = bearer_token(headers).ok_or_else(|| {
        unauthorized("send a service or api key of the tenant as Authorization: Bearer")
    })?;
    if bool::from(token.as_bytes().ct_eq(node.config.service_key.as_bytes())) {
        return Ok(Access::Write);
    }
    let key: ParsedKey = token
        .parse()
        .map_err(|_| unauthorized("not a Sluice key"))?;
    let config = node.current().ok_or_else(|| {
        ApiError::new(ErrorCode::Unavailable, "no configuration yet").retry_after(5)
    })?;
    let entry = config
        .access_key(&key, now_ms())
        .ok_or_else(|| unauthorized("unknown, revoked or expired key"))?;
    match (key.key_type(), entry.role.as_deref()) {
        (KeyType::Service, _) => Ok(Access::Write),
        (KeyType::Api, Some("owner" | "admin" | "member")) => Ok(Access::Write),
        (KeyType::Api, _) => Ok(Access::Read),
        (KeyType::Ingest, _) => Err(unauthorized("ingest keys only send events")),
    }
}

/// A 403 unless the caller may change things.
pub fn require_write(access: Access) -> Result<(), ApiError> {
    if access >= Access::Write {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "this key's role (viewer) may only read",
        ))
    }
}
