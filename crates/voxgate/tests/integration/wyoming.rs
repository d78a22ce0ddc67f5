//! The Wyoming listener from outside: a raw TCP client speaks the protocol to a listener
//! bound to a key made beforehand (as an operator would: the key first, then the
//! configuration naming its id). Speech comes back as PCM that is decoded and measured;
//! malformed and oversized frames get an `error` event and a close while another client is
//! served; the bound key's scopes, quotas and revocation apply to every connection.
//! (`scripts/test` drives the same listener with the reference Python client.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use voxgate::data::audit::Actor;
use voxgate::identity::auth::Scope;
use voxgate_wyoming::frame::{self, Frame, Limits};

use crate::helpers::{TestApp, create_key, every_tier, settled, spawn_app_in};

/// A key made before the listener that names it.
struct Bound {
    account: String,
    keyid: String,
}

/// A server whose listener `test` acts as a new `tier` key (narrowed to `scopes`), with
/// `settings` (TOML) layered over the defaults and `limits` in `[wyoming.test.limits]`.
async fn listener(
    settings: &str,
    tier: &str,
    scopes: Option<Vec<Scope>>,
    limits: &str,
) -> (TestApp, SocketAddr, Bound) {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let (account, key) = {
        let setup = spawn_app_in(Arc::clone(&dir), settings, &[]).await;
        create_key(&setup.state, tier, None, scopes).await
    };
    let keyid = key.split('_').nth(1).expect("key id").to_owned();
    let toml = format!(
        "{settings}\n[wyoming.test]\nbind = \"127.0.0.1:0\"\nkey_id = \"{keyid}\"\n[wyoming.test.limits]\n{limits}\n"
    );
    let app = spawn_app_in(dir, &toml, &[]).await;
    let addr = app.wyoming["test"];
    (app, addr, Bound { account, keyid })
}

/// A Wyoming client on a raw socket (its halves apart, so a test can flood one while it
/// reads the other).
struct Client {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let (reader, writer) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Self {
            reader,
            writer,
            buf: Vec::new(),
        }
    }

    async fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    async fn send(&mut self, frame: &Frame) {
        self.raw(&frame::encode(frame)).await.expect("send");
    }

    async fn event(&mut self, kind: &str, data: Value) {
        self.send(&Frame::with_data(kind, data)).await;
    }

    /// The next event, or `None` once the server closed the connection.
    async fn recv(&mut self) -> Option<Frame> {
        let limits = Limits {
            max_header_bytes: 1 << 20,
            max_data_bytes: 1 << 24,
            max_payload_bytes: 1 << 24,
        };
        loop {
            if let Some((frame, used)) = frame::decode(&self.buf, &limits).expect("server frame") {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(Duration::from_secs(120), self.reader.read(&mut chunk))
                .await
                .expect("the server answers within two minutes")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Events up to and including the first of kind `last`.
    async fn until(&mut self, last: &str) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let frame = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("closed before `{last}`: {frames:?}"));
            let done = frame.kind == last;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// The next event, which must be an `error`: its code.
    async fn error_code(&mut self) -> String {
        let frame = self.recv().await.expect("an error event before the close");
        assert_eq!(frame.kind, "error", "{frame:?}");
        let text = frame.data["text"].as_str().expect("text");
        assert!(!text.is_empty());
        frame.data["code"].as_str().expect("code").to_owned()
    }

    /// Waits (bounded) for the server to close the connection.
    async fn closed(&mut self) {
        assert!(self.recv().await.is_none(), "the connection stays open");
    }

    async fn ping(&mut self) {
        self.event("ping", json!({"text": "hi"})).await;
        let pong = self.recv().await.expect("pong");
        assert_eq!(pong.kind, "pong");
        assert_eq!(pong.data["text"], "hi");
    }
}

/// The 16-bit samples of every `audio-chunk` in `frames`, checking each chunk's format.
fn samples_of(frames: &[Frame]) -> Vec<i16> {
    let start = frames
        .iter()
        .find(|f| f.kind == "audio-start")
        .expect("audio-start");
    assert_eq!(start.data["width"], 2);
    assert_eq!(start.data["channels"], 1);
    assert_eq!(start.data["rate"], 24_000);
    frames
        .iter()
        .filter(|f| f.kind == "audio-chunk")
        .flat_map(|f| {
            assert_eq!(f.data["rate"], 24_000);
            f.payload
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

#[tokio::test]
async fn describe_lists_what_the_bound_key_may_use() {
    let (_app, addr, _) = listener("", "guest", None, "").await;
    let mut client = Client::connect(addr).await;
    client.event("describe", json!({})).await;
    let info = client.recv().await.expect("info");
    assert_eq!(info.kind, "info");
    let tts = info.data["tts"].as_array().expect("tts");
    assert_eq!(tts.len(), 1);
    assert_eq!(tts[0]["supports_synthesize_streaming"], true);
    let voices: Vec<&str> = tts[0]["voices"]
        .as_array()
        .expect("voices")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    // The guest tier: tts-1 with alloy, echo and nova only.
    assert!(voices.contains(&"tts-1/alloy"), "{voices:?}");
    assert!(voices.iter().all(|v| v.starts_with("tts-1/")), "{voices:?}");
    assert_eq!(voices.len(), 3, "{voices:?}");
    for voice in tts[0]["voices"].as_array().expect("voices") {
        assert_eq!(voice["installed"], true);
        assert!(!voice["languages"].as_array().expect("languages").is_empty());
    }
    // No transcription scope: no asr program.
    assert_eq!(info.data["asr"], json!([]));

    let (_app, addr, _) = listener("", "basic", None, "").await;
    let mut client = Client::connect(addr).await;
    client.event("describe", json!({})).await;
    let info = client.recv().await.expect("info");
    let asr = info.data["asr"].as_array().expect("asr");
    assert_eq!(asr[0]["supports_transcript_streaming"], true);
    let models: Vec<&str> = asr[0]["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert!(models.contains(&"whisper-1"), "{models:?}");
    client.ping().await;
}

#[tokio::test]
async fn synthesize_streams_audio_sentence_by_sentence() {
    let (_app, addr, _) = listener("", "basic", None, "").await;
    let mut client = Client::connect(addr).await;
    let text = "The first sentence is here. The second one follows it. A third one ends the text.";
    client
        .event(
            "synthesize",
            json!({"text": text, "voice": {"name": "tts-1/alloy"}}),
        )
        .await;
    let frames = client.until("audio-stop").await;
    assert_eq!(frames[0].kind, "audio-start");
    let chunks = frames.iter().filter(|f| f.kind == "audio-chunk").count();
    assert!(
        chunks >= 3,
        "audio arrives in pieces, not as one clip: {chunks}"
    );
    let samples = samples_of(&frames);
    let secs = samples.len() as f64 / 24_000.0;
    assert!((2.5..15.0).contains(&secs), "{secs} s for three sentences");
    assert!(rms(&samples) > 300.0, "speech, not silence");

    // A bare voice name is the listener's tts_model; a language picks a voice.
    client
        .event(
            "synthesize",
            json!({"text": "Hello.", "voice": {"name": "nova"}}),
        )
        .await;
    assert!(rms(&samples_of(&client.until("audio-stop").await)) > 300.0);
    client
        .event(
            "synthesize",
            json!({"text": "Hello.", "voice": {"language": "en_US"}}),
        )
        .await;
    assert!(rms(&samples_of(&client.until("audio-stop").await)) > 300.0);
    // A voice the key may not use: an error event, then the close (a client waiting for
    // `audio-stop`, as Home Assistant does, learns at once that none is coming).
    client
        .event(
            "synthesize",
            json!({"text": "Hello.", "voice": {"name": "tts-1/nobody"}}),
        )
        .await;
    assert_eq!(client.error_code().await, "voice_not_found");
    client.closed().await;
}

#[tokio::test]
async fn streamed_text_is_spoken_before_it_ends() {
    let (_app, addr, _) = listener("", "basic", None, "").await;
    let mut client = Client::connect(addr).await;
    client
        .event("synthesize-start", json!({"voice": {"name": "tts-1/echo"}}))
        .await;
    client
        .event(
            "synthesize-chunk",
            json!({"text": "This sentence is complete. And this"}),
        )
        .await;
    // Audio for the first sentence arrives while the client still holds the rest.
    let first = client.until("audio-stop").await;
    assert!(rms(&samples_of(&first)) > 300.0);
    client
        .event("synthesize-chunk", json!({"text": " one ends at the stop"}))
        .await;
    client
        .event(
            "synthesize",
            json!({"text": "This sentence is complete. And this one ends at the stop"}),
        )
        .await;
    client.event("synthesize-stop", json!({})).await;
    let rest = client.until("synthesize-stopped").await;
    assert!(
        rms(&samples_of(&rest)) > 300.0,
        "the rest is spoken at the stop"
    );
    assert_eq!(
        rest.iter().filter(|f| f.kind == "audio-start").count(),
        1,
        "the repeated `synthesize` is not spoken again"
    );
}

#[tokio::test]
async fn transcribes_any_pcm_format_with_streamed_transcript() {
    let (_app, addr, _) = listener("", "basic", None, "").await;
    let mut client = Client::connect(addr).await;
    let said = "The quick brown fox jumps over the lazy dog.";
    client
        .event(
            "synthesize",
            json!({"text": said, "voice": {"name": "tts-1-hd/alloy"}}),
        )
        .await;
    let speech = samples_of(&client.until("audio-stop").await);
    // Sent back as 48 kHz stereo (each sample twice, on both channels), in 100 ms chunks.
    let format = json!({"rate": 48_000, "width": 2, "channels": 2});
    client
        .event("transcribe", json!({"name": "whisper-1", "language": "en"}))
        .await;
    client.event("audio-start", format.clone()).await;
    for piece in speech.chunks(2_400) {
        let mut payload = Vec::with_capacity(piece.len() * 8);
        for &s in piece {
            for _ in 0..4 {
                payload.extend_from_slice(&s.to_le_bytes());
            }
        }
        let mut chunk = Frame::with_data("audio-chunk", format.clone());
        chunk.payload = payload;
        client.send(&chunk).await;
    }
    client.event("audio-stop", json!({})).await;
    let frames = client.until("transcript").await;
    let kinds: Vec<&str> = frames.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"transcript-start"), "{kinds:?}");
    assert!(kinds.contains(&"transcript-chunk"), "{kinds:?}");
    assert!(kinds.contains(&"transcript-stop"), "{kinds:?}");
    let transcript = frames.last().expect("transcript");
    let text = transcript.data["text"]
        .as_str()
        .expect("text")
        .to_lowercase();
    // Piper's synthesis is sampled (its noise scale), so the same sentence is spoken a
    // little differently each run and Whisper base now and then mishears one word
    // ("the quip brown fox"); four of the five content words prove the audio arrived intact.
    let heard = ["quick", "brown", "fox", "lazy", "dog"]
        .iter()
        .filter(|word| text.contains(*word))
        .count();
    assert!(heard >= 4, "only {heard} of 5 words heard in {text:?}");
    let chunks: String = frames
        .iter()
        .filter(|f| f.kind == "transcript-chunk")
        .map(|f| f.data["text"].as_str().expect("chunk text"))
        .collect();
    assert_eq!(
        chunks.trim(),
        transcript.data["text"].as_str().expect("text")
    );
}

#[tokio::test]
async fn a_key_without_the_scope_is_refused_before_any_audio() {
    let (app, addr, bound) = listener(
        "",
        "basic",
        Some(vec![Scope::ModelsRead, Scope::Speech]),
        "",
    )
    .await;
    let mut client = Client::connect(addr).await;
    client.ping().await;
    client.event("transcribe", json!({})).await;
    assert_eq!(client.error_code().await, "insufficient_scope");
    client.closed().await;
    let events = app.state.store.audit_events(50).await.expect("events");
    assert!(
        events.iter().any(|e| e.kind == "access_denied"
            && e.actor.as_deref() == Some(bound.keyid.as_str())
            && e.detail.contains("/v1/audio/transcriptions")
            && e.detail.contains("insufficient_scope")),
        "the refusal is audited like an HTTP request's: {events:#?}"
    );
}

#[tokio::test]
async fn a_spent_quota_is_an_error_event_and_usage_is_recorded() {
    let quota = every_tier(
        r#"quotas = [{ per = "account", metric = "characters", period = "day", limit = 60 }]"#,
    );
    let (app, addr, bound) = listener(&quota, "basic", None, "").await;
    let mut client = Client::connect(addr).await;
    let sentence = "This sentence has forty characters in it";
    assert_eq!(sentence.chars().count(), 40);
    client.event("synthesize", json!({"text": sentence})).await;
    assert!(rms(&samples_of(&client.until("audio-stop").await)) > 300.0);
    client.event("synthesize", json!({"text": sentence})).await;
    assert_eq!(client.error_code().await, "quota_exceeded");
    client.closed().await;
    assert_eq!(settled(&app, &bound.account, "characters").await, 40);
    // Mid-stream: the first sentence fits, the second does not; the stream goes on.
    let mut client = Client::connect(addr).await;
    client.event("synthesize-start", json!({})).await;
    client
        .event(
            "synthesize-chunk",
            json!({"text": "Ten chars. This second sentence is longer than the rest. "}),
        )
        .await;
    client.event("synthesize-stop", json!({})).await;
    let frames = client.until("synthesize-stopped").await;
    let errors: Vec<&Value> = frames
        .iter()
        .filter(|f| f.kind == "error")
        .map(|f| &f.data["code"])
        .collect();
    assert_eq!(errors, vec!["quota_exceeded"], "{frames:?}");
    assert!(
        rms(&samples_of(&frames)) > 300.0,
        "the sentence that fitted was spoken"
    );
    assert_eq!(settled(&app, &bound.account, "characters").await, 50);
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_speech_pays_for_what_it_got() {
    let (app, addr, bound) = listener("", "basic", None, "").await;
    let mut client = Client::connect(addr).await;
    let long = "The gateway streams this sentence while the client listens closely. ".repeat(20);
    client.event("synthesize", json!({"text": long})).await;
    let start = client.recv().await.expect("audio-start");
    assert_eq!(start.kind, "audio-start");
    let chunk = client.recv().await.expect("audio-chunk");
    assert_eq!(chunk.kind, "audio-chunk");
    drop(client);
    let used = settled(&app, &bound.account, "characters").await;
    assert!(
        used > 0 && used < long.chars().count() as i64,
        "charged {used} of {} characters",
        long.chars().count()
    );
}

#[tokio::test]
async fn a_revoked_key_closes_open_connections_and_refuses_new_ones() {
    let (app, addr, bound) = listener("", "basic", None, "").await;
    let mut open = Client::connect(addr).await;
    open.ping().await;
    let bound_ms = app.state.config.auth.cache_ttl_ms;
    let revoked = Instant::now();
    app.state
        .accounts
        .revoke_key(Actor::Cli, &bound.keyid)
        .await
        .expect("revoke");
    assert_eq!(open.error_code().await, "revoked_api_key");
    open.closed().await;
    let took = revoked.elapsed();
    assert!(
        took < Duration::from_millis(bound_ms + 1_000),
        "closed {took:?} after the revocation (cache bound {bound_ms} ms)"
    );
    let mut late = Client::connect(addr).await;
    assert_eq!(late.error_code().await, "revoked_api_key");
    late.closed().await;
}

#[tokio::test]
async fn oversized_and_malformed_frames_close_only_their_connection() {
    let (_app, addr, _) = listener("", "basic", None, "").await;
    // A well-behaved client, served throughout.
    let mut good = Client::connect(addr).await;
    good.ping().await;

    // A 10 MB header line: refused at the cap, while the client is still sending.
    let mut flood = Client::connect(addr).await;
    let (_, mut writer) = TcpStream::connect(addr).await.expect("spare").into_split();
    std::mem::swap(&mut flood.writer, &mut writer);
    let flooding = tokio::spawn(async move {
        let line = vec![b'{'; 10 * 1024 * 1024];
        writer.write_all(&line).await.is_ok()
    });
    let refused = tokio::spawn(async move {
        let code = flood.error_code().await;
        flood.closed().await;
        code
    });
    // Meanwhile the well-behaved client is served.
    good.event("synthesize", json!({"text": "Served during the flood."}))
        .await;
    assert!(rms(&samples_of(&good.until("audio-stop").await)) > 300.0);
    assert_eq!(refused.await.expect("flood reader"), "event_too_large");
    let _ = flooding.await;

    // A payload of 2^40 bytes: refused as soon as the header line is read.
    let mut huge = Client::connect(addr).await;
    huge.raw(b"{\"type\":\"audio-chunk\",\"data\":{\"rate\":16000,\"width\":2,\"channels\":1},\"payload_length\":1099511627776}\n")
        .await
        .expect("send");
    assert_eq!(huge.error_code().await, "event_too_large");
    huge.closed().await;

    // A header line that is not JSON.
    let mut garbled = Client::connect(addr).await;
    garbled.raw(b"{\"type\": describe\n").await.expect("send");
    assert_eq!(garbled.error_code().await, "invalid_event");
    garbled.closed().await;

    // An unknown event, and a known one with the wrong shape: errors, the connection stays.
    let mut odd = Client::connect(addr).await;
    odd.event("run-pipeline", json!({})).await;
    assert_eq!(odd.error_code().await, "unsupported_event");
    odd.event("synthesize", json!({"text": 42})).await;
    assert_eq!(odd.error_code().await, "invalid_event");
    odd.event(
        "audio-chunk",
        json!({"rate": 16_000, "width": 5, "channels": 1}),
    )
    .await;
    assert_eq!(odd.error_code().await, "invalid_audio");
    odd.ping().await;

    good.event("synthesize", json!({"text": "Still here."}))
        .await;
    assert!(rms(&samples_of(&good.until("audio-stop").await)) > 300.0);
}

#[tokio::test]
async fn endless_audio_idle_clients_and_event_floods_are_cut_off() {
    let limits = "max_audio_secs = 2\nidle_secs = 1\nmax_events_per_sec = 20\nutterance_secs = 3";
    let (_app, addr, _) = listener("", "basic", None, limits).await;

    // Audio that never stops: cut at max_audio_secs of audio (the fifth half second).
    let mut endless = Client::connect(addr).await;
    let format = json!({"rate": 16_000, "width": 2, "channels": 1});
    endless.event("transcribe", json!({})).await;
    endless.event("audio-start", format.clone()).await;
    let mut chunk = Frame::with_data("audio-chunk", format.clone());
    chunk.payload = vec![0; 16_000];
    for _ in 0..5 {
        endless.send(&chunk).await;
    }
    assert_eq!(endless.error_code().await, "audio_too_long");
    endless.closed().await;

    // Audio that trickles in under the idle bound: cut at utterance_secs.
    // Timed from before the connection: the server's clock starts after this.
    let started = Instant::now();
    let mut slow = Client::connect(addr).await;
    slow.event("transcribe", json!({})).await;
    slow.event("audio-start", format.clone()).await;
    let mut small = Frame::with_data("audio-chunk", format);
    small.payload = vec![0; 320];
    let small = frame::encode(&small);
    let Client {
        reader,
        mut writer,
        buf,
    } = slow;
    let trickle = async move {
        while writer.write_all(&small).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        std::future::pending::<()>().await;
    };
    let (_, spare) = TcpStream::connect(addr).await.expect("spare").into_split();
    let mut slow = Client {
        reader,
        writer: spare,
        buf,
    };
    let code = tokio::select! {
        code = slow.error_code() => code,
        () = trickle => unreachable!(),
    };
    assert_eq!(code, "timeout");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    slow.closed().await;

    // Silence: cut at idle_secs.
    let since = Instant::now();
    let mut idle = Client::connect(addr).await;
    assert_eq!(idle.error_code().await, "timeout");
    idle.closed().await;
    assert!(since.elapsed() >= Duration::from_secs(1));

    // More than max_events_per_sec.
    let mut flood = Client::connect(addr).await;
    let mut pings = Vec::new();
    for _ in 0..40 {
        pings.extend(frame::encode(&Frame::with_data("ping", json!({}))));
    }
    flood.raw(&pings).await.expect("send");
    let mut pongs = 0;
    let code = loop {
        let frame = flood.recv().await.expect("an error before the close");
        if frame.kind == "pong" {
            pongs += 1;
            continue;
        }
        assert_eq!(frame.kind, "error");
        break frame.data["code"].as_str().expect("code").to_owned();
    };
    assert_eq!(code, "too_many_events");
    assert_eq!(pongs, 20);
    flood.closed().await;

    // Through all of it, the listener serves a well-behaved client.
    let mut good = Client::connect(addr).await;
    good.ping().await;
}
