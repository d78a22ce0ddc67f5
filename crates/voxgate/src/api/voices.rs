//! `GET /v1/audio/voices`: the voices clients may name, in the shape Open WebUI reads, plus
//! the caller's stored voice references; `POST /v1/audio/voices` stores a reference (with
//! consent); `GET`/`DELETE /v1/audio/voices/{voice_id}` for the owner only.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Serialize;
use voxgate_input::probe::ProbeLimits;
use voxgate_input::text::{self, TextPolicy, ZeroWidth};

use super::AppState;
use super::Routes;
use crate::audit::{Actor, AuditEvent};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::store::VoiceRecord;
use crate::upload::{self, FormSpec};
use axum::http::Method;

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

/// Sample rate stored references are kept at.
const STORED_RATE: u32 = 24_000;

#[utoipa::path(post, path = "/v1/audio/voices", tag = "audio",
    request_body(content = CreateVoiceForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored voice", body = StoredVoiceObject),
        (status = 400, description = "Invalid field, no consent, or not acceptable audio", body = crate::error::ErrorEnvelope),
        (status = 403, description = "Scope, or the tier's stored-voice limit", body = crate::error::ErrorEnvelope),
        (status = 413, description = "File too large", body = crate::error::ErrorEnvelope),
        (status = 415, description = "Not multipart, or not audio", body = crate::error::ErrorEnvelope),
    ))]
pub async fn create_voice(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StoredVoiceObject>, ApiError> {
    let tier = &principal.tier;
    let settings = &state.config.voices;
    let spec = FormSpec {
        file_field: "audio_sample",
        text_fields: &["name", "consent"],
        repeatable: &[],
        max_file_bytes: tier.max_upload_bytes,
        max_text_bytes: 1024,
    };
    let form = upload::read_form(&headers, body, &state.uploads, &spec).await?;
    if form.get("consent") != Some("true") {
        return Err(ApiError::invalid(
            "consent",
            "consent_required",
            "'consent' must be `true`: confirm the speaker agreed to having their voice cloned.",
        ));
    }
    let name = form
        .get("name")
        .ok_or_else(|| ApiError::invalid("name", "missing_parameter", "'name' is required."))?;
    let policy = TextPolicy {
        max_chars: settings.max_name_chars,
        zero_width: ZeroWidth::Reject,
        profanity: None,
        spam: false,
    };
    let name = text::normalize(name, &policy)
        .map_err(|e| ApiError::invalid("name", e.code(), format!("'name': {e}.")))?
        .replace('\n', " ");
    let file = form.file.as_ref().ok_or_else(|| {
        ApiError::invalid(
            "audio_sample",
            "missing_parameter",
            "'audio_sample' is required.",
        )
    })?;
    let limits = ProbeLimits {
        max_bytes: tier.max_upload_bytes,
        max_duration_secs: settings.max_secs,
        min_duration_secs: settings.min_secs,
        ..ProbeLimits::default()
    };
    let probed = upload::probe(file, "audio_sample", limits).await?;
    let duration_ms = (probed.duration_secs * 1000.0).round() as i64;
    let (samples, rate) = (probed.samples, probed.sample_rate);
    let wav = state
        .encoders
        .run(move || {
            crate::transcription::resample(&samples, rate, STORED_RATE)
                .and_then(|s| crate::voices::wav_bytes(&s, STORED_RATE))
        })
        .await??;
    let record = state
        .voices
        .create(
            &principal.account_id,
            &name,
            &wav,
            duration_ms,
            tier.max_stored_voices,
        )
        .await?;
    state
        .auth
        .audit()
        .record(
            Actor::Key(principal.keyid.clone()),
            Some(principal.source),
            AuditEvent::VoiceCreated {
                voice_id: record.id.clone(),
                account_id: principal.account_id.clone(),
            },
        )
        .await;
    Ok(Json(record.into()))
}

#[utoipa::path(get, path = "/v1/audio/voices/{voice_id}", tag = "audio",
    params(("voice_id" = String, Path, description = "A stored voice id (`voice_…`)")),
    responses(
        (status = 200, description = "The stored voice", body = StoredVoiceObject),
        (status = 404, description = "No such voice for this account", body = crate::error::ErrorEnvelope),
    ))]
pub async fn get_voice(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(voice_id): Path<String>,
) -> Result<Json<StoredVoiceObject>, ApiError> {
    let record = state
        .voices
        .find(&principal.account_id, &voice_id)
        .await?
        .ok_or_else(|| crate::voices::not_found(None))?;
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
        (status = 404, description = "No such voice for this account", body = crate::error::ErrorEnvelope),
    ))]
pub async fn delete_voice(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(voice_id): Path<String>,
) -> Result<Json<DeletedVoice>, ApiError> {
    if !state
        .voices
        .delete(&principal.account_id, &voice_id)
        .await?
    {
        return Err(crate::voices::not_found(None));
    }
    // Clones a provider made from this reference go too.
    for (engine_id, engine) in state.catalog.engines() {
        if engine.supports_cloning()
            && let Err(err) = engine
                .forget_reference(&principal.account_id, &voice_id)
                .await
        {
            tracing::warn!(engine = engine_id, error = %err, "could not delete a provider-side voice clone");
        }
    }
    state
        .auth
        .audit()
        .record(
            Actor::Key(principal.keyid.clone()),
            Some(principal.source),
            AuditEvent::VoiceDeleted {
                voice_id: voice_id.clone(),
                account_id: principal.account_id.clone(),
            },
        )
        .await;
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
    let stored = if principal.scopes.contains(&crate::auth::Scope::VoicesManage) {
        state
            .voices
            .list(&principal.account_id)
            .await?
            .into_iter()
            .map(StoredVoiceObject::from)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(VoiceList { voices, stored }))
}
