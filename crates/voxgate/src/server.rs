//! Start-up and the listener: binds, serves HTTP/1.1 with a header-read timeout and a
//! connection cap, and shuts down gracefully, draining in-flight streams up to a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;
use voxgate_engine::BlockingPool;

use crate::accounts::Admin;
use crate::api::{self, AppState};
use crate::auth::{self, Authenticator, Pepper};
use crate::cache::SpeechCache;
use crate::config::{self, Config, LimitsConfig};
use crate::engines::Catalog;
use crate::limits::{Concurrency, FallbackLimiter, Gate, MemoryLimiter, RateLimiter, RedisLimiter};
use crate::store::{self, Store};
use crate::upload::UploadDir;
use crate::vault::Vault;
use crate::voices::VoiceLibrary;
use voxgate_input::text::WordList;

/// A bound, ready-to-run server: the public listener and, if enabled, the admin listener.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    admin: Option<(TcpListener, Router)>,
    config: Arc<Config>,
    state: AppState,
}

impl Application {
    /// Opens the store, builds engines and binds the listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        prepare_data_dir(&config)?;
        let state = app_state(config).await?;
        let config = Arc::clone(&state.config);
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("cannot bind {}", config.server.bind))?;
        let admin = if config.admin.enabled {
            let admin_listener = TcpListener::bind(config.admin.bind)
                .await
                .with_context(|| format!("cannot bind the admin listener {}", config.admin.bind))?;
            Some((admin_listener, api::admin_router(state.clone())))
        } else {
            None
        };
        Ok(Self {
            listener,
            router: api::router(state.clone()),
            admin,
            config,
            state,
        })
    }

    /// The public listener's address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, if it is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The shared state (store, authenticator, administration).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains connections for up to the configured
    /// grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let auth = Arc::clone(&self.state.auth);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let admin = self.admin.map(|(listener, router)| {
            let config = Arc::clone(&self.config);
            let stopped = stopped.clone();
            tokio::spawn(serve(listener, router, config, stopped))
        });
        let public = serve(self.listener, self.router, self.config, stopped);
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let (result, ()) = tokio::join!(public, signal);
        if let Some(admin) = admin {
            admin.await??;
        }
        // Usage buffered since the last write is not lost on a clean stop.
        auth.flush_usage().await;
        result
    }
}

/// Serves one listener until `stopped` turns true, then drains its connections.
async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<Config>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    {
        let server = &config.server;
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout())
            .keep_alive(true);
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(server.max_connections));
        let mut shutdown = std::pin::pin!(shutdown);
        tracing::info!(addr = %listener.local_addr()?, "listening");
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&connections).acquire_owned() => permit?,
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let router = router.clone();
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        let grace = server.shutdown_grace();
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down, draining connections"
        );
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections drained"),
            () = tokio::time::sleep(grace) => tracing::warn!("grace period over, dropping connections"),
        }
        Ok(())
    }
}

/// The shared state, built once: engines, the store (migrated), the pepper, the
/// authenticator and administration.
pub async fn app_state(config: Config) -> anyhow::Result<AppState> {
    let (catalog, encoders) = speech_parts(&config)?;
    let (store, pepper) = identity_parts(&config).await?;
    let auth = Arc::new(Authenticator::new(
        Arc::clone(&store),
        Arc::clone(&pepper),
        &config.auth,
        &config.tiers,
    ));
    auth.spawn_usage_writer();
    let gate = Arc::new(Gate::new(limiter(&config.limits).await?, &config.limits));
    let limits = &config.limits;
    let concurrency = Arc::new(Concurrency::new(
        limits.max_in_flight,
        config.engines.keys().map(String::as_str),
        limits.engine_in_flight,
        limits.engine_queue_depth,
        std::time::Duration::from_millis(limits.engine_queue_wait_ms),
    ));
    let master = crate::secrets::load_or_create(
        config.storage.master_key.as_ref(),
        &config.storage.master_key_file,
        &config.data_dir,
        "master_key",
    )?;
    let vault = Arc::new(Vault::new(&master));
    let voices = VoiceLibrary::new(Arc::clone(&store), Arc::clone(&vault));
    let cache_dir = config.data_dir.join("cache");
    let cache = Arc::new(
        SpeechCache::open(&cache_dir, vault, config.cache.clone())
            .with_context(|| format!("cannot open the speech cache at {}", cache_dir.display()))?,
    );
    let uploads = UploadDir::prepare(&config.data_dir)
        .with_context(|| format!("cannot prepare uploads under {}", config.data_dir.display()))?;
    let blocked_words = Arc::new(blocked_words(&config.text)?);
    let admin = Admin::new(
        store,
        pepper,
        config.tiers.clone(),
        config.auth.rotation_grace_secs,
    );
    Ok(AppState {
        config: Arc::new(config),
        catalog,
        encoders,
        auth,
        admin,
        gate,
        concurrency,
        voices,
        uploads,
        blocked_words,
        cache,
    })
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
pub async fn limiter(config: &LimitsConfig) -> anyhow::Result<Arc<dyn RateLimiter>> {
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
    )))
}

/// What speaking needs: the engine catalog and the encoder pool (the CLI's `say` uses these
/// without a store).
pub fn speech_parts(config: &Config) -> anyhow::Result<(Arc<Catalog>, BlockingPool)> {
    let catalog = Catalog::build(config)?;
    let encoders = BlockingPool::new(config::threads_or_cpus(config.speech.encoder_threads));
    Ok((Arc::new(catalog), encoders))
}

/// The store (migrated) and the pepper.
pub async fn identity_parts(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Arc<Pepper>)> {
    use secrecy::ExposeSecret as _;
    let store = store::open(config.database.url.expose_secret(), &config.data_dir)
        .await
        .context("cannot open the database")?;
    let pepper = auth::load_pepper(&config.auth, &config.data_dir)?;
    Ok((store, Arc::new(pepper)))
}

/// Creates the data directory (0700) and sweeps temporary files left by a previous run.
pub fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let dir = &config.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "data directory is accessible to other users");
    }
    let tmp = dir.join("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot sweep {}", tmp.display()))?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
