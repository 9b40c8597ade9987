use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use sluice_keys::{KeyType, ParsedKey};

use crate::error::ApiError;
use crate::metrics;
use crate::role::Role;
use crate::state::AppState;
use crate::store::now_ms;

/// Audience of access tokens for the management API.
pub const API_AUDIENCE: &str = "sluice-api";

/// Claims of a user's access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    pub email: String,
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person, through a JWT access token.
    User { id: String, email: String },
    /// An `api` key: acts in its tenant with its role.
    ApiKey {
        id: String,
        tenant_id: String,
        role: Role,
        name: String,
    },
    /// A `service` key: a data plane; may only check connectivity (and sync config).
    ServiceKey {
        id: String,
        tenant_id: String,
        name: String,
    },
}

impl Principal {
    /// `user:<id>` or `key:<id>`, as the audit log records actors.
    pub fn actor(&self) -> String {
        match self {
            Principal::User { id, .. } => format!("user:{id}"),
            Principal::ApiKey { id, .. } | Principal::ServiceKey { id, .. } => format!("key:{id}"),
        }
    }

    /// The actor as a person reads it.
    pub fn actor_name(&self) -> String {
        match self {
            Principal::User { email, .. } => email.clone(),
            Principal::ApiKey { name, .. } | Principal::ServiceKey { name, .. } => {
                format!("key {name}")
            }
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let result = authenticate(parts, state).await;
        if let Err(e) = &result
            && e.code == sluice_proto::ErrorCode::Unauthorized
        {
            ::metrics::counter!(metrics::AUTH_FAILURES_TOTAL).increment(1);
        }
        result
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer credentials"))?;
    let header = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let token = bearer_token(header)
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
    if token.starts_with("slk_") {
        authenticate_key(token, state).await
    } else {
        let claims: AccessClaims = state
            .jwt
            .verify(token, API_AUDIENCE)
            .map_err(|_| ApiError::unauthorized("invalid or expired access token"))?;
        Ok(Principal::User {
            id: claims.sub,
            email: claims.email,
        })
    }
}

/// A key whose checksum, hash, type, revocation and expiry all check out.
pub struct VerifiedKey {
    pub key_type: KeyType,
    pub record: std::sync::Arc<crate::store::KeyRecord>,
}

/// Verifies a key presented as a bearer token: the checksum first (no store access for a
/// mistyped key), then the cached record by public id and a constant-time hash comparison.
/// Records the use, coalesced.
pub async fn verify_key(state: &AppState, token: &str) -> Result<VerifiedKey, ApiError> {
    let key = ParsedKey::from_str(token).map_err(|_| ApiError::unauthorized("malformed key"))?;
    let invalid = || ApiError::unauthorized("unknown, revoked or expired key");
    let record = state
        .key_cache
        .get(&state.store, key.public_id())
        .await?
        .ok_or_else(invalid)?;
    state
        .hasher
        .verify(&key, &record.key_hash)
        .map_err(|_| invalid())?;
    let now = now_ms();
    if record.key_type != key.key_type().as_str()
        || record.revoked_at.is_some()
        || record.expires_at.is_some_and(|at| at <= now)
    {
        return Err(invalid());
    }
    state.key_usage.touch(&record.id, now);
    Ok(VerifiedKey {
        key_type: key.key_type(),
        record,
    })
}

async fn authenticate_key(token: &str, state: &AppState) -> Result<Principal, ApiError> {
    let VerifiedKey { key_type, record } = verify_key(state, token).await?;
    match key_type {
        KeyType::Service => Ok(Principal::ServiceKey {
            id: record.id.clone(),
            tenant_id: record.tenant_id.clone(),
            name: record.name.clone(),
        }),
        KeyType::Api => {
            let role = record
                .role
                .as_deref()
                .and_then(|r| r.parse().ok())
                .unwrap_or(Role::Viewer);
            Ok(Principal::ApiKey {
                id: record.id.clone(),
                tenant_id: record.tenant_id.clone(),
                role,
                name: record.name.clone(),
            })
        }
        KeyType::Ingest => Err(ApiError::unauthorized(
            "ingest keys authenticate to a receiver, not to this API",
        )),
    }
}

/// The bearer token of an `Authorization` header value.
pub fn bearer_token(header: &str) -> Option<&str> {
    header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}
