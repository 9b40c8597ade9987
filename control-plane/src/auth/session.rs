//! Sign-in sessions: a short-lived access token in the response body and a rotating refresh
//! token in an HttpOnly cookie scoped to the auth endpoints.

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use time::OffsetDateTime;

use super::principal::{API_AUDIENCE, AccessClaims};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{User, new_id, now_ms};

pub const REFRESH_COOKIE: &str = "sluice_refresh";
const COOKIE_PATH: &str = "/api/v1/auth";

/// Issues access and refresh tokens.
pub struct SessionIssuer<'a> {
    pub state: &'a AppState,
}

/// A new session: the access token and the `Set-Cookie` value carrying the refresh token.
pub struct IssuedSession {
    pub access_token: String,
    pub expires_in: u64,
    pub set_cookie: HeaderValue,
}

impl SessionIssuer<'_> {
    /// Starts a session for `user` in a new refresh-token family.
    pub async fn issue_for(&self, user: &User) -> Result<IssuedSession, ApiError> {
        let refresh = sluice_keys::random::token::<32>()?;
        self.state
            .store
            .insert_refresh_token(
                &self.state.hasher.hash_text(&refresh),
                &new_id(),
                &user.id,
                self.refresh_expiry(),
            )
            .await?;
        self.session(&user.id, &user.email, &refresh)
    }

    /// When a refresh token issued now expires, in Unix milliseconds.
    pub fn refresh_expiry(&self) -> i64 {
        let ttl_ms =
            i64::try_from(self.state.config.refresh_token_ttl.as_millis()).unwrap_or(i64::MAX);
        now_ms().saturating_add(ttl_ms)
    }

    /// An access token for the user and the cookie carrying `refresh`, already stored.
    pub fn session(
        &self,
        user_id: &str,
        email: &str,
        refresh: &str,
    ) -> Result<IssuedSession, ApiError> {
        let config = &self.state.config;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let ttl = config.access_token_ttl.as_secs();
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            email: email.to_owned(),
            aud: API_AUDIENCE.to_owned(),
            iss: self.state.jwt.issuer().to_owned(),
            iat: now,
            exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        };
        let access_token = self.state.jwt.sign(&claims)?;
        let cookie = format!(
            "{REFRESH_COOKIE}={refresh}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; SameSite=Strict{}",
            config.refresh_token_ttl.as_secs(),
            if config.secure_cookies {
                "; Secure"
            } else {
                ""
            }
        );
        let set_cookie = HeaderValue::from_str(&cookie).map_err(|_| ApiError::internal())?;
        Ok(IssuedSession {
            access_token,
            expires_in: ttl,
            set_cookie,
        })
    }
}

/// The refresh token from the request's cookies.
pub fn refresh_cookie_from(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// A `Set-Cookie` that deletes the refresh cookie.
pub fn clear_refresh_cookie(headers: &mut HeaderMap, secure: bool) {
    let cookie = format!(
        "{REFRESH_COOKIE}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.append(SET_COOKIE, value);
    }
}
