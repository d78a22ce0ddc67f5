//! Hostile text, SSML and parameters through the real speech route: every refusal is a 400
//! (or a 403 tier gate) in the OpenAI envelope naming the parameter and a precise code.

use serde_json::json;

use crate::decode::decode;
use crate::helpers::{client_with, create_key, error_of, spawn_app, spawn_app_with, speech_body};

#[tokio::test]
async fn refused_characters_get_precise_codes() {
    let app = spawn_app().await;
    let cases = [
        ("nul\u{0}byte", "control_character"),
        ("escape \u{1b}[31m red", "control_character"),
        ("next line \u{85} here", "control_character"),
        ("trojan \u{202e}source\u{202c} text", "bidi_control"),
        ("isolate \u{2066}x\u{2069}", "bidi_control"),
        ("tag smuggling \u{e0041}\u{e0042}", "tag_character"),
        ("nonchar \u{fffe}", "noncharacter"),
        ("   \n\t  ", "empty_input"),
    ];
    for (input, code) in cases {
        let response = app.speech(speech_body(input, "wav")).await;
        let (status, got, param) = error_of(response).await;
        assert_eq!(
            (status, got.as_deref(), param.as_deref()),
            (400, Some(code), Some("input")),
            "{input:?}"
        );
    }
}

#[tokio::test]
async fn length_is_checked_after_nfkc() {
    let app = spawn_app().await;
    let (_, guest) = create_key(&app.state, "guest", None, None).await;
    let guest = client_with(Some(&guest));
    // 30 characters before NFKC, 540 after (U+FDFA expands to 18): over the guest's 500.
    let input = "\u{fdfa}".repeat(30);
    let response = guest
        .post(app.url("/v1/audio/speech"))
        .json(&speech_body(&input, "wav"))
        .send()
        .await
        .expect("send");
    let (status, code, param) = error_of(response).await;
    assert_eq!(
        (status, code.as_deref(), param.as_deref()),
        (400, Some("input_too_long"), Some("input"))
    );
    // Zero-width characters are stripped by default; text made only of them is empty.
    let response = app
        .speech(speech_body("\u{200b}\u{200d}\u{feff}", "wav"))
        .await;
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (400, Some("empty_input")));
}

#[tokio::test]
async fn voice_and_model_names_are_table_keys_not_paths() {
    let app = spawn_app().await;
    for voice in [
        "../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "．．／．．／etc／passwd",
        "/etc/passwd",
        "alloy\u{0}",
        "ALLOY",
        "al\u{200b}loy",
    ] {
        let mut body = speech_body("Hello.", "wav");
        body["voice"] = json!(voice);
        let (status, code, param) = error_of(app.speech(body).await).await;
        assert_eq!(
            (status, code.as_deref(), param.as_deref()),
            (400, Some("voice_not_found"), Some("voice")),
            "{voice:?}"
        );
    }
    for model in ["../tts-1", "．．／tts-1", "/etc/passwd", "tts-1\u{0}"] {
        let mut body = speech_body("Hello.", "wav");
        body["model"] = json!(model);
        let (status, code, _) = error_of(app.speech(body).await).await;
        assert_eq!(
            (status, code.as_deref()),
            (404, Some("model_not_found")),
            "{model:?}"
        );
    }
    // A transcription model cannot speak.
    let mut body = speech_body("Hello.", "wav");
    body["model"] = json!("whisper-1");
    let (status, code, _) = error_of(app.speech(body).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("unsupported_model")));
}

#[tokio::test]
async fn markup_in_plain_text_is_spoken_not_parsed() {
    let app = spawn_app().await;
    let body = speech_body(
        "Say this: </speak><audio src=\"http://169.254.169.254/x\"/> done.",
        "wav",
    );
    let response = app.speech(body).await;
    assert_eq!(response.status(), 200);
    let audio = decode("wav", &response.bytes().await.expect("body"));
    audio.assert_speech(1.0, 30.0);
}

fn ssml_body(input: &str) -> serde_json::Value {
    let mut body = speech_body(input, "wav");
    body["input_format"] = json!("ssml");
    body
}

#[tokio::test]
async fn ssml_is_a_tier_feature_with_a_strict_parser() {
    let app = spawn_app().await;
    let (_, basic) = create_key(&app.state, "basic", None, None).await;
    let response = client_with(Some(&basic))
        .post(app.url("/v1/audio/speech"))
        .json(&ssml_body("<speak>Hi.</speak>"))
        .send()
        .await
        .expect("send");
    let (status, code, _) = error_of(response).await;
    assert_eq!((status, code.as_deref()), (403, Some("ssml_not_allowed")));

    let cases = [
        (
            "<!DOCTYPE speak [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><speak>&x;</speak>",
            "ssml_dtd_refused",
        ),
        (
            "<speak>Hi <audio src=\"http://example.com/a.mp3\"/></speak>",
            "ssml_element_not_allowed",
        ),
        (
            "<speak xml:base=\"http://evil/\">Hi</speak>",
            "ssml_attribute_not_allowed",
        ),
        (
            "<speak><?php echo 1; ?>Hi</speak>",
            "ssml_processing_instruction",
        ),
        ("<speak>unclosed", "ssml_malformed"),
        ("<p>not speak</p>", "ssml_root_not_speak"),
        (
            "<speak><prosody rate=\"NaN\">Hi</prosody></speak>",
            "ssml_invalid_value",
        ),
        ("<speak><break time=\"1s\"/></speak>", "empty_input"),
        ("<speak>\u{202e}reversed</speak>", "bidi_control"),
    ];
    for (input, code) in cases {
        let (status, got, param) = error_of(app.speech(ssml_body(input)).await).await;
        assert_eq!(
            (status, got.as_deref(), param.as_deref()),
            (400, Some(code), Some("input")),
            "{input:?}"
        );
    }
    let nested = format!(
        "<speak>{}Hi{}</speak>",
        "<emphasis>".repeat(40),
        "</emphasis>".repeat(40)
    );
    let (status, code, _) = error_of(app.speech(ssml_body(&nested)).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("ssml_too_deep")));
}

#[tokio::test]
async fn ssml_breaks_become_silence_for_engines_without_ssml() {
    let app = spawn_app().await;
    let plain = app
        .speech(speech_body("First part. Second part.", "wav"))
        .await;
    assert_eq!(plain.status(), 200);
    let plain = decode("wav", &plain.bytes().await.expect("body"));
    let ssml = app
        .speech(ssml_body(
            "<speak><s>First part.</s><break time=\"2s\"/><s>Second part.</s></speak>",
        ))
        .await;
    assert_eq!(ssml.status(), 200);
    let ssml = decode("wav", &ssml.bytes().await.expect("body"));
    let added = ssml.seconds() - plain.seconds();
    assert!(
        (1.7..2.6).contains(&added),
        "the break should add about 2 s, added {added:.2} s"
    );
    // A break longer than the configured maximum is clamped (5 s by default).
    let clamped = app
        .speech(ssml_body("<speak>One.<break time=\"99999s\"/>Two.</speak>"))
        .await;
    assert_eq!(clamped.status(), 200);
    let clamped = decode("wav", &clamped.bytes().await.expect("body"));
    assert!(clamped.seconds() < 8.0, "{:.2} s", clamped.seconds());
}

#[tokio::test]
async fn tiers_can_refuse_blocked_words_and_spam() {
    let app = spawn_app_with(&format!(
        "[text]\nblocked_words = [\"darn\"]\n{}",
        crate::helpers::every_tier("block_profanity = true\nblock_spam = true")
    ))
    .await;
    for (input, code) in [
        ("Well, DARN it all.", "profanity"),
        (&*format!("Buy now {}", "!".repeat(60)), "spam"),
        (&*"visit http://a.example ".repeat(8), "spam"),
    ] {
        let (status, got, param) = error_of(app.speech(speech_body(input, "wav")).await).await;
        assert_eq!(
            (status, got.as_deref(), param.as_deref()),
            (400, Some(code), Some("input")),
            "{input:?}"
        );
    }
    // Whole words only: a word containing the blocked one is fine.
    let response = app.speech(speech_body("Darned socks.", "wav")).await;
    assert_eq!(response.status(), 200);
}
