//! Function-level access control, deny by default. Every (method, route) a listener serves
//! is listed in its table with what it requires; the middleware refuses anything not listed
//! and authenticates the rest. Keys are accepted only in `Authorization: Bearer`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
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
            return super::browser::browser(&guard, surface, scope, source, api, request, next)
                .await;
        }
        Access::SignIn(surface) => {
            let config = &guard.services.config;
            if !super::browser::same_origin(
                request.headers(),
                guard.tls,
                super::browser::page_origin(config, surface),
                true,
            ) {
                return ApiError::new(Code::CsrfRefused).into_response();
            }
            request
                .extensions_mut()
                .insert(super::browser::ClientSource(source));
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
        Err(refusal) => return refused(refusal),
    };
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if let Some(decision) = tightest {
        set_headers(response.headers_mut(), &decision);
    }
    response
}

/// A refusal's response, with the rate-limit headers when the limits answered it.
pub fn refused(refusal: crate::service::caller::Refusal) -> Response {
    let mut response = ApiError::from(refusal.error).into_response();
    if let Some(decision) = refusal.tightest {
        set_headers(response.headers_mut(), &decision);
    }
    response
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
