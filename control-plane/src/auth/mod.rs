//! Who is calling: users with short-lived JWT access tokens, and `api`/`service` keys.

mod key_cache;
mod key_usage;
mod principal;
mod rate_limit;
mod session;

pub use key_cache::KeyCache;
pub use key_usage::KeyUsage;
pub use principal::{API_AUDIENCE, AccessClaims, Principal, VerifiedKey, bearer_token, verify_key};
pub use rate_limit::WindowLimiter;
pub use session::{
    IssuedSession, REFRESH_COOKIE, SessionIssuer, clear_refresh_cookie, refresh_cookie_from,
};
