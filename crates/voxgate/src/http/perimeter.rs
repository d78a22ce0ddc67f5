//! The perimeter middleware, outermost in every listener's stack, so errors, 404s, 429s and
//! timeouts get it too:
//!
//! - **Security headers** on every response: `X-Content-Type-Options: nosniff`, a
//!   `Content-Security-Policy` that allows nothing (an API serves no documents),
//!   `Referrer-Policy: no-referrer`, a `Permissions-Policy` that turns features off,
//!   `Cache-Control: no-store` unless a handler chose otherwise, `charset=utf-8` on text
//!   types, HSTS (one year, subdomains) when the listener speaks TLS, and no `Server` banner.
//! - **TRACE and CONNECT** are refused with 405 before routing (cross-site tracing).
//! - **CORS** from an exact allow-list (`server.cors.allowed_origins`): preflights are
//!   answered here (method and headers checked against what the API accepts; anything else is
//!   refused with 403 and no CORS headers), actual requests from an allowed origin get it
//!   echoed back (never `*`, never `Allow-Credentials`: keys travel in `Authorization`, which
//!   a browser sends only when the page's own code adds it). `Vary: Origin` always. Keys that
//!   carry their own origins are checked in `access` (a browser key works only from its own
//!   site).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::error::Code;

/// What the perimeter needs to know about its listener.
#[derive(Debug, Clone)]
pub struct Perimeter {
    /// Exact origins allowed to call cross-origin.
    pub origins: Arc<Vec<String>>,
    pub max_age_secs: u64,
    /// The listener speaks TLS: send HSTS.
    pub tls: bool,
}

/// Methods a preflight may ask for.
const CORS_METHODS: &str = "GET, POST, DELETE";
/// Request headers a preflight may ask for (lowercase).
const CORS_HEADERS: [&str; 5] = [
    "authorization",
    "content-type",
    "x-request-id",
    "openai-organization",
    "openai-project",
];
/// Response headers a page's script may read.
const EXPOSED: &str = "x-request-id, x-voxgate-engine, x-voxgate-cache, x-voxgate-audio, \
    retry-after, \
    x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, \
    x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens";

pub async fn enforce(State(perimeter): State<Perimeter>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allowed = origin
        .as_deref()
        .filter(|o| perimeter.origins.iter().any(|a| a == o))
        .map(str::to_owned);
    let mut response = if request.method() == Method::TRACE || request.method() == Method::CONNECT {
        ApiError::new(Code::MethodNotAllowed).into_response()
    } else if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        preflight(&perimeter, allowed.as_deref(), request.headers())
    } else {
        let mut response = next.run(request).await;
        if let Some(origin) = &allowed
            && let Ok(value) = HeaderValue::from_str(origin)
        {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED),
            );
        }
        response
    };
    secure(response.headers_mut(), perimeter.tls);
    response
}

/// Answers a CORS preflight: 204 with the grant for an allowed origin asking for an allowed
/// method and headers, 403 (no CORS headers, so the browser refuses) otherwise.
fn preflight(perimeter: &Perimeter, allowed: Option<&str>, headers: &HeaderMap) -> Response {
    let method_ok = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| ["GET", "POST", "DELETE"].contains(&m));
    let headers_ok = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .all(|v| {
            v.to_str().is_ok_and(|list| {
                list.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .all(|h| CORS_HEADERS.contains(&h.as_str()))
            })
        });
    let (Some(origin), true, true) = (allowed, method_ok, headers_ok) else {
        return ApiError::new(Code::CorsRefused)
            .with_message("This origin, method or header is not allowed for cross-origin requests.")
            .into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "authorization, content-type, x-request-id, openai-organization, openai-project",
        ),
    );
    if let Ok(value) = HeaderValue::from_str(&perimeter.max_age_secs.to_string()) {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, value);
    }
    response
}

/// The headers every response carries.
fn secure(h: &mut HeaderMap, tls: bool) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A page's own policy (the console's) is kept; everything else loads nothing.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key("permissions-policy") {
        h.insert(
            "permissions-policy",
            HeaderValue::from_static(
                "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
            ),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    h.remove(header::SERVER);
    // Text without a charset is read as whatever the client guesses: say UTF-8.
    if let Some(value) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
        && value.starts_with("text/")
        && !value.contains("charset")
        && let Ok(with) = HeaderValue::from_str(&format!("{value}; charset=utf-8"))
    {
        h.insert(header::CONTENT_TYPE, with);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_types_get_a_charset_and_binary_ones_do_not() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        secure(&mut h, false);
        assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert!(!h.contains_key(header::STRICT_TRANSPORT_SECURITY));
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        );
        secure(&mut h, true);
        assert_eq!(h[header::CONTENT_TYPE], "audio/mpeg");
        assert_eq!(
            h[header::CACHE_CONTROL],
            "public, max-age=60",
            "a handler's choice stays"
        );
        assert!(
            h[header::STRICT_TRANSPORT_SECURITY]
                .to_str()
                .is_ok_and(|v| v.contains("max-age=31536000") && v.contains("includeSubDomains"))
        );
    }
}
