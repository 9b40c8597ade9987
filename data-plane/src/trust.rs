//! The control plane's snapshot keys this node trusts, and the check of every snapshot
//! against them: a snapshot altered between the planes, or forged by whoever reached the
//! node's stream, is refused.
//!
//! Trust starts from the keys the operator gave (SLUICE_CONFIG_KEYS) or, without them, from
//! the first snapshot's own keys (trust on first use); they are pinned in the state directory.
//! A later snapshot must carry a valid signature by a pinned key, and the keys it announces
//! are pinned next (a rotation, signed by a key already trusted).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sluice_proto::config::v1::{SignedSnapshot, Snapshot};

use crate::identity::write_private;

const FILE: &str = "config-keys.json";

/// A trusted public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    pub key_id: String,
    /// Ed25519 public key, base64url without padding.
    pub public_key: String,
}

impl TrustedKey {
    fn bytes(&self) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(&self.public_key).ok()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Pinned {
    keys: Vec<TrustedKey>,
}

/// Parses SLUICE_CONFIG_KEYS: comma-separated `key_id=base64url-public-key`.
pub fn parse_keys(list: &str) -> Result<Vec<TrustedKey>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (key_id, public_key) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not key_id=public-key"))?;
            let key = TrustedKey {
                key_id: key_id.trim().to_owned(),
                public_key: public_key.trim().to_owned(),
            };
            match key.bytes() {
                Some(bytes) if bytes.len() == 32 && !key.key_id.is_empty() => Ok(key),
                _ => Err(format!(
                    "{entry:?}: the public key is not 32 bytes of base64url"
                )),
            }
        })
        .collect()
}

/// A snapshot whose signature checked out, and the keys to pin once it is applied.
#[derive(Debug)]
pub struct Verified {
    pub snapshot: Snapshot,
    pub announced: Vec<TrustedKey>,
}

/// Why a snapshot is refused before its contents are looked at.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error("the snapshot cannot be decoded: {0}")]
    Garbled(String),
    #[error("{0}")]
    Signature(String),
}

/// The keys this node trusts.
#[derive(Debug)]
pub struct Trust {
    path: PathBuf,
    /// The operator's keys, used until a file is pinned.
    given: Vec<TrustedKey>,
    pinned: Mutex<Option<Vec<TrustedKey>>>,
}

impl Trust {
    pub fn open(state_dir: &Path, given: Vec<TrustedKey>) -> Self {
        let path = state_dir.join(FILE);
        let pinned = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Pinned>(&bytes) {
                Ok(pinned) => Some(pinned.keys),
                Err(e) => {
                    // Starting over from trust on first use would let anyone in.
                    tracing::error!(path = %path.display(), error = %e, "the pinned configuration keys are unreadable; every snapshot is refused until the file is fixed or removed");
                    Some(Vec::new())
                }
            },
            Err(_) => None,
        };
        Self {
            path,
            given,
            pinned: Mutex::new(pinned),
        }
    }

    /// The keys a snapshot must be signed by; `None` before the first one (trust on first use).
    fn trusted(&self) -> Option<Vec<TrustedKey>> {
        let pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        pinned
            .clone()
            .or_else(|| (!self.given.is_empty()).then(|| self.given.clone()))
    }

    /// Checks `signed`'s signatures; the snapshot inside, with its send's nonce.
    pub fn verify(&self, signed: &SignedSnapshot) -> Result<Verified, Untrusted> {
        let mut snapshot = signed
            .decode_unverified()
            .map_err(|e| Untrusted::Garbled(e.to_string()))?;
        snapshot.nonce.clone_from(&signed.nonce);
        let announced: Vec<TrustedKey> = snapshot
            .signing_keys
            .iter()
            .map(|k| TrustedKey {
                key_id: k.key_id.clone(),
                public_key: URL_SAFE_NO_PAD.encode(&k.public_key),
            })
            .collect();
        let (trusted, first_use) = match self.trusted() {
            Some(keys) => (keys, false),
            None => (announced.clone(), true),
        };
        let signed_by: Vec<&str> = signed
            .signatures
            .iter()
            .filter(|s| {
                trusted.iter().any(|k| {
                    k.key_id == s.key_id
                        && k.bytes().is_some_and(|public| {
                            sluice_keys::signed::verify(&public, &signed.snapshot, &s.signature)
                        })
                })
            })
            .map(|s| s.key_id.as_str())
            .collect();
        if signed_by.is_empty() {
            let trusted_ids: Vec<&str> = trusted.iter().map(|k| k.key_id.as_str()).collect();
            return Err(Untrusted::Signature(if first_use {
                "the first snapshot is not signed by a key it names; refusing to trust it".into()
            } else {
                format!(
                    "the snapshot's signature does not verify with the control plane's keys this node trusts ({}): it was altered after the control plane signed it, or not signed by it",
                    trusted_ids.join(", ")
                )
            }));
        }
        if !announced
            .iter()
            .any(|k| signed_by.contains(&k.key_id.as_str()))
        {
            return Err(Untrusted::Signature(
                "the snapshot announces keys none of which signed it".into(),
            ));
        }
        Ok(Verified {
            snapshot,
            announced,
        })
    }

    /// Pins `keys` (the ones an applied snapshot announced).
    pub fn pin(&self, keys: Vec<TrustedKey>) -> std::io::Result<()> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        if pinned.as_ref() == Some(&keys) {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&Pinned { keys: keys.clone() })
            .map_err(std::io::Error::other)?;
        write_private(&self.path, &json)?;
        if pinned.is_none() {
            let ids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
            tracing::info!(keys = %ids.join(","), "pinned the control plane's configuration keys");
        }
        *pinned = Some(keys);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_keys::SigningKeyMaterial;
    use sluice_keys::signed::SnapshotSigner;
    use sluice_proto::config::v1::{SigningKey, SnapshotSignature};

    use super::*;

    fn signed_by(signer: &SnapshotSigner, version: u64) -> SignedSnapshot {
        let snapshot = Snapshot {
            version,
            tenant_id: "t".into(),
            signing_keys: signer
                .public_keys()
                .into_iter()
                .map(|(key_id, public)| SigningKey {
                    key_id,
                    public_key: public.to_vec(),
                })
                .collect(),
            ..Snapshot::default()
        };
        let body = snapshot.encode_to_bytes();
        SignedSnapshot {
            signatures: signer
                .sign(&body)
                .into_iter()
                .map(|(key_id, signature)| SnapshotSignature { key_id, signature })
                .collect(),
            snapshot: body,
            nonce: "n".into(),
        }
    }

    #[test]
    fn trust_is_pinned_on_first_use_and_follows_a_signed_rotation() {
        let dir = tempfile::tempdir().expect("dir");
        let k1 = SigningKeyMaterial::generate().expect("key");
        let k2 = SigningKeyMaterial::generate().expect("key");
        let k3 = SigningKeyMaterial::generate().expect("key");
        let trust = Trust::open(dir.path(), Vec::new());
        let first = trust
            .verify(&signed_by(
                &SnapshotSigner::from_jwt_keys(std::slice::from_ref(&k1)),
                1,
            ))
            .expect("first use");
        assert_eq!(first.snapshot.nonce, "n");
        trust.pin(first.announced).expect("pin");

        // Another control plane's keys are refused from now on, across restarts.
        let other = SnapshotSigner::from_jwt_keys(std::slice::from_ref(&k3));
        let reopened = Trust::open(dir.path(), Vec::new());
        let refused = reopened
            .verify(&signed_by(&other, 2))
            .expect_err("not pinned");
        assert!(refused.to_string().contains("does not verify"), "{refused}");

        // A rotation: signed by the new key and the pinned one, announcing both.
        let rotation = reopened
            .verify(&signed_by(
                &SnapshotSigner::from_jwt_keys(&[k2.clone(), k1]),
                3,
            ))
            .expect("rotation");
        reopened.pin(rotation.announced).expect("pin");
        // The old key retired: the new one alone is enough.
        reopened
            .verify(&signed_by(&SnapshotSigner::from_jwt_keys(&[k3, k2]), 4))
            .expect("signed by the pinned new key");
    }

    #[test]
    fn an_altered_snapshot_or_a_bare_signature_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let signer = SnapshotSigner::from_jwt_keys(&[SigningKeyMaterial::generate().expect("key")]);
        let trust = Trust::open(dir.path(), Vec::new());
        let good = signed_by(&signer, 1);
        trust
            .pin(trust.verify(&good).expect("good").announced)
            .expect("pin");

        let mut altered = good.clone();
        let last = altered.snapshot.len() - 1;
        altered.snapshot[last] ^= 1;
        assert!(trust.verify(&altered).is_err());
        let mut unsigned = good.clone();
        unsigned.signatures.clear();
        assert!(trust.verify(&unsigned).is_err());
        let mut garbage = good;
        garbage.snapshot = vec![0xff; 7];
        assert!(matches!(trust.verify(&garbage), Err(Untrusted::Garbled(_))));
        // On first use, a snapshot must be signed by the keys it names.
        let fresh = Trust::open(tempfile::tempdir().expect("dir").path(), Vec::new());
        let mut forged = signed_by(&signer, 1);
        forged.signatures[0].signature[0] ^= 1;
        assert!(fresh.verify(&forged).is_err());
    }

    #[test]
    fn keys_given_by_the_operator_are_the_trust_from_the_start() {
        let mine = SnapshotSigner::from_jwt_keys(&[SigningKeyMaterial::generate().expect("key")]);
        let (kid, public) = mine.public_keys().remove(0);
        let given = parse_keys(&format!("{kid}={}", URL_SAFE_NO_PAD.encode(public))).expect("keys");
        let trust = Trust::open(tempfile::tempdir().expect("dir").path(), given);
        trust
            .verify(&signed_by(&mine, 1))
            .expect("the operator's key");
        let stranger =
            SnapshotSigner::from_jwt_keys(&[SigningKeyMaterial::generate().expect("key")]);
        assert!(trust.verify(&signed_by(&stranger, 1)).is_err());
        assert!(parse_keys("k=short").is_err());
        assert!(parse_keys("no-equals").is_err());
    }
}
