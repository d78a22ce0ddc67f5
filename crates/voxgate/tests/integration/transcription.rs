//! `POST /v1/audio/transcriptions` against real Whisper base: intelligibility of the embedded
//! engine's speech (round trip), the response formats, and hostile uploads.

use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, client_with, create_key, error_of, file_part, spawn_app, spawn_app_with, speech_body,
    tone_wav, wav_of,
};

const PARAGRAPH: &str = "The quick brown fox jumps over the lazy dog. \
    A gateway should check every request before it reaches the engine. \
    Speech synthesis turns written text into sound that people can understand.";

async fn speak_wav(app: &TestApp, text: &str) -> Vec<u8> {
    let response = app.speech(speech_body(text, "wav")).await;
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("audio").to_vec()
}

async fn transcribe(app: &TestApp, form: Form) -> reqwest::Response {
    app.client
        .post(app.url("/v1/audio/transcriptions"))
        .multipart(form)
        .send()
        .await
        .expect("send")
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate: word-level edit distance over the reference length.
fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if rw == hw {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[h.len()] as f64 / r.len() as f64
}

#[test]
fn wer_counts_substitutions_insertions_and_deletions() {
    assert_eq!(wer("a b c d", "a b c d"), 0.0);
    assert_eq!(wer("a b c d", "a x c d"), 0.25);
    assert_eq!(wer("a b c d", "a b c"), 0.25);
    assert_eq!(wer("a b c d", "a b c d e"), 0.25);
    assert_eq!(wer("Hello, World!", "hello world"), 0.0);
}

/// The embedded engine speaks a paragraph; Whisper must understand it (WER ≤ 25%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_speech_is_intelligible_to_whisper() {
    let app = spawn_app().await;
    let wav = speak_wav(&app, PARAGRAPH).await;
    let form = Form::new()
        .text("model", "whisper-1")
        .text("language", "en")
        .part("file", file_part(wav, "speech.wav"));
    let response = transcribe(&app, form).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    let text = body["text"].as_str().expect("text");
    let rate = wer(PARAGRAPH, text);
    eprintln!(
        "round trip WER {:.1}% ({} words)",
        rate * 100.0,
        words(PARAGRAPH).len()
    );
    assert!(rate <= 0.25, "WER {rate:.2}: {text:?}");
    assert!(body["usage"]["seconds"].as_u64().expect("seconds") >= 5);
}

/// The neural voice: Piper (tts-1-hd) speaks the same paragraph, Whisper transcribes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piper_round_trip_is_intelligible_to_whisper() {
    let app = spawn_app().await;
    let response = app
        .speech(json!({"model": "tts-1-hd", "input": PARAGRAPH, "voice": "alloy", "response_format": "wav"}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-voxgate-engine"],
        "piper",
        "Piper served (models fetched, espeak-ng installed), not its Flite fallback"
    );
    let wav = response.bytes().await.expect("audio").to_vec();
    let form = Form::new()
        .text("model", "whisper-1")
        .text("language", "en")
        .part("file", file_part(wav, "speech.wav"));
    let body: Value = transcribe(&app, form).await.json().await.expect("json");
    let text = body["text"].as_str().expect("text");
    let rate = wer(PARAGRAPH, text);
    eprintln!(
        "piper round trip WER {:.1}% ({} words)",
        rate * 100.0,
        words(PARAGRAPH).len()
    );
    assert!(rate <= 0.25, "WER {rate:.2}: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_formats_follow_openai() {
    let app = spawn_app().await;
    let wav = speak_wav(&app, "Hello there. This is a short test.").await;
    let send = |format: &'static str, words: bool| {
        let mut form = Form::new()
            .text("model", "whisper-1")
            .text("language", "en")
            .text("response_format", format)
            .part("file", file_part(wav.clone(), "a.wav"));
        if words {
            form = form.text("timestamp_granularities[]", "word");
        }
        transcribe(&app, form)
    };
    let text = send("text", false).await;
    assert!(
        text.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain")
    );
    let text = text.text().await.expect("text").to_lowercase();
    assert!(text.contains("hello"), "{text}");

    let srt = send("srt", false).await.text().await.expect("srt");
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    assert!(srt.contains(" --> "), "{srt}");

    let vtt = send("vtt", false).await.text().await.expect("vtt");
    assert!(vtt.starts_with("WEBVTT\n\n00:00:0"), "{vtt}");

    let verbose: Value = send("verbose_json", true).await.json().await.expect("json");
    assert_eq!(verbose["task"], "transcribe");
    assert_eq!(verbose["language"], "en");
    let duration = verbose["duration"].as_f64().expect("duration");
    assert!(duration > 1.0 && duration < 10.0, "{duration}");
    let words = verbose["words"].as_array().expect("words");
    assert!(words.len() >= 4, "{verbose}");
    let ends: Vec<f64> = words
        .iter()
        .map(|w| w["end"].as_f64().expect("end"))
        .collect();
    assert!(
        ends.windows(2).all(|w| w[0] <= w[1]),
        "word times go forward"
    );
    assert!(ends.last().copied().unwrap_or_default() <= duration + 0.5);
    assert!(!verbose["segments"].as_array().expect("segments").is_empty());

    // Word timestamps need verbose_json.
    let (status, code, _) = error_of(send("json", true).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("invalid_value")));
}

/// The same setting for every tier (tiers must nest: a lower rank may not allow more).
fn every_tier(setting: &str) -> String {
    ["guest", "basic", "premium", "admin"]
        .iter()
        .map(|t| format!("[tiers.{t}]\n{setting}\n"))
        .collect()
}

fn form_with(bytes: Vec<u8>, filename: &str) -> Form {
    Form::new()
        .text("model", "whisper-1")
        .part("file", file_part(bytes, filename))
}

#[tokio::test]
async fn hostile_uploads_are_refused_before_any_transcription() {
    let app = spawn_app_with(&every_tier("max_upload_secs = 3")).await;
    let wav = tone_wav(1.0, 16_000);
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.resize(4096, 0);
    let mut zip = b"PK\x03\x04\x14\x00\x00\x00".to_vec();
    zip.resize(2048, 0);
    let mut polyglot = wav.clone();
    // A ZIP appended to real audio: an end-of-central-directory record ending the file.
    polyglot.extend_from_slice(b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    let mut huge_header = wav.clone();
    huge_header[24..28].copy_from_slice(&4_000_000_000u32.to_le_bytes());
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (Vec::new(), "empty.wav", 400, "empty_file"),
        (elf, "x.wav", 415, "unsupported_media_type"),
        (zip, "x.wav", 415, "unsupported_media_type"),
        (
            b"%PDF-1.7\n%\xe2\xe3".repeat(100),
            "x.mp3",
            415,
            "unsupported_media_type",
        ),
        (wav.clone(), "x.mp3", 415, "unsupported_media_type"),
        (wav.clone(), "x.exe", 400, "unsupported_file_type"),
        (
            wav.clone(),
            "../../etc/passwd",
            400,
            "unsupported_file_type",
        ),
        (polyglot, "x.wav", 415, "polyglot_file"),
        (huge_header, "x.wav", 400, "unsupported_sample_rate"),
        (tone_wav(5.0, 16_000), "long.wav", 400, "audio_too_long"),
    ];
    for (bytes, name, status, code) in cases {
        let response = transcribe(&app, form_with(bytes, name)).await;
        let (got_status, got_code, param) = error_of(response).await;
        assert_eq!(
            (got_status, got_code.as_deref(), param.as_deref()),
            (status, Some(code), Some("file")),
            "{name} → {code}"
        );
    }
    // Nothing spooled is left behind.
    let left = std::fs::read_dir(app.state.uploads.path())
        .expect("dir")
        .count();
    assert_eq!(
        left, 0,
        "spooled uploads must be removed when the request ends"
    );
}

#[tokio::test]
async fn uploads_over_the_tier_cap_stop_at_413() {
    let app = spawn_app_with(&every_tier("max_upload_bytes = 100000")).await;
    let big = tone_wav(4.0, 16_000); // 128 KB
    let (status, code, param) = error_of(transcribe(&app, form_with(big, "big.wav")).await).await;
    assert_eq!(
        (status, code.as_deref(), param.as_deref()),
        (413, Some("file_too_large"), Some("file"))
    );
}

#[tokio::test]
async fn form_fields_are_checked() {
    let app = spawn_app().await;
    let wav = tone_wav(1.0, 16_000);
    let cases: Vec<(Form, u16, &str, &str)> = vec![
        (
            Form::new().part("file", file_part(wav.clone(), "a.wav")),
            400,
            "missing_parameter",
            "model",
        ),
        (
            Form::new().text("model", "whisper-1"),
            400,
            "missing_parameter",
            "file",
        ),
        (
            form_with(wav.clone(), "a.wav").text("evil", "x"),
            400,
            "unknown_parameter",
            "evil",
        ),
        (
            form_with(wav.clone(), "a.wav").text("language", "xx"),
            400,
            "unsupported_language",
            "language",
        ),
        (
            form_with(wav.clone(), "a.wav").text("temperature", "NaN"),
            400,
            "invalid_value",
            "temperature",
        ),
        (
            form_with(wav.clone(), "a.wav").text("temperature", "1.5"),
            400,
            "invalid_value",
            "temperature",
        ),
        (
            form_with(wav.clone(), "a.wav").text("response_format", "xml"),
            400,
            "invalid_value",
            "response_format",
        ),
        (
            form_with(wav.clone(), "a.wav").text("prompt", "a\u{202e}b"),
            400,
            "bidi_control",
            "prompt",
        ),
        (
            form_with(wav.clone(), "a.wav").text("model", "whisper-1"),
            400,
            "duplicate_parameter",
            "model",
        ),
        (
            Form::new()
                .text("model", "tts-1")
                .part("file", file_part(wav.clone(), "a.wav")),
            400,
            "unsupported_model",
            "model",
        ),
    ];
    for (form, status, code, param) in cases {
        let (got_status, got_code, got_param) = error_of(transcribe(&app, form).await).await;
        assert_eq!(
            (got_status, got_code.as_deref(), got_param.as_deref()),
            (status, Some(code), Some(param)),
            "{code}"
        );
    }
    // JSON is not a form.
    let response = app
        .client
        .post(app.url("/v1/audio/transcriptions"))
        .json(&serde_json::json!({"model": "whisper-1"}))
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(response).await;
    assert_eq!(
        (status, code.as_deref()),
        (415, Some("unsupported_media_type"))
    );
    // A key without the transcription scope.
    let (_, guest) = create_key(&app.state, "guest", None, None).await;
    let response = client_with(Some(&guest))
        .post(app.url("/v1/audio/transcriptions"))
        .multipart(form_with(wav, "a.wav"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_model_failing_its_checksum_leaves_the_engine_unavailable() {
    let models = tempfile::tempdir().expect("tempdir");
    let real = crate::helpers::repo_root().join("models/whisper-base");
    for file in [
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
        "preprocessor_config.json",
    ] {
        std::os::unix::fs::symlink(real.join(file), models.path().join(file)).expect("link");
    }
    std::fs::write(models.path().join("config.json"), b"{\"tampered\": true}").expect("write");
    let app = spawn_app_with(&format!(
        "[engines.whisper]\nkind = \"whisper\"\nmodel_dir = \"{}\"\nthreads = 1\nparallel = 1\nbeam_size = 1\n",
        models.path().display()
    ))
    .await;
    for _ in 0..2 {
        let response = transcribe(&app, form_with(tone_wav(1.0, 16_000), "a.wav")).await;
        let (status, code, _) = error_of(response).await;
        assert_eq!((status, code.as_deref()), (503, Some("engine_unavailable")));
    }
}

#[tokio::test]
async fn transcribed_seconds_are_a_quota() {
    let app = spawn_app_with(&every_tier(
        "quotas = [{ per = \"account\", metric = \"transcribed_seconds\", period = \"day\", limit = 2 }]",
    ))
    .await;
    // 3 s of audio against a 2 s budget: refused before any recognition.
    let response = transcribe(&app, form_with(tone_wav(3.0, 16_000), "a.wav")).await;
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (429, Some("quota_exceeded")));
}

#[tokio::test]
async fn transcription_models_are_listed() {
    // The embedded defaults configure whisper-1 as a transcription model.
    let app = spawn_app().await;
    let models = app.models().await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"whisper-1"), "{ids:?}");
}

/// Events of a `text/event-stream` body, in order, with whether each arrived in a body
/// chunk before the one that held the last event.
async fn events_of(mut response: reqwest::Response) -> Vec<(Value, bool)> {
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream")
    );
    let mut chunks = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        chunks.push(String::from_utf8(chunk.to_vec()).expect("utf-8"));
    }
    let last_chunk = chunks.len().saturating_sub(1);
    let mut events = Vec::new();
    let mut pending = String::new();
    for (i, chunk) in chunks.iter().enumerate() {
        pending.push_str(chunk);
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let data = event
                .trim_end()
                .strip_prefix("data: ")
                .expect("a data line");
            events.push((
                serde_json::from_str(data).expect("event json"),
                i < last_chunk,
            ));
        }
    }
    assert!(
        pending.is_empty(),
        "a partial event at the end: {pending:?}"
    );
    events
}

/// `stream=true`: a text delta per 30-second window as Whisper finishes it, sent before
/// the rest is recognised; the deltas add up to the text of `transcript.text.done`, which
/// bills the seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_transcription_sends_text_before_it_is_done() {
    let app = spawn_app().await;
    // Over 40 seconds of different sentences (Whisper drops repeats of the same text).
    let long = format!(
        "{PARAGRAPH} The weather in the mountains changes quickly, so hikers carry warm \
         clothes even in summer. Our library opens at nine in the morning and closes at six \
         in the evening on weekdays. Please remember to water the plants on the balcony \
         while I am away. The train to the city leaves from the second platform every half \
         hour. Fresh bread from the bakery around the corner is the best way to start a \
         Sunday. Children learn languages faster when they hear them every day at home."
    );
    let wav = speak_wav(&app, &long).await;
    let form = Form::new()
        .text("model", "whisper-1")
        .text("language", "en")
        .text("stream", "true")
        .part("file", file_part(wav, "long.wav"));
    let response = transcribe(&app, form).await;
    assert_eq!(response.headers()["x-voxgate-engine"], "whisper");
    let events = events_of(response).await;
    let (done, _) = events.last().expect("events");
    assert_eq!(done["type"], "transcript.text.done");
    let deltas: Vec<&(Value, bool)> = events[..events.len() - 1].iter().collect();
    assert!(deltas.len() >= 2, "one delta per window: {events:?}");
    assert!(
        deltas
            .iter()
            .all(|(e, _)| e["type"] == "transcript.text.delta")
    );
    assert!(deltas[0].1, "the first window's text came before the end");
    let joined: String = deltas
        .iter()
        .map(|(e, _)| e["delta"].as_str().expect("delta"))
        .collect();
    let text = done["text"].as_str().expect("text");
    assert_eq!(joined, text, "the deltas add up to the text");
    assert_eq!(done["usage"]["type"], "duration");
    assert!(done["usage"]["seconds"].as_u64().expect("seconds") > 35);
    let rate = wer(&long, text);
    eprintln!("streamed WER {:.1}%: {text}", rate * 100.0);
    assert!(rate <= 0.3, "WER {rate:.2}: {text:?}");
}

#[tokio::test]
async fn streaming_is_refused_where_it_cannot_apply() {
    let app = spawn_app().await;
    let send = |field: &'static str, value: &'static str, stream: &'static str| {
        let form = Form::new()
            .text("model", "whisper-1")
            .text("stream", stream)
            .text(field, value)
            .part("file", file_part(tone_wav(1.0, 16_000), "a.wav"));
        transcribe(&app, form)
    };
    for format in ["srt", "vtt", "verbose_json"] {
        let (status, code, param) = error_of(send("response_format", format, "true").await).await;
        assert_eq!(
            (status, code.as_deref(), param.as_deref()),
            (400, Some("invalid_value"), Some("stream")),
            "{format}"
        );
    }
    let (status, code, param) = error_of(send("language", "en", "yes").await).await;
    assert_eq!(
        (status, code.as_deref(), param.as_deref()),
        (400, Some("invalid_value"), Some("stream"))
    );
}

/// `POST /v1/audio/translations`: French speech (espeak-ng, sandboxed) comes back as
/// English text; transcribed, the spoken language is detected. Whisper base translates robotic speech
/// poorly: a short sentence, spoken slowly, is what it renders reliably.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn french_speech_is_translated_into_english() {
    let app = spawn_app_with(
        r#"
[engines.espeak]
kind = "subprocess"
program = "espeak-ng"
native_voices = ["fr"]
voices = { alloy = "fr" }
[models.espeak-fr]
engine = "espeak"
"#,
    )
    .await;
    let response = app
        .speech(
            json!({"model": "espeak-fr", "voice": "alloy", "response_format": "wav",
            "speed": 0.6, "input": "Je m'appelle Marie. J'habite à Paris."}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let wav = response.bytes().await.expect("audio").to_vec();
    let translate = |format: &'static str| {
        let form = Form::new()
            .text("model", "whisper-1")
            .text("response_format", format)
            .part("file", file_part(wav.clone(), "french.wav"));
        app.client
            .post(app.url("/v1/audio/translations"))
            .multipart(form)
            .send()
    };
    let response = translate("verbose_json").await.expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    eprintln!("translation: {}", body["text"]);
    assert_eq!(body["task"], "translate");
    assert_eq!(
        body["language"], "english",
        "OpenAI reports the output's language"
    );
    let text = body["text"].as_str().expect("text").to_lowercase();
    assert!(
        text.contains("my name is"),
        "not an English rendering: {text:?}"
    );
    assert!(
        !["je ", "m'appelle", "j'habite"]
            .iter()
            .any(|w| text.contains(w)),
        "French words left: {text:?}"
    );
    assert!(!body["segments"].as_array().expect("segments").is_empty());

    // The same audio transcribed stays French, and says so.
    let form = Form::new()
        .text("model", "whisper-1")
        .text("response_format", "verbose_json")
        .part("file", file_part(wav.clone(), "french.wav"));
    let heard: Value = transcribe(&app, form).await.json().await.expect("json");
    assert_eq!(heard["language"], "fr", "the spoken language, detected");
    let heard = heard["text"].as_str().expect("text").to_lowercase();
    assert!(
        heard.contains("appelle") || heard.contains("paris"),
        "{heard:?}"
    );

    let plain = translate("text")
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(plain.to_lowercase().contains("my name is"), "{plain}");
    let srt = translate("srt")
        .await
        .expect("send")
        .text()
        .await
        .expect("srt");
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");

    // The translation form is OpenAI's: no language (it is detected), no streaming.
    for (field, value) in [("language", "fr"), ("stream", "true")] {
        let form = Form::new()
            .text("model", "whisper-1")
            .text(field, value)
            .part("file", file_part(wav.clone(), "french.wav"));
        let response = app
            .client
            .post(app.url("/v1/audio/translations"))
            .multipart(form)
            .send()
            .await
            .expect("send");
        let (status, _, param) = error_of(response).await;
        assert_eq!((status, param.as_deref()), (400, Some(field)));
    }
}

/// 24 kHz PCM of `text` from the embedded voice.
async fn speak_pcm(app: &TestApp, text: &str) -> Vec<i16> {
    let response = app.speech(speech_body(text, "pcm")).await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.expect("audio");
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// `chunking_strategy`: voice activity detection (Silero VAD) finds the two utterances of
/// a recording with long silences, each is recognised on its own (a delta each when
/// streaming), and the timings stay those of the whole recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunking_recognises_each_utterance_and_skips_silence() {
    let app = spawn_app().await;
    let first = speak_pcm(&app, "Please turn off the lights in the kitchen.").await;
    let second = speak_pcm(&app, "The weather will be sunny tomorrow afternoon.").await;
    let rate = 24_000usize;
    let mut audio = vec![0i16; rate];
    audio.extend(&first);
    audio.extend(std::iter::repeat_n(0i16, 4 * rate));
    let second_at = audio.len() as f64 / rate as f64;
    audio.extend(&second);
    audio.extend(std::iter::repeat_n(0i16, 2 * rate));
    let wav = wav_of(&audio, rate as u32);
    let send = |chunking: &'static str, format: &'static str, stream: bool| {
        let mut form = Form::new()
            .text("model", "whisper-1")
            .text("language", "en")
            .text("chunking_strategy", chunking)
            .text("response_format", format)
            .part("file", file_part(wav.clone(), "two.wav"));
        if stream {
            form = form.text("stream", "true");
        }
        transcribe(&app, form)
    };
    let events = events_of(send("auto", "json", true).await).await;
    let deltas: Vec<String> = events
        .iter()
        .filter(|(e, _)| e["type"] == "transcript.text.delta")
        .map(|(e, _)| e["delta"].as_str().expect("delta").to_lowercase())
        .collect();
    assert_eq!(deltas.len(), 2, "a delta per utterance: {events:?}");
    assert!(
        deltas[0].contains("kitchen") && !deltas[0].contains("weather"),
        "{deltas:?}"
    );
    assert!(
        deltas[1].contains("weather") || deltas[1].contains("sunny"),
        "{deltas:?}"
    );
    let (done, _) = events.last().expect("done");
    assert_eq!(done["type"], "transcript.text.done");
    assert_eq!(
        done["text"].as_str().expect("text").to_lowercase(),
        deltas.concat()
    );
    // Billed for the whole recording, silences included.
    let secs = audio.len().div_ceil(rate) as u64;
    assert_eq!(done["usage"]["seconds"], secs);

    let verbose: Value = send(
        r#"{"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 200, "silence_duration_ms": 800}"#,
        "verbose_json",
        false,
    )
    .await
    .json()
    .await
    .expect("json");
    let segments = verbose["segments"].as_array().expect("segments");
    let starts: Vec<f64> = segments
        .iter()
        .map(|s| s["start"].as_f64().expect("start"))
        .collect();
    assert!(
        starts[0] >= 0.6,
        "the first word follows a second of silence: {starts:?}"
    );
    let later = segments
        .iter()
        .find(|s| {
            s["text"]
                .as_str()
                .is_some_and(|t| t.to_lowercase().contains("weather"))
        })
        .expect("the second utterance");
    let at = later["start"].as_f64().expect("start");
    assert!(
        (second_at - 0.5..second_at + 1.0).contains(&at),
        "the second utterance starts at {at}, spoken at {second_at}"
    );

    // Silence only: nothing to recognise, an empty text, the seconds still billed.
    let form = Form::new()
        .text("model", "whisper-1")
        .text("chunking_strategy", "auto")
        .part(
            "file",
            file_part(wav_of(&vec![0i16; 2 * rate], rate as u32), "quiet.wav"),
        );
    let body: Value = transcribe(&app, form).await.json().await.expect("json");
    assert_eq!(body["text"], "");
    assert_eq!(body["usage"]["seconds"], 2);
}

#[tokio::test]
async fn chunking_strategy_values_are_checked() {
    let app = spawn_app().await;
    for value in [
        "manual",
        "{}",
        r#"{"type": "semantic_vad"}"#,
        r#"{"type": "server_vad", "threshold": 2}"#,
        r#"{"type": "server_vad", "silence_duration_ms": 60000}"#,
        r#"{"type": "server_vad", "eagerness": "high"}"#,
    ] {
        let form = Form::new()
            .text("model", "whisper-1")
            .text("chunking_strategy", value)
            .part("file", file_part(tone_wav(1.0, 16_000), "a.wav"));
        let (status, code, param) = error_of(transcribe(&app, form).await).await;
        assert_eq!(
            (status, code.as_deref(), param.as_deref()),
            (400, Some("invalid_value"), Some("chunking_strategy")),
            "{value}"
        );
    }
    // The object as the official SDKs put it in a form: one field per member.
    let parted = |fields: &[(&'static str, &'static str)]| {
        let mut form = Form::new()
            .text("model", "whisper-1")
            .part("file", file_part(tone_wav(1.0, 16_000), "a.wav"));
        for (name, value) in fields {
            form = form.text(*name, *value);
        }
        transcribe(&app, form)
    };
    let ok = parted(&[
        ("chunking_strategy[type]", "server_vad"),
        ("chunking_strategy[threshold]", "0.6"),
        ("chunking_strategy[silence_duration_ms]", "700"),
    ])
    .await;
    assert_eq!(ok.status(), 200);
    for fields in [
        &[("chunking_strategy[threshold]", "0.6")][..],
        &[
            ("chunking_strategy[type]", "server_vad"),
            ("chunking_strategy[prefix_padding_ms]", "-5"),
        ],
        &[
            ("chunking_strategy", "auto"),
            ("chunking_strategy[type]", "server_vad"),
        ],
    ] {
        let (status, _, param) = error_of(parted(fields).await).await;
        assert_eq!(
            (status, param.as_deref()),
            (400, Some("chunking_strategy")),
            "{fields:?}"
        );
    }
}
