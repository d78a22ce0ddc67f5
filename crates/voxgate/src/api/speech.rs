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
use tokio::time::Instant;

use super::Routes;
use super::{ApiJson, AppState};
use crate::audio::AudioFormat;
use crate::auth::Principal;
use crate::cache::KeyParts;
use crate::config::{InstructionsPolicy, TierConfig};
use crate::engines;
use crate::engines::ModelKind;
use crate::error::ApiError;
use crate::limits::quota::{Amounts, Metric};
use crate::speech::{self, Part, SpeechJob};
use axum::http::Method;
use std::sync::Arc;
use voxgate_engine::VoiceReference;
use voxgate_input::ssml;
use voxgate_input::text::{self, TextPolicy};

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
        (status = 400, description = "Invalid parameter", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown model", body = crate::error::ErrorEnvelope),
        (status = 413, description = "Body too large", body = crate::error::ErrorEnvelope),
        (status = 415, description = "Not JSON", body = crate::error::ErrorEnvelope),
        (status = 503, description = "Overloaded", body = crate::error::ErrorEnvelope),
    )
)]
pub async fn create_speech(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<SpeechRequest>,
) -> Result<Response, ApiError> {
    let stream_format = request.stream_format.unwrap_or_default();
    let format = request.response_format.unwrap_or_default();
    let reference = match &request.voice {
        VoiceParam::Stored(stored) => match stored_voice(&state, &principal, &stored.id).await {
            Ok(reference) => Some(reference),
            Err(err) => {
                super::access::audit_denial(&state.auth, &principal, "/v1/audio/speech", &err)
                    .await;
                return Err(err);
            }
        },
        VoiceParam::Name(_) => None,
    };
    let model_id = request.model.clone();
    let voice_label = match &request.voice {
        VoiceParam::Name(name) => name.clone(),
        VoiceParam::Stored(stored) => stored.id.clone(),
    };
    let job = match validate(&state, &principal.tier, request, reference) {
        Ok(job) => job,
        Err(err) => {
            super::access::audit_denial(&state.auth, &principal, "/v1/audio/speech", &err).await;
            return Err(err);
        }
    };
    let in_flight = state
        .admit(&principal, &job.candidates[0].engine_id)
        .await?;
    let input_chars = job.characters as u64;
    let characters = i64::try_from(job.characters).unwrap_or(i64::MAX);
    let estimate = Amounts {
        characters,
        requests: 1,
        audio_seconds: estimated_audio_seconds(characters, job.speed),
        ..Default::default()
    };
    let hold = state.reserve(&principal, estimate).await?;
    let budget = hold.character_budget().await;
    let cache_key = principal.tier.cache.then(|| {
        let script = serde_json::to_string(&job.script).unwrap_or_default();
        state.cache.key(
            &principal.account_id,
            &KeyParts {
                model: &model_id,
                engines: job
                    .candidates
                    .iter()
                    .map(|c| c.engine_id.as_str())
                    .collect(),
                voice: &voice_label,
                script: &script,
                speed: job.speed,
                format: format.as_str(),
            },
        )
    });
    let started = std::time::Instant::now();
    let (speech, cache_status) =
        speech::serve(job, state.encoders.clone(), &state.cache, cache_key).await?;
    let active = crate::metrics::ActiveStream::start();
    // Synthesized (not cached) responses feed the engine's real-time factor.
    let rtf_engine = (cache_status != Some("hit") && cache_status != Some("stale"))
        .then(|| speech.engine.clone());
    // Audio beyond the reserved seconds is not produced: the stream ends there.
    let audio_cap = hold.reserved(Metric::AudioSeconds).map(|s| s as f64);
    let produced = Arc::clone(&speech.stats);
    let settled = Arc::clone(&speech.stats);
    let settle = futures::stream::once(async move {
        let _active = active;
        let seconds = settled.output_seconds();
        if let Some(engine) = rtf_engine
            && seconds > 0.0
        {
            crate::metrics::observe_rtf(&engine, started.elapsed().as_secs_f64() / seconds);
        }
        let actual = Amounts {
            characters,
            requests: 1,
            audio_seconds: settled.output_seconds().ceil() as i64,
            ..Default::default()
        };
        hold.settle(actual).await;
    })
    .filter_map(|()| futures::future::ready(None::<Result<Bytes, ApiError>>));
    let speech = speech::Speech {
        engine: speech.engine,
        audio: Box::pin(
            speech
                .audio
                .take_while(move |_| {
                    futures::future::ready(
                        audio_cap.is_none_or(|cap| produced.output_seconds() <= cap),
                    )
                })
                .chain(settle),
        ),
        stats: speech.stats,
    };
    let engine =
        HeaderValue::from_str(&speech.engine).unwrap_or(HeaderValue::from_static("unknown"));
    // An error after the head has left cannot change the status: it ends the stream and is
    // logged once, in this request's span.
    let span = tracing::Span::current();
    // The slots are held until the last byte has been produced (or the client leaves).
    let audio = speech.audio.inspect(move |_| {
        let _held = &in_flight;
    });
    let audio = audio.inspect_err(move |err| {
        span.in_scope(|| {
            tracing::error!(error = %err, source = ?std::error::Error::source(err), "stream failed after the response started");
        });
    });
    let (content_type, body) = match stream_format {
        StreamFormat::Audio => (
            HeaderValue::from_static(format.content_type()),
            Body::from_stream(audio),
        ),
        StreamFormat::Sse => {
            let stats = speech.stats;
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
    if let Some(status) = cache_status {
        headers.insert(CACHE_HEADER, HeaderValue::from_static(status));
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

/// Checks every parameter and resolves model and voice by table lookup.
/// Tier gates (model, voice, engine, input length) answer 403 with a distinct code.
fn validate(
    state: &AppState,
    tier: &TierConfig,
    request: SpeechRequest,
    reference: Option<Arc<VoiceReference>>,
) -> Result<SpeechJob, ApiError> {
    let limits = &state.config.speech;
    let max_input_chars = limits.max_input_chars.min(tier.max_input_chars);
    let model = if engines::is_valid_name(&request.model) {
        state.catalog.model(&request.model)
    } else {
        None
    }
    .ok_or_else(|| ApiError::ModelNotFound(clip(&request.model)))?;
    if !tier.allows_model(&model.id) {
        return Err(ApiError::Forbidden {
            code: "model_not_allowed",
            message: format!("Your tier does not include the model `{}`.", model.id),
        });
    }

    if model.kind != ModelKind::Speech {
        return Err(ApiError::invalid(
            "model",
            "unsupported_model",
            format!("The model `{}` does not produce speech.", model.id),
        ));
    }
    if let Some(instructions) = &request.instructions {
        let policy = TextPolicy {
            max_chars: limits.max_instructions_chars,
            ..state.text_policy(tier, usize::MAX)
        };
        match text::normalize(instructions, &policy) {
            // Empty instructions are no instructions.
            Ok(_) => {}
            Err(e) if e.kind == text::TextErrorKind::Empty => {}
            Err(e) => {
                return Err(match e.kind {
                    text::TextErrorKind::TooLong { max, .. } => ApiError::invalid(
                        "instructions",
                        "instructions_too_long",
                        format!("'instructions' is longer than {max} characters."),
                    ),
                    _ => text_error("instructions", &e),
                });
            }
        }
        if model.instructions == InstructionsPolicy::Reject {
            return Err(ApiError::invalid(
                "instructions",
                "instructions_not_supported",
                "This model does not take 'instructions'.",
            ));
        }
    }
    let format = request.response_format.unwrap_or_default();
    if !format.is_available() {
        return Err(ApiError::UnsupportedFormat {
            requested: format.as_str(),
            available: AudioFormat::available_list(),
        });
    }
    let speed = request.speed.unwrap_or(1.0);
    if !speed.is_finite() || !(0.25..=4.0).contains(&speed) {
        return Err(ApiError::invalid(
            "speed",
            "invalid_value",
            "'speed' must be between 0.25 and 4.0.",
        ));
    }
    let candidates = match (&request.voice, &reference) {
        (VoiceParam::Name(voice), _) => {
            let candidates = if engines::is_valid_name(voice) {
                state.catalog.resolve(model, voice)
            } else {
                Vec::new()
            };
            if candidates.is_empty() {
                return Err(ApiError::VoiceNotFound(clip(voice)));
            }
            if !tier.allows_voice(voice) {
                return Err(ApiError::Forbidden {
                    code: "voice_not_allowed",
                    message: format!("Your tier does not include the voice `{voice}`."),
                });
            }
            candidates
        }
        (VoiceParam::Stored(_), _) => {
            let candidates = state.catalog.cloners(model);
            if candidates.is_empty() {
                return Err(ApiError::invalid(
                    "voice",
                    "voice_cloning_unsupported",
                    "No engine of this model can speak with a stored voice.",
                ));
            }
            candidates
        }
    };
    // The tier's engines filter the chain; nothing left is a denial.
    let candidates: Vec<_> = candidates
        .into_iter()
        .filter(|c| tier.allows_engine(&c.engine_id))
        .collect();
    if candidates.is_empty() {
        return Err(ApiError::Forbidden {
            code: "engine_not_allowed",
            message: "Your tier does not include this model's engine.".into(),
        });
    }
    let speed = speed as f32;
    let policy = state.text_policy(tier, max_input_chars);
    let (mut script, characters) = match request.input_format.unwrap_or_default() {
        InputFormat::Text => {
            let text =
                text::normalize(&request.input, &policy).map_err(|e| text_error("input", &e))?;
            let characters = text.chars().count();
            (vec![Part::Say { text, speed }], characters)
        }
        InputFormat::Ssml => {
            if !tier.ssml {
                return Err(ApiError::Forbidden {
                    code: "ssml_not_allowed",
                    message: "Your tier does not accept SSML input.".into(),
                });
            }
            ssml_script(&request.input, &limits.ssml.limits(), &policy, speed)?
        }
    };
    // Text may leave this machine if any engine of the chain is remote.
    if tier.redact_pii && candidates.iter().any(|c| c.engine.remote()) {
        for part in &mut script {
            if let Part::Say { text, .. } = part
                && let std::borrow::Cow::Owned(redacted) = text::redact_pii(text)
            {
                *text = redacted;
            }
        }
    }
    Ok(SpeechJob {
        candidates,
        reference,
        script,
        characters,
        speed,
        format,
        deadline: Instant::now() + state.config.server.stream_timeout(),
    })
}

/// Parses SSML into a script: each text piece goes through the text pipeline after parsing
/// (normalising first could turn fullwidth `＜` into markup), breaks become pauses, prosody
/// rates multiply the request's speed. The length limit counts the text of all pieces.
fn ssml_script(
    input: &str,
    limits: &ssml::SsmlLimits,
    policy: &TextPolicy,
    speed: f32,
) -> Result<(Vec<Part>, usize), ApiError> {
    let doc = ssml::parse(input, limits).map_err(|e| {
        ApiError::invalid(
            "input",
            e.code(),
            format!("'input' is not acceptable SSML: {e}."),
        )
    })?;
    let piece_policy = TextPolicy {
        max_chars: usize::MAX,
        ..policy.clone()
    };
    let mut script = Vec::new();
    let mut characters = 0usize;
    for piece in doc.pieces {
        match piece {
            ssml::Piece::Text { text, rate } => match text::normalize(&text, &piece_policy) {
                Ok(text) => {
                    characters += text.chars().count();
                    let speed = (speed * rate).clamp(0.25, 4.0);
                    script.push(Part::Say { text, speed });
                }
                Err(e) if e.kind == text::TextErrorKind::Empty => {}
                Err(e) => return Err(text_error("input", &e)),
            },
            ssml::Piece::Break { ms } if ms > 0 => script.push(Part::Pause { ms }),
            ssml::Piece::Break { .. } => {}
        }
    }
    if characters == 0 {
        return Err(text_error("input", &text::TextErrorKind::Empty.into()));
    }
    if characters > policy.max_chars {
        let too_long = text::TextErrorKind::TooLong {
            max: policy.max_chars,
            actual: characters,
        };
        return Err(text_error("input", &too_long.into()));
    }
    Ok((script, characters))
}

/// A text-pipeline refusal as a 400 naming the parameter and the precise code.
fn text_error(param: &str, err: &text::TextError) -> ApiError {
    ApiError::invalid(param, err.code(), format!("'{param}': {err}."))
}

/// `voice: {"id": ...}`: the id must name one of the caller's stored voices (another
/// account's id is as unknown as a made-up one: 404). No engine in this build clones voices
/// (remote providers that do arrive with them), so an owned id then gets a plain 400.
/// The caller's own stored voice (another account's id is simply not found).
async fn stored_voice(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Arc<VoiceReference>, ApiError> {
    if !crate::voices::is_valid_id(id) {
        return Err(crate::voices::not_found(Some("voice")));
    }
    match state.voices.audio(&principal.account_id, id).await? {
        Some(wav) => Ok(Arc::new(VoiceReference {
            id: id.to_owned(),
            owner: principal.account_id.clone(),
            wav,
        })),
        None => Err(crate::voices::not_found(Some("voice"))),
    }
}

/// A generous estimate of the audio a text produces (Flite speaks about 14 characters a
/// second; this assumes 8), reserved against audio-second quotas before synthesis.
fn estimated_audio_seconds(characters: i64, speed: f32) -> i64 {
    (characters as f64 / 8.0 / f64::from(speed.max(0.25))).ceil() as i64 + 1
}

/// Client-sent names are echoed in messages only in a short, printable form.
fn clip(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;
    use crate::config::Config;

    fn state() -> &'static AppState {
        static STATE: OnceLock<AppState> = OnceLock::new();
        STATE.get_or_init(|| {
            let dir = Box::leak(Box::new(tempfile::tempdir().expect("tempdir")));
            let mut config = Config::defaults().expect("config");
            config.data_dir = dir.path().to_path_buf();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(crate::server::app_state(config))
                .expect("state")
        })
    }

    fn request(model: String, input: String, voice: String, speed: Option<f64>) -> SpeechRequest {
        SpeechRequest {
            model,
            input,
            voice: VoiceParam::Name(voice),
            instructions: None,
            response_format: None,
            speed,
            stream_format: None,
            input_format: None,
        }
    }

    proptest! {
        /// Whatever the values, validation accepts or refuses with a 4xx naming a parameter;
        /// accepted names are always table keys, never anything path-like.
        #[test]
        fn validation_accepts_only_table_entries(
            model in prop_oneof![Just("tts-1".to_owned()), "\\PC{0,20}"],
            voice in prop_oneof![Just("alloy".to_owned()), Just("../alloy".to_owned()), "\\PC{0,20}"],
            input in "\\PC{0,50}",
            speed in prop::option::of(prop_oneof![any::<f64>(), -10.0..10.0f64]),
        ) {
            let tokio = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("rt");
            let _guard = tokio.enter();
            let tier = &state().config.tiers["admin"];
            match validate(state(), tier, request(model.clone(), input, voice.clone(), speed), None) {
                Ok(job) => {
                    prop_assert!(state().catalog.model(&model).is_some());
                    prop_assert!(engines::is_valid_name(&voice));
                    prop_assert!(!job.candidates.is_empty());
                    for c in &job.candidates {
                        prop_assert!(c.engine.voices().iter().any(|v| v.id == c.native_voice));
                    }
                    prop_assert!((0.25..=4.0).contains(&job.speed));
                }
                Err(err) => {
                    let (status, _, _) = err.kind().spec();
                    prop_assert!(status.is_client_error(), "{err:?}");
                }
            }
        }
    }
}
