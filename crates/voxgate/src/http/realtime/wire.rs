//! The realtime API's JSON: the transcription session's configuration (parsed strictly,
//! every refusal naming its path) and the server events voxgate sends, in OpenAI's GA
//! shapes.

use serde_json::{Map, Value, json};

use crate::audio::vad::TurnDetection;
use crate::error::{Code, Error};
use crate::http::ApiError;

/// The input audio formats a session accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// 16-bit little-endian mono PCM at 24 kHz (`audio/pcm`).
    Pcm,
    /// G.711 μ-law at 8 kHz (`audio/pcmu`).
    Pcmu,
    /// G.711 A-law at 8 kHz (`audio/pcma`).
    Pcma,
}

impl InputFormat {
    pub fn rate(self) -> u32 {
        match self {
            InputFormat::Pcm => 24_000,
            InputFormat::Pcmu | InputFormat::Pcma => 8_000,
        }
    }

    /// Bytes per sample.
    pub fn width(self) -> usize {
        match self {
            InputFormat::Pcm => 2,
            InputFormat::Pcmu | InputFormat::Pcma => 1,
        }
    }

    fn json(self) -> Value {
        match self {
            InputFormat::Pcm => json!({"type": "audio/pcm", "rate": 24_000}),
            InputFormat::Pcmu => json!({"type": "audio/pcmu"}),
            InputFormat::Pcma => json!({"type": "audio/pcma"}),
        }
    }
}

/// A transcription session's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub format: InputFormat,
    pub model: String,
    pub language: Option<String>,
    pub prompt: Option<String>,
    /// `None`: the client commits turns itself.
    pub turn_detection: Option<TurnDetection>,
}

impl SessionConfig {
    /// OpenAI's defaults, with `model` (the first transcription model this server has).
    pub fn new(model: String) -> Self {
        Self {
            format: InputFormat::Pcm,
            model,
            language: None,
            prompt: None,
            turn_detection: Some(TurnDetection::default()),
        }
    }

    /// The configuration as the `session` of `session.created` / `session.updated` and of
    /// a client secret (its `audio` and `include`; `id` and `expires_at` are the caller's).
    pub fn json(&self) -> Value {
        let turn_detection = self.turn_detection.map_or(Value::Null, |t| {
            json!({
                "type": "server_vad",
                "threshold": t.threshold,
                "prefix_padding_ms": t.prefix_padding_ms,
                "silence_duration_ms": t.silence_duration_ms,
            })
        });
        json!({
            "type": "transcription",
            "object": "realtime.transcription_session",
            "audio": {"input": {
                "format": self.format.json(),
                "transcription": {
                    "model": self.model,
                    "language": self.language,
                    "prompt": self.prompt,
                },
                "noise_reduction": null,
                "turn_detection": turn_detection,
            }},
            "include": null,
        })
    }

    /// Applies a client's `session` object over this configuration: every field it names is
    /// checked, and nothing changes unless all of it is accepted. The transcription model,
    /// language and prompt are checked against the caller's tier afterwards, by the service.
    pub fn update(&self, session: &Value) -> Result<SessionConfig, Error> {
        let mut next = self.clone();
        let session = object(session, "session")?;
        for (name, value) in session {
            match name.as_str() {
                "type" => {
                    if value != "transcription" {
                        return Err(invalid(
                            "session.type",
                            Code::InvalidValue,
                            "Only `transcription` sessions are served here.",
                        ));
                    }
                }
                // Echoed back by clients that copy `session.created`: read-only, ignored.
                "object" | "id" | "expires_at" => {}
                "include" => {
                    if !(value.is_null() || value.as_array().is_some_and(Vec::is_empty)) {
                        return Err(invalid(
                            "session.include",
                            Code::InvalidValue,
                            "Log probabilities are not available; `include` must be empty.",
                        ));
                    }
                }
                "audio" => {
                    for (name, value) in object(value, "session.audio")? {
                        if name != "input" {
                            return Err(unknown(&format!("session.audio.{name}")));
                        }
                        next.update_input(value)?;
                    }
                }
                other => return Err(unknown(&format!("session.{other}"))),
            }
        }
        Ok(next)
    }

    fn update_input(&mut self, input: &Value) -> Result<(), Error> {
        for (name, value) in object(input, "session.audio.input")? {
            match name.as_str() {
                "format" => self.format = format(value)?,
                "transcription" => self.update_transcription(value)?,
                "turn_detection" => self.turn_detection = turn_detection(value)?,
                "noise_reduction" => {
                    if !value.is_null() {
                        return Err(invalid(
                            "session.audio.input.noise_reduction",
                            Code::InvalidValue,
                            "Noise reduction is not available; `noise_reduction` must be null.",
                        ));
                    }
                }
                other => return Err(unknown(&format!("session.audio.input.{other}"))),
            }
        }
        Ok(())
    }

    fn update_transcription(&mut self, value: &Value) -> Result<(), Error> {
        const AT: &str = "session.audio.input.transcription";
        if value.is_null() {
            return Err(invalid(
                AT,
                Code::InvalidValue,
                "A transcription session needs its transcription settings.",
            ));
        }
        for (name, value) in object(value, AT)? {
            let path = format!("{AT}.{name}");
            let text = || -> Result<Option<String>, Error> {
                match value {
                    Value::Null => Ok(None),
                    Value::String(s) if s.is_empty() => Ok(None),
                    Value::String(s) => Ok(Some(s.clone())),
                    _ => Err(invalid(&path, Code::InvalidType, "Expected a string.")),
                }
            };
            match name.as_str() {
                "model" => {
                    self.model = text()?.ok_or_else(|| {
                        invalid(
                            &path,
                            Code::MissingRequiredParameter,
                            "A model is required.",
                        )
                    })?;
                }
                "language" => self.language = text()?,
                "prompt" => self.prompt = text()?,
                _ => return Err(unknown(&path)),
            }
        }
        Ok(())
    }
}

fn format(value: &Value) -> Result<InputFormat, Error> {
    const AT: &str = "session.audio.input.format";
    let fields = object(value, AT)?;
    let kind = fields.get("type").and_then(Value::as_str).unwrap_or("");
    let format = match kind {
        "audio/pcm" => InputFormat::Pcm,
        "audio/pcmu" => InputFormat::Pcmu,
        "audio/pcma" => InputFormat::Pcma,
        _ => {
            return Err(invalid(
                &format!("{AT}.type"),
                Code::InvalidValue,
                "The input format must be `audio/pcm` (24 kHz), `audio/pcmu` or `audio/pcma`.",
            ));
        }
    };
    for (name, value) in fields {
        match name.as_str() {
            "type" => {}
            "rate" if format == InputFormat::Pcm => {
                if value.as_u64() != Some(24_000) {
                    return Err(invalid(
                        &format!("{AT}.rate"),
                        Code::InvalidValue,
                        "`audio/pcm` input is 24000 Hz.",
                    ));
                }
            }
            other => return Err(unknown(&format!("{AT}.{other}"))),
        }
    }
    Ok(format)
}

fn turn_detection(value: &Value) -> Result<Option<TurnDetection>, Error> {
    const AT: &str = "session.audio.input.turn_detection";
    if value.is_null() {
        return Ok(None);
    }
    let fields = object(value, AT)?;
    if fields.get("type").and_then(Value::as_str) != Some("server_vad") {
        return Err(invalid(
            &format!("{AT}.type"),
            Code::InvalidValue,
            "Turn detection is `server_vad` or null (the client commits).",
        ));
    }
    let mut settings = TurnDetection::default();
    for (name, value) in fields {
        let path = format!("{AT}.{name}");
        let ms = |max: u64| {
            value
                .as_u64()
                .filter(|ms| *ms <= max)
                .map(|ms| ms as u32)
                .ok_or_else(|| {
                    invalid(
                        &path,
                        Code::InvalidValue,
                        format!("Expected whole milliseconds from 0 to {max}."),
                    )
                })
        };
        match name.as_str() {
            "type" => {}
            "threshold" => {
                settings.threshold = value
                    .as_f64()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .map(|t| t as f32)
                    .ok_or_else(|| {
                        invalid(&path, Code::InvalidValue, "Expected a number from 0 to 1.")
                    })?;
            }
            "prefix_padding_ms" => settings.prefix_padding_ms = ms(2_000)?,
            "silence_duration_ms" => settings.silence_duration_ms = ms(10_000)?.max(1),
            // OpenAI's options for conversation sessions: nothing to do in a transcription
            // session, so accepted only as they would act here (not at all).
            "create_response" | "interrupt_response" if value.as_bool() == Some(false) => {}
            "idle_timeout_ms" if value.is_null() => {}
            _ => return Err(unknown(&path)),
        }
    }
    Ok(Some(settings))
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Error> {
    value
        .as_object()
        .ok_or_else(|| invalid(path, Code::InvalidType, "Expected an object."))
}

fn invalid(path: &str, code: Code, message: impl Into<String>) -> Error {
    Error::Refused {
        code,
        param: Some(path.to_owned().into()),
        message: message.into().into(),
    }
}

fn unknown(path: &str) -> Error {
    invalid(
        path,
        Code::UnknownParameter,
        format!("Unknown parameter: '{path}'."),
    )
}

/// An `error` event for `err`, caused by the client event `event_id` if known.
pub fn error_event(id: String, err: Error, event_id: Option<&str>) -> Value {
    // The HTTP envelope's body, with the client event it answers.
    let mut error = error_body(err);
    error["event_id"] = json!(event_id);
    json!({"type": "error", "event_id": id, "error": error})
}

/// The body of the error envelope for `err` (`type`, `code`, `message`, `param`).
pub fn error_body(err: Error) -> Value {
    serde_json::to_value(ApiError::from(err).envelope().error).unwrap_or(Value::Null)
}

/// The usage of one transcribed turn, as OpenAI reports it for duration-billed models.
pub fn duration_usage(seconds: f64) -> Value {
    json!({"type": "duration", "seconds": (seconds * 1000.0).round() / 1000.0})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SessionConfig {
        SessionConfig::new("whisper-1".into())
    }

    #[test]
    fn an_update_in_openai_s_shape_is_applied() {
        let update = json!({
            "type": "transcription",
            "audio": {"input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "whisper-base", "language": "de", "prompt": "Hallo"},
                "turn_detection": {"type": "server_vad", "threshold": 0.6,
                    "prefix_padding_ms": 200, "silence_duration_ms": 700},
                "noise_reduction": null,
            }},
        });
        let next = base().update(&update).expect("accepted");
        assert_eq!(next.format, InputFormat::Pcmu);
        assert_eq!(next.model, "whisper-base");
        assert_eq!(next.language.as_deref(), Some("de"));
        assert_eq!(next.prompt.as_deref(), Some("Hallo"));
        let t = next.turn_detection.expect("server vad");
        assert_eq!((t.prefix_padding_ms, t.silence_duration_ms), (200, 700));
        assert!((t.threshold - 0.6).abs() < 1e-6);
        // Its own JSON is an update that changes nothing.
        assert_eq!(next.update(&next.json()).expect("round trip"), next);
    }

    #[test]
    fn turn_detection_null_means_manual_commits() {
        let next = base()
            .update(&json!({"audio": {"input": {"turn_detection": null}}}))
            .expect("accepted");
        assert_eq!(next.turn_detection, None);
        assert_eq!(next.json()["audio"]["input"]["turn_detection"], Value::Null);
    }

    #[test]
    fn refusals_name_the_path_and_change_nothing() {
        for (update, param) in [
            (json!({"type": "realtime"}), "session.type"),
            (
                json!({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}),
                "session.audio.input.format.rate",
            ),
            (
                json!({"audio": {"input": {"format": {"type": "g711_ulaw"}}}}),
                "session.audio.input.format.type",
            ),
            (
                json!({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}),
                "session.audio.input.turn_detection.type",
            ),
            (
                json!({"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}}),
                "session.audio.input.turn_detection.threshold",
            ),
            (
                json!({"audio": {"input": {"transcription": {"model": 7}}}}),
                "session.audio.input.transcription.model",
            ),
            (
                json!({"audio": {"input": {"noise_reduction": {"type": "near_field"}}}}),
                "session.audio.input.noise_reduction",
            ),
            (json!({"audio": {"output": {}}}), "session.audio.output"),
            (json!({"instructions": "be nice"}), "session.instructions"),
            (
                json!({"include": ["item.input_audio_transcription.logprobs"]}),
                "session.include",
            ),
            (json!("transcription"), "session"),
        ] {
            let err = base().update(&update).expect_err("refused");
            assert_eq!(err.param(), Some(param), "{update}");
        }
    }

    #[test]
    fn error_events_carry_the_envelope_and_the_client_event() {
        let err = invalid("session.type", Code::InvalidValue, "no");
        let event = error_event("event_1".into(), err, Some("client_7"));
        assert_eq!(event["type"], "error");
        assert_eq!(event["error"]["type"], "invalid_request_error");
        assert_eq!(event["error"]["code"], "invalid_value");
        assert_eq!(event["error"]["param"], "session.type");
        assert_eq!(event["error"]["event_id"], "client_7");
    }
}
