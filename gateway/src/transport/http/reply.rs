//! Errors as HTTP replies: a status and a JSON body `{"error": "...", ...}` that says what
//! was wrong and what to do.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::ingest::ErrorKind;
use crate::intake::IntakeError;
use crate::pipeline::SubmitError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<Duration>,
    /// `WWW-Authenticate` for 401s.
    pub challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, body: json!({ "error": message.into() }), retry_after: None, challenge: false }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError { challenge: true, ..ApiError::new(StatusCode::UNAUTHORIZED, message) }
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> ApiError {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> ApiError {
        let message = error.to_string();
        match error {
            SubmitError::UnknownDataset { known, .. } => {
                ApiError { body: json!({ "error": message, "datasets": known }), ..ApiError::not_found("") }
            }
            SubmitError::Source(e) => {
                let status = match e.kind() {
                    ErrorKind::NotFound => StatusCode::NOT_FOUND,
                    ErrorKind::Refused => StatusCode::CONFLICT,
                    _ => StatusCode::BAD_REQUEST,
                };
                ApiError::new(status, message)
            }
            SubmitError::Rejected { source_name, rejections, quarantine_id } => ApiError {
                body: json!({
                    "error": message,
                    "source": source_name,
                    "accepted": 0,
                    "rejected": rejections,
                    "quarantine_id": quarantine_id,
                }),
                ..ApiError::bad_request("")
            },
            SubmitError::Busy { retry_after, .. } => ApiError::unavailable(message, retry_after),
            SubmitError::Unavailable(_) => ApiError::unavailable(message, Duration::from_secs(5)),
            // Not retryable blindly: the payload may be stored already.
            SubmitError::Uncertain(_) => ApiError::internal(message),
        }
    }
}

impl From<IntakeError> for ApiError {
    fn from(error: IntakeError) -> ApiError {
        match error {
            IntakeError::NoRoute(message) => ApiError::not_found(message),
            IntakeError::CredentialsRequired(message) => ApiError::unauthorized(format!(
                "{message}: send `Authorization: Bearer <token>` or HTTP Basic credentials"
            )),
            IntakeError::Forbidden(message) => ApiError::forbidden(message),
            IntakeError::UnsupportedFormat(message) => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
            }
            IntakeError::Submit(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(after) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"odf-gateway\", Basic realm=\"odf-gateway\""),
            );
        }
        response
    }
}
