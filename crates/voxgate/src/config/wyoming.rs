//! `[wyoming.<name>]`: Wyoming listeners (Home Assistant's speech protocol), off unless one
//! is configured. The protocol carries no credentials, so each listener is bound to one key:
//! that key's account, tier, scopes, limits, quotas and audit apply to every connection.

use std::net::SocketAddr;

use serde::Deserialize;

/// One Wyoming listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WyomingConfig {
    /// Where it listens: loopback by default; any other address needs `allow`.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// The id of the key every connection acts as (the part of `vg_<id>_…` after `vg_`,
    /// as `voxgate keys list` shows it). Revoking or expiring the key closes connections
    /// within the authentication cache's lifetime.
    pub key_id: String,
    /// Address blocks ("192.168.1.0/24") whose peers may connect. Required for a bind
    /// other than loopback; on loopback, loopback peers are always allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// The speech model for voices named without one (`alloy` rather than `tts-1/alloy`).
    #[serde(default = "default_tts_model")]
    pub tts_model: String,
    /// The transcription model when `transcribe` names none.
    #[serde(default = "default_asr_model")]
    pub asr_model: String,
    #[serde(default)]
    pub limits: WyomingLimits,
}

/// Caps on what one connection may send; anything over one gets an `error` event and the
/// connection is closed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WyomingLimits {
    /// The JSON header line of an event.
    pub max_header_bytes: usize,
    /// An event's data segment.
    pub max_data_bytes: usize,
    /// An event's payload (one audio chunk).
    pub max_payload_bytes: usize,
    /// Connections open at once on this listener.
    pub max_connections: usize,
    /// Events a connection may send per second.
    pub max_events_per_sec: u32,
    /// Seconds a connection may stay silent.
    pub idle_secs: u64,
    /// Seconds from the start of an utterance (audio in, or a streamed synthesis) to its
    /// end.
    pub utterance_secs: u64,
    /// Seconds of audio one utterance may carry (the tier's upload cap applies too).
    pub max_audio_secs: u32,
    /// Characters a streamed synthesis may hold before a sentence ends.
    pub max_pending_chars: usize,
}

impl Default for WyomingLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_data_bytes: 64 * 1024,
            max_payload_bytes: 256 * 1024,
            max_connections: 16,
            max_events_per_sec: 200,
            idle_secs: 60,
            utterance_secs: 120,
            max_audio_secs: 60,
            max_pending_chars: 4096,
        }
    }
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10300))
}

fn default_tts_model() -> String {
    "tts-1".into()
}

fn default_asr_model() -> String {
    "whisper-1".into()
}
