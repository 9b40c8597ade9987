//! One error-code enum for every API Sluice serves: each code maps to exactly one HTTP status
//! and one gRPC code, so a domain error classifies itself once and both transports agree.

use serde::Serialize;

/// The machine-readable class of an error, as it appears in `{"error":{"code":…}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: bad JSON syntax, a bad query string, a bad cursor.
    BadRequest,
    /// No credentials, or credentials that are wrong, expired or revoked.
    Unauthorized,
    /// Authenticated, but the principal's role does not allow the action.
    Forbidden,
    /// The resource does not exist, or the caller may not know that it does.
    NotFound,
    /// The HTTP method is not served on this path.
    MethodNotAllowed,
    /// The request conflicts with the current state (a duplicate name, an existing member).
    Conflict,
    /// The request body is larger than the limit.
    PayloadTooLarge,
    /// The request body is not JSON.
    UnsupportedMediaType,
    /// The request is well-formed but its content is invalid (unknown field, bad value).
    ValidationFailed,
    /// Too many requests; retry after the time the response names.
    RateLimited,
    /// The request is valid but needs more than a limit allows (a query's time, rows or
    /// memory).
    LimitExceeded,
    /// A dependency (the database) is unavailable; retrying later may succeed.
    Unavailable,
    /// A bug or an unexpected failure on the server's side.
    Internal,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ValidationFailed,
        ErrorCode::RateLimited,
        ErrorCode::LimitExceeded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as it is written in JSON error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ErrorCode::BadRequest => S::BAD_REQUEST,
            ErrorCode::Unauthorized => S::UNAUTHORIZED,
            ErrorCode::Forbidden => S::FORBIDDEN,
            ErrorCode::NotFound => S::NOT_FOUND,
            ErrorCode::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => S::CONFLICT,
            ErrorCode::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => S::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ValidationFailed => S::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => S::TOO_MANY_REQUESTS,
            ErrorCode::LimitExceeded => S::UNPROCESSABLE_ENTITY,
            ErrorCode::Unavailable => S::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code this code is answered with on the config-sync stream.
    #[cfg(feature = "grpc")]
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            ErrorCode::BadRequest | ErrorCode::ValidationFailed => C::InvalidArgument,
            ErrorCode::Unauthorized => C::Unauthenticated,
            ErrorCode::Forbidden => C::PermissionDenied,
            ErrorCode::NotFound => C::NotFound,
            ErrorCode::MethodNotAllowed | ErrorCode::UnsupportedMediaType => C::Unimplemented,
            ErrorCode::Conflict => C::AlreadyExists,
            ErrorCode::PayloadTooLarge => C::OutOfRange,
            ErrorCode::RateLimited | ErrorCode::LimitExceeded => C::ResourceExhausted,
            ErrorCode::Unavailable => C::Unavailable,
            ErrorCode::Internal => C::Internal,
        }
    }

    /// Whether the caller (not the server) is at fault: such errors are never logged as
    /// server failures.
    pub fn is_client_error(self) -> bool {
        self.http_status().is_client_error()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_display_and_as_str_agree() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).expect("serialize");
            assert_eq!(json, serde_json::Value::from(code.as_str()));
            assert_eq!(code.to_string(), code.as_str());
        }
    }

    #[test]
    fn only_unavailable_and_internal_are_server_errors() {
        for code in ErrorCode::ALL {
            let server = matches!(code, ErrorCode::Unavailable | ErrorCode::Internal);
            assert_eq!(code.http_status().is_server_error(), server, "{code}");
            assert_eq!(code.is_client_error(), !server, "{code}");
            #[cfg(feature = "grpc")]
            assert_ne!(code.grpc_code(), tonic::Code::Ok, "{code}");
        }
    }
}
