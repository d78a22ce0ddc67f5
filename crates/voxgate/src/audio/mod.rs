//! Audio output: the formats clients may ask for, resampling to the output rate, and
//! streaming encoders (only this module knows codecs); and turn detection on input
//! (`vad`).

mod encode;
pub mod g711;
pub mod meter;
mod resample;
pub mod vad;

pub use encode::{EncodeError, Encoder};
pub use resample::{ResampleError, Resampler};

use serde::Deserialize;

/// Every response is produced at OpenAI's rate: 24 kHz, mono, 16-bit.
pub const OUTPUT_RATE: u32 = 24_000;

/// `response_format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    #[default]
    Mp3,
    Opus,
    Aac,
    Flac,
    Wav,
    Pcm,
}

impl AudioFormat {
    /// Every format, in OpenAI's order.
    pub const ALL: [AudioFormat; 6] = [
        AudioFormat::Mp3,
        AudioFormat::Opus,
        AudioFormat::Aac,
        AudioFormat::Flac,
        AudioFormat::Wav,
        AudioFormat::Pcm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Opus => "opus",
            AudioFormat::Aac => "aac",
            AudioFormat::Flac => "flac",
            AudioFormat::Wav => "wav",
            AudioFormat::Pcm => "pcm",
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "audio/mpeg",
            AudioFormat::Opus => "audio/ogg; codecs=opus",
            AudioFormat::Aac => "audio/aac",
            AudioFormat::Flac => "audio/flac",
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Pcm => "audio/pcm",
        }
    }

    /// Whether this build can encode the format. AAC needs the opt-in `aac` feature: the
    /// only embeddable encoder (FDK AAC) carries licence terms the default binary avoids.
    pub fn is_available(self) -> bool {
        !matches!(self, AudioFormat::Aac) || cfg!(feature = "aac")
    }

    /// The formats this build can produce, comma-separated, for error messages.
    pub fn available_list() -> String {
        AudioFormat::ALL
            .iter()
            .filter(|f| f.is_available())
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
