//! Signatures over configuration snapshots: the control plane signs the exact bytes it
//! sends, data planes verify them with keys they pinned, so a snapshot altered between the
//! planes (or forged by whoever can reach a node's gRPC stream) is refused.
//!
//! The keys are derived from the JWT signing keys (a domain-separated hash of each seed), so
//! they rotate with them and need no storage of their own, while no key ever signs both a
//! token and a snapshot. Each snapshot is signed by every key of the set (the newest and the
//! one before it), which is how a rotation reaches a node that trusts only the older key.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::SigningKeyMaterial;

/// What every signed message starts with: a signature over a snapshot is never valid for
/// anything else.
const CONTEXT: &[u8] = b"sluice config snapshot v1\n";

/// The key id of a snapshot key derived from the JWT key `kid`.
pub fn snapshot_kid(jwt_kid: &str) -> String {
    format!("cfg-{jwt_kid}")
}

/// The control plane's snapshot signing keys.
pub struct SnapshotSigner {
    keys: Vec<(String, SigningKey)>,
}

// Never print the keys.
impl std::fmt::Debug for SnapshotSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(kid, _)| kid))
            .finish()
    }
}

impl SnapshotSigner {
    pub fn from_jwt_keys(materials: &[SigningKeyMaterial]) -> Self {
        let keys = materials
            .iter()
            .map(|m| {
                let seed: [u8; 32] = Sha256::new()
                    .chain_update(b"sluice snapshot signing key\n")
                    .chain_update(m.seed)
                    .finalize()
                    .into();
                (snapshot_kid(&m.kid), SigningKey::from_bytes(&seed))
            })
            .collect();
        Self { keys }
    }

    /// Key ids and public keys, newest first: what nodes are told to trust.
    pub fn public_keys(&self) -> Vec<(String, [u8; 32])> {
        self.keys
            .iter()
            .map(|(kid, key)| (kid.clone(), key.verifying_key().to_bytes()))
            .collect()
    }

    /// A signature of `message` by each key: (key id, 64-byte signature).
    pub fn sign(&self, message: &[u8]) -> Vec<(String, Vec<u8>)> {
        let signed = signed_message(message);
        self.keys
            .iter()
            .map(|(kid, key)| (kid.clone(), key.sign(&signed).to_bytes().to_vec()))
            .collect()
    }
}

fn signed_message(message: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(CONTEXT.len() + message.len());
    signed.extend_from_slice(CONTEXT);
    signed.extend_from_slice(message);
    signed
}

/// Whether `signature` is `public_key`'s over `message`.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(public_key) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&public_key) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(&signed_message(message), &signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_and_its_bytes() {
        let old = SigningKeyMaterial::generate().expect("key");
        let new = SigningKeyMaterial::generate().expect("key");
        let signer = SnapshotSigner::from_jwt_keys(&[new.clone(), old.clone()]);
        let keys = signer.public_keys();
        assert_eq!(keys[0].0, snapshot_kid(&new.kid));
        // Derived, not the JWT key itself.
        assert_ne!(
            keys[0].1.to_vec(),
            SigningKey::from_bytes(&new.seed)
                .verifying_key()
                .to_bytes()
                .to_vec()
        );
        let signatures = signer.sign(b"snapshot bytes");
        assert_eq!(signatures.len(), 2);
        for ((kid, public), (signed_by, signature)) in keys.iter().zip(&signatures) {
            assert_eq!(kid, signed_by);
            assert!(verify(public, b"snapshot bytes", signature));
            assert!(!verify(public, b"snapshot bytez", signature));
        }
        assert!(!verify(&keys[1].1, b"snapshot bytes", &signatures[0].1));
        assert!(!verify(
            &keys[0].1[..31],
            b"snapshot bytes",
            &signatures[0].1
        ));
        assert!(!verify(
            &keys[0].1,
            b"snapshot bytes",
            &signatures[0].1[..63]
        ));
        // The same key signs the same way on every start.
        let again = SnapshotSigner::from_jwt_keys(&[new]);
        assert_eq!(again.public_keys()[0], keys[0]);
    }
}
