//! The pipeline spec: the shipped example stays valid; every error names where it is.

use sluice_proto::spec::{self, GovernanceStep, PipelineSpec};

const EXAMPLE: &str = include_str!("../../examples/pipeline.yaml");

#[test]
fn the_example_pipeline_is_complete_and_valid() {
    let spec = spec::parse_yaml(EXAMPLE).expect("examples/pipeline.yaml parses");
    spec.validate().expect("examples/pipeline.yaml is valid");
    assert_eq!(spec.sources.len(), 2);
    assert!(matches!(
        spec.governance[0],
        GovernanceStep::ValidateSchema { .. }
    ));
    assert_eq!(spec.governance.len(), 7, "every kind of governance step");
    let secrets: Vec<_> = spec
        .destinations
        .iter()
        .flat_map(|d| d.secret_refs())
        .collect();
    assert_eq!(
        secrets,
        vec!["CRM_WEBHOOK_SECRET", "GA4_API_SECRET", "META_CAPI_TOKEN"],
        "one destination of each kind"
    );
    assert!(spec.archive.enabled);
    // The same spec as JSON reads back identically.
    let json = serde_json::to_string(&spec).expect("json");
    assert_eq!(spec::parse_json(&json).expect("json parses"), spec);
}

#[test]
fn unknown_fields_are_named_by_their_path_and_line() {
    let yaml = EXAMPLE.replace("      batch_size: 50", "      batch_sise: 50");
    let err = spec::parse_yaml(&yaml).expect_err("typo");
    assert_eq!(err.path, "destinations[0].webhook.batch_sise");
    assert!(err.message.contains("unknown field `batch_sise`"), "{err}");
    let line = err.line.expect("a line");
    assert!(
        yaml.lines()
            .nth(line - 1)
            .is_some_and(|l| l.contains("batch_sise")),
        "line {line}"
    );
    assert!(
        err.to_string()
            .starts_with("destinations[0].webhook.batch_sise: unknown field `batch_sise`"),
        "{err}"
    );

    let json = r#"{"sources":[{"name":"web"}],"destinations":[{"name":"a","webhook":{"url":"https://x"}},{"name":"b","mapping":{"value":"x"},"webhook":{"url":"https://y","vaule":1}}]}"#;
    let err = spec::parse_json(json).expect_err("typo");
    assert_eq!(err.path, "destinations[1].webhook.vaule");
    assert!(err.message.contains("unknown field `vaule`"), "{err}");

    let value: serde_json::Value = serde_json::from_str(json).expect("json");
    assert_eq!(
        spec::parse_value(value).expect_err("typo").path,
        "destinations[1].webhook.vaule"
    );
}

#[test]
fn wrong_types_and_syntax_are_located() {
    let err = spec::parse_json(
        r#"{"sources":[{"name":"web","rate_limit":{"events_per_second":"fast"}}]}"#,
    )
    .expect_err("type");
    assert_eq!(err.path, "sources[0].rate_limit.events_per_second");
    let err = spec::parse_yaml("sources:\n  - name: [unclosed\n").expect_err("syntax");
    assert!(err.line.is_some(), "{err:?}");
    assert!(spec::parse_json(r#"{"sources":[]} trailing"#).is_err());
}

fn invalid(json: &str) -> Vec<String> {
    let spec: PipelineSpec = spec::parse_json(json).expect("parses");
    spec.validate()
        .expect_err("invalid")
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn validation_finds_every_problem_with_its_path() {
    let errors = invalid(
        r#"{
        "sources": [{"name": "Web"}, {"name": "api", "rate_limit": {"events_per_second": 0}}, {"name": "api"}],
        "governance": [{"step": "drop_fields", "fields": ["a..b"]}, {"step": "rename_fields", "fields": {"x": "x"}}],
        "destinations": [
            {"name": "hook", "webhook": {"url": "ftp://x", "signing_secret": "lower", "batch_size": 0, "headers": {"Bad Header": "v"}}},
            {"name": "hook"},
            {"name": "ok", "filter": "  ", "webhook": {"url": "https://user@host"}}
        ],
        "archive": {"dataset": "Events!", "retain_days": 0}
    }"#,
    );
    let expected = [
        "sources[0].name: 1 to 64",
        "sources[1].rate_limit.events_per_second: must be between 1 and 1000000",
        "sources[2].name: duplicate source name",
        "governance[0].fields[0]: a dot-separated field path",
        "governance[1].fields.x: renames a field to itself",
        "destinations[0].webhook.url: must start with https:// or http://",
        "destinations[0].webhook.headers.Bad Header: not a valid header name",
        "destinations[0].webhook.signing_secret: a secret name",
        "destinations[0].webhook.batch_size: must be between 1 and 1000",
        "destinations[1].name: duplicate destination name",
        "destinations[1]: set exactly one destination kind",
        "destinations[2].filter: must be a non-empty CEL expression",
        "destinations[2].webhook.url: must name a host",
        "archive.dataset: 1 to 64",
        "archive.retain_days: between 1 and 36500 days",
    ];
    for needle in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(needle)),
            "missing {needle:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    assert_eq!(
        invalid(r#"{"sources": []}"#),
        vec!["sources: at least one source is required"]
    );
}

#[test]
fn governance_and_destination_settings_are_checked() {
    let errors = invalid(
        r#"{
        "sources": [{"name": "web"}],
        "governance": [
            {"step": "validate_schema", "events": {"Order Completed": {"type": "objekt"}}},
            {"step": "coerce_types", "fields": {}},
            {"step": "normalize", "fields": {"traits.email": []}},
            {"step": "pii", "rules": [{"fields": ["traits.email"], "detect": ["email"], "action": "hash"}, {"action": "drop"}]},
            {"step": "enrich"},
            {"step": "enrich", "session": {"timeout_minutes": 0}}
        ],
        "destinations": [
            {"name": "a", "consent": ["bad category"], "filter": "event ==", "computed": {"x": "1 +"},
             "retry": {"max_attempts": 0}, "concurrency": 65, "timeout_ms": 5,
             "webhook": {"url": "https://x"}, "ga4": {"measurement_id": "G-ABCD", "api_secret": "S"}},
            {"name": "b", "ga4": {"measurement_id": "UA-1", "api_secret": "lower"}},
            {"name": "c", "meta": {"pixel_id": "12a", "access_token": "T", "action_source": "tv"}}
        ]
    }"#,
    );
    let expected = [
        "governance[0].events.Order Completed: not a valid JSON Schema",
        "governance[1].fields: at least one field to convert",
        "governance[2].fields.traits.email: at least one of trim",
        "governance[3].rules[0]: give either fields",
        "governance[3].rules[1]: give either fields",
        "governance[4]: enable at least one",
        "governance[5].session.timeout_minutes: must be between 1 and 1440",
        "destinations[0].consent[0]: a consent category",
        "destinations[0].filter: not a valid CEL expression",
        "destinations[0].computed.x: not a valid CEL expression",
        "destinations[0].retry.max_attempts: must be between 1 and 20",
        "destinations[0].concurrency: must be between 1 and 64",
        "destinations[0].timeout_ms: must be between 100 and 120000",
        "destinations[0]: set exactly one destination kind",
        "destinations[1].ga4.measurement_id: a GA4 measurement id",
        "destinations[1].ga4.api_secret: a secret name",
        "destinations[2].meta.pixel_id: a pixel",
        "destinations[2].meta.action_source: one of website",
    ];
    for needle in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(needle)),
            "missing {needle:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn the_json_schema_describes_the_spec() {
    let schema = spec::json_schema();
    let text = schema.to_string();
    for needle in [
        "sources",
        "governance",
        "rename_fields",
        "drop_fields",
        "validate_schema",
        "coerce_types",
        "normalize",
        "pii",
        "enrich",
        "webhook",
        "ga4",
        "meta",
        "signing_secret",
        "archive",
    ] {
        assert!(text.contains(needle), "schema lacks {needle}");
    }
    assert_eq!(
        schema["additionalProperties"],
        serde_json::json!(false),
        "unknown fields are refused"
    );
}

#[test]
fn allowed_origins_are_checked_and_matched() {
    let spec = spec::parse_json(
        r#"{"sources":[{"name":"web","allowed_origins":["https://www.example.com","https://*.shop.example","http://localhost:3000"]}]}"#,
    )
    .expect("parses");
    spec.validate().expect("valid");
    let web = &spec.sources[0];
    assert!(web.allows_origin("https://www.example.com"));
    assert!(web.allows_origin("https://eu.shop.example"));
    assert!(web.allows_origin("https://a.b.shop.example"));
    assert!(web.allows_origin("http://localhost:3000"));
    for refused in [
        "https://shop.example",
        "https://evilshop.example",
        "http://eu.shop.example",
        "https://www.example.com.evil.net",
        "http://localhost:3001",
        "null",
    ] {
        assert!(!web.allows_origin(refused), "{refused}");
    }
    let bad = spec::parse_json(
        r#"{"sources":[{"name":"web","allowed_origins":["www.example.com","https://x.com/path","https://x.com:0","*"]}]}"#,
    )
    .expect("parses")
    .validate()
    .expect_err("invalid origins");
    let paths: Vec<_> = bad.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sources[0].allowed_origins[0]",
            "sources[0].allowed_origins[1]",
            "sources[0].allowed_origins[2]"
        ]
    );
}
