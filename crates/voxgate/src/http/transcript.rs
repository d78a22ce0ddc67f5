//! The transcription wire formats: `response_format` and the bodies OpenAI's clients read
//! (json, text, srt, vtt, verbose_json).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use voxgate_engine::{Task, Transcript};

/// `response_format` for transcriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptFormat {
    #[default]
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl TranscriptFormat {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "json" => Self::Json,
            "text" => Self::Text,
            "srt" => Self::Srt,
            "vtt" => Self::Vtt,
            "verbose_json" => Self::VerboseJson,
            _ => return None,
        })
    }

    /// Whether this format needs segment timings.
    pub fn needs_timestamps(self) -> bool {
        matches!(self, Self::Srt | Self::Vtt | Self::VerboseJson)
    }
}

/// `json`: `{"text": ..., "usage": ...}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TranscriptionJson {
    pub text: String,
    pub usage: TranscriptionUsage,
}

/// Billed seconds of input audio, as OpenAI reports it for duration-billed models.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TranscriptionUsage {
    /// Always `duration`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub seconds: u64,
}

/// `verbose_json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerboseTranscription {
    /// `transcribe` or `translate`.
    pub task: &'static str,
    /// The language asked for, or `unknown` when it was detected and not reported.
    pub language: String,
    /// Seconds of decoded input audio.
    pub duration: f64,
    pub text: String,
    pub segments: Vec<VerboseSegment>,
    /// Present when `timestamp_granularities[]` includes `word`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<VerboseWord>>,
    pub usage: TranscriptionUsage,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerboseSegment {
    pub id: usize,
    pub seek: u64,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f64,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerboseWord {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

fn round3(x: f32) -> f64 {
    (f64::from(x) * 1000.0).round() / 1000.0
}

/// Renders a transcript: `(content type, body)`.
pub fn render(
    format: TranscriptFormat,
    transcript: &Transcript,
    duration_secs: f64,
    temperature: f32,
    words: bool,
    task: Task,
) -> (&'static str, String) {
    let usage = || TranscriptionUsage {
        kind: "duration",
        seconds: duration_secs.ceil() as u64,
    };
    match format {
        TranscriptFormat::Json => (
            "application/json",
            serde_json::to_string(&TranscriptionJson {
                text: transcript.text.clone(),
                usage: usage(),
            })
            .unwrap_or_default(),
        ),
        TranscriptFormat::Text => (
            "text/plain; charset=utf-8",
            format!("{}\n", transcript.text),
        ),
        TranscriptFormat::Srt => ("text/plain; charset=utf-8", srt(transcript)),
        TranscriptFormat::Vtt => ("text/vtt; charset=utf-8", vtt(transcript)),
        TranscriptFormat::VerboseJson => {
            let segments = transcript
                .segments
                .iter()
                .enumerate()
                .map(|(id, s)| VerboseSegment {
                    id,
                    seek: (f64::from(s.start) * 100.0) as u64,
                    start: round3(s.start),
                    end: round3(s.end),
                    text: s.text.clone(),
                    tokens: Vec::new(),
                    temperature: f64::from(temperature),
                    avg_logprob: 0.0,
                    compression_ratio: 0.0,
                    no_speech_prob: 0.0,
                })
                .collect();
            let words = words.then(|| {
                transcript
                    .segments
                    .iter()
                    .flat_map(|s| &s.words)
                    .map(|w| VerboseWord {
                        word: w.word.clone(),
                        start: round3(w.start),
                        end: round3(w.end),
                    })
                    .collect()
            });
            let body = VerboseTranscription {
                task: match task {
                    Task::Transcribe => "transcribe",
                    Task::Translate => "translate",
                },
                // A translation's language is its output's, as OpenAI reports it.
                language: match task {
                    Task::Translate => "english".into(),
                    Task::Transcribe => transcript
                        .language
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                },
                duration: (duration_secs * 1000.0).round() / 1000.0,
                text: transcript.text.clone(),
                segments,
                words,
                usage: usage(),
            };
            (
                "application/json",
                serde_json::to_string(&body).unwrap_or_default(),
            )
        }
    }
}

/// `HH:MM:SS<sep>mmm`.
fn timestamp(seconds: f32, separator: char) -> String {
    let ms = (f64::from(seconds.max(0.0)) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn srt(transcript: &Transcript) -> String {
    let mut out = String::new();
    for (i, s) in transcript.segments.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(s.start, ','),
            timestamp(s.end, ','),
            s.text.trim()
        );
    }
    out
}

fn vtt(transcript: &Transcript) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in &transcript.segments {
        // A cue's text must not contain "-->"; the recogniser never emits it, but be sure.
        let text = s.text.trim().replace("-->", "->");
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            timestamp(s.start, '.'),
            timestamp(s.end, '.'),
            text
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxgate_engine::{TranscriptSegment, TranscriptWord};

    fn transcript() -> Transcript {
        let word = |w: &str, start, end| TranscriptWord {
            word: w.into(),
            start,
            end,
        };
        Transcript {
            text: "Hello there. Bye.".into(),
            language: Some("en".into()),
            segments: vec![
                TranscriptSegment {
                    start: 0.0,
                    end: 1.25,
                    text: "Hello there.".into(),
                    words: vec![word("Hello", 0.0, 0.5), word("there.", 0.6, 1.25)],
                },
                TranscriptSegment {
                    start: 3661.5,
                    end: 3662.0,
                    text: "Bye.".into(),
                    words: vec![word("Bye.", 3661.5, 3662.0)],
                },
            ],
        }
    }

    #[test]
    fn srt_and_vtt_number_and_time_their_cues() {
        let (_, srt) = render(
            TranscriptFormat::Srt,
            &transcript(),
            3662.0,
            0.0,
            false,
            Task::Transcribe,
        );
        assert_eq!(
            srt,
            "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n2\n01:01:01,500 --> 01:01:02,000\nBye.\n\n"
        );
        let (kind, vtt) = render(
            TranscriptFormat::Vtt,
            &transcript(),
            3662.0,
            0.0,
            false,
            Task::Transcribe,
        );
        assert_eq!(kind, "text/vtt; charset=utf-8");
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n"));
    }

    #[test]
    fn verbose_json_has_segments_and_words_only_when_asked() {
        let (_, body) = render(
            TranscriptFormat::VerboseJson,
            &transcript(),
            3662.0,
            0.0,
            true,
            Task::Transcribe,
        );
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["task"], "transcribe");
        assert_eq!(json["language"], "en");
        assert_eq!(json["segments"].as_array().expect("segments").len(), 2);
        assert_eq!(json["words"][1]["word"], "there.");
        assert_eq!(json["usage"]["seconds"], 3662);
        let (_, body) = render(
            TranscriptFormat::VerboseJson,
            &transcript(),
            1.0,
            0.0,
            false,
            Task::Transcribe,
        );
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(json.get("words").is_none());
    }
}
