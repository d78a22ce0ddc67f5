//! The engine contract: what a speech synthesizer promises the gateway, and nothing else.
//!
//! This crate knows no HTTP, SQL, Redis or keys. An engine receives plain, already validated
//! text and a native voice id, and streams mono 16-bit PCM at its own sample rate. The
//! gateway resamples, encodes and frames what it receives.
//!
//! - [`Synthesizer`] is the trait every local engine and remote provider implements.
//! - [`EngineError`] classifies every failure by who is at fault and whether a retry helps.
//! - [`BlockingPool`] runs CPU-bound synthesis off the async workers, bounded.
//! - [`sentences`] splits text at sentence boundaries so engines can stream piece by piece.
//! - [`Transcriber`] is the trait every speech recogniser implements (local Whisper now,
//!   remote OpenAI-compatible STT providers later).

mod error;
mod pool;
pub mod sentences;

use std::future::Future;
use std::pin::Pin;

use futures::Stream;

pub use error::{EngineError, ErrorClass};
pub use pool::BlockingPool;

/// Languages Whisper base knows, as ISO 639-1 codes (plus `haw`), in the model's order.
pub const WHISPER_LANGUAGES: &[&str] = &[
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln",
    "ha", "ba", "jw", "su",
];

/// A voice an engine can speak with, as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceInfo {
    /// The engine's own id for the voice (never a path).
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// BCP 47 language tag, e.g. `en-US`.
    pub language: String,
}

/// One synthesis job, already validated by the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthesisRequest {
    /// The text to speak. Plain text; never empty.
    pub text: String,
    /// The engine's own voice id, one of [`Synthesizer::voices`].
    pub voice: String,
    /// Speaking rate, 1.0 is normal; already range-checked.
    pub speed: f32,
    /// A stored voice to clone instead of `voice`, for engines whose
    /// [`Synthesizer::supports_cloning`] is true (others never receive one).
    pub reference: Option<std::sync::Arc<VoiceReference>>,
}

/// A caller's stored voice reference: a short, decoded, re-encoded WAV clip.
#[derive(Clone, PartialEq, Eq)]
pub struct VoiceReference {
    /// The stored voice's id (stable: engines may key their own clone of it by this).
    pub id: String,
    /// The owning account (engines key clones by owner and id together).
    pub owner: String,
    /// 16-bit mono WAV.
    pub wav: Vec<u8>,
}

impl std::fmt::Debug for VoiceReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The recording itself is user content: never in a log line.
        f.debug_struct("VoiceReference")
            .field("id", &self.id)
            .field("bytes", &self.wav.len())
            .finish_non_exhaustive()
    }
}

/// A piece of synthesized audio: mono, signed 16-bit samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmChunk {
    /// Samples per second.
    pub sample_rate: u32,
    /// Mono samples.
    pub samples: Vec<i16>,
}

/// The audio an engine streams back, piece by piece, in order.
pub type PcmStream = Pin<Box<dyn Stream<Item = Result<PcmChunk, EngineError>> + Send + 'static>>;

/// Audio exactly as an upstream sends it, already in a client's format (a relay).
pub type EncodedStream =
    Pin<Box<dyn Stream<Item = Result<bytes::Bytes, EngineError>> + Send + 'static>>;

/// A format an engine can relay: what it sends is what the client asked for, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFormat {
    /// 16-bit little-endian mono PCM at 24 kHz (OpenAI's `pcm`).
    Pcm24k,
    /// MPEG audio layer III.
    Mp3,
}

/// A speech synthesizer: a local engine or a remote provider.
///
/// Implementations must make the stream lazy: no audio beyond what has been polled for (plus
/// at most a small, bounded look-ahead) may be synthesized, so the first bytes can leave
/// before the whole input is done and a client that goes away stops the work.
pub trait Synthesizer: Send + Sync + std::fmt::Debug {
    /// A short stable id for logs, metrics and the `x-voxgate-engine` header.
    fn id(&self) -> &str;

    /// The voices this engine offers.
    fn voices(&self) -> &[VoiceInfo];

    /// Whether the engine can serve requests now.
    fn ready(&self) -> bool {
        true
    }

    /// Whether text leaves this machine (a remote provider): tiers with PII redaction
    /// redact it first.
    fn remote(&self) -> bool {
        false
    }

    /// Whether the engine can speak with a stored voice reference (cloning): it makes a
    /// voice of its own from the reference ([`Synthesizer::clone_voice`]) and is then asked to
    /// synthesize with that voice's id as [`SynthesisRequest::voice`] (and the reference).
    fn supports_cloning(&self) -> bool {
        false
    }

    /// Makes a voice from a stored reference, named `label` at the provider (an opaque name
    /// the gateway chose: it finds the voice by it if the id was lost); returns the engine's
    /// id for it. The gateway keeps the id (sealed, per stored voice and engine) and deletes
    /// the voice with [`Synthesizer::delete_clone`] when the reference goes.
    fn clone_voice(&self, _reference: &VoiceReference, _label: &str) -> CloneFuture {
        Box::pin(async {
            Err(EngineError::Unsupported(
                "this engine does not clone voices",
            ))
        })
    }

    /// Starts synthesis. Errors that are known before any audio exists are returned here;
    /// later ones arrive in the stream.
    fn synthesize(&self, request: SynthesisRequest) -> Result<PcmStream, EngineError>;

    /// The formats [`Synthesizer::relay`] can send (none by default: every answer goes
    /// through the gateway's resampler and encoder).
    fn relay_formats(&self) -> &[RelayFormat] {
        &[]
    }

    /// Starts synthesis in `format` (one of [`Synthesizer::relay_formats`]): the upstream's
    /// bytes, unchanged, as they arrive. The gateway counts the audio from the stream
    /// itself. Errors known before any audio exists are returned here.
    fn relay(
        &self,
        _request: SynthesisRequest,
        _format: RelayFormat,
    ) -> Result<EncodedStream, EngineError> {
        Err(EngineError::Unsupported("this engine does not relay"))
    }

    /// Deletes a voice [`Synthesizer::clone_voice`] made (one already gone counts as
    /// deleted). An engine that does not clone refuses, so a record of a clone is never
    /// dropped without the clone.
    fn delete_clone(&self, _clone_id: &str) -> ForgetFuture {
        Box::pin(async {
            Err(EngineError::Unsupported(
                "this engine keeps no voice clones",
            ))
        })
    }

    /// Deletes every voice named `label` (what a maker that died after uploading left
    /// behind, its id never recorded).
    fn delete_clones_named(&self, _label: &str) -> ForgetFuture {
        Box::pin(async {
            Err(EngineError::Unsupported(
                "this engine keeps no voice clones",
            ))
        })
    }
}

/// The future [`Synthesizer::delete_clone`] returns.
pub type ForgetFuture = Pin<Box<dyn Future<Output = Result<(), EngineError>> + Send + 'static>>;

/// The future [`Synthesizer::clone_voice`] returns: the engine's id for the new voice.
pub type CloneFuture = Pin<Box<dyn Future<Output = Result<String, EngineError>> + Send + 'static>>;

/// What a recogniser makes of the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    /// Text in the language spoken.
    #[default]
    Transcribe,
    /// English text, whatever the language spoken (Whisper's translate task).
    Translate,
}

/// Where a recogniser sends text as it becomes available (a piece per stretch of audio it
/// has finished), before the whole transcript is returned. Called on the recogniser's
/// thread: it must not block. The contract: the transcript's text is the pieces, trimmed,
/// joined by single spaces (the streaming edge relies on it to make deltas that add up).
/// Languages written without spaces get one between windows, as the whole text does.
#[derive(Clone)]
pub struct TextSink(std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl TextSink {
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }

    /// Hands on one piece of text (never empty).
    pub fn send(&self, text: &str) {
        if !text.is_empty() {
            (self.0)(text);
        }
    }
}

impl std::fmt::Debug for TextSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextSink")
    }
}

impl PartialEq for TextSink {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One transcription job: validated, decoded audio at the engine's [`Transcriber::sample_rate`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TranscriptionRequest {
    /// Mono samples in `[-1, 1]`.
    pub samples: Vec<f32>,
    /// An ISO 639-1 code from [`Transcriber::languages`], or `None` to detect.
    pub language: Option<String>,
    /// 0 decodes greedily (beam search); above 0 samples at this temperature (at most 1).
    pub temperature: f32,
    /// Whether segment and word timings are wanted (they cost an alignment pass).
    pub timestamps: bool,
    /// Transcribe, or translate into English (only where [`Transcriber::translates`]).
    pub task: Task,
    /// Text as it becomes available; engines that cannot stream send nothing, and the
    /// caller falls back to the whole transcript.
    pub partial: Option<TextSink>,
}

/// A timed word.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptWord {
    pub word: String,
    /// Seconds from the start of the audio.
    pub start: f32,
    pub end: f32,
}

/// A timed stretch of the transcript (a caption line).
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptSegment {
    pub start: f32,
    pub end: f32,
    pub text: String,
    pub words: Vec<TranscriptWord>,
}

/// What a recogniser heard.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transcript {
    pub text: String,
    /// The language transcribed, when known.
    pub language: Option<String>,
    /// Empty unless timestamps were asked for.
    pub segments: Vec<TranscriptSegment>,
}

/// The future a [`Transcriber`] returns.
pub type TranscriptionFuture =
    Pin<Box<dyn Future<Output = Result<Transcript, EngineError>> + Send + 'static>>;

/// A speech recogniser: a local engine or a remote provider.
pub trait Transcriber: Send + Sync + std::fmt::Debug {
    /// A short stable id for logs, metrics and the `x-voxgate-engine` header.
    fn id(&self) -> &str;

    /// The sample rate [`TranscriptionRequest::samples`] must have.
    fn sample_rate(&self) -> u32;

    /// The language codes the engine accepts.
    fn languages(&self) -> &[&str];

    /// Whether the engine can time single words.
    fn word_timestamps(&self) -> bool;

    /// Whether the engine can translate speech into English ([`Task::Translate`]). No
    /// default: a wrapper must pass its engine's answer on.
    fn translates(&self) -> bool;

    /// Transcribes one request. Dropping the future abandons the wait, not necessarily the
    /// computation already running on a blocking thread.
    fn transcribe(&self, request: TranscriptionRequest) -> TranscriptionFuture;
}
