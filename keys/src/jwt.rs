//! Ed25519-signed JWTs (`alg: EdDSA`) with a `kid` in every header.
//!
//! Rotation: a [`JwtKeySet`] signs with its newest key and verifies with every key it holds,
//! so during a rollover tokens signed by the previous key stay valid until they expire. The
//! public halves are exported as a JWKS, which is how data planes learn them.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{KeyError, random};

/// Allowed clock difference between signer and verifier, in seconds.
const LEEWAY_SECS: u64 = 30;

/// The private half of one signing key, as it is persisted.
#[derive(Clone)]
pub struct SigningKeyMaterial {
    /// Key id, written into every token's header.
    pub kid: String,
    /// The 32-byte Ed25519 seed.
    pub seed: [u8; 32],
}

impl SigningKeyMaterial {
    /// A new key from the OS RNG with a random `kid`.
    pub fn generate() -> Result<Self, KeyError> {
        let kid = random::token::<12>()?;
        Ok(Self {
            kid,
            seed: random::bytes::<32>()?,
        })
    }

    /// The public key, base64url as in a JWK's `x`.
    pub fn public_x(&self) -> String {
        URL_SAFE_NO_PAD.encode(
            SigningKey::from_bytes(&self.seed)
                .verifying_key()
                .as_bytes(),
        )
    }

    fn encoding_key(&self) -> Result<EncodingKey, KeyError> {
        let der = SigningKey::from_bytes(&self.seed)
            .to_pkcs8_der()
            .map_err(|e| KeyError::Jwt(e.to_string()))?;
        Ok(EncodingKey::from_ed_der(der.as_bytes()))
    }

    fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: "EdDSA".into(),
            key_use: "sig".into(),
            kid: self.kid.clone(),
            x: self.public_x(),
        }
    }
}

// Never print the seed.
impl std::fmt::Debug for SigningKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyMaterial")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// One public key in JWK form (RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub key_use: String,
    pub kid: String,
    pub x: String,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Verifies tokens against a set of public keys; all a data plane needs.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: HashMap<String, DecodingKey>,
    issuer: String,
}

impl JwtVerifier {
    /// A verifier for tokens from `issuer` signed by any key in `jwks`.
    pub fn from_jwks(jwks: &Jwks, issuer: &str) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                return Err(KeyError::Jwt(format!(
                    "unsupported key {}/{}",
                    jwk.kty, jwk.crv
                )));
            }
            let key = DecodingKey::from_ed_components(&jwk.x)
                .map_err(|e| KeyError::Jwt(e.to_string()))?;
            keys.insert(jwk.kid.clone(), key);
        }
        Ok(Self {
            keys,
            issuer: issuer.to_owned(),
        })
    }

    /// The claims of `token` if its signature, `kid`, issuer, audience and lifetime are valid.
    pub fn verify<C: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<C, KeyError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| KeyError::Jwt(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(KeyError::Jwt("unexpected algorithm".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| KeyError::Jwt("token has no kid".into()))?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| KeyError::Jwt("unknown kid".into()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
        jsonwebtoken::decode::<C>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| KeyError::Jwt(e.to_string()))
    }
}

/// Signs with the newest key, verifies with all of them.
#[derive(Clone)]
pub struct JwtKeySet {
    current_kid: String,
    encoding: EncodingKey,
    materials: Vec<SigningKeyMaterial>,
    verifier: JwtVerifier,
    issuer: String,
}

impl JwtKeySet {
    /// A key set whose first entry signs; every entry verifies. `keys` must not be empty.
    pub fn new(keys: Vec<SigningKeyMaterial>, issuer: &str) -> Result<Self, KeyError> {
        let current = keys
            .first()
            .ok_or_else(|| KeyError::Jwt("no signing key".into()))?;
        let current_kid = current.kid.clone();
        let encoding = current.encoding_key()?;
        let jwks = Jwks {
            keys: keys.iter().map(SigningKeyMaterial::jwk).collect(),
        };
        let verifier = JwtVerifier::from_jwks(&jwks, issuer)?;
        Ok(Self {
            current_kid,
            encoding,
            materials: keys,
            verifier,
            issuer: issuer.to_owned(),
        })
    }

    /// A new set that signs with `next` and still verifies tokens of the current key: the two
    /// are valid together during the rollover. Older keys are dropped.
    pub fn rotate(&self, next: SigningKeyMaterial) -> Result<Self, KeyError> {
        let mut keys = vec![next];
        keys.extend(self.materials.first().cloned());
        Self::new(keys, &self.issuer)
    }

    /// The `kid` new tokens are signed with.
    /// The keys, newest first.
    pub fn materials(&self) -> &[SigningKeyMaterial] {
        &self.materials
    }

    pub fn current_kid(&self) -> &str {
        &self.current_kid
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A compact JWT of `claims`, signed with the current key.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.current_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyError::Jwt(e.to_string()))
    }

    pub fn verify<C: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<C, KeyError> {
        self.verifier.verify(token, audience)
    }

    /// The public keys of the set.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.materials.iter().map(SigningKeyMaterial::jwk).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Claims {
        sub: String,
        aud: String,
        iss: String,
        iat: u64,
        exp: u64,
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn claims(aud: &str, exp_in: i64) -> Claims {
        Claims {
            sub: "user-1".into(),
            aud: aud.into(),
            iss: "sluice".into(),
            iat: now(),
            exp: now().saturating_add_signed(exp_in),
        }
    }

    fn set() -> JwtKeySet {
        JwtKeySet::new(vec![SigningKeyMaterial::generate().expect("key")], "sluice").expect("set")
    }

    #[test]
    fn sign_and_verify_with_kid() {
        let keys = set();
        // One set of claims for both sides: two `now()` calls may straddle a second.
        let sent = claims("api", 60);
        let token = keys.sign(&sent).expect("sign");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some(keys.current_kid()));
        assert_eq!(header.alg, Algorithm::EdDSA);
        let back: Claims = keys.verify(&token, "api").expect("verify");
        assert_eq!(back, sent);
    }

    #[test]
    fn wrong_audience_expired_or_tampered_tokens_fail() {
        let keys = set();
        let token = keys.sign(&claims("api", 60)).expect("sign");
        assert!(keys.verify::<Claims>(&token, "query").is_err());
        let expired = keys.sign(&claims("api", -3600)).expect("sign");
        assert!(keys.verify::<Claims>(&expired, "api").is_err());
        let mut tampered = token.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(keys.verify::<Claims>(&tampered, "api").is_err());
    }

    #[test]
    fn a_token_from_another_key_set_fails() {
        let token = set().sign(&claims("api", 60)).expect("sign");
        assert!(set().verify::<Claims>(&token, "api").is_err());
    }

    #[test]
    fn rotation_keeps_the_previous_key_valid_for_one_rollover() {
        let first = set();
        let old_token = first.sign(&claims("api", 60)).expect("sign");
        let second = first
            .rotate(SigningKeyMaterial::generate().expect("key"))
            .expect("rotate");
        assert_ne!(second.current_kid(), first.current_kid());
        assert_eq!(second.jwks().keys.len(), 2);
        assert!(
            second.verify::<Claims>(&old_token, "api").is_ok(),
            "previous key still valid"
        );
        let new_token = second.sign(&claims("api", 60)).expect("sign");
        assert!(second.verify::<Claims>(&new_token, "api").is_ok());
        let third = second
            .rotate(SigningKeyMaterial::generate().expect("key"))
            .expect("rotate");
        assert!(
            third.verify::<Claims>(&old_token, "api").is_err(),
            "two rotations retire a key"
        );
        assert!(third.verify::<Claims>(&new_token, "api").is_ok());
    }

    #[test]
    fn jwks_round_trips_into_a_verifier() {
        let keys = set();
        let token = keys.sign(&claims("query", 60)).expect("sign");
        let json = serde_json::to_string(&keys.jwks()).expect("json");
        assert!(json.contains(r#""kty":"OKP""#) && json.contains(r#""use":"sig""#));
        let jwks: Jwks = serde_json::from_str(&json).expect("parse");
        let verifier = JwtVerifier::from_jwks(&jwks, "sluice").expect("verifier");
        assert!(verifier.verify::<Claims>(&token, "query").is_ok());
        let other_issuer = JwtVerifier::from_jwks(&jwks, "someone-else").expect("verifier");
        assert!(other_issuer.verify::<Claims>(&token, "query").is_err());
    }
}
