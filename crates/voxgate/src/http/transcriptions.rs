//! `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`: OpenAI's
//! speech-to-text contract (multipart). With `stream=true` a transcription answers with
//! server-sent events: `transcript.text.delta` as the recogniser finishes each stretch of
//! audio, then `transcript.text.done` with the text and the billed seconds.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use bytes::Bytes;
use futures::StreamExt as _;
use serde::Serialize;
use tokio::sync::mpsc;
use voxgate_engine::{Task, TextSink};

use super::multipart::{self, FormSpec};
use super::transcript::{self, TranscriptFormat, TranscriptionUsage};
use super::{ApiError, AppState, Routes};
use crate::audio::vad::TurnDetection;
use crate::error::{Code, Error};
use crate::identity::auth::Principal;
use crate::service::transcription::{
    AudioInput, Chunking, Transcribed, TranscriptionJob, TranscriptionOrder,
};

pub fn routes() -> Routes {
    Routes::default()
        .add(
            Method::POST,
            "/v1/audio/transcriptions",
            create_transcription,
        )
        .add(Method::POST, "/v1/audio/translations", create_translation)
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
    /// `true`: server-sent events (`transcript.text.delta`, then `transcript.text.done`);
    /// `response_format` must then be `json` or `text`.
    stream: Option<bool>,
    /// `auto`, or `{"type": "server_vad", "threshold", "prefix_padding_ms",
    /// "silence_duration_ms"}` as JSON: only the stretches voice activity detection finds
    /// speech in are recognised, each on its own (a delta each when streaming).
    chunking_strategy: Option<String>,
}

/// Multipart fields of a translation, as OpenAI defines them.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "describes the multipart form for the API document"
)]
pub struct TranslationForm {
    /// The audio: wav, mp3, flac, ogg/opus, m4a, webm; checked by content, not by name.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: String,
    /// A model from `GET /v1/models` that translates (e.g. `whisper-1`).
    model: String,
    /// Accepted and checked (text pipeline, length); the Whisper engine does not use it.
    prompt: Option<String>,
    /// `json` (default), `text`, `srt`, `vtt` or `verbose_json`.
    response_format: Option<TranscriptFormat>,
    /// 0 (default, beam search) to 1 (sampling).
    #[schema(minimum = 0.0, maximum = 1.0)]
    temperature: Option<f64>,
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
                (String = "text/event-stream"),
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
    recognise(state, principal, &headers, body, Task::Transcribe).await
}

#[utoipa::path(
    post,
    path = "/v1/audio/translations",
    tag = "audio",
    request_body(content = TranslationForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The English translation (JSON, or plain text for text/srt/vtt)",
            content(
                (super::transcript::TranscriptionJson = "application/json"),
                (String = "text/plain"),
                (String = "text/vtt"),
            )),
        (status = 400, description = "Invalid field, not acceptable audio, or a model that does not translate", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown model", body = super::error::ErrorEnvelope),
        (status = 413, description = "File too large", body = super::error::ErrorEnvelope),
        (status = 415, description = "Not multipart, or not audio", body = super::error::ErrorEnvelope),
        (status = 503, description = "Overloaded or engine unavailable", body = super::error::ErrorEnvelope),
    )
)]
pub async fn create_translation(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    recognise(state, principal, &headers, body, Task::Translate).await
}

/// Both routes: the form is read and checked, the service transcribes (or translates),
/// the transcript is rendered, or streamed as events.
async fn recognise(
    state: AppState,
    principal: Principal,
    headers: &HeaderMap,
    body: Body,
    task: Task,
) -> Result<Response, ApiError> {
    let tier = &principal.tier;
    let transcribing = task == Task::Transcribe;
    let spec = FormSpec {
        file_field: "file",
        text_fields: if transcribing {
            &[
                "model",
                "language",
                "prompt",
                "response_format",
                "temperature",
                "timestamp_granularities[]",
                "stream",
                "chunking_strategy",
                "chunking_strategy[type]",
                "chunking_strategy[threshold]",
                "chunking_strategy[prefix_padding_ms]",
                "chunking_strategy[silence_duration_ms]",
            ]
        } else {
            &["model", "prompt", "response_format", "temperature"]
        },
        repeatable: &["timestamp_granularities[]"],
        max_file_bytes: tier.max_upload_bytes,
        max_text_bytes: 16 * 1024,
    };
    let mut form = multipart::read_form(headers, body, &state.uploads, &spec).await?;
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
    let stream = match form.get("stream").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "stream",
                Code::InvalidValue,
                "'stream' must be `true` or `false`.",
            ));
        }
    };
    if stream && !matches!(format, TranscriptFormat::Json | TranscriptFormat::Text) {
        return Err(ApiError::invalid(
            "stream",
            Code::InvalidValue,
            "Streaming needs `response_format` `json` or `text`.",
        ));
    }
    let chunking = chunking_of(&form)?;
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
    // Streamed text is handed over as the recogniser produces it; the channel holds at
    // most one piece per 30 s of audio, so it is unbounded.
    let (partial, pieces) = if stream {
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        let sink = TextSink::new(move |text| {
            let _ = tx.send(text.to_owned());
        });
        (Some(sink), Some(rx))
    } else {
        (None, None)
    };
    let order = TranscriptionOrder {
        model,
        language: form.get("language").map(str::to_owned),
        prompt: form.get("prompt").map(str::to_owned),
        temperature,
        timestamps: format.needs_timestamps(),
        task,
        partial,
        chunking,
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
    if let Some(pieces) = pieces {
        return stream_transcript(state, principal, job, audio, pieces).await;
    }
    let done = state.transcribe(&principal, job, audio).await?;
    let (content_type, body) = transcript::render(
        format,
        &done.transcript,
        done.duration_secs,
        temperature,
        words,
        task,
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerVad {
    #[serde(rename = "type")]
    kind: String,
    threshold: Option<f32>,
    prefix_padding_ms: Option<u32>,
    silence_duration_ms: Option<u32>,
}

/// `chunking_strategy`: `auto`, or a `server_vad` object with optional `threshold` (0–1),
/// `prefix_padding_ms` and `silence_duration_ms` (0–10000), given as JSON text in the one
/// field or, as the official SDKs send objects in forms, as `chunking_strategy[type]` and
/// its siblings. Not both.
fn chunking_of(form: &multipart::Form) -> Result<Option<Chunking>, ApiError> {
    const PARTS: [&str; 4] = [
        "chunking_strategy[type]",
        "chunking_strategy[threshold]",
        "chunking_strategy[prefix_padding_ms]",
        "chunking_strategy[silence_duration_ms]",
    ];
    let parted = PARTS.iter().any(|p| form.get(p).is_some());
    match (form.get("chunking_strategy"), parted) {
        (None, false) => Ok(None),
        (Some(value), false) => parse_chunking(value).map(Some),
        (None, true) => {
            let number = |name: &str| -> Result<Option<f64>, ApiError> {
                form.get(name)
                    .map(|v| v.trim().parse::<f64>().map_err(|_| invalid_chunking()))
                    .transpose()
            };
            let ms = |name: &str| -> Result<Option<u32>, ApiError> {
                number(name)?
                    .map(|v| {
                        (v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v))
                            .then_some(v as u32)
                            .ok_or_else(invalid_chunking)
                    })
                    .transpose()
            };
            let vad = ServerVad {
                kind: form.get(PARTS[0]).unwrap_or_default().to_owned(),
                threshold: number(PARTS[1])?.map(|v| v as f32),
                prefix_padding_ms: ms(PARTS[2])?,
                silence_duration_ms: ms(PARTS[3])?,
            };
            server_vad(vad).map(Some)
        }
        (Some(_), true) => Err(invalid_chunking()),
    }
}

fn invalid_chunking() -> ApiError {
    ApiError::invalid(
        "chunking_strategy",
        Code::InvalidValue,
        "'chunking_strategy' must be `auto` or {\"type\": \"server_vad\"} with optional \
         threshold (0 to 1), prefix_padding_ms and silence_duration_ms (0 to 10000).",
    )
}

/// `chunking_strategy` given in one field: `auto`, or the object as JSON.
fn parse_chunking(value: &str) -> Result<Chunking, ApiError> {
    if value.trim() == "auto" {
        return Ok(Chunking::Auto);
    }
    let vad: ServerVad = serde_json::from_str(value).map_err(|_| invalid_chunking())?;
    server_vad(vad)
}

fn server_vad(vad: ServerVad) -> Result<Chunking, ApiError> {
    let defaults = TurnDetection::default();
    let settings = TurnDetection {
        threshold: vad.threshold.unwrap_or(defaults.threshold),
        prefix_padding_ms: vad.prefix_padding_ms.unwrap_or(defaults.prefix_padding_ms),
        silence_duration_ms: vad
            .silence_duration_ms
            .unwrap_or(defaults.silence_duration_ms),
    };
    let valid = vad.kind == "server_vad"
        && settings.threshold.is_finite()
        && (0.0..=1.0).contains(&settings.threshold)
        && settings.prefix_padding_ms <= 10_000
        && settings.silence_duration_ms <= 10_000;
    if valid {
        Ok(Chunking::ServerVad(settings))
    } else {
        Err(invalid_chunking())
    }
}

/// `transcript.text.delta`.
#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: &'a str,
}

/// `transcript.text.done`.
#[derive(Serialize)]
struct TextDone<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    usage: TranscriptionUsage,
}

/// A failure after the events began: `{"type": "error", "error": {…}}` (the envelope's
/// body, which the official SDKs raise as an API error).
#[derive(Serialize)]
struct ErrorEvent {
    #[serde(rename = "type")]
    kind: &'static str,
    error: super::error::ErrorBody,
}

fn event(value: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_default();
    Bytes::from(format!("data: {json}\n\n"))
}

/// Runs the transcription and answers with events. Until the first piece of text arrives,
/// a failure is an ordinary error response (admission, quota, a bad upload: the status
/// says what happened); after it, a failure is an `error` event. The deltas add up to the
/// final text: pieces after the first carry a leading space.
async fn stream_transcript(
    state: AppState,
    principal: Principal,
    job: TranscriptionJob,
    audio: AudioInput,
    mut pieces: mpsc::UnboundedReceiver<String>,
) -> Result<Response, ApiError> {
    let engine = job.engine_id.clone();
    let mut work = tokio::spawn(async move { state.transcribe(&principal, job, audio).await });
    let mut sent = false;
    let first = tokio::select! {
        biased;
        Some(piece) = pieces.recv() => vec![delta(&piece, &mut sent)],
        done = &mut work => {
            // Done before any text came: a failure is an error response.
            let done = done.map_err(ApiError::internal)??;
            let events = finish(&mut pieces, Ok(done), sent);
            return Ok(sse(futures::stream::iter(events.into_iter().map(Ok)), &engine));
        }
    };
    let rest = futures::stream::unfold(
        (pieces, Some(work), sent),
        |(mut pieces, work, mut sent)| async move {
            let mut work = work?;
            let events = tokio::select! {
                biased;
                Some(piece) = pieces.recv() => {
                    let events = vec![delta(&piece, &mut sent)];
                    return Some((events, (pieces, Some(work), sent)));
                }
                done = &mut work => {
                    finish(&mut pieces, done.map_err(Error::internal).and_then(|r| r), sent)
                }
            };
            Some((events, (pieces, None, sent)))
        },
    )
    .flat_map(|events| futures::stream::iter(events.into_iter().map(Ok)));
    let events = futures::stream::iter(first.into_iter().map(Ok)).chain(rest);
    Ok(sse(events, &engine))
}

/// A `text/event-stream` response.
fn sse(
    events: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    engine: &str,
) -> Response {
    let mut response = (StatusCode::OK, Body::from_stream(events)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(engine) = HeaderValue::from_str(engine) {
        headers.insert(ENGINE_HEADER, engine);
    }
    response
}

/// A `transcript.text.delta` event for one piece of text.
fn delta(piece: &str, sent: &mut bool) -> Bytes {
    let spaced;
    let text = if *sent {
        spaced = format!(" {piece}");
        spaced.as_str()
    } else {
        piece
    };
    *sent = true;
    event(&TextDelta {
        kind: "transcript.text.delta",
        delta: text,
    })
}

/// The last events: the pieces still queued, the whole text as a delta if no piece came
/// (an engine that does not stream), then `transcript.text.done`; or an `error` event.
fn finish(
    pieces: &mut mpsc::UnboundedReceiver<String>,
    done: Result<Transcribed, Error>,
    mut sent: bool,
) -> Vec<Bytes> {
    let mut events = Vec::new();
    while let Ok(piece) = pieces.try_recv() {
        events.push(delta(&piece, &mut sent));
    }
    match done {
        Ok(done) => {
            let text = done.transcript.text.as_str();
            if !sent && !text.is_empty() {
                events.push(delta(text, &mut false));
            }
            events.push(event(&TextDone {
                kind: "transcript.text.done",
                text,
                usage: TranscriptionUsage {
                    kind: "duration",
                    seconds: done.duration_secs.ceil() as u64,
                },
            }));
            events
        }
        Err(err) => {
            let err = ApiError::from(err);
            tracing::warn!(code = ?err.code(), error = %err.message(), "transcription failed after its events began");
            events.push(event(&ErrorEvent {
                kind: "error",
                error: err.envelope().error,
            }));
            events
        }
    }
}
