//! Every HTTP error is `{"error": {"code": "...", "message": "one sentence"}}`, from one table that
//! also gives the gRPC code the same problem has on the gRPC side.

use crate::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The problems an HTTP caller can meet: (code, HTTP status, gRPC code).
const TABLE: &[(&str, StatusCode, tonic::Code)] = &[
    ("bad_request", StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
    ("unauthenticated", StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
    ("tls_required", StatusCode::BAD_REQUEST, tonic::Code::Unauthenticated),
    ("permission_denied", StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
    ("not_found", StatusCode::NOT_FOUND, tonic::Code::NotFound),
    ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED, tonic::Code::Unimplemented),
    ("conflict", StatusCode::CONFLICT, tonic::Code::AlreadyExists),
    ("failed_precondition", StatusCode::CONFLICT, tonic::Code::FailedPrecondition),
    ("unavailable", StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
    ("internal", StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
];

/// The body of every error answer, as the OpenAPI document describes it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// One of: bad_request, unauthenticated, tls_required, permission_denied, not_found,
    /// method_not_allowed, conflict, failed_precondition, unavailable, internal.
    pub code: String,
    /// One sentence naming the problem and the fix.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new("unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new("permission_denied", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new("method_not_allowed", message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new("failed_precondition", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new("unavailable", message)
    }

    pub fn tls_required() -> Self {
        Self::new("tls_required", "this coordinator serves HTTPS only; use an https:// URL")
    }

    /// A store error as the caller should see it: retryable ones are `unavailable`.
    pub fn from_store(error: StoreError) -> Self {
        let code = match &error {
            StoreError::RunNotFound { .. } => "not_found",
            StoreError::RunNameTaken { .. } => "conflict",
            StoreError::InvalidRun { .. } => "bad_request",
            StoreError::RunCancelled { .. } => "failed_precondition",
            _ if error.is_retryable() => "unavailable",
            _ => "internal",
        };
        Self::new(code, error.to_string())
    }

    /// The row of the table for this error's code.
    fn row(&self) -> (StatusCode, tonic::Code) {
        TABLE
            .iter()
            .find(|(code, ..)| *code == self.code)
            .map(|(_, http, grpc)| (*http, *grpc))
            .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal))
    }

    pub fn status(&self) -> StatusCode {
        self.row().0
    }

    pub fn grpc_code(&self) -> tonic::Code {
        self.row().1
    }
}

/// A gRPC status from the shared checks (tokens, roles) as an HTTP error.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let code = TABLE.iter().find(|(_, _, grpc)| *grpc == status.code()).map_or("internal", |(code, ..)| *code);
        Self::new(code, status.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        (status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_maps_to_one_http_status_and_grpc_code() {
        let refused: ApiError = tonic::Status::permission_denied("the coordinator refused a worker token").into();
        assert_eq!((refused.code, refused.status(), refused.grpc_code()), ("permission_denied", StatusCode::FORBIDDEN, tonic::Code::PermissionDenied));
        let missing: ApiError = tonic::Status::unauthenticated("no token").into();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        let unknown = ApiError::from_store(StoreError::RunNotFound { run: acufarm_core::RunId(9) });
        assert_eq!((unknown.code, unknown.status()), ("not_found", StatusCode::NOT_FOUND));
        let codes: std::collections::HashSet<_> = TABLE.iter().map(|(code, ..)| code).collect();
        assert_eq!(codes.len(), TABLE.len(), "each code once");
    }
}
