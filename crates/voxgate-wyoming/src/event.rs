//! The events voxgate understands, parsed from frames, and the ones it sends.
//!
//! Parsing is strict about what voxgate uses (a `synthesize` without text, an audio format
//! outside the supported range are errors) and ignores fields it does not use (`context`,
//! `timestamp`, `text_format`…), as the reference does.

use serde_json::{Map, Value, json};

use crate::frame::Frame;

/// The audio format of `audio-start` and `audio-chunk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// Samples per second.
    pub rate: u32,
    /// Bytes per sample: 1 (unsigned 8-bit), 2 (16-bit) or 4 (32-bit), little-endian.
    pub width: u8,
    pub channels: u8,
}

impl AudioFormat {
    /// Bytes per frame (one sample of every channel).
    pub fn frame_bytes(self) -> usize {
        usize::from(self.width) * usize::from(self.channels)
    }
}

/// The sample rates accepted from clients.
pub const RATES: std::ops::RangeInclusive<u32> = 8_000..=96_000;
/// The most channels accepted from clients.
pub const MAX_CHANNELS: u8 = 8;

/// A voice as `synthesize` names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Voice {
    pub name: Option<String>,
    pub language: Option<String>,
    pub speaker: Option<String>,
}

/// An event from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Describe,
    Ping {
        text: Option<String>,
    },
    /// Picks one of the programs `info` listed, for the connection.
    SelectProgram {
        name: String,
    },
    Synthesize {
        text: String,
        voice: Option<Voice>,
        /// `text_format: "ssml"`: the text is an SSML document.
        ssml: bool,
    },
    SynthesizeStart {
        voice: Option<Voice>,
        ssml: bool,
    },
    SynthesizeChunk {
        text: String,
    },
    SynthesizeStop,
    Transcribe {
        name: Option<String>,
        language: Option<String>,
    },
    AudioStart(AudioFormat),
    AudioChunk {
        format: AudioFormat,
        audio: Vec<u8>,
    },
    AudioStop,
    /// Anything else (a type voxgate does not serve).
    Other(String),
}

/// Why a frame is not a well-formed event of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("`{0}` is required")]
    Missing(&'static str),
    #[error("`{0}` has an invalid value")]
    Invalid(&'static str),
    #[error("the sample rate must be between 8000 and 96000")]
    Rate,
    #[error("the sample width must be 1, 2, 3 or 4 bytes")]
    Width,
    #[error("there must be 1 to 8 channels")]
    Channels,
    #[error("the audio is not a whole number of frames")]
    PartialFrame,
}

impl Event {
    /// The event type, as a static name for metrics (`other` for unknown ones).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Describe => "describe",
            Event::Ping { .. } => "ping",
            Event::SelectProgram { .. } => "select-program",
            Event::Synthesize { .. } => "synthesize",
            Event::SynthesizeStart { .. } => "synthesize-start",
            Event::SynthesizeChunk { .. } => "synthesize-chunk",
            Event::SynthesizeStop => "synthesize-stop",
            Event::Transcribe { .. } => "transcribe",
            Event::AudioStart(_) => "audio-start",
            Event::AudioChunk { .. } => "audio-chunk",
            Event::AudioStop => "audio-stop",
            Event::Other(_) => "other",
        }
    }

    /// The typed event a frame carries.
    pub fn parse(frame: Frame) -> Result<Event, EventError> {
        let data = &frame.data;
        Ok(match frame.kind.as_str() {
            "describe" => Event::Describe,
            "ping" => Event::Ping {
                text: optional_string(data, "text")?,
            },
            "select-program" => Event::SelectProgram {
                name: required_string(data, "name")?,
            },
            "synthesize" => Event::Synthesize {
                text: required_string(data, "text")?,
                voice: voice(data)?,
                ssml: ssml(data)?,
            },
            "synthesize-start" => Event::SynthesizeStart {
                voice: voice(data)?,
                ssml: ssml(data)?,
            },
            "synthesize-chunk" => Event::SynthesizeChunk {
                text: required_string(data, "text")?,
            },
            "synthesize-stop" => Event::SynthesizeStop,
            "transcribe" => Event::Transcribe {
                name: optional_string(data, "name")?,
                language: optional_string(data, "language")?,
            },
            "audio-start" => Event::AudioStart(format(data)?),
            "audio-chunk" => {
                let format = format(data)?;
                if !frame.payload.len().is_multiple_of(format.frame_bytes()) {
                    return Err(EventError::PartialFrame);
                }
                Event::AudioChunk {
                    format,
                    audio: frame.payload,
                }
            }
            "audio-stop" => Event::AudioStop,
            _ => Event::Other(frame.kind),
        })
    }
}

fn optional_string(
    data: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, EventError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(EventError::Invalid(field)),
    }
}

fn required_string(data: &Map<String, Value>, field: &'static str) -> Result<String, EventError> {
    optional_string(data, field)?.ok_or(EventError::Missing(field))
}

fn voice(data: &Map<String, Value>) -> Result<Option<Voice>, EventError> {
    let voice = match data.get("voice") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(voice)) => voice,
        Some(_) => return Err(EventError::Invalid("voice")),
    };
    let parsed = Voice {
        name: optional_string(voice, "name")?,
        language: optional_string(voice, "language")?,
        speaker: optional_string(voice, "speaker")?,
    };
    Ok((parsed != Voice::default()).then_some(parsed))
}

/// `text_format`: "text" (the default) or "ssml".
fn ssml(data: &Map<String, Value>) -> Result<bool, EventError> {
    match optional_string(data, "text_format")?.as_deref() {
        None | Some("text") => Ok(false),
        Some("ssml") => Ok(true),
        Some(_) => Err(EventError::Invalid("text_format")),
    }
}

fn format(data: &Map<String, Value>) -> Result<AudioFormat, EventError> {
    let number = |field: &'static str| match data.get(field) {
        Some(Value::Number(n)) => n.as_u64().ok_or(EventError::Invalid(field)),
        Some(_) => Err(EventError::Invalid(field)),
        None => Err(EventError::Missing(field)),
    };
    let rate = number("rate")?;
    let width = number("width")?;
    let channels = number("channels")?;
    let rate = u32::try_from(rate)
        .ok()
        .filter(|r| RATES.contains(r))
        .ok_or(EventError::Rate)?;
    let width = match width {
        1..=4 => width as u8,
        _ => return Err(EventError::Width),
    };
    let channels = u8::try_from(channels)
        .ok()
        .filter(|c| (1..=MAX_CHANNELS).contains(c))
        .ok_or(EventError::Channels)?;
    Ok(AudioFormat {
        rate,
        width,
        channels,
    })
}

/// `audio-start`.
pub fn audio_start(format: AudioFormat) -> Frame {
    Frame::with_data(
        "audio-start",
        json!({"rate": format.rate, "width": format.width, "channels": format.channels}),
    )
}

/// `audio-chunk` with `audio` as its payload.
pub fn audio_chunk(format: AudioFormat, audio: Vec<u8>) -> Frame {
    let mut frame = Frame::with_data(
        "audio-chunk",
        json!({"rate": format.rate, "width": format.width, "channels": format.channels}),
    );
    frame.payload = audio;
    frame
}

/// `audio-stop`.
pub fn audio_stop() -> Frame {
    Frame::new("audio-stop")
}

/// `synthesize-stopped`: the end of a streamed synthesis.
pub fn synthesize_stopped() -> Frame {
    Frame::new("synthesize-stopped")
}

/// `transcript`, the final text.
pub fn transcript(text: &str, language: Option<&str>) -> Frame {
    let mut data = json!({"text": text});
    if let Some(language) = language {
        data["language"] = json!(language);
    }
    Frame::with_data("transcript", data)
}

/// `transcript-start`.
pub fn transcript_start(language: Option<&str>) -> Frame {
    match language {
        Some(language) => Frame::with_data("transcript-start", json!({"language": language})),
        None => Frame::new("transcript-start"),
    }
}

/// `transcript-chunk`: a piece of the text.
pub fn transcript_chunk(text: &str) -> Frame {
    Frame::with_data("transcript-chunk", json!({"text": text}))
}

/// `transcript-stop`.
pub fn transcript_stop() -> Frame {
    Frame::new("transcript-stop")
}

/// `pong`, echoing a ping's text.
pub fn pong(text: Option<&str>) -> Frame {
    Frame::with_data("pong", json!({"text": text}))
}

/// `error` with a human-readable text and a machine-readable code.
pub fn error(text: &str, code: &str) -> Frame {
    Frame::with_data("error", json!({"text": text, "code": code}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &str, data: Value, payload: &[u8]) -> Frame {
        let mut frame = Frame::with_data(kind, data);
        frame.payload = payload.to_vec();
        frame
    }

    #[test]
    fn the_events_voxgate_serves_parse() {
        assert_eq!(
            Event::parse(frame(
                "synthesize",
                json!({"text": "Hi.", "voice": {"name": "tts-1/alloy", "speaker": null}, "context": {}}),
                b""
            )),
            Ok(Event::Synthesize {
                text: "Hi.".into(),
                voice: Some(Voice {
                    name: Some("tts-1/alloy".into()),
                    ..Voice::default()
                }),
                ssml: false,
            })
        );
        assert_eq!(
            Event::parse(frame("synthesize-start", json!({"voice": {}}), b"")),
            Ok(Event::SynthesizeStart {
                voice: None,
                ssml: false
            })
        );
        assert_eq!(
            Event::parse(frame(
                "synthesize",
                json!({"text": "<speak>Hi.</speak>", "text_format": "ssml"}),
                b""
            )),
            Ok(Event::Synthesize {
                text: "<speak>Hi.</speak>".into(),
                voice: None,
                ssml: true,
            })
        );
        assert_eq!(
            Event::parse(frame(
                "synthesize",
                json!({"text": "Hi.", "text_format": "markdown"}),
                b""
            )),
            Err(EventError::Invalid("text_format"))
        );
        assert_eq!(
            Event::parse(frame(
                "audio-chunk",
                json!({"rate": 16000, "width": 2, "channels": 1, "timestamp": 0}),
                &[0, 0, 1, 0]
            )),
            Ok(Event::AudioChunk {
                format: AudioFormat {
                    rate: 16000,
                    width: 2,
                    channels: 1
                },
                audio: vec![0, 0, 1, 0]
            })
        );
        assert_eq!(
            Event::parse(frame("run-pipeline", json!({}), b"")),
            Ok(Event::Other("run-pipeline".into()))
        );
    }

    #[test]
    fn malformed_events_are_refused_with_the_field() {
        for (kind, data, payload, err) in [
            (
                "synthesize",
                json!({}),
                &b""[..],
                EventError::Missing("text"),
            ),
            (
                "synthesize",
                json!({"text": 5}),
                b"",
                EventError::Invalid("text"),
            ),
            (
                "synthesize",
                json!({"text": "x", "voice": "alloy"}),
                b"",
                EventError::Invalid("voice"),
            ),
            (
                "audio-start",
                json!({"rate": 16000, "width": 2}),
                b"",
                EventError::Missing("channels"),
            ),
            (
                "audio-start",
                json!({"rate": 4000, "width": 2, "channels": 1}),
                b"",
                EventError::Rate,
            ),
            (
                "audio-start",
                json!({"rate": 16000, "width": 5, "channels": 1}),
                b"",
                EventError::Width,
            ),
            (
                "audio-start",
                json!({"rate": 16000, "width": 2, "channels": 0}),
                b"",
                EventError::Channels,
            ),
            (
                "audio-chunk",
                json!({"rate": 16000, "width": 2, "channels": 2}),
                &[0, 0, 0][..],
                EventError::PartialFrame,
            ),
        ] {
            assert_eq!(
                Event::parse(frame(kind, data.clone(), payload)),
                Err(err),
                "{kind} {data}"
            );
        }
    }
}
