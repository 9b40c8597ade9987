//! The key format.
//!
//! ```text
//! slk_svc_Ab3dE5gH_<43 base62 secret characters><6 base62 checksum characters>
//! ^^^ ^^^ ^^^^^^^^
//!  |   |   public id: what the UI shows and what the store is indexed by
//!  |   type: svc (data plane), api (automation), ing (event ingest)
//!  prefix a secret scanner can match: slk_(svc|api|ing)_[0-9A-Za-z]{8}_[0-9A-Za-z]{49}
//! ```
//!
//! The secret is 43 uniformly random base62 characters (256 bits). The checksum is the CRC-32
//! of everything before it, so a mistyped, truncated or otherwise damaged key is rejected
//! without touching the store: CRC-32 detects every error confined to 32 consecutive bits,
//! which includes any single changed character.
//!
//! Only a keyed hash (HMAC-SHA-256 with a server-side pepper) of the whole key is stored. Keys
//! are high-entropy, so a slow password hash would add nothing but latency.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{KeyError, base62};

const PREFIX: &str = "slk";
/// Characters in the public id.
pub const PUBLIC_ID_LEN: usize = 8;
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// `slk_` + type + `_` + public id + `_` + secret + checksum.
const KEY_LEN: usize = PREFIX.len() + 1 + 3 + 1 + PUBLIC_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;
const MIN_PEPPER_LEN: usize = 32;

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// A data plane: config sync and status for its tenant.
    Service,
    /// Automation against the management API, with a role.
    Api,
    /// A source writing events to a receiver.
    Ingest,
}

impl KeyType {
    pub const ALL: [KeyType; 3] = [KeyType::Service, KeyType::Api, KeyType::Ingest];

    /// The three-letter tag inside the key text.
    pub fn tag(self) -> &'static str {
        match self {
            KeyType::Service => "svc",
            KeyType::Api => "api",
            KeyType::Ingest => "ing",
        }
    }

    /// The name used in APIs and the store (`service`, `api`, `ingest`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Service => "service",
            KeyType::Api => "api",
            KeyType::Ingest => "ingest",
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.tag() == tag)
    }
}

impl FromStr for KeyType {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(KeyError::Malformed("unknown key type"))
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key whose format and checksum are valid. Holding one says nothing about whether the
/// key exists: that takes a store look-up by [`ParsedKey::public_id`] and
/// [`KeyHasher::verify`].
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedKey {
    key_type: KeyType,
    text: String,
}

impl ParsedKey {
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The 8-character public id.
    pub fn public_id(&self) -> &str {
        let start = PREFIX.len() + 1 + 3 + 1;
        &self.text[start..start + PUBLIC_ID_LEN]
    }

    /// What a person is shown instead of the key: `slk_svc_Ab3dE5gH`.
    pub fn display_prefix(&self) -> &str {
        &self.text[..PREFIX.len() + 1 + 3 + 1 + PUBLIC_ID_LEN]
    }

    /// The whole key. Handle with care: this is the secret.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

// The secret must never end up in a log line through `{:?}`.
impl fmt::Debug for ParsedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedKey({}…)", self.display_prefix())
    }
}

impl FromStr for ParsedKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != KEY_LEN {
            return Err(KeyError::Malformed("wrong length"));
        }
        if !text.is_ascii() {
            return Err(KeyError::Malformed("not ascii"));
        }
        let mut parts = text.splitn(4, '_');
        let (Some(prefix), Some(tag), Some(public_id), Some(rest)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::Malformed("missing separator"));
        };
        if prefix != PREFIX {
            return Err(KeyError::Malformed("not a sluice key"));
        }
        let key_type = KeyType::from_tag(tag).ok_or(KeyError::Malformed("unknown key type"))?;
        if public_id.len() != PUBLIC_ID_LEN || rest.len() != SECRET_LEN + CHECKSUM_LEN {
            return Err(KeyError::Malformed("wrong field length"));
        }
        if !base62::is_base62(public_id) || !base62::is_base62(rest) {
            return Err(KeyError::Malformed("invalid character"));
        }
        let (body, checksum) = text.split_at(KEY_LEN - CHECKSUM_LEN);
        if base62::decode_u32(checksum) != Some(crc32fast::hash(body.as_bytes())) {
            return Err(KeyError::Malformed("checksum mismatch"));
        }
        Ok(ParsedKey {
            key_type,
            text: text.to_owned(),
        })
    }
}

/// A new key of `key_type` with a fresh public id and secret from the OS RNG.
pub fn generate_key(key_type: KeyType) -> Result<ParsedKey, KeyError> {
    let public_id = base62::random_string(PUBLIC_ID_LEN)?;
    let secret = base62::random_string(SECRET_LEN)?;
    let body = format!("{PREFIX}_{}_{public_id}_{secret}", key_type.tag());
    let checksum = base62::encode_u32(crc32fast::hash(body.as_bytes()), CHECKSUM_LEN);
    Ok(ParsedKey {
        key_type,
        text: body + &checksum,
    })
}

/// Computes and verifies the stored form of keys: HMAC-SHA-256 under a server-side pepper,
/// so a leaked database alone cannot be used to test candidate keys.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl KeyHasher {
    /// A hasher with `pepper`, which must be at least 32 bytes of secret.
    pub fn new(pepper: &[u8]) -> Result<Self, KeyError> {
        if pepper.len() < MIN_PEPPER_LEN {
            return Err(KeyError::WeakPepper {
                min: MIN_PEPPER_LEN,
                got: pepper.len(),
            });
        }
        let mac = Hmac::<Sha256>::new_from_slice(pepper).map_err(|_| KeyError::WeakPepper {
            min: MIN_PEPPER_LEN,
            got: pepper.len(),
        })?;
        Ok(Self { mac })
    }

    /// The 32-byte hash to store for `key`.
    pub fn hash(&self, key: &ParsedKey) -> Vec<u8> {
        self.hash_text(key.expose())
    }

    /// The keyed hash of any high-entropy token (refresh, setup and invitation tokens).
    pub fn hash_text(&self, text: &str) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `key` hashes to `stored`, compared in constant time.
    pub fn verify(&self, key: &ParsedKey, stored: &[u8]) -> Result<(), KeyError> {
        let mut mac = self.mac.clone();
        mac.update(key.expose().as_bytes());
        mac.verify_slice(stored).map_err(|_| KeyError::Mismatch)
    }
}

/// SHA-256 of a key, which a data plane holds to verify keys (ingest keys on its receivers,
/// service and api keys on its own APIs) without the control plane's pepper. Keys carry 256
/// bits of entropy, so an unkeyed hash reveals nothing useful.
pub fn key_digest(key: &ParsedKey) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.expose().as_bytes()).into()
}

/// Whether `key` matches a [`key_digest`], compared in constant time.
pub fn verify_key_digest(key: &ParsedKey, digest: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    digest.len() == 32 && bool::from(key_digest(key).ct_eq(digest))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hasher() -> KeyHasher {
        KeyHasher::new(&[7u8; 32]).expect("pepper")
    }

    #[test]
    fn generated_keys_parse_and_verify() {
        for key_type in KeyType::ALL {
            let key = generate_key(key_type).expect("generate");
            assert_eq!(key.expose().len(), KEY_LEN);
            let parsed: ParsedKey = key.expose().parse().expect("parse");
            assert_eq!(parsed.key_type(), key_type);
            assert_eq!(parsed.public_id().len(), PUBLIC_ID_LEN);
            assert!(
                parsed
                    .display_prefix()
                    .starts_with(&format!("slk_{}_", key_type.tag()))
            );
            hasher()
                .verify(&parsed, &hasher().hash(&key))
                .expect("verify");
        }
    }

    #[test]
    fn a_different_key_does_not_verify() {
        let a = generate_key(KeyType::Api).expect("generate");
        let b = generate_key(KeyType::Api).expect("generate");
        assert_ne!(a.public_id(), b.public_id());
        assert!(hasher().verify(&b, &hasher().hash(&a)).is_err());
    }

    #[test]
    fn a_different_pepper_does_not_verify() {
        let key = generate_key(KeyType::Service).expect("generate");
        let other = KeyHasher::new(&[8u8; 32]).expect("pepper");
        assert!(other.verify(&key, &hasher().hash(&key)).is_err());
    }

    #[test]
    fn key_digests_verify_only_their_key() {
        let key = generate_key(KeyType::Ingest).expect("generate");
        let other = generate_key(KeyType::Ingest).expect("generate");
        let digest = key_digest(&key);
        assert!(verify_key_digest(&key, &digest));
        assert!(!verify_key_digest(&other, &digest));
        assert!(!verify_key_digest(&key, &digest[..31]));
    }

    #[test]
    fn short_peppers_are_refused() {
        assert!(matches!(
            KeyHasher::new(&[1u8; 31]),
            Err(KeyError::WeakPepper { .. })
        ));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let key = generate_key(KeyType::Service).expect("generate");
        let debug = format!("{key:?}");
        assert!(!debug.contains(&key.expose()[20..]), "{debug}");
    }

    #[test]
    fn rejects_obvious_garbage() {
        for text in [
            "",
            "slk_svc_",
            "Bearer x",
            "slk_xxx_AAAAAAAA_",
            &"a".repeat(KEY_LEN),
        ] {
            assert!(text.parse::<ParsedKey>().is_err(), "{text:?}");
        }
    }

    fn any_key_type() -> impl Strategy<Value = KeyType> {
        prop::sample::select(KeyType::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(key_type in any_key_type()) {
            let key = generate_key(key_type).expect("generate");
            let parsed: ParsedKey = key.expose().parse().expect("parse");
            prop_assert_eq!(parsed, key);
        }

        #[test]
        fn any_changed_character_is_rejected(
            key_type in any_key_type(),
            index in 0..KEY_LEN,
            replacement in any::<char>(),
        ) {
            let key = generate_key(key_type).expect("generate");
            let text = key.expose();
            let original = text.as_bytes()[index] as char;
            prop_assume!(replacement != original);
            let mut tampered: String = text[..index].to_owned();
            tampered.push(replacement);
            tampered.push_str(&text[index + 1..]);
            prop_assert!(tampered.parse::<ParsedKey>().is_err(), "{} accepted", tampered);
        }

        #[test]
        fn any_changed_alphanumeric_is_rejected(
            key_type in any_key_type(),
            index in 0..KEY_LEN,
            replacement in prop::sample::select(base62::ALPHABET.to_vec()),
        ) {
            // The interesting case: a plausible typo that keeps the alphabet and the length.
            let key = generate_key(key_type).expect("generate");
            let mut bytes = key.expose().as_bytes().to_vec();
            prop_assume!(bytes[index] != replacement);
            bytes[index] = replacement;
            let tampered = String::from_utf8(bytes).expect("ascii");
            prop_assert!(tampered.parse::<ParsedKey>().is_err(), "{} accepted", tampered);
        }

        #[test]
        fn any_truncation_is_rejected(key_type in any_key_type(), len in 0..KEY_LEN) {
            let key = generate_key(key_type).expect("generate");
            prop_assert!(key.expose()[..len].parse::<ParsedKey>().is_err());
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = text.parse::<ParsedKey>();
        }
    }
}
