//! Who may use the node's own APIs (DLQ, query, the live inspector and traces): the node's
//! service key, any service or api key of the tenant, verified against the digests in the
//! configuration, or a short-lived token the control plane issued to a signed-in person of
//! the tenant, verified with the public keys in the configuration. The control plane is never
//! asked, so the APIs work while it is away; a node serves one tenant, so whatever passes here
//! sees that tenant's events only.

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
    /// Read and change (api keys and people of the member role).
    Write,
    /// Everything, erasure included (the service key, api keys and people of the admin and
    /// owner roles).
    Admin,
}

/// The claims of a token the control plane issues to a person (audience `query`).
#[derive(serde::Deserialize)]
struct PersonClaims {
    tenant: String,
    /// The person's role in the tenant; tokens from before roles were carried read only.
    #[serde(default)]
    role: Option<String>,
}

/// The caller's access from `Authorization: Bearer <key or token>`, or a 401 (403 for a
/// token of another tenant).
pub fn caller(node: &NodeState, headers: &HeaderMap) -> Result<Access, ApiError> {
    let unauthorized = |message: &str| ApiError::new(ErrorCode::Unauthorized, message);
    let token = bearer_token(headers).ok_or_else(|| {
        unauthorized(
            "send a service or api key of the tenant, or a token from the console, as Authorization: Bearer",
        )
    })?;
    if !token.starts_with("slk_") {
        return person(node, token);
    }
    if bool::from(token.as_bytes().ct_eq(node.config.service_key.as_bytes())) {
        return Ok(Access::Admin);
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
        (KeyType::Service, _) => Ok(Access::Admin),
        (KeyType::Api, Some("owner" | "admin")) => Ok(Access::Admin),
        (KeyType::Api, Some("member")) => Ok(Access::Write),
        (KeyType::Api, _) => Ok(Access::Read),
        (KeyType::Ingest, _) => Err(unauthorized("ingest keys only send events")),
    }
}

/// A person signed in to the console, by the token the control plane gave them.
fn person(node: &NodeState, token: &str) -> Result<Access, ApiError> {
    let config = node.current().ok_or_else(|| {
        ApiError::new(ErrorCode::Unavailable, "no configuration yet").retry_after(5)
    })?;
    let verifier = sluice_keys::JwtVerifier::from_jwks(&config.jwks, sluice_keys::ISSUER)
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("signing keys: {e}")))?;
    let claims: PersonClaims = verifier
        .verify(token, sluice_keys::QUERY_AUDIENCE)
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "the token is invalid or expired; get a new one",
            )
        })?;
    if claims.tenant != config.tenant_id {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this token is for another tenant; this data plane serves one tenant only",
        ));
    }
    Ok(match claims.role.as_deref() {
        Some("owner" | "admin") => Access::Admin,
        Some("member") => Access::Write,
        _ => Access::Read,
    })
}

/// A 403 unless the caller is an admin (or owner) of the tenant, or the node's operator.
pub fn require_admin(access: Access) -> Result<(), ApiError> {
    if access >= Access::Admin {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "only an admin or owner of the tenant (or the node's service key) may do this",
        ))
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
