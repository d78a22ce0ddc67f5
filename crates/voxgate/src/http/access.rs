//! Function-level access control, deny by default. Every (method, route) a listener serves
//! is listed in its table with what it requires; the middleware refuses anything not listed
//! and authenticates the rest. Keys are accepted only in `Authorization: Bearer`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::error::Code;
use crate::identity::auth::web::Surface;
use crate::identity::auth::{Scope, key};
use crate::limits::{Decision, openai_duration};
use crate::service::Services;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, the API description).
    Public,
    /// A valid key whose effective scopes include this one.
    Scope(Scope),
    /// The same, or an ephemeral client secret (`ek_…`, in the Authorization header or,
    /// from a browser, in `Sec-WebSocket-Protocol`): the realtime session route only.
    Session(Scope),
    /// A browser session of this surface (its cookie; never a key), whose key has this
    /// scope; a change (any method but GET/HEAD) also needs the session's CSRF token and
    /// must come from the page's own origin. `api` is the API route it serves as: rate
    /// rules, audit records and metrics name that route, so a page is never a way around
    /// a route's limits.
    Browser {
        surface: Surface,
        scope: Scope,
        api: &'static str,
    },
    /// Signing in to a surface: a key in `Authorization`, from the page's own origin (the
    /// handler exchanges it for a session).
    SignIn(Surface),
}

/// The cookie holding a surface's session id. A `Secure` one has the `__Secure-` prefix, so
/// a browser never accepts it from a page without TLS (no session planted over plain HTTP).
pub fn cookie_name(surface: Surface, secure: bool) -> &'static str {
    match (surface, secure) {
        (Surface::Console, false) => "voxgate_console",
        (Surface::Console, true) => "__Secure-voxgate_console",
        (Surface::Playground, false) => "voxgate_playground",
        (Surface::Playground, true) => "__Secure-voxgate_playground",
    }
}

/// The origin a surface's pages are served from when a reverse proxy changes it
/// (`console.console_origin`, `console.playground_origin`); `None`: the listener's own.
pub fn page_origin(config: &crate::config::Config, surface: Surface) -> Option<&str> {
    let origin = match surface {
        Surface::Console => &config.console.console_origin,
        Surface::Playground => &config.console.playground_origin,
    };
    (!origin.is_empty()).then_some(origin.as_str())
}

/// Whether the listener serving `surface` has TLS.
pub fn listener_tls(config: &crate::config::Config, surface: Surface) -> bool {
    match surface {
        Surface::Console => config.admin.tls.enabled,
        Surface::Playground => config.server.tls.enabled,
    }
}

/// Whether a surface's cookie is `Secure`: its pages are served over TLS (by the listener,
/// or by the proxy its configured origin names).
pub fn secure_cookies(config: &crate::config::Config, surface: Surface) -> bool {
    listener_tls(config, surface)
        || page_origin(config, surface).is_some_and(|o| o.starts_with("https://"))
}

/// The header a page's periodic refresh carries (a GET that must not count as a use of the
/// session, so an open tab still idles out).
pub const BACKGROUND_HEADER: &str = "x-voxgate-background";

/// Where a surface's cookie is sent (and nowhere else).
pub fn cookie_path(surface: Surface) -> &'static str {
    match surface {
        Surface::Console => "/console/",
        Surface::Playground => "/playground/",
    }
}

/// The header a page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a browser session's request carries for its handler: the session id (so sign-out
/// can end it) and when the session ends.
#[derive(Clone)]
pub struct SessionId {
    pub id: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(…)")
    }
}

/// The client address a sign-in came from (the handler authenticates it).
#[derive(Debug, Clone, Copy)]
pub struct ClientSource(pub IpAddr);

/// One row of an access table.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

pub const fn route(method: Method, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
    }
}

/// The public listener's table.
pub const PUBLIC_ROUTES: &[Route] = &[
    route(
        Method::POST,
        "/v1/audio/speech",
        Access::Scope(Scope::Speech),
    ),
    route(Method::GET, "/v1/models", Access::Scope(Scope::ModelsRead)),
    route(
        Method::GET,
        "/v1/models/{id}",
        Access::Scope(Scope::ModelsRead),
    ),
    route(
        Method::GET,
        "/v1/audio/voices",
        Access::Scope(Scope::ModelsRead),
    ),
    route(
        Method::POST,
        "/v1/audio/voices",
        Access::Scope(Scope::VoicesManage),
    ),
    route(
        Method::GET,
        "/v1/audio/voices/{voice_id}",
        Access::Scope(Scope::VoicesManage),
    ),
    route(
        Method::DELETE,
        "/v1/audio/voices/{voice_id}",
        Access::Scope(Scope::VoicesManage),
    ),
    route(
        Method::POST,
        "/v1/audio/transcriptions",
        Access::Scope(Scope::Transcription),
    ),
    route(
        Method::POST,
        "/v1/audio/translations",
        Access::Scope(Scope::Transcription),
    ),
    route(
        Method::GET,
        "/v1/realtime",
        Access::Session(Scope::Transcription),
    ),
    route(
        Method::POST,
        "/v1/realtime/client_secrets",
        Access::Scope(Scope::Transcription),
    ),
    route(
        Method::GET,
        "/v1/me/export",
        Access::Scope(Scope::AccountRead),
    ),
    route(Method::DELETE, "/v1/me", Access::Scope(Scope::Delete)),
    route(Method::GET, "/healthz", Access::Public),
    route(Method::GET, "/readyz", Access::Public),
    route(Method::GET, "/openapi.json", Access::Public),
];

/// The admin listener's table.
pub const ADMIN_ROUTES: &[Route] = &[
    route(Method::GET, "/admin/accounts", Access::Scope(Scope::Admin)),
    route(Method::POST, "/admin/accounts", Access::Scope(Scope::Admin)),
    route(
        Method::GET,
        "/admin/accounts/{id}",
        Access::Scope(Scope::Admin),
    ),
    route(
        Method::POST,
        "/admin/accounts/{id}/deactivate",
        Access::Scope(Scope::Admin),
    ),
    route(
        Method::DELETE,
        "/admin/accounts/{id}",
        Access::Scope(Scope::Admin),
    ),
    route(
        Method::GET,
        "/admin/accounts/{id}/export",
        Access::Scope(Scope::Admin),
    ),
    route(Method::GET, "/admin/keys", Access::Scope(Scope::Admin)),
    route(Method::POST, "/admin/keys", Access::Scope(Scope::Admin)),
    route(
        Method::POST,
        "/admin/keys/{keyid}/revoke",
        Access::Scope(Scope::Admin),
    ),
    route(
        Method::POST,
        "/admin/keys/{keyid}/rotate",
        Access::Scope(Scope::Admin),
    ),
    route(Method::GET, "/admin/audit", Access::Scope(Scope::Admin)),
    route(
        Method::GET,
        "/admin/audit/verify",
        Access::Scope(Scope::Admin),
    ),
    route(
        Method::GET,
        "/admin/accounts/{id}/usage",
        Access::Scope(Scope::Admin),
    ),
    route(Method::GET, "/metrics", Access::Scope(Scope::Admin)),
    route(Method::GET, "/admin/health", Access::Scope(Scope::Admin)),
];

/// What the table says about a request.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Found(Access),
    /// The path is listed, the method is not: 405 with these.
    WrongMethod(Vec<Method>),
    /// Not listed at all: denied.
    Unlisted,
}

fn lookup(tables: &[&[Route]], method: &Method, path: &str) -> Lookup {
    // HEAD is served by GET handlers.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let mut rows = tables
        .iter()
        .flat_map(|t| t.iter())
        .filter(|r| r.path == path)
        .peekable();
    if rows.peek().is_none() {
        return Lookup::Unlisted;
    }
    let mut allowed = Vec::new();
    for row in rows {
        if row.method == *method {
            return Lookup::Found(row.access);
        }
        allowed.push(row.method.clone());
    }
    Lookup::WrongMethod(allowed)
}

/// The state the middleware needs.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The listener's access tables (its own, and the console's or playground's when on).
    pub tables: Vec<&'static [Route]>,
    pub services: Arc<Services>,
    pub trusted_proxies: Arc<Vec<crate::config::Cidr>>,
    /// Whether the listener speaks TLS (the scheme a same-origin page has).
    pub tls: bool,
}

/// The access-control middleware.
pub async fn enforce(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let Some(path) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        // No route matched: the 404 fallback answers, and says nothing about keys.
        return next.run(request).await;
    };
    let access = match lookup(&guard.tables, request.method(), &path) {
        Lookup::Found(access) => access,
        Lookup::WrongMethod(allowed) => return method_not_allowed(&allowed),
        Lookup::Unlisted => {
            tracing::error!(route = %path, "route missing from the access table; denied");
            return ApiError::new(Code::RouteNotAuthorized).into_response();
        }
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    // A Unix-socket peer has no address of its own (it counts as loopback) and is never a
    // proxy: its X-Forwarded-For is ignored whatever `trusted_proxies` says.
    let from_socket = request
        .extensions()
        .get::<super::socket::PeerCred>()
        .is_some();
    let source = if from_socket {
        peer
    } else {
        super::client_ip::client_ip(peer, request.headers(), &guard.trusted_proxies)
    };
    let services = &guard.services;
    if let Err(code) = refuse_misplaced_credentials(&request) {
        let err = services.refuse_credentials(source, &path, code).await;
        return ApiError::from(err).into_response();
    }
    let (scope, secrets_too) = match access {
        Access::Public => return next.run(request).await,
        Access::Scope(scope) => (scope, false),
        Access::Session(scope) => (scope, true),
        Access::Browser {
            surface,
            scope,
            api,
        } => {
            return browser(&guard, surface, scope, source, api, request, next).await;
        }
        Access::SignIn(surface) => {
            let config = &guard.services.config;
            if !same_origin(
                request.headers(),
                guard.tls,
                page_origin(config, surface),
                true,
            ) {
                return ApiError::new(Code::CsrfRefused).into_response();
            }
            request.extensions_mut().insert(ClientSource(source));
            return next.run(request).await;
        }
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let authorization = authorization.as_deref();
    let principal = if secrets_too {
        let offered = request
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .and_then(super::realtime::offered_token)
            .map(str::to_owned);
        match services
            .authenticate_session(authorization, offered.as_deref(), source, &path)
            .await
        {
            Ok((principal, secret)) => {
                if let Some(secret) = secret {
                    request
                        .extensions_mut()
                        .insert(super::realtime::SecretSession {
                            id: secret.secret_id,
                            session: secret.session,
                        });
                }
                principal
            }
            Err(err) => return ApiError::from(err).into_response(),
        }
    } else {
        match services.authenticate(authorization, source, &path).await {
            Ok(principal) => principal,
            Err(err) => return ApiError::from(err).into_response(),
        }
    };
    // The key id is public: it names the caller in every later log line of this request.
    tracing::Span::current().record("keyid", principal.keyid.as_str());
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let tightest = match services.authorize(&principal, &path, scope, origin).await {
        Ok(tightest) => tightest,
        Err(refusal) => {
            let mut response = ApiError::from(refusal.error).into_response();
            if let Some(decision) = refusal.tightest {
                set_headers(response.headers_mut(), &decision);
            }
            return response;
        }
    };
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if let Some(decision) = tightest {
        set_headers(response.headers_mut(), &decision);
    }
    response
}

/// A request of a browser session: the session from its cookie (a key in `Authorization`
/// is not looked at: a page never holds one), the CSRF token and origin of a change, then
/// rate limits, scope and a browser key's origin as for any caller.
async fn browser(
    guard: &Guard,
    surface: Surface,
    scope: Scope,
    source: IpAddr,
    path: &str,
    mut request: Request,
    next: Next,
) -> Response {
    let services = &guard.services;
    let config = &services.config;
    let secure = secure_cookies(config, surface);
    let name = cookie_name(surface, secure);
    let id = match session_cookie(request.headers(), name) {
        Ok(id) => id,
        Err(()) => {
            let err = crate::error::Error::from_code(Code::InvalidSession);
            return ended(ApiError::from(err).into_response(), surface, secure);
        }
    };
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    // Even a read must come from the page: a sibling site is "same-site" for SameSite.
    let from_page = same_origin(
        request.headers(),
        guard.tls,
        page_origin(config, surface),
        changes,
    );
    let active = changes || !request.headers().contains_key(BACKGROUND_HEADER);
    let session = match services
        .web_caller(surface, id.as_deref(), source, path, active && from_page)
        .await
    {
        Ok(session) => session,
        Err(err) => {
            let response = ApiError::from(err).into_response();
            // A stale cookie is cleared, so it is not presented (and counted) again.
            return if id.is_some() && response.status() == StatusCode::UNAUTHORIZED {
                ended(response, surface, secure)
            } else {
                response
            };
        }
    };
    let id = id.unwrap_or_default();
    let expires_at = session.expires_at;
    let principal = session.principal;
    tracing::Span::current().record("keyid", principal.keyid.as_str());
    // Rate limits and scope first: refusals below are audited, and a flood of them must hit
    // the limits before it reaches the audit log.
    let tightest = match services.authorize(&principal, path, scope, None).await {
        Ok(tightest) => tightest,
        Err(refusal) => {
            let mut response = ApiError::from(refusal.error).into_response();
            if let Some(decision) = refusal.tightest {
                set_headers(response.headers_mut(), &decision);
            }
            return response;
        }
    };
    let token_ok = !changes || {
        // Exactly one token: a second one must not decide which is read.
        let mut tokens = request.headers().get_all(CSRF_HEADER).iter();
        match (tokens.next(), tokens.next()) {
            (Some(one), None) => services.auth.csrf_matches(&id, one.to_str().unwrap_or("")),
            _ => false,
        }
    };
    if !from_page || !token_ok {
        let err = services.refuse_csrf(&principal, path).await;
        return ApiError::from(err).into_response();
    }
    request.extensions_mut().insert(principal);
    request
        .extensions_mut()
        .insert(SessionId { id, expires_at });
    let mut response = next.run(request).await;
    if let Some(decision) = tightest {
        set_headers(response.headers_mut(), &decision);
    }
    response
}

/// `response` with the surface's cookie cleared.
fn ended(mut response: Response, surface: Surface, secure: bool) -> Response {
    if let Ok(value) = HeaderValue::from_str(&clearing_cookie(surface, secure)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// A `Set-Cookie` value that deletes the surface's session cookie.
pub fn clearing_cookie(surface: Surface, secure: bool) -> String {
    format!(
        "{}=; Path={}; Max-Age=0; HttpOnly; SameSite=Strict{}",
        cookie_name(surface, secure),
        cookie_path(surface),
        if secure { "; Secure" } else { "" }
    )
}

/// The value of the cookie `name`: `Ok(None)` without one, `Err` when it is sent twice (a
/// cookie planted by a sibling site must not shadow the real one).
fn session_cookie(headers: &HeaderMap, name: &str) -> Result<Option<String>, ()> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for pair in value.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k == name {
                if found.is_some() {
                    return Err(());
                }
                found = Some(v.to_owned());
            }
        }
    }
    Ok(found)
}

/// Whether a request says it comes from a page of this server: `Sec-Fetch-Site` (when the
/// browser sends it) is `same-origin`, and `Origin` names the pages' origin: `page_origin`
/// when configured (a proxy in front), else this host with the listener's scheme.
/// `need_origin`: a change must carry `Origin` (browsers send it on every non-GET request;
/// a read from the page does not carry it). Every value counts: a second header must not
/// hide a cross-site one.
fn same_origin(
    headers: &HeaderMap,
    tls: bool,
    page_origin: Option<&str>,
    need_origin: bool,
) -> bool {
    if need_origin && !headers.contains_key(header::ORIGIN) {
        return false;
    }
    let site_ok = headers
        .get_all(HeaderName::from_static("sec-fetch-site"))
        .iter()
        .all(|v| v.as_bytes() == b"same-origin");
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(one), None) => one.to_str().ok(),
        _ => None,
    };
    let scheme = if tls { "https://" } else { "http://" };
    let origin_ok = headers.get_all(header::ORIGIN).iter().all(|origin| {
        let origin = origin.to_str().unwrap_or("");
        match page_origin {
            Some(expected) => origin.eq_ignore_ascii_case(expected),
            None => host.is_some_and(|host| {
                origin
                    .strip_prefix(scheme)
                    .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
            }),
        }
    });
    site_ok && origin_ok
}

/// `x-ratelimit-{limit,remaining,reset}-requests`, as OpenAI sends them.
pub fn set_headers(headers: &mut HeaderMap, decision: &Decision) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put("x-ratelimit-limit-requests", decision.limit.to_string());
    put(
        "x-ratelimit-remaining-requests",
        decision.remaining.to_string(),
    );
    put(
        "x-ratelimit-reset-requests",
        openai_duration(decision.reset_after),
    );
}

/// Keys belong in the Authorization header only: one in the query string or a cookie is
/// refused (and, like every credential, never logged).
fn refuse_misplaced_credentials(request: &Request) -> Result<(), Code> {
    let in_query = request.uri().query().is_some_and(|q| {
        key::looks_like_key(q)
            || q.split('&').any(|pair| {
                let name = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
                matches!(
                    name.as_str(),
                    "api_key" | "apikey" | "key" | "token" | "access_token" | "authorization"
                )
            })
    });
    if in_query {
        return Err(Code::CredentialsInQuery);
    }
    let in_cookie = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.to_str().map_or(true, key::looks_like_key));
    if in_cookie {
        return Err(Code::CredentialsInCookie);
    }
    Ok(())
}

fn method_not_allowed(allowed: &[Method]) -> Response {
    let mut names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    if names.contains(&"GET") {
        names.push("HEAD");
    }
    let mut response = ApiError::new(Code::MethodNotAllowed).into_response();
    if let Ok(value) = HeaderValue::from_str(&names.join(",")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_reads_every_origin_and_fetch_site_header() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(*name, HeaderValue::from_static(value));
            }
            h
        };
        let host = ("host", "127.0.0.1:8081");
        let own = ("origin", "http://127.0.0.1:8081");
        let check = |pairs: &[(&'static str, &'static str)], tls: bool| {
            same_origin(&headers(pairs), tls, None, false)
        };
        assert!(check(&[host], false), "a read without browser headers");
        assert!(
            !same_origin(&headers(&[host]), false, None, true),
            "a change must say where it comes from"
        );
        assert!(check(&[host, own], false));
        assert!(check(
            &[host, own, ("sec-fetch-site", "same-origin")],
            false
        ));
        assert!(!check(&[host, own], true), "https listener");
        for bad in [
            ("origin", "http://evil.example"),
            ("origin", "http://127.0.0.1:8081.evil.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-site", "none"),
        ] {
            assert!(!check(&[host, own, bad], false), "{bad:?}");
        }
        assert!(!check(&[own], false), "no host");
        assert!(
            !check(&[host, ("host", "evil.example"), own], false),
            "two hosts"
        );
        // Behind a proxy: the configured origin, whatever the Host says.
        let proxied = Some("https://voice.example");
        let via = headers(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "https://voice.example"),
        ]);
        assert!(same_origin(&via, false, proxied, true));
        assert!(!same_origin(&headers(&[host, own]), false, proxied, true));
    }

    #[test]
    fn lookups_deny_by_default() {
        assert_eq!(
            lookup(&[PUBLIC_ROUTES], &Method::GET, "/healthz"),
            Lookup::Found(Access::Public)
        );
        assert_eq!(
            lookup(&[PUBLIC_ROUTES], &Method::HEAD, "/v1/models"),
            Lookup::Found(Access::Scope(Scope::ModelsRead))
        );
        assert_eq!(
            lookup(&[PUBLIC_ROUTES], &Method::DELETE, "/v1/models"),
            Lookup::WrongMethod(vec![Method::GET])
        );
        assert_eq!(
            lookup(&[PUBLIC_ROUTES], &Method::GET, "/v1/secret"),
            Lookup::Unlisted
        );
        assert_eq!(
            lookup(&[ADMIN_ROUTES], &Method::GET, "/v1/models"),
            Lookup::Unlisted
        );
    }
}
