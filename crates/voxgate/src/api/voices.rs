//! `GET /v1/audio/voices`: the voices clients may name, in the shape Open WebUI reads.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use super::AppState;
use super::Routes;
use crate::auth::Principal;
use axum::http::Method;

pub fn routes() -> Routes {
    Routes::default().add(Method::GET, "/v1/audio/voices", list_voices)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VoiceObject {
    /// What to send as `voice`.
    pub id: String,
    pub name: String,
    /// BCP 47 language tag.
    pub language: String,
    /// The engine that speaks it.
    pub engine: String,
    /// The models that accept this voice.
    pub models: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VoiceList {
    pub voices: Vec<VoiceObject>,
}

#[utoipa::path(get, path = "/v1/audio/voices", tag = "audio",
    responses((status = 200, description = "The voices", body = VoiceList)))]
pub async fn list_voices(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<VoiceList> {
    let tier = &principal.tier;
    let voices = state
        .catalog
        .voices()
        .into_iter()
        .filter(|v| tier.allows_voice(&v.id) && tier.allows_engine(&v.engine))
        .map(|mut v| {
            v.models.retain(|m| tier.allows_model(m));
            v
        })
        .filter(|v| !v.models.is_empty())
        .map(|v| VoiceObject {
            id: v.id,
            name: v.name,
            language: v.language,
            engine: v.engine,
            models: v.models,
        })
        .collect();
    Json(VoiceList { voices })
}
