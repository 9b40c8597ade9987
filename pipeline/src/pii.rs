//! Personal data: declared fields, and detectors that look at every string in `properties`,
//! `traits` and `context`. Hashing is idempotent (a 64-hex-digit value is taken as already
//! hashed), so an event governed twice, or hashed again for a destination, keeps one hash.
//!
//! Detectors err on the side of not touching business data: a phone number must start with
//! `+` or look like `(555) 123-4567`, so dates and order numbers are left alone; a card
//! number must pass the Luhn check.

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use sluice_proto::spec::{PiiAction, PiiKind, PiiRule};

use crate::path;

const REDACTED: &str = "[redacted]";
/// The objects detectors look into.
const SCANNED: [&str; 3] = ["properties", "traits", "context"];

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
        .unwrap_or_else(|_| unreachable!("a valid pattern"))
});
static CARD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:\d[ -]?){12,18}\d\b").unwrap_or_else(|_| unreachable!("a valid pattern"))
});
static NANP_PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}$")
        .unwrap_or_else(|_| unreachable!("a valid pattern"))
});

/// Hex SHA-256.
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

/// Whether a value already is a hex SHA-256.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// The form a kind of value is hashed in, so equal data hashes equally across sources.
pub fn normalise(kind: Option<PiiKind>, text: &str) -> String {
    match kind {
        Some(PiiKind::Phone) => {
            let plus = if text.trim_start().starts_with('+') {
                "+"
            } else {
                ""
            };
            format!("{plus}{}", digits(text))
        }
        Some(PiiKind::Card) => digits(text),
        Some(PiiKind::Ip) => text
            .trim()
            .parse::<IpAddr>()
            .map_or_else(|_| text.trim().to_owned(), |ip| ip.to_string()),
        Some(PiiKind::Email) | None => text.trim().to_lowercase(),
    }
}

fn hash(kind: Option<PiiKind>, text: &str) -> String {
    if is_sha256_hex(text.trim()) {
        return text.trim().to_ascii_lowercase();
    }
    sha256_hex(&normalise(kind, text))
}

fn luhn(number: &str) -> bool {
    let mut sum = 0;
    for (i, d) in number
        .bytes()
        .rev()
        .map(|b| u32::from(b - b'0'))
        .enumerate()
    {
        sum += if i % 2 == 1 {
            let twice = d * 2;
            if twice > 9 { twice - 9 } else { twice }
        } else {
            d
        };
    }
    sum % 10 == 0
}

fn is_phone(text: &str) -> bool {
    let text = text.trim();
    let shaped = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b" +-.()".contains(&b));
    let count = text.bytes().filter(u8::is_ascii_digit).count();
    shaped
        && (7..=15).contains(&count)
        && ((text.starts_with('+')
            && text[1..].starts_with(|c: char| c.is_ascii_digit() || c == ' ' || c == '('))
            || NANP_PHONE.is_match(text))
}

fn is_ip(text: &str) -> bool {
    text.trim().parse::<IpAddr>().is_ok()
}

/// What a rule does to one string: keep it, replace it, or drop the field.
enum Verdict {
    Keep,
    Replace(String),
    Drop,
}

/// Applies detectors to one string.
fn detect(kinds: &[PiiKind], action: PiiAction, text: &str) -> Verdict {
    let mut current: Option<String> = None;
    for kind in kinds {
        let value = current.as_deref().unwrap_or(text);
        let found = match kind {
            PiiKind::Email => value.as_bytes().contains(&b'@') && EMAIL.is_match(value),
            PiiKind::Card => {
                may_hold_card(value) && CARD.find_iter(value).any(|m| luhn(&digits(m.as_str())))
            }
            PiiKind::Phone => is_phone(value),
            PiiKind::Ip => is_ip(value),
        };
        if !found {
            continue;
        }
        match action {
            PiiAction::Drop => return Verdict::Drop,
            PiiAction::Hash | PiiAction::Redact => {
                let replace = |m: &str| match action {
                    PiiAction::Hash => hash(Some(*kind), m),
                    _ => REDACTED.to_owned(),
                };
                let replaced = match kind {
                    PiiKind::Email => EMAIL
                        .replace_all(value, |c: &regex::Captures<'_>| replace(&c[0]))
                        .into_owned(),
                    PiiKind::Card => CARD
                        .replace_all(value, |c: &regex::Captures<'_>| {
                            if luhn(&digits(&c[0])) {
                                replace(&c[0])
                            } else {
                                c[0].to_owned()
                            }
                        })
                        .into_owned(),
                    PiiKind::Phone | PiiKind::Ip => replace(value),
                };
                current = Some(replaced);
            }
        }
    }
    current.map_or(Verdict::Keep, Verdict::Replace)
}

/// Walks every string of a value; `false` from `visit` removes it (from its object or array).
fn scan(value: &mut Value, visit: &mut impl FnMut(&str) -> Verdict) -> bool {
    match value {
        Value::String(text) => match visit(text) {
            Verdict::Keep => true,
            Verdict::Replace(new) => {
                *text = new;
                true
            }
            Verdict::Drop => false,
        },
        Value::Object(map) => {
            // Walking in place and removing afterwards: `BTreeMap::retain` rebuilds as it
            // goes and cost more than the detectors themselves.
            let mut dropped = Vec::new();
            for (key, item) in map.iter_mut() {
                if !scan(item, visit) {
                    dropped.push(key.clone());
                }
            }
            for key in dropped {
                map.remove(&key);
            }
            true
        }
        Value::Array(items) => {
            items.retain_mut(|v| scan(v, visit));
            true
        }
        _ => true,
    }
}

/// Whether the text has a run of 13 or more digits, single spaces or dashes between them:
/// what a card number needs before the (costlier) pattern is worth running.
fn may_hold_card(text: &str) -> bool {
    // Most strings have too few digits in all: counting them is a loop the compiler
    // vectorises, where the run below goes byte by byte.
    if text.bytes().filter(u8::is_ascii_digit).count() < 13 {
        return false;
    }
    let mut run = 0;
    let mut after_separator = false;
    for b in text.bytes() {
        if b.is_ascii_digit() {
            run += 1;
            after_separator = false;
            if run >= 13 {
                return true;
            }
        } else if (b == b' ' || b == b'-') && run > 0 && !after_separator {
            after_separator = true;
        } else {
            run = 0;
            after_separator = false;
        }
    }
    false
}

/// Applies rules in order to an event.
pub fn apply(rules: &[PiiRule], event: &mut Map<String, Value>) {
    for rule in rules {
        if rule.detect.is_empty() {
            for field in &rule.fields {
                apply_to_field(rule.action, event, field);
            }
            continue;
        }
        for object in SCANNED {
            if let Some(value) = event.get_mut(object) {
                scan(value, &mut |text| detect(&rule.detect, rule.action, text));
            }
        }
    }
}

fn apply_to_field(action: PiiAction, event: &mut Map<String, Value>, field: &str) {
    if action == PiiAction::Drop {
        path::remove(event, field);
        return;
    }
    let Some(value) = path::get_mut(event, field) else {
        return;
    };
    let text = match &*value {
        Value::Null => return,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    *value = Value::String(match action {
        PiiAction::Hash => hash(None, &text),
        _ => REDACTED.to_owned(),
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(rules: serde_json::Value, event: serde_json::Value) -> Value {
        let rules: Vec<PiiRule> = serde_json::from_value(rules).expect("rules");
        let Value::Object(mut event) = event else {
            unreachable!()
        };
        apply(&rules, &mut event);
        Value::Object(event)
    }

    #[test]
    fn declared_fields_are_hashed_redacted_or_dropped() {
        let out = run(
            json!([{"fields": ["traits.email"], "action": "hash"},
                   {"fields": ["traits.name"], "action": "redact"},
                   {"fields": ["traits.address"], "action": "drop"}]),
            json!({"traits": {"email": "  Ada@Example.COM ", "name": "Ada", "address": {"city": "x"}}}),
        );
        assert_eq!(out["traits"]["email"], sha256_hex("ada@example.com"));
        assert_eq!(out["traits"]["name"], "[redacted]");
        assert!(out["traits"].get("address").is_none());
        // Hashing twice keeps one hash.
        let again = run(json!([{"fields": ["traits.email"], "action": "hash"}]), out);
        assert_eq!(again["traits"]["email"], sha256_hex("ada@example.com"));
    }

    #[test]
    fn detectors_find_personal_data_anywhere_and_leave_the_rest() {
        let out = run(
            json!([{"detect": ["email", "card"], "action": "redact"},
                   {"detect": ["phone"], "action": "hash"},
                   {"detect": ["ip"], "action": "drop"}]),
            json!({
                "properties": {
                    "note": "write to ada@example.com or bob@x.io",
                    "nested": {"list": ["4111 1111 1111 1111", "4111 1111 1111 1112", "sku-1"]},
                    "phone": "+44 20 7946 0958",
                    "us_phone": "(555) 123-4567",
                    "date": "2026-11-22",
                    "order_id": "12345678",
                    "revenue": 42.5
                },
                "context": {"ip": "203.0.113.9", "page": {"url": "https://x.example/?email=ada@example.com"}},
                "event": "not scanned: ada@example.com"
            }),
        );
        let p = &out["properties"];
        assert_eq!(p["note"], "write to [redacted] or [redacted]");
        assert_eq!(
            p["nested"]["list"],
            json!(["[redacted]", "4111 1111 1111 1112", "sku-1"]),
            "only Luhn-valid numbers are cards"
        );
        assert_eq!(p["phone"], sha256_hex("+442079460958"));
        assert_eq!(p["us_phone"], sha256_hex("5551234567"));
        assert_eq!(
            (&p["date"], &p["order_id"], &p["revenue"]),
            (&json!("2026-11-22"), &json!("12345678"), &json!(42.5))
        );
        assert!(out["context"].get("ip").is_none(), "dropped");
        assert_eq!(
            out["context"]["page"]["url"],
            "https://x.example/?email=[redacted]"
        );
        assert_eq!(out["event"], "not scanned: ada@example.com");
    }

    #[test]
    fn hashes_use_each_kinds_normal_form() {
        assert_eq!(normalise(Some(PiiKind::Email), " A@B.c "), "a@b.c");
        assert_eq!(
            normalise(Some(PiiKind::Phone), "+1 (555) 123-4567"),
            "+15551234567"
        );
        assert_eq!(normalise(Some(PiiKind::Ip), "2001:DB8::1"), "2001:db8::1");
        assert!(luhn("4111111111111111") && !luhn("4111111111111112"));
    }

    #[test]
    fn the_card_precheck_never_hides_what_the_pattern_finds() {
        for text in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "x4111111111111111y",
            "1234567890123",
            "12 34 56 78 90 12 3",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0.1234.5678",
            "1234567890 12",
            "12  34567890123",
            "123456789012",
            "+44 20 7946 0958",
        ] {
            if CARD.is_match(text) {
                assert!(may_hold_card(text), "{text}");
            }
        }
        assert!(CARD.is_match("12 34 56 78 90 12 3") && CARD.is_match("4111-1111-1111-1111"));
        assert!(
            !may_hold_card("123456789012"),
            "twelve digits are not a card"
        );
        assert!(!may_hold_card("12  34567890123"), "two spaces break a run");
    }
}
