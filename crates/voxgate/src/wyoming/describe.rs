//! `describe` → `info`: what the bound key may use, as Wyoming programs. One `tts` program
//! whose voices are `<model>/<voice>` for every speech model and voice the key's tier allows,
//! and one `asr` program with the transcription models it allows; a program appears only
//! when the key has the scope for it.

use serde_json::{Value, json};
use voxgate_wyoming::Frame;

use crate::config::Scope;
use crate::engines::ModelKind;
use crate::error::Error;
use crate::identity::auth::Principal;
use crate::service::Services;

/// The name of voxgate's programs (what `select-program` may name).
pub const PROGRAM: &str = "voxgate";

/// The separator between model and voice in a Wyoming voice name.
pub const MODEL_VOICE_SEPARATOR: char = '/';

fn attribution() -> Value {
    json!({"name": "voxgate", "url": ""})
}

/// The `info` event for `principal`.
pub async fn info(services: &Services, principal: &Principal) -> Result<Frame, Error> {
    let version = env!("CARGO_PKG_VERSION");
    let mut tts = Vec::new();
    if principal.has(Scope::Speech) {
        let speech_models: Vec<String> = services
            .models_for(principal)
            .filter(|m| m.kind == ModelKind::Speech)
            .map(|m| m.id.clone())
            .collect();
        let (voices, _) = services.voices_for(principal).await?;
        let mut listed = Vec::new();
        for voice in &voices {
            for model in voice.models.iter().filter(|m| speech_models.contains(m)) {
                listed.push(json!({
                    "name": format!("{model}{MODEL_VOICE_SEPARATOR}{}", voice.id),
                    "attribution": attribution(),
                    "installed": true,
                    "description": format!("{} ({model}, {})", voice.name, voice.engine),
                    "version": null,
                    "languages": [voice.language.replace('-', "_")],
                    "speakers": null,
                }));
            }
        }
        tts.push(json!({
            "name": PROGRAM,
            "attribution": attribution(),
            "installed": true,
            "description": "voxgate speech synthesis",
            "version": version,
            "voices": listed,
            "supports_synthesize_streaming": true,
        }));
    }
    let mut asr = Vec::new();
    if principal.has(Scope::Transcription) {
        let models: Vec<Value> = services
            .models_for(principal)
            .filter(|m| m.kind == ModelKind::Transcription)
            .filter_map(|m| {
                let engine = services.catalog.transcriber(m)?;
                Some(json!({
                    "name": m.id,
                    "attribution": attribution(),
                    "installed": true,
                    "description": format!("{} ({})", m.id, m.engine_id),
                    "version": null,
                    "languages": engine.languages(),
                }))
            })
            .collect();
        asr.push(json!({
            "name": PROGRAM,
            "attribution": attribution(),
            "installed": true,
            "description": "voxgate speech recognition",
            "version": version,
            "models": models,
            "supports_transcript_streaming": true,
            "requires_external_vad": true,
            "prefers_auto_gain_enabled": true,
            "prefers_noise_reduction_enabled": true,
        }));
    }
    Ok(Frame::with_data(
        "info",
        json!({
            "asr": asr,
            "tts": tts,
            "handle": [],
            "intent": [],
            "wake": [],
            "mic": [],
            "snd": [],
        }),
    ))
}
