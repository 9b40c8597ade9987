//! The first-party visitor id: a cookie the proxy sets from the customer's own domain, so it
//! is not subject to the short lifetimes browsers give script-set or third-party cookies.

use axum::http::{HeaderMap, header};

use crate::config::ProxyConfig;

/// Browsers cap cookie lifetimes at 400 days; the proxy renews the cookie on every visit.
const MAX_AGE_SECS: u64 = 400 * 24 * 60 * 60;

/// The visitor id from the request's cookie, if it carries a well-formed one.
pub fn visitor_id(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| {
            !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
}

/// The `Set-Cookie` value that (re)sets the visitor id.
pub fn set_cookie(config: &ProxyConfig, visitor: &str) -> String {
    let mut cookie = format!(
        "{}={visitor}; Max-Age={MAX_AGE_SECS}; Path=/; HttpOnly; Secure; SameSite=Lax",
        config.cookie_name
    );
    if let Some(domain) = &config.cookie_domain {
        cookie.push_str("; Domain=");
        cookie.push_str(domain);
    }
    cookie
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn config(domain: Option<&str>) -> ProxyConfig {
        ProxyConfig {
            addr: "127.0.0.1:0".parse().expect("addr"),
            receiver_urls: Vec::new(),
            cookie_name: "sluice_id".into(),
            cookie_domain: domain.map(str::to_owned),
            trust_forwarded_for: false,
            spool_max_bytes: 1 << 20,
        }
    }

    #[test]
    fn the_cookie_lasts_400_days_and_is_first_party_only() {
        assert_eq!(
            set_cookie(&config(None), "v-1"),
            "sluice_id=v-1; Max-Age=34560000; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
        assert!(set_cookie(&config(Some("example.com")), "v-1").ends_with("; Domain=example.com"));
    }

    #[test]
    fn only_well_formed_ids_are_read_back() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; sluice_id=0193-abc_D; x=y"),
        );
        assert_eq!(
            visitor_id(&headers, "sluice_id").as_deref(),
            Some("0193-abc_D")
        );
        assert_eq!(visitor_id(&headers, "missing"), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("sluice_id=<script>"),
        );
        assert_eq!(visitor_id(&headers, "sluice_id"), None);
        headers.insert(header::COOKIE, HeaderValue::from_static("sluice_id="));
        assert_eq!(visitor_id(&headers, "sluice_id"), None);
    }
}
