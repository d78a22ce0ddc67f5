//! The services every front door calls: speech, transcription, stored voices, account export
//! and erasure, and the retention sweeper.
//!
//! A front door (the HTTP API today; Wyoming and the realtime WebSocket next) authenticates
//! its caller into a [`Principal`], parses its wire format into an order, and calls one
//! function here. Everything a request costs lives here and nowhere else: the caller's
//! concurrency slots, the quota reservation, the cache, admission on each engine actually
//! tried, settlement at what was delivered (also when the client hangs up), metrics of the
//! decisions and the audit of denials. Services return [`crate::error::Error`]; only the
//! front door turns it into its own wire form.
//!
//! [`Services`] is the one explicit value holding every backend of an application (the
//! store, audit, vault, cache, catalog, limiter, concurrency, its own metrics registry),
//! built once by [`Services::build`]; nothing reaches one backend through another.

pub mod audit;
pub mod caller;
pub mod live;
mod meter;
pub(crate) mod privacy;
pub mod retention;
pub mod speech;
pub mod transcription;
pub(crate) mod voices;
pub mod web;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use voxgate_engine::BlockingPool;
use voxgate_input::text::{TextPolicy, WordList, ZeroWidth};

use crate::config::{self, Config, LimitsConfig, TierConfig, ZeroWidthPolicy};
use crate::data::audit::{Actor, Audit, AuditEvent};
use crate::data::cache::SpeechCache;
use crate::data::clones::VoiceClones;
use crate::data::journal::Journal;
use crate::data::spool::{UploadDir, WorkDir};
use crate::data::store::{self, GuardedStore, Store};
use crate::data::vault::Vault;
use crate::data::voices::VoiceLibrary;
use crate::engines::Catalog;
use crate::error::Error;
use crate::identity::accounts::Accounts;
use crate::identity::auth::{self, Authenticator, Pepper, Principal};
use crate::limits::quota::{HoldBook, Leases};
use crate::limits::{Concurrency, FallbackLimiter, Gate, MemoryLimiter, RateLimiter, RedisLimiter};
use crate::observe::Metrics;

/// Everything an application's front doors share, built once.
#[derive(Debug)]
pub struct Services {
    pub config: Arc<Config>,
    /// This application's counters and gauges (never shared with another application).
    pub metrics: Arc<Metrics>,
    /// The store, behind its breaker and time bounds (`store_guard`, the same object, says
    /// whether it answers).
    pub store: Arc<dyn Store>,
    pub store_guard: Arc<GuardedStore>,
    pub audit: Audit,
    /// Per-account data keys (sealing, and shredding at erasure).
    pub vault: Arc<Vault>,
    /// Encrypted speech responses, per account (tiers with `cache = true`).
    pub cache: Arc<SpeechCache>,
    /// Stored voice references, sealed at rest.
    pub voices: VoiceLibrary,
    /// The clones remote engines made of stored voices (recorded, sealed).
    pub clones: Arc<VoiceClones>,
    pub catalog: Arc<Catalog>,
    /// Runs audio encoding and decoding off the async workers.
    pub encoders: BlockingPool,
    pub auth: Arc<Authenticator>,
    pub accounts: Accounts,
    pub gate: Arc<Gate>,
    pub concurrency: Arc<Concurrency>,
    /// This instance's live quota reservations (renewed, so a crash never strands one).
    pub holds: Arc<HoldBook>,
    /// Engines whose failure was logged and that have not served since.
    pub failing_engines: Arc<speech::FailingEngines>,
    /// Where uploads are spooled (inside this process's own work directory).
    pub uploads: UploadDir,
    /// `text.blocked_words`, for tiers with `block_profanity`.
    pub blocked_words: Arc<WordList>,
    /// This process's temporary directory (uploads, sandbox runs); removed with it.
    pub work_dir: WorkDir,
    /// Places for live sessions on this instance (`transcription.realtime.max_sessions`).
    pub live_sessions: Arc<tokio::sync::Semaphore>,
    /// Turns true when the process stops: live sessions end (`stop_live`).
    pub(crate) live_stop: tokio::sync::watch::Sender<bool>,
    /// Silero VAD, loaded on first use (a failure is remembered until restart).
    pub(crate) vad: tokio::sync::OnceCell<Result<voxgate_piper::vad::SileroVad, String>>,
    /// One audit-log verification at a time (each reads and hashes the whole log).
    pub(crate) verifying: tokio::sync::Mutex<()>,
}

impl Services {
    /// Opens the store (migrated), loads the secrets, builds the engines, the limiter and the
    /// cache, and creates this process's work directory.
    pub async fn build(config: Config) -> anyhow::Result<Arc<Self>> {
        prepare_data_dir(&config.data_dir)?;
        let metrics = Arc::new(Metrics::new());
        let work_dir = WorkDir::create(&config.data_dir).with_context(|| {
            format!(
                "cannot create a work directory under {}",
                config.data_dir.display()
            )
        })?;
        let catalog = Arc::new(Catalog::build(&config, work_dir.path(), &metrics)?);
        let encoders = encoder_pool(&config);
        let (store, pepper) = open_store(&config).await?;
        let store_guard = Arc::new(GuardedStore::new(
            store,
            std::time::Duration::from_millis(config.database.timeout_ms),
            Arc::clone(&metrics),
        ));
        let store: Arc<dyn Store> = Arc::clone(&store_guard) as Arc<dyn Store>;
        let audit = Audit::new(Arc::clone(&store));
        let auth = Arc::new(
            Authenticator::new(
                Arc::clone(&store),
                audit.clone(),
                Arc::clone(&pepper),
                &config.auth,
                &config.tiers,
                Arc::clone(&metrics),
            )
            .with_outage_grace(std::time::Duration::from_secs(
                config.database.outage_grace_secs,
            )),
        );
        auth.spawn_usage_writer();
        let gate = Arc::new(Gate::new(
            limiter(&config.limits, &metrics).await?,
            &config.limits,
            Arc::clone(&metrics),
        ));
        let concurrency = Arc::new(concurrency(&config));
        let holds = HoldBook::new(
            Leases {
                lease: std::time::Duration::from_secs(config.database.hold_lease_secs),
                renew_every: std::time::Duration::from_secs(config.database.hold_renew_secs),
            },
            Journal::new(&config.data_dir),
        );
        let master = crate::data::secrets::load_or_create(
            config.storage.master_key.as_ref(),
            &config.storage.master_key_file,
            &config.data_dir,
            "master_key",
        )?;
        // Salts are trusted no longer than keys: an erasure elsewhere applies within that.
        let vault = Arc::new(Vault::new(
            &master,
            Arc::clone(&store),
            std::time::Duration::from_millis(config.auth.cache_ttl_ms),
        ));
        let voices = VoiceLibrary::new(Arc::clone(&store), Arc::clone(&vault));
        let clones = Arc::new(VoiceClones::new(Arc::clone(&store), Arc::clone(&vault)));
        let resealed = voices.reseal_legacy().await?;
        if resealed > 0 {
            tracing::info!(
                voices = resealed,
                "re-sealed stored voices from the unsalted format under their accounts' keys"
            );
        }
        let cache_dir = config.data_dir.join("cache");
        let cache = Arc::new(
            SpeechCache::open(&cache_dir, Arc::clone(&vault), config.cache.clone()).with_context(
                || format!("cannot open the speech cache at {}", cache_dir.display()),
            )?,
        );
        let blocked_words = Arc::new(blocked_words(&config.text)?);
        let accounts = Accounts::new(
            Arc::clone(&store),
            audit.clone(),
            pepper,
            config.tiers.clone(),
            config.auth.rotation_grace_secs,
        );
        let live_sessions = Arc::new(tokio::sync::Semaphore::new(
            config.transcription.realtime.max_sessions,
        ));
        Ok(Arc::new(Self {
            config: Arc::new(config),
            metrics,
            store,
            store_guard,
            audit,
            vault,
            cache,
            voices,
            clones,
            catalog,
            encoders,
            auth,
            accounts,
            gate,
            concurrency,
            holds,
            failing_engines: Arc::default(),
            uploads: work_dir.uploads(),
            blocked_words,
            work_dir,
            vad: tokio::sync::OnceCell::new(),
            verifying: tokio::sync::Mutex::new(()),
            live_sessions,
            live_stop: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// The text pipeline's policy for a tier, with a length limit.
    pub fn text_policy(&self, tier: &TierConfig, max_chars: usize) -> TextPolicy {
        TextPolicy {
            max_chars,
            zero_width: match self.config.text.zero_width {
                ZeroWidthPolicy::Reject => ZeroWidth::Reject,
                ZeroWidthPolicy::Strip => ZeroWidth::Strip,
                ZeroWidthPolicy::Allow => ZeroWidth::Allow,
            },
            profanity: tier
                .block_profanity
                .then(|| Arc::clone(&self.blocked_words)),
            spam: tier.block_spam,
        }
    }

    /// The models the caller's tier may use.
    pub fn models_for<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> impl Iterator<Item = &'a crate::engines::Model> + 'a {
        self.catalog
            .models()
            .filter(|m| principal.tier.allows_model(&m.id))
    }

    /// One model, if it exists and the caller's tier may use it (a denial is audited).
    pub async fn model_for(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<&crate::engines::Model, Error> {
        let model = self.catalog.model(id).ok_or_else(|| {
            let shown: String = id.chars().filter(|c| !c.is_control()).take(64).collect();
            Error::invalid(
                "model",
                crate::error::Code::ModelNotFound,
                format!("The model `{shown}` does not exist."),
            )
        })?;
        if !principal.tier.allows_model(&model.id) {
            let err = Error::refused(
                crate::error::Code::ModelNotAllowed,
                format!("Your tier does not include the model `{}`.", model.id),
            );
            self.audit_denial(principal, "models", &err).await;
            return Err(err);
        }
        Ok(model)
    }

    /// Audits a refusal that denies the caller something (a 403: tier gates, scopes).
    pub async fn audit_denial(&self, principal: &Principal, operation: &str, err: &Error) {
        if let Error::Refused { code, .. } = err
            && code.spec().status == 403
            && let Some(reason) = code.as_str()
        {
            self.audit
                .record(
                    Actor::Key(principal.keyid.clone()),
                    Some(principal.source),
                    AuditEvent::AccessDenied {
                        keyid: principal.keyid.clone(),
                        route: operation.to_owned(),
                        reason,
                    },
                )
                .await;
        }
    }
}

/// Creates the data directory (0700) if needed. Nothing in it is removed: temporary files
/// are per process (see [`WorkDir`]), so any command may run beside a live server.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "data directory is accessible to other users");
    }
    Ok(())
}

/// The store (migrated) and the pepper.
pub async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Arc<Pepper>)> {
    use secrecy::ExposeSecret as _;
    let store = store::open(config.database.url.expose_secret(), &config.data_dir)
        .await
        .context("cannot open the database")?;
    let pepper = auth::load_pepper(&config.auth, &config.data_dir)?;
    Ok((store, Arc::new(pepper)))
}

/// The bounded pool audio encoding and decoding run on.
pub fn encoder_pool(config: &Config) -> BlockingPool {
    BlockingPool::new(config::threads_or_cpus(config.speech.encoder_threads))
}

/// The in-flight limits and engine queues the configuration describes.
pub fn concurrency(config: &Config) -> Concurrency {
    let limits = &config.limits;
    Concurrency::new(
        limits.max_in_flight,
        config.engines.keys().map(String::as_str),
        limits.engine_in_flight,
        limits.engine_queue_depth,
        std::time::Duration::from_millis(limits.engine_queue_wait_ms),
    )
}

/// `text.blocked_words` plus the lines of `text.blocked_words_file`.
fn blocked_words(config: &crate::config::TextConfig) -> anyhow::Result<WordList> {
    let mut words = config.blocked_words.clone();
    if !config.blocked_words_file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(&config.blocked_words_file).with_context(|| {
            format!(
                "cannot read text.blocked_words_file {}",
                config.blocked_words_file.display()
            )
        })?;
        words.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    Ok(WordList::new(words))
}

/// The configured rate limiter: in memory, or Redis behind the configured fallback.
pub async fn limiter(
    config: &LimitsConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<dyn RateLimiter>> {
    use secrecy::ExposeSecret as _;
    let backend = config.backend.expose_secret();
    if backend == "memory" {
        return Ok(Arc::new(MemoryLimiter::default()));
    }
    let timeout = std::time::Duration::from_millis(config.redis_timeout_ms);
    let redis = RedisLimiter::lazy(backend, "vg:rl", timeout)
        .context("limits.backend is not a usable Redis URL")?;
    // Connect before serving when Redis is up, so the first requests are decided by it; when
    // it is down, the fallback decides until it comes.
    if !redis.try_connect().await {
        tracing::warn!(target: "voxgate::security", event = "rate_limit_backend_failed", "rate-limit backend unreachable at start-up; falling back until it is");
    }
    Ok(Arc::new(FallbackLimiter::new(
        Arc::new(redis),
        config.on_backend_error,
        config.fallback_fraction,
        Arc::clone(metrics),
    )))
}
