//! The template language of payloads, checked here and run by the pipeline engine
//! (`sluice_pipeline::destinations::template`).
//!
//! A template is JSON. An object with keys starting with `$` is an **expression**; any
//! other object, array or scalar is written as it is, with its expressions evaluated. A
//! field whose expression yields nothing is left out, and so is a literal object left empty.
//! A literal key that must start with `$` (Mixpanel's `$insert_id`) is written `$$insert_id`.
//! An expression is evaluated in this order:
//!
//! 1. the source: `$path` (a path or a list, the first present and non-empty wins; paths
//!    are into the event, or `@output[.x]`, `@settings.<key>`, `@item[.x]` inside `$each`,
//!    `@name`, `@event`), `$value` (a literal), `$merge` (a list of templates whose objects
//!    are merged into one, a later key replacing an earlier one), or `$time` alone (the
//!    event's time);
//! 2. `$if`: path → value pairs that must all hold, else nothing;
//! 3. `$default`: a literal when the source yields nothing;
//! 4. `$names`: a table that renames a string value (others pass unchanged);
//! 5. `$fn`: a named transform ([`TRANSFORMS`]);
//! 6. `$time`: with a source, parses the value as a time; writes it as [`TIME_FORMATS`];
//! 7. `$each`: a template run on every element of an array (`@item`);
//! 8. `$omit`: keys removed from an object;
//! 9. `$hash`: SHA-256 of the normalised value ([`HASHES`]), kept when it already is one;
//! 10. `$as`: a conversion ([`TYPES`]); `list` wraps the value in an array of one.
//!
//! `{"$events": true}` stands for the batch's payloads in an envelope.

/// Expression keys.
pub const KEYS: &[&str] = &[
    "$path", "$value", "$time", "$if", "$default", "$names", "$fn", "$each", "$omit", "$hash",
    "$as", "$events", "$merge",
];

/// `$time` formats: Unix seconds, milliseconds or microseconds; RFC 3339 (UTC, with
/// milliseconds, or without fractions); Google Ads' `yyyy-mm-dd hh:mm:ss+00:00`.
pub const TIME_FORMATS: &[&str] = &[
    "unix_seconds",
    "unix_millis",
    "unix_micros",
    "rfc3339",
    "rfc3339_seconds",
    "google_ads",
];

/// `$hash` normalisations: `email` (trimmed, lowercased), `phone` (digits with a leading `+`
/// kept), `plain` (trimmed, lowercased), `exact` (as it is).
pub const HASHES: &[&str] = &["email", "phone", "plain", "exact"];

/// `$as` conversions.
pub const TYPES: &[&str] = &["string", "number", "integer", "boolean", "list"];

/// Named transforms: `ga4_name` (a GA4 event name: snake_case, a letter first, at most 40),
/// `ga4_params` (GA4's parameters from the mapped output or `properties`: scalars and
/// `items`, names made GA4 names, strings cut to 100 characters, and a page's location,
/// title and referrer), `lowercase`, `uppercase`, `trim`, `digits` (only the digits),
/// `snake_case`, `mixpanel_insert_id` (the id when it is at most 36 letters, digits and `-`,
/// else the first 36 hex digits of its SHA-256).
pub const TRANSFORMS: &[&str] = &[
    "ga4_name",
    "ga4_params",
    "lowercase",
    "uppercase",
    "trim",
    "digits",
    "snake_case",
    "mixpanel_insert_id",
];

/// Whether a template object is an expression (`$$` keys are literal ones).
pub fn is_expression(object: &serde_json::Map<String, serde_json::Value>) -> bool {
    object
        .keys()
        .any(|k| k.starts_with('$') && !k.starts_with("$$"))
}

/// The key a literal object's `key` is written as: `$$x` is `$x`.
pub fn literal_key(key: &str) -> &str {
    if key.starts_with("$$") {
        &key[1..]
    } else {
        key
    }
}

/// The problems of a template, each prefixed with where (`payload.user.email.$hash`).
pub fn problems(template: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match template {
        Value::Object(object) if is_expression(object) => expression_problems(object, at, out),
        Value::Object(object) => {
            for (key, value) in object {
                problems(value, &format!("{at}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                problems(value, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn expression_problems(
    object: &serde_json::Map<String, serde_json::Value>,
    at: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let one_of = |list: &[&str]| format!("one of {}", list.join(", "));
    for (key, value) in object {
        let here = format!("{at}.{key}");
        match key.as_str() {
            "$path" => {
                let paths: Vec<&Value> = match value {
                    Value::Array(paths) => paths.iter().collect(),
                    one => vec![one],
                };
                if paths.is_empty() {
                    out.push(format!("{here}: at least one path"));
                }
                for path in paths {
                    match path.as_str() {
                        Some(p) if path_ok(p) => {}
                        _ => out.push(format!(
                            "{here}: a dot-separated path (or @output, @settings.<key>, @item, @name, @event)"
                        )),
                    }
                }
            }
            "$time" if !value.as_str().is_some_and(|f| TIME_FORMATS.contains(&f)) => {
                out.push(format!("{here}: {}", one_of(TIME_FORMATS)));
            }
            "$hash" if !value.as_str().is_some_and(|f| HASHES.contains(&f)) => {
                out.push(format!("{here}: {}", one_of(HASHES)));
            }
            "$as" if !value.as_str().is_some_and(|f| TYPES.contains(&f)) => {
                out.push(format!("{here}: {}", one_of(TYPES)));
            }
            "$fn" if !value.as_str().is_some_and(|f| TRANSFORMS.contains(&f)) => {
                out.push(format!("{here}: {}", one_of(TRANSFORMS)));
            }
            "$names"
                if !value
                    .as_object()
                    .is_some_and(|m| m.values().all(Value::is_string)) =>
            {
                out.push(format!("{here}: a table of names to names"));
            }
            "$omit"
                if !value
                    .as_array()
                    .is_some_and(|keys| keys.iter().all(Value::is_string)) =>
            {
                out.push(format!("{here}: a list of keys"));
            }
            "$if" => match value.as_object() {
                Some(tests) => {
                    for path in tests.keys() {
                        if !path_ok(path) {
                            out.push(format!("{here}.{path}: a path"));
                        }
                    }
                }
                None => out.push(format!("{here}: path → value pairs")),
            },
            "$each" => problems(value, &here, out),
            "$merge" => match value.as_array() {
                Some(parts) if !parts.is_empty() => {
                    for (i, part) in parts.iter().enumerate() {
                        problems(part, &format!("{here}[{i}]"), out);
                    }
                }
                _ => out.push(format!("{here}: a list of templates yielding objects")),
            },
            "$events" if value != &Value::Bool(true) => out.push(format!("{here}: true")),
            k if !KEYS.contains(&k) => out.push(format!("{at}: unknown key {k}")),
            _ => {}
        }
    }
    let sources = ["$path", "$value", "$events", "$merge"]
        .iter()
        .filter(|k| object.contains_key(**k))
        .count();
    if sources > 1 {
        out.push(format!("{at}: at most one of $path, $value and $events"));
    }
    if sources == 0 && !object.contains_key("$time") && !object.contains_key("$fn") {
        out.push(format!("{at}: a source ($path, $value, $time or $fn)"));
    }
}

fn path_ok(path: &str) -> bool {
    let plain = path.strip_prefix('@').unwrap_or(path);
    !plain.is_empty()
        && plain.len() <= 256
        && !plain.split('.').any(str::is_empty)
        && !plain.chars().any(char::is_control)
        && (!path.starts_with('@')
            || ["output", "settings", "item", "name", "event"]
                .contains(&plain.split('.').next().unwrap_or_default()))
}
