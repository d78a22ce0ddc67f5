//! `GET /v1/audio/voices`: the voices clients may name, in the shape Open WebUI reads, plus
//! the caller's stored voice references; `POST /v1/audio/voices` stores a reference (with
//! consent); `GET`/`DELETE /v1/audio/voices/{voice_id}` for the owner only.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::{Extension, Json};
use serde::Serialize;

use super::multipart::{self, FormSpec};
use super::{ApiError, AppState, Routes};
use crate::data::store::VoiceRecord;
use crate::identity::auth::Principal;
use crate::service::voices::NewVoice;

pub fn routes() -> Routes {
    Routes::default()
        .add(Method::GET, "/v1/audio/voices", list_voices)
        .add(Method::POST, "/v1/audio/voices", create_voice)
        .add(Method::GET, "/v1/audio/voices/{voice_id}", get_voice)
        .add(Method::DELETE, "/v1/audio/voices/{voice_id}", delete_voice)
}

/// A stored voice reference, as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoredVoiceObject {
    /// Send `{"id": ...}` as `voice` to an engine that clones voices.
    pub id: String,
    /// Always `audio.voice`.
    pub object: &'static str,
    pub name: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// Length of the reference clip, in seconds.
    pub duration: f64,
}

impl From<VoiceRecord> for StoredVoiceObject {
    fn from(v: VoiceRecord) -> Self {
        Self {
            id: v.id,
            object: "audio.voice",
            name: v.name,
            created_at: v.created_at,
            duration: v.duration_ms as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedVoice {
    pub id: String,
    /// Always `audio.voice.deleted`.
    pub object: &'static str,
    pub deleted: bool,
}

/// Multipart fields of `POST /v1/audio/voices`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "describes the multipart form for the API document"
)]
pub struct CreateVoiceForm {
    /// A name for the voice (1 to 64 characters).
    name: String,
    /// The reference clip: 5 to 8 s of one speaker (wav, mp3, flac, ogg/opus, m4a, webm).
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    audio_sample: String,
    /// Must be `true`: the uploader confirms the speaker agreed to having their voice cloned.
    consent: String,
}

#[utoipa::path(post, path = "/v1/audio/voices", tag = "audio",
    request_body(content = CreateVoiceForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored voice", body = StoredVoiceObject),
        (status = 400, description = "Invalid field, no consent, or not acceptable audio", body = super::error::ErrorEnvelope),
        (status = 403, description = "Scope, or the tier's stored-voice limit", body = super::error::ErrorEnvelope),
        (status = 413, description = "File too large", body = super::error::ErrorEnvelope),
        (status = 415, description = "Not multipart, or not audio", body = super::error::ErrorEnvelope),
    ))]
pub async fn create_voice(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StoredVoiceObject>, ApiError> {
    let spec = FormSpec {
        file_field: "audio_sample",
        text_fields: &["name", "consent"],
        repeatable: &[],
        max_file_bytes: principal.tier.max_upload_bytes,
        max_text_bytes: 1024,
    };
    let mut form = multipart::read_form(&headers, body, &state.uploads, &spec).await?;
    let voice = NewVoice {
        consent: form.get("consent") == Some("true"),
        name: form.get("name").map(str::to_owned),
        sample: form.file.take(),
    };
    let record = state.store_voice(&principal, voice).await?;
    Ok(Json(record.into()))
}

#[utoipa::path(get, path = "/v1/audio/voices/{voice_id}", tag = "audio",
    params(("voice_id" = String, Path, description = "A stored voice id (`voice_…`)")),
    responses(
        (status = 200, description = "The stored voice", body = StoredVoiceObject),
        (status = 404, description = "No such voice for this account", body = super::error::ErrorEnvelope),
    ))]
pub async fn get_voice(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(voice_id): Path<String>,
) -> Result<Json<StoredVoiceObject>, ApiError> {
    let record = state.stored_voice(&principal, &voice_id).await?;
    Ok(Json(
        VoiceRecord {
            sealed: Vec::new(),
            ..record
        }
        .into(),
    ))
}

#[utoipa::path(delete, path = "/v1/audio/voices/{voice_id}", tag = "audio",
    params(("voice_id" = String, Path, description = "A stored voice id (`voice_…`)")),
    responses(
        (status = 200, description = "Deleted", body = DeletedVoice),
        (status = 404, description = "No such voice for this account", body = super::error::ErrorEnvelope),
    ))]
pub async fn delete_voice(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(voice_id): Path<String>,
) -> Result<Json<DeletedVoice>, ApiError> {
    state.delete_voice(&principal, &voice_id).await?;
    Ok(Json(DeletedVoice {
        id: voice_id,
        object: "audio.voice.deleted",
        deleted: true,
    }))
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
    /// The caller's stored voice references (for engines that clone voices).
    pub stored: Vec<StoredVoiceObject>,
}

#[utoipa::path(get, path = "/v1/audio/voices", tag = "audio",
    responses((status = 200, description = "The voices", body = VoiceList)))]
pub async fn list_voices(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<VoiceList>, ApiError> {
    let (voices, stored) = state.voices_for(&principal).await?;
    Ok(Json(VoiceList {
        voices: voices
            .into_iter()
            .map(|v| VoiceObject {
                id: v.id,
                name: v.name,
                language: v.language,
                engine: v.engine,
                models: v.models,
            })
            .collect(),
        stored: stored.into_iter().map(StoredVoiceObject::from).collect(),
    }))
}
