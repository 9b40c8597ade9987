//! Sign-in, session refresh, sign-out, first-run setup, invitations and (optional) sign-up.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sluice_keys::Jwks;
use utoipa::ToSchema;

use crate::auth::{Principal, SessionIssuer, clear_refresh_cookie, refresh_cookie_from};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientIp};
use crate::metrics;
use crate::state::AppState;
use crate::store::{RefreshOutcome, StoreError};
use crate::validate;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(max_length = 254)]
    pub email: String,
    #[schema(max_length = 1024)]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// The one-time setup token printed in the control plane's log.
    pub token: String,
    #[schema(
        max_length = 254,
        pattern = r"^\s*[^@\s\u0000-\u001F\u007F-\u009F]+@[^@.\s\u0000-\u001F\u007F-\u009F]([^@\s\u0000-\u001F\u007F-\u009F]*[^@.\s\u0000-\u001F\u007F-\u009F])?\s*$"
    )]
    pub email: String,
    #[schema(min_length = 8, max_length = 1024, pattern = r"^[^\u0000]*$")]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInviteRequest {
    /// The invitation token the inviter received.
    pub token: String,
    /// The password of the new account.
    #[schema(min_length = 8, max_length = 1024, pattern = r"^[^\u0000]*$")]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    #[schema(
        max_length = 254,
        pattern = r"^\s*[^@\s\u0000-\u001F\u007F-\u009F]+@[^@.\s\u0000-\u001F\u007F-\u009F]([^@\s\u0000-\u001F\u007F-\u009F]*[^@.\s\u0000-\u001F\u007F-\u009F])?\s*$"
    )]
    pub email: String,
    #[schema(min_length = 8, max_length = 1024, pattern = r"^[^\u0000]*$")]
    pub password: String,
}

/// A new access token. The refresh token travels in the `sluice_refresh` HttpOnly cookie.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// `user`, `api_key` or `service_key`.
    pub kind: &'static str,
    pub id: String,
    /// The user's e-mail, or the key's name.
    pub name: String,
    /// The key's tenant; null for users.
    pub tenant_id: Option<String>,
}

fn session_response(status: StatusCode, session: crate::auth::IssuedSession) -> Response {
    let mut response = (
        status,
        axum::Json(TokenResponse {
            access_token: session.access_token,
            token_type: "Bearer",
            expires_in: session.expires_in,
        }),
    )
        .into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, session.set_cookie);
    response
}

/// A real hash to verify against when the e-mail is unknown, so a wrong e-mail takes as long
/// as a wrong password and does not reveal which accounts exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY
        .get_or_init(|| sluice_keys::hash_password("decoy password for timing").unwrap_or_default())
}

/// Runs argon2 work on the blocking pool, at most `password_hash_concurrency` at a time: each
/// hash holds 19 MiB, so unbounded concurrency would let a flood of requests exhaust memory.
async fn password_work<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> Result<T, sluice_keys::KeyError> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state
        .password_work
        .acquire()
        .await
        .map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}

async fn verify_password_off_thread(
    state: &AppState,
    password: String,
    hash: String,
) -> Result<bool, ApiError> {
    password_work(state, move || {
        sluice_keys::verify_password(&password, &hash)
    })
    .await
}

async fn hash_password_off_thread(state: &AppState, password: String) -> Result<String, ApiError> {
    password_work(state, move || sluice_keys::hash_password(&password)).await
}

/// Every endpoint that hashes a password counts against the client IP's sign-in budget.
fn limit_by_ip(state: &AppState, ip: ClientIp) -> Result<(), ApiError> {
    let ip_key = ip.to_option_string().unwrap_or_default();
    state.login_by_ip.hit(&ip_key).map_err(|wait| {
        ::metrics::counter!(metrics::LOGINS_TOTAL, "outcome" => "rate_limited").increment(1);
        tracing::warn!(ip = %ip_key, "password endpoint rate limited");
        ApiError::rate_limited(wait)
    })
}

/// Sign in with e-mail and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the refresh token is set as a cookie", body = TokenResponse),
        (status = 401, description = "Wrong e-mail or password", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
        (status = 429, description = "Too many attempts from this IP or for this account", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let email = body.email.trim().to_lowercase();
    // No account has such an address; answering here keeps the bytes away from the database.
    if email.len() > 254 || email.chars().any(char::is_control) {
        return Err(ApiError::unauthorized("wrong e-mail or password"));
    }
    limit_by_ip(&state, ip)?;
    // Counted before the (slow) verification, so concurrent guesses cannot all slip past the
    // limit; a successful sign-in clears the count.
    if let Err(wait) = state.login_by_account.hit(&email) {
        ::metrics::counter!(metrics::LOGINS_TOTAL, "outcome" => "rate_limited").increment(1);
        tracing::warn!("sign-in rate limited for an account");
        return Err(ApiError::rate_limited(wait));
    }
    if body.password.len() > validate::MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid(format!(
            "password: at most {} bytes",
            validate::MAX_PASSWORD_BYTES
        )));
    }
    let user = state.store.user_by_email(&email).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| decoy_hash().to_owned(), |u| u.password_hash.clone());
    let matches = verify_password_off_thread(&state, body.password, hash).await?;
    let Some(user) = user.filter(|_| matches) else {
        ::metrics::counter!(metrics::LOGINS_TOTAL, "outcome" => "bad_credentials").increment(1);
        return Err(ApiError::unauthorized("wrong e-mail or password"));
    };
    state.login_by_account.reset(&email);
    ::metrics::counter!(metrics::LOGINS_TOTAL, "outcome" => "ok").increment(1);
    tracing::info!(user_id = %user.id, "user signed in");
    let session = SessionIssuer { state: &state }.issue_for(&user).await?;
    Ok(session_response(StatusCode::OK, session))
}

/// Exchange the refresh cookie for a new access token; the refresh token rotates. Presenting
/// a refresh token twice revokes its whole family (every session descended from the sign-in).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    responses(
        (status = 200, description = "New access token; a new refresh cookie is set", body = TokenResponse),
        (status = 401, description = "Missing, unknown, expired or reused refresh token", body = ErrorBody),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let secure = state.config.secure_cookies;
    let fail = |message: &str| {
        let mut response = ApiError::unauthorized(message).into_response();
        clear_refresh_cookie(response.headers_mut(), secure);
        response
    };
    let Some(token) = refresh_cookie_from(&headers) else {
        return Ok(fail("no refresh cookie"));
    };
    let issuer = SessionIssuer { state: &state };
    let successor = sluice_keys::random::token::<32>()?;
    let outcome = state
        .store
        .rotate_refresh_token(
            &state.hasher.hash_text(&token),
            &state.hasher.hash_text(&successor),
            issuer.refresh_expiry(),
        )
        .await?;
    match outcome {
        RefreshOutcome::Rotated { user_id, .. } => {
            let Some(user) = state.store.user_by_id(&user_id).await? else {
                return Ok(fail("the account no longer exists"));
            };
            let session = issuer.session(&user.id, &user.email, &successor)?;
            Ok(session_response(StatusCode::OK, session))
        }
        RefreshOutcome::Reused => {
            tracing::warn!("refresh token reused; its family is revoked");
            Ok(fail("refresh token was already used; sign in again"))
        }
        RefreshOutcome::Invalid => Ok(fail("refresh token is unknown or expired")),
    }
}

/// Sign out: revokes the session's refresh tokens and clears the cookie.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "Signed out")))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = refresh_cookie_from(&headers) {
        state
            .store
            .revoke_refresh_family(&state.hasher.hash_text(&token))
            .await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    clear_refresh_cookie(response.headers_mut(), state.config.secure_cookies);
    Ok(response)
}

/// First-run setup: create the first owner with the one-time token from the log.
#[utoipa::path(post, path = "/api/v1/auth/setup", tag = "auth", request_body = SetupRequest,
    responses(
        (status = 201, description = "Owner created and signed in", body = TokenResponse),
        (status = 401, description = "Wrong setup token", body = ErrorBody),
        (status = 409, description = "Setup is already complete", body = ErrorBody),
        (status = 422, description = "Invalid e-mail or password", body = ErrorBody),
    ))]
pub async fn setup(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<SetupRequest>,
) -> Result<Response, ApiError> {
    limit_by_ip(&state, ip)?;
    let email = validate::email(&body.email)?;
    validate::password(&body.password)?;
    let presented = state.hasher.hash_text(&body.token);
    // Taken out under the lock, so two concurrent requests cannot both use it; put back if
    // creating the owner fails.
    let expected = {
        let mut slot = state
            .setup_token_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match slot.as_deref() {
            None => {
                return Err(ApiError::conflict(
                    "setup is already complete: sign in instead",
                ));
            }
            Some(expected) if !bool::from(subtle_eq(&presented, expected)) => {
                return Err(ApiError::unauthorized("wrong setup token"));
            }
            Some(_) => slot.take(),
        }
    };
    let restore = || {
        *state
            .setup_token_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = expected.clone()
    };
    let created = async {
        if state.store.count_users().await? > 0 {
            return Err(ApiError::conflict(
                "setup is already complete: sign in instead",
            ));
        }
        let hash = hash_password_off_thread(&state, body.password).await?;
        Ok(state.store.create_user(&email, &hash).await?)
    }
    .await;
    let user = match created {
        Ok(user) => user,
        Err(e) => {
            if e.code != sluice_proto::ErrorCode::Conflict {
                restore();
            }
            return Err(e);
        }
    };
    tracing::info!(user_id = %user.id, "first owner created through setup");
    let session = SessionIssuer { state: &state }.issue_for(&user).await?;
    Ok(session_response(StatusCode::CREATED, session))
}

fn subtle_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}

/// Redeem an invitation: creates the account, joins the tenant, and signs in.
#[utoipa::path(post, path = "/api/v1/auth/accept-invite", tag = "auth", request_body = AcceptInviteRequest,
    responses(
        (status = 201, description = "Account created and signed in", body = TokenResponse),
        (status = 404, description = "Unknown, used or expired invitation", body = ErrorBody),
        (status = 409, description = "An account with the invited e-mail exists", body = ErrorBody),
        (status = 422, description = "Invalid password", body = ErrorBody),
    ))]
pub async fn accept_invite(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<AcceptInviteRequest>,
) -> Result<Response, ApiError> {
    limit_by_ip(&state, ip)?;
    validate::password(&body.password)?;
    let token_hash = state.hasher.hash_text(&body.token);
    // Checked before hashing the password: an unknown token costs no argon2 work.
    if !state.store.invitation_is_pending(&token_hash).await? {
        return Err(ApiError::not_found(
            "invitation is unknown, used or expired",
        ));
    }
    let hash = hash_password_off_thread(&state, body.password).await?;
    let accepted = state
        .store
        .accept_invitation(&token_hash, &hash, ip.to_option_string())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("invitation is unknown, used or expired"),
            other => other.into(),
        })?;
    tracing::info!(user_id = %accepted.user.id, tenant_id = %accepted.tenant_id, "invitation accepted");
    let session = SessionIssuer { state: &state }
        .issue_for(&accepted.user)
        .await?;
    Ok(session_response(StatusCode::CREATED, session))
}

/// Create an account (only when the control plane runs with `--allow-signup`).
#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created and signed in", body = TokenResponse),
        (status = 403, description = "Sign-up is disabled", body = ErrorBody),
        (status = 409, description = "E-mail taken", body = ErrorBody),
        (status = 422, description = "Invalid e-mail or password", body = ErrorBody),
    ))]
pub async fn signup(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(body): ApiJson<SignupRequest>,
) -> Result<Response, ApiError> {
    if !state.config.allow_signup {
        return Err(ApiError::forbidden(
            "sign-up is disabled; ask a tenant admin for an invitation",
        ));
    }
    limit_by_ip(&state, ip)?;
    let email = validate::email(&body.email)?;
    validate::password(&body.password)?;
    let hash = hash_password_off_thread(&state, body.password).await?;
    let user = state.store.create_user(&email, &hash).await?;
    let session = SessionIssuer { state: &state }.issue_for(&user).await?;
    Ok(session_response(StatusCode::CREATED, session))
}

/// Who the credentials belong to.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ))]
pub async fn me(principal: Principal) -> axum::Json<MeResponse> {
    axum::Json(match principal {
        Principal::User { id, email } => MeResponse {
            kind: "user",
            id,
            name: email,
            tenant_id: None,
        },
        Principal::ApiKey {
            id,
            tenant_id,
            name,
            ..
        } => MeResponse {
            kind: "api_key",
            id,
            name,
            tenant_id: Some(tenant_id),
        },
        Principal::ServiceKey {
            id,
            tenant_id,
            name,
        } => MeResponse {
            kind: "service_key",
            id,
            name,
            tenant_id: Some(tenant_id),
        },
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthStatus {
    /// No account exists yet: the first owner is created with the setup token from the log.
    pub setup_required: bool,
    /// Anyone may create an account with `POST /api/v1/auth/signup`.
    pub signup_allowed: bool,
}

/// What a sign-in page needs to know before anyone is signed in.
#[utoipa::path(get, path = "/api/v1/auth/status", tag = "auth",
    responses((status = 200, body = AuthStatus)))]
pub async fn status(State(state): State<AppState>) -> axum::Json<AuthStatus> {
    let setup_required = state
        .setup_token_hash
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some();
    axum::Json(AuthStatus {
        setup_required,
        signup_allowed: state.config.allow_signup,
    })
}

/// The public keys access and query tokens are signed with (RFC 7517).
#[utoipa::path(get, path = "/api/v1/auth/jwks.json", tag = "auth",
    responses((status = 200, description = "JSON Web Key Set", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> axum::Json<Jwks> {
    axum::Json(state.jwt.jwks())
}
