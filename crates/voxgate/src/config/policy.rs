//! The policy part of the configuration: tiers (what keys may do) and limits (how much).

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// What one tier may do. `"*"` in a list means every configured entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Order of privilege: a key may take a tier of lower or equal rank than its account's.
    pub rank: u32,
    pub scopes: Vec<super::Scope>,
    pub models: Vec<String>,
    pub voices: Vec<String>,
    pub engines: Vec<String>,
    pub max_input_chars: usize,
    /// Request rate limits for keys of this tier.
    #[serde(default)]
    pub rate_limits: Vec<RateRule>,
    /// Durable budgets per period (characters, audio seconds, requests).
    #[serde(default)]
    pub quotas: Vec<QuotaRule>,
    /// Speech requests one key may have in flight at once.
    pub max_concurrent_per_key: usize,
    /// Speech requests one account (all its keys) may have in flight at once.
    pub max_concurrent_per_account: usize,
    /// Whether `input_format: "ssml"` is accepted.
    #[serde(default)]
    pub ssml: bool,
    /// Replace e-mail addresses, phone and card numbers before text leaves for a remote
    /// provider.
    #[serde(default)]
    pub redact_pii: bool,
    /// Refuse input containing a word of `text.blocked_words`.
    #[serde(default)]
    pub block_profanity: bool,
    /// Refuse input that looks like spam (long repeated runs, many links).
    #[serde(default)]
    pub block_spam: bool,
    /// Largest upload (transcription file, voice sample), enforced while reading.
    #[serde(default = "TierConfig::default_upload_bytes")]
    pub max_upload_bytes: u64,
    /// Longest upload, in seconds of decoded audio.
    #[serde(default = "TierConfig::default_upload_secs")]
    pub max_upload_secs: u32,
    /// Voice references one account may keep.
    #[serde(default)]
    pub max_stored_voices: u32,
    /// Whether speech responses are kept in (and served from) the account's encrypted cache.
    #[serde(default)]
    pub cache: bool,
}

/// Where rate limits are kept and what happens when that store is away.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `memory` (this instance only) or a `redis://` URL shared by every instance.
    pub backend: SecretString,
    pub on_backend_error: OnBackendError,
    /// With `on_backend_error = "local"`, the fraction of each limit an instance grants alone.
    pub fallback_fraction: f64,
    pub redis_timeout_ms: u64,
    /// Limits per client address, for every request (authenticated or not).
    pub per_ip: Vec<RateRule>,
    /// Limits per client address for requests without a valid key (stricter).
    pub per_ip_unauthenticated: Vec<RateRule>,
    /// Rate-limit violations within a minute before the offender is blocked.
    pub violations_before_block: u32,
    /// First block; doubles on repeat up to `max_block_secs`.
    pub block_secs: u64,
    pub max_block_secs: u64,
    /// Speech requests in flight on this instance, all callers together.
    pub max_in_flight: usize,
    /// Per engine: requests synthesizing at once, requests waiting behind them, and how long
    /// one may wait before a 503.
    pub engine_in_flight: usize,
    pub engine_queue_depth: usize,
    pub engine_queue_wait_ms: u64,
}

/// One rate limit: `limit` requests per `period`, bursts up to `burst` (default `limit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// What the limit counts by: `key` or `account` (tier rules), ignored for per-IP rules.
    #[serde(default = "RateRule::default_per")]
    pub per: RateSubject,
    pub period: Period,
    pub limit: u64,
    #[serde(default)]
    pub burst: Option<u64>,
    /// Only for this route (e.g. `/v1/audio/speech`); all routes when absent.
    #[serde(default)]
    pub route: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RateSubject {
    Key,
    Account,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
}

impl Period {
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86_400,
        })
    }
}

/// What to do while the shared rate-limit backend is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendError {
    /// Fail safe: decide locally with a lower allowance.
    Local,
    /// Refuse everything.
    Deny,
    /// Let everything through (explicitly chosen; not recommended).
    Allow,
}

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Input characters synthesized.
    Characters,
    /// Seconds of audio produced.
    AudioSeconds,
    /// Requests served.
    Requests,
    /// Seconds of uploaded audio transcribed (counted from decoded frames).
    TranscribedSeconds,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Characters => "characters",
            Metric::AudioSeconds => "audio_seconds",
            Metric::Requests => "requests",
            Metric::TranscribedSeconds => "transcribed_seconds",
        }
    }
}

/// One budget: `limit` of `metric` per calendar `period` (UTC), per account or key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    #[serde(default = "RateRule::default_per")]
    pub per: RateSubject,
    pub metric: Metric,
    pub period: Period,
    pub limit: u64,
}

impl RateRule {
    fn default_per() -> RateSubject {
        RateSubject::Account
    }

    /// Whether this rule counts what `other` counts (same subject, period and route) and
    /// allows no more (limit and burst).
    pub fn is_within(&self, other: &RateRule) -> bool {
        (self.per, self.period, &self.route) == (other.per, other.period, &other.route)
            && self.limit <= other.limit
            && self.burst.unwrap_or(self.limit) <= other.burst.unwrap_or(other.limit)
    }

    /// A stable label for the bucket key.
    pub fn label(&self) -> String {
        format!(
            "{:?}{}b{}{}",
            self.period,
            self.limit,
            self.burst.unwrap_or(self.limit),
            self.route.as_deref().unwrap_or("")
        )
    }
}

impl TierConfig {
    fn default_upload_bytes() -> u64 {
        25 * 1024 * 1024
    }
    fn default_upload_secs() -> u32 {
        90
    }

    fn allows(list: &[String], item: &str) -> bool {
        list.iter().any(|e| e == "*" || e == item)
    }
    pub fn allows_model(&self, model: &str) -> bool {
        Self::allows(&self.models, model)
    }
    pub fn allows_voice(&self, voice: &str) -> bool {
        Self::allows(&self.voices, voice)
    }
    pub fn allows_engine(&self, engine: &str) -> bool {
        Self::allows(&self.engines, engine)
    }

    /// Whether everything this tier allows, `other` allows too. Tiers of lower rank must be
    /// within those of higher rank, so narrowing a key's tier can never widen it.
    pub fn is_within(&self, other: &TierConfig) -> bool {
        let list_within = |a: &[String], b: &[String]| {
            b.iter().any(|e| e == "*")
                || (!a.iter().any(|e| e == "*") && a.iter().all(|e| b.contains(e)))
        };
        self.scopes.iter().all(|s| other.scopes.contains(s))
            && list_within(&self.models, &other.models)
            && list_within(&self.voices, &other.voices)
            && list_within(&self.engines, &other.engines)
            && self.max_input_chars <= other.max_input_chars
            && self.max_concurrent_per_key <= other.max_concurrent_per_key
            && self.max_concurrent_per_account <= other.max_concurrent_per_account
            && (!self.ssml || other.ssml)
            && self.max_upload_bytes <= other.max_upload_bytes
            && self.max_upload_secs <= other.max_upload_secs
            && self.max_stored_voices <= other.max_stored_voices
            && (self.redact_pii || !other.redact_pii)
            && (self.block_profanity || !other.block_profanity)
            && (self.block_spam || !other.block_spam)
            && (!self.cache || other.cache)
            && other
                .rate_limits
                .iter()
                .all(|wide| self.rate_limits.iter().any(|narrow| narrow.is_within(wide)))
            && other.quotas.iter().all(|wide| {
                self.quotas.iter().any(|narrow| {
                    (narrow.per, narrow.metric, narrow.period)
                        == (wide.per, wide.metric, wide.period)
                        && narrow.limit <= wide.limit
                })
            })
    }
}
