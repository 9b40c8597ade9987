//! The named transforms of the template language: what a vendor needs that a template
//! cannot say. GA4's naming and parameter rules are the largest.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::out::{Context, Out, owned};
use super::payload::text;

/// GA4's limits on names and string parameter values.
const MAX_NAME: usize = 40;
const MAX_VALUE: usize = 100;

/// Applies the transform `name` to `value` (or, for `ga4_params`, to the event).
pub fn apply<'a>(name: &str, value: Option<Out<'a>>, ctx: &Context<'a>) -> Option<Out<'a>> {
    if name == "ga4_params" {
        return Some(ga4_params(ctx));
    }
    let text = match value? {
        Out::Borrowed(Value::String(s)) => Cow::Borrowed(s.as_str()),
        other => match owned(other) {
            Value::String(s) => Cow::Owned(s),
            _ => return None,
        },
    };
    let result = match name {
        "ga4_name" => ga4_name(&text).into_owned(),
        "lowercase" => text.to_lowercase(),
        "uppercase" => text.to_uppercase(),
        "trim" => text.trim().to_owned(),
        "digits" => text.chars().filter(char::is_ascii_digit).collect(),
        "snake_case" => snake_case(&text),
        "mixpanel_insert_id" => mixpanel_insert_id(&text),
        _ => return None,
    };
    Some(Out::Owned(Value::String(result)))
}

/// Mixpanel deduplicates by `$insert_id`, which must be at most 36 letters, digits and
/// `-`: an id that fits is kept, any other becomes the first 36 hex digits of its SHA-256
/// (as Mixpanel's guide suggests), the same for every retry.
fn mixpanel_insert_id(id: &str) -> String {
    if id.len() <= 36 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return id.to_owned();
    }
    crate::pii::sha256_hex(id)[..36].to_owned()
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

/// A GA4 event or parameter name: snake_case, starting with a letter, at most 40 characters.
pub fn ga4_name(name: &str) -> Cow<'_, str> {
    if is_ga4_name(name) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 2);
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    let mut named = if trimmed.starts_with(|c: char| c.is_ascii_alphabetic()) {
        trimmed.to_owned()
    } else {
        format!("e_{trimmed}")
    };
    // Only ASCII was written, so a byte length is a character count.
    named.truncate(MAX_NAME);
    Cow::Owned(named)
}

/// Whether a name already is what [`ga4_name`] would make of it (most property keys are).
fn is_ga4_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() <= MAX_NAME
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.last() != Some(&b'_')
        && !name.contains("__")
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// GA4's parameters: from the mapped output, else `properties`, by GA4 name (a later key
/// wins when two names meet), scalars and `items` only, strings cut to 100 characters; a
/// page view gets its location, title and referrer unless they are set.
fn ga4_params<'a>(ctx: &Context<'a>) -> Out<'a> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let source: &'a Map<String, Value> = match ctx.output {
        Some(output) => output,
        None => ctx
            .event
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new)),
    };
    let mut params: BTreeMap<Cow<'a, str>, Out<'a>> = BTreeMap::new();
    for (key, value) in source {
        let value = match value {
            Value::String(s) if s.len() <= MAX_VALUE => Out::Borrowed(value),
            Value::String(s) => Out::Owned(Value::String(s.chars().take(MAX_VALUE).collect())),
            Value::Number(_) | Value::Bool(_) => Out::Borrowed(value),
            // GA4's one structured parameter: the items of an e-commerce event.
            Value::Array(_) if key == "items" => Out::Borrowed(value),
            _ => continue,
        };
        params.insert(ga4_name(key), value);
    }
    if text(ctx.event, "type") == Some("page") {
        for (param, path) in [
            ("page_location", "context.page.url"),
            ("page_title", "context.page.title"),
            ("page_referrer", "context.page.referrer"),
        ] {
            if let Some(value) = crate::path::get(ctx.event, path)
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            {
                params
                    .entry(Cow::Borrowed(param))
                    .or_insert(Out::Borrowed(value));
            }
        }
    }
    Out::Object(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ga4_rules() {
        assert_eq!(ga4_name("Order Completed"), "order_completed");
        assert_eq!(ga4_name("  Added -- To Cart!"), "added_to_cart");
        assert_eq!(ga4_name("3D View"), "e_3d_view");
        assert_eq!(ga4_name(&"x".repeat(60)).len(), 40);
        for name in ["order_id", "a__b", "b_", "_b", "x1", "1x", "Sku", "ok"] {
            if is_ga4_name(name) {
                assert_eq!(ga4_name(name), name, "{name} is taken as it is");
            } else {
                assert_ne!(ga4_name(name), name, "{name} is rewritten");
            }
        }
    }
}
