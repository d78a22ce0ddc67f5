//! The web console and the playground over HTTP (the browser suite, `browser`, drives the
//! pages): sessions exchanged for keys, their cookie, CSRF and origin checks, the pages'
//! policy, revocation and idleness, sign-out, and the tables behind their routes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::{TestApp, create_key, error_of, spawn_app_with};

/// A signed-in browser: its session cookie (as a browser would send it back) and the
/// session's CSRF token.
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
    pub keyid: String,
    pub set_cookie: String,
    base: String,
    origin: String,
    client: reqwest::Client,
}

pub fn set_cookie(headers: &HeaderMap) -> String {
    headers
        .get(SET_COOKIE)
        .expect("a Set-Cookie")
        .to_str()
        .expect("ascii")
        .to_owned()
}

impl Browser {
    /// Signs in at `origin` (`http://host:port`) on `/console` or `/playground` with `key`.
    pub async fn sign_in(
        origin: &str,
        surface: &str,
        key: &str,
    ) -> Result<Self, reqwest::Response> {
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{origin}/{surface}/api/session"))
            .bearer_auth(key)
            .header("origin", origin)
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .expect("send");
        if response.status() != 201 {
            return Err(response);
        }
        let set_cookie = set_cookie(response.headers());
        let cookie = set_cookie.split(';').next().expect("pair").to_owned();
        let body: Value = response.json().await.expect("json");
        Ok(Self {
            cookie,
            csrf: body["csrf"].as_str().expect("csrf").to_owned(),
            keyid: body["keyid"].as_str().expect("keyid").to_owned(),
            set_cookie,
            base: format!("{origin}/{surface}/api"),
            origin: origin.to_owned(),
            client,
        })
    }

    /// A request as the page makes it: the cookie, the same origin, and for a change the
    /// CSRF token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let changes = method != reqwest::Method::GET;
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("sec-fetch-site", "same-origin");
        if changes {
            request = request
                .header("origin", &self.origin)
                .header("x-csrf-token", &self.csrf);
        }
        request
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("send")
    }
}

fn admin_origin(app: &TestApp) -> String {
    format!("http://{}", app.admin_addr)
}

/// A key of a new admin account with this expiry and these browser origins: its full text.
async fn admin_key_with(
    app: &TestApp,
    expires_at: Option<i64>,
    origins: Option<Vec<String>>,
) -> String {
    use secrecy::ExposeSecret as _;
    let (account, _) = create_key(&app.state, "admin", None, None).await;
    let request = voxgate::identity::accounts::KeyRequest {
        name: "console test".into(),
        tier: None,
        scopes: None,
        expires_at,
        origins,
    };
    let created = app
        .state
        .accounts
        .create_key(voxgate::data::audit::Actor::Cli, &account, request, None)
        .await
        .expect("key");
    created.secret.expose_secret().to_owned()
}

async fn accounts(app: &TestApp) -> usize {
    app.state.store.accounts().await.expect("accounts").len()
}

#[tokio::test]
async fn console_and_playground_routes_are_exactly_their_access_tables() {
    for (served, table) in [
        (
            voxgate::http::console::console_routes(),
            voxgate::http::console::CONSOLE_ROUTES,
        ),
        (
            voxgate::http::console::playground_routes(),
            voxgate::http::console::PLAYGROUND_ROUTES,
        ),
    ] {
        let served: BTreeSet<(String, String)> = served
            .registered()
            .iter()
            .map(|(m, p)| (m.to_string(), (*p).to_owned()))
            .collect();
        let table: BTreeSet<(String, String)> = table
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        assert_eq!(served, table);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_is_a_strict_http_only_cookie_and_changes_need_its_csrf_token() {
    let app = spawn_app_with("").await;
    let origin = admin_origin(&app);
    let browser = Browser::sign_in(&origin, "console", &app.key)
        .await
        .unwrap_or_else(|_| panic!("an admin key signs in"));
    let attributes: Vec<&str> = browser.set_cookie.split("; ").skip(1).collect();
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/console/"] {
        assert!(attributes.contains(&wanted), "{}", browser.set_cookie);
    }
    assert!(
        !attributes.contains(&"Secure"),
        "no Secure without TLS: the browser would drop it on http"
    );
    let max_age: i64 = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("Max-Age")
        .parse()
        .expect("number");
    assert!((43_100..=43_200).contains(&max_age), "{max_age}");
    let id = browser.cookie.split_once('=').expect("pair").1;
    assert_eq!(id.len(), 64);
    assert!(!app.key.contains(id) && !id.contains(&browser.csrf));

    assert_eq!(browser.get("/accounts").await.status(), 200);
    let session: Value = browser.get("/session").await.json().await.expect("json");
    assert_eq!(session["csrf"], browser.csrf.as_str());
    assert_eq!(session["account_id"], app.account.as_str());

    // A change without the token, with another's, from another origin, or from another
    // site (also beside same-origin headers): 403, and nothing is created.
    let before = accounts(&app).await;
    let body = json!({"name": "csrf", "tier": "basic"});
    let without = browser
        .client
        .post(format!("{origin}/console/api/accounts"))
        .header("cookie", &browser.cookie)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(without).await.0, 403);
    let wrong = browser
        .client
        .post(format!("{origin}/console/api/accounts"))
        .header("cookie", &browser.cookie)
        .header("origin", &origin)
        .header("x-csrf-token", "0".repeat(64))
        .json(&body)
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(wrong).await;
    assert_eq!((status, code.as_deref()), (403, Some("csrf_refused")));
    // A second token beside the right one decides nothing.
    let doubled = browser
        .request(reqwest::Method::POST, "/accounts")
        .header("x-csrf-token", "0".repeat(64))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(doubled).await.0, 403);
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let cross = browser
            .request(reqwest::Method::POST, "/accounts")
            .header(name, value)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(error_of(cross).await.0, 403, "{name}: {value}");
    }
    assert_eq!(
        accounts(&app).await,
        before,
        "a refused change changed nothing"
    );
    // With the token: created, and audited as the session key's action.
    let created = browser
        .request(reqwest::Method::POST, "/accounts")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    let audit = app
        .state
        .store
        .audit_page(&voxgate::data::store::AuditFilter {
            account_id: None,
            kind: Some("account_created".into()),
            since: None,
            until: None,
            cursor: None,
            newest_first: true,
            limit: 1,
        })
        .await
        .expect("audit");
    assert_eq!(audit[0].account_id.as_deref(), created["id"].as_str());
    assert_eq!(audit[0].actor.as_deref(), Some(browser.keyid.as_str()));

    // A key is no session and a session is no key.
    let bearer = app
        .client
        .get(format!("{origin}/console/api/accounts"))
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(bearer).await;
    assert_eq!((status, code.as_deref()), (401, Some("missing_session")));
    let cookie_on_admin = reqwest::Client::new()
        .get(format!("{origin}/admin/accounts"))
        .header("cookie", &browser.cookie)
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(cookie_on_admin).await.0, 401);
    // The same cookie sent twice (one planted by a sibling site): refused.
    let doubled = reqwest::Client::new()
        .get(format!("{origin}/console/api/accounts"))
        .header("cookie", format!("{}; {}", browser.cookie, browser.cookie))
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(doubled).await.0, 401);

    // Sign-out ends the session: the cookie is cleared and no longer works.
    let out = browser
        .request(reqwest::Method::DELETE, "/session")
        .send()
        .await
        .expect("send");
    assert_eq!(out.status(), 204);
    assert!(set_cookie(out.headers()).contains("Max-Age=0"));
    let (status, code, _) = error_of(browser.get("/accounts").await).await;
    assert_eq!((status, code.as_deref()), (401, Some("invalid_session")));
    let kinds: Vec<String> = app
        .state
        .store
        .audit_page(&voxgate::data::store::AuditFilter {
            account_id: Some(app.account.clone()),
            kind: None,
            since: None,
            until: None,
            cursor: None,
            newest_first: true,
            limit: 50,
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert!(kinds.contains(&"session_opened".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"session_closed".to_owned()), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_keys_sign_in_to_the_console_and_guesses_are_blocked() {
    let app = spawn_app_with("[auth]\nfailure_threshold = 5").await;
    let origin = admin_origin(&app);
    let (_, basic) = create_key(&app.state, "basic", None, None).await;
    let refused = Browser::sign_in(&origin, "console", &basic)
        .await
        .err()
        .expect("a basic key is refused");
    assert!(refused.headers().get(SET_COOKIE).is_none());
    let (status, code, _) = error_of(refused).await;
    assert_eq!((status, code.as_deref()), (403, Some("insufficient_scope")));
    // A browser key belongs to its own pages: it does not sign in here.
    let browser_key = admin_key_with(&app, None, Some(vec![origin.clone()])).await;
    let refused = Browser::sign_in(&origin, "console", &browser_key)
        .await
        .err()
        .expect("refused");
    assert_eq!(error_of(refused).await.0, 403);
    // From another site, even the right key does not sign in (login CSRF).
    let cross = reqwest::Client::new()
        .post(format!("{origin}/console/api/session"))
        .bearer_auth(&app.key)
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(cross.status(), 403);
    assert!(cross.headers().get(SET_COOKIE).is_none());
    // Wrong keys count against the address like any failed authentication.
    let mut statuses = Vec::new();
    for i in 0..7 {
        let wrong = format!("{}{i}", &app.key[..app.key.len() - 1]);
        match Browser::sign_in(&origin, "console", &wrong).await {
            Ok(_) => panic!("a wrong key signed in"),
            Err(response) => statuses.push(response.status().as_u16()),
        }
    }
    assert_eq!(statuses[0], 401, "{statuses:?}");
    assert_eq!(*statuses.last().expect("some"), 429, "{statuses:?}");
    // Session ids are guessed no better: on a fresh server, only bad cookies lead to the
    // block (and each refusal clears the cookie it was sent).
    let fresh = spawn_app_with("[auth]\nfailure_threshold = 5").await;
    let mut statuses = Vec::new();
    for i in 0..7 {
        let guessed = reqwest::Client::new()
            .get(format!("http://{}/console/api/accounts", fresh.admin_addr))
            .header("cookie", format!("voxgate_console={:064x}", i))
            .send()
            .await
            .expect("send");
        if guessed.status() == 401 {
            assert!(set_cookie(guessed.headers()).contains("Max-Age=0"));
        }
        statuses.push(guessed.status().as_u16());
    }
    assert_eq!(statuses[0], 401, "{statuses:?}");
    assert_eq!(*statuses.last().expect("some"), 429, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_keys_sessions_end_within_the_cache_bound() {
    let app = spawn_app_with("[auth]\ncache_ttl_ms = 300").await;
    let origin = admin_origin(&app);
    let (_, second) = create_key(&app.state, "admin", None, None).await;
    let browser = Browser::sign_in(&origin, "console", &second)
        .await
        .unwrap_or_else(|_| panic!("signs in"));
    assert_eq!(browser.get("/keys").await.status(), 200);
    app.state
        .accounts
        .revoke_key(voxgate::data::audit::Actor::Cli, &browser.keyid)
        .await
        .expect("revoke");
    let revoked = Instant::now();
    loop {
        // When the request left, not when its answer came: a loaded machine may answer a
        // request sent inside the bound after it.
        let sent = revoked.elapsed();
        let response = browser.get("/keys").await;
        if response.status() == 401 {
            assert!(
                set_cookie(response.headers()).contains("Max-Age=0"),
                "the dead session's cookie is cleared"
            );
            let (_, code, _) = error_of(response).await;
            assert_eq!(code.as_deref(), Some("revoked_api_key"));
            break;
        }
        assert!(
            sent < Duration::from_millis(300 + 700),
            "the session outlived its key's revocation by more than the cache bound"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lifetimes in seconds of the wall clock (the session's times are the database's): a
/// session in use outlives its idle limit, a page's background refresh does not keep it,
/// the absolute limit and the key's expiry end it whatever the use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_at_their_end_and_with_their_key() {
    let app = spawn_app_with("[console]\nidle_secs = 4\nsession_secs = 9").await;
    let origin = admin_origin(&app);
    let used = Browser::sign_in(&origin, "console", &app.key)
        .await
        .unwrap_or_else(|_| panic!("signs in"));
    let refreshed = Browser::sign_in(&origin, "console", &app.key)
        .await
        .unwrap_or_else(|_| panic!("signs in"));
    let background = |b: &Browser| {
        b.request(reqwest::Method::GET, "/metrics")
            .header("x-voxgate-background", "1")
            .send()
    };
    let started = Instant::now();
    // For 7 s (beyond the 4 s idle limit): one used every 1.5 s, the other only refreshed.
    let mut refreshed_ended = None;
    while started.elapsed() < Duration::from_secs(7) {
        assert_eq!(
            used.get("/accounts").await.status(),
            200,
            "a session in use"
        );
        let status = background(&refreshed).await.expect("send").status();
        if status == 401 && refreshed_ended.is_none() {
            refreshed_ended = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    let ended = refreshed_ended.expect("refreshing alone does not keep a session");
    assert!(ended >= Duration::from_secs(3), "ended at {ended:?}");
    // The absolute limit (9 s) ends even a session in use.
    loop {
        let response = used.get("/accounts").await;
        if response.status() == 401 {
            let (_, code, _) = error_of(response).await;
            assert_eq!(code.as_deref(), Some("invalid_session"));
            assert!(started.elapsed() >= Duration::from_secs(8));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "outlived its end"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A key that expires in 2 s takes its session with it.
    let expiring = admin_key_with(&app, Some(voxgate::util::now() + 2), None).await;
    let brief = Browser::sign_in(&origin, "console", &expiring)
        .await
        .unwrap_or_else(|_| panic!("signs in"));
    let max_age: i64 = brief
        .set_cookie
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("Max-Age")
        .parse()
        .expect("number");
    assert!(max_age <= 2, "the cookie ends with the key: {max_age}");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(error_of(brief.get("/accounts").await).await.0, 401);
}

/// Each page route runs an API route's handler: that route exists with the same method and
/// the same scope, so its rate rules and audit apply under its own name.
#[test]
fn every_page_route_serves_as_a_real_api_route() {
    use voxgate::http::access::{ADMIN_ROUTES, Access, PUBLIC_ROUTES};
    use voxgate::http::console::{CONSOLE_ROUTES, PLAYGROUND_ROUTES};
    for row in CONSOLE_ROUTES.iter().chain(PLAYGROUND_ROUTES) {
        let Access::Browser { scope, api, .. } = row.access else {
            continue;
        };
        if api == row.path {
            assert!(api.ends_with("/api/session"), "{api}");
            continue;
        }
        let served = ADMIN_ROUTES
            .iter()
            .chain(PUBLIC_ROUTES)
            .find(|r| r.path == api && r.method == row.method)
            .unwrap_or_else(|| {
                panic!(
                    "{} {} serves as {api}, which is no API route",
                    row.method, row.path
                )
            });
        assert_eq!(
            served.access,
            Access::Scope(scope),
            "{} {}",
            row.method,
            row.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_too_must_come_from_the_page() {
    let app = spawn_app_with("").await;
    let origin = admin_origin(&app);
    let browser = Browser::sign_in(&origin, "console", &app.key)
        .await
        .unwrap_or_else(|_| panic!("signs in"));
    for site in ["cross-site", "same-site"] {
        let response = browser
            .client
            .get(format!(
                "{origin}/console/api/accounts/{}/export",
                app.account
            ))
            .header("cookie", &browser.cookie)
            .header("sec-fetch-site", site)
            .send()
            .await
            .expect("send");
        assert_eq!(error_of(response).await.0, 403, "{site}");
    }
    assert_eq!(
        browser
            .get(&format!("/accounts/{}/export", app.account))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_tls_proxy_the_configured_origin_counts_and_the_cookie_is_secure() {
    let app = spawn_app_with("[console]\nconsole_origin = \"https://admin.example\"").await;
    let url = format!("http://{}/console/api/session", app.admin_addr);
    let sign_in = |origin: &'static str| {
        reqwest::Client::new()
            .post(&url)
            .bearer_auth(&app.key)
            .header("origin", origin)
            .send()
    };
    let response = sign_in("https://admin.example").await.expect("send");
    assert_eq!(response.status(), 201);
    let cookie = set_cookie(response.headers());
    assert!(cookie.starts_with("__Secure-voxgate_console="), "{cookie}");
    assert!(cookie.split("; ").any(|a| a == "Secure"), "{cookie}");
    let plain = format!("http://{}", app.admin_addr);
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&app.key)
        .header("origin", plain)
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        403,
        "the listener's own origin is not the page's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_load_nothing_inline_and_cannot_be_framed() {
    let app = spawn_app_with("[console]\nplayground = true").await;
    for (base, page) in [
        (admin_origin(&app), "console"),
        (format!("http://{}", app.addr), "playground"),
    ] {
        let response = reqwest::get(format!("{base}/{page}/")).await.expect("page");
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        for wanted in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(wanted), "{page}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
        let microphone = headers["permissions-policy"].to_str().expect("ascii");
        assert_eq!(
            microphone.contains("microphone=(self)"),
            page == "playground",
            "{microphone}"
        );
        let html = response.text().await.expect("html").to_lowercase();
        // Every script has a src, nothing carries style or an event handler inline.
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=").count(),
            "{page}"
        );
        assert!(!html.contains("<style"), "{page}");
        assert!(!html.contains(" style="), "{page}");
        assert!(
            !html
                .split(|c: char| c.is_whitespace())
                .any(|w| w.starts_with("on") && w.contains('=')),
            "{page}"
        );
        for (file, kind) in [
            ("app.js", "text/javascript"),
            ("common.js", "text/javascript"),
            ("style.css", "text/css"),
        ] {
            let response = reqwest::get(format!("{base}/{page}/{file}"))
                .await
                .expect("asset");
            assert_eq!(response.status(), 200, "{file}");
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .expect("ascii")
                    .starts_with(kind),
                "{file}"
            );
        }
        for sneaky in [
            "..%2Fvoxgate.db",
            "%2e%2e%2fvoxgate.db",
            "app.js%00",
            "APP.JS",
        ] {
            let missing = reqwest::get(format!("{base}/{page}/{sneaky}"))
                .await
                .expect("send");
            assert_eq!(missing.status(), 404, "{sneaky}");
        }
    }
    // Off by default: no playground.
    let plain = spawn_app_with("").await;
    let response = reqwest::get(format!("http://{}/playground/", plain.addr))
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tls_the_session_cookie_is_secure() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key, pem) = crate::perimeter::certificate(dir.path(), "admin");
    let app = spawn_app_with(&format!(
        "[admin.tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    ))
    .await;
    let origin = format!("https://localhost:{}", app.admin_addr.port());
    let response = crate::perimeter::trusting(&pem)
        .post(format!("{origin}/console/api/session"))
        .bearer_auth(&app.key)
        .header("origin", &origin)
        .send()
        .await
        .expect("https");
    assert_eq!(response.status(), 201);
    let cookie = set_cookie(response.headers());
    assert!(cookie.split("; ").any(|a| a == "Secure"), "{cookie}");
    assert!(cookie.split("; ").any(|a| a == "HttpOnly"), "{cookie}");
    // An http origin is another origin for an https listener.
    let response = crate::perimeter::trusting(&pem)
        .post(format!("{origin}/console/api/session"))
        .bearer_auth(&app.key)
        .header(
            "origin",
            format!("http://localhost:{}", app.admin_addr.port()),
        )
        .send()
        .await
        .expect("https");
    assert_eq!(response.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_speaks_with_a_session_under_the_keys_own_rules() {
    let app = spawn_app_with(&format!(
        "[console]\nplayground = true\n{}",
        crate::helpers::every_tier(
            "rate_limits = [{ per = \"key\", period = \"minute\", limit = 2, route = \"/v1/audio/speech\" }]"
        )
    ))
    .await;
    let origin = format!("http://{}", app.addr);
    use voxgate::identity::auth::Scope;
    // The playground lists models and voices to speak: a speech-only key cannot sign in.
    let (_, speech_only) = create_key(&app.state, "basic", None, Some(vec![Scope::Speech])).await;
    let refused = Browser::sign_in(&origin, "playground", &speech_only)
        .await
        .err()
        .expect("refused");
    let (status, code, _) = error_of(refused).await;
    assert_eq!((status, code.as_deref()), (403, Some("insufficient_scope")));
    let (_, speaker) = create_key(
        &app.state,
        "basic",
        None,
        Some(vec![Scope::Speech, Scope::ModelsRead]),
    )
    .await;
    let browser = Browser::sign_in(&origin, "playground", &speaker)
        .await
        .unwrap_or_else(|_| panic!("a speech key signs in to the playground"));
    assert!(browser.set_cookie.contains("Path=/playground/"));
    let speak = || {
        browser
            .request(reqwest::Method::POST, "/speech")
            .json(&json!({"model": "tts-1", "voice": "alloy", "input": "Hello from the playground.", "response_format": "wav"}))
            .send()
    };
    let response = speak().await.expect("send");
    assert_eq!(response.status(), 200);
    let wav = response.bytes().await.expect("audio");
    crate::decode::decode("wav", &wav).assert_speech(0.5, 10.0);
    // The route's rule for /v1/audio/speech binds the playground's speech too.
    assert_eq!(speak().await.expect("send").status(), 200);
    assert_eq!(speak().await.expect("send").status(), 429);
    // The key has no transcription scope: the playground cannot widen it.
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part(
            "file",
            crate::helpers::file_part(crate::helpers::tone_wav(1.0, 16_000), "a.wav"),
        );
    let response = browser
        .request(reqwest::Method::POST, "/transcriptions")
        .multipart(form)
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (403, Some("insufficient_scope")));
    // A playground session opens nothing on the console, and the reverse.
    let console = reqwest::Client::new()
        .get(format!("http://{}/console/api/accounts", app.admin_addr))
        .header(
            "cookie",
            browser
                .cookie
                .replace("voxgate_playground", "voxgate_console"),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(console).await.0, 401);
}
