//! The console and the playground in a real browser: headless Chromium (Debian's
//! `chromium` and `chromium-driver`, installed by `scripts/setup --test`) driven over the
//! W3C WebDriver protocol against a real server. Screenshots of each page go to
//! `target/screenshots/` at the repository root (named in the README).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::{repo_root, spawn_app_with};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One ChromeDriver with one browser session; both (and every Chromium process) are
/// killed when it is dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser suite needs Debian's chromium and chromium-driver: run scripts/setup --test"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile");
        let mut driver = Self {
            child,
            base,
            http,
            _profile: profile,
        };
        let session = driver
            .call(
                reqwest::Method::POST,
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required",
                            "--mute-audio", "--no-first-run", "--disable-extensions",
                            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                            format!("--user-data-dir={}", driver._profile.path().display()),
                        ]
                    }
                }}}),
            )
            .await;
        let id = session["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        driver.base = format!("{}/session/{id}", driver.base);
        driver
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver json");
        let value = answer["value"].clone();
        assert!(
            value.get("error").is_none(),
            "webdriver {path}: {}",
            value["message"]
        );
        value
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
    }

    /// Reloads the page for real (a `goto` to the same address with a fragment would stay on
    /// the same document): marks the document, reloads, and waits until a new one is there.
    async fn reload(&self) {
        self.run("window.beforeReload = true;", json!([])).await;
        self.call(reqwest::Method::POST, "/refresh", json!({}))
            .await;
        self.until(
            "a new document",
            "return window.beforeReload === undefined && document.readyState === 'complete'",
            Duration::from_secs(10),
        )
        .await;
    }

    async fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let answer: Value = self
                .http
                .post(format!("{}/element", self.base))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .expect("webdriver")
                .json()
                .await
                .expect("json");
            if let Some(id) = answer["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no element {css}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            json!({}),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({"text": text}),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    async fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Waits until `script` returns something truthy; returns it.
    async fn until(&self, what: &str, script: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let value = self.run(script, json!([])).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                started.elapsed() < limit,
                "timed out waiting for {what}; page says: {}",
                self.run("return document.body.innerText", json!([])).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.run(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    /// Saves a screenshot of the page as `target/screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let data = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64"))
            .expect("png");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = repo_root().join("target").join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Controls no label names (inputs, selects, text areas, buttons), hidden ones too.
    async fn unlabelled(&self) -> Value {
        self.run(
            "return [...document.querySelectorAll('input, select, textarea, button')].filter((e) => {
               if (e.tagName === 'BUTTON') return !e.textContent.trim() && !e.getAttribute('aria-label');
               return !(e.labels && e.labels.length) && !e.getAttribute('aria-label');
             }).map((e) => e.id || e.outerHTML.slice(0, 80));",
            json!([]),
        )
        .await
    }

    /// At a phone's width (390 CSS pixels) the page scrolls only vertically.
    async fn fits_a_phone(&self, screenshot: &str) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": 390, "height": 844}),
        )
        .await;
        let overflow = self
            .until(
                "the narrow layout",
                "return window.innerWidth <= 420 ? document.documentElement.scrollWidth - document.documentElement.clientWidth + 1 : 0",
                Duration::from_secs(5),
            )
            .await;
        self.screenshot(screenshot).await;
        assert_eq!(
            overflow, 1,
            "{screenshot}: wider than a phone by {overflow} px (less one)"
        );
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": 1280, "height": 1000}),
        )
        .await;
    }

    /// `fetch` from the page (with its cookies): the status.
    async fn fetch_status(&self, method: &str, path: &str) -> u16 {
        let value = self
            .call(
                reqwest::Method::POST,
                "/execute/async",
                json!({"script": "const done = arguments[arguments.length - 1]; fetch(arguments[1], {method: arguments[0], credentials: 'same-origin'}).then((r) => done(r.status), () => done(0));", "args": [method, path]}),
            )
            .await;
        u16::try_from(value.as_u64().expect("status")).expect("u16")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // ChromeDriver leads its own process group: every Chromium process goes with it.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--"])
            .arg(format!("-{}", self.child.id()))
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_console_in_a_real_browser() {
    let app = spawn_app_with("[auth]\ncache_ttl_ms = 300\n[audit]\ncheckpoint_every = 1").await;
    let console = format!("http://{}/console/", app.admin_addr);
    let driver = Driver::start().await;
    driver.goto(&console).await;
    assert_eq!(
        driver.unlabelled().await,
        json!([]),
        "every control has a label"
    );
    // A wrong key: the API's message and code on the page, and no session.
    let mut wrong = app.key.clone();
    wrong.pop();
    wrong.push(if app.key.ends_with('a') { 'b' } else { 'a' });
    driver
        .type_into("#signin-key", &format!("{wrong}\u{E007}"))
        .await;
    let refusal = driver
        .until(
            "the refusal",
            "return document.getElementById('signin-error').innerText",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        refusal.as_str().expect("text").contains("invalid_api_key"),
        "{refusal}"
    );
    assert_eq!(
        driver
            .run(
                "return document.getElementById('signin-key').value",
                json!([])
            )
            .await,
        "",
        "the key does not stay in the form"
    );
    // Signed in from the keyboard: the key, then Enter.
    driver
        .type_into("#signin-key", &format!("{}\u{E007}", app.key))
        .await;
    driver
        .until(
            "the overview",
            "return document.querySelectorAll('#health .card').length >= 5 && document.querySelectorAll('#engines tbody tr').length > 0",
            Duration::from_secs(15),
        )
        .await;
    assert!(driver.text("#who").await.contains(&app.account));
    assert!(driver.text("#health").await.contains("Status"));
    driver.screenshot("console-overview").await;
    assert_eq!(
        driver.unlabelled().await,
        json!([]),
        "every control has a label once signed in"
    );
    driver.fits_a_phone("console-overview-phone").await;

    // An account, then a key for it, read once.
    driver.click("nav [data-page=accounts]").await;
    driver.type_into("#account-name", "Browser Co").await;
    driver.type_into("#account-tier", "basic").await;
    driver.click("#account-form button[type=submit]").await;
    let status = driver
        .until(
            "the new account",
            "const s = document.getElementById('account-form-status').innerText; return s.startsWith('Created') ? s : null;",
            Duration::from_secs(10),
        )
        .await;
    let account = status
        .as_str()
        .expect("text")
        .trim_start_matches("Created ")
        .to_owned();
    driver
        .until(
            "the account listed",
            &format!("return document.getElementById('accounts').innerText.includes('{account}')"),
            Duration::from_secs(10),
        )
        .await;
    driver.screenshot("console-accounts").await;

    driver.click("nav [data-page=keys]").await;
    driver
        .until(
            "the account choices",
            &format!("return [...document.getElementById('key-account').options].some((o) => o.value === '{account}')"),
            Duration::from_secs(10),
        )
        .await;
    driver
        .run(
            "document.getElementById('key-account').value = arguments[0];",
            json!([account]),
        )
        .await;
    driver.type_into("#key-name", "from the browser").await;
    driver.click("#key-form button[type=submit]").await;
    let key = driver
        .until(
            "the new key",
            "const box = document.getElementById('new-key'); return box.hidden ? null : document.getElementById('new-key-value').innerText;",
            Duration::from_secs(10),
        )
        .await
        .as_str()
        .expect("key")
        .to_owned();
    assert!(key.starts_with("vg_"), "the full key is shown once");
    let keyid = voxgate::identity::auth::key::parse(&key)
        .expect("a real key")
        .keyid;
    driver.click("#new-key-done").await;
    driver.screenshot("console-keys").await;
    // A reload keeps the session (the cookie) but the key is gone for good.
    driver.reload().await;
    driver
        .until(
            "the keys list",
            &format!("return document.getElementById('keys').innerText.includes('{keyid}')"),
            Duration::from_secs(10),
        )
        .await;
    let page = driver
        .run(
            "return document.documentElement.outerHTML + document.body.innerText",
            json!([]),
        )
        .await;
    let secret = key.rsplit('_').nth(1).expect("secret part");
    assert!(
        !page.as_str().expect("html").contains(secret),
        "the key is shown once only"
    );
    let stored = driver
        .run("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie + location.href", json!([]))
        .await;
    assert!(!stored.as_str().expect("text").contains(secret), "{stored}");

    // A request with the new key shows in its account's usage.
    let second = crate::helpers::client_with(Some(&key));
    let spoken = second
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "voice": "alloy", "input": "Counted in the console.", "response_format": "wav"}))
        .send()
        .await
        .expect("send");
    assert_eq!(spoken.status(), 200);
    let _ = spoken.bytes().await;
    assert_eq!(
        crate::helpers::usage(&app, &account, "characters").await,
        (23, 0),
        "charged before the console reads it"
    );
    driver.click("nav [data-page=usage]").await;
    driver
        .run(
            "const s = document.getElementById('usage-account'); s.value = arguments[0]; s.dispatchEvent(new Event('change'));",
            json!([account]),
        )
        .await;
    let usage = driver
        .until(
            "the usage of the new key's account",
            &format!("{{ const t = document.getElementById('usage').textContent; return t.includes('{account}') && t.includes('characters') ? t : null; }}"),
            Duration::from_secs(10),
        )
        .await;
    let usage = usage.as_str().expect("text");
    assert!(usage.contains(&account), "{usage}");
    let figures: Vec<i64> = driver
        .run(
            "return [...document.querySelectorAll('#usage td.num')].map((td) => Number(td.textContent));",
            json!([]),
        )
        .await
        .as_array()
        .expect("figures")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert!(
        figures.contains(&23),
        "the 23 characters counted: {figures:?}"
    );
    driver.screenshot("console-usage").await;

    // Revoked in the console, refused by the API within the cache bound. The table is
    // emptied first, so the wait below is met by this page load's own answer.
    driver
        .run(
            "document.querySelector('#keys tbody').replaceChildren();",
            json!([]),
        )
        .await;
    driver.click("nav [data-page=keys]").await;
    driver
        .until(
            "the key row",
            &format!("return document.getElementById('keys').innerText.includes('{keyid}')"),
            Duration::from_secs(10),
        )
        .await;
    driver.run("window.confirm = () => true;", json!([])).await;
    driver
        .run(
            "[...document.querySelectorAll('#keys tbody tr')].find((tr) => tr.innerText.includes(arguments[0])).querySelector('button.danger').click();",
            json!([keyid]),
        )
        .await;
    driver
        .until(
            "the revocation",
            &format!("return [...document.querySelectorAll('#keys tbody tr')].some((tr) => tr.innerText.includes('{keyid}') && tr.innerText.includes('revoked'))"),
            Duration::from_secs(10),
        )
        .await;
    let revoked = Instant::now();
    loop {
        let status = second
            .get(app.url("/v1/models"))
            .send()
            .await
            .expect("send")
            .status();
        if status == 401 {
            break;
        }
        assert!(revoked.elapsed() < Duration::from_secs(2), "still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The audit log, filtered to the revocation.
    driver.click("nav [data-page=audit]").await;
    driver.type_into("#audit-kind", "key_revoked").await;
    driver.click("#audit-form button[type=submit]").await;
    // The page's own unfiltered load may render first (it names the key too, in its
    // creation): wait for the filtered answer, every row of one kind, then count them.
    let rows = driver
        .until(
            "the revocation in the audit log, filtered",
            &format!("const rows = [...document.querySelectorAll('#audit tbody tr')]; return rows.length > 0 && rows.every((tr) => tr.cells[2].innerText === 'key_revoked') && rows.some((tr) => tr.innerText.includes('{keyid}')) ? rows.length : null;"),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(rows, 1, "only the revocation");
    // The checkpoint task signs the log within a second or so of the last event: verified
    // again until a checkpoint vouches for it (or 15 s pass).
    let asked = Instant::now();
    loop {
        driver
            .run(
                "document.getElementById('audit-verification').replaceChildren();",
                json!([]),
            )
            .await;
        driver.click("#audit-verify").await;
        let ok = driver
            .until(
                "the verification",
                "const v = document.getElementById('audit-verification'); return v.querySelector('.ok') ? 'ok' : v.querySelector('.bad') ? 'bad' : null;",
                Duration::from_secs(15),
            )
            .await;
        if ok == "ok" {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "never vouched for: {}",
            driver.text("#audit-verification").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        driver
            .text("#audit-verification")
            .await
            .contains("voxgate/audit"),
        "the latest checkpoint is shown"
    );
    driver.screenshot("console-audit").await;

    // Signed out: the page's API refuses, and the sign-in form is back.
    driver.click("#signout").await;
    driver
        .until(
            "the sign-in form",
            "return !document.getElementById('signin').hidden",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        driver.fetch_status("GET", "/console/api/accounts").await,
        401
    );
    driver.reload().await;
    driver
        .until(
            "the sign-in form after a reload",
            "return document.body.dataset.session === 'out' && !document.getElementById('signin').hidden && document.getElementById('nav').hidden",
            Duration::from_secs(10),
        )
        .await;
    driver.screenshot("console-signin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_speaks_and_transcribes_in_a_real_browser() {
    let app = spawn_app_with("[console]\nplayground = true").await;
    // A recording to upload: speech the server makes (tts-1-hd: Piper), as WAV.
    let sentence =
        "Please remember to water the plants in the kitchen every morning before you go to work.";
    let wav = app
        .client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1-hd", "voice": "alloy", "input": sentence, "response_format": "wav"}))
        .send()
        .await
        .expect("send");
    assert_eq!(wav.status(), 200);
    let upload_dir = tempfile::tempdir().expect("dir");
    let upload = upload_dir.path().join("sentence.wav");
    std::fs::write(&upload, wav.bytes().await.expect("wav")).expect("write");

    let driver = Driver::start().await;
    driver
        .goto(&format!("http://{}/playground/", app.addr))
        .await;
    driver.type_into("#signin-key", &app.key).await;
    driver.click("#signin-form button[type=submit]").await;
    driver
        .until(
            "the voices",
            "return document.getElementById('voice').options.length > 0 && document.getElementById('asr-model').options.length > 0",
            Duration::from_secs(15),
        )
        .await;
    driver
        .run(
            "window.played = false; document.getElementById('audio').addEventListener('ended', () => { window.played = true; });",
            json!([]),
        )
        .await;
    driver
        .type_into("#text", "The playground speaks this sentence aloud.")
        .await;
    driver.click("#speak").await;
    driver
        .until(
            "the end of playback",
            "return window.played",
            Duration::from_secs(60),
        )
        .await;
    let duration = driver
        .run(
            "return document.getElementById('audio').duration",
            json!([]),
        )
        .await
        .as_f64()
        .expect("duration");
    assert!(
        (1.0..15.0).contains(&duration),
        "a six-word sentence lasts {duration} s"
    );
    assert!(
        !driver.text("#download").await.is_empty(),
        "a download link"
    );
    assert_eq!(
        driver
            .run(
                "return document.getElementById('audio').dataset.streamed",
                json!([])
            )
            .await,
        "true",
        "MP3 plays while it arrives (Media Source Extensions)"
    );
    driver.screenshot("playground").await;
    assert_eq!(
        driver.unlabelled().await,
        json!([]),
        "every control has a label"
    );
    driver.fits_a_phone("playground-phone").await;

    // Transcribe the uploaded WAV.
    let input = driver.find("#upload").await;
    driver
        .call(
            reqwest::Method::POST,
            &format!("/element/{input}/value"),
            json!({"text": upload.display().to_string()}),
        )
        .await;
    driver.click("#transcribe").await;
    let heard = driver
        .until(
            "the transcript",
            "return document.getElementById('transcript').value",
            Duration::from_secs(120),
        )
        .await;
    let heard = heard.as_str().expect("text").to_lowercase();
    for word in ["remember", "plants", "kitchen", "morning"] {
        assert!(heard.contains(word), "heard {heard:?}");
    }
    driver.screenshot("playground-transcribed").await;

    // A recording from the microphone (Chromium's fake device: a tone), sent as WebM/Opus.
    driver
        .run(
            "document.getElementById('transcript').value = '';",
            json!([]),
        )
        .await;
    driver.click("#record").await;
    driver
        .until(
            "the recording",
            "return document.getElementById('transcribe-status').innerText === 'Recording…'",
            Duration::from_secs(10),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    driver.click("#stop").await;
    let outcome = driver
        .until(
            "the recording's transcription",
            "const s = document.getElementById('transcribe-status').innerText; const e = document.getElementById('transcribe-error').innerText; return s === 'Done.' || e ? s + '|' + e : null;",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        outcome, "Done.|",
        "the recording was accepted and recognised"
    );

    // A stored voice reference: uploaded, listed, deleted.
    let clip = upload_dir.path().join("reference.wav");
    std::fs::write(&clip, crate::helpers::tone_wav(6.0, 22_050)).expect("write");
    driver.type_into("#voice-name", "Browser voice").await;
    let file = driver.find("#voice-file").await;
    driver
        .call(
            reqwest::Method::POST,
            &format!("/element/{file}/value"),
            json!({"text": clip.display().to_string()}),
        )
        .await;
    driver.click("#voice-consent").await;
    driver.click("#voice-form button[type=submit]").await;
    driver
        .until(
            "the stored voice",
            "return document.getElementById('stored').innerText.includes('Browser voice')",
            Duration::from_secs(15),
        )
        .await;
    let stored = app
        .client
        .get(app.url("/v1/audio/voices"))
        .send()
        .await
        .expect("send");
    let stored: Value = stored.json().await.expect("json");
    assert_eq!(stored["stored"][0]["name"], "Browser voice");
    driver.run("window.confirm = () => true;", json!([])).await;
    driver.click("#stored button.danger").await;
    driver
        .until(
            "the voice gone",
            "return !document.getElementById('stored').innerText.includes('Browser voice')",
            Duration::from_secs(15),
        )
        .await;
}
