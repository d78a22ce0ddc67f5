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
        super::models::list_models,
        super::models::get_model,
        super::voices::list_voices,
        super::health::healthz,
        super::health::readyz,
    ),
    components(schemas(
        crate::error::ErrorEnvelope,
        crate::error::ErrorBody,
        super::speech::AudioDelta,
        super::speech::AudioDone,
        super::speech::Usage,
    ))
)]
pub struct ApiDoc;

/// The document for this server's configuration.
pub fn document(state: &AppState) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let models: Vec<&str> = state.catalog.models().map(|m| m.id.as_str()).collect();
    let voices: Vec<String> = state.catalog.voices().into_iter().map(|v| v.id).collect();
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
        "description": "A voice from GET /v1/audio/voices. Stored voices ({\"id\": \"voice_…\"}) are refused with 400 stored_voices_unavailable until voice references exist.",
    });
    props["input"] = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": speech.max_input_chars,
        "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
        "description": "The text to speak: not blank, no NUL.",
    });
    props["instructions"] = json!({
        "type": ["string", "null"],
        "maxLength": speech.max_instructions_chars,
        "description": "Ignored by models that cannot follow it (or refused, where configured).",
    });
    schemas["AudioFormat"]["enum"] = json!(formats);
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
