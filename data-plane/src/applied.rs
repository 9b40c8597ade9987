//! The configuration a node runs: built from a snapshot only after everything in it checks
//! out, including what only the node can know (that every secret it names resolves here).

use std::path::Path;

use serde::{Deserialize, Serialize};
use sluice_keys::{Jwks, ParsedKey, verify_key_digest};
use sluice_proto::config::v1::Snapshot;
use sluice_proto::spec;

use crate::policy::Policy;

pub use sluice_pipeline::AppliedPipeline;

/// An ingest key a receiver accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestKeyEntry {
    pub public_id: String,
    pub sha256: Vec<u8>,
    pub pipeline_id: String,
    pub source: String,
    /// Unix milliseconds; `None` when the key never expires.
    pub expires_at_unix_ms: Option<i64>,
}

/// A service or api key of the tenant, which the node's own APIs (DLQ, query) accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessKeyEntry {
    pub public_id: String,
    pub sha256: Vec<u8>,
    /// `service` or `api`.
    pub key_type: String,
    /// An api key's role; `None` for service keys.
    pub role: Option<String>,
    /// Unix milliseconds; `None` when the key never expires.
    pub expires_at_unix_ms: Option<i64>,
}

/// The tenant's configuration at one version, as this node runs it. Secrets are not part of
/// it (they are resolved from the node's environment and never written to disk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedConfig {
    pub version: u64,
    pub tenant_id: String,
    pub pipelines: Vec<AppliedPipeline>,
    pub ingest_keys: Vec<IngestKeyEntry>,
    /// Written by nodes since access keys exist; older last-known-good files have none.
    #[serde(default)]
    pub access_keys: Vec<AccessKeyEntry>,
    pub jwks: Jwks,
    /// When the control plane issued it, Unix milliseconds.
    pub issued_at_unix_ms: i64,
    /// When this node received it from the control plane, Unix milliseconds.
    pub received_at_unix_ms: i64,
}

/// Finds secret values by name: the environment first, then a file of that name in the
/// secrets directory (as Docker and Kubernetes mount them).
#[derive(Debug, Clone, Default)]
pub struct SecretResolver {
    pub dir: Option<std::path::PathBuf>,
}

impl SecretResolver {
    pub fn resolve(&self, name: &str) -> Option<String> {
        // Whatever a configuration says: the node's own settings are not a destination's.
        if crate::policy::is_own_setting(name) {
            return None;
        }
        if let Ok(value) = std::env::var(name)
            && !value.is_empty()
        {
            return Some(value);
        }
        let dir = self.dir.as_deref()?;
        read_secret_file(dir, name)
    }
}

fn read_secret_file(dir: &Path, name: &str) -> Option<String> {
    // Names are validated as A-Z0-9_, so they cannot walk out of the directory.
    if !spec::is_secret_name(name) {
        return None;
    }
    let value = std::fs::read_to_string(dir.join(name)).ok()?;
    let value = value.trim_end_matches(['\n', '\r']).to_owned();
    (!value.is_empty()).then_some(value)
}

/// What in `destination` the node's policy refuses: its kind, the secrets it names, the
/// addresses its URL settings point at. (A host name is judged again by what it resolves to
/// when the node connects, and every redirect too.)
fn policy_problems(
    destination: &spec::DestinationSpec,
    policy: &Policy,
) -> Vec<crate::policy::Refusal> {
    let mut refused = Vec::new();
    let Some(kind) = destination.kind() else {
        return refused;
    };
    refused.extend(policy.check_kind(&kind.definition.id).err());
    refused.extend(
        destination
            .secret_refs()
            .iter()
            .filter_map(|name| policy.check_secret(name).err()),
    );
    let urls = kind
        .definition
        .settings
        .iter()
        .filter(|s| s.kind == sluice_proto::catalogue::SettingKind::Url)
        .filter_map(|s| kind.settings.get(&s.key).and_then(|v| v.as_str()))
        .filter_map(|value| reqwest::Url::parse(value).ok());
    refused.extend(urls.filter_map(|url| policy.check_url(&url).err()));
    refused
}

impl AppliedConfig {
    /// Validates a snapshot with the same code the control plane used, plus the node's own
    /// checks; the error lists every problem.
    pub fn from_snapshot(
        snapshot: &Snapshot,
        secrets: &SecretResolver,
        policy: &Policy,
        has_geoip: bool,
        now_ms: i64,
    ) -> Result<Self, String> {
        let mut problems = Vec::new();
        let mut pipelines = Vec::new();
        for pipeline in &snapshot.pipelines {
            match spec::parse_json(&pipeline.spec_json) {
                Ok(parsed) => pipelines.push(AppliedPipeline {
                    id: pipeline.id.clone(),
                    name: pipeline.name.clone(),
                    revision: pipeline.revision,
                    spec: parsed,
                }),
                Err(e) => problems.push(format!("pipeline {:?}: {e}", pipeline.name)),
            }
        }
        let ingest_keys = snapshot
            .ingest_keys
            .iter()
            .map(|k| IngestKeyEntry {
                public_id: k.public_id.clone(),
                sha256: k.sha256.clone(),
                pipeline_id: k.pipeline_id.clone(),
                source: k.source.clone(),
                expires_at_unix_ms: (k.expires_at_unix_ms > 0).then_some(k.expires_at_unix_ms),
            })
            .collect();
        let access_keys = snapshot
            .access_keys
            .iter()
            .map(|k| AccessKeyEntry {
                public_id: k.public_id.clone(),
                sha256: k.sha256.clone(),
                key_type: k.key_type.clone(),
                role: (!k.role.is_empty()).then(|| k.role.clone()),
                expires_at_unix_ms: (k.expires_at_unix_ms > 0).then_some(k.expires_at_unix_ms),
            })
            .collect();
        let jwks = if snapshot.jwks_json.is_empty() {
            Jwks { keys: Vec::new() }
        } else {
            serde_json::from_str(&snapshot.jwks_json).unwrap_or_else(|e| {
                problems.push(format!("jwks: {e}"));
                Jwks { keys: Vec::new() }
            })
        };
        let config = AppliedConfig {
            version: snapshot.version,
            tenant_id: snapshot.tenant_id.clone(),
            pipelines,
            ingest_keys,
            access_keys,
            jwks,
            issued_at_unix_ms: snapshot.issued_at_unix_ms,
            received_at_unix_ms: now_ms,
        };
        problems.extend(config.problems(secrets, policy, has_geoip));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.join("; "))
        }
    }

    /// Every reason this configuration cannot run on this node (`has_geoip`: whether it was
    /// given a GeoIP database), the node's own policy included.
    pub fn problems(
        &self,
        secrets: &SecretResolver,
        policy: &Policy,
        has_geoip: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        if self.tenant_id.is_empty() {
            problems.push("snapshot names no tenant".to_owned());
        }
        for pipeline in &self.pipelines {
            if let Err(errors) = pipeline.spec.validate() {
                problems.extend(
                    errors
                        .into_iter()
                        .map(|e| format!("pipeline {:?}: {e}", pipeline.name)),
                );
            }
            let wants_geoip = pipeline.spec.governance.iter().any(|step| {
                matches!(
                    step,
                    sluice_proto::spec::GovernanceStep::Enrich { geoip: true, .. }
                )
            });
            if wants_geoip && !has_geoip {
                problems.push(format!(
                    "pipeline {:?}: enrich.geoip needs a GeoIP database on this node (--geoip-db)",
                    pipeline.name
                ));
            }
            for destination in &pipeline.spec.destinations {
                let refused = |refusal: crate::policy::Refusal| {
                    format!(
                        "pipeline {:?}, destination {:?}: {refusal}",
                        pipeline.name, destination.name
                    )
                };
                problems.extend(
                    policy_problems(destination, policy)
                        .into_iter()
                        .map(refused),
                );
                for secret in destination.secret_refs() {
                    if policy.check_secret(&secret).is_err() {
                        continue;
                    }
                    if secrets.resolve(&secret).is_none() {
                        problems.push(format!(
                            "pipeline {:?}, destination {:?}: secret {secret} is not set on this node (environment or secrets directory)",
                            pipeline.name, destination.name
                        ));
                    }
                }
            }
        }
        for key in self
            .ingest_keys
            .iter()
            .map(|k| (&k.public_id, &k.sha256))
            .chain(self.access_keys.iter().map(|k| (&k.public_id, &k.sha256)))
        {
            let (public_id, sha256) = key;
            if sha256.len() != 32 {
                problems.push(format!("key {public_id}: digest is not 32 bytes"));
            }
        }
        problems
    }

    /// The pipeline and source an ingest key writes to, if the key is one of this tenant's,
    /// unexpired, and matches its digest.
    pub fn ingest_source(
        &self,
        key: &ParsedKey,
        now_ms: i64,
    ) -> Option<(&AppliedPipeline, &IngestKeyEntry)> {
        let (entry, pipeline) = self.ingest_key_by_id(key.public_id(), now_ms)?;
        verify_key_digest(key, &entry.sha256).then_some((pipeline, entry))
    }
    /// The tenant's service or api key this is, if it is one, unexpired and unrevoked.
    pub fn access_key(&self, key: &ParsedKey, now_ms: i64) -> Option<&AccessKeyEntry> {
        self.access_keys
            .iter()
            .find(|k| k.public_id == key.public_id())
            .filter(|k| k.expires_at_unix_ms.is_none_or(|at| at > now_ms))
            .filter(|k| verify_key_digest(key, &k.sha256))
    }

    /// The ingest key named by its public id (for signed requests), if unexpired, with the
    /// pipeline and source it writes to.
    pub fn ingest_key_by_id(
        &self,
        public_id: &str,
        now_ms: i64,
    ) -> Option<(&IngestKeyEntry, &AppliedPipeline)> {
        let entry = self.ingest_keys.iter().find(|k| k.public_id == public_id)?;
        if entry.expires_at_unix_ms.is_some_and(|at| at <= now_ms) {
            return None;
        }
        let pipeline = self.pipelines.iter().find(|p| p.id == entry.pipeline_id)?;
        Some((entry, pipeline))
    }
}

#[cfg(test)]
mod tests {
    use sluice_keys::{KeyType, generate_key, key_digest};
    use sluice_proto::config::v1::{IngestKey, Pipeline};

    use super::*;

    fn snapshot(spec_json: &str) -> Snapshot {
        Snapshot {
            version: 3,
            nonce: "n".into(),
            tenant_id: "t".into(),
            pipelines: vec![Pipeline {
                id: "p1".into(),
                name: "main".into(),
                revision: 2,
                spec_json: spec_json.into(),
            }],
            ingest_keys: Vec::new(),
            access_keys: Vec::new(),
            jwks_json: String::new(),
            issued_at_unix_ms: 1,
            signing_keys: Vec::new(),
        }
    }

    const SIGNED: &str = r#"{"sources":[{"name":"web"}],"destinations":[{"name":"crm","webhook":{"url":"https://x","signing_secret":"CRM_TEST_SECRET_THAT_IS_UNSET"}}]}"#;

    #[test]
    fn a_valid_snapshot_applies() {
        let applied = AppliedConfig::from_snapshot(
            &snapshot(r#"{"sources":[{"name":"web"}]}"#),
            &SecretResolver::default(),
            &Policy::default(),
            false,
            5,
        )
        .expect("valid");
        assert_eq!((applied.version, applied.received_at_unix_ms), (3, 5));
        assert_eq!(applied.pipelines[0].spec.sources[0].name, "web");
    }

    #[test]
    fn an_unresolvable_secret_is_refused_with_its_name() {
        let err = AppliedConfig::from_snapshot(
            &snapshot(SIGNED),
            &SecretResolver::default(),
            &Policy::default(),
            false,
            5,
        )
        .expect_err("no secret");
        assert!(
            err.contains("secret CRM_TEST_SECRET_THAT_IS_UNSET is not set"),
            "{err}"
        );
        assert!(err.contains("destination \"crm\""), "{err}");
    }

    #[test]
    fn geoip_enrichment_needs_a_database_on_the_node() {
        let spec = r#"{"sources":[{"name":"web"}],"governance":[{"step":"enrich","geoip":true}]}"#;
        let err = AppliedConfig::from_snapshot(
            &snapshot(spec),
            &SecretResolver::default(),
            &Policy::default(),
            false,
            5,
        )
        .expect_err("no database");
        assert!(err.contains("--geoip-db"), "{err}");
        AppliedConfig::from_snapshot(
            &snapshot(spec),
            &SecretResolver::default(),
            &Policy::default(),
            true,
            5,
        )
        .expect("with a database");
    }

    #[test]
    fn secrets_resolve_from_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("CRM_TEST_SECRET_THAT_IS_UNSET"), "s3cret\n")
            .expect("write");
        let resolver = SecretResolver {
            dir: Some(dir.path().to_path_buf()),
        };
        assert_eq!(
            resolver.resolve("CRM_TEST_SECRET_THAT_IS_UNSET").as_deref(),
            Some("s3cret")
        );
        assert!(resolver.resolve("../etc/passwd").is_none());
        AppliedConfig::from_snapshot(&snapshot(SIGNED), &resolver, &Policy::default(), false, 5)
            .expect("secret found");
    }

    #[test]
    fn invalid_specs_and_broken_digests_are_refused() {
        let err = AppliedConfig::from_snapshot(
            &snapshot(r#"{"sources":[{"name":"web","typo":1}]}"#),
            &SecretResolver::default(),
            &Policy::default(),
            false,
            5,
        )
        .expect_err("typo");
        assert!(err.contains("unknown field `typo`"), "{err}");
        let mut bad = snapshot(r#"{"sources":[{"name":"web"}]}"#);
        bad.ingest_keys.push(IngestKey {
            public_id: "x".into(),
            sha256: vec![1, 2],
            pipeline_id: "p1".into(),
            source: "web".into(),
            expires_at_unix_ms: 0,
        });
        assert!(
            AppliedConfig::from_snapshot(
                &bad,
                &SecretResolver::default(),
                &Policy::default(),
                false,
                5
            )
            .is_err()
        );
    }

    #[test]
    fn ingest_keys_verify_against_their_digest_and_expiry() {
        let key = generate_key(KeyType::Ingest).expect("key");
        let other = generate_key(KeyType::Ingest).expect("key");
        let mut snap = snapshot(r#"{"sources":[{"name":"web"}]}"#);
        snap.ingest_keys.push(IngestKey {
            public_id: key.public_id().into(),
            sha256: key_digest(&key).to_vec(),
            pipeline_id: "p1".into(),
            source: "web".into(),
            expires_at_unix_ms: 100,
        });
        let applied = AppliedConfig::from_snapshot(
            &snap,
            &SecretResolver::default(),
            &Policy::default(),
            false,
            5,
        )
        .expect("valid");
        let (pipeline, entry) = applied.ingest_source(&key, 50).expect("known key");
        let source = entry.source.as_str();
        assert_eq!((pipeline.id.as_str(), source), ("p1", "web"));
        assert!(applied.ingest_source(&key, 100).is_none(), "expired");
        assert!(applied.ingest_source(&other, 50).is_none(), "unknown");
    }
}
