//! The engines and the models that name them: the closed set of engine kinds with each
//! kind's settings, and what a model maps to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{
    BreakerSettings, ElevenLabsConfig, HttpConfig, OpenAiConfig, PollinationsConfig,
    SubprocessConfig,
};

/// The closed set of engine kinds, each with its own settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum EngineConfig {
    /// Flite 2.2, compiled in.
    Flite {
        /// Sentences synthesized at once; 0 means one per CPU.
        threads: usize,
        /// Alias → native voice id.
        #[serde(default)]
        voices: BTreeMap<String, String>,
    },
    /// Whisper base through CTranslate2 (speech recognition), loaded on first use after its
    /// files pass their checksums.
    Whisper {
        /// The directory `scripts/fetch-models` fills.
        model_dir: PathBuf,
        /// CPU threads for one transcription; 0 means one per CPU.
        threads: usize,
        /// Transcriptions running at once.
        parallel: usize,
        /// Beam width when `temperature` is 0 (1 is fastest, 5 is Whisper's default).
        beam_size: usize,
    },
    /// Piper (en_US-joe-medium, ONNX Runtime), loaded on first use after its files pass their
    /// checksums; phonemes from espeak-ng run in the sandbox.
    Piper {
        /// The directory `scripts/fetch-models` fills.
        model_dir: PathBuf,
        /// ONNX Runtime threads for one sentence.
        threads: usize,
        /// Sentences in progress at once (phonemizing overlaps; inference takes turns).
        parallel: usize,
        /// Unload the voice after this long unused; 0 keeps it loaded.
        idle_unload_secs: u64,
        /// Alias → native voice id.
        #[serde(default)]
        voices: BTreeMap<String, String>,
    },
    /// A synthesizer binary (espeak-ng, festival, or the operator's) run in the sandbox.
    Subprocess(SubprocessConfig),
    /// An OpenAI-compatible text-to-speech upstream.
    #[serde(rename = "openai")]
    OpenAi(OpenAiConfig),
    /// An OpenAI-compatible speech-to-text upstream.
    #[serde(rename = "openai-stt")]
    OpenAiStt(OpenAiConfig),
    /// ElevenLabs text-to-speech (and instant voice cloning).
    #[serde(rename = "elevenlabs")]
    ElevenLabs(ElevenLabsConfig),
    /// Pollinations' text-to-speech.
    Pollinations(PollinationsConfig),
}

static NO_ALIASES: BTreeMap<String, String> = BTreeMap::new();

impl EngineConfig {
    /// Alias → native voice id.
    pub fn voice_aliases(&self) -> &BTreeMap<String, String> {
        match self {
            EngineConfig::Flite { voices, .. } => voices,
            EngineConfig::OpenAi(c) => &c.voices,
            EngineConfig::ElevenLabs(c) => &c.voices,
            EngineConfig::Pollinations(c) => &c.voices,
            EngineConfig::Subprocess(c) => &c.voices,
            EngineConfig::Piper { voices, .. } => voices,
            EngineConfig::Whisper { .. } | EngineConfig::OpenAiStt(_) => &NO_ALIASES,
        }
    }

    /// Whether the engine recognises speech (rather than synthesizing it).
    pub fn is_transcriber(&self) -> bool {
        matches!(
            self,
            EngineConfig::Whisper { .. } | EngineConfig::OpenAiStt(_)
        )
    }

    /// A remote provider's connection settings, breaker and secret variable.
    pub fn remote(&self) -> Option<(&HttpConfig, &BreakerSettings, &str)> {
        match self {
            EngineConfig::OpenAi(c) | EngineConfig::OpenAiStt(c) => {
                Some((&c.http, &c.breaker, &c.api_key_env))
            }
            EngineConfig::ElevenLabs(c) => Some((&c.http, &c.breaker, &c.api_key_env)),
            EngineConfig::Pollinations(c) => Some((&c.http, &c.breaker, &c.api_key_env)),
            EngineConfig::Flite { .. }
            | EngineConfig::Whisper { .. }
            | EngineConfig::Piper { .. }
            | EngineConfig::Subprocess(_) => None,
        }
    }

    /// A remote engine's base URL and HTTP settings.
    pub fn base_url(&self) -> Option<(&str, &HttpConfig)> {
        match self {
            EngineConfig::OpenAi(c) | EngineConfig::OpenAiStt(c) => Some((&c.base_url, &c.http)),
            EngineConfig::ElevenLabs(c) => Some((&c.base_url, &c.http)),
            EngineConfig::Pollinations(c) => Some((&c.base_url, &c.http)),
            EngineConfig::Flite { .. }
            | EngineConfig::Whisper { .. }
            | EngineConfig::Piper { .. }
            | EngineConfig::Subprocess(_) => None,
        }
    }

    pub(super) fn set_api_key(&mut self, key: Option<SecretString>) {
        match self {
            EngineConfig::OpenAi(c) | EngineConfig::OpenAiStt(c) => c.api_key = key,
            EngineConfig::ElevenLabs(c) => c.api_key = key,
            EngineConfig::Pollinations(c) => c.api_key = key,
            EngineConfig::Flite { .. }
            | EngineConfig::Whisper { .. }
            | EngineConfig::Piper { .. }
            | EngineConfig::Subprocess(_) => {}
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The engine id that serves this model.
    pub engine: String,
    /// What to do with `instructions` when the engine cannot follow them (speech models).
    #[serde(default = "InstructionsPolicy::ignore")]
    pub instructions: InstructionsPolicy,
    /// Engines tried in order when `engine` fails or its breaker is open (speech models).
    #[serde(default)]
    pub fallback: Vec<String>,
}

impl ModelConfig {
    /// `engine`, then the fallbacks.
    pub fn chain(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.engine).chain(&self.fallback)
    }
}

impl InstructionsPolicy {
    fn ignore() -> Self {
        InstructionsPolicy::Ignore
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstructionsPolicy {
    Ignore,
    Reject,
}
