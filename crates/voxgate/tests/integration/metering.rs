//! The metered life of a request, tried from outside: a client that leaves mid-stream pays for
//! what it got (chunked PCM, SSE, an engine that fails mid-stream), a refusal before any byte
//! costs nothing, each engine of a fallback chain is admitted on its own queue, a cache hit
//! needs no engine, and a transcription that outlives the response timeout keeps its slot
//! until the recogniser returns and is charged for what it recognised.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine as _;
use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, client_with, create_key, error_of, file_part, spawn_app_with, usage,
};

/// Nearly 2,000 characters of prose (the basic tier's limit): about two minutes of speech.
fn long_text() -> String {
    let sentence = "The gateway streams this sentence while the client listens closely. ";
    sentence.repeat(28)
}

/// Waits (bounded) until nothing is reserved any more for `account`, then returns the used
/// characters and audio seconds.
async fn settled(app: &TestApp, account: &str) -> (i64, i64) {
    for _ in 0..200 {
        let (characters, reserved_chars) = usage(app, account, "characters").await;
        let (seconds, reserved_secs) = usage(app, account, "audio_seconds").await;
        if reserved_chars == 0 && reserved_secs == 0 {
            return (characters, seconds);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the reservation was never settled");
}

/// Waits until a transcription of `account` is charged and nothing is reserved any more
/// (bounded generously: on a loaded machine Whisper base takes a minute for a long one);
/// returns (used, reserved) transcribed seconds.
async fn transcription_charged(app: &TestApp, account: &str) -> (i64, i64) {
    let mut charged = (0, 1);
    for _ in 0..3000 {
        charged = usage(app, account, "transcribed_seconds").await;
        if charged.1 == 0 && charged.0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    charged
}

/// `text` spoken as a WAV by the embedded voice, with its length in seconds.
async fn spoken_wav(app: &TestApp, text: &str) -> (Vec<u8>, f64) {
    let wav = app
        .client
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}))
        .send()
        .await
        .expect("send")
        .bytes()
        .await
        .expect("wav")
        .to_vec();
    let seconds = (wav.len() - 44) as f64 / 48_000.0;
    (wav, seconds)
}

fn pcm_request(text: &str) -> Value {
    json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"})
}

/// Reads a response until `limit` bytes of body have arrived (or it ends); returns them.
async fn read_up_to(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await.expect("chunk") {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
    }
    body
}

/// A client that reads ~90 % of a long PCM stream and hangs up is charged for at least 85 %
/// of the audio seconds and for all the characters of the part that was started; a request
/// that ends before any byte is refunded in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_pays_for_what_it_received() {
    let app = spawn_app_with("").await;
    let text = long_text();
    let characters = text.trim().chars().count() as i64;

    // The whole response, once, to know its length.
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let client = client_with(Some(&key));
    let full = client
        .post(app.url("/v1/audio/speech"))
        .json(&pcm_request(&text))
        .send()
        .await
        .expect("send");
    assert_eq!(full.status(), 200);
    let total = full.bytes().await.expect("body").len();
    let total_secs = total as f64 / 48_000.0;
    assert!(total_secs > 60.0, "a long stream: {total_secs:.1} s");
    let (chars_used, secs_used) = settled(&app, &account).await;
    assert_eq!(chars_used, characters);
    assert_eq!(secs_used, total_secs.ceil() as i64);

    // Now a client that leaves after 90 %.
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let response = client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&pcm_request(&text))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let got = read_up_to(response, total * 9 / 10).await;
    assert!(got.len() < total, "left before the end");
    let (chars_used, secs_used) = settled(&app, &account).await;
    assert_eq!(chars_used, characters, "the one part was started");
    assert!(
        secs_used as f64 >= 0.85 * total_secs,
        "charged {secs_used} s of {total_secs:.1} s"
    );
    assert!(
        secs_used as f64 <= total_secs.ceil(),
        "never more than the whole"
    );
}

/// The same over server-sent events: deltas read until 90 % of the audio, then gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_hangs_up_pays_for_what_it_received() {
    let app = spawn_app_with("").await;
    let text = long_text();
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let mut request = pcm_request(&text);
    request["stream_format"] = json!("sse");
    let response = client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&request)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let mut total = 0usize;
    for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data: Value =
            serde_json::from_str(event.strip_prefix("data: ").expect("data")).expect("json");
        if data["type"] == "speech.audio.delta" {
            total += base64::engine::general_purpose::STANDARD
                .decode(data["audio"].as_str().expect("audio"))
                .expect("base64")
                .len();
        }
    }
    let total_secs = total as f64 / 48_000.0;
    settled(&app, &account).await;

    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let mut response = client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&request)
        .send()
        .await
        .expect("send");
    let (mut buffer, mut audio) = (String::new(), 0usize);
    'read: while let Some(chunk) = response.chunk().await.expect("chunk") {
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data: Value =
                serde_json::from_str(event.trim().strip_prefix("data: ").expect("data"))
                    .expect("json");
            if let Some(b64) = data["audio"].as_str() {
                audio += base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64")
                    .len();
            }
            if audio >= total * 9 / 10 {
                break 'read;
            }
        }
    }
    drop(response);
    let (_, secs_used) = settled(&app, &account).await;
    assert!(
        secs_used as f64 >= 0.85 * total_secs,
        "charged {secs_used} s of {total_secs:.1} s"
    );
}

/// An OpenAI-compatible stand-in that streams `secs` of PCM and then breaks the connection
/// (an engine failing mid-stream), at `/v1/audio/speech`.
async fn breaking_upstream(secs: usize) -> SocketAddr {
    async fn speech() -> axum::response::Response {
        use futures::StreamExt as _;
        let second: Vec<u8> = (0..24_000)
            .map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / 24_000.0).sin() * 8000.0) as i16)
            .flat_map(i16::to_le_bytes)
            .collect();
        let secs = SECONDS.load(std::sync::atomic::Ordering::SeqCst);
        let chunks = (0..secs)
            .map(move |_| Ok::<_, std::io::Error>(Bytes::from(second.clone())))
            .chain(std::iter::once(Err(std::io::Error::other("engine died"))));
        let stream = futures::stream::iter(chunks).then(|item| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            item
        });
        (
            [(header::CONTENT_TYPE, "audio/pcm")],
            Body::from_stream(stream),
        )
            .into_response()
    }
    static SECONDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    SECONDS.store(secs, std::sync::atomic::Ordering::SeqCst);
    serve(axum::Router::new().route("/v1/audio/speech", axum::routing::post(speech))).await
}

/// Serves `stand_in` on a loopback port of its own; returns its address.
async fn serve(stand_in: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, stand_in).await;
    });
    addr
}

fn remote_engine(name: &str, base: &str, extra: &str) -> String {
    format!(
        r#"
[engines.{name}]
kind = "openai"
base_url = "{base}"
model = "stand-in"
voices = {{ alloy = "any" }}
http = {{ allow_local = true, allow_http = true, read_timeout_ms = 2000, total_timeout_secs = 30, connect_timeout_ms = 500 }}
{extra}
"#
    )
}

/// An engine that fails mid-stream: the audio that left is charged, the rest is not; an
/// engine that fails before any audio costs nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_failures_charge_only_what_left() {
    let addr = breaking_upstream(6).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let config = format!(
        "{}{}[models.breaking]\nengine = \"breaking\"\n[models.dead]\nengine = \"dead\"\n",
        remote_engine("breaking", &format!("http://{addr}/v1"), ""),
        remote_engine("dead", &format!("http://127.0.0.1:{closed}/v1"), ""),
    );
    let app = spawn_app_with(&config).await;

    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let text = "Six seconds of tone, then the engine breaks.";
    let response = client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "breaking", "input": text, "voice": "alloy", "response_format": "pcm"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let mut response = response;
    let mut got = 0usize;
    while let Ok(Some(chunk)) = response.chunk().await {
        got += chunk.len();
    }
    let got_secs = got as f64 / 48_000.0;
    assert!(
        (4.0..6.5).contains(&got_secs),
        "received {got_secs:.2} s before the break"
    );
    let (chars_used, secs_used) = settled(&app, &account).await;
    assert_eq!(chars_used, text.chars().count() as i64);
    assert!(
        (got_secs.floor() as i64..=6).contains(&secs_used),
        "charged {secs_used} s for {got_secs:.2} s delivered"
    );

    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let response = client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "dead", "input": text, "voice": "alloy", "response_format": "pcm"}))
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (502, Some("upstream_error")));
    assert_eq!(
        settled(&app, &account).await,
        (0, 0),
        "refused before any byte: refunded"
    );
}

/// The audio cap ends a stream at the reserved seconds; what is held back at the cap (a
/// relayed upstream's whole next piece) is not charged: exactly what left is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audio_cap_charges_only_what_left() {
    let addr = breaking_upstream(6).await;
    let config = format!(
        "{}[models.breaking]\nengine = \"breaking\"\n",
        remote_engine("breaking", &format!("http://{addr}/v1"), ""),
    );
    let app = spawn_app_with(&config).await;
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    // Three characters reserve two seconds of audio; the upstream sends six, a second at
    // a time.
    let response = client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "breaking", "input": "Hi.", "voice": "alloy", "response_format": "pcm"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let audio = response.bytes().await.expect("body");
    // Pieces end where the network cut them: the stream stops at the last whole piece
    // within the two seconds.
    assert!(
        (48_000..=2 * 48_000).contains(&audio.len()),
        "{} bytes",
        audio.len()
    );
    let sent = (audio.len() as f64 / 48_000.0).ceil() as i64;
    assert_eq!(settled(&app, &account).await, (3, sent));
}

/// A stream that holds flite's only slot until dropped (the client does not read).
async fn hold_flite(app: &TestApp) -> reqwest::Response {
    let (_, key) = create_key(&app.state, "basic", None, None).await;
    let text = "This sentence is spoken slowly so the stream lasts. ".repeat(38);
    let response = client_with(Some(&key))
        .post(app.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm", "speed": 0.25}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-voxgate-engine"], "flite");
    response
}

/// Each engine of a chain is admitted on its own queue: with the primary's breaker open, a
/// request goes to the fallback's queue, and a full fallback queue answers 503 though the
/// primary's queue is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_engine_is_admitted_on_its_own_queue() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let config = format!(
        "{}[models.chained]\nengine = \"primary\"\nfallback = [\"flite\"]\n\
         [limits]\nengine_in_flight = 1\nengine_queue_depth = 0\nengine_queue_wait_ms = 100\n",
        remote_engine(
            "primary",
            &format!("http://127.0.0.1:{closed}/v1"),
            "breaker = { consecutive_failures = 1, cooldown_secs = 600 }",
        ),
    );
    let app = spawn_app_with(&config).await;
    let chained = json!({"model": "chained", "input": "Hello there.", "voice": "alloy", "response_format": "pcm"});
    // The primary is down: the fallback serves, and the primary's breaker opens.
    let first = app.speech(chained.clone()).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-voxgate-engine"], "flite");
    let _ = first.bytes().await;

    let held = hold_flite(&app).await;
    let refused = app.speech(chained.clone()).await;
    assert!(refused.headers().contains_key("retry-after"));
    let (status, code, _) = error_of(refused).await;
    assert_eq!((status, code.as_deref()), (503, Some("overloaded")));
    let queue = |engine: &str| app.state.concurrency.queue(engine).expect("queue").depth();
    assert_eq!(queue("primary"), 0, "nothing waits on the primary");

    drop(held);
    let mut served = None;
    for _ in 0..100 {
        let response = app.speech(chained.clone()).await;
        if response.status() == 200 {
            served = Some(response.headers()["x-voxgate-engine"].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served.as_ref().map(|v| v.to_str().expect("ascii")),
        Some("flite")
    );
}

/// A cached response needs no engine: it is served while every engine queue is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_is_served_while_every_engine_is_busy() {
    let app = spawn_app_with(
        "[tiers.admin]\ncache = true\n[limits]\nengine_in_flight = 1\nengine_queue_depth = 0\nengine_queue_wait_ms = 100\n",
    )
    .await;
    let request = json!({"model": "tts-1", "input": "Cache me, please.", "voice": "alloy", "response_format": "mp3"});
    let miss = app.speech(request.clone()).await;
    assert_eq!(miss.headers()["x-voxgate-cache"], "miss");
    let audio = miss.bytes().await.expect("body");

    let held = hold_flite(&app).await;
    let busy = app
        .speech(json!({"model": "tts-1", "input": "Not cached.", "voice": "alloy"}))
        .await;
    assert_eq!(busy.status(), 503, "flite is full");
    let hit = app.speech(request).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(hit.headers()["x-voxgate-cache"], "hit");
    assert_eq!(hit.bytes().await.expect("body"), audio);
    drop(held);
}

/// A transcription that outlives the response timeout: the caller gets 504, the request
/// keeps its concurrency slot until Whisper really returns, and the audio it recognised is
/// charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_transcription_keeps_its_slot_and_is_charged() {
    let app = spawn_app_with(
        "[server]\nrequest_timeout_secs = 1\n[tiers.guest]\nmax_concurrent_per_key = 1\n[tiers.basic]\nmax_concurrent_per_key = 1\n",
    )
    .await;
    // A minute of speech: Whisper base needs several seconds for it on two cores.
    let text =
        "Speech synthesis turns written text into sound, one sentence after another. ".repeat(12);
    let (wav, seconds) = spoken_wav(&app, &text).await;
    assert!(seconds > 40.0, "{seconds:.1} s of speech");
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let client = client_with(Some(&key));
    let form = |wav: Vec<u8>| {
        Form::new()
            .text("model", "whisper-1")
            .text("language", "en")
            .part("file", file_part(wav, "speech.wav"))
    };
    let response = client
        .post(app.url("/v1/audio/transcriptions"))
        .multipart(form(wav.clone()))
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (504, Some("timeout")));

    // Whisper is still working for that request: its slot is still taken.
    let again = client
        .post(app.url("/v1/audio/transcriptions"))
        .multipart(form(wav.clone()))
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(again).await;
    assert_eq!(
        (status, code.as_deref()),
        (429, Some("too_many_concurrent_requests"))
    );

    // Once Whisper returns, the audio it recognised is charged and the slot is free.
    let charged = transcription_charged(&app, &account).await;
    assert_eq!(
        charged,
        (seconds.ceil() as i64, 0),
        "charged once recognised"
    );
    let short = client
        .post(app.url("/v1/audio/speech"))
        .json(&pcm_request("The slot is free again."))
        .send()
        .await
        .expect("send");
    assert_eq!(short.status(), 200);
}

/// A streamed transcription whose client hangs up after the first delta: recognition goes
/// on (it cannot be cancelled mid-window), keeps the key's slot until it returns, and the
/// whole upload is charged once, nothing left reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_transcription_left_after_its_first_delta_is_charged_once() {
    let app = spawn_app_with(
        "[tiers.guest]\nmax_concurrent_per_key = 1\n[tiers.basic]\nmax_concurrent_per_key = 1\n",
    )
    .await;
    let text = "Every request is checked before it reaches the engine, then metered. ".repeat(12);
    let (wav, seconds) = spoken_wav(&app, &text).await;
    assert!(
        seconds > 35.0,
        "{seconds:.1} s of speech: two Whisper windows"
    );
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    let client = client_with(Some(&key));
    let form = Form::new()
        .text("model", "whisper-1")
        .text("language", "en")
        .text("stream", "true")
        .part("file", file_part(wav, "speech.wav"));
    let mut response = client
        .post(app.url("/v1/audio/transcriptions"))
        .multipart(form)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.expect("chunk").expect("an event");
    assert!(
        String::from_utf8_lossy(&first).contains("transcript.text.delta"),
        "{first:?}"
    );
    drop(response);

    let charged = transcription_charged(&app, &account).await;
    assert_eq!(charged, (seconds.ceil() as i64, 0), "charged once, in full");
    // The slot came back with the recogniser.
    let short = client
        .post(app.url("/v1/audio/speech"))
        .json(&pcm_request("The slot is free again."))
        .send()
        .await
        .expect("send");
    assert_eq!(short.status(), 200);
}

/// An app whose model `whole` relays the OpenAI-compatible stand-in `upstream`, with a
/// basic-tier account and key.
async fn relaying(upstream: axum::Router) -> (TestApp, String, String) {
    let addr = serve(upstream).await;
    let config = format!(
        "{}[models.whole]\nengine = \"whole\"\n",
        remote_engine("whole", &format!("http://{addr}/v1"), ""),
    );
    let app = spawn_app_with(&config).await;
    let (account, key) = create_key(&app.state, "basic", None, None).await;
    (app, account, key)
}

/// Asks `whole` for `input` as PCM over a raw connection; returns the connection and what
/// its first read got.
async fn first_read(app: &TestApp, key: &str, input: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body =
        json!({"model": "whole", "input": input, "voice": "alloy", "response_format": "pcm"})
            .to_string();
    let request = format!(
        "POST /v1/audio/speech HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        app.addr,
        body.len()
    );
    let mut client = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    client.write_all(request.as_bytes()).await.expect("send");
    let mut first = vec![0; 65_536];
    let n = client.read(&mut first).await.expect("read");
    first.truncate(n);
    (client, first)
}

/// A tenth of a second of PCM, in one piece (it fits the gateway's first read).
fn tenth_of_a_second() -> axum::response::Response {
    (
        [(header::CONTENT_TYPE, "audio/pcm")],
        Body::from(vec![0x11; 4_800]),
    )
        .into_response()
}

/// A relayed answer in one piece is settled before its head leaves, and leaves whole with
/// its end, in one write (not two, each waking the client: the gateway hop's cost): the
/// client's first read holds the whole response, and the usage is recorded by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_answer_in_one_piece_is_settled_before_its_head() {
    let upstream = axum::Router::new().route(
        "/v1/audio/speech",
        axum::routing::post(|| async { tenth_of_a_second() }),
    );
    let (app, account, key) = relaying(upstream).await;
    let text = "A tenth of a second of tone.";
    let (_, first) = first_read(&app, &key, text).await;
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("HTTP/1.1 200 "), "{first:.200}");
    assert!(first.contains("x-voxgate-audio: relayed"), "{first:.1000}");
    // The head, the whole audio (4,800 bytes: 12C0 in hex) and the end, in the first read.
    assert!(
        first.contains("\r\n\r\n12C0\r\n") && first.ends_with("\r\n0\r\n\r\n"),
        "the first read ends {:?}",
        &first[first.len().saturating_sub(40)..]
    );
    let chars = text.chars().count() as i64;
    assert_eq!(usage(&app, &account, "characters").await, (chars, 0));
    assert_eq!(usage(&app, &account, "audio_seconds").await, (1, 0));
}

/// A slow settlement does not hold a one-piece answer's head back: with SQLite's write lock
/// held elsewhere, the head leaves after a moment (100 ms), alone and while the lock is
/// still held; the audio and the end follow once the settlement is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_settlement_does_not_hold_the_head_back() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncReadExt as _;
    let db: Arc<std::sync::OnceLock<std::path::PathBuf>> = Arc::default();
    let released = Arc::new(AtomicBool::new(false));
    // The upstream answers after taking SQLite's write lock (the reservation is written by
    // then), and gives it back a second later.
    let upstream = {
        let (db, released) = (Arc::clone(&db), Arc::clone(&released));
        axum::Router::new().route(
            "/v1/audio/speech",
            axum::routing::post(move || async move {
                let blocker =
                    rusqlite::Connection::open(db.get().expect("the database")).expect("open");
                blocker
                    .busy_timeout(Duration::from_secs(5))
                    .expect("busy timeout");
                blocker
                    .execute_batch("BEGIN IMMEDIATE")
                    .expect("the write lock");
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(1));
                    released.store(true, Ordering::SeqCst);
                    drop(blocker);
                });
                tenth_of_a_second()
            }),
        )
    };
    let (app, account, key) = relaying(upstream).await;
    db.set(app._dir.path().join("data/voxgate.db"))
        .expect("set once");
    let (mut client, first) = first_read(&app, &key, "Slow.").await;
    assert!(
        !released.load(Ordering::SeqCst),
        "the head waited for the lock"
    );
    let head = String::from_utf8_lossy(&first).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:.200}");
    assert!(head.ends_with("\r\n\r\n"), "the head alone: {head:.1000}");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("the rest");
    assert!(released.load(Ordering::SeqCst));
    let mut audio = vec![b'1', b'2', b'C', b'0', b'\r', b'\n'];
    audio.extend_from_slice(&[0x11; 4_800]);
    audio.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(rest, audio, "the audio and the end, after the settlement");
    assert_eq!(usage(&app, &account, "audio_seconds").await, (1, 0));
}
