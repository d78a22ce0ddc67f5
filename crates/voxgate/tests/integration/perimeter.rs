//! The perimeter: security headers on every response (errors included), TRACE refused, CORS
//! from an exact allow-list, TLS (plain HTTP refused, HSTS, certificate reload on SIGHUP
//! without dropping connections), and the Unix socket's peer-credential check.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{spawn_app, spawn_app_with};

fn assert_secure(response: &reqwest::Response, what: &str) {
    let h = response.headers();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(
        get("content-security-policy"),
        "default-src 'none'; frame-ancestors 'none'",
        "{what}"
    );
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert!(
        get("permissions-policy").contains("microphone=()"),
        "{what}"
    );
    assert_eq!(get("cache-control"), "no-store", "{what}");
    assert!(
        h.get_all("vary").iter().any(|v| v == "Origin"),
        "{what}: Vary: Origin"
    );
    assert!(!h.contains_key("server"), "{what}: no banner");
    assert!(!h.contains_key("access-control-allow-origin"), "{what}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    let ok = app.get("/v1/models").await;
    assert_eq!(ok.status(), 200);
    assert_secure(&ok, "200");
    let unauthorized = app
        .anonymous
        .get(app.url("/v1/models"))
        .send()
        .await
        .expect("send");
    assert_eq!(unauthorized.status(), 401);
    assert_secure(&unauthorized, "401");
    let missing = app.get("/nope").await;
    assert_eq!(missing.status(), 404);
    assert_secure(&missing, "404");
    let wrong = app
        .client
        .put(app.url("/v1/models"))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 405);
    assert_secure(&wrong, "405");
    let audio = app
        .speech(json!({"model": "tts-1", "input": "Hi.", "voice": "alloy"}))
        .await;
    assert_eq!(audio.status(), 200);
    assert_secure(&audio, "audio");
    assert_eq!(audio.headers()["content-type"], "audio/mpeg");
    let health = app
        .anonymous
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("send");
    assert_secure(&health, "healthz");
    let admin = app
        .client
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .expect("send");
    assert_secure(&admin, "admin listener");
    assert!(
        admin.headers()["content-type"]
            .to_str()
            .expect("type")
            .contains("charset=utf-8"),
        "text carries its charset"
    );
}

#[tokio::test]
async fn trace_and_connect_are_refused_everywhere() {
    let app = spawn_app().await;
    for path in ["/v1/models", "/nope", "/healthz"] {
        let response = app
            .client
            .request(Method::TRACE, app.url(path))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 405, "{path}");
        assert_secure(&response, "TRACE");
    }
}

#[tokio::test]
async fn cors_answers_only_listed_origins_and_never_a_wildcard() {
    let app = spawn_app_with("[server.cors]\nallowed_origins = [\"https://app.example\"]").await;
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        app.anonymous
            .request(Method::OPTIONS, app.url("/v1/audio/speech"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let ok = preflight("https://app.example", "POST", "authorization, content-type")
        .await
        .expect("send");
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        ok.headers()["access-control-allow-methods"]
            .to_str()
            .expect("m")
            .contains("POST")
    );
    assert_eq!(ok.headers()["access-control-max-age"], "600");
    assert!(
        !ok.headers()
            .contains_key("access-control-allow-credentials")
    );
    for (origin, method, headers) in [
        ("https://evil.example", "POST", "authorization"),
        ("https://app.example.evil", "POST", "authorization"),
        ("http://app.example", "POST", "authorization"),
        ("https://app.example", "PUT", "authorization"),
        ("https://app.example", "POST", "authorization, x-evil"),
    ] {
        let refused = preflight(origin, method, headers).await.expect("send");
        assert_eq!(refused.status(), 403, "{origin} {method} {headers}");
        assert!(
            !refused
                .headers()
                .contains_key("access-control-allow-origin")
        );
    }
    let from = |origin: &'static str| {
        app.client
            .get(app.url("/v1/models"))
            .header("origin", origin)
            .send()
    };
    let listed = from("https://app.example").await.expect("send");
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        listed.headers()["access-control-expose-headers"]
            .to_str()
            .expect("e")
            .contains("x-request-id")
    );
    let other = from("https://evil.example").await.expect("send");
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    assert_eq!(
        other.status(),
        200,
        "CORS is the browser's check; the key still decides"
    );
}

/// A self-signed certificate for localhost and 127.0.0.1, made with openssl.
pub fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (scripts/setup installs it)");
    assert!(status.success());
    let pem = std::fs::read(&cert).expect("read");
    (cert, key, pem)
}

pub fn trusting(pem: &[u8]) -> reqwest::Client {
    voxgate::engines::providers::install_crypto();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem).expect("pem")])
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_refuses_plain_http_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key, first) = certificate(dir.path(), "first");
    let app = spawn_app_with(&format!(
        "[server.tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    ))
    .await;
    let url = format!("https://localhost:{}/healthz", app.addr.port());
    let old = trusting(&first);
    let response = old.get(&url).send().await.expect("https");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    // TLS 1.2 is still offered; nothing older.
    let tls12 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&first).expect("pem")])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .expect("client");
    assert_eq!(tls12.get(&url).send().await.expect("tls 1.2").status(), 200);

    // Plain HTTP on the TLS port: a 400 and the connection closed, no redirect.
    let mut plain = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    plain
        .write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer vg_x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("https_required") && !answer.contains("location:"),
        "{answer}"
    );

    // New certificate files, then SIGHUP: new handshakes use them; the pooled connection
    // made with the old certificate keeps working.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (new_cert, new_key, second) = certificate(dir.path(), "second");
    std::fs::rename(&new_cert, &cert).expect("swap cert");
    std::fs::rename(&new_key, &key).expect("swap key");
    // SAFETY: signalling our own process; the server installed a SIGHUP handler at start.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    // The reload runs on the server's signal task: wait (bounded) for the new certificate.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while trusting(&second).get(&url).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        old.get(&url).send().await.expect("kept").status(),
        200,
        "established connection kept"
    );
    assert_eq!(
        trusting(&second)
            .get(&url)
            .send()
            .await
            .expect("new cert")
            .status(),
        200
    );
    assert!(
        trusting(&first).get(&url).send().await.is_err(),
        "the old certificate is gone for new handshakes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_admits_only_listed_peers_and_still_wants_keys() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join("voxgate.sock");
    // Only uid 65534 (nobody) may connect; the socket is reachable by all, so the credential
    // check is what decides.
    let app = spawn_app_with(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[server.unix_socket]\npath = {:?}\nmode = \"0666\"\nallowed_uids = [65534]",
        path.display().to_string()
    ))
    .await;
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666);

    // We (root) are not listed: closed without an answer.
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("closed");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    // nobody is listed: served, and keys still apply.
    let socket = path.display().to_string();
    let ask = move |request: String| {
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect({socket:?})\ns.sendall(sys.stdin.buffer.read())\nout=b''\nwhile True:\n  b=s.recv(65536)\n  if not b: break\n  out+=b\nsys.stdout.buffer.write(out)"
        );
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .uid(65534)
            .gid(65534)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(request.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("output");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    use std::os::unix::process::CommandExt as _;
    let health = tokio::task::spawn_blocking({
        let ask = ask.clone();
        move || ask("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into())
    })
    .await
    .expect("join");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // A socket peer is never a proxy, even with loopback trusted: its X-Forwarded-For does
    // not choose the address its refusal is counted and audited under.
    let unauthenticated = tokio::task::spawn_blocking({
        let ask = ask.clone();
        move || ask("GET /v1/models HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 203.0.113.9\r\nconnection: close\r\n\r\n".into())
    })
    .await
    .expect("join");
    assert!(
        unauthenticated.starts_with("HTTP/1.1 401"),
        "{unauthenticated}"
    );
    let events = app.state.store.audit_events(20).await.expect("audit");
    let failed = events
        .iter()
        .find(|e| e.kind == "auth_failed")
        .expect("the refusal is audited");
    assert_eq!(failed.source.as_deref(), Some("127.0.0.1"));
    assert!(
        events
            .iter()
            .all(|e| e.source.as_deref() != Some("203.0.113.9"))
    );
    let key = app.key.clone();
    let models = tokio::task::spawn_blocking(move || {
        ask(format!(
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n"
        ))
    })
    .await
    .expect("join");
    assert!(models.starts_with("HTTP/1.1 200"), "{models}");
}

/// A browser key works only from its own origins: without an Origin header or from another
/// page it is refused (403, audited); from its page it works and CORS grants that page.
#[tokio::test]
async fn browser_keys_work_only_from_their_own_origins() {
    let app = spawn_app_with(
        "[server.cors]\nallowed_origins = [\"https://app.example\", \"https://other.example\"]",
    )
    .await;
    let created = app
        .state
        .accounts
        .create_key(
            voxgate::data::audit::Actor::Cli,
            &app.account,
            voxgate::identity::accounts::KeyRequest {
                name: "browser".into(),
                tier: None,
                scopes: None,
                expires_at: None,
                origins: Some(vec!["https://app.example".into()]),
            },
            None,
        )
        .await
        .expect("key");
    use secrecy::ExposeSecret as _;
    let browser = crate::helpers::client_with(Some(created.secret.expose_secret()));
    let from = |origin: Option<&'static str>| {
        let mut request = browser.get(app.url("/v1/models"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let ok = from(Some("https://app.example")).await.expect("send");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    for origin in [
        None,
        Some("https://other.example"),
        Some("https://app.example.evil"),
    ] {
        let (status, code, _) = crate::helpers::error_of(from(origin).await.expect("send")).await;
        assert_eq!(
            (status, code.as_deref()),
            (403, Some("origin_not_allowed")),
            "{origin:?}"
        );
    }
    // Keys without origins are unaffected; malformed origins are refused at creation.
    assert_eq!(app.get("/v1/models").await.status(), 200);
    let bad = app
        .state
        .accounts
        .create_key(
            voxgate::data::audit::Actor::Cli,
            &app.account,
            voxgate::identity::accounts::KeyRequest {
                name: "bad".into(),
                tier: None,
                scopes: None,
                expires_at: None,
                origins: Some(vec!["https://app.example/path".into()]),
            },
            None,
        )
        .await;
    assert!(bad.is_err());
}

/// The admin listener speaks TLS with its own certificate (HSTS on its answers, plain HTTP
/// refused), and an admin listener off loopback is refused without TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_takes_tls_and_refuses_the_network_without_it() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key, pem) = certificate(dir.path(), "admin");
    let app = spawn_app_with(&format!(
        "[admin.tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    ))
    .await;
    let client = trusting(&pem);
    let url = format!("https://localhost:{}/admin/accounts", app.admin_addr.port());
    let response = client
        .get(&url)
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("https");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("strict-transport-security"));
    // Plain HTTP on the admin port: refused, the key never read.
    let mut plain = tokio::net::TcpStream::connect(app.admin_addr)
        .await
        .expect("connect");
    plain
        .write_all(b"GET /admin/accounts HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"));
    // The public listener is still plain HTTP here.
    assert_eq!(app.get("/v1/models").await.status(), 200);

    let exposed = voxgate::config::Config::from_toml("[admin]\nbind = \"0.0.0.0:8081\"");
    let err = exposed.expect_err("refused").to_string();
    assert!(err.contains("admin.bind"), "{err}");
    assert!(
        voxgate::config::Config::from_toml(&format!(
            "[admin]\nbind = \"0.0.0.0:8081\"\n[admin.tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}",
            cert.display().to_string(),
            key.display().to_string()
        ))
        .is_ok()
    );
}
