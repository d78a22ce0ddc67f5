//! Browser sessions at the edge (the web console and the playground): the session cookie
//! (name, path, `Secure`), the middleware of `Access::Browser` routes (the session, then
//! limits and scope, then the CSRF token and origin of a change), and the same-origin
//! check sign-in uses too. The sessions themselves are `identity::auth::web`'s.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::access::{Guard, refused, set_headers};
use super::error::ApiError;
use crate::error::Code;
use crate::identity::auth::Scope;
use crate::identity::auth::web::Surface;

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

/// A request of a browser session: the session from its cookie (a key in `Authorization`
/// is not looked at: a page never holds one), the CSRF token and origin of a change, then
/// rate limits, scope and a browser key's origin as for any caller.
pub(super) async fn browser(
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
        Err(refusal) => return refused(refusal),
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
pub(super) fn same_origin(
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
}
