//! `POST /v1/audio/transcriptions`: OpenAI's speech-to-text contract (multipart).

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use voxgate_engine::TranscriptionRequest;
use voxgate_input::probe::ProbeLimits;
use voxgate_input::text;

use super::{AppState, Routes};
use crate::auth::Principal;
use crate::engines::ModelKind;
use crate::error::ApiError;
use crate::limits::quota::Amounts;
use crate::transcription::{self, TranscriptFormat};
use crate::upload::{self, FormSpec};

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
                (crate::transcription::TranscriptionJson = "application/json"),
                (String = "text/plain"),
                (String = "text/vtt"),
            )),
        (status = 400, description = "Invalid field or not acceptable audio", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown model", body = crate::error::ErrorEnvelope),
        (status = 413, description = "File too large", body = crate::error::ErrorEnvelope),
        (status = 415, description = "Not multipart, or not audio", body = crate::error::ErrorEnvelope),
        (status = 503, description = "Overloaded or engine unavailable", body = crate::error::ErrorEnvelope),
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
    let form = upload::read_form(&headers, body, &state.uploads, &spec).await?;

    let model_id = form
        .get("model")
        .ok_or_else(|| ApiError::invalid("model", "missing_parameter", "'model' is required."))?;
    let model = crate::engines::is_valid_name(model_id)
        .then(|| state.catalog.model(model_id))
        .flatten()
        .ok_or_else(|| ApiError::ModelNotFound(clip(model_id)))?;
    if model.kind != ModelKind::Transcription {
        return Err(ApiError::invalid(
            "model",
            "unsupported_model",
            format!("The model `{}` does not transcribe speech.", model.id),
        ));
    }
    if !tier.allows_model(&model.id) || !tier.allows_engine(&model.engine_id) {
        let err = ApiError::Forbidden {
            code: "model_not_allowed",
            message: format!("Your tier does not include the model `{}`.", model.id),
        };
        super::access::audit_denial(&state.auth, &principal, "/v1/audio/transcriptions", &err)
            .await;
        return Err(err);
    }
    let engine = state
        .catalog
        .transcriber(model)
        .ok_or(ApiError::EngineUnavailable)?;

    let format = match form.get("response_format") {
        None => TranscriptFormat::Json,
        Some(f) => TranscriptFormat::parse(f).ok_or_else(|| {
            ApiError::invalid(
                "response_format",
                "invalid_value",
                "'response_format' must be one of json, text, srt, vtt, verbose_json.",
            )
        })?,
    };
    let temperature = match form.get("temperature") {
        None => 0.0,
        Some(t) => t
            .trim()
            .parse::<f32>()
            .ok()
            .filter(|t| t.is_finite() && (0.0..=1.0).contains(t))
            .ok_or_else(|| {
                ApiError::invalid(
                    "temperature",
                    "invalid_value",
                    "'temperature' must be a number between 0 and 1.",
                )
            })?,
    };
    let language = match form.get("language") {
        None | Some("") => None,
        Some(code) => {
            if !engine.languages().contains(&code) {
                return Err(ApiError::invalid(
                    "language",
                    "unsupported_language",
                    "'language' must be an ISO 639-1 code the model knows (e.g. en, de, fr).",
                ));
            }
            Some(code.to_owned())
        }
    };
    let mut words = false;
    for granularity in form.all("timestamp_granularities[]") {
        match granularity {
            "segment" => {}
            "word" => words = true,
            _ => {
                return Err(ApiError::invalid(
                    "timestamp_granularities[]",
                    "invalid_value",
                    "'timestamp_granularities[]' values must be `segment` or `word`.",
                ));
            }
        }
    }
    if words && format != TranscriptFormat::VerboseJson {
        return Err(ApiError::invalid(
            "timestamp_granularities[]",
            "invalid_value",
            "Word timestamps need `response_format` `verbose_json`.",
        ));
    }
    if let Some(prompt) = form.get("prompt") {
        let policy = text::TextPolicy {
            max_chars: state.config.transcription.max_prompt_chars,
            ..state.text_policy(tier, usize::MAX)
        };
        if let Err(e) = text::normalize(prompt, &policy)
            && e.kind != text::TextErrorKind::Empty
        {
            return Err(ApiError::invalid(
                "prompt",
                e.code(),
                format!("'prompt': {e}."),
            ));
        }
    }
    let file = form
        .file
        .as_ref()
        .ok_or_else(|| ApiError::invalid("file", "missing_parameter", "'file' is required."))?;

    let limits = ProbeLimits {
        max_bytes: tier.max_upload_bytes,
        max_duration_secs: f64::from(tier.max_upload_secs),
        ..ProbeLimits::default()
    };
    let probed = upload::probe(file, "file", limits).await?;
    let duration = probed.duration_secs;

    let _in_flight = state.admit(&principal, &model.engine_id).await?;
    // The seconds are known exactly (decoded frames) before any work: reserve them.
    let amounts = Amounts {
        requests: 1,
        transcribed_seconds: duration.ceil() as i64,
        ..Amounts::default()
    };
    let hold = state.reserve(&principal, amounts).await?;

    let rate = engine.sample_rate();
    let (samples, from) = (probed.samples, probed.sample_rate);
    let samples = state
        .encoders
        .run(move || transcription::resample(&samples, from, rate))
        .await??;
    let request = TranscriptionRequest {
        samples,
        language: language.clone(),
        temperature,
        timestamps: format.needs_timestamps(),
    };
    let deadline = state.config.server.request_timeout();
    let transcript = match tokio::time::timeout(deadline, engine.transcribe(request)).await {
        Ok(Ok(transcript)) => transcript,
        // The reservation is released when `hold` drops unsettled.
        Ok(Err(err)) => return Err(err.into()),
        Err(_) => return Err(ApiError::Timeout),
    };
    hold.settle(amounts).await;

    let (content_type, body) =
        transcription::render(format, &transcript, duration, temperature, words);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(engine) = HeaderValue::from_str(engine.id()) {
        headers.insert(ENGINE_HEADER, engine);
    }
    Ok(response)
}

/// Client-sent names are echoed in messages only in a short, printable form.
fn clip(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}
