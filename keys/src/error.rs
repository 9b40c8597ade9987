use thiserror::Error;

/// Everything that can go wrong with a credential.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The text is not a Sluice key: wrong prefix, length, alphabet or checksum.
    #[error("malformed key: {0}")]
    Malformed(&'static str),
    /// The key is well-formed but does not match the stored hash.
    #[error("key does not match")]
    Mismatch,
    /// The pepper for keyed hashes is too short to be a secret.
    #[error("key pepper must be at least {min} bytes, got {got}")]
    WeakPepper { min: usize, got: usize },
    /// The operating system's random number generator failed.
    #[error("os random number generator failed: {0}")]
    Rng(String),
    /// A password could not be hashed or a stored hash could not be parsed.
    #[error("password hash: {0}")]
    Password(String),
    /// A JWT could not be signed or did not verify.
    #[error("jwt: {0}")]
    Jwt(String),
}
