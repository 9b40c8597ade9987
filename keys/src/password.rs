//! Passwords: argon2id with the OWASP-recommended minimum (19 MiB of memory, 2 iterations,
//! 1 lane), stored as PHC strings so the parameters travel with each hash and can be raised
//! later without invalidating old hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::{KeyError, random};

/// Memory cost in KiB (19 MiB).
const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over memory.
const ITERATIONS: u32 = 2;
/// Degree of parallelism.
const LANES: u32 = 1;

fn argon2() -> Result<Argon2<'static>, KeyError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None)
        .map_err(|e| KeyError::Password(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) for `password` with a fresh salt.
/// Deliberately slow (tens of milliseconds): call it off the async executor.
pub fn hash_password(password: &str) -> Result<String, KeyError> {
    let salt_bytes = random::bytes::<16>()?;
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| KeyError::Password(e.to_string()))?;
    let hash = argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| KeyError::Password(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string. A stored hash that cannot be parsed is an
/// error, not a mismatch, so corruption is noticed.
pub fn verify_password(password: &str, stored: &str) -> Result<bool, KeyError> {
    let parsed = PasswordHash::new(stored).map_err(|e| KeyError::Password(e.to_string()))?;
    match argon2()?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(KeyError::Password(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_owasp_parameters() {
        let hash = hash_password("correct horse battery staple").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password("correct horse battery staple", &hash).expect("verify"));
        assert!(!verify_password("correct horse battery stapler", &hash).expect("verify"));
    }

    #[test]
    fn same_password_gets_different_salts() {
        let a = hash_password("pw-pw-pw-pw").expect("hash");
        let b = hash_password("pw-pw-pw-pw").expect("hash");
        assert_ne!(a, b);
    }

    #[test]
    fn corrupt_stored_hash_is_an_error() {
        assert!(verify_password("x", "not a phc string").is_err());
    }
}
