//! `POST /v1/audio/speech`: OpenAI's text-to-speech contract, streamed.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use axum::http::Method;
use std::sync::Arc;

use super::Routes;
use super::{ApiError, ApiJson, AppState};
use crate::audio::AudioFormat;
use crate::identity::auth::Principal;
use crate::service::speech::{CacheStatus, SpeechOrder, VoiceChoice};

pub fn routes() -> Routes {
    Routes::default().add(Method::POST, "/v1/audio/speech", create_speech)
}

/// The request body, exactly as OpenAI defines it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpeechRequest {
    /// A model id from `GET /v1/models`.
    #[schema(
        example = "tts-1",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"
    )]
    pub model: String,
    /// The text to speak.
    #[schema(
        example = "Hello there. This is voxgate.",
        min_length = 1,
        max_length = 4096
    )]
    pub input: String,
    /// A voice name from `GET /v1/audio/voices`, or `{"id": ...}` for a stored voice.
    pub voice: VoiceParam,
    /// Speaking instructions; ignored or refused by models that cannot follow them.
    #[serde(default)]
    #[schema(max_length = 4096)]
    pub instructions: Option<String>,
    /// The audio format (default mp3).
    #[serde(default)]
    pub response_format: Option<AudioFormat>,
    /// Speaking rate, 0.25 to 4.0 (default 1.0).
    #[serde(default)]
    #[schema(minimum = 0.25, maximum = 4.0)]
    pub speed: Option<f64>,
    /// `audio` (default): the encoded audio, chunked. `sse`: server-sent events.
    #[serde(default)]
    pub stream_format: Option<StreamFormat>,
    /// voxgate extension: `text` (default) or `ssml` (a strict subset; tiers with SSML only).
    #[serde(default)]
    pub input_format: Option<InputFormat>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    #[default]
    Text,
    Ssml,
}

/// `voice`: a name, or a stored voice by id.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum VoiceParam {
    #[schema(example = "alloy")]
    Name(String),
    Stored(StoredVoice),
}

/// A stored voice reference (`voice_…`), usable by engines that clone voices.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoredVoice {
    pub id: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamFormat {
    #[default]
    Audio,
    Sse,
}

/// SSE: one piece of audio.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AudioDelta<'a> {
    /// Always `speech.audio.delta`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Base64 of the next bytes of the encoded audio.
    pub audio: &'a str,
}

/// SSE: the end of the stream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AudioDone {
    /// Always `speech.audio.done`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub usage: Usage,
}

/// voxgate has no tokenizer: `input_tokens` counts input characters and `output_tokens`
/// counts tenths of a second of audio produced.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
}

/// Header naming the engine that served a response.
const ENGINE_HEADER: &str = "x-voxgate-engine";
/// Header telling whether the speech cache answered: `hit`, `miss` or `stale`.
const CACHE_HEADER: &str = "x-voxgate-cache";
/// Header telling how the audio was made: `relayed` (the engine's own bytes, unchanged),
/// `transcoded` (decoded and encoded here) or `cached` (replayed from the speech cache).
const AUDIO_HEADER: &str = "x-voxgate-audio";

#[utoipa::path(
    post,
    path = "/v1/audio/speech",
    tag = "audio",
    request_body = SpeechRequest,
    responses(
        (status = 200, description = "The audio, streamed (chunked), or server-sent events with `stream_format: sse`.",
            content(
                (Vec<u8> = "audio/mpeg"),
                (Vec<u8> = "audio/ogg; codecs=opus"),
                (Vec<u8> = "audio/flac"),
                (Vec<u8> = "audio/wav"),
                (Vec<u8> = "audio/pcm"),
                (String = "text/event-stream"),
            )),
        (status = 400, description = "Invalid parameter", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown model", body = super::error::ErrorEnvelope),
        (status = 413, description = "Body too large", body = super::error::ErrorEnvelope),
        (status = 415, description = "Not JSON", body = super::error::ErrorEnvelope),
        (status = 503, description = "Overloaded", body = super::error::ErrorEnvelope),
    )
)]
pub async fn create_speech(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<SpeechRequest>,
) -> Result<Response, ApiError> {
    let stream_format = request.stream_format.unwrap_or_default();
    let order = SpeechOrder {
        model: request.model,
        input: request.input,
        voice: match request.voice {
            VoiceParam::Name(name) => VoiceChoice::Name(name),
            VoiceParam::Stored(stored) => VoiceChoice::Stored(stored.id),
        },
        instructions: request.instructions,
        format: request.response_format.unwrap_or_default(),
        speed: request.speed,
        ssml: request.input_format.unwrap_or_default() == InputFormat::Ssml,
    };
    let speech = state.speak_order(&principal, order).await?;
    let engine =
        HeaderValue::from_str(&speech.engine).unwrap_or(HeaderValue::from_static("unknown"));
    let cache = speech.cache;
    let made = match (cache, speech.relayed) {
        (Some(CacheStatus::Hit | CacheStatus::Stale), _) => "cached",
        (_, true) => "relayed",
        (_, false) => "transcoded",
    };
    let budget = speech.budget;
    let format = speech.format;
    let input_chars = speech.characters as u64;
    let stats = Arc::clone(&speech.stats);
    // An error after the head has left cannot change the status: it ends the stream and is
    // logged once, in this request's span.
    let span = tracing::Span::current();
    let audio = speech.map_err(move |err| {
        let err = ApiError::from(err);
        span.in_scope(|| {
            tracing::error!(code = ?err.code(), error = %err.message(), "stream failed after the response started");
        });
        std::io::Error::other(err.message().to_owned())
    });
    let (content_type, body) = match stream_format {
        StreamFormat::Audio => (
            HeaderValue::from_static(format.content_type()),
            Body::from_stream(audio),
        ),
        StreamFormat::Sse => {
            let deltas = audio.map(|chunk| chunk.map(|bytes| sse_delta(&bytes)));
            let done = futures::stream::once(async move {
                let output_tokens = (stats.output_seconds() * 10.0).ceil() as u64;
                Ok(sse_event(&AudioDone {
                    kind: "speech.audio.done",
                    usage: Usage {
                        input_tokens: input_chars,
                        output_tokens,
                        total_tokens: input_chars + output_tokens,
                    },
                }))
            });
            let events = deltas
                .filter(|e| futures::future::ready(!matches!(e, Ok(b) if b.is_empty())))
                .chain(done);
            (
                HeaderValue::from_static("text/event-stream"),
                Body::from_stream(events),
            )
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(ENGINE_HEADER, engine);
    headers.insert(AUDIO_HEADER, HeaderValue::from_static(made));
    if let Some(status) = cache {
        headers.insert(CACHE_HEADER, HeaderValue::from_static(status.as_str()));
    }
    if let Some(budget) = budget {
        // OpenAI's token headers, counting characters.
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        put("x-ratelimit-limit-tokens", budget.limit.to_string());
        put("x-ratelimit-remaining-tokens", budget.remaining.to_string());
        put(
            "x-ratelimit-reset-tokens",
            crate::limits::openai_duration(budget.reset_after),
        );
    }
    Ok(response)
}

fn sse_delta(bytes: &Bytes) -> Bytes {
    if bytes.is_empty() {
        return Bytes::new();
    }
    let audio = BASE64.encode(bytes);
    sse_event(&AudioDelta {
        kind: "speech.audio.delta",
        audio: &audio,
    })
}

fn sse_event(event: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!("data: {json}\n\n"))
}
