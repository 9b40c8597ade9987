//! Checks on client-supplied strings, shared by every handler so the rules are the same
//! everywhere. Control characters are refused outright: they have no place in a name and
//! PostgreSQL rejects NUL in text.

use crate::error::ApiError;

/// Longest name of a tenant, key or anything else a person names, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Shortest accepted password, in characters (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in bytes; bounds the work of hashing it.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A trimmed, non-empty name without control characters.
pub fn name(field: &str, raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid(format!("{field}: must not be empty")));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(format!(
            "{field}: at most {MAX_NAME_CHARS} characters"
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field}: must not contain control characters"
        )));
    }
    Ok(trimmed.to_owned())
}

/// A plausible e-mail address, lower-cased so look-ups are case-insensitive.
pub fn email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_control() || c.is_whitespace())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if !valid {
        return Err(ApiError::invalid("email: not a valid e-mail address"));
    }
    Ok(email)
}

pub fn password(raw: &str) -> Result<(), ApiError> {
    if raw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!(
            "password: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if raw.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid(format!(
            "password: at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if raw.contains('\0') {
        return Err(ApiError::invalid("password: must not contain NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("name", "  Acme  ").expect("valid"), "Acme");
        assert!(name("name", "   ").is_err());
        assert!(name("name", "a\0b").is_err());
        assert!(name("name", &"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(name("name", &"é".repeat(MAX_NAME_CHARS)).is_ok());
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            email(" Ada@Example.COM ").expect("valid"),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "a b@example.com",
            "a@b@c",
            "ada@.com",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_have_bounds() {
        assert!(password("short").is_err());
        assert!(password("long enough").is_ok());
        assert!(password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
