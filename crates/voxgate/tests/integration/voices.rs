//! Stored voice references: consent, validation, encryption at rest, and object-level
//! authorization (another account's id is a 404, never a 403 that confirms it exists).

use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, client_with, create_key, error_of, file_part, spawn_app, spawn_app_with, speech_body,
    tone_wav,
};

fn voice_form(seconds: f64, consent: Option<&str>) -> Form {
    let mut form = Form::new().text("name", "My voice").part(
        "audio_sample",
        file_part(tone_wav(seconds, 22_050), "sample.wav"),
    );
    if let Some(consent) = consent {
        form = form.text("consent", consent.to_owned());
    }
    form
}

async fn create(app: &TestApp, client: &reqwest::Client, form: Form) -> reqwest::Response {
    client
        .post(app.url("/v1/audio/voices"))
        .multipart(form)
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn owners_store_list_use_and_delete_their_voices_only() {
    let app = spawn_app().await;
    let response = create(&app, &app.client, voice_form(6.0, Some("true"))).await;
    assert_eq!(response.status(), 200);
    let voice: Value = response.json().await.expect("json");
    let id = voice["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("voice_"), "{id}");
    assert_eq!(voice["name"], "My voice");
    assert!((voice["duration"].as_f64().expect("duration") - 6.0).abs() < 0.1);

    let listed = app.voices().await;
    assert!(
        listed["stored"]
            .as_array()
            .expect("stored")
            .iter()
            .any(|v| v["id"] == id.as_str())
    );
    let own = app.get(&format!("/v1/audio/voices/{id}")).await;
    assert_eq!(own.status(), 200);

    // Another account (same tier) sees nothing: 404 for get, delete and use.
    let (_, other) = create_key(&app.state, "admin", None, None).await;
    let other = client_with(Some(&other));
    let get = other
        .get(app.url(&format!("/v1/audio/voices/{id}")))
        .send()
        .await
        .expect("get");
    let (status, code, _) = error_of(get).await;
    assert_eq!((status, code.as_deref()), (404, Some("voice_not_found")));
    let delete = other
        .delete(app.url(&format!("/v1/audio/voices/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), 404);
    let mut body = speech_body("Hello.", "wav");
    body["voice"] = json!({"id": id});
    let used = other
        .post(app.url("/v1/audio/speech"))
        .json(&body)
        .send()
        .await
        .expect("speech");
    let (status, code, _) = error_of(used).await;
    assert_eq!((status, code.as_deref()), (404, Some("voice_not_found")));
    let listed: Value = other
        .get(app.url("/v1/audio/voices"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(listed["stored"].as_array().expect("stored").is_empty());

    // The owner may name it, but no engine here clones voices: a clear 400.
    let (status, code, param) = error_of(app.speech(body.clone()).await).await;
    assert_eq!(
        (status, code.as_deref(), param.as_deref()),
        (400, Some("voice_cloning_unsupported"), Some("voice"))
    );

    let deleted = app
        .client
        .delete(app.url(&format!("/v1/audio/voices/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        app.get(&format!("/v1/audio/voices/{id}")).await.status(),
        404
    );
}

#[tokio::test]
async fn references_are_encrypted_at_rest_and_open_only_for_their_owner() {
    let app = spawn_app().await;
    let response = create(&app, &app.client, voice_form(5.5, Some("true"))).await;
    let voice: Value = response.json().await.expect("json");
    let id = voice["id"].as_str().expect("id");
    let record = app
        .state
        .store
        .voice(&app.account, id)
        .await
        .expect("store")
        .expect("row");
    // What the database holds is ciphertext: no WAV header, no long runs of sample bytes.
    assert!(
        !record
            .sealed
            .windows(4)
            .any(|w| w == b"RIFF" || w == b"WAVE")
    );
    let audio = app
        .state
        .voices
        .audio(&app.account, id)
        .await
        .expect("open")
        .expect("found");
    assert_eq!(&audio[..4], b"RIFF");
    let reader = hound::WavReader::new(std::io::Cursor::new(&audio)).expect("wav");
    let secs = reader.duration() as f64 / f64::from(reader.spec().sample_rate);
    assert!((secs - 5.5).abs() < 0.1, "{secs}");
    // The same row under another account's key does not open.
    assert!(
        app.state
            .voices
            .audio("acct_someone_else", id)
            .await
            .expect("lookup")
            .is_none()
    );
}

#[tokio::test]
async fn consent_length_scope_and_limits_are_enforced() {
    let app = spawn_app_with(
        "[tiers.premium]\nmax_stored_voices = 1\n[tiers.admin]\nmax_stored_voices = 1\n",
    )
    .await;
    let cases = [
        (voice_form(6.0, None), 400, "consent_required"),
        (voice_form(6.0, Some("yes")), 400, "consent_required"),
        (voice_form(2.0, Some("true")), 400, "audio_too_short"),
        (voice_form(12.0, Some("true")), 400, "audio_too_long"),
        (
            Form::new()
                .text("name", "x\u{202e}y")
                .text("consent", "true")
                .part("audio_sample", file_part(tone_wav(6.0, 16_000), "a.wav")),
            400,
            "bidi_control",
        ),
        (
            Form::new().text("name", "x").text("consent", "true").part(
                "audio_sample",
                file_part(b"\x7fELF\x02\x01\x01\0".repeat(64), "a.wav"),
            ),
            415,
            "unsupported_media_type",
        ),
    ];
    for (form, status, code) in cases {
        let (got, got_code, _) = error_of(create(&app, &app.client, form).await).await;
        assert_eq!((got, got_code.as_deref()), (status, Some(code)), "{code}");
    }
    assert_eq!(
        create(&app, &app.client, voice_form(6.0, Some("true")))
            .await
            .status(),
        200
    );
    let (status, code, _) =
        error_of(create(&app, &app.client, voice_form(6.0, Some("true"))).await).await;
    assert_eq!(
        (status, code.as_deref()),
        (403, Some("voice_limit_reached"))
    );

    // The basic tier has no voices.manage scope.
    let (_, basic) = create_key(&app.state, "basic", None, None).await;
    let response = create(
        &app,
        &client_with(Some(&basic)),
        voice_form(6.0, Some("true")),
    )
    .await;
    assert_eq!(response.status(), 403);
}
