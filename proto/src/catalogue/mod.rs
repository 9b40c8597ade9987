//! The destination catalogue: one definition per vendor, as data (`proto/catalogue/*.yaml`,
//! compiled into both planes), saying how an event becomes the vendor's payload, how a batch
//! becomes a request, how the vendor's answer is read, and which settings a person gives.
//! Both planes check a destination's settings against its definition with the same code
//! ([`Definition::settings_problems`]); `GET /api/v1/schemas/destination-definition` serves
//! the format's JSON Schema and `GET /api/v1/catalogue` the definitions.
//!
//! Adding a vendor is a YAML file here and a payload test against its documented example;
//! nothing in the engine changes unless the vendor needs a transform a template cannot say
//! (the named [`TRANSFORMS`], such as GA4's parameter rules).

mod definition;
mod template;
mod validate;

use std::sync::OnceLock;

pub use definition::{
    Auth, BatchDef, Body, BodyFormat, BodyTest, Category, Definition, DocPage, Engine, EventNames,
    Grant, HttpDef, PathSet, Requirement, ResponseRule, Setting, SettingKind, Signature,
    SignatureScheme, VerdictKind, WarehouseDef,
};
pub use template::{HASHES, TIME_FORMATS, TRANSFORMS, TYPES, is_expression, literal_key};
pub use validate::{placeholders, status_range};

/// The definitions as written, by file name; `all()` parses and checks them once.
const SOURCES: &[(&str, &str)] = &[
    ("webhook", include_str!("../../catalogue/webhook.yaml")),
    ("ga4", include_str!("../../catalogue/ga4.yaml")),
    ("meta", include_str!("../../catalogue/meta.yaml")),
    ("tiktok", include_str!("../../catalogue/tiktok.yaml")),
    ("mixpanel", include_str!("../../catalogue/mixpanel.yaml")),
    ("snapchat", include_str!("../../catalogue/snapchat.yaml")),
    ("pinterest", include_str!("../../catalogue/pinterest.yaml")),
    ("linkedin", include_str!("../../catalogue/linkedin.yaml")),
    ("reddit", include_str!("../../catalogue/reddit.yaml")),
    (
        "google_ads",
        include_str!("../../catalogue/google_ads.yaml"),
    ),
    (
        "microsoft_ads",
        include_str!("../../catalogue/microsoft_ads.yaml"),
    ),
    ("amplitude", include_str!("../../catalogue/amplitude.yaml")),
    ("posthog", include_str!("../../catalogue/posthog.yaml")),
    ("braze", include_str!("../../catalogue/braze.yaml")),
    (
        "segment_forward",
        include_str!("../../catalogue/segment_forward.yaml"),
    ),
    ("postgres", include_str!("../../catalogue/postgres.yaml")),
];

/// Every definition, in catalogue order. A definition that does not parse or check is a
/// build defect, caught by this crate's tests; at run time it is left out and logged once.
pub fn all() -> &'static [Definition] {
    static ALL: OnceLock<Vec<Definition>> = OnceLock::new();
    ALL.get_or_init(|| {
        SOURCES
            .iter()
            .filter_map(|(file, text)| match load(file, text) {
                Ok(definition) => Some(definition),
                Err(problems) => {
                    eprintln!("catalogue definition {file} left out: {problems:?}");
                    None
                }
            })
            .collect()
    })
}

/// The definition with this id.
pub fn get(id: &str) -> Option<&'static Definition> {
    all().iter().find(|d| d.id == id)
}

/// Parses and checks one definition; `Err` lists every problem.
pub fn load(file: &str, text: &str) -> Result<Definition, Vec<String>> {
    let definition: Definition = serde_yaml_ng::from_str(text).map_err(|e| vec![e.to_string()])?;
    let problems = definition.problems();
    if definition.id != file {
        return Err(vec![format!(
            "id {} does not match the file name {file}",
            definition.id
        )]);
    }
    if problems.is_empty() {
        Ok(definition)
    } else {
        Err(problems)
    }
}

/// The JSON Schema of a definition, generated from the types.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Definition)).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_parses_and_checks() {
        for (file, text) in SOURCES {
            if let Err(problems) = load(file, text) {
                panic!("{file}: {problems:#?}");
            }
        }
        assert_eq!(all().len(), SOURCES.len());
        let vendors = all()
            .iter()
            .filter(|d| !matches!(d.id.as_str(), "webhook" | "ga4" | "meta" | "postgres"))
            .count();
        assert!(vendors >= 10, "{vendors} vendors beyond the first three");
    }

    #[test]
    fn every_vendor_cites_its_documentation() {
        for d in all() {
            assert!(
                !d.docs.is_empty() && d.docs.iter().all(|p| !p.title.is_empty()),
                "{} cites the pages it follows",
                d.id
            );
        }
    }

    #[test]
    fn a_broken_definition_is_refused_with_every_problem() {
        let text = r#"
id: broken
version: 1
name: Broken
category: advertising
description: x
docs: [{title: T, url: "https://example.com"}]
settings:
  - {key: token, label: Token, type: secret, required: true}
http:
  url: "{settings.nope}/x"
  auth: {type: header, name: authorization, value: "Bearer {secrets.missing}"}
payload:
  a: {$path: x, $hash: sha1}
  b: {$time: fortnights}
  c: {$fn: no_such}
  d: {$bogus: 1}
responses:
  - {status: ["7xx"], verdict: retry}
"#;
        let problems = load("broken", text).expect_err("refused");
        let all = problems.join("\n");
        for expected in [
            "http.url: {settings.nope} names no setting",
            "http.auth.value: {secrets.missing} names no secret setting",
            "payload.a.$hash: one of",
            "payload.b.$time: one of",
            "payload.c.$fn: one of",
            "payload.d: unknown key $bogus",
            "responses[0].status: 7xx",
        ] {
            assert!(all.contains(expected), "{expected} in\n{all}");
        }
    }
}
