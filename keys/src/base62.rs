//! The base62 alphabet keys are written in: no punctuation, so a double-click selects a
//! whole key and no URL or shell quoting is needed.

use crate::{KeyError, random};

pub(crate) const ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub(crate) fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `len` uniformly random base62 characters (rejection sampling, no modulo bias).
pub(crate) fn random_string(len: usize) -> Result<String, KeyError> {
    let mut out = String::with_capacity(len);
    let mut pool = [0u8; 64];
    while out.len() < len {
        random::fill(&mut pool)?;
        for &b in &pool {
            // 248 = 4 · 62: bytes at or above it would favour the first symbols.
            if b < 248 && out.len() < len {
                out.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    Ok(out)
}

/// `value` written as exactly `width` base62 digits, most significant first.
pub(crate) fn encode_u32(mut value: u32, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// The inverse of [`encode_u32`]; `None` for a non-canonical or out-of-range string.
pub(crate) fn decode_u32(s: &str) -> Option<u32> {
    let mut value: u64 = 0;
    for b in s.bytes() {
        let digit = ALPHABET.iter().position(|&a| a == b)? as u64;
        value = value.checked_mul(62)?.checked_add(digit)?;
    }
    u32::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_round_trips_at_the_edges() {
        for v in [0, 1, 61, 62, 3843, u32::MAX] {
            assert_eq!(decode_u32(&encode_u32(v, 6)), Some(v));
        }
        assert_eq!(decode_u32("zzzzzz"), None, "62^6 - 1 exceeds u32");
    }

    #[test]
    fn random_strings_use_the_whole_alphabet() {
        let s = random_string(20_000).expect("rng");
        for &c in ALPHABET {
            assert!(s.as_bytes().contains(&c), "missing {}", c as char);
        }
    }
}
