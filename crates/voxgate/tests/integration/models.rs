//! Models, voices, health, the OpenAPI document.

use crate::helpers::{error_of, spawn_app};

#[tokio::test]
async fn models_are_listed_in_openai_shape() {
    let app = spawn_app().await;
    let models = app.models().await;
    assert_eq!(models["object"], "list");
    let data = models["data"].as_array().expect("data");
    for id in ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "flite"] {
        let model = data
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(model["object"], "model");
        assert!(model["created"].as_u64().expect("created") > 1_600_000_000);
        assert_eq!(model["owned_by"], "voxgate");
    }
    let one: serde_json::Value = app
        .get("/v1/models/tts-1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(one["id"], "tts-1");
    assert_eq!(one["object"], "model");
    let (status, code, _) = error_of(app.get("/v1/models/whisper-9").await).await;
    assert_eq!((status, code.as_deref()), (404, Some("model_not_found")));
}

#[tokio::test]
async fn voices_carry_language_engine_and_models() {
    let app = spawn_app().await;
    let voices = app.voices().await;
    let list = voices["voices"].as_array().expect("voices");
    let alloy = list.iter().find(|v| v["id"] == "alloy").expect("alloy");
    assert!(alloy["name"].is_string());
    assert_eq!(alloy["language"], "en-US");
    assert_eq!(alloy["engine"], "flite");
    assert!(
        alloy["models"]
            .as_array()
            .expect("models")
            .iter()
            .any(|m| m == "tts-1")
    );
}

#[tokio::test]
async fn health_endpoints_say_nothing_internal() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("body"), r#"{"status":"ok"}"#);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.expect("body"), r#"{"status":"ready"}"#);
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    for path in [
        "/v1/audio/speech",
        "/v1/models",
        "/v1/models/{id}",
        "/v1/audio/voices",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    // Narrowed to this server: what the document allows, the server accepts.
    let schemas = &doc["components"]["schemas"];
    let props = &schemas["SpeechRequest"]["properties"];
    assert!(
        props["voice"]["enum"]
            .as_array()
            .expect("voices")
            .iter()
            .any(|v| v == "alloy")
    );
    assert!(
        props["model"]["enum"]
            .as_array()
            .expect("models")
            .iter()
            .any(|m| m == "tts-1")
    );
    assert_eq!(props["input"]["maxLength"], 4096);
    let formats = schemas["AudioFormat"]["enum"].as_array().expect("formats");
    assert!(formats.iter().any(|f| f == "mp3"));
    assert_eq!(
        formats.iter().any(|f| f == "aac"),
        cfg!(feature = "aac"),
        "aac is listed exactly when this build can produce it"
    );
}
