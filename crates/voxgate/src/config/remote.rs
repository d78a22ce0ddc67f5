//! Settings of remote providers: where they are, how voxgate talks to them (timeouts, caps,
//! which addresses it may reach) and when their circuit breaker opens.
//!
//! Provider secrets never appear in a configuration file: `api_key_env` names an environment
//! variable, read once at start-up by [`super::Config::load`].

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// An OpenAI-compatible upstream: OpenAI itself, Kokoro-FastAPI, speaches, Chatterbox or
/// Qwen3-TTS servers. Speech engines call `POST {base_url}/audio/speech`, transcription
/// engines `POST {base_url}/audio/transcriptions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// E.g. `https://api.openai.com/v1` or `http://127.0.0.1:8880/v1`.
    pub base_url: String,
    /// The upstream's model name.
    pub model: String,
    /// The environment variable holding the bearer token; empty sends none.
    #[serde(default)]
    pub api_key_env: String,
    /// Speech: alias → the upstream's voice name. Every value is a voice the upstream offers.
    #[serde(default)]
    pub voices: BTreeMap<String, String>,
    /// Speech: what to ask the upstream for: raw `pcm` (16-bit little-endian mono at
    /// `sample_rate`, streamed as it arrives) or `wav`.
    #[serde(default)]
    pub audio: RemoteAudio,
    /// Speech: the sample rate of `pcm` answers (OpenAI and Kokoro send 24000).
    #[serde(default = "default_pcm_rate")]
    pub sample_rate: u32,
    /// Speech: when a client asks for `mp3`, or for `pcm` and `sample_rate` is 24000, and
    /// nothing needs the audio decoded (no SSML pause to insert, no stored voice), ask the
    /// upstream for that format and pass its bytes on as they arrive (metered from the
    /// stream's own frames). `false`: always ask for `audio` and encode here.
    #[serde(default = "default_true")]
    pub relay: bool,
    /// Transcription: the language codes the upstream accepts (empty: Whisper's list).
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// Filled from `api_key_env` at load time.
    #[serde(skip)]
    pub api_key: Option<SecretString>,
}

/// ElevenLabs: `POST {base_url}/v1/text-to-speech/{voice_id}/stream` with `xi-api-key`,
/// raw PCM via `output_format`, and instant voice cloning from stored references.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElevenLabsConfig {
    #[serde(default = "default_elevenlabs_url")]
    pub base_url: String,
    /// E.g. `eleven_multilingual_v2`.
    pub model_id: String,
    /// The environment variable holding the `xi-api-key`.
    pub api_key_env: String,
    /// Alias → ElevenLabs voice id.
    #[serde(default)]
    pub voices: BTreeMap<String, String>,
    /// `pcm_16000`, `pcm_22050`, `pcm_24000` or `pcm_44100`.
    #[serde(default = "default_elevenlabs_format")]
    pub output_format: String,
    /// Whether stored voice references may be uploaded for instant voice cloning.
    #[serde(default)]
    pub cloning: bool,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub breaker: BreakerSettings,
    #[serde(skip)]
    pub api_key: Option<SecretString>,
}

/// Pollinations' text-to-speech: `GET {base_url}/{text}?model=…&voice=…`, answered with MP3.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollinationsConfig {
    #[serde(default = "default_pollinations_url")]
    pub base_url: String,
    #[serde(default = "default_pollinations_model")]
    pub model: String,
    /// The environment variable holding a bearer token; empty sends none.
    #[serde(default)]
    pub api_key_env: String,
    /// Alias → Pollinations voice name.
    #[serde(default)]
    pub voices: BTreeMap<String, String>,
    /// Longest text sent in one request (it travels in the URL).
    #[serde(default = "default_pollinations_chars")]
    pub max_chars: usize,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub breaker: BreakerSettings,
    #[serde(skip)]
    pub api_key: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteAudio {
    #[default]
    Pcm,
    Wav,
}

/// How voxgate talks to one provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub connect_timeout_ms: u64,
    /// Longest wait for a speech response's head once the request is sent (a provider
    /// that accepts and never answers falls back after it).
    pub first_byte_timeout_ms: u64,
    /// Longest wait for the next bytes of a response (a slow body is cut here).
    pub read_timeout_ms: u64,
    /// Longest a whole request may take, body included.
    pub total_timeout_secs: u64,
    /// Largest response body accepted.
    pub max_response_bytes: u64,
    /// Whether the provider may resolve to loopback, private or link-local addresses (a
    /// model server on this host or LAN). Off: such addresses are refused (SSRF).
    pub allow_local: bool,
    /// Whether a plain `http://` base URL is accepted (for `allow_local` servers).
    pub allow_http: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 3_000,
            first_byte_timeout_ms: 3_000,
            read_timeout_ms: 15_000,
            total_timeout_secs: 120,
            max_response_bytes: 64 * 1024 * 1024,
            allow_local: false,
            allow_http: false,
        }
    }
}

impl HttpConfig {
    pub fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.first_byte_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
    pub fn total_timeout(&self) -> Duration {
        Duration::from_secs(self.total_timeout_secs)
    }
}

/// When a provider's circuit breaker opens and for how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Or this failure rate over `window_secs`, once `min_requests` outcomes are in it.
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window_secs: u64,
    /// How long it stays open before one probe is let through.
    pub cooldown_secs: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 10,
            window_secs: 60,
            cooldown_secs: 30,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_pcm_rate() -> u32 {
    24_000
}
fn default_elevenlabs_url() -> String {
    "https://api.elevenlabs.io".into()
}
fn default_elevenlabs_format() -> String {
    "pcm_24000".into()
}
fn default_pollinations_url() -> String {
    "https://text.pollinations.ai".into()
}
fn default_pollinations_model() -> String {
    "openai-audio".into()
}
fn default_pollinations_chars() -> usize {
    1000
}

/// The sample rate an ElevenLabs `output_format` names, if it is one of the PCM formats.
pub fn elevenlabs_pcm_rate(format: &str) -> Option<u32> {
    match format {
        "pcm_16000" => Some(16_000),
        "pcm_22050" => Some(22_050),
        "pcm_24000" => Some(24_000),
        "pcm_44100" => Some(44_100),
        _ => None,
    }
}
