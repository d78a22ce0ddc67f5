//! Speech in every format, decoded by independent decoders; speed; voices; concurrency.

use serde_json::json;

use crate::decode::decode;
use crate::helpers::{spawn_app, speech_body};

const HELLO: &str = "Hello there. This is voxgate.";

#[tokio::test]
async fn every_format_decodes_to_24_khz_speech() {
    let app = spawn_app().await;
    for (format, content_type) in [
        ("mp3", "audio/mpeg"),
        ("opus", "audio/ogg; codecs=opus"),
        ("flac", "audio/flac"),
        ("wav", "audio/wav"),
        ("pcm", "audio/pcm"),
        #[cfg(feature = "aac")]
        ("aac", "audio/aac"),
    ] {
        let response = app.speech(speech_body(HELLO, format)).await;
        assert_eq!(response.status(), 200, "{format}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{format}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-voxgate-engine"], "flite");
        let bytes = response.bytes().await.expect("body");
        let audio = decode(format, &bytes);
        audio.assert_speech(1.0, 4.0);
    }
}

#[tokio::test]
async fn mp3_is_the_default_format() {
    let app = spawn_app().await;
    let response = app
        .speech(json!({"model": "tts-1", "input": HELLO, "voice": "alloy"}))
        .await;
    assert_eq!(response.headers()["content-type"], "audio/mpeg");
    let bytes = response.bytes().await.expect("body");
    decode("mp3", &bytes).assert_speech(1.0, 4.0);
}

#[tokio::test]
async fn flac_output_passes_the_reference_decoder() {
    let app = spawn_app().await;
    let bytes = app.speech_bytes(speech_body(HELLO, "flac")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hello.flac");
    std::fs::write(&path, &bytes).expect("write");
    // The reference decoder (Debian's flac, installed by scripts/setup) must accept it.
    let status = std::process::Command::new("flac")
        .arg("-t")
        .arg("-s")
        .arg(&path)
        .status()
        .expect("flac is installed by scripts/setup");
    assert!(status.success(), "flac -t rejected the stream");
}

#[tokio::test]
async fn speed_two_halves_the_duration() {
    let app = spawn_app().await;
    let text = "The quick brown fox jumps over the lazy dog. It was not amused.";
    let normal = decode(
        "wav",
        &app.speech_bytes(
            json!({"model": "tts-1", "input": text, "voice": "echo", "response_format": "wav"}),
        )
        .await,
    );
    let fast = decode("wav", &app.speech_bytes(json!({"model": "tts-1", "input": text, "voice": "echo", "response_format": "wav", "speed": 2.0})).await);
    let slow = decode("wav", &app.speech_bytes(json!({"model": "tts-1", "input": text, "voice": "echo", "response_format": "wav", "speed": 0.5})).await);
    let ratio = fast.seconds() / normal.seconds();
    assert!(
        (0.4..0.65).contains(&ratio),
        "speed 2.0 gave {ratio:.2} of the duration"
    );
    let ratio = slow.seconds() / normal.seconds();
    assert!(
        (1.6..2.4).contains(&ratio),
        "speed 0.5 gave {ratio:.2} of the duration"
    );
}

#[tokio::test]
async fn every_listed_voice_speaks() {
    let app = spawn_app().await;
    let voices = app.voices().await;
    let ids: Vec<String> = voices["voices"]
        .as_array()
        .expect("voices")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect();
    for voice in [
        "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
        "verse", "marin", "cedar", "slt", "kal16", "rms", "awb",
    ] {
        assert!(ids.contains(&voice.to_owned()), "{voice} not listed");
    }
    // Each listed voice speaks with every model that lists it (Flite's with tts-1, Piper's
    // with piper and tts-1-hd).
    for voice in voices["voices"].as_array().expect("voices") {
        let id = voice["id"].as_str().expect("id");
        for model in voice["models"].as_array().expect("models") {
            let bytes = app
                .speech_bytes(
                    json!({"model": model, "input": "Hi.", "voice": id, "response_format": "pcm"}),
                )
                .await;
            assert!(
                decode("pcm", &bytes).rms() > 0.01,
                "{id} with {model} is silent"
            );
        }
    }
    assert!(!ids.is_empty());
}

/// kal16 is deterministic, so each concurrent response must equal its serial twin exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_their_own_audio() {
    let app = spawn_app().await;
    let texts = [
        "One short line.",
        "A second text, rather longer than the first one, with a comma.",
        "Third. It has two sentences.",
    ];
    let body = |text: &str| json!({"model": "tts-1", "input": text, "voice": "kal16", "response_format": "pcm"});
    let mut serial = Vec::new();
    for text in texts {
        serial.push(app.speech_bytes(body(text)).await);
    }
    let requests = (0..12).map(|i| {
        let app = &app;
        let text = texts[i % texts.len()];
        async move { (i, app.speech_bytes(body(text)).await) }
    });
    for (i, bytes) in futures::future::join_all(requests).await {
        assert!(
            bytes == serial[i % texts.len()],
            "request {i} got different audio"
        );
    }
}

#[tokio::test]
async fn instructions_are_ignored_where_the_model_says_so() {
    let app = spawn_app().await;
    let bytes = app
        .speech_bytes(json!({"model": "gpt-4o-mini-tts", "input": "Hi.", "voice": "coral", "instructions": "Speak cheerfully.", "response_format": "wav"}))
        .await;
    decode("wav", &bytes).assert_speech(0.2, 3.0);
}
