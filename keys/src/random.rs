//! Randomness from the operating system, and nothing else.

use crate::KeyError;

/// Fills `buf` from the OS random number generator.
pub fn fill(buf: &mut [u8]) -> Result<(), KeyError> {
    getrandom::fill(buf).map_err(|e| KeyError::Rng(e.to_string()))
}

/// `N` random bytes from the OS.
pub fn bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut buf = [0u8; N];
    fill(&mut buf)?;
    Ok(buf)
}

/// A random URL-safe token with `N` bytes (8·N bits) of entropy, for refresh, setup and
/// invitation tokens.
pub fn token<const N: usize>() -> Result<String, KeyError> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes::<N>()?))
}
