//! `POST /v1/audio/transcriptions`: OpenAI's speech-to-text contract (multipart).

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::multipart::{self, FormSpec};
use super::transcript::{self, TranscriptFormat};
use super::{ApiError, AppState, Routes};
use crate::error::Code;
use crate::identity::auth::Principal;
use crate::service::transcription::{AudioInput, TranscriptionOrder};

pub fn routes() -> Routes {
    Routes::default().add(
        Method::POST,
        "/v1/audio/transcriptions",
        create_transcription,
    )
}

/// Multipart fields, as OpenAI defines them.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "describes the multipart form for the API document"
)]
pub struct TranscriptionForm {
    /// The audio: wav, mp3, flac, ogg/opus, m4a, webm; checked by content, not by name.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: String,
    /// A transcription model from `GET /v1/models` (e.g. `whisper-1`).
    model: String,
    /// ISO 639-1 code of the spoken language; detected when absent.
    language: Option<String>,
    /// Accepted and checked (text pipeline, length); the Whisper engine does not use it.
    prompt: Option<String>,
    /// `json` (default), `text`, `srt`, `vtt` or `verbose_json`.
    response_format: Option<TranscriptFormat>,
    /// 0 (default, beam search) to 1 (sampling).
    #[schema(minimum = 0.0, maximum = 1.0)]
    temperature: Option<f64>,
    /// `segment` and/or `word` (with `verbose_json`).
    #[schema(rename = "timestamp_granularities[]")]
    timestamp_granularities: Option<Vec<String>>,
}

const ENGINE_HEADER: &str = "x-voxgate-engine";

#[utoipa::path(
    post,
    path = "/v1/audio/transcriptions",
    tag = "audio",
    request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The transcript (JSON, or plain text for text/srt/vtt)",
            content(
                (super::transcript::TranscriptionJson = "application/json"),
                (String = "text/plain"),
                (String = "text/vtt"),
            )),
        (status = 400, description = "Invalid field or not acceptable audio", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown model", body = super::error::ErrorEnvelope),
        (status = 413, description = "File too large", body = super::error::ErrorEnvelope),
        (status = 415, description = "Not multipart, or not audio", body = super::error::ErrorEnvelope),
        (status = 503, description = "Overloaded or engine unavailable", body = super::error::ErrorEnvelope),
    )
)]
pub async fn create_transcription(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tier = &principal.tier;
    let spec = FormSpec {
        file_field: "file",
        text_fields: &[
            "model",
            "language",
            "prompt",
            "response_format",
            "temperature",
            "timestamp_granularities[]",
        ],
        repeatable: &["timestamp_granularities[]"],
        max_file_bytes: tier.max_upload_bytes,
        max_text_bytes: 16 * 1024,
    };
    let mut form = multipart::read_form(&headers, body, &state.uploads, &spec).await?;
    let model = form
        .get("model")
        .ok_or_else(|| ApiError::invalid("model", Code::MissingParameter, "'model' is required."))?
        .to_owned();
    let format = match form.get("response_format") {
        None => TranscriptFormat::Json,
        Some(f) => TranscriptFormat::parse(f).ok_or_else(|| {
            ApiError::invalid(
                "response_format",
                Code::InvalidValue,
                "'response_format' must be one of json, text, srt, vtt, verbose_json.",
            )
        })?,
    };
    let temperature = match form.get("temperature") {
        None => None,
        Some(t) => Some(t.trim().parse::<f32>().map_err(|_| {
            ApiError::invalid(
                "temperature",
                Code::InvalidValue,
                "'temperature' must be a number between 0 and 1.",
            )
        })?),
    };
    let mut words = false;
    for granularity in form.all("timestamp_granularities[]") {
        match granularity {
            "segment" => {}
            "word" => words = true,
            _ => {
                return Err(ApiError::invalid(
                    "timestamp_granularities[]",
                    Code::InvalidValue,
                    "'timestamp_granularities[]' values must be `segment` or `word`.",
                ));
            }
        }
    }
    if words && format != TranscriptFormat::VerboseJson {
        return Err(ApiError::invalid(
            "timestamp_granularities[]",
            Code::InvalidValue,
            "Word timestamps need `response_format` `verbose_json`.",
        ));
    }
    let order = TranscriptionOrder {
        model,
        language: form.get("language").map(str::to_owned),
        prompt: form.get("prompt").map(str::to_owned),
        temperature,
        timestamps: format.needs_timestamps(),
    };
    let job = state.prepare_transcription(&principal, order).await?;
    let temperature = job.temperature;
    let file = form
        .file
        .take()
        .ok_or_else(|| ApiError::invalid("file", Code::MissingParameter, "'file' is required."))?;
    let audio = AudioInput::Upload {
        file,
        param: "file",
    };
    let done = state.transcribe(&principal, job, audio).await?;
    let (content_type, body) = transcript::render(
        format,
        &done.transcript,
        done.duration_secs,
        temperature,
        words,
    );
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(engine) = HeaderValue::from_str(&done.engine) {
        headers.insert(ENGINE_HEADER, engine);
    }
    Ok(response)
}
