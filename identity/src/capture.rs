//! Reading vendor ids from a page URL and a `Cookie` header, by the table in [`vendors`].
//! Everything read here comes from the visitor's browser: values are bounded and checked
//! before they are kept, and what does not pass is ignored, never an error.

use std::collections::BTreeMap;

use crate::vendors::{Origin, Rule, VENDOR_IDS};

/// Ids by their name in `context.ids`.
pub type Ids = BTreeMap<String, String>;

/// Longest id value kept, in bytes; longer ones are ignored.
pub const MAX_ID_VALUE: usize = 256;
/// The part of a URL read for parameters, in bytes; the rest is not looked at.
pub const MAX_URL: usize = 8 * 1024;
/// The part of a `Cookie` header read, in bytes.
pub const MAX_COOKIE_HEADER: usize = 16 * 1024;
/// Most `_ga_<id>` session cookies kept from one request.
const MAX_PREFIXED: usize = 8;

/// Whether a value may be kept: 1 to 256 bytes of letters, digits and `-._~:=+/` (what
/// vendors' ids are made of; nothing that could break a header, a cookie, markup or a log
/// line).
pub fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID_VALUE
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:=+/".contains(&b))
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn formed(rule: Rule, value: &str, now_ms: i64) -> Option<String> {
    let value = match rule {
        Rule::AsIs => value.to_owned(),
        Rule::MetaClick => format!("fb.1.{now_ms}.{value}"),
        Rule::GaClientId => {
            let parts: Vec<&str> = value.split('.').collect();
            let [.., random, seconds] = parts.as_slice() else {
                return None;
            };
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if parts.len() < 4 || !digits(random) || !digits(seconds) {
                return None;
            }
            format!("{random}.{seconds}")
        }
        Rule::GclAw => {
            let gclid = value.rsplit('.').next()?;
            if !value.starts_with("GCL.") || gclid.is_empty() {
                return None;
            }
            gclid.to_owned()
        }
    };
    valid_value(&value).then_some(value)
}

/// The click of an `fbc` (`fb.1.<ms>.<fbclid>`): two values of one click differ only in when
/// they were formed.
pub fn meta_click(fbc: &str) -> &str {
    fbc.splitn(4, '.').nth(3).unwrap_or(fbc)
}

/// Adds the ids in the query of `url` (a whole URL, or only its `?search`) to `ids`; an id
/// already there is replaced (a new click beats an old cookie). `now_ms` dates an `fbc`.
pub fn from_url(url: &str, now_ms: i64, ids: &mut Ids) {
    let url = bounded(url, MAX_URL);
    let Some((_, query)) = url.split_once('?') else {
        return;
    };
    let query = query.split('#').next().unwrap_or_default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let Some(vendor) = VENDOR_IDS
            .iter()
            .find(|v| matches!(v.origin, Origin::Param(p) if p == key))
        else {
            continue;
        };
        if !valid_value(&value) {
            continue;
        }
        if let Some(value) = formed(vendor.rule, &value, now_ms) {
            ids.insert(vendor.name.to_owned(), value);
        }
    }
}

/// Adds the ids in a `Cookie` header to `ids`, keeping what the URL gave; an `fbc` cookie of
/// the same click as the URL's wins, so the click keeps its first time.
pub fn from_cookies(header: &str, ids: &mut Ids) {
    let mut prefixed = 0;
    for pair in bounded(header, MAX_COOKIE_HEADER).split(';') {
        let Some((name, value)) = pair.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        if !valid_value(value) {
            continue;
        }
        for vendor in VENDOR_IDS {
            let id_name = match vendor.origin {
                Origin::Cookie(cookie) if cookie == name => vendor.name.to_owned(),
                Origin::CookiePrefix(prefix) if prefixed < MAX_PREFIXED => {
                    let Some(rest) = name.strip_prefix(prefix) else {
                        continue;
                    };
                    if rest.is_empty()
                        || rest.len() > 32
                        || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
                    {
                        continue;
                    }
                    prefixed += 1;
                    format!("{}{}", vendor.name, rest.to_ascii_lowercase())
                }
                _ => continue,
            };
            let Some(value) = formed(vendor.rule, value, 0) else {
                continue;
            };
            match ids.get(&id_name) {
                None => {
                    ids.insert(id_name, value);
                }
                Some(from_url)
                    if id_name == "fbc" && meta_click(from_url) == meta_click(&value) =>
                {
                    ids.insert(id_name, value);
                }
                Some(_) => {}
            }
        }
    }
}

/// A Meta browser id minted server-side when the browser has none: `fb.1.<ms>.<random>`.
///
/// Derived from the visitor id, so that every proxy (another node, the tenant's other domain)
/// mints the same one for the same visitor without asking the store, which may not have
/// seen the visitor's first event yet: the time is the visitor id's own (a UUIDv7 the proxy
/// minted) or `now_ms` for another kind of id, the number a hash of the id.
pub fn mint_fbp(visitor: &str, now_ms: i64) -> String {
    use sha2::Digest as _;
    let created = uuid::Uuid::parse_str(visitor)
        .ok()
        .filter(|u| u.get_version_num() == 7)
        .and_then(|u| u.get_timestamp())
        .map(|t| {
            let (secs, nanos) = t.to_unix();
            secs as i64 * 1000 + i64::from(nanos / 1_000_000)
        })
        .unwrap_or(now_ms);
    let digest = sha2::Sha256::new()
        .chain_update(b"sluice fbp\0")
        .chain_update(visitor.as_bytes())
        .finalize();
    let number = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]) % 2_000_000_000;
    format!("fb.1.{created}.{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn click_ids_come_from_the_url_formed_as_the_vendor_forms_them() {
        let mut ids = Ids::new();
        from_url(
            "https://shop.example.com/p?fbclid=AbC-1_x&gclid=G.1&utm_source=news&other=1#top",
            1_700_000_000_123,
            &mut ids,
        );
        assert_eq!(ids["fbc"], "fb.1.1700000000123.AbC-1_x");
        assert_eq!(ids["gclid"], "G.1");
        assert_eq!(ids["utm_source"], "news");
        assert!(!ids.contains_key("other"));
        let mut search_only = Ids::new();
        from_url("?ScCid=s%201x", 1, &mut search_only);
        // A decoded space is not a visible character: refused.
        assert!(search_only.is_empty());
        from_url("?ScCid=s1x&ttclid=t", 1, &mut search_only);
        assert_eq!(search_only["sccid"], "s1x");
        assert_eq!(search_only["ttclid"], "t");
    }

    #[test]
    fn cookies_give_browser_ids_and_the_url_wins_for_a_new_click() {
        let mut ids = Ids::new();
        from_url("/?fbclid=NEW", 5, &mut ids);
        from_cookies(
            "_ga=GA1.1.123456789.1690000000; _ga_ABC123=GS1.1.169.1.1; _fbp=fb.1.1690.42; \
             _fbc=fb.1.1600.OLD; _gcl_aw=GCL.1690.Cj0KCQ; _ttp=t-1; junk; sluice_id=v",
            &mut ids,
        );
        assert_eq!(ids["ga_client_id"], "123456789.1690000000");
        assert_eq!(ids["ga_session_abc123"], "GS1.1.169.1.1");
        assert_eq!(ids["fbp"], "fb.1.1690.42");
        assert_eq!(
            ids["fbc"], "fb.1.5.NEW",
            "a new click replaces the old cookie"
        );
        assert_eq!(ids["gclid"], "Cj0KCQ");
        assert_eq!(ids["ttp"], "t-1");
        assert!(!ids.values().any(|v| v == "v"));

        let mut same = Ids::new();
        from_url("/?fbclid=SAME", 99, &mut same);
        from_cookies("_fbc=fb.1.10.SAME", &mut same);
        assert_eq!(
            same["fbc"], "fb.1.10.SAME",
            "the same click keeps its first time"
        );
    }

    #[test]
    fn hostile_values_are_ignored() {
        let mut ids = Ids::new();
        let long = "x".repeat(MAX_ID_VALUE + 1);
        from_cookies(
            &format!("_fbp={long}; _ttp=\"a\\\"b\"; _uetvid=a,b; _ga=GA1.1.x.y; _ga=1.2"),
            &mut ids,
        );
        assert!(ids.is_empty(), "{ids:?}");
        let mut url_ids = Ids::new();
        from_url(
            &format!("/?gclid={long}&msclkid=%3Cscript%3E"),
            1,
            &mut url_ids,
        );
        assert!(url_ids.is_empty(), "{url_ids:?}");
        // Past the part read, nothing is looked at; a multi-byte character at the cut is fine.
        let huge = format!("/?{}&gclid=late", "é".repeat(MAX_URL));
        let mut none = Ids::new();
        from_url(&huge, 1, &mut none);
        assert!(none.is_empty());
        let many: String = (0..50).map(|i| format!("_ga_G{i}=v{i}; ")).collect();
        let mut capped = Ids::new();
        from_cookies(&many, &mut capped);
        assert_eq!(capped.len(), MAX_PREFIXED);
    }

    #[test]
    fn a_minted_fbp_has_meta_s_form_and_is_the_same_for_the_same_visitor() {
        let fbp = mint_fbp("visitor-1", 1_700_000_000_000);
        let parts: Vec<&str> = fbp.split('.').collect();
        assert_eq!(&parts[..3], ["fb", "1", "1700000000000"]);
        assert!(parts[3].parse::<u32>().is_ok());
        assert!(valid_value(&fbp));
        assert_ne!(mint_fbp("visitor-2", 1_700_000_000_000), fbp);

        // A visitor id the proxy minted: its time, whenever and wherever the fbp is minted.
        let visitor = "01a24e8f-ea07-72b7-b0c4-1346b510b2d0";
        let first = mint_fbp(visitor, 1_800_000_000_000);
        assert_eq!(first, mint_fbp(visitor, 1_900_000_000_000));
        let ms = uuid::Uuid::parse_str(visitor)
            .expect("uuid")
            .get_timestamp()
            .expect("v7")
            .to_unix();
        assert!(first.starts_with(&format!(
            "fb.1.{}.",
            ms.0 * 1000 + u64::from(ms.1 / 1_000_000)
        )));
    }
}
