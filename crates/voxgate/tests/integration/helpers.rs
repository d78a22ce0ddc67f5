//! `spawn_app()`: the real router on 127.0.0.1:0 with its own data dir, and one helper per
//! endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use voxgate::config::Config;
use voxgate::http::server::Application;

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// A client that sends the admin-tier key of `account` on every request.
    pub client: reqwest::Client,
    /// A client that sends no key.
    pub anonymous: reqwest::Client,
    /// The full admin-tier key `client` sends.
    pub key: String,
    pub account: String,
    pub state: voxgate::http::AppState,
    pub _dir: std::sync::Arc<tempfile::TempDir>,
    /// The Wyoming listeners configured, by name.
    pub wyoming: std::collections::BTreeMap<String, SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Most tests send many requests from 127.0.0.1: their per-address and tier limits are lifted
/// (the rate-limit tests set their own).
const RELAXED_LIMITS: &str = r#"
[limits]
per_ip = [{ period = "second", limit = 100000 }]
per_ip_unauthenticated = [{ period = "second", limit = 100000 }]
[tiers.guest]
rate_limits = []
max_concurrent_per_key = 1000
max_concurrent_per_account = 1000
[tiers.basic]
rate_limits = []
max_concurrent_per_key = 1000
max_concurrent_per_account = 1000
[tiers.premium]
rate_limits = []
max_concurrent_per_key = 1000
max_concurrent_per_account = 1000
[tiers.admin]
rate_limits = []
max_concurrent_per_key = 1000
max_concurrent_per_account = 1000
"#;

/// `settings` (TOML lines) for every tier: a tier may never allow more than the tiers above
/// it, so a restriction tested on the admin tier has to hold for the lower ones too.
pub fn every_tier(settings: &str) -> String {
    ["guest", "basic", "premium", "admin"]
        .iter()
        .map(|tier| format!("[tiers.{tier}]\n{settings}\n"))
        .collect()
}

/// Starts the server on the embedded defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

/// Starts the server with `toml` layered over the embedded defaults.
pub async fn spawn_app_with(toml: &str) -> TestApp {
    spawn_app_with_secrets(toml, &[]).await
}

/// Like [`spawn_app_with`], with provider secrets given as (variable, value) pairs in place of
/// the process environment.
pub async fn spawn_app_with_secrets(toml: &str, secrets: &[(&str, &str)]) -> TestApp {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    spawn_app_in(dir, toml, secrets).await
}

/// Like [`spawn_app_with_secrets`], on the data directory of `dir` (another instance's, to
/// start a second server on the same state).
pub async fn spawn_app_in(
    dir: std::sync::Arc<tempfile::TempDir>,
    toml: &str,
    secrets: &[(&str, &str)],
) -> TestApp {
    let mut config = Config::from_toml_layers(&[RELAXED_LIMITS, toml]).expect("config");
    config.resolve_secrets(|var| {
        secrets
            .iter()
            .find(|(name, _)| *name == var)
            .map(|(_, value)| (*value).to_owned())
    });
    config.server.bind = "127.0.0.1:0".parse().expect("addr");
    config.admin.bind = "127.0.0.1:0".parse().expect("addr");
    config.data_dir = dir.path().join("data");
    // Tests run in the crate's directory; the models live at the repository root.
    if let Some(voxgate::config::EngineConfig::Whisper { model_dir, .. }) =
        config.engines.get_mut("whisper")
        && model_dir.is_relative()
    {
        *model_dir = repo_root().join(&*model_dir);
    }
    if let Some(voxgate::config::EngineConfig::Piper { model_dir, .. }) =
        config.engines.get_mut("piper")
        && model_dir.is_relative()
    {
        *model_dir = repo_root().join(&*model_dir);
    }
    for dir in [
        &mut config.transcription.vad_model_dir,
        &mut config.transcription.onnx_runtime_dir,
    ] {
        if dir.is_relative() {
            *dir = repo_root().join(&*dir);
        }
    }
    let names: Vec<String> = config.wyoming.keys().cloned().collect();
    let app = Application::build(config).await.expect("build");
    let wyoming = names
        .into_iter()
        .map(|name| {
            let addr = app.wyoming_addr(&name).expect("wyoming listener");
            (name, addr)
        })
        .collect();
    let addr = app.local_addr().expect("addr");
    let admin_addr = app.admin_addr().expect("admin listener");
    let state = app.state().clone();
    let (account, key) = create_key(&state, "admin", None, None).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        admin_addr,
        client: client_with(Some(&key)),
        anonymous: client_with(None),
        key,
        account,
        state,
        _dir: dir,
        wyoming,
        stop: Some(stop),
        server: Some(server),
    }
}

/// Today's usage of `metric` for `account`'s quotas: (used, reserved).
pub async fn usage(app: &TestApp, account: &str, metric: &str) -> (i64, i64) {
    let now = voxgate::util::now();
    app.state
        .store
        .quota_usage(
            &format!("acct:{account}"),
            metric,
            now - now.rem_euclid(86_400),
        )
        .await
        .expect("usage")
}

/// Waits (bounded, a minute) until nothing of `metric` is reserved for `account` today;
/// returns what is used.
pub async fn settled(app: &TestApp, account: &str, metric: &str) -> i64 {
    for _ in 0..1_200 {
        let (used, reserved) = usage(app, account, metric).await;
        if reserved == 0 {
            return used;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the {metric} reserved for {account} were never settled");
}

/// The repository root (where `scripts/fetch-models` puts `models/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A mono 16-bit WAV of a 220 Hz tone with a slow tremolo, `secs` long.
pub fn tone_wav(secs: f64, rate: u32) -> Vec<u8> {
    let n = (secs * f64::from(rate)) as usize;
    let samples: Vec<i16> = (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let v = (t * 220.0 * std::f64::consts::TAU).sin() * (0.3 + 0.2 * (t * 3.0).sin());
            (v * 20000.0) as i16
        })
        .collect();
    wav_of(&samples, rate)
}

/// A mono 16-bit WAV of `samples` at `rate`.
pub fn wav_of(samples: &[i16], rate: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut writer = hound::WavWriter::new(&mut cursor, spec).expect("wav");
        for &s in samples {
            writer.write_sample(s).expect("sample");
        }
        writer.finalize().expect("finalize");
    }
    cursor.into_inner()
}

/// A multipart file part.
pub fn file_part(bytes: Vec<u8>, filename: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes).file_name(filename.to_owned())
}

/// A client that sends `key` as a bearer token on every request.
pub fn client_with(key: Option<&str>) -> reqwest::Client {
    voxgate::engines::providers::install_crypto();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().expect("header"),
        );
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Creates an account of `tier` and a key for it (optionally narrowed); returns
/// (account id, full key).
pub async fn create_key(
    state: &voxgate::http::AppState,
    tier: &str,
    key_tier: Option<&str>,
    scopes: Option<Vec<voxgate::identity::auth::Scope>>,
) -> (String, String) {
    use secrecy::ExposeSecret as _;
    let account = state
        .accounts
        .create_account(voxgate::data::audit::Actor::Cli, "Test account", None, tier)
        .await
        .expect("account");
    let request = voxgate::identity::accounts::KeyRequest {
        name: "test".into(),
        tier: key_tier.map(str::to_owned),
        scopes,
        expires_at: None,
        origins: None,
    };
    let created = state
        .accounts
        .create_key(voxgate::data::audit::Actor::Cli, &account.id, request, None)
        .await
        .expect("key");
    (account.id, created.secret.expose_secret().to_owned())
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// The Authorization header line for raw requests.
    pub fn auth_line(&self) -> String {
        format!("authorization: Bearer {}\r\n", self.key)
    }

    /// Triggers graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn speech(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/audio/speech"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// A speech request that must succeed; returns the whole body.
    pub async fn speech_bytes(&self, body: Value) -> Vec<u8> {
        let response = self.speech(body).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        response.bytes().await.expect("body").to_vec()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn models(&self) -> Value {
        self.get("/v1/models").await.json().await.expect("json")
    }

    pub async fn voices(&self) -> Value {
        self.get("/v1/audio/voices")
            .await
            .json()
            .await
            .expect("json")
    }

    /// Sends raw bytes and reads the raw response until the server closes or `wait` passes.
    pub async fn raw(&self, request: &[u8], wait: Duration) -> Vec<u8> {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
        out
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal speech request body.
pub fn speech_body(input: &str, format: &str) -> Value {
    json!({"model": "tts-1", "input": input, "voice": "alloy", "response_format": format})
}

/// Asserts the OpenAI error envelope and returns `(status, code, param)`.
pub async fn error_of(response: reqwest::Response) -> (u16, Option<String>, Option<String>) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
        panic!(
            "status {status}: error body is not JSON ({} bytes)",
            text.len()
        )
    });
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
    let text = |v: &Value| v.as_str().map(str::to_owned);
    (status, text(&error["code"]), text(&error["param"]))
}

/// Splits an HTTP/1.1 response into its head and the chunks of a chunked body.
pub fn parse_chunked(raw: &[u8]) -> (String, Vec<Vec<u8>>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = &raw[split + 4..];
    let mut chunks = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&rest[..line_end]).expect("size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        chunks.push(rest[..size].to_vec());
        rest = &rest[size + 2..];
    }
    (head, chunks)
}

/// Runs a `voxgate` CLI command that must succeed; its trimmed standard output.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A `voxgate serve` process started by a test, once it listens.
pub struct Serving {
    pub child: std::process::Child,
    /// The address from its "listening" log line.
    pub addr: String,
    /// Its log up to that line.
    pub seen: Vec<u8>,
    /// The rest of its log (JSON lines on stderr), for the caller to read or drain.
    pub stderr: std::process::ChildStderr,
}

/// Starts `cmd` (a `voxgate … serve --bind 127.0.0.1:0`) and waits for its "listening" line.
pub fn serving(cmd: &mut std::process::Command) -> Serving {
    use std::io::Read as _;
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let addr = loop {
        let mut buf = [0u8; 4096];
        let n = stderr.read(&mut buf).expect("read");
        assert!(n > 0, "server exited: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(line) = text.lines().find(|l| l.contains("\"listening\"")) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json log line");
            break v["addr"].as_str().expect("addr").to_owned();
        }
    };
    Serving {
        child,
        addr,
        seen,
        stderr,
    }
}
