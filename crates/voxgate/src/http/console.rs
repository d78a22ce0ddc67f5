//! The web console (admin listener, `/console/`) and the playground (public listener,
//! `/playground/`, off unless `[console] playground = true`): pages embedded in the binary
//! (no CDN, no build step), and their APIs under `…/api/`, reached with a browser session,
//! never a key. The API routes call the very handlers of the admin API and of `/v1/…`: a
//! page can do nothing the API does not let its key do, under the same limits and audit.
//!
//! Pages carry a strict Content-Security-Policy (scripts and styles from this server only,
//! nothing inline, no framing); the playground's alone may use the microphone.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde::Serialize;

use super::access::{Access, Route, route};
use super::browser::{
    ClientSource, SessionId, clearing_cookie, cookie_name, cookie_path, secure_cookies,
};
use super::{ApiError, AppState, Routes};
use crate::config::Scope;
use crate::error::Code;
use crate::identity::auth::Principal;
use crate::identity::auth::web::Surface;

/// The pages' policy: everything from this server, nothing inline, no plugins, no framing,
/// forms and links back only to it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's and the playground's files: (name, content type, bytes).
const CONSOLE_FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript",
        include_str!("../../web/console/app.js"),
    ),
    (
        "common.js",
        "text/javascript",
        include_str!("../../web/common.js"),
    ),
    ("style.css", "text/css", include_str!("../../web/style.css")),
];
const CONSOLE_PAGE: &str = include_str!("../../web/console/index.html");
const PLAYGROUND_FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript",
        include_str!("../../web/playground/app.js"),
    ),
    (
        "common.js",
        "text/javascript",
        include_str!("../../web/common.js"),
    ),
    ("style.css", "text/css", include_str!("../../web/style.css")),
];
const PLAYGROUND_PAGE: &str = include_str!("../../web/playground/index.html");

const fn console(method: Method, path: &'static str, api: &'static str) -> Route {
    route(
        method,
        path,
        Access::Browser {
            surface: Surface::Console,
            scope: Scope::Admin,
            api,
        },
    )
}

const fn playground(method: Method, path: &'static str, scope: Scope, api: &'static str) -> Route {
    route(
        method,
        path,
        Access::Browser {
            surface: Surface::Playground,
            scope,
            api,
        },
    )
}

/// The console's access table (on the admin listener, beside `ADMIN_ROUTES`).
pub const CONSOLE_ROUTES: &[Route] = &[
    route(Method::GET, "/console", Access::Public),
    route(Method::GET, "/console/", Access::Public),
    route(Method::GET, "/console/{file}", Access::Public),
    route(
        Method::POST,
        "/console/api/session",
        Access::SignIn(Surface::Console),
    ),
    console(Method::GET, "/console/api/session", "/console/api/session"),
    console(
        Method::DELETE,
        "/console/api/session",
        "/console/api/session",
    ),
    console(Method::GET, "/console/api/accounts", "/admin/accounts"),
    console(Method::POST, "/console/api/accounts", "/admin/accounts"),
    console(
        Method::GET,
        "/console/api/accounts/{id}",
        "/admin/accounts/{id}",
    ),
    console(
        Method::DELETE,
        "/console/api/accounts/{id}",
        "/admin/accounts/{id}",
    ),
    console(
        Method::POST,
        "/console/api/accounts/{id}/deactivate",
        "/admin/accounts/{id}/deactivate",
    ),
    console(
        Method::GET,
        "/console/api/accounts/{id}/export",
        "/admin/accounts/{id}/export",
    ),
    console(
        Method::GET,
        "/console/api/accounts/{id}/usage",
        "/admin/accounts/{id}/usage",
    ),
    console(Method::GET, "/console/api/keys", "/admin/keys"),
    console(Method::POST, "/console/api/keys", "/admin/keys"),
    console(
        Method::POST,
        "/console/api/keys/{keyid}/revoke",
        "/admin/keys/{keyid}/revoke",
    ),
    console(
        Method::POST,
        "/console/api/keys/{keyid}/rotate",
        "/admin/keys/{keyid}/rotate",
    ),
    console(Method::GET, "/console/api/audit", "/admin/audit"),
    console(
        Method::GET,
        "/console/api/audit/verify",
        "/admin/audit/verify",
    ),
    console(Method::GET, "/console/api/metrics", "/metrics"),
    console(Method::GET, "/console/api/health", "/admin/health"),
];

/// The playground's access table (on the public listener, beside `PUBLIC_ROUTES`).
pub const PLAYGROUND_ROUTES: &[Route] = &[
    route(Method::GET, "/playground", Access::Public),
    route(Method::GET, "/playground/", Access::Public),
    route(Method::GET, "/playground/{file}", Access::Public),
    route(
        Method::POST,
        "/playground/api/session",
        Access::SignIn(Surface::Playground),
    ),
    playground(
        Method::GET,
        "/playground/api/session",
        Scope::Speech,
        "/playground/api/session",
    ),
    playground(
        Method::DELETE,
        "/playground/api/session",
        Scope::Speech,
        "/playground/api/session",
    ),
    playground(
        Method::POST,
        "/playground/api/speech",
        Scope::Speech,
        "/v1/audio/speech",
    ),
    playground(
        Method::POST,
        "/playground/api/transcriptions",
        Scope::Transcription,
        "/v1/audio/transcriptions",
    ),
    playground(
        Method::GET,
        "/playground/api/models",
        Scope::ModelsRead,
        "/v1/models",
    ),
    playground(
        Method::GET,
        "/playground/api/voices",
        Scope::ModelsRead,
        "/v1/audio/voices",
    ),
    playground(
        Method::POST,
        "/playground/api/voices",
        Scope::VoicesManage,
        "/v1/audio/voices",
    ),
    playground(
        Method::DELETE,
        "/playground/api/voices/{voice_id}",
        Scope::VoicesManage,
        "/v1/audio/voices/{voice_id}",
    ),
];

/// The console's routes (without middleware).
pub fn console_routes() -> Routes {
    Routes::default()
        .add(Method::GET, "/console", |State(_): State<AppState>| async {
            redirect("/console/")
        })
        .add(
            Method::GET,
            "/console/",
            |State(_): State<AppState>| async { page(CONSOLE_PAGE, false) },
        )
        .add(Method::GET, "/console/{file}", console_file)
        .add(Method::POST, "/console/api/session", sign_in_console)
        .add(Method::GET, "/console/api/session", session_info)
        .add(Method::DELETE, "/console/api/session", sign_out_console)
        .merge(super::admin::console_routes())
}

/// The playground's routes (without middleware).
pub fn playground_routes() -> Routes {
    Routes::default()
        .add(
            Method::GET,
            "/playground",
            |State(_): State<AppState>| async { redirect("/playground/") },
        )
        .add(
            Method::GET,
            "/playground/",
            |State(_): State<AppState>| async { page(PLAYGROUND_PAGE, true) },
        )
        .add(Method::GET, "/playground/{file}", playground_file)
        .add(Method::POST, "/playground/api/session", sign_in_playground)
        .add(Method::GET, "/playground/api/session", session_info)
        .add(
            Method::DELETE,
            "/playground/api/session",
            sign_out_playground,
        )
        .add(
            Method::POST,
            "/playground/api/speech",
            super::speech::create_speech,
        )
        .add(
            Method::POST,
            "/playground/api/transcriptions",
            super::transcriptions::create_transcription,
        )
        .add(
            Method::GET,
            "/playground/api/models",
            super::models::list_models,
        )
        .add(
            Method::GET,
            "/playground/api/voices",
            super::voices::list_voices,
        )
        .add(
            Method::POST,
            "/playground/api/voices",
            super::voices::create_voice,
        )
        .add(
            Method::DELETE,
            "/playground/api/voices/{voice_id}",
            super::voices::delete_voice,
        )
}

fn redirect(to: &'static str) -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static(to))],
    )
        .into_response()
}

/// A page with its policy (the perimeter keeps a policy a handler set).
fn page(html: &'static str, microphone: bool) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    if microphone {
        h.insert(
            "permissions-policy",
            HeaderValue::from_static(
                "camera=(), microphone=(self), geolocation=(), payment=(), usb=(), interest-cohort=()",
            ),
        );
    }
    response
}

fn file(files: &[(&str, &'static str, &'static str)], name: &str) -> Response {
    match files.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => {
            let mut response = ([(header::CONTENT_TYPE, *content_type)], *body).into_response();
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            response
        }
        None => ApiError::new(Code::UnknownUrl).into_response(),
    }
}

async fn console_file(Path(name): Path<String>) -> Response {
    file(CONSOLE_FILES, &name)
}

async fn playground_file(Path(name): Path<String>) -> Response {
    file(PLAYGROUND_FILES, &name)
}

/// What a page learns about its session (never the session id: that stays in the cookie).
#[derive(Debug, Serialize)]
struct SessionView {
    keyid: String,
    account_id: String,
    tier: String,
    scopes: Vec<&'static str>,
    /// Sent back in `X-CSRF-Token` with every change.
    csrf: String,
    expires_at: i64,
}

fn view(principal: &Principal, csrf: String, expires_at: i64) -> SessionView {
    SessionView {
        keyid: principal.keyid.clone(),
        account_id: principal.account_id.clone(),
        tier: principal.tier_name.clone(),
        scopes: principal.scopes.iter().map(|s| s.as_str()).collect(),
        csrf,
        expires_at,
    }
}

async fn sign_in(
    state: &AppState,
    surface: Surface,
    source: std::net::IpAddr,
    headers: &HeaderMap,
) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let route = match surface {
        Surface::Console => "/console/api/session",
        Surface::Playground => "/playground/api/session",
    };
    let (principal, opened) = match state
        .sign_in(
            surface,
            text(header::AUTHORIZATION),
            source,
            route,
            text(header::ORIGIN),
        )
        .await
    {
        Ok(done) => done,
        Err(refusal) => return super::access::refused(refusal),
    };
    let max_age = (opened.expires_at - crate::util::now()).max(0);
    let secure = secure_cookies(&state.config, surface);
    let cookie = format!(
        "{}={}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        cookie_name(surface, secure),
        opened.id.expose_secret(),
        cookie_path(surface),
        if secure { "; Secure" } else { "" },
    );
    let body = view(&principal, opened.csrf, opened.expires_at);
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_in_console(
    State(state): State<AppState>,
    Extension(ClientSource(source)): Extension<ClientSource>,
    headers: HeaderMap,
) -> Response {
    sign_in(&state, Surface::Console, source, &headers).await
}

async fn sign_in_playground(
    State(state): State<AppState>,
    Extension(ClientSource(source)): Extension<ClientSource>,
    headers: HeaderMap,
) -> Response {
    sign_in(&state, Surface::Playground, source, &headers).await
}

async fn session_info(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(session): Extension<SessionId>,
) -> axum::Json<SessionView> {
    let csrf = state.auth.csrf_token(&session.id);
    axum::Json(view(&principal, csrf, session.expires_at))
}

async fn sign_out(state: &AppState, surface: Surface, principal: &Principal, id: &str) -> Response {
    if let Err(err) = state.sign_out(surface, id, principal).await {
        return ApiError::from(err).into_response();
    }
    let cookie = clearing_cookie(surface, secure_cookies(&state.config, surface));
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out_console(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(session): Extension<SessionId>,
) -> Response {
    sign_out(&state, Surface::Console, &principal, &session.id).await
}

async fn sign_out_playground(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(session): Extension<SessionId>,
) -> Response {
    sign_out(&state, Surface::Playground, &principal, &session.id).await
}
