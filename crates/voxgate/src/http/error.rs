//! The HTTP error: every refusal or failure leaves as a status and OpenAI's envelope
//! `{"error":{"message","type","param","code"}}` here, and nowhere else. Status, type and
//! code come from the one table ([`crate::error::Code`]); a service's error becomes an
//! [`ApiError`] through one `From`.

use std::borrow::Cow;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{BoxError, Code, Error};

/// A refusal or failure on its way to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    param: Option<Cow<'static, str>>,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
    /// For the log only (5xx); never shown.
    source: Option<BoxError>,
}

impl ApiError {
    /// The table's row with its own message.
    pub fn new(code: Code) -> Self {
        Self {
            code,
            param: None,
            message: code.spec().message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// A refusal about one parameter.
    pub fn invalid(
        param: impl Into<Cow<'static, str>>,
        code: Code,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            param: Some(param.into()),
            message: message.into(),
            ..Self::new(code)
        }
    }

    /// The row with a better message.
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
    }

    /// A limit: retry after `retry_after`.
    pub fn limited(code: Code, retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(code)
        }
    }

    /// Wraps an unexpected failure (logged, never shown); a store outage in its chain
    /// answers 503 with Retry-After instead (see [`crate::error::outage`]).
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        if let Some(code) = crate::error::outage(&err) {
            return Self::limited(code, crate::error::outage_wait(code));
        }
        Self {
            source: Some(Box::new(err)),
            ..Self::new(Code::Internal)
        }
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The one mapping from a service's error to the HTTP edge.
impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let code = err.code();
        let param = err.param().map(|p| Cow::Owned(p.to_owned()));
        let retry_after = err.retry_after();
        let message = Cow::Owned(err.to_string());
        let source: Option<BoxError> = match err {
            Error::Upstream(e) => Some(Box::new(e)),
            Error::Internal(e) => Some(e),
            _ => None,
        };
        Self {
            code,
            param,
            message,
            retry_after,
            source,
        }
    }
}

impl From<voxgate_engine::EngineError> for ApiError {
    fn from(err: voxgate_engine::EngineError) -> Self {
        Error::from(err).into()
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

impl ApiError {
    /// The envelope as a client reads it.
    pub fn envelope(&self) -> ErrorEnvelope {
        let spec = self.code.spec();
        ErrorEnvelope {
            error: ErrorBody {
                message: self.message.to_string(),
                kind: spec.kind.to_owned(),
                param: self.param.as_deref().map(str::to_owned),
                code: spec.code.map(str::to_owned),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let spec = self.code.spec();
        let status = StatusCode::from_u16(spec.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() && !self.code.retry_later() {
            // Logged once, inside the request span that carries the request id. The source
            // chain may name internal detail; the client never sees it.
            tracing::error!(status = status.as_u16(), error = %self.message, source = ?self.source, "request failed");
        }
        let mut response = (status, Json(self.envelope())).into_response();
        let headers = response.headers_mut();
        if self.code == Code::QuotaExceeded {
            // The official SDKs retry every 429 unless told not to; a spent quota will not
            // come back within their retry budget.
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if self.code.retry_later() {
            // Every 429 and 503 says when to come back; rounded up, so retrying at the
            // stated second succeeds.
            let wait = self.retry_after.unwrap_or(Duration::from_secs(1));
            let secs = (wait.as_secs_f64().ceil() as u64).max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        if spec.status == 401 {
            let challenge = if self.code == Code::MissingApiKey {
                "Bearer realm=\"voxgate\""
            } else {
                "Bearer realm=\"voxgate\", error=\"invalid_token\""
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Every refusal of the table that answers 429 or 503 carries Retry-After, whatever
    /// built it; every row answers with its own status, type and code.
    #[tokio::test]
    async fn every_row_answers_as_the_table_says() {
        for &code in Code::ALL {
            let spec = code.spec();
            let response = ApiError::new(code).into_response();
            assert_eq!(response.status().as_u16(), spec.status, "{code:?}");
            let retry = response.headers().get(header::RETRY_AFTER);
            assert_eq!(
                retry.is_some(),
                matches!(spec.status, 429 | 503),
                "{code:?}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("body");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(json["error"]["type"], spec.kind, "{code:?}");
            assert_eq!(json["error"]["code"].as_str(), spec.code, "{code:?}");
        }
        let response =
            ApiError::limited(Code::Overloaded, Duration::from_millis(2500)).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3", "rounded up");
    }
}
