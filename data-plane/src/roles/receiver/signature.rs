//! Signed requests for server-side sources, which need not send their write key at all:
//!
//! ```text
//! X-Sluice-Key-Id: <the key's 8-character public id>
//! X-Timestamp: <Unix milliseconds>
//! X-Signature: sha256=<hex HMAC-SHA-256 of "<X-Timestamp>.<request body as sent>">
//! ```
//!
//! The HMAC key is the SHA-256 of the write key: what the data plane holds (it never has the
//! key itself). The timestamp must be within five minutes of the node's clock.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sluice_proto::ErrorCode;

use crate::http::ApiError;

/// Largest accepted clock difference, in milliseconds.
const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

pub struct Signed {
    pub key_id: String,
    timestamp: String,
    signature: Vec<u8>,
}

fn refuse(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

impl Signed {
    /// The signature headers, if the request carries `X-Signature`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let Some(signature) = header("x-signature") else {
            return Ok(None);
        };
        let hex = signature
            .strip_prefix("sha256=")
            .ok_or_else(|| refuse("X-Signature: expected sha256=<hex>"))?;
        let signature = decode_hex(hex).ok_or_else(|| refuse("X-Signature: not hex"))?;
        let key_id = header("x-sluice-key-id")
            .ok_or_else(|| refuse("X-Sluice-Key-Id: required with X-Signature"))?;
        let timestamp = header("x-timestamp")
            .ok_or_else(|| refuse("X-Timestamp: required with X-Signature"))?;
        Ok(Some(Self {
            key_id: key_id.to_owned(),
            timestamp: timestamp.to_owned(),
            signature,
        }))
    }

    /// Checks the timestamp window and the HMAC (in constant time).
    pub fn verify(&self, key_digest: &[u8], body: &[u8], now_ms: i64) -> Result<(), ApiError> {
        let at: i64 = self
            .timestamp
            .parse()
            .map_err(|_| refuse("X-Timestamp: Unix milliseconds"))?;
        if (now_ms - at).abs() > MAX_SKEW_MS {
            return Err(refuse(
                "X-Timestamp: outside ±5 minutes of the receiver's clock (stale or replayed)",
            ));
        }
        let mut mac =
            Hmac::<Sha256>::new_from_slice(key_digest).map_err(|_| refuse("signature key"))?;
        mac.update(self.timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&self.signature)
            .map_err(|_| refuse("X-Signature does not match"))
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
