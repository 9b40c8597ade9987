//! Cross-domain handoff tokens. A visitor moving from `shop.example.com` to `example.de` is
//! a stranger to the second site: browsers (Safari's ITP first) keep cookies per site, and
//! third-party cookies are gone. So `sluice.js` adds a short-lived token to links to the
//! tenant's other domains; the proxy on the other domain checks it and sets its own
//! first-party cookie to the same visitor id, from the server (cookies set by a server are
//! not capped to seven days the way script-set ones are).
//!
//! A token is `v1.<visitor>.<expiry seconds>.<nonce>.<mac>`: the MAC is HMAC-SHA256 with a
//! secret the nodes hold (never the control plane), over everything before it. It lasts at
//! most [`MAX_LIFETIME_SECS`] and is accepted once ([`crate::kv::Kv::claim`] on its nonce).

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// How long a token is valid, at most, in seconds.
pub const MAX_LIFETIME_SECS: i64 = 120;
/// Longest token read, in bytes (a visitor id is at most 64 bytes).
pub const MAX_TOKEN: usize = 200;
/// The URL parameter that carries a token.
pub const PARAM: &str = "_sluice";

/// Why a token is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("not a handoff token")]
    Malformed,
    #[error("the handoff token's signature does not match")]
    BadSignature,
    #[error("the handoff token has expired")]
    Expired,
}

/// The nodes' secret: 32 bytes or more.
#[derive(Clone)]
pub struct HandoffKey(Vec<u8>);

impl std::fmt::Debug for HandoffKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandoffKey(..)")
    }
}

fn valid_visitor(visitor: &str) -> bool {
    !visitor.is_empty()
        && visitor.len() <= 64
        && visitor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a valid token says.
#[derive(Debug, PartialEq, Eq)]
pub struct Handoff {
    pub visitor: String,
    /// Accept it only once: claim this.
    pub nonce: String,
    pub expires_s: i64,
}

impl HandoffKey {
    /// A key of at least 32 bytes; `None` for a shorter one.
    pub fn new(secret: Vec<u8>) -> Option<Self> {
        (secret.len() >= 32).then_some(Self(secret))
    }

    fn mac(&self, text: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(text.as_bytes());
        mac
    }

    /// A token for `visitor`, valid until `now_s + lifetime_s` (at most two minutes).
    pub fn issue(&self, visitor: &str, now_s: i64, lifetime_s: i64) -> Option<String> {
        if !valid_visitor(visitor) {
            return None;
        }
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).ok()?;
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let expires = now_s + lifetime_s.clamp(1, MAX_LIFETIME_SECS);
        let text = format!("v1.{visitor}.{expires}.{nonce}");
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.mac(&text).finalize().into_bytes());
        Some(format!("{text}.{mac}"))
    }

    /// Checks a token's form, signature and time (not whether it was used: claim its nonce).
    pub fn verify(&self, token: &str, now_s: i64) -> Result<Handoff, HandoffError> {
        if token.len() > MAX_TOKEN {
            return Err(HandoffError::Malformed);
        }
        let (text, mac) = token.rsplit_once('.').ok_or(HandoffError::Malformed)?;
        let parts: Vec<&str> = text.split('.').collect();
        let ["v1", visitor, expires, nonce] = parts.as_slice() else {
            return Err(HandoffError::Malformed);
        };
        let expires: i64 = expires.parse().map_err(|_| HandoffError::Malformed)?;
        if !valid_visitor(visitor)
            || nonce.len() != 24
            || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(HandoffError::Malformed);
        }
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| HandoffError::Malformed)?;
        self.mac(text)
            .verify_slice(&mac)
            .map_err(|_| HandoffError::BadSignature)?;
        if expires < now_s || expires > now_s + MAX_LIFETIME_SECS {
            return Err(HandoffError::Expired);
        }
        Ok(Handoff {
            visitor: (*visitor).to_owned(),
            nonce: (*nonce).to_owned(),
            expires_s: expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> HandoffKey {
        HandoffKey::new(vec![byte; 32]).expect("key")
    }

    #[test]
    fn a_token_carries_the_visitor_for_two_minutes_at_most() {
        let token = key(1).issue("0193-visitor_A", 1_000, 600).expect("token");
        let handoff = key(1).verify(&token, 1_000).expect("valid");
        assert_eq!(handoff.visitor, "0193-visitor_A");
        assert_eq!(handoff.expires_s, 1_000 + MAX_LIFETIME_SECS);
        assert_eq!(key(1).verify(&token, 1_121), Err(HandoffError::Expired));
        assert_eq!(
            key(2).verify(&token, 1_000),
            Err(HandoffError::BadSignature)
        );
        let other = key(1).issue("0193-visitor_A", 1_000, 60).expect("token");
        assert_ne!(token, other, "each token has its own nonce");
    }

    #[test]
    fn changed_or_hostile_tokens_are_refused() {
        let token = key(1).issue("v-1", 1_000, 60).expect("token");
        let forged = token.replacen("v-1", "v-2", 1);
        assert_eq!(
            key(1).verify(&forged, 1_000),
            Err(HandoffError::BadSignature)
        );
        for bad in [
            "",
            "v1",
            "v1.a.b.c.d",
            &"x".repeat(500),
            "v1.<x>.1060.00.mac",
        ] {
            assert_eq!(
                key(1).verify(bad, 1_000),
                Err(HandoffError::Malformed),
                "{bad}"
            );
        }
        assert!(key(1).issue("<script>", 1, 60).is_none());
        assert!(HandoffKey::new(vec![0; 16]).is_none());
    }
}
