//! The OpenAPI 3.1 document of the public API, generated from the handler and wire types,
//! then narrowed to this server's configuration (its models, voices, formats and limits), so
//! that every request the document allows is one the server accepts. Served at
//! `GET /openapi.json`.

use std::sync::Arc;

use axum::Json;
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::AppState;
use super::Routes;
use crate::audio::AudioFormat;
use axum::http::Method;

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "voxgate", description = "OpenAI-compatible speech gateway"),
    paths(
        super::speech::create_speech,
        super::transcriptions::create_transcription,
        super::transcriptions::create_translation,
        super::models::list_models,
        super::models::get_model,
        super::voices::list_voices,
        super::voices::create_voice,
        super::voices::get_voice,
        super::voices::delete_voice,
        super::me::export,
        super::me::erase,
        super::health::healthz,
        super::health::readyz,
    ),
    components(schemas(
        super::error::ErrorEnvelope,
        super::error::ErrorBody,
        super::speech::AudioDelta,
        super::speech::AudioDone,
        super::speech::Usage,
        super::transcript::VerboseTranscription,
    ))
)]
pub struct ApiDoc;

/// The document for this server's configuration.
pub fn document(state: &AppState) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let models_of = |kind| -> Vec<&str> {
        state
            .catalog
            .models()
            .filter(|m| m.kind == kind)
            .map(|m| m.id.as_str())
            .collect()
    };
    let models = models_of(crate::engines::ModelKind::Speech);
    let transcription_models = models_of(crate::engines::ModelKind::Transcription);
    // Voices some model accepts (an engine no model uses advertises nothing).
    let mut voices: Vec<String> = state
        .catalog
        .voices()
        .into_iter()
        .filter(|v| !v.models.is_empty())
        .map(|v| v.id)
        .collect();
    voices.sort();
    voices.dedup();
    let formats: Vec<&str> = AudioFormat::ALL
        .iter()
        .filter(|f| f.is_available())
        .map(|f| f.as_str())
        .collect();
    let speech = &state.config.speech;
    let schemas = &mut doc["components"]["schemas"];
    let props = &mut schemas["SpeechRequest"]["properties"];
    props["model"] =
        json!({"type": "string", "enum": models, "description": "A model id from GET /v1/models."});
    props["voice"] = json!({
        "type": "string",
        "enum": voices,
        "description": "A voice from GET /v1/audio/voices. A stored voice ({\"id\": \"voice_…\"}) needs an engine that clones voices; others answer 400 voice_cloning_unsupported.",
    });
    props["input_format"] = json!({
        "type": ["string", "null"],
        "enum": ["text", null],
        "description": "voxgate extension. \"ssml\" (a strict subset) is accepted for tiers with SSML enabled; this document describes plain text.",
    });
    props["input"] = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": speech.max_input_chars,
        "pattern": TEXT_PATTERN,
        "description": "The text to speak. It is NFKC-normalised, then refused if it holds control characters (other than newline and tab), bidi overrides or isolates, tag characters or noncharacters; the length is checked after normalisation.",
    });
    props["instructions"] = json!({
        "type": ["string", "null"],
        "maxLength": speech.max_instructions_chars,
        "description": "Ignored by models that cannot follow it (or refused, where configured).",
    });
    schemas["AudioFormat"]["enum"] = json!(formats);
    let form = &mut schemas["TranscriptionForm"]["properties"];
    form["model"] = json!({"type": "string", "enum": transcription_models});
    form["prompt"] = json!({"type": "string", "maxLength": state.config.transcription.max_prompt_chars, "pattern": TEXT_PATTERN});
    form["response_format"] =
        json!({"type": "string", "enum": ["json", "text", "srt", "vtt", "verbose_json"]});
    form["temperature"] = json!({"type": "number", "minimum": 0, "maximum": 1});
    form["language"] = json!({"type": "string", "enum": ["en", "de", "fr", "es", "it"]});
    form["timestamp_granularities[]"] = json!({"type": "array", "items": {"type": "string", "enum": ["segment"]}, "description": "`segment` and/or `word` (word needs verbose_json)."});
    form["chunking_strategy"] = json!({"type": "string", "enum": ["auto"], "description": "`auto`, or a JSON object `{\"type\": \"server_vad\", \"threshold\", \"prefix_padding_ms\", \"silence_duration_ms\"}`: only speech is recognised, stretch by stretch."});
    form["stream"] = json!({"type": "boolean", "description": "`true`: server-sent events; `response_format` must then be `json` or `text`."});
    let translation_form = &mut schemas["TranslationForm"]["properties"];
    translation_form["model"] = json!({"type": "string", "enum": transcription_models});
    translation_form["prompt"] = json!({"type": "string", "maxLength": state.config.transcription.max_prompt_chars, "pattern": TEXT_PATTERN});
    translation_form["response_format"] =
        json!({"type": "string", "enum": ["json", "text", "srt", "vtt", "verbose_json"]});
    translation_form["temperature"] = json!({"type": "number", "minimum": 0, "maximum": 1});
    let voice_form = &mut schemas["CreateVoiceForm"]["properties"];
    voice_form["consent"] = json!({"type": "string", "enum": ["true"], "description": "Must be `true`: the speaker agreed to having their voice cloned."});
    voice_form["name"] = json!({"type": "string", "minLength": 1, "maxLength": state.config.voices.max_name_chars, "pattern": TEXT_PATTERN});
    // An event stream's schema describes one event (OpenAPI 3.1 has no `itemSchema`); each
    // event's data is a JSON delta or the final done event.
    doc["paths"]["/v1/audio/speech"]["post"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"] = json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"oneOf": [
                    {"$ref": "#/components/schemas/AudioDelta"},
                    {"$ref": "#/components/schemas/AudioDone"},
                ]},
            },
        },
    });
    secure_v1_routes(&mut doc);
    doc
}

/// What the text pipeline accepts, as far as a pattern can say: at least one character that
/// is neither whitespace nor invisible, and none of the refused ones.
const TEXT_PATTERN: &str = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069\\ufdd0-\\ufdef\\ufffe\\uffff]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u034f\\u061c\\u115f\\u1160\\u17b4\\u17b5\\u180b-\\u180f\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u206f\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0\\ufff0-\\uffff\\ufdd0-\\ufdef][^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069\\ufdd0-\\ufdef\\ufffe\\uffff]*$";

/// Every `/v1` operation takes a bearer key and can answer 401, 403 and 429.
fn secure_v1_routes(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": "A voxgate API key: vg_<keyid>_<secret>_<checksum>."}
    });
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
        })
    };
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            operation["security"] = json!([{"bearer": []}]);
            let responses = &mut operation["responses"];
            responses["401"] = error("Missing, invalid, expired or revoked API key");
            responses["403"] =
                error("The key lacks the scope, or its tier excludes the model or voice");
            responses["429"] = error("Too many failed authentications from this source");
        }
    }
}

pub fn routes(state: &AppState) -> Routes {
    let doc = Arc::new(document(state));
    Routes::default().add(Method::GET, "/openapi.json", move || {
        let doc = Arc::clone(&doc);
        async move { Json(doc.as_ref().clone()) }
    })
}
