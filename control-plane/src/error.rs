//! The one error type every handler returns, rendered as `{"error":{"code","message"}}`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sluice_proto::ErrorCode;
use utoipa::ToSchema;

use crate::store::StoreError;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, for 429 and 503 answers.
    pub retry_after: Option<u64>,
    /// Every problem found, for validation errors with more than one.
    pub details: Vec<sluice_proto::spec::SpecError>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            details: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(ErrorCode::RateLimited, "too many requests")
        }
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable class: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `validation_failed`, `rate_limited`, …
    #[schema(value_type = String)]
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// For an invalid pipeline spec: every problem, with its path and (when known) its line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<sluice_proto::spec::SpecError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if !self.code.is_client_error() {
            tracing::error!(code = %self.code, message = %self.message, "request failed");
        }
        let status = self.code.http_status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == ErrorCode::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e.code() {
            ErrorCode::Internal => {
                tracing::error!(error = %e, "store failure");
                ApiError::internal()
            }
            ErrorCode::Unavailable => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError {
                    retry_after: Some(5),
                    ..ApiError::new(ErrorCode::Unavailable, "database unavailable, retry later")
                }
            }
            code => ApiError::new(code, e.to_string()),
        }
    }
}

impl From<sluice_keys::KeyError> for ApiError {
    fn from(e: sluice_keys::KeyError) -> Self {
        tracing::error!(error = %e, "credential failure");
        ApiError::internal()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status.as_u16() {
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            422 => ErrorCode::ValidationFailed,
            _ => ErrorCode::BadRequest,
        };
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a body with content-type: application/json".to_owned()
            }
            JsonRejection::BytesRejection(_) if code == ErrorCode::PayloadTooLarge => {
                "request body is too large".to_owned()
            }
            other => other.body_text(),
        };
        ApiError::new(code, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.code.grpc_code(), e.message)
    }
}
