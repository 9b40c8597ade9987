//! The `Authorization` header, parsed once for every API: Bearer tokens for keys, Basic for
//! Segment's libraries (the write key is the user name).

use axum::http::{HeaderMap, header};
use base64::Engine as _;

/// A credential sent in `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization<'h> {
    /// `Bearer <token>`, the token trimmed.
    Bearer(&'h str),
    /// `Basic <base64(user:password)>`; the password may be absent or empty.
    Basic { user: String },
}

impl<'h> Authorization<'h> {
    /// The credential in `headers`: `None` when there is no `Authorization` header, or when
    /// it is not valid UTF-8, not a scheme this node reads, or Basic that is not base64 of
    /// UTF-8.
    pub fn from_headers(headers: &'h HeaderMap) -> Option<Self> {
        Self::parse(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
    }

    /// Parses a header value; schemes are case-insensitive (RFC 9110 §11.1).
    pub fn parse(value: &'h str) -> Option<Self> {
        let (scheme, rest) = value.trim_start().split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return (!rest.is_empty()).then_some(Authorization::Bearer(rest));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
            return Some(Authorization::Basic {
                user: user.to_owned(),
            });
        }
        None
    }
}

/// The token of `Authorization: Bearer <token>`, if that is what was sent.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    match Authorization::from_headers(headers)? {
        Authorization::Bearer(token) => Some(token),
        Authorization::Basic { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str) -> Option<Authorization<'static>> {
        Some(Authorization::Basic { user: user.into() })
    }

    #[test]
    fn header_values_parse_as_the_rfc_says() {
        let cases: &[(&str, Option<Authorization<'static>>)] = &[
            ("Bearer sk_abc", Some(Authorization::Bearer("sk_abc"))),
            ("bearer sk_abc", Some(Authorization::Bearer("sk_abc"))),
            ("BEARER   sk_abc  ", Some(Authorization::Bearer("sk_abc"))),
            ("Bearer ", None),
            ("Bearer", None),
            ("Bearersk_abc", None),
            // "wk:" and "wk" (Segment's libraries send the key as the user, no password).
            ("Basic d2s6", basic("wk")),
            ("Basic d2s=", basic("wk")),
            ("basic d2s6c2VjcmV0", basic("wk")),
            // A colon in the password stays in the password.
            ("Basic d2s6YTpi", basic("wk")),
            ("Basic ", basic("")),
            ("Basic not-base64!", None),
            // base64 of the bytes ff fe: not UTF-8.
            ("Basic //4=", None),
            ("Digest username=\"wk\"", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(&Authorization::parse(value), want, "{value:?}");
        }
    }

    #[test]
    fn bearer_token_ignores_other_schemes_and_missing_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Basic d2s6".parse().expect("value"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer k".parse().expect("value"));
        assert_eq!(bearer_token(&headers), Some("k"));
        headers.insert(
            header::AUTHORIZATION,
            axum::http::HeaderValue::from_bytes(b"Bearer \xff").expect("value"),
        );
        assert_eq!(bearer_token(&headers), None);
    }
}
