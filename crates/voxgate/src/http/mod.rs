//! The HTTP front door. Only this module knows HTTP: routes, JSON shapes, headers, SSE
//! framing and the error envelope; nothing outside it imports axum, hyper or tower (the
//! `tidy` test checks). Each resource module owns its router and calls one service
//! function: handlers parse and frame, the services meter.
//!
//! - Middleware: [`perimeter`] (security headers, TRACE/CONNECT, CORS), the request span,
//!   catch-panic, the response-head timeout, [`access`] (the access tables, authentication,
//!   scopes, browser origins, rate limits); [`client_ip`] (trusted proxies).
//! - Extractors: [`json`] (`ApiJson`), [`multipart`] (uploads, spooled while read).
//! - Resources: `speech`, `transcriptions`, `models`, `voices`, `me`, `health`, `openapi`,
//!   and [`admin`] (the admin listener).
//! - [`error`]: the one HTTP error type and its envelope.
//! - [`server`]: the listeners (TCP, [`tls`], the Unix [`socket`]), connection limits,
//!   graceful shutdown.

pub mod access;
pub mod admin;
mod browser;
mod client_ip;
pub mod console;
pub mod error;
mod health;
mod json;
mod me;
pub(crate) mod measure;
mod models;
mod multipart;
mod openapi;
mod perimeter;
mod realtime;
pub mod server;
mod socket;
mod speech;
mod tls;
mod transcript;
mod transcriptions;
mod voices;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::{Level, Span};

use crate::error::Code;
use crate::observe::Metrics;
use crate::service::Services;

pub use error::ApiError;
pub use json::ApiJson;

/// What every handler can reach: the application's services.
pub type AppState = Arc<Services>;

/// The request-id header set on every request and response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A router that records what it registers, so the authorization-matrix test can compare
/// the routes really served with the access tables.
pub struct Routes {
    router: Router<AppState>,
    registered: Vec<(Method, &'static str)>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            router: Router::new(),
            registered: Vec::new(),
        }
    }
}

impl Routes {
    /// Serves `handler` for `method` on `path` (the method router is built from `method`, so
    /// what is recorded is what is served).
    pub fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        let filter = axum::routing::MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("no method filter for {method}"));
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.registered.push((method, path));
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.registered.extend(other.registered);
        self
    }

    /// The routes as a plain router (no middleware, no state yet).
    pub fn into_router(self) -> Router<AppState> {
        self.router
    }

    /// Every (method, path) registered.
    pub fn registered(&self) -> &[(Method, &'static str)] {
        &self.registered
    }
}

/// The public listener's routes (without middleware).
pub fn public_routes(state: &AppState) -> Routes {
    speech::routes()
        .merge(transcriptions::routes())
        .merge(models::routes())
        .merge(voices::routes())
        .merge(realtime::routes())
        .merge(me::routes())
        .merge(health::routes())
        .merge(openapi::routes(state))
}

/// Every route the public listener serves, with the middleware stack.
pub fn router(state: AppState) -> Router {
    let mut routes = public_routes(&state);
    let mut tables = vec![access::PUBLIC_ROUTES];
    if state.config.console.playground {
        routes = routes.merge(console::playground_routes());
        tables.push(console::PLAYGROUND_ROUTES);
    }
    let tls = state.config.server.tls.enabled;
    listener(routes, tables, tls, state)
}

/// The admin listener's routes, with the same middleware stack and its own access table.
pub fn admin_router(state: AppState) -> Router {
    let mut routes = admin::routes();
    let mut tables = vec![access::ADMIN_ROUTES];
    if state.config.console.enabled {
        routes = routes.merge(console::console_routes());
        tables.push(console::CONSOLE_ROUTES);
    }
    let tls = state.config.admin.tls.enabled;
    listener(routes, tables, tls, state)
}

/// One listener's router: its routes behind its access table, the 404/405 fallbacks, and
/// the common middleware stack.
fn listener(
    routes: Routes,
    tables: Vec<&'static [access::Route]>,
    tls: bool,
    state: AppState,
) -> Router {
    let request_timeout = state.config.server.request_timeout();
    let perimeter = perimeter::Perimeter {
        origins: Arc::new(state.config.server.cors.allowed_origins.clone()),
        max_age_secs: state.config.server.cors.max_age_secs,
        tls,
    };
    let guard = access::Guard {
        tables,
        tls,
        services: Arc::clone(&state),
        trusted_proxies: Arc::new(state.config.server.trusted_proxies()),
    };
    let metrics = Arc::clone(&state.metrics);
    let routes = routes
        .router
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn_with_state(guard, access::enforce));
    with_middleware(routes, request_timeout, metrics).layer(middleware::from_fn_with_state(
        perimeter,
        perimeter::enforce,
    ))
}

/// The stack every route runs in, outermost first: request counting, request id, trace
/// span, catch-panic, response-head timeout.
pub fn with_middleware(routes: Router, request_timeout: Duration, metrics: Arc<Metrics>) -> Router {
    routes.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn_with_state(metrics, count))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                    .on_response(DefaultOnResponse::new().level(Level::INFO))
                    // Every response is logged above with its status; a 5xx's cause once,
                    // where it is known (`ApiError`). A 503 with Retry-After is a refusal,
                    // not an error: no ERROR line per request during an outage.
                    .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::internal(std::io::Error::other("handler panicked")).into_response()
            }))
            .layer(middleware::from_fn_with_state(request_timeout, timeout)),
    )
}

/// Counts requests by matched route and status and times their response heads (labels are
/// route templates, never raw paths).
async fn count(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    // A matched path is an `Arc<str>` inside: cloning it copies no text.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics
        .http
        .observe(route, response.status().as_u16(), started.elapsed());
    response
}

/// Bounds the time to a response head. Streamed bodies have their own deadline.
async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(Code::Timeout).into_response(),
    }
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    // Echo the path only (never the query, which may hold secrets), and only a bounded prefix.
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(Code::UnknownUrl).with_message(format!("Invalid URL ({method} {path})."))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(Code::MethodNotAllowed)
}

/// The span every request runs in: request id, method and matched route, never the raw URI
/// (its query may hold a secret), headers or body.
pub fn request_span<B>(request: &axum::http::Request<B>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        route = %route,
        keyid = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;

    async fn call(router: Router, path: &str) -> (u16, serde_json::Value, Option<String>) {
        let request = Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = tower::ServiceExt::oneshot(router, request)
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        let id = response
            .headers()
            .get(REQUEST_ID)
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, serde_json::from_slice(&body).expect("json"), id)
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_500_envelope() {
        async fn boom() -> &'static str {
            panic!("secret detail")
        }
        let routes = Router::new().route("/boom", get(boom));
        let (status, body, id) = call(
            with_middleware(routes, Duration::from_secs(5), Arc::new(Metrics::new())),
            "/boom",
        )
        .await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["type"], "server_error");
        assert!(!body.to_string().contains("secret"));
        assert!(id.is_some(), "request id on error responses too");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_becomes_a_504_envelope() {
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "late"
        }
        let routes = Router::new().route("/slow", get(slow));
        let (status, body, _) = call(
            with_middleware(routes, Duration::from_secs(2), Arc::new(Metrics::new())),
            "/slow",
        )
        .await;
        assert_eq!(status, 504);
        assert_eq!(body["error"]["code"], "timeout");
    }
}
