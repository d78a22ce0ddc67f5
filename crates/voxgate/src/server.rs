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

use crate::api::{self, AppState};
use crate::config::{self, Config};
use crate::engines::Catalog;

/// A bound, ready-to-run server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    config: Arc<Config>,
}

impl Application {
    /// Builds engines and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let state = app_state(config)?;
        let config = Arc::clone(&state.config);
        prepare_data_dir(&config)?;
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("cannot bind {}", config.server.bind))?;
        Ok(Self {
            listener,
            router: api::router(state),
            config,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains connections for up to the configured
    /// grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let server = &self.config.server;
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout())
            .keep_alive(true);
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(server.max_connections));
        let mut shutdown = std::pin::pin!(shutdown);
        tracing::info!(addr = %self.local_addr()?, "listening");
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&connections).acquire_owned() => permit?,
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
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
            let router = self.router.clone();
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
        drop(self.listener);
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

/// The shared state, built once.
pub fn app_state(config: Config) -> anyhow::Result<AppState> {
    let catalog = Catalog::build(&config)?;
    let encoders = BlockingPool::new(config::threads_or_cpus(config.speech.encoder_threads));
    Ok(AppState {
        config: Arc::new(config),
        catalog: Arc::new(catalog),
        encoders,
    })
}

/// Creates the data directory (0700) and sweeps temporary files left by a previous run.
fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
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
