//! Credentials for Sluice: the format of service, API and ingest keys and how they are
//! hashed and verified; argon2id password hashing; Ed25519-signed JWTs with rotation and JWKS.

mod base62;
pub mod error;
pub mod jwt;
pub mod key;
pub mod password;
pub mod private_file;
pub mod random;
pub mod signed;

pub use error::KeyError;

/// The `iss` of every token the control plane signs; data planes verify it.
pub const ISSUER: &str = "sluice";
/// The audience of the short-lived tokens that let a person query a data plane's archive.
pub const QUERY_AUDIENCE: &str = "query";
pub use jwt::{Jwk, Jwks, JwtKeySet, JwtVerifier, SigningKeyMaterial};
pub use key::{
    KeyHasher, KeyType, PUBLIC_ID_LEN, ParsedKey, generate_key, key_digest, verify_key_digest,
};
pub use password::{hash_password, verify_password};
