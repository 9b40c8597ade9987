use std::collections::HashSet;

use super::{DestinationKind, GovernanceStep, PipelineSpec, SpecError, WebhookSpec};

/// Longest field path, in bytes.
const MAX_PATH: usize = 256;
/// Longest filter expression, in bytes.
const MAX_FILTER: usize = 4096;
/// Longest URL, in bytes.
const MAX_URL: usize = 2048;

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

        for (i, step) in self.governance.iter().enumerate() {
            let at = |field: &str| format!("governance[{i}].{field}");
            match step {
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
            if let Some(filter) = &destination.filter
                && (filter.trim().is_empty() || filter.len() > MAX_FILTER)
            {
                err(
                    at("filter"),
                    "must be a non-empty expression of at most 4096 bytes",
                );
            }
            for (output, input) in &destination.mapping {
                if let Some(problem) = path_problem(output).or_else(|| path_problem(input)) {
                    err(format!("{}.{output}", at("mapping")), problem);
                }
            }
            match destination.kind() {
                None => err(
                    format!("destinations[{i}]"),
                    "set exactly one destination kind (webhook)",
                ),
                Some(DestinationKind::Webhook(webhook)) => {
                    validate_webhook(webhook, &at("webhook"), &mut err)
                }
            }
        }

        if let Some(problem) = name_problem(&self.archive.dataset) {
            err("archive.dataset".into(), problem);
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn validate_webhook(webhook: &WebhookSpec, at: &str, err: &mut impl FnMut(String, &str)) {
    if let Some(problem) = url_problem(&webhook.url) {
        err(format!("{at}.url"), problem);
    }
    for (name, value) in &webhook.headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            err(format!("{at}.headers.{name}"), "not a valid header name");
        } else if value.chars().any(|c| c.is_control() && c != '\t') {
            err(
                format!("{at}.headers.{name}"),
                "header values must not contain control characters",
            );
        }
    }
    if let Some(secret) = &webhook.signing_secret
        && !is_secret_name(secret)
    {
        err(
            format!("{at}.signing_secret"),
            "a secret name: A-Z, 0-9 and _, starting with a letter or _, at most 128",
        );
    }
    if webhook.batch_size.is_some_and(|n| !(1..=1000).contains(&n)) {
        err(format!("{at}.batch_size"), "must be between 1 and 1000");
    }
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

fn url_problem(url: &str) -> Option<&'static str> {
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
