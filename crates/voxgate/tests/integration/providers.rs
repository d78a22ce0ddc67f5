//! Remote providers against local HTTP servers that speak their protocols (OpenAI-compatible
//! speech and transcription, ElevenLabs, Pollinations): what voxgate sends, how each failure
//! is handled (5xx, timeouts, slow and huge bodies, malformed audio, redirects to a private
//! address, names that resolve to loopback), the breaker opening and recovering, fallback
//! chains, PII redaction, voice cloning and the encrypted cache.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::helpers::{error_of, file_part, spawn_app_with_secrets, tone_wav};

/// What the stub answers next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    ServerError,
    /// Headers, then nothing until long after voxgate's read timeout.
    StallBeforeBody,
    /// No answer at all until long after the total timeout.
    NoAnswer,
    /// A 200 with an HTML body.
    WrongContentType,
    /// A 200 audio body with an odd number of bytes.
    OddPcm,
    /// A body larger than the configured cap.
    Huge,
    /// 307 to another local server.
    Redirect,
    /// 422: the provider refuses the request's content.
    RefuseContent,
    /// A 200 that says `audio/mpeg` and carries PCM.
    NotMp3,
    /// 400 to `response_format: mp3` (a server without MP3); PCM as usual.
    NoMp3,
}

#[derive(Debug)]
struct Stub {
    mode: Mutex<Mode>,
    hits: AtomicUsize,
    clones: AtomicUsize,
    /// The clones ElevenLabs holds now (made, not deleted): (voice id, name).
    known_clones: Mutex<Vec<(String, String)>>,
    /// How long making a clone takes.
    clone_delay: Mutex<Duration>,
    /// Deleting a clone answers 500.
    delete_fails: std::sync::atomic::AtomicBool,
    deleted: Mutex<Vec<String>>,
    auth: Mutex<Vec<String>>,
    bodies: Mutex<Vec<Value>>,
    paths: Mutex<Vec<String>>,
    redirect_to: Mutex<String>,
}

impl Stub {
    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    fn last_body(&self) -> Value {
        self.bodies
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// Half a second of a 440 Hz tone at 24 kHz, little-endian 16-bit.
fn pcm_tone() -> Vec<u8> {
    (0..12_000)
        .map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / 24_000.0).sin() * 8000.0) as i16)
        .flat_map(i16::to_le_bytes)
        .collect()
}

fn mp3_tone() -> Vec<u8> {
    let samples: Vec<i16> = pcm_tone()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut encoder =
        voxgate::audio::Encoder::new(voxgate::audio::AudioFormat::Mp3).expect("encoder");
    let mut out = encoder.encode(&samples).expect("encode");
    out.extend(encoder.finish().expect("finish"));
    out
}

async fn answer(stub: &Stub, ok: impl FnOnce() -> Response) -> Response {
    let mode = *stub.mode.lock().expect("lock");
    match mode {
        Mode::Ok | Mode::NoMp3 => ok(),
        Mode::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "SECRET-UPSTREAM-DETAIL: stack trace at /srv/model.py",
        )
            .into_response(),
        Mode::StallBeforeBody => {
            let body = futures::stream::once(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, std::io::Error>(Bytes::from_static(&[0, 0]))
            });
            (
                [(header::CONTENT_TYPE, "audio/pcm")],
                Body::from_stream(body),
            )
                .into_response()
        }
        Mode::NoAnswer => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            ok()
        }
        Mode::WrongContentType => {
            ([(header::CONTENT_TYPE, "text/html")], "<html>oops</html>").into_response()
        }
        Mode::OddPcm => ([(header::CONTENT_TYPE, "audio/pcm")], vec![1u8, 2, 3]).into_response(),
        Mode::NotMp3 => ([(header::CONTENT_TYPE, "audio/mpeg")], pcm_tone()).into_response(),
        Mode::Huge => ([(header::CONTENT_TYPE, "audio/pcm")], vec![0u8; 300_000]).into_response(),
        Mode::RefuseContent => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "SECRET-UPSTREAM-DETAIL: this text is not allowed",
        )
            .into_response(),
        Mode::Redirect => {
            let to = stub.redirect_to.lock().expect("lock").clone();
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
        }
    }
}

fn record(stub: &Stub, headers: &HeaderMap, auth_header: &str, path: String) {
    stub.hits.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get(auth_header)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    stub.auth.lock().expect("lock").push(auth);
    stub.paths.lock().expect("lock").push(path);
}

/// Answers in the format asked for: MP3 for `mp3`, PCM otherwise.
async fn openai_speech(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    record(&stub, &headers, "authorization", "/v1/audio/speech".into());
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mp3 = body["response_format"] == "mp3";
    stub.bodies.lock().expect("lock").push(body);
    if mp3 && *stub.mode.lock().expect("lock") == Mode::NoMp3 {
        return (
            StatusCode::BAD_REQUEST,
            "response_format: mp3 is not supported",
        )
            .into_response();
    }
    answer(&stub, || {
        if mp3 {
            ([(header::CONTENT_TYPE, "audio/mpeg")], mp3_tone()).into_response()
        } else {
            ([(header::CONTENT_TYPE, "audio/pcm")], pcm_tone()).into_response()
        }
    })
    .await
}

async fn openai_transcriptions(
    State(stub): State<Arc<Stub>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(
        &stub,
        &headers,
        "authorization",
        "/v1/audio/transcriptions".into(),
    );
    let text = String::from_utf8_lossy(&body);
    let verbose = text.contains("verbose_json");
    let has_wav = text.contains("RIFF") && text.contains("WAVE");
    answer(&stub, || {
        let mut answer =
            json!({"text": if has_wav { " Hello from upstream. " } else { "no audio" }});
        if verbose {
            answer["language"] = json!("english");
            answer["segments"] =
                json!([{"start": 0.0, "end": 1.0, "text": " Hello from upstream."}]);
            answer["words"] = json!([{"word": "Hello", "start": 0.1, "end": 0.4}]);
        }
        axum::Json(answer).into_response()
    })
    .await
}

/// `/audio/translations`: English text, whatever was spoken; no language or word timings in
/// the form (OpenAI's translation form has neither).
async fn openai_translations(
    State(stub): State<Arc<Stub>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(
        &stub,
        &headers,
        "authorization",
        "/v1/audio/translations".into(),
    );
    let text = String::from_utf8_lossy(&body);
    let clean = !text.contains("name=\"language\"") && !text.contains("timestamp_granularities");
    answer(&stub, || {
        axum::Json(
            json!({"text": if clean { " Translated upstream. " } else { "unexpected field" }}),
        )
        .into_response()
    })
    .await
}

async fn elevenlabs_tts(
    State(stub): State<Arc<Stub>>,
    Path(voice): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let format = query.get("output_format").cloned().unwrap_or_default();
    record(
        &stub,
        &headers,
        "xi-api-key",
        format!("tts/{voice}?{format}"),
    );
    stub.bodies
        .lock()
        .expect("lock")
        .push(serde_json::from_slice(&body).unwrap_or_default());
    if voice.starts_with("clonedVoice")
        && !stub
            .known_clones
            .lock()
            .expect("lock")
            .iter()
            .any(|(id, _)| *id == voice)
    {
        return (StatusCode::NOT_FOUND, "voice_not_found").into_response();
    }
    answer(&stub, || {
        ([(header::CONTENT_TYPE, "audio/pcm")], pcm_tone()).into_response()
    })
    .await
}

async fn elevenlabs_add(
    State(stub): State<Arc<Stub>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let made = stub.clones.fetch_add(1, Ordering::SeqCst) + 1;
    if *stub.mode.lock().expect("lock") == Mode::ServerError {
        return (StatusCode::INTERNAL_SERVER_ERROR, "SECRET-UPSTREAM-DETAIL").into_response();
    }
    let delay = *stub.clone_delay.lock().expect("lock");
    tokio::time::sleep(delay).await;
    let key = headers
        .get("xi-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = String::from_utf8_lossy(&body);
    if key != "el-secret" || !text.contains("name=\"files\"") || !text.contains("RIFF") {
        return (StatusCode::BAD_REQUEST, "bad clone request").into_response();
    }
    let id = format!("clonedVoice{made}");
    // The form's `name` field.
    let name = text
        .split("name=\"name\"\r\n\r\n")
        .nth(1)
        .and_then(|rest| rest.split("\r\n").next())
        .unwrap_or("")
        .to_owned();
    stub.known_clones
        .lock()
        .expect("lock")
        .push((id.clone(), name));
    axum::Json(json!({"voice_id": id})).into_response()
}

async fn pollinations(
    State(stub): State<Arc<Stub>>,
    Path(text): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    record(&stub, &headers, "authorization", text.clone());
    stub.bodies
        .lock()
        .expect("lock")
        .push(json!({"text": text, "query": query}));
    answer(&stub, || {
        ([(header::CONTENT_TYPE, "audio/mpeg")], mp3_tone()).into_response()
    })
    .await
}

async fn elevenlabs_list(State(stub): State<Arc<Stub>>, headers: HeaderMap) -> Response {
    if headers.get("xi-api-key").and_then(|v| v.to_str().ok()) != Some("el-secret") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let voices: Vec<Value> = stub
        .known_clones
        .lock()
        .expect("lock")
        .iter()
        .map(|(id, name)| json!({"voice_id": id, "name": name, "category": "cloned"}))
        .collect();
    axum::Json(json!({"voices": voices})).into_response()
}

async fn elevenlabs_delete(
    State(stub): State<Arc<Stub>>,
    Path(voice): Path<String>,
    headers: HeaderMap,
) -> StatusCode {
    let key = headers
        .get("xi-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key != "el-secret" {
        return StatusCode::UNAUTHORIZED;
    }
    if stub.delete_fails.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let mut known = stub.known_clones.lock().expect("lock");
    let Some(at) = known.iter().position(|(id, _)| *id == voice) else {
        return StatusCode::NOT_FOUND;
    };
    known.remove(at);
    stub.deleted.lock().expect("lock").push(voice);
    StatusCode::OK
}

/// Starts a stub on 127.0.0.1:0 that speaks every provider's protocol.
async fn stub() -> (SocketAddr, Arc<Stub>) {
    let state = Arc::new(Stub {
        mode: Mutex::new(Mode::Ok),
        hits: AtomicUsize::new(0),
        clones: AtomicUsize::new(0),
        known_clones: Mutex::new(Vec::new()),
        clone_delay: Mutex::new(Duration::ZERO),
        delete_fails: std::sync::atomic::AtomicBool::new(false),
        deleted: Mutex::new(Vec::new()),
        auth: Mutex::new(Vec::new()),
        bodies: Mutex::new(Vec::new()),
        paths: Mutex::new(Vec::new()),
        redirect_to: Mutex::new(String::new()),
    });
    let app = axum::Router::new()
        .route("/v1/audio/speech", post(openai_speech))
        .route("/v1/audio/transcriptions", post(openai_transcriptions))
        .route("/v1/audio/translations", post(openai_translations))
        .route("/v1/text-to-speech/{voice}/stream", post(elevenlabs_tts))
        .route("/v1/voices/add", post(elevenlabs_add))
        .route("/v1/voices", get(elevenlabs_list))
        .route(
            "/v1/voices/{voice}",
            axum::routing::delete(elevenlabs_delete),
        )
        .route("/poll/{text}", get(pollinations))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, state)
}

/// An `upstream` OpenAI-compatible engine at `addr` (voice alias `alloy` → `up-voice`), a
/// model `remote` that only it serves and `chained` = upstream → flite.
fn openai_config(addr: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[engines.upstream]
kind = "openai"
base_url = "http://{addr}/v1"
model = "kokoro"
api_key_env = "UPSTREAM_KEY"
voices = {{ alloy = "up-voice" }}
http = {{ allow_local = true, allow_http = true, read_timeout_ms = 500, total_timeout_secs = 3, connect_timeout_ms = 500, max_response_bytes = 100000 }}
breaker = {{ consecutive_failures = 3, cooldown_secs = 1 }}
[models.remote]
engine = "upstream"
[models.chained]
engine = "upstream"
fallback = ["flite"]
{extra}
"#
    )
}

fn speech(model: &str, input: &str) -> Value {
    json!({"model": model, "input": input, "voice": "alloy", "response_format": "pcm"})
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn an_openai_compatible_upstream_serves_with_its_key_and_is_named() {
    let (addr, up) = stub().await;
    let app =
        spawn_app_with_secrets(&openai_config(addr, ""), &[("UPSTREAM_KEY", "up-secret")]).await;
    let response = app
        .client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "remote", "input": "Hello there.", "voice": "alloy", "response_format": "pcm", "speed": 1.25}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-voxgate-engine"), "upstream");
    let audio = response.bytes().await.expect("body");
    // 0.5 s at 24 kHz passes through the 24 kHz pipeline unchanged in length.
    assert_eq!(audio.len(), 24_000, "{}", audio.len());
    assert_eq!(
        up.auth.lock().expect("lock").last().map(String::as_str),
        Some("Bearer up-secret")
    );
    let body = up.last_body();
    assert_eq!(body["model"], "kokoro");
    assert_eq!(body["voice"], "up-voice");
    assert_eq!(body["input"], "Hello there.");
    assert_eq!(body["response_format"], "pcm");
    assert_eq!(body["speed"], 1.25);
}

/// A client asking for a format the upstream sends itself gets the upstream's bytes,
/// unchanged (`x-voxgate-audio: relayed`), metered from the stream's own frames. A script
/// with a pause needs PCM and is transcoded; so is every answer of an engine with
/// `relay = false`; a body that is not what its type says falls back before any audio.
#[tokio::test]
async fn the_upstream_s_own_audio_is_relayed_unchanged_and_metered() {
    let (addr, up) = stub().await;
    let plain = format!(
        r#"
[engines.plain]
kind = "openai"
base_url = "http://{addr}/v1"
model = "kokoro"
relay = false
voices = {{ alloy = "up-voice" }}
http = {{ allow_local = true, allow_http = true }}
[models.plain]
engine = "plain"
"#
    );
    let app = spawn_app_with_secrets(
        &openai_config(addr, &plain),
        &[("UPSTREAM_KEY", "up-secret")],
    )
    .await;
    let (account, key) = crate::helpers::create_key(&app.state, "basic", None, None).await;
    let client = crate::helpers::client_with(Some(&key));
    for (format, expected) in [("mp3", mp3_tone()), ("pcm", pcm_tone())] {
        let response = client
            .post(app.url("/v1/audio/speech"))
            .json(&json!({"model": "remote", "input": "Hello there.", "voice": "alloy", "response_format": format}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200, "{format}");
        assert_eq!(header(&response, "x-voxgate-audio"), "relayed", "{format}");
        assert_eq!(up.last_body()["response_format"], format);
        let audio = response.bytes().await.expect("body");
        assert!(
            audio == expected,
            "{format}: the upstream's bytes, unchanged"
        );
    }
    // Each answer is half a second (the MP3 a few frames more): one second each, rounded
    // up per request; the characters of both.
    let mut seconds = (0, 1);
    for _ in 0..100 {
        seconds = crate::helpers::usage(&app, &account, "audio_seconds").await;
        if seconds.1 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seconds, (2, 0), "audio seconds (used, reserved)");
    assert_eq!(
        crate::helpers::usage(&app, &account, "characters").await,
        (24, 0)
    );

    // A pause needs PCM: transcoded, and the upstream was asked for PCM.
    let response = app
        .client
        .post(app.url("/v1/audio/speech"))
        .json(
            &json!({"model": "remote", "input": "<speak>One.<break time=\"500ms\"/>Two.</speak>",
            "input_format": "ssml", "voice": "alloy", "response_format": "mp3"}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-voxgate-audio"), "transcoded");
    assert_eq!(up.last_body()["response_format"], "pcm");
    let response = app
        .client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "plain", "input": "Hello.", "voice": "alloy", "response_format": "mp3"}))
        .send()
        .await
        .expect("send");
    assert_eq!(header(&response, "x-voxgate-audio"), "transcoded");
    assert_eq!(up.last_body()["response_format"], "pcm");

    // An upstream without MP3 (400 to the format) refuses a relay, as any refusal (the text
    // is not sent twice); with `relay = false` it is asked for PCM and serves.
    up.set(Mode::NoMp3);
    let hits = up.hits();
    let refused = app
        .client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "remote", "input": "Hello.", "voice": "alloy", "response_format": "mp3"}))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 400);
    assert_eq!(up.hits(), hits + 1);
    let response = app
        .client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "plain", "input": "Hello.", "voice": "alloy", "response_format": "mp3"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-voxgate-engine"), "plain");
    assert_eq!(header(&response, "x-voxgate-audio"), "transcoded");
    assert_eq!(up.last_body()["response_format"], "pcm");

    // PCM labelled as MP3: refused at its first bytes, the chain's next engine answers; it
    // counts against the upstream's breaker (three failures open it: the upstream is no
    // longer called).
    up.set(Mode::NotMp3);
    for _ in 0..3 {
        let response = app
            .client
            .post(app.url("/v1/audio/speech"))
            .json(&json!({"model": "chained", "input": "Hello.", "voice": "alloy", "response_format": "mp3"}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-voxgate-engine"), "flite");
        assert_eq!(header(&response, "x-voxgate-audio"), "transcoded");
        let _ = response.bytes().await;
    }
    let hits = up.hits();
    let response = app
        .client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "chained", "input": "Hello.", "voice": "alloy", "response_format": "mp3"}))
        .send()
        .await
        .expect("send");
    assert_eq!(header(&response, "x-voxgate-engine"), "flite");
    assert_eq!(up.hits(), hits, "the breaker is open");
}

#[tokio::test]
async fn every_upstream_failure_falls_back_before_any_audio_and_hides_provider_text() {
    let (addr, up) = stub().await;
    let app = spawn_app_with_secrets(
        &openai_config(addr, "").replace(
            "consecutive_failures = 3, cooldown_secs = 1",
            "consecutive_failures = 100, min_requests = 1000",
        ),
        &[("UPSTREAM_KEY", "k")],
    )
    .await;
    for mode in [
        Mode::ServerError,
        Mode::StallBeforeBody,
        Mode::NoAnswer,
        Mode::WrongContentType,
        Mode::OddPcm,
        Mode::Huge,
    ] {
        up.set(mode);
        let started = std::time::Instant::now();
        let response = app.speech(speech("chained", "Fallback please.")).await;
        assert_eq!(response.status(), 200, "{mode:?}");
        assert_eq!(header(&response, "x-voxgate-engine"), "flite", "{mode:?}");
        let audio = response.bytes().await.expect("body");
        assert!(audio.len() > 10_000, "{mode:?}: Flite spoke");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode:?} bounded by timeouts"
        );

        // Without a fallback the client sees a generic error, never the provider's text.
        let response = app.speech(speech("remote", "No fallback.")).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("text");
        assert!([502, 504].contains(&status), "{mode:?}: {status} {text}");
        assert!(
            !text.contains("SECRET-UPSTREAM-DETAIL") && !text.contains("oops"),
            "{text}"
        );
        assert!(text.contains("\"error\""), "OpenAI envelope: {text}");
    }
}

#[tokio::test]
async fn redirects_are_never_followed_to_a_private_address() {
    let (addr, up) = stub().await;
    let (inner, internal) = stub().await;
    *up.redirect_to.lock().expect("lock") = format!("http://{inner}/v1/audio/speech");
    up.set(Mode::Redirect);
    let app = spawn_app_with_secrets(&openai_config(addr, ""), &[("UPSTREAM_KEY", "k")]).await;
    let response = app.speech(speech("remote", "Go elsewhere.")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(up.hits(), 1);
    assert_eq!(
        internal.hits(),
        0,
        "the redirect target was never contacted"
    );
    let response = app.speech(speech("chained", "Go elsewhere.")).await;
    assert_eq!(header(&response, "x-voxgate-engine"), "flite");
    assert_eq!(internal.hits(), 0);
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_without_allow_local() {
    let (addr, up) = stub().await;
    let config = format!(
        r#"
[engines.upstream]
kind = "openai"
base_url = "http://localhost:{}/v1"
model = "kokoro"
voices = {{ alloy = "up-voice" }}
http = {{ allow_http = true }}
[models.remote]
engine = "upstream"
"#,
        addr.port()
    );
    let app = spawn_app_with_secrets(&config, &[]).await;
    let response = app.speech(speech("remote", "Reach inside.")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(up.hits(), 0, "nothing reached the loopback server");
}

#[tokio::test]
async fn the_breaker_opens_serves_the_fallback_at_once_and_recovers_after_its_cooldown() {
    let (addr, up) = stub().await;
    let app = spawn_app_with_secrets(&openai_config(addr, ""), &[("UPSTREAM_KEY", "k")]).await;
    up.set(Mode::ServerError);
    for _ in 0..3 {
        let response = app.speech(speech("chained", "One.")).await;
        assert_eq!(header(&response, "x-voxgate-engine"), "flite");
    }
    assert_eq!(up.hits(), 3);
    // Open: the upstream is not called, the fallback serves.
    up.set(Mode::Ok);
    let response = app.speech(speech("chained", "Two.")).await;
    assert_eq!(header(&response, "x-voxgate-engine"), "flite");
    assert_eq!(up.hits(), 3, "an open breaker sends nothing");
    let response = app.speech(speech("remote", "Two.")).await;
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (503, Some("engine_unavailable")));
    let metrics = app
        .client
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("voxgate_breaker_state{engine=\"upstream\",state=\"open\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("voxgate_provider_calls_total{engine=\"upstream\",outcome=\"rejected\"}")
    );
    // After the cooldown one probe goes through; its success closes the breaker.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = app.speech(speech("chained", "Three.")).await;
    assert_eq!(header(&response, "x-voxgate-engine"), "upstream");
    assert_eq!(up.hits(), 4);
    let response = app.speech(speech("chained", "Four.")).await;
    assert_eq!(header(&response, "x-voxgate-engine"), "upstream");
}

/// A provider that refuses a request's content (a 4xx other than 408/429) answers that
/// caller with a 400; it is not the provider failing, so it never opens the breaker every
/// tenant shares, and the chain does not move on.
#[tokio::test]
async fn content_refusals_are_the_callers_and_never_open_the_breaker() {
    let (addr, up) = stub().await;
    let app = spawn_app_with_secrets(&openai_config(addr, ""), &[("UPSTREAM_KEY", "k")]).await;
    up.set(Mode::RefuseContent);
    for _ in 0..6 {
        let (status, code, _) = error_of(app.speech(speech("remote", "Refuse me.")).await).await;
        assert_eq!((status, code.as_deref()), (400, Some("unsupported_input")));
        let response = app.speech(speech("chained", "Refuse me.")).await;
        assert_eq!(response.status(), 400, "a client error does not fall back");
        let text = response.text().await.expect("text");
        assert!(!text.contains("SECRET-UPSTREAM-DETAIL"), "{text}");
    }
    assert_eq!(
        up.hits(),
        12,
        "every request reached the provider: the breaker stayed closed"
    );
    up.set(Mode::Ok);
    let response = app.speech(speech("remote", "Fine now.")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-voxgate-engine"), "upstream");
}

#[tokio::test]
async fn pii_is_redacted_before_text_leaves_for_a_remote_engine() {
    let (addr, up) = stub().await;
    let app = spawn_app_with_secrets(
        &openai_config(addr, &crate::helpers::every_tier("redact_pii = true")),
        &[("UPSTREAM_KEY", "k")],
    )
    .await;
    let response = app
        .speech(speech(
            "remote",
            "Mail jane.doe@example.com or call +1 415 555 0100.",
        ))
        .await;
    assert_eq!(response.status(), 200);
    let sent = up.last_body()["input"].as_str().expect("input").to_owned();
    assert!(
        !sent.contains("jane.doe@example.com") && !sent.contains("555 0100"),
        "{sent}"
    );
}

#[tokio::test]
async fn elevenlabs_streams_pcm_with_its_key_and_clones_a_stored_voice_once() {
    let (addr, el) = stub().await;
    let config = format!(
        r#"
[engines.eleven]
kind = "elevenlabs"
base_url = "http://{addr}"
model_id = "eleven_multilingual_v2"
api_key_env = "ELEVEN_KEY"
voices = {{ alloy = "21m00Tcm4TlvDq8ikWAM" }}
output_format = "pcm_24000"
cloning = true
http = {{ allow_local = true, allow_http = true }}
[models.eleven]
engine = "eleven"
"#
    );
    let app = spawn_app_with_secrets(&config, &[("ELEVEN_KEY", "el-secret")]).await;
    let response = app
        .speech(json!({"model": "eleven", "input": "Hi.", "voice": "alloy", "response_format": "pcm", "speed": 3.0}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-voxgate-engine"), "eleven");
    assert_eq!(response.bytes().await.expect("body").len(), 24_000);
    assert_eq!(
        el.auth.lock().expect("lock").last().map(String::as_str),
        Some("el-secret")
    );
    assert_eq!(
        el.paths.lock().expect("lock").last().map(String::as_str),
        Some("tts/21m00Tcm4TlvDq8ikWAM?pcm_24000")
    );
    let body = el.last_body();
    assert_eq!(body["model_id"], "eleven_multilingual_v2");
    assert_eq!(
        body["voice_settings"]["speed"], 1.2,
        "clamped to ElevenLabs' range"
    );

    // A stored voice: uploaded once for cloning, then spoken with the id ElevenLabs gave.
    let form = reqwest::multipart::Form::new()
        .text("name", "Mine")
        .text("consent", "true")
        .part("audio_sample", file_part(tone_wav(6.0, 22_050), "me.wav"));
    let created: Value = app
        .client
        .post(app.url("/v1/audio/voices"))
        .multipart(form)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    for _ in 0..2 {
        let response = app
            .speech(json!({"model": "eleven", "input": "Cloned.", "voice": {"id": id}, "response_format": "pcm"}))
            .await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(el.clones.load(Ordering::SeqCst), 1, "cloned once");
    assert_eq!(
        el.paths.lock().expect("lock").last().map(String::as_str),
        Some("tts/clonedVoice1?pcm_24000")
    );
    // Deleting the stored voice deletes the clone made from it at the provider.
    let response = app
        .client
        .delete(app.url(&format!("/v1/audio/voices/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 200);
    assert_eq!(*el.deleted.lock().expect("lock"), ["clonedVoice1"]);
    // Flite cannot clone: a stored voice on a Flite model is refused.
    let form = reqwest::multipart::Form::new()
        .text("name", "Again")
        .text("consent", "true")
        .part("audio_sample", file_part(tone_wav(6.0, 22_050), "me.wav"));
    let again: Value = app
        .client
        .post(app.url("/v1/audio/voices"))
        .multipart(form)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let id = again["id"].as_str().expect("id").to_owned();
    let response = app
        .speech(json!({"model": "tts-1", "input": "x", "voice": {"id": id}}))
        .await;
    let (status, code, _) = error_of(response).await;
    assert_eq!(
        (status, code.as_deref()),
        (400, Some("voice_cloning_unsupported"))
    );
}

/// An ElevenLabs engine at `addr` that clones, as model `eleven`, over `extra`.
fn eleven_config(addr: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[engines.eleven]
kind = "elevenlabs"
base_url = "http://{addr}"
model_id = "eleven_multilingual_v2"
api_key_env = "ELEVEN_KEY"
voices = {{ alloy = "21m00Tcm4TlvDq8ikWAM" }}
output_format = "pcm_24000"
cloning = true
http = {{ allow_local = true, allow_http = true }}
[models.eleven]
engine = "eleven"
{extra}
"#
    )
}

/// Stores a voice (consented, 6 s) as `client`'s account on `app`; its id.
async fn store_voice(app: &crate::helpers::TestApp, client: &reqwest::Client) -> String {
    let form = reqwest::multipart::Form::new()
        .text("name", "Mine")
        .text("consent", "true")
        .part("audio_sample", file_part(tone_wav(6.0, 22_050), "me.wav"));
    let created: Value = client
        .post(app.url("/v1/audio/voices"))
        .multipart(form)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    created["id"].as_str().expect("id").to_owned()
}

/// Speaks with the stored voice `id` on `app` as `client`; the status, body read.
/// A request for speech in the stored voice `id` (through its ElevenLabs clone).
fn stored_speech(
    app: &crate::helpers::TestApp,
    client: &reqwest::Client,
    id: &str,
) -> reqwest::RequestBuilder {
    client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "eleven", "input": "Cloned.", "voice": {"id": id}, "response_format": "pcm"}))
}

async fn speak_stored(app: &crate::helpers::TestApp, client: &reqwest::Client, id: &str) -> u16 {
    let response = stored_speech(app, client, id).send().await.expect("send");
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    status
}

async fn delete_voice(app: &crate::helpers::TestApp, client: &reqwest::Client, id: &str) -> u16 {
    client
        .delete(app.url(&format!("/v1/audio/voices/{id}")))
        .send()
        .await
        .expect("delete")
        .status()
        .as_u16()
}

/// The secrets instances that share a database must share.
fn shared_secrets(database_url: &str) -> String {
    format!(
        "[database]\nurl = \"{database_url}\"\n[auth]\npepper = \"{}\"\n[storage]\nmaster_key = \"{}\"\n",
        "p".repeat(40),
        "m".repeat(40)
    )
}

#[tokio::test]
async fn a_clone_made_before_a_restart_is_deleted_after_it() {
    let (addr, el) = stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = shared_secrets(&format!(
        "sqlite://{}",
        dir.path().join("shared.db").display()
    ));
    let config = eleven_config(addr, &shared);
    let mut before = spawn_app_with_secrets(&config, &[("ELEVEN_KEY", "el-secret")]).await;
    let id = store_voice(&before, &before.client).await;
    assert_eq!(speak_stored(&before, &before.client, &id).await, 200);
    assert_eq!(el.clones.load(Ordering::SeqCst), 1);
    let key = before.key.clone();
    before.stop();
    if let Some(server) = before.server.take() {
        let _ = server.await;
    }
    drop(before);

    // A new process on the same database: it speaks with the recorded clone (no second
    // upload) and deleting the voice deletes the clone at ElevenLabs.
    let after = spawn_app_with_secrets(&config, &[("ELEVEN_KEY", "el-secret")]).await;
    let owner = crate::helpers::client_with(Some(&key));
    assert_eq!(speak_stored(&after, &owner, &id).await, 200);
    assert_eq!(
        el.clones.load(Ordering::SeqCst),
        1,
        "the recorded clone is used"
    );
    assert_eq!(
        el.paths.lock().expect("lock").last().map(String::as_str),
        Some("tts/clonedVoice1?pcm_24000")
    );
    assert_eq!(delete_voice(&after, &owner, &id).await, 200);
    assert_eq!(*el.deleted.lock().expect("lock"), ["clonedVoice1"]);
    assert!(
        after
            .state
            .store
            .clones_of(&id, 30)
            .await
            .expect("read")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_postgres_make_one_clone_and_either_deletes_it() {
    let (addr, el) = stub().await;
    let db = crate::store::PgDatabase::create().await;
    let config = eleven_config(addr, &shared_secrets(&db.url));
    let a = spawn_app_with_secrets(&config, &[("ELEVEN_KEY", "el-secret")]).await;
    let b = spawn_app_with_secrets(&config, &[("ELEVEN_KEY", "el-secret")]).await;
    let owner_on_b = crate::helpers::client_with(Some(&a.key));
    let id = store_voice(&a, &a.client).await;
    // Making the clone takes a while: both first uses (one per instance, and a second on
    // A) arrive while it is being made.
    *el.clone_delay.lock().expect("lock") = Duration::from_millis(600);
    let (on_a, on_b, again_on_a) = tokio::join!(
        speak_stored(&a, &a.client, &id),
        speak_stored(&b, &owner_on_b, &id),
        speak_stored(&a, &a.client, &id),
    );
    assert_eq!((on_a, on_b, again_on_a), (200, 200, 200));
    assert_eq!(
        el.clones.load(Ordering::SeqCst),
        1,
        "one clone for concurrent first uses"
    );
    let spoken: Vec<String> = el.paths.lock().expect("lock").clone();
    assert_eq!(
        spoken
            .iter()
            .filter(|p| p.as_str() == "tts/clonedVoice1?pcm_24000")
            .count(),
        3,
        "{spoken:?}"
    );
    // B did not make it, and deletes it.
    assert_eq!(delete_voice(&b, &owner_on_b, &id).await, 200);
    assert_eq!(*el.deleted.lock().expect("lock"), ["clonedVoice1"]);
    assert!(
        a.state
            .store
            .clones_of(&id, 30)
            .await
            .expect("read")
            .is_empty()
    );
    drop((a, b));
    db.drop_now().await;
}

#[tokio::test]
async fn a_clone_the_provider_could_not_delete_is_swept_later_and_erasure_deletes_clones() {
    let (addr, el) = stub().await;
    let app =
        spawn_app_with_secrets(&eleven_config(addr, ""), &[("ELEVEN_KEY", "el-secret")]).await;
    let id = store_voice(&app, &app.client).await;
    assert_eq!(speak_stored(&app, &app.client, &id).await, 200);
    // ElevenLabs fails the deletion: the voice is gone, its clone stays recorded.
    el.delete_fails.store(true, Ordering::SeqCst);
    assert_eq!(delete_voice(&app, &app.client, &id).await, 200);
    assert!(el.deleted.lock().expect("lock").is_empty());
    assert_eq!(
        app.state
            .store
            .clones_of(&id, 30)
            .await
            .expect("read")
            .len(),
        1
    );
    let swept = voxgate::service::retention::sweep(&app.state)
        .await
        .expect("sweep");
    assert_eq!(swept.voice_clones, 0, "still failing");
    // Once it answers again, the sweep deletes the clone and its record.
    el.delete_fails.store(false, Ordering::SeqCst);
    let swept = voxgate::service::retention::sweep(&app.state)
        .await
        .expect("sweep");
    assert_eq!(swept.voice_clones, 1);
    assert_eq!(*el.deleted.lock().expect("lock"), ["clonedVoice1"]);
    assert!(
        app.state
            .store
            .clones_of(&id, 30)
            .await
            .expect("read")
            .is_empty()
    );

    // The export says which providers hold a clone of a voice.
    let export: Value = app
        .client
        .get(app.url("/v1/me/export"))
        .send()
        .await
        .expect("export")
        .json()
        .await
        .expect("json");
    assert_eq!(export["voices"], json!([]), "the swept voice is gone");

    // Erasing an account deletes its clones too (after its data key is shredded: the clone
    // ids are sealed under a key of the gateway's own).
    let (account, key) = crate::helpers::create_key(&app.state, "admin", None, None).await;
    let owner = crate::helpers::client_with(Some(&key));
    let other = store_voice(&app, &owner).await;
    assert_eq!(speak_stored(&app, &owner, &other).await, 200);
    let export: Value = owner
        .get(app.url("/v1/me/export"))
        .send()
        .await
        .expect("export")
        .json()
        .await
        .expect("json");
    assert_eq!(
        export["voices"][0]["cloned_by"],
        json!(["eleven"]),
        "{export}"
    );
    let erased: Value = app
        .client
        .delete(app.admin_url(&format!("/admin/accounts/{account}")))
        .send()
        .await
        .expect("erase")
        .json()
        .await
        .expect("json");
    assert_eq!(erased["voice_clones_deleted"], 1, "{erased}");
    assert_eq!(erased["voice_clones_pending"], 0, "{erased}");
    assert_eq!(
        *el.deleted.lock().expect("lock"),
        ["clonedVoice1", "clonedVoice2"]
    );
    assert!(
        app.state
            .store
            .clones_of(&other, 30)
            .await
            .expect("read")
            .is_empty()
    );
}

#[tokio::test]
async fn a_clone_deleted_at_the_provider_is_made_again() {
    let (addr, el) = stub().await;
    let app =
        spawn_app_with_secrets(&eleven_config(addr, ""), &[("ELEVEN_KEY", "el-secret")]).await;
    let id = store_voice(&app, &app.client).await;
    assert_eq!(speak_stored(&app, &app.client, &id).await, 200);
    // Someone deletes it in ElevenLabs' own dashboard.
    el.known_clones.lock().expect("lock").clear();
    assert_eq!(speak_stored(&app, &app.client, &id).await, 200);
    assert_eq!(el.clones.load(Ordering::SeqCst), 2);
    assert_eq!(
        el.paths.lock().expect("lock").last().map(String::as_str),
        Some("tts/clonedVoice2?pcm_24000")
    );
    // A failed upload leaves no record (nor lock) behind: the next use tries again.
    let other = store_voice(&app, &app.client).await;
    el.set(Mode::ServerError);
    assert_eq!(speak_stored(&app, &app.client, &other).await, 502);
    assert!(
        app.state
            .store
            .clones_of(&other, 30)
            .await
            .expect("read")
            .is_empty()
    );
    el.set(Mode::Ok);
    assert_eq!(speak_stored(&app, &app.client, &other).await, 200);
    assert_eq!(el.clones.load(Ordering::SeqCst), 4);
}

/// Waits (bounded) until `done` holds, polling.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn a_caller_that_hangs_up_during_the_upload_leaves_a_recorded_clone() {
    let (addr, el) = stub().await;
    let app =
        spawn_app_with_secrets(&eleven_config(addr, ""), &[("ELEVEN_KEY", "el-secret")]).await;
    let id = store_voice(&app, &app.client).await;
    *el.clone_delay.lock().expect("lock") = Duration::from_millis(600);
    // The caller hangs up once the upload has reached the provider (which takes 600 ms to
    // answer it): the request's task is dropped, and its connection with it.
    let request = tokio::spawn(stored_speech(&app, &app.client, &id).send());
    eventually("the upload has reached the provider", async || {
        el.clones.load(Ordering::SeqCst) == 1
    })
    .await;
    request.abort();
    assert!(
        request.await.is_err_and(|e| e.is_cancelled()),
        "the client left mid-upload"
    );
    // The upload finishes without its caller and is recorded...
    eventually("the clone is recorded", async || {
        app.state
            .store
            .clones_of(&id, 30)
            .await
            .expect("read")
            .first()
            .is_some_and(|r| r.sealed.is_some())
    })
    .await;
    assert_eq!(el.clones.load(Ordering::SeqCst), 1);
    // ...so deleting the voice deletes it at ElevenLabs.
    assert_eq!(delete_voice(&app, &app.client, &id).await, 200);
    assert_eq!(*el.deleted.lock().expect("lock"), ["clonedVoice1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_deleted_while_its_clone_is_made_leaves_no_clone() {
    let (addr, el) = stub().await;
    let app =
        spawn_app_with_secrets(&eleven_config(addr, ""), &[("ELEVEN_KEY", "el-secret")]).await;
    let id = store_voice(&app, &app.client).await;
    *el.clone_delay.lock().expect("lock") = Duration::from_millis(600);
    let speaking = tokio::spawn(stored_speech(&app, &app.client, &id).send());
    eventually("the upload has started", async || {
        el.clones.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(delete_voice(&app, &app.client, &id).await, 200);
    let (status, code, _) = error_of(speaking.await.expect("join").expect("send")).await;
    assert_eq!((status, code.as_deref()), (404, Some("voice_not_found")));
    assert_eq!(
        *el.deleted.lock().expect("lock"),
        ["clonedVoice1"],
        "the maker deleted it"
    );
    assert!(el.known_clones.lock().expect("lock").is_empty());
    assert!(
        app.state
            .store
            .clones_of(&id, 30)
            .await
            .expect("read")
            .is_empty()
    );
}

/// Plays a maker that uploaded a clone of `voice_id` under `token` and died before recording
/// it: the clone is at ElevenLabs under its label, the claim's age is an hour.
async fn dead_maker(app: &crate::helpers::TestApp, addr: SocketAddr, voice_id: &str, token: &str) {
    let form = reqwest::multipart::Form::new()
        .text("name", format!("voxgate {voice_id} {token}"))
        .part("files", file_part(tone_wav(6.0, 24_000), "reference.wav"));
    let added = reqwest::Client::new()
        .post(format!("http://{addr}/v1/voices/add"))
        .header("xi-api-key", "el-secret")
        .multipart(form)
        .send()
        .await
        .expect("add");
    assert_eq!(added.status(), 200);
    let claim = app
        .state
        .store
        .claim_clone(voice_id, "eleven", &app.account, token, 30)
        .await
        .expect("claim");
    assert_eq!(
        claim,
        voxgate::data::store::CloneClaim::Claimed { replaced: None }
    );
    use sqlx::Connection as _;
    let db = app._dir.path().join("data").join("voxgate.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    sqlx::query("UPDATE voice_clones SET claimed_at = claimed_at - 3600 WHERE voice_id = ?1")
        .bind(voice_id)
        .execute(&mut conn)
        .await
        .expect("age the claim");
}

#[tokio::test]
async fn what_a_dead_maker_uploaded_is_deleted_by_whoever_comes_next() {
    let (addr, el) = stub().await;
    let app =
        spawn_app_with_secrets(&eleven_config(addr, ""), &[("ELEVEN_KEY", "el-secret")]).await;
    // The next use takes the stale claim over and deletes the dead maker's upload first.
    let id = store_voice(&app, &app.client).await;
    dead_maker(&app, addr, &id, "deadbeef").await;
    assert_eq!(speak_stored(&app, &app.client, &id).await, 200);
    assert_eq!(*el.deleted.lock().expect("lock"), ["clonedVoice1"]);
    assert_eq!(
        el.paths.lock().expect("lock").last().map(String::as_str),
        Some("tts/clonedVoice2?pcm_24000")
    );
    // A voice deleted after its maker died: the deletion finds the upload by its label.
    let other = store_voice(&app, &app.client).await;
    dead_maker(&app, addr, &other, "cafebabe").await;
    assert_eq!(delete_voice(&app, &app.client, &other).await, 200);
    assert_eq!(
        *el.deleted.lock().expect("lock"),
        ["clonedVoice1", "clonedVoice3"]
    );
    assert!(
        app.state
            .store
            .clones_of(&other, 30)
            .await
            .expect("read")
            .is_empty()
    );
}

#[tokio::test]
async fn pollinations_gets_the_text_in_the_path_and_its_mp3_is_decoded() {
    let (addr, po) = stub().await;
    let config = format!(
        r#"
[engines.poll]
kind = "pollinations"
base_url = "http://{addr}/poll"
voices = {{ alloy = "alloy" }}
http = {{ allow_local = true, allow_http = true }}
[models.poll]
engine = "poll"
"#
    );
    let app = spawn_app_with_secrets(&config, &[]).await;
    let response = app.speech(speech("poll", "Hello / world? #1")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-voxgate-engine"), "poll");
    let audio = response.bytes().await.expect("body");
    let seconds = audio.len() as f64 / 48_000.0;
    assert!((0.45..0.7).contains(&seconds), "decoded {seconds} s");
    let body = po.last_body();
    assert_eq!(
        body["text"], "Hello / world? #1",
        "one escaped path segment"
    );
    assert_eq!(body["query"]["voice"], "alloy");
    assert_eq!(body["query"]["model"], "openai-audio");
}

#[tokio::test]
async fn an_openai_compatible_recogniser_transcribes_uploads() {
    let (addr, up) = stub().await;
    let config = format!(
        r#"
[engines.stt]
kind = "openai-stt"
base_url = "http://{addr}/v1"
model = "whisper-1"
api_key_env = "STT_KEY"
http = {{ allow_local = true, allow_http = true }}
[models.remote-whisper]
engine = "stt"
"#
    );
    let app = spawn_app_with_secrets(&config, &[("STT_KEY", "stt-secret")]).await;
    let form = reqwest::multipart::Form::new()
        .text("model", "remote-whisper")
        .text("response_format", "verbose_json")
        .text("timestamp_granularities[]", "word")
        .part("file", file_part(tone_wav(2.0, 16_000), "a.wav"));
    let response = app
        .client
        .post(app.url("/v1/audio/transcriptions"))
        .multipart(form)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["text"], "Hello from upstream.");
    assert_eq!(body["segments"][0]["text"], "Hello from upstream.");
    assert_eq!(body["words"][0]["word"], "Hello");
    assert_eq!(
        up.auth.lock().expect("lock").last().map(String::as_str),
        Some("Bearer stt-secret")
    );

    // A translation goes to the provider's translation endpoint, without the fields its
    // form does not have (word timings, language), even for verbose_json.
    let form = reqwest::multipart::Form::new()
        .text("model", "remote-whisper")
        .text("response_format", "verbose_json")
        .part("file", file_part(tone_wav(2.0, 16_000), "a.wav"));
    let response = app
        .client
        .post(app.url("/v1/audio/translations"))
        .multipart(form)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["text"], "Translated upstream.");
    assert_eq!(body["task"], "translate");
    assert_eq!(body["language"], "english");
    assert_eq!(
        up.paths.lock().expect("lock").last().map(String::as_str),
        Some("/v1/audio/translations")
    );

    // Streamed from a provider that answers whole: one delta with the text, then done.
    let form = reqwest::multipart::Form::new()
        .text("model", "remote-whisper")
        .text("stream", "true")
        .part("file", file_part(tone_wav(2.0, 16_000), "a.wav"));
    let response = app
        .client
        .post(app.url("/v1/audio/transcriptions"))
        .multipart(form)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream")
    );
    let events = response.text().await.expect("events");
    let events: Vec<Value> = events
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|e| serde_json::from_str(e).expect("event json"))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["type"], "transcript.text.delta");
    assert_eq!(events[0]["delta"], "Hello from upstream.");
    assert_eq!(events[1]["type"], "transcript.text.done");
    assert_eq!(events[1]["text"], "Hello from upstream.");
    assert_eq!(events[1]["usage"]["seconds"], 2);
}

/// The admin test key's tier caches; `ttl` 0 makes every entry expired at once.
fn cached(addr: SocketAddr, ttl: u64) -> String {
    openai_config(
        addr,
        &format!(
            "[tiers.admin]\ncache = true\n[cache]\nttl_secs = {ttl}\nstale_if_error_secs = 3600"
        ),
    )
}

#[tokio::test]
async fn the_cache_answers_repeats_without_the_engine_and_only_for_the_same_account() {
    let (addr, up) = stub().await;
    let app = spawn_app_with_secrets(&cached(addr, 3600), &[("UPSTREAM_KEY", "k")]).await;
    let first = app.speech(speech("remote", "Cache me.")).await;
    assert_eq!(header(&first, "x-voxgate-cache"), "miss");
    let first = first.bytes().await.expect("body");
    let second = app.speech(speech("remote", "Cache me.")).await;
    assert_eq!(header(&second, "x-voxgate-cache"), "hit");
    assert_eq!(header(&second, "x-voxgate-engine"), "upstream");
    assert_eq!(second.bytes().await.expect("body"), first);
    assert_eq!(up.hits(), 1, "the hit did not call the provider");
    // Other text, speed or format: a miss.
    let other = app
        .speech(json!({"model": "remote", "input": "Cache me.", "voice": "alloy", "response_format": "wav"}))
        .await;
    assert_eq!(header(&other, "x-voxgate-cache"), "miss");
    // A complete response is kept before its end reaches the client.
    let _ = other.bytes().await.expect("body");
    // Another account of the same tier never gets the first account's entry.
    let (_, key) = crate::helpers::create_key(&app.state, "admin", None, None).await;
    let response = crate::helpers::client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&speech("remote", "Cache me."))
        .send()
        .await
        .expect("send");
    assert_eq!(header(&response, "x-voxgate-cache"), "miss");
    let _ = response.bytes().await.expect("body");
    // Tiers without caching get no header and no entry.
    let (_, basic) = crate::helpers::create_key(&app.state, "basic", None, None).await;
    let response = crate::helpers::client_with(Some(&basic))
        .post(app.url("/v1/audio/speech"))
        .json(&speech("remote", "Cache me."))
        .send()
        .await
        .expect("send");
    assert_eq!(header(&response, "x-voxgate-cache"), "");
    // What is on disk is sealed: no audio bytes in the clear.
    let pcm = &first[1000..1064];
    let dir = app.state.config.data_dir.join("cache");
    let mut files = 0;
    for owner in std::fs::read_dir(&dir).expect("cache dir") {
        for file in std::fs::read_dir(owner.expect("owner").path()).expect("entries") {
            let bytes = std::fs::read(file.expect("file").path()).expect("read");
            assert!(
                !bytes.windows(pcm.len()).any(|w| w == pcm),
                "audio in the clear"
            );
            files += 1;
        }
    }
    assert_eq!(files, 3, "account one: pcm and wav; account two: pcm");
}

#[tokio::test]
async fn when_every_engine_fails_an_expired_entry_still_answers() {
    let (addr, up) = stub().await;
    let app = spawn_app_with_secrets(&cached(addr, 0), &[("UPSTREAM_KEY", "k")]).await;
    let first = app.speech(speech("remote", "Keep me.")).await;
    assert_eq!(header(&first, "x-voxgate-cache"), "miss");
    let first = first.bytes().await.expect("body");
    // Expired at once: the next request asks the provider again.
    let again = app.speech(speech("remote", "Keep me.")).await;
    assert_eq!(header(&again, "x-voxgate-cache"), "miss");
    assert_eq!(up.hits(), 2);
    up.set(Mode::ServerError);
    let stale = app.speech(speech("remote", "Keep me.")).await;
    assert_eq!(stale.status(), 200);
    assert_eq!(header(&stale, "x-voxgate-cache"), "stale");
    assert_eq!(stale.bytes().await.expect("body"), first);
    // Nothing cached for this text: the failure stands.
    let response = app.speech(speech("remote", "Never said.")).await;
    assert_eq!(response.status(), 502);
}
