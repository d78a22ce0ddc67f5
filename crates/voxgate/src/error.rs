//! The one HTTP-facing error type: every failure becomes a status and an OpenAI error
//! envelope `{"error":{"message","type","param","code"}}` here, and nowhere else.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use voxgate_engine::{EngineError, ErrorClass};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (syntax error, truncated, trailing data).
    #[error("We could not parse the JSON body of your request.")]
    InvalidJson,
    /// A parameter is missing, unknown, duplicated, of the wrong type or out of range.
    #[error("{message}")]
    InvalidParameter {
        param: String,
        code: &'static str,
        message: String,
    },
    /// The request names a model that does not exist.
    #[error("The model `{0}` does not exist.")]
    ModelNotFound(String),
    /// The request names a voice the model does not have.
    #[error("The voice `{0}` is not available for this model.")]
    VoiceNotFound(String),
    /// A response format this build cannot produce.
    #[error(
        "The response format `{requested}` is not available in this build; available formats: {available}."
    )]
    UnsupportedFormat {
        requested: &'static str,
        available: String,
    },
    /// Body is not `application/json` (or another expected type).
    #[error("Content-Type must be {expected}.")]
    UnsupportedMediaType { expected: &'static str },
    /// Body over the limit.
    #[error("The request body is larger than {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    /// An uploaded file over the tier's cap (counted while reading).
    #[error("The uploaded file is larger than {limit} bytes.")]
    FileTooLarge { param: &'static str, limit: u64 },
    /// An upload that is not acceptable audio (empty, undecodable, too long or short...).
    #[error("{message}")]
    InvalidFile {
        param: &'static str,
        code: &'static str,
        message: String,
    },
    /// An upload whose content is not an allowed kind of audio (an executable named `.wav`,
    /// a polyglot, a mismatch between extension and content).
    #[error("{message}")]
    UnsupportedFile {
        param: &'static str,
        code: &'static str,
        message: String,
    },
    /// An object that does not exist for this caller (another account's objects included).
    #[error("{message}")]
    NotFound {
        param: Option<&'static str>,
        code: &'static str,
        message: String,
    },
    /// The engine a model needs is not available on this server (e.g. its model files are
    /// missing or fail their checksums).
    #[error("The engine for this model is not available on this server.")]
    EngineUnavailable,
    /// No such route.
    #[error("Invalid URL ({method} {path}).")]
    UnknownRoute { method: String, path: String },
    /// The route exists but not for this method.
    #[error("Method not allowed.")]
    MethodNotAllowed,
    /// No valid credentials (missing, malformed, unknown, wrong, expired, revoked…).
    #[error("{message}")]
    Unauthorized {
        code: &'static str,
        message: &'static str,
    },
    /// Valid credentials that do not allow this (scope, tier-gated model or voice).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// Over a rate limit (or blocked as a repeat violator).
    #[error("Rate limit reached; retry after the time in Retry-After.")]
    RateLimited { retry_after: Duration },
    /// A quota for the current period is used up; retrying before it resets cannot help.
    #[error("You exceeded your quota for this period; it resets after the time in Retry-After.")]
    QuotaExceeded { retry_after: Duration },
    /// The key or account has its maximum of requests in flight.
    #[error("Too many concurrent requests for this key or account; wait for one to finish.")]
    TooManyConcurrent,
    /// Too many failed authentications from this source.
    #[error("Too many failed authentication attempts; retry later.")]
    AuthThrottled { retry_after: Duration },
    /// The gateway is saturated.
    #[error("The server is overloaded; retry later.")]
    Overloaded { retry_after: Duration },
    /// The request or its engine took too long.
    #[error("The request timed out.")]
    Timeout,
    /// A remote provider failed (its own text is never shown).
    #[error("The upstream speech provider failed.")]
    Upstream(#[source] EngineError),
    /// Anything else. Logged once; the client sees a generic message.
    #[error("The server had an error while processing your request.")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The kinds in the status/type/code table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidJson,
    InvalidParameter,
    ModelNotFound,
    VoiceNotFound,
    UnsupportedFormat,
    UnsupportedMediaType,
    PayloadTooLarge,
    FileTooLarge,
    InvalidFile,
    UnsupportedFile,
    NotFound,
    EngineUnavailable,
    UnknownRoute,
    MethodNotAllowed,
    Unauthorized,
    Forbidden,
    AuthThrottled,
    RateLimited,
    TooManyConcurrent,
    QuotaExceeded,
    Overloaded,
    Timeout,
    Upstream,
    Internal,
}

impl ErrorKind {
    /// All kinds, for the table test.
    pub const ALL: [ErrorKind; 24] = [
        ErrorKind::InvalidJson,
        ErrorKind::InvalidParameter,
        ErrorKind::ModelNotFound,
        ErrorKind::VoiceNotFound,
        ErrorKind::UnsupportedFormat,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::PayloadTooLarge,
        ErrorKind::FileTooLarge,
        ErrorKind::InvalidFile,
        ErrorKind::UnsupportedFile,
        ErrorKind::NotFound,
        ErrorKind::EngineUnavailable,
        ErrorKind::UnknownRoute,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::AuthThrottled,
        ErrorKind::RateLimited,
        ErrorKind::TooManyConcurrent,
        ErrorKind::QuotaExceeded,
        ErrorKind::Overloaded,
        ErrorKind::Timeout,
        ErrorKind::Upstream,
        ErrorKind::Internal,
    ];

    /// The table: status, OpenAI `type`, default `code`.
    pub fn spec(self) -> (StatusCode, &'static str, Option<&'static str>) {
        use ErrorKind::*;
        const INVALID: &str = "invalid_request_error";
        match self {
            InvalidJson => (StatusCode::BAD_REQUEST, INVALID, Some("invalid_json")),
            InvalidParameter => (StatusCode::BAD_REQUEST, INVALID, Some("invalid_value")),
            ModelNotFound => (StatusCode::NOT_FOUND, INVALID, Some("model_not_found")),
            VoiceNotFound => (StatusCode::BAD_REQUEST, INVALID, Some("voice_not_found")),
            UnsupportedFormat => (
                StatusCode::BAD_REQUEST,
                INVALID,
                Some("unsupported_response_format"),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID,
                Some("unsupported_media_type"),
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID,
                Some("payload_too_large"),
            ),
            FileTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID,
                Some("file_too_large"),
            ),
            InvalidFile => (StatusCode::BAD_REQUEST, INVALID, Some("invalid_audio")),
            UnsupportedFile => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID,
                Some("unsupported_media_type"),
            ),
            NotFound => (StatusCode::NOT_FOUND, INVALID, Some("not_found")),
            EngineUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("engine_unavailable"),
            ),
            UnknownRoute => (StatusCode::NOT_FOUND, INVALID, Some("unknown_url")),
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                Some("invalid_api_key"),
            ),
            Forbidden => (
                StatusCode::FORBIDDEN,
                "permission_error",
                Some("insufficient_scope"),
            ),
            AuthThrottled => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("too_many_failed_authentications"),
            ),
            RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            TooManyConcurrent => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("too_many_concurrent_requests"),
            ),
            QuotaExceeded => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                Some("quota_exceeded"),
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                INVALID,
                Some("method_not_allowed"),
            ),
            Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("overloaded"),
            ),
            Timeout => (StatusCode::GATEWAY_TIMEOUT, "server_error", Some("timeout")),
            Upstream => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                Some("upstream_error"),
            ),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        }
    }
}

impl ApiError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::InvalidJson => ErrorKind::InvalidJson,
            ApiError::InvalidParameter { .. } => ErrorKind::InvalidParameter,
            ApiError::ModelNotFound(_) => ErrorKind::ModelNotFound,
            ApiError::VoiceNotFound(_) => ErrorKind::VoiceNotFound,
            ApiError::UnsupportedFormat { .. } => ErrorKind::UnsupportedFormat,
            ApiError::UnsupportedMediaType { .. } => ErrorKind::UnsupportedMediaType,
            ApiError::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            ApiError::FileTooLarge { .. } => ErrorKind::FileTooLarge,
            ApiError::InvalidFile { .. } => ErrorKind::InvalidFile,
            ApiError::UnsupportedFile { .. } => ErrorKind::UnsupportedFile,
            ApiError::NotFound { .. } => ErrorKind::NotFound,
            ApiError::EngineUnavailable => ErrorKind::EngineUnavailable,
            ApiError::UnknownRoute { .. } => ErrorKind::UnknownRoute,
            ApiError::MethodNotAllowed => ErrorKind::MethodNotAllowed,
            ApiError::Unauthorized { .. } => ErrorKind::Unauthorized,
            ApiError::Forbidden { .. } => ErrorKind::Forbidden,
            ApiError::AuthThrottled { .. } => ErrorKind::AuthThrottled,
            ApiError::RateLimited { .. } => ErrorKind::RateLimited,
            ApiError::TooManyConcurrent => ErrorKind::TooManyConcurrent,
            ApiError::QuotaExceeded { .. } => ErrorKind::QuotaExceeded,
            ApiError::Overloaded { .. } => ErrorKind::Overloaded,
            ApiError::Timeout => ErrorKind::Timeout,
            ApiError::Upstream(_) => ErrorKind::Upstream,
            ApiError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// A 400 for one parameter.
    pub fn invalid(
        param: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError::InvalidParameter {
            param: param.into(),
            code,
            message: message.into(),
        }
    }

    /// Wraps an unexpected failure.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(err))
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidParameter { param, .. } => Some(param),
            ApiError::ModelNotFound(_) => Some("model"),
            ApiError::VoiceNotFound(_) => Some("voice"),
            ApiError::UnsupportedFormat { .. } => Some("response_format"),
            ApiError::FileTooLarge { param, .. }
            | ApiError::InvalidFile { param, .. }
            | ApiError::UnsupportedFile { param, .. } => Some(param),
            ApiError::NotFound { param, .. } => *param,
            _ => None,
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidParameter { code, .. }
            | ApiError::Unauthorized { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::InvalidFile { code, .. }
            | ApiError::UnsupportedFile { code, .. }
            | ApiError::NotFound { code, .. } => Some(code),
            other => other.kind().spec().2,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err.class() {
            ErrorClass::Client => match err {
                EngineError::UnknownVoice => ApiError::invalid(
                    "voice",
                    "voice_not_found",
                    "The voice is not available for this model.",
                ),
                _ => ApiError::invalid(
                    "input",
                    "unsupported_input",
                    "The engine cannot synthesize this input.",
                ),
            },
            ErrorClass::Overload => {
                let retry_after = match err {
                    EngineError::Overloaded { retry_after } => retry_after,
                    _ => None,
                };
                ApiError::Overloaded {
                    retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                }
            }
            ErrorClass::Timeout => ApiError::Timeout,
            ErrorClass::Unavailable => {
                tracing::error!(error = %err, "engine unavailable");
                ApiError::EngineUnavailable
            }
            ErrorClass::Upstream => ApiError::Upstream(err),
            ErrorClass::Internal => ApiError::Internal(Box::new(err)),
        }
    }
}

/// The OpenAI error envelope.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, _) = self.kind().spec();
        if status.is_server_error() {
            // Logged once, inside the request span that carries the request id. The source
            // chain may name internal detail; the client never sees it.
            tracing::error!(status = status.as_u16(), error = %self, source = ?std::error::Error::source(&self), "request failed");
        }
        let body = ErrorEnvelope {
            error: ErrorBody {
                message: self.to_string(),
                kind: kind.to_owned(),
                param: self.param().map(str::to_owned),
                code: self.code().map(str::to_owned),
            },
        };
        // Refusals by limit are security events too (in the request's span: route, key id).
        match self.kind() {
            ErrorKind::RateLimited => {
                crate::metrics::RATE_LIMITED.inc();
                tracing::info!(target: "voxgate::security", event = "rate_limited", "request refused by a rate limit");
            }
            ErrorKind::QuotaExceeded => {
                crate::metrics::QUOTA_EXCEEDED.inc();
                tracing::info!(target: "voxgate::security", event = "quota_exceeded", "request refused: quota spent");
            }
            ErrorKind::TooManyConcurrent | ErrorKind::Overloaded => {
                crate::metrics::CONCURRENCY_REFUSED.inc();
                tracing::info!(target: "voxgate::security", event = "concurrency_refused", "request refused by a concurrency cap");
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::QuotaExceeded { .. }) {
            // The official SDKs retry every 429 unless told not to; a spent quota will not
            // come back within their retry budget.
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        match self {
            ApiError::Overloaded { retry_after }
            | ApiError::AuthThrottled { retry_after }
            | ApiError::RateLimited { retry_after }
            | ApiError::QuotaExceeded { retry_after } => {
                // Rounded up: retrying at the stated second must succeed.
                let secs = (retry_after.as_secs_f64().ceil() as u64).max(1);
                if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            ApiError::Unauthorized { code, .. } => {
                let challenge = if code == "missing_api_key" {
                    "Bearer realm=\"voxgate\"".to_owned()
                } else {
                    "Bearer realm=\"voxgate\", error=\"invalid_token\"".to_owned()
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the whole table: changing a status, type or code is a deliberate act.
    #[test]
    fn the_error_table() {
        use ErrorKind::*;
        let expected = [
            (
                InvalidJson,
                400,
                "invalid_request_error",
                Some("invalid_json"),
            ),
            (
                InvalidParameter,
                400,
                "invalid_request_error",
                Some("invalid_value"),
            ),
            (
                ModelNotFound,
                404,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            (
                VoiceNotFound,
                400,
                "invalid_request_error",
                Some("voice_not_found"),
            ),
            (
                UnsupportedFormat,
                400,
                "invalid_request_error",
                Some("unsupported_response_format"),
            ),
            (
                UnsupportedMediaType,
                415,
                "invalid_request_error",
                Some("unsupported_media_type"),
            ),
            (
                PayloadTooLarge,
                413,
                "invalid_request_error",
                Some("payload_too_large"),
            ),
            (
                FileTooLarge,
                413,
                "invalid_request_error",
                Some("file_too_large"),
            ),
            (
                InvalidFile,
                400,
                "invalid_request_error",
                Some("invalid_audio"),
            ),
            (
                UnsupportedFile,
                415,
                "invalid_request_error",
                Some("unsupported_media_type"),
            ),
            (NotFound, 404, "invalid_request_error", Some("not_found")),
            (
                EngineUnavailable,
                503,
                "server_error",
                Some("engine_unavailable"),
            ),
            (
                UnknownRoute,
                404,
                "invalid_request_error",
                Some("unknown_url"),
            ),
            (
                MethodNotAllowed,
                405,
                "invalid_request_error",
                Some("method_not_allowed"),
            ),
            (
                Unauthorized,
                401,
                "authentication_error",
                Some("invalid_api_key"),
            ),
            (
                Forbidden,
                403,
                "permission_error",
                Some("insufficient_scope"),
            ),
            (
                AuthThrottled,
                429,
                "rate_limit_error",
                Some("too_many_failed_authentications"),
            ),
            (
                RateLimited,
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            (
                TooManyConcurrent,
                429,
                "rate_limit_error",
                Some("too_many_concurrent_requests"),
            ),
            (
                QuotaExceeded,
                429,
                "insufficient_quota",
                Some("quota_exceeded"),
            ),
            (Overloaded, 503, "server_error", Some("overloaded")),
            (Timeout, 504, "server_error", Some("timeout")),
            (Upstream, 502, "server_error", Some("upstream_error")),
            (Internal, 500, "server_error", None),
        ];
        assert_eq!(expected.len(), ErrorKind::ALL.len());
        for ((kind, status, ty, code), listed) in expected.into_iter().zip(ErrorKind::ALL) {
            assert_eq!(kind, listed);
            let (s, t, c) = kind.spec();
            assert_eq!((s.as_u16(), t, c), (status, ty, code), "{kind:?}");
        }
    }

    #[test]
    fn engine_errors_map_by_class() {
        let upstream =
            EngineError::Upstream(Box::new(std::io::Error::other("provider said: secret")));
        let cases = [
            (EngineError::UnknownVoice, ErrorKind::InvalidParameter),
            (
                EngineError::Overloaded { retry_after: None },
                ErrorKind::Overloaded,
            ),
            (EngineError::Timeout, ErrorKind::Timeout),
            (
                EngineError::Unavailable("model.bin fails its checksum".into()),
                ErrorKind::EngineUnavailable,
            ),
            (upstream, ErrorKind::Upstream),
            (EngineError::Internal("x".into()), ErrorKind::Internal),
        ];
        for (err, kind) in cases {
            assert_eq!(ApiError::from(err).kind(), kind);
        }
    }

    #[tokio::test]
    async fn internal_errors_say_nothing_internal() {
        let err = ApiError::internal(std::io::Error::other("/secret/path exploded"));
        let response = err.into_response();
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("secret"), "{text}");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"]["type"], "server_error");
        assert!(json["error"]["code"].is_null());
    }

    #[tokio::test]
    async fn overload_carries_retry_after() {
        let response = ApiError::Overloaded {
            retry_after: Duration::from_millis(2500),
        }
        .into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3", "rounded up");
    }
}
