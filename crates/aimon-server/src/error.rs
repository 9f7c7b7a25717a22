//! Errors as the server answers them: `{ "error": { "kind", "message", "field" } }` with the
//! HTTP status of each kind (docs/server.md, "Errors").

use std::time::Duration;

use aimon::ErrorKind;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// How long a client should wait before retrying an answer of 503 (a full ingest queue, a
/// server stopping, a store that is unavailable).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// An error answer. Built from an [`aimon::Error`] (its kind picks the status) or directly for
/// what only the server checks (authentication, sizes, content types).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    field: Option<String>,
}

/// The JSON body of an error.
#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// An answer of `status` whose `kind` names the problem in snake case.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            field: None,
        }
    }

    /// 400: the request is malformed; `field` names the parameter or part at fault.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message).field(field)
    }

    /// 401: no token, or one the server does not know.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403: a known token without the scope the route needs.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413: the body, or what it decompresses to, is larger than the server accepts.
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 415: a content type or encoding the route does not read.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 503 with `Retry-After`: the ingest queue is full or the server is shutting down.
    pub fn busy(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// Names the field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The status this error answers with.
    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message (for tests).
    #[cfg(test)]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<aimon::Error> for ApiError {
    /// The status of each [`ErrorKind`]; the message is aimon's, which never holds a secret
    /// (drivers redact URLs before they build one).
    fn from(error: aimon::Error) -> Self {
        let (status, kind) = match error.kind() {
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Unsupported => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            ErrorKind::ConfigInvalid => (StatusCode::INTERNAL_SERVER_ERROR, "config_invalid"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Corrupted => (StatusCode::INTERNAL_SERVER_ERROR, "corrupted"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "backend"),
        };
        ApiError::new(status, kind, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                kind: self.kind,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER.as_secs()),
            );
        }
        response
    }
}

/// `Result` with [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status() {
        let cases = [
            (ErrorKind::InvalidInput, 400),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Unsupported, 501),
            (ErrorKind::Conflict, 409),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Timeout, 503),
            (ErrorKind::Corrupted, 500),
            (ErrorKind::Backend, 500),
            (ErrorKind::ConfigInvalid, 500),
        ];
        for (kind, status) in cases {
            let error = ApiError::from(aimon::Error::new(kind, "m"));
            assert_eq!(error.status().as_u16(), status, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn the_body_is_json_and_busy_answers_say_when_to_retry() {
        let response = ApiError::busy("queue full").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["error"]["kind"], "unavailable");
        assert_eq!(json["error"]["message"], "queue full");
        assert!(json["error"].get("field").is_none());
        let response = ApiError::invalid("limit", "not a number").into_response();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["error"]["field"], "limit");
    }
}
