//! Control-plane configuration: a raw serde struct with documented defaults, validated once
//! into the typed [`Config`] the server runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Raw settings as they come from flags, environment or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Address of the REST API and web UI. Default: `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// Address of the gRPC config-sync service. Default: `127.0.0.1:8081`.
    pub grpc_addr: SocketAddr,
    /// `postgres://…` for PostgreSQL; unset means SQLite in `data_dir`. Default: unset.
    pub database_url: Option<String>,
    /// Directory for the SQLite database and the key pepper. Default: `./sluice-data`.
    pub data_dir: PathBuf,
    /// Whether anyone may create an account with `POST /api/v1/auth/signup`. Default: false.
    pub allow_signup: bool,
    /// E-mail of the first owner, created at start-up if no such user exists. Default: unset.
    pub admin_email: Option<String>,
    /// Password of the first owner. Default: unset (never a default password).
    pub admin_password: Option<String>,
    /// Secret mixed into every stored key hash; at least 32 bytes. Unset means a random pepper
    /// kept in `data_dir/key-pepper`. Replicas sharing one database must share it.
    /// Default: unset.
    pub key_pepper: Option<String>,
    /// Lifetime of an access token, in seconds. Default: 900 (15 minutes).
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds. Default: 2,592,000 (30 days).
    pub refresh_token_ttl_secs: u64,
    /// Lifetime of a member invitation, in seconds. Default: 604,800 (7 days).
    pub invitation_ttl_secs: u64,
    /// Largest accepted request body, in bytes. Default: 1,048,576 (1 MiB).
    pub max_body_bytes: usize,
    /// Sign-in attempts allowed per client IP per minute. Default: 30.
    pub login_attempts_per_ip_per_minute: u32,
    /// Failed sign-ins allowed per account per 15 minutes. Default: 10.
    pub login_failures_per_account: u32,
    /// Whether cookies carry the `Secure` attribute. Browsers treat `localhost` as secure, so
    /// this stays on even for local use. Default: true.
    pub secure_cookies: bool,
    /// How often the last-used times of keys are written to the store, in milliseconds.
    /// Default: 5,000.
    pub key_usage_flush_ms: u64,
    /// Password hashes computed at once (each holds 19 MiB); more requests wait. Default: 4.
    pub password_hash_concurrency: usize,
    /// NATS server through which replicas share changes and revocations; unset means this
    /// process is the only replica. Default: unset.
    pub nats_url: Option<String>,
    /// PEM certificate chain for TLS on the gRPC port. Default: unset (plain HTTP/2).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`. Default: unset.
    pub tls_key: Option<PathBuf>,
    /// How often the control plane sends a heartbeat on each stream, in seconds. Default: 15.
    pub sync_heartbeat_secs: u64,
    /// A stream on which nothing arrives for this long is closed, in seconds. Default: 60.
    pub sync_idle_timeout_secs: u64,
    /// Largest message accepted from a data plane, in bytes. Default: 262,144 (256 KiB).
    pub max_sync_message_bytes: usize,
    /// Base URL of a data plane's query role as browsers reach it; the console's archive page
    /// starts with it, and the Content-Security-Policy lets pages call it even over plain
    /// HTTP (any `https:` origin is always allowed). Default: unset.
    pub ui_query_url: Option<String>,
    /// The gRPC URL data planes reach this control plane at (`https://sluice.example.com:8081`),
    /// written into the console's data-plane setup lines. Default: unset (the console uses the
    /// host it was loaded from and `grpc_addr`'s port).
    pub public_grpc_url: Option<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            database_url: None,
            data_dir: PathBuf::from("./sluice-data"),
            allow_signup: false,
            admin_email: None,
            admin_password: None,
            key_pepper: None,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            invitation_ttl_secs: 7 * 24 * 3600,
            max_body_bytes: 1024 * 1024,
            login_attempts_per_ip_per_minute: 30,
            login_failures_per_account: 10,
            secure_cookies: true,
            key_usage_flush_ms: 5_000,
            password_hash_concurrency: 4,
            nats_url: None,
            tls_cert: None,
            tls_key: None,
            sync_heartbeat_secs: 15,
            sync_idle_timeout_secs: 60,
            max_sync_message_bytes: 256 * 1024,
            ui_query_url: None,
            public_grpc_url: None,
        }
    }
}

/// The first owner, from `SLUICE_ADMIN_EMAIL` and `SLUICE_ADMIN_PASSWORD`.
#[derive(Debug, Clone)]
pub struct AdminBootstrap {
    pub email: String,
    pub password: String,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub allow_signup: bool,
    pub admin: Option<AdminBootstrap>,
    pub key_pepper: Option<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub invitation_ttl: Duration,
    pub max_body_bytes: usize,
    pub login_attempts_per_ip_per_minute: u32,
    pub login_failures_per_account: u32,
    pub secure_cookies: bool,
    pub key_usage_flush: Duration,
    pub password_hash_concurrency: usize,
    pub nats_url: Option<String>,
    /// Certificate and key for TLS on the gRPC port.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub sync_heartbeat: Duration,
    pub sync_idle_timeout: Duration,
    pub max_sync_message_bytes: usize,
    /// The query role's URL for the console, and its origin (`scheme://host:port`).
    pub ui_query: Option<UiQuery>,
    pub public_grpc_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UiQuery {
    pub url: String,
    pub origin: String,
}

/// `scheme://host[:port]` of an http(s) URL with nothing a CSP source could misread.
fn web_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split('/').next()?;
    let valid = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    valid.then(|| format!("{scheme}://{authority}"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

impl RawConfig {
    pub fn validate(self) -> Result<Config, ConfigError> {
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            return Err(invalid(
                "database_url",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        let admin = match (self.admin_email, self.admin_password) {
            (None, None) => None,
            (Some(email), Some(password)) => {
                let email = crate::validate::email(&email)
                    .map_err(|e| invalid("admin_email", e.message))?;
                crate::validate::password(&password)
                    .map_err(|e| invalid("admin_password", e.message))?;
                Some(AdminBootstrap { email, password })
            }
            _ => {
                return Err(invalid(
                    "admin_email",
                    "SLUICE_ADMIN_EMAIL and SLUICE_ADMIN_PASSWORD go together",
                ));
            }
        };
        if let Some(pepper) = &self.key_pepper
            && pepper.len() < 32
        {
            return Err(invalid("key_pepper", "must be at least 32 bytes"));
        }
        if !(60..=86_400).contains(&self.access_token_ttl_secs) {
            return Err(invalid(
                "access_token_ttl_secs",
                "must be between 60 and 86400",
            ));
        }
        if self.refresh_token_ttl_secs < self.access_token_ttl_secs {
            return Err(invalid(
                "refresh_token_ttl_secs",
                "must not be shorter than the access token",
            ));
        }
        if self.invitation_ttl_secs == 0 {
            return Err(invalid("invitation_ttl_secs", "must be positive"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "max_body_bytes",
                "must be between 1 KiB and 64 MiB",
            ));
        }
        if self.login_attempts_per_ip_per_minute == 0 || self.login_failures_per_account == 0 {
            return Err(invalid(
                "login_attempts_per_ip_per_minute",
                "login limits must be positive",
            ));
        }
        if !(1..=64).contains(&self.password_hash_concurrency) {
            return Err(invalid(
                "password_hash_concurrency",
                "must be between 1 and 64",
            ));
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => return Err(invalid("tls_cert", "--tls-cert and --tls-key go together")),
        };
        if !(1..=3600).contains(&self.sync_heartbeat_secs) {
            return Err(invalid("sync_heartbeat_secs", "must be between 1 and 3600"));
        }
        if self.sync_idle_timeout_secs <= self.sync_heartbeat_secs {
            return Err(invalid(
                "sync_idle_timeout_secs",
                "must be longer than the heartbeat",
            ));
        }
        if !(4096..=64 * 1024 * 1024).contains(&self.max_sync_message_bytes) {
            return Err(invalid(
                "max_sync_message_bytes",
                "must be between 4 KiB and 64 MiB",
            ));
        }
        if let Some(url) = &self.nats_url
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            return Err(invalid("nats_url", "must start with nats:// or tls://"));
        }
        if !(100..=600_000).contains(&self.key_usage_flush_ms) {
            return Err(invalid(
                "key_usage_flush_ms",
                "must be between 100 and 600000",
            ));
        }
        let ui_query = match self.ui_query_url {
            None => None,
            Some(url) => {
                let url = url.trim_end_matches('/').to_owned();
                let origin = web_origin(&url).ok_or_else(|| {
                    invalid(
                        "ui_query_url",
                        "must be an http:// or https:// URL, e.g. http://dataplane.internal:8090",
                    )
                })?;
                Some(UiQuery { url, origin })
            }
        };
        let public_grpc_url = match self.public_grpc_url {
            None => None,
            Some(url) => {
                let url = url.trim_end_matches('/').to_owned();
                web_origin(&url).ok_or_else(|| {
                    invalid(
                        "public_grpc_url",
                        "must be an http:// or https:// URL, e.g. https://sluice.example.com:8081",
                    )
                })?;
                Some(url)
            }
        };
        Ok(Config {
            public_grpc_url,
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            database_url: self.database_url,
            data_dir: self.data_dir,
            allow_signup: self.allow_signup,
            admin,
            key_pepper: self.key_pepper,
            access_token_ttl: Duration::from_secs(self.access_token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
            invitation_ttl: Duration::from_secs(self.invitation_ttl_secs),
            max_body_bytes: self.max_body_bytes,
            login_attempts_per_ip_per_minute: self.login_attempts_per_ip_per_minute,
            login_failures_per_account: self.login_failures_per_account,
            secure_cookies: self.secure_cookies,
            key_usage_flush: Duration::from_millis(self.key_usage_flush_ms),
            password_hash_concurrency: self.password_hash_concurrency,
            nats_url: self.nats_url,
            tls,
            sync_heartbeat: Duration::from_secs(self.sync_heartbeat_secs),
            sync_idle_timeout: Duration::from_secs(self.sync_idle_timeout_secs),
            max_sync_message_bytes: self.max_sync_message_bytes,
            ui_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_query_url_must_be_a_plain_web_origin() {
        assert_eq!(
            web_origin("http://10.0.0.5:8090/base").as_deref(),
            Some("http://10.0.0.5:8090")
        );
        assert_eq!(
            web_origin("https://q.example.com").as_deref(),
            Some("https://q.example.com")
        );
        assert_eq!(web_origin("javascript:alert(1)"), None);
        assert_eq!(web_origin("http://a.example; script-src *"), None);
        assert_eq!(web_origin("ftp://x"), None);
        let raw = RawConfig {
            ui_query_url: Some("nope".into()),
            ..RawConfig::default()
        };
        assert!(raw.validate().is_err());
    }

    #[test]
    fn defaults_validate() {
        let config = RawConfig::default().validate().expect("defaults are valid");
        assert_eq!(config.http_addr.port(), 8080);
        assert_eq!(config.grpc_addr.port(), 8081);
        assert!(config.database_url.is_none() && config.admin.is_none());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err =
            serde_json::from_str::<RawConfig>(r#"{"http_adr":"127.0.0.1:1"}"#).expect_err("typo");
        assert!(
            err.to_string().contains("unknown field `http_adr`"),
            "{err}"
        );
    }

    #[test]
    fn half_an_admin_or_a_weak_pepper_is_refused() {
        let raw = RawConfig {
            admin_email: Some("a@example.com".into()),
            ..RawConfig::default()
        };
        assert!(raw.validate().is_err());
        let raw = RawConfig {
            key_pepper: Some("short".into()),
            ..RawConfig::default()
        };
        assert!(raw.validate().is_err());
        let raw = RawConfig {
            database_url: Some("mysql://x".into()),
            ..RawConfig::default()
        };
        assert!(raw.validate().is_err());
    }
}
