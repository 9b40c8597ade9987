//! The one error every API of the node answers with: `{"error":{"code","message"}}`, the
//! status that [`ErrorCode`] maps to, and `Retry-After` when the client should come back.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_proto::ErrorCode;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A 400: the client's request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// A 503 while the node has no configuration yet.
    pub fn no_configuration() -> Self {
        Self::new(ErrorCode::Unavailable, "no configuration yet").retry_after(5)
    }

    /// The same error, telling the client when to retry (`Retry-After`, in seconds).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        // A client's mistake is the client's to read; the node's own failures are logged
        // here, once, whichever handler produced them.
        if status.is_server_error() {
            tracing::error!(code = self.code.as_str(), message = %self.message, "request failed");
        }
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_have_the_shared_shape_and_status() {
        let response = ApiError::new(ErrorCode::RateLimited, "slow down")
            .retry_after(7)
            .into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            body,
            json!({"error": {"code": "rate_limited", "message": "slow down"}})
        );
    }
}
