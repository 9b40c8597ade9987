use std::collections::HashSet;

use super::{DestinationSpec, GovernanceStep, PiiRule, PipelineSpec, SpecError};

/// Longest field path, in bytes.
const MAX_PATH: usize = 256;
/// Longest filter expression, in bytes.
const MAX_FILTER: usize = 4096;
/// Longest URL, in bytes.
const MAX_URL: usize = 2048;
/// Largest JSON Schema of one event, serialized, in bytes.
const MAX_SCHEMA: usize = 64 * 1024;
impl PipelineSpec {
    /// Every problem the spec shows by itself, each with its path. Empty means valid.
    /// (A data plane additionally checks what only it can know, such as secrets.)
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        let mut err = |path: String, message: &str| errors.push(SpecError::new(path, message));

        if self.sources.is_empty() {
            err("sources".into(), "at least one source is required");
        }
        let mut names = HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            if let Some(problem) = name_problem(&source.name) {
                err(format!("sources[{i}].name"), problem);
            } else if !names.insert(source.name.as_str()) {
                err(format!("sources[{i}].name"), "duplicate source name");
            }
            for (j, origin) in source.allowed_origins.iter().enumerate() {
                if let Some(problem) = origin_problem(origin) {
                    err(format!("sources[{i}].allowed_origins[{j}]"), problem);
                }
            }
            if let Some(limit) = &source.rate_limit {
                if !(1..=1_000_000).contains(&limit.events_per_second) {
                    err(
                        format!("sources[{i}].rate_limit.events_per_second"),
                        "must be between 1 and 1000000",
                    );
                }
                if limit.burst.is_some_and(|b| !(1..=10_000_000).contains(&b)) {
                    err(
                        format!("sources[{i}].rate_limit.burst"),
                        "must be between 1 and 10000000",
                    );
                }
            }
        }

        let mut seen_identity = false;
        for (i, step) in self.governance.iter().enumerate() {
            let at = |field: &str| format!("governance[{i}].{field}");
            match step {
                GovernanceStep::ValidateSchema { events, .. } => {
                    if events.is_empty() {
                        err(at("events"), "at least one event schema");
                    }
                    for (name, schema) in events {
                        let path = format!("{}.{name}", at("events"));
                        if name.is_empty() || name.len() > 200 {
                            err(path, "event names are 1 to 200 bytes");
                        } else if let Some(problem) = schema_problem(schema) {
                            err(path, &problem);
                        }
                    }
                }
                GovernanceStep::RenameFields { fields } => {
                    if fields.is_empty() {
                        err(at("fields"), "at least one field to rename");
                    }
                    for (from, to) in fields {
                        if let Some(problem) = path_problem(from).or_else(|| path_problem(to)) {
                            err(format!("{}.{from}", at("fields")), problem);
                        } else if from == to {
                            err(
                                format!("{}.{from}", at("fields")),
                                "renames a field to itself",
                            );
                        }
                    }
                }
                GovernanceStep::CoerceTypes { fields } => {
                    if fields.is_empty() {
                        err(at("fields"), "at least one field to convert");
                    }
                    for path in fields.keys() {
                        if let Some(problem) = path_problem(path) {
                            err(format!("{}.{path}", at("fields")), problem);
                        }
                    }
                }
                GovernanceStep::Normalize { fields } => {
                    if fields.is_empty() {
                        err(at("fields"), "at least one field to normalise");
                    }
                    for (path, operations) in fields {
                        if let Some(problem) = path_problem(path) {
                            err(format!("{}.{path}", at("fields")), problem);
                        } else if operations.is_empty() {
                            err(
                                format!("{}.{path}", at("fields")),
                                "at least one of trim, lowercase, uppercase",
                            );
                        }
                    }
                }
                GovernanceStep::Pii { rules } => {
                    if rules.is_empty() {
                        err(at("rules"), "at least one rule");
                    }
                    for (j, rule) in rules.iter().enumerate() {
                        pii_rule_problems(rule, &format!("{}[{j}]", at("rules")), &mut err);
                    }
                }
                GovernanceStep::Enrich {
                    user_agent,
                    truncate_ip,
                    geoip,
                    session,
                } => {
                    if !(*user_agent || *truncate_ip || *geoip || session.is_some()) {
                        err(
                            format!("governance[{i}]"),
                            "enable at least one of user_agent, truncate_ip, geoip, session",
                        );
                    }
                    if session
                        .as_ref()
                        .is_some_and(|s| !(1..=1440).contains(&s.timeout_minutes))
                    {
                        err(at("session.timeout_minutes"), "must be between 1 and 1440");
                    }
                }
                GovernanceStep::Identity {
                    consent,
                    cross_domain,
                    ..
                } => {
                    if seen_identity {
                        err(format!("governance[{i}]"), "one identity step per pipeline");
                    }
                    seen_identity = true;
                    for (field, name) in [
                        ("consent.advertising", &consent.advertising),
                        ("consent.analytics", &consent.analytics),
                    ] {
                        if !is_consent_category(name) {
                            err(at(field), CONSENT_CATEGORY);
                        }
                    }
                    if cross_domain.len() > 32 {
                        err(at("cross_domain"), "at most 32 domains");
                    }
                    for (j, domain) in cross_domain.iter().enumerate() {
                        if !is_domain(domain) {
                            err(
                                format!("{}[{j}]", at("cross_domain")),
                                "a host name such as example.de (no scheme, port or path)",
                            );
                        }
                    }
                }
                GovernanceStep::DropFields { fields } => {
                    if fields.is_empty() {
                        err(at("fields"), "at least one field to drop");
                    }
                    for (j, path) in fields.iter().enumerate() {
                        if let Some(problem) = path_problem(path) {
                            err(format!("{}[{j}]", at("fields")), problem);
                        }
                    }
                }
            }
        }

        let mut names = HashSet::new();
        for (i, destination) in self.destinations.iter().enumerate() {
            let at = |field: &str| format!("destinations[{i}].{field}");
            if let Some(problem) = name_problem(&destination.name) {
                err(at("name"), problem);
            } else if !names.insert(destination.name.as_str()) {
                err(at("name"), "duplicate destination name");
            }
            validate_destination(destination, &at, &mut err);
            match destination.raw_kind() {
                None => err(
                    format!("destinations[{i}]"),
                    "set exactly one destination kind (type with settings, or a webhook, ga4 or meta section)",
                ),
                Some((id, section, settings)) => match crate::catalogue::get(id) {
                    Some(definition) => {
                        definition.settings_problems(&settings, &at(section), &mut err);
                        if section != "settings" && !destination.settings.is_empty() {
                            err(at("settings"), "settings go with type, not with a section");
                        }
                    }
                    None => {
                        let ids: Vec<&str> = crate::catalogue::all()
                            .iter()
                            .map(|d| d.id.as_str())
                            .collect();
                        err(
                            at("type"),
                            &format!(
                                "unknown destination type {id}; the catalogue has {}",
                                ids.join(", ")
                            ),
                        );
                    }
                },
            }
        }

        if let Some(problem) = name_problem(&self.archive.dataset) {
            err("archive.dataset".into(), problem);
        }
        if let Some(days) = self.archive.retain_days
            && !(1..=super::MAX_RETAIN_DAYS).contains(&days)
        {
            err(
                "archive.retain_days".into(),
                &format!("between 1 and {} days", super::MAX_RETAIN_DAYS),
            );
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

const CONSENT_CATEGORY: &str = "a consent category: 1 to 64 of A-Z, a-z, 0-9, _, - and .";

fn is_consent_category(category: &str) -> bool {
    !category.is_empty()
        && category.len() <= 64
        && category
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// A host name: dot-separated labels of letters, digits and `-`, 253 bytes at most.
fn is_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What every destination kind shares: consent, filter, shaping, delivery settings.
fn validate_destination(
    destination: &DestinationSpec,
    at: &dyn Fn(&str) -> String,
    err: &mut impl FnMut(String, &str),
) {
    for (j, category) in destination.consent.iter().enumerate() {
        if !is_consent_category(category) {
            err(format!("{}[{j}]", at("consent")), CONSENT_CATEGORY);
        }
    }
    if let Some(filter) = &destination.filter
        && let Some(problem) = expression_problem(filter)
    {
        err(at("filter"), &problem);
    }
    for (j, rule) in destination.pii.iter().enumerate() {
        pii_rule_problems(rule, &format!("{}[{j}]", at("pii")), err);
    }
    for (output, input) in &destination.mapping {
        if let Some(problem) = path_problem(output).or_else(|| path_problem(input)) {
            err(format!("{}.{output}", at("mapping")), problem);
        }
    }
    for (output, expression) in &destination.computed {
        if let Some(problem) = path_problem(output) {
            err(format!("{}.{output}", at("computed")), problem);
        } else if let Some(problem) = expression_problem(expression) {
            err(format!("{}.{output}", at("computed")), &problem);
        }
    }
    for (j, path) in destination.required.iter().enumerate() {
        if let Some(problem) = path_problem(path) {
            err(format!("{}[{j}]", at("required")), problem);
        }
    }
    if !(1..=20).contains(&destination.retry.max_attempts) {
        err(at("retry.max_attempts"), "must be between 1 and 20");
    }
    if !(1..=604_800).contains(&destination.retry.within_seconds) {
        err(
            at("retry.within_seconds"),
            "must be between 1 and 604800 (a week)",
        );
    }
    if destination
        .concurrency
        .is_some_and(|c| !(1..=64).contains(&c))
    {
        err(at("concurrency"), "must be between 1 and 64");
    }
    if destination
        .rate_limit
        .as_ref()
        .is_some_and(|r| !(1..=1_000_000).contains(&r.events_per_second))
    {
        err(
            at("rate_limit.events_per_second"),
            "must be between 1 and 1000000",
        );
    }
    if destination
        .timeout_ms
        .is_some_and(|t| !(100..=120_000).contains(&t))
    {
        err(at("timeout_ms"), "must be between 100 and 120000");
    }
}

fn pii_rule_problems(rule: &PiiRule, at: &str, err: &mut impl FnMut(String, &str)) {
    match (rule.fields.is_empty(), rule.detect.is_empty()) {
        (true, true) | (false, false) => err(
            at.to_owned(),
            "give either fields (known places) or detect (kinds to find), not both",
        ),
        _ => {}
    }
    for (j, path) in rule.fields.iter().enumerate() {
        if let Some(problem) = path_problem(path) {
            err(format!("{at}.fields[{j}]"), problem);
        }
    }
}

/// Why a CEL expression does not compile, if it does not.
pub fn expression_problem(expression: &str) -> Option<String> {
    if expression.trim().is_empty() || expression.len() > MAX_FILTER {
        return Some("must be a non-empty CEL expression of at most 4096 bytes".into());
    }
    cel::Program::compile(expression)
        .err()
        .map(|e| format!("not a valid CEL expression: {}", one_line(&e.to_string())))
}

/// Why a JSON Schema does not compile, if it does not.
fn schema_problem(schema: &serde_json::Value) -> Option<String> {
    if serde_json::to_vec(schema).map_or(true, |bytes| bytes.len() > MAX_SCHEMA) {
        return Some("a JSON Schema of at most 64 KiB".into());
    }
    jsonschema::validator_for(schema)
        .err()
        .map(|e| format!("not a valid JSON Schema: {}", one_line(&e.to_string())))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Names of sources, destinations and datasets.
fn name_problem(name: &str) -> Option<&'static str> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    (!valid).then_some("1 to 64 of a-z, 0-9, - and _, starting with a letter or digit")
}

/// Dot-separated field paths such as `properties.order.total`.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() || path.len() > MAX_PATH {
        return Some("a field path of 1 to 256 bytes");
    }
    if path.split('.').any(str::is_empty) {
        return Some("a dot-separated field path without empty segments");
    }
    if path.chars().any(char::is_control) {
        return Some("field paths must not contain control characters");
    }
    None
}

pub(crate) fn url_problem(url: &str) -> Option<&'static str> {
    if url.len() > MAX_URL {
        return Some("at most 2048 bytes");
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Some("must start with https:// or http://");
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.contains('@') {
        return Some("must name a host (and no credentials)");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain whitespace");
    }
    None
}

/// CORS origins: `*`, or `http(s)://host[:port]` with an optional leading `*.` on the host.
fn origin_problem(origin: &str) -> Option<&'static str> {
    const SHAPE: &str =
        "an origin such as https://www.example.com or https://*.example.com (no path), or *";
    if origin == "*" {
        return None;
    }
    let Some(host) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return Some(SHAPE);
    };
    let name = host.strip_prefix("*.").unwrap_or(host);
    let (name, port) = match name.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (name, None),
    };
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.ends_with('.');
    let valid_port = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    (!(valid_name && valid_port)).then_some(SHAPE)
}

/// Secret references: environment-variable style names.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}
