//! What the server logs, read from a real `voxgate serve` process at the most verbose
//! level: keys, `Authorization` values and request text never appear.

use std::io::Read as _;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{Serving, run_ok, serving};

fn voxgate(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("VOXGATE_DATA_DIR", data_dir)
        .env("VOXGATE_ADMIN__ENABLED", "false")
        .env("VOXGATE_CONSOLE__PLAYGROUND", "true")
        .env("VOXGATE_LOG__LEVEL", "trace");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_keys_authorization_or_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let account =
        run_ok(voxgate(&data).args(["accounts", "create", "--name", "logs", "--tier", "admin"]));
    let key = run_ok(voxgate(&data).args(["keys", "create", "--account", &account]));
    let keyid = voxgate::identity::auth::key::parse(&key)
        .expect("key")
        .keyid;
    let secret = key.split('_').nth(2).expect("secret").to_owned();

    let Serving {
        child: mut server,
        addr,
        mut seen,
        mut stderr,
    } = serving(voxgate(&data).args(["serve", "--bind", "127.0.0.1:0"]));
    let reader = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
        rest
    });

    let url = |path: &str| format!("http://{addr}{path}");
    let canary = format!("canary {}", uuid::Uuid::new_v4().simple());
    let good = crate::helpers::client_with(Some(&key));
    let wrong = crate::helpers::client_with(Some(&format!("{key}x")));
    let anonymous = crate::helpers::client_with(None);
    assert_eq!(
        good.get(url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    let speech = good
        .post(url("/v1/audio/speech"))
        .json(
            &json!({"model": "tts-1", "input": canary, "voice": "alloy", "response_format": "pcm"}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(speech.status(), 200);
    let _ = speech.bytes().await;
    let _ = good
        .post(url("/v1/audio/speech"))
        .json(&json!({"model": "nope", "input": canary, "voice": "alloy"}))
        .send()
        .await;
    let _ = wrong.get(url("/v1/models")).send().await;
    let _ = anonymous
        .get(url(&format!("/v1/models?api_key={key}")))
        .send()
        .await;
    let _ = anonymous
        .get(url("/v1/models"))
        .header("cookie", format!("k={key}"))
        .send()
        .await;
    let _ = anonymous.get(url(&format!("/nope/{canary}"))).send().await;
    // The canary through every other place a caller's text can go: SSML, instructions, a
    // stored voice's name, a transcription prompt and file name, a bad model and voice name.
    let _ = good
        .post(url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "input": format!("<speak>{canary}</speak>"), "input_format": "ssml", "voice": "alloy", "instructions": canary, "response_format": "pcm"}))
        .send()
        .await;
    let _ = good
        .post(url("/v1/audio/speech"))
        .json(&json!({"model": canary, "input": "x", "voice": canary}))
        .send()
        .await;
    let form = reqwest::multipart::Form::new()
        .text("name", canary.clone())
        .text("consent", "true")
        .part(
            "audio_sample",
            crate::helpers::file_part(
                crate::helpers::tone_wav(6.0, 22_050),
                &format!("{canary}.wav"),
            ),
        );
    let stored = good
        .post(url("/v1/audio/voices"))
        .multipart(form)
        .send()
        .await
        .expect("voice");
    assert_eq!(stored.status(), 200, "the canary-named voice is stored");
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .text("prompt", canary.clone())
        .part(
            "file",
            crate::helpers::file_part(
                crate::helpers::tone_wav(1.0, 16_000),
                &format!("{canary}.wav"),
            ),
        );
    let _ = good
        .post(url("/v1/audio/transcriptions"))
        .multipart(form)
        .send()
        .await;
    // A browser session (the playground): its id and CSRF token are secrets too.
    let origin = format!("http://{addr}");
    let browser = crate::console::Browser::sign_in(&origin, "playground", &key)
        .await
        .unwrap_or_else(|_| panic!("the playground signs in"));
    let session_id = browser.cookie.split_once('=').expect("cookie").1.to_owned();
    let spoken = browser
        .request(reqwest::Method::POST, "/speech")
        .json(
            &json!({"model": "tts-1", "input": canary, "voice": "alloy", "response_format": "pcm"}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(spoken.status(), 200);
    let _ = spoken.bytes().await;
    let _ = anonymous
        .get(url("/playground/api/voices"))
        .header("cookie", format!("voxgate_playground={}", "b".repeat(64)))
        .send()
        .await;
    let out = browser
        .request(reqwest::Method::DELETE, "/session")
        .send()
        .await
        .expect("send");
    assert_eq!(out.status(), 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.kill();
    let _ = server.wait();
    seen.extend(reader.join().expect("reader"));
    let logs = String::from_utf8_lossy(&seen);

    assert!(logs.lines().count() > 10, "the server logged: {logs}");
    assert!(
        logs.contains(&keyid),
        "key ids are logged (they are public)"
    );
    // No file voxgate keeps holds the canary either: the database (and its WAL), the audit
    // witness, the cache, the security log.
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut stored = Vec::new();
    files(&data, &mut stored);
    assert!(
        stored.iter().any(|p| p.ends_with("voxgate.db")),
        "{stored:?}"
    );
    for path in &stored {
        let bytes = std::fs::read(path).expect("read");
        for needle in [&canary, &key, &session_id, &browser.csrf] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle:?}",
                path.display()
            );
        }
    }
    // The security-event stream has its own file: JSON lines, mode 0600, the failures and
    // refusals above, and no secret or text either.
    let security_path = data.join("security.log");
    let security = std::fs::read_to_string(&security_path).expect("security.log");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&security_path)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(security.lines().count() >= 3, "{security}");
    for line in security.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert_eq!(event["target"], "voxgate::security", "{line}");
    }
    assert!(
        security.contains("invalid_api_key") || security.contains("auth_failed"),
        "{security}"
    );
    assert!(security.contains("credentials_in_query"), "{security}");
    assert!(security.contains("configuration_loaded"), "{security}");
    for needle in [
        key.as_str(),
        secret.as_str(),
        "Bearer",
        "authorization",
        canary.as_str(),
        session_id.as_str(),
        browser.csrf.as_str(),
        "voxgate_playground",
    ] {
        assert!(
            !logs.to_lowercase().contains(&needle.to_lowercase()),
            "logs contain {needle:?}"
        );
        assert!(
            !security.to_lowercase().contains(&needle.to_lowercase()),
            "security.log contains {needle:?}"
        );
    }
}

/// A stand-in for every provider kind whose first path segment says how to fail: `ok`,
/// `fail` (500 naming the request), `slow` (no answer within the read timeout), `huge`
/// (a body over the cap), `refuse` (422, the content refused).
async fn failing_provider() -> std::net::SocketAddr {
    use axum::response::IntoResponse as _;
    async fn answer(uri: axum::http::Uri) -> axum::response::Response {
        let mode = uri.path().split('/').nth(1).unwrap_or("").to_owned();
        match mode.as_str() {
            "fail" => (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("upstream broke on {}", uri.path()),
            )
                .into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                axum::http::StatusCode::OK.into_response()
            }
            "huge" => (
                [(axum::http::header::CONTENT_TYPE, "audio/mpeg")],
                vec![0u8; 2_000_000],
            )
                .into_response(),
            "refuse" => (axum::http::StatusCode::UNPROCESSABLE_ENTITY, "no").into_response(),
            _ => axum::http::StatusCode::NOT_FOUND.into_response(),
        }
    }
    let app = axum::Router::new().fallback(answer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Every provider kind, through every way it can fail (connection refused, refused by the
/// egress policy, 5xx, timeout, an oversized body, the content refused): neither the log
/// (at trace level) nor the security log ever holds the request's text — Pollinations puts it
/// in the URL's path, so no provider URL may be logged either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_never_log_the_text() {
    let upstream = failing_provider().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let http = "http = { allow_local = true, allow_http = true, read_timeout_ms = 300, total_timeout_secs = 1, connect_timeout_ms = 300, max_response_bytes = 100000 }";
    let mut config = String::new();
    let mut models = Vec::new();
    let bases = [
        ("refused", format!("http://127.0.0.1:{closed}")),
        (
            "egress",
            format!("http://localhost:{}/fail", upstream.port()),
        ),
        ("fail", format!("http://{upstream}/fail")),
        ("slow", format!("http://{upstream}/slow")),
        ("huge", format!("http://{upstream}/huge")),
        ("refuse", format!("http://{upstream}/refuse")),
    ];
    for (mode, base) in &bases {
        // The egress case must not allow local addresses: its name resolves to loopback.
        let http = if *mode == "egress" {
            "http = { allow_http = true, read_timeout_ms = 300, total_timeout_secs = 1, connect_timeout_ms = 300 }"
        } else {
            http
        };
        for (kind, extra, path) in [
            ("pollinations", "", ""),
            ("openai", "model = \"m\"\n", "/v1"),
            (
                "elevenlabs",
                "model_id = \"m\"\napi_key_env = \"ELEVEN_KEY\"\n",
                "",
            ),
        ] {
            let id = format!("{kind}_{mode}");
            config.push_str(&format!(
                "[engines.{id}]\nkind = \"{kind}\"\nbase_url = \"{base}{path}\"\n{extra}voices = {{ alloy = \"v\" }}\n{http}\n[models.{id}]\nengine = \"{id}\"\n"
            ));
            models.push(id);
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = dir.path().join("providers.toml");
    std::fs::write(&file, &config).expect("config");
    let with_config = |cmd: &mut Command| {
        cmd.arg("--config").arg(&file).env("ELEVEN_KEY", "k");
    };
    let mut create = voxgate(&data);
    with_config(&mut create);
    let account = run_ok(create.args(["accounts", "create", "--name", "logs", "--tier", "admin"]));
    let mut create = voxgate(&data);
    with_config(&mut create);
    let key = run_ok(create.args(["keys", "create", "--account", &account]));

    let mut serve = voxgate(&data);
    with_config(&mut serve);
    let Serving {
        child: mut server,
        addr,
        mut seen,
        mut stderr,
    } = serving(serve.args(["serve", "--bind", "127.0.0.1:0"]));
    let reader = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
        rest
    });
    let canary = format!("Canary{}", uuid::Uuid::new_v4().simple());
    let client = crate::helpers::client_with(Some(&key));
    for model in &models {
        let response = client
            .post(format!("http://{addr}/v1/audio/speech"))
            .json(&json!({"model": model, "input": format!("My card PIN is {canary}."), "voice": "alloy", "response_format": "pcm"}))
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        assert!((400..600).contains(&status), "{model}: {status}");
        assert!(
            !body.contains(&canary),
            "{model}: the answer echoes the text"
        );
        if model.ends_with("_refuse") {
            assert_eq!(status, 400, "{model}: refused content is the client's");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.kill();
    let _ = server.wait();
    seen.extend(reader.join().expect("reader"));
    let logs = String::from_utf8_lossy(&seen);
    assert!(
        logs.contains("\"level\":\"ERROR\"") || logs.contains("\"level\":\"WARN\""),
        "the failures were logged: {logs}"
    );
    for needle in [canary.as_str(), "card%20PIN", "PIN is"] {
        assert!(!logs.contains(needle), "the log holds {needle:?}");
    }
    let security = std::fs::read_to_string(data.join("security.log")).unwrap_or_default();
    assert!(!security.contains(&canary), "security.log holds the text");
}
