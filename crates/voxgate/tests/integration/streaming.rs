//! Chunked streaming and server-sent events.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::decode::decode;
use crate::helpers::{parse_chunked, spawn_app};

const LONG: &str = "This is the first sentence. Here is the second one. A third follows it. \
    The fourth is here. And the fifth ends the text.";

#[tokio::test]
async fn multi_sentence_input_streams_in_several_chunks() {
    let app = spawn_app().await;
    let body = json!({"model": "tts-1", "input": LONG, "voice": "alloy", "response_format": "pcm"})
        .to_string();
    let request = format!(
        "POST /v1/audio/speech HTTP/1.1\r\nhost: test\r\n{}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        app.auth_line(),
        body.len()
    );
    let raw = app
        .raw(request.as_bytes(), std::time::Duration::from_secs(60))
        .await;
    let (head, chunks) = parse_chunked(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(
        chunks.len() >= 5,
        "expected a chunk per sentence, got {}",
        chunks.len()
    );
    let audio = decode("pcm", &chunks.concat());
    audio.assert_speech(4.0, 15.0);
}

#[tokio::test]
async fn sse_events_concatenate_to_valid_audio() {
    let app = spawn_app().await;
    let response = app
        .speech(json!({"model": "tts-1", "input": LONG, "voice": "alloy", "stream_format": "sse"}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = response.text().await.expect("body");
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").expect("data line");
            serde_json::from_str(data).expect("event JSON")
        })
        .collect();
    let (done, deltas) = events.split_last().expect("events");
    assert!(deltas.len() >= 2, "several deltas");
    let mut mp3 = Vec::new();
    for delta in deltas {
        assert_eq!(delta["type"], "speech.audio.delta");
        let audio = delta["audio"].as_str().expect("audio");
        mp3.extend(
            base64::engine::general_purpose::STANDARD
                .decode(audio)
                .expect("base64"),
        );
    }
    decode("mp3", &mp3).assert_speech(4.0, 15.0);
    assert_eq!(done["type"], "speech.audio.done");
    let usage = &done["usage"];
    assert_eq!(usage["input_tokens"], LONG.chars().count());
    let output = usage["output_tokens"].as_u64().expect("output_tokens");
    assert!(output > 40, "tenths of a second of audio: {output}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(LONG.chars().count() as u64 + output)
    );
    assert!(done.get("token_usage").is_none());
}
