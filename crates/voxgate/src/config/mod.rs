//! The one typed configuration tree: embedded defaults → TOML file → `VOXGATE_*` environment
//! → flags, validated once at start-up. This is the only module that reads the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;

mod console;
mod data;
mod engines;
mod local;
mod policy;
mod remote;
mod scope;
mod server;
mod validate;
mod wyoming;

pub use console::{ConsoleConfig, MAX_IDLE_SECS, MAX_SESSION_SECS};
pub use data::{AuditConfig, CacheConfig, RetentionConfig, StorageConfig};
pub use engines::{EngineConfig, InstructionsPolicy, ModelConfig};
pub use local::{Program, SandboxConfig, SubprocessConfig, run_as};
pub use policy::{
    LimitsConfig, Metric, OnBackendError, Period, QuotaRule, RateRule, RateSubject, TierConfig,
};
pub use remote::{
    BreakerSettings, ElevenLabsConfig, HttpConfig, OpenAiConfig, PollinationsConfig, RemoteAudio,
    elevenlabs_pcm_rate,
};
pub use scope::{Scope, join as join_scopes, parse_list as parse_scopes};
use serde::{Deserialize, Serialize};
pub use server::{AdminConfig, Cidr, CorsConfig, ServerConfig, TlsConfig, UnixSocketConfig};
pub use wyoming::{WyomingConfig, WyomingLimits};

/// The commented defaults, as shipped.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Longest model, engine or voice name.
const MAX_NAME_LEN: usize = 64;

/// Whether `name` is a plausible identifier (a model, engine or voice name): ASCII letters,
/// digits, `.`, `_`, `-`, not starting with `.` (so `..` and hidden names are out), at most
/// 64 characters. Names are keys in tables, never paths.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The environment variable naming a configuration file.
const CONFIG_FILE_VAR: &str = "VOXGATE_CONFIG";

/// Everything voxgate can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where state lives: the SQLite database, the generated pepper, temporary files.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub speech: SpeechConfig,
    /// Engines by id.
    pub engines: BTreeMap<String, EngineConfig>,
    /// Models clients may name, by id.
    pub models: BTreeMap<String, ModelConfig>,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    /// The web console (admin listener) and the playground (public listener).
    #[serde(default)]
    pub console: ConsoleConfig,
    pub limits: LimitsConfig,
    /// Tiers by name: what keys of each tier may do.
    pub tiers: BTreeMap<String, TierConfig>,
    pub text: TextConfig,
    pub transcription: TranscriptionConfig,
    pub voices: VoicesConfig,
    pub storage: StorageConfig,
    pub cache: CacheConfig,
    pub audit: AuditConfig,
    pub retention: RetentionConfig,
    pub alerts: AlertsConfig,
    pub sandbox: SandboxConfig,
    /// Wyoming listeners by name (none by default).
    #[serde(default)]
    pub wyoming: BTreeMap<String, WyomingConfig>,
}

/// In-process alert rules (0 turns a rule off).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    pub enabled: bool,
    pub interval_secs: u64,
    pub auth_failures_per_min: u64,
    pub rate_limited_per_min: u64,
    pub provider_failures_per_min: u64,
    /// Free space under the data directory.
    pub min_disk_free_mb: u64,
    /// Resident memory of the process.
    pub max_rss_mb: u64,
}

/// The text pipeline's settings shared by every tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Zero-width characters: "reject", "strip" or "allow".
    pub zero_width: ZeroWidthPolicy,
    /// Whole words refused for tiers with `block_profanity` (case-insensitive).
    pub blocked_words: Vec<String>,
    /// A file with one blocked word or phrase per line, added to `blocked_words`.
    pub blocked_words_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroWidthPolicy {
    Reject,
    Strip,
    Allow,
}

/// `POST /v1/audio/transcriptions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptionConfig {
    /// Longest `prompt` accepted, in characters.
    pub max_prompt_chars: usize,
    /// Silero VAD's graph (`scripts/fetch-models`), loaded on first use by
    /// `chunking_strategy`; checked against its manifest first.
    pub vad_model_dir: PathBuf,
    /// The directory holding ONNX Runtime (Piper's), which runs the VAD graph.
    pub onnx_runtime_dir: PathBuf,
    pub realtime: RealtimeConfig,
}

/// `GET /v1/realtime?intent=transcription` and its ephemeral client secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    pub enabled: bool,
    /// Sessions open on this instance, all callers together.
    pub max_sessions: usize,
    /// A session's whole life.
    pub max_session_secs: u64,
    /// A session without a client event for this long is closed.
    pub idle_secs: u64,
    /// The largest client event, in bytes as sent.
    pub max_event_bytes: usize,
    /// Audio one turn may hold before it is committed.
    pub max_turn_secs: u32,
    /// Server events queued for a client that is not reading before the session closes.
    pub send_buffer_events: usize,
    /// Audio seconds reserved against quotas at a time.
    pub quota_increment_secs: u32,
    /// A client secret's lifetime when the request names none.
    pub secret_default_secs: u64,
    /// The longest lifetime a client secret may ask for.
    pub secret_max_secs: u64,
}

/// The shortest lifetime a client secret may ask for (OpenAI's bound).
pub const MIN_SECRET_SECS: u64 = 10;

/// Stored voice references (cloning inputs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoicesConfig {
    /// Shortest and longest reference clip, in seconds of decoded audio.
    pub min_secs: f64,
    pub max_secs: f64,
    /// Longest voice name, in characters.
    pub max_name_chars: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Empty: SQLite at `<data_dir>/voxgate.db`. Or `sqlite://PATH`, or `postgres://…`.
    pub url: SecretString,
    /// The most one store operation on a request's path may take; beyond it the store
    /// counts as unavailable (503 `store_unavailable`).
    pub timeout_ms: u64,
    /// How long a key verified before the store became unavailable keeps working while it
    /// is (0: not at all). Revocations need the store, so none is missed meanwhile.
    pub outage_grace_secs: u64,
    /// How long a quota reservation lives without renewal (see `limits::quota`).
    pub hold_lease_secs: u64,
    /// How often live reservations are renewed and dead holders' reconciled.
    pub hold_renew_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The HMAC pepper (at least 32 bytes), usually from `VOXGATE_AUTH__PEPPER`.
    #[serde(default)]
    pub pepper: Option<SecretString>,
    /// A file holding the pepper. Empty: `<data_dir>/secrets/pepper`, created on first use.
    pub pepper_file: PathBuf,
    /// How long a verified key may be served from the cache (the revocation delay bound).
    pub cache_ttl_ms: u64,
    /// Failed authentications from one source within the window before it is blocked.
    pub failure_threshold: u32,
    pub failure_window_secs: u64,
    /// First block; doubles on each repeat, up to `max_block_secs`.
    pub block_secs: u64,
    pub max_block_secs: u64,
    /// How much of the client address usage tracking keeps.
    pub client_ip: IpTracking,
    /// How long a rotated key keeps working.
    pub rotation_grace_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpTracking {
    /// The whole address.
    Full,
    /// IPv4 /24 and IPv6 /48 (the host part zeroed).
    Truncated,
    /// Not kept.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// The security-event stream (target `voxgate::security`) is also appended, as JSON
    /// lines, to this file (0600). Empty: `<data_dir>/security.log`; "-": not written.
    pub security_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechConfig {
    pub max_input_chars: usize,
    pub max_instructions_chars: usize,
    /// 0 means one per CPU.
    pub encoder_threads: usize,
    /// Limits for SSML input (tiers with `ssml = true`).
    pub ssml: SsmlConfig,
}

/// Bounds on SSML documents; values beyond them are refused or clamped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsmlConfig {
    pub max_bytes: usize,
    pub max_nodes: u32,
    pub max_depth: usize,
    /// One `<break>` is clamped to this.
    pub max_break_ms: u32,
    /// All breaks together are clamped to this.
    pub max_total_break_ms: u32,
    /// `<prosody rate>` is clamped to this range (a multiple of normal speed).
    pub min_rate: f32,
    pub max_rate: f32,
}

impl SsmlConfig {
    pub fn limits(&self) -> voxgate_input::ssml::SsmlLimits {
        voxgate_input::ssml::SsmlLimits {
            max_nodes: self.max_nodes,
            max_depth: self.max_depth,
            max_break_ms: self.max_break_ms,
            max_total_break_ms: self.max_total_break_ms,
            min_rate: self.min_rate,
            max_rate: self.max_rate,
            max_bytes: self.max_bytes,
        }
    }
}

/// Values given on the command line; `None` leaves the configured value alone.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub bind: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
}

/// A configuration that cannot be used, naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Loads defaults → file → environment → flags, then validates.
    #[allow(
        clippy::disallowed_methods,
        reason = "the config module owns the environment"
    )]
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = overrides
            .config_file
            .clone()
            .or_else(|| std::env::var_os(CONFIG_FILE_VAR).map(PathBuf::from));
        let env = Env::prefixed("VOXGATE_").ignore(&["CONFIG"]).split("__");
        let mut config = Self::from_sources(file.as_deref(), Some(env), overrides)?;
        config.resolve_secrets(|name| std::env::var(name).ok());
        Ok(config)
    }

    /// Fills each remote provider's key from the environment variable its `api_key_env`
    /// names (`lookup` is `std::env::var` in [`Config::load`]; tests pass their own).
    pub fn resolve_secrets(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        for engine in self.engines.values_mut() {
            let Some((_, _, var)) = engine.remote() else {
                continue;
            };
            let key = (!var.is_empty())
                .then(|| lookup(var))
                .flatten()
                .filter(|k| !k.is_empty())
                .map(SecretString::from);
            engine.set_api_key(key);
        }
    }

    /// The embedded defaults alone (plus flags), ignoring the environment: for tests and
    /// `config print-default` checks.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_sources(None, None, &Overrides::default())
    }

    /// Parses a complete TOML document layered over the defaults.
    pub fn from_toml(toml: &str) -> Result<Self, ConfigError> {
        Self::from_toml_layers(&[toml])
    }

    /// Several TOML documents layered over the defaults, later ones winning.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Self, ConfigError> {
        let figment = layers
            .iter()
            .fold(Figment::from(Toml::string(DEFAULT_TOML)), |f, layer| {
                f.merge(Toml::string(layer))
            });
        Self::extract(figment)
    }

    fn from_sources(
        file: Option<&Path>,
        env: Option<Env>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(invalid(
                    "--config",
                    format!("{} is not a file", file.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        if let Some(env) = env {
            figment = figment.merge(env);
        }
        if let Some(bind) = overrides.bind {
            figment = figment.merge(Serialized::default("server.bind", bind));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        if let Some(format) = overrides.log_format {
            figment = figment.merge(Serialized::default("log.format", format));
        }
        Self::extract(figment)
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }
}

/// Number of CPUs, for "0 means one per CPU" settings.
pub fn threads_or_cpus(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid_and_safe() {
        let config = Config::defaults().expect("defaults");
        assert!(
            config.server.bind.ip().is_loopback(),
            "binds loopback by default"
        );
        assert_eq!(config.speech.max_input_chars, 4096);
        assert_eq!(config.log.format, LogFormat::Json);
        assert!(config.models.contains_key("tts-1"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml("[server]\nbindd = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("bindd"), "{err}");
        let err =
            Config::from_toml("[engines.flite]\nkind = \"flite\"\nthreads = 1\nshell = \"sh\"")
                .unwrap_err();
        assert!(err.to_string().contains("shell"), "{err}");
    }

    #[test]
    fn wyoming_listeners_are_loopback_or_allow_listed_and_bound_to_a_key() {
        let key = "abcdefghijklmnopqrstuvwx";
        let ok = Config::from_toml(&format!("[wyoming.home]\nkey_id = \"{key}\"")).expect("ok");
        let home = &ok.wyoming["home"];
        assert!(home.bind.ip().is_loopback(), "loopback by default");
        assert_eq!(home.bind.port(), 10300);
        // Off loopback without an allow-list: refused, naming the key.
        let err = Config::from_toml(&format!(
            "[wyoming.home]\nkey_id = \"{key}\"\nbind = \"0.0.0.0:10300\""
        ))
        .unwrap_err();
        assert!(err.to_string().contains("wyoming.home.bind"), "{err}");
        assert!(err.to_string().contains("allow"), "{err}");
        // With one, accepted; a malformed block is named.
        Config::from_toml(&format!(
            "[wyoming.home]\nkey_id = \"{key}\"\nbind = \"0.0.0.0:10300\"\nallow = [\"192.168.1.0/24\"]"
        ))
        .expect("allow-listed");
        let err = Config::from_toml(&format!(
            "[wyoming.home]\nkey_id = \"{key}\"\nbind = \"0.0.0.0:10300\"\nallow = [\"192.168.1.0/99\"]"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("wyoming.home.allow"), "{err}");
        // No key, a malformed key id, an unknown model, a zero cap, a shared address.
        assert!(Config::from_toml("[wyoming.home]").is_err());
        let err = Config::from_toml("[wyoming.home]\nkey_id = \"vg_abc\"").unwrap_err();
        assert!(err.to_string().contains("wyoming.home.key_id"), "{err}");
        let err = Config::from_toml(&format!(
            "[wyoming.home]\nkey_id = \"{key}\"\ntts_model = \"nope\""
        ))
        .unwrap_err();
        assert!(err.to_string().contains("wyoming.home.tts_model"), "{err}");
        let err = Config::from_toml(&format!(
            "[wyoming.home]\nkey_id = \"{key}\"\nasr_model = \"tts-1\""
        ))
        .unwrap_err();
        assert!(err.to_string().contains("transcription model"), "{err}");
        let err = Config::from_toml(&format!(
            "[wyoming.home]\nkey_id = \"{key}\"\n[wyoming.home.limits]\nidle_secs = 0"
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("wyoming.home.limits.idle_secs"),
            "{err}"
        );
        let err = Config::from_toml(&format!(
            "[wyoming.home]\nkey_id = \"{key}\"\nbind = \"127.0.0.1:8080\""
        ))
        .unwrap_err();
        assert!(err.to_string().contains("wyoming.home.bind"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let err = Config::from_toml("[models.x]\nengine = \"nope\"\ninstructions = \"ignore\"")
            .unwrap_err();
        assert!(err.to_string().contains("models.x.engine"), "{err}");
        let err = Config::from_toml("[engines.flite.voices]\n\"../x\" = \"slt\"").unwrap_err();
        assert!(err.to_string().contains("engines.flite.voices"), "{err}");
        let err = Config::from_toml("[server]\nheader_read_timeout_secs = 0").unwrap_err();
        assert!(
            err.to_string().contains("server.header_read_timeout_secs"),
            "{err}"
        );
        for (toml, key) in [
            ("[console]\nidle_secs = 1801", "console.idle_secs"),
            ("[console]\nsession_secs = 43201", "console.session_secs"),
            (
                "[console]\nsession_secs = 60\nidle_secs = 61",
                "console.idle_secs",
            ),
            (
                "[console]\nconsole_origin = \"https://admin.example/console/\"",
                "console.console_origin",
            ),
            (
                "[console]\nplayground_origin = \"javascript:alert(1)\"",
                "console.playground_origin",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        assert!(
            Config::from_toml("[console]\nconsole_origin = \"https://admin.example:8443\"").is_ok()
        );
        // Two periods of one metric would share counters where their windows start together.
        let tiers = ["guest", "basic", "premium", "admin"]
            .iter()
            .map(|t| format!("[tiers.{t}]\nquotas = [{{ per = \"account\", metric = \"characters\", period = \"day\", limit = 10 }}, {{ per = \"account\", metric = \"characters\", period = \"hour\", limit = 5 }}]\n"))
            .collect::<String>();
        let err = Config::from_toml(&tiers).unwrap_err();
        assert!(err.to_string().contains(".quotas"), "{err}");
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail API returns its own error type"
    )]
    fn environment_overrides_file_and_flags_override_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "voxgate.toml",
                "[server]\nbind = \"127.0.0.1:1111\"\n[speech]\nmax_input_chars = 100",
            )?;
            jail.set_env("VOXGATE_CONFIG", "voxgate.toml");
            jail.set_env("VOXGATE_SERVER__BIND", "127.0.0.1:2222");
            let config = Config::load(&Overrides::default()).expect("load");
            assert_eq!(config.server.bind.port(), 2222, "env beats file");
            assert_eq!(config.speech.max_input_chars, 100, "file beats defaults");
            let flags = Overrides {
                bind: Some("127.0.0.1:3333".parse().expect("addr")),
                ..Overrides::default()
            };
            assert_eq!(
                Config::load(&flags).expect("load").server.bind.port(),
                3333,
                "flags beat env"
            );
            jail.set_env("VOXGATE_SERVER__BINDD", "x");
            let err = Config::load(&Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("bindd"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn lower_tiers_must_be_within_higher_ones() {
        let err = Config::from_toml("[tiers.guest]\nrank = 0\nscopes = [\"models.read\", \"speech\", \"admin\"]\nmodels = [\"tts-1\"]\nvoices = [\"alloy\"]\nengines = [\"*\"]\nmax_input_chars = 500")
            .unwrap_err();
        assert!(err.to_string().contains("tiers.guest"), "{err}");
        let err = Config::from_toml("[tiers.basic]\nrank = 1\nscopes = [\"models.read\"]\nmodels = [\"*\"]\nvoices = [\"*\"]\nengines = [\"*\"]\nmax_input_chars = 2000")
            .unwrap_err();
        assert!(
            err.to_string().contains("tiers.guest"),
            "guest now allows speech that basic lacks: {err}"
        );
    }

    /// A lower tier must keep every limit, quota and content rule of the tiers above it:
    /// otherwise a key narrowed to it would escape them.
    #[test]
    fn lower_tiers_nest_on_limits_quotas_and_content_rules() {
        for (layer, what) in [
            (
                "[tiers.guest]\nrate_limits = [{ per = \"account\", period = \"day\", limit = 500 }]",
                "guest drops basic's per-minute account limit",
            ),
            (
                "[tiers.guest]\nrate_limits = [{ per = \"account\", period = \"minute\", limit = 61 }, { per = \"key\", period = \"second\", limit = 5 }]",
                "guest allows 61 a minute where basic allows 60",
            ),
            (
                "[tiers.guest]\nquotas = [{ per = \"account\", metric = \"characters\", period = \"day\", limit = 20000 }]",
                "guest drops basic's audio and transcription quotas",
            ),
            ("[tiers.basic]\nredact_pii = true", "guest does not redact"),
            (
                "[tiers.premium]\nblock_spam = true",
                "basic does not block spam",
            ),
            (
                "[tiers.premium]\nblock_profanity = true",
                "basic does not block words",
            ),
            ("[tiers.guest]\ncache = true", "basic does not cache"),
        ] {
            let err = Config::from_toml(layer).expect_err(what);
            assert!(
                err.to_string().contains("rank is not above"),
                "{what}: {err}"
            );
        }
        // The same rules on every tier nest.
        let every = ["guest", "basic", "premium", "admin"]
            .map(|t| format!("[tiers.{t}]\nredact_pii = true\nblock_spam = true\n"))
            .concat();
        Config::from_toml(&every).expect("nested");
    }

    #[test]
    fn layers_apply_in_order() {
        let config = Config::from_toml("[server]\nbind = \"127.0.0.1:9999\"").expect("toml");
        assert_eq!(config.server.bind.port(), 9999);
        let overrides = Overrides {
            bind: Some("127.0.0.1:7777".parse().expect("addr")),
            ..Overrides::default()
        };
        let config = Config::from_sources(None, None, &overrides).expect("flags");
        assert_eq!(config.server.bind.port(), 7777);
    }
}
