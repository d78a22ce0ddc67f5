//! Start-up and the listener: binds, serves HTTP/1.1 with a header-read timeout and a
//! connection cap, and shuts down gracefully, draining in-flight streams up to a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::AppState;
use crate::config::Config;
use crate::service::Services;

/// A bound, ready-to-run server: the public listener and, if enabled, the admin listener.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    admin: Option<(TcpListener, Router, Option<Arc<super::tls::Tls>>)>,
    tls: Option<Arc<super::tls::Tls>>,
    tlog: Option<Arc<crate::data::audit::tlog::Tlog>>,
    unix: Option<(tokio::net::UnixListener, Arc<super::socket::PeerPolicy>)>,
    /// The Wyoming listeners (the other front door), by name.
    wyoming: Vec<crate::wyoming::Listener>,
    config: Arc<Config>,
    state: AppState,
}

impl Application {
    /// Opens the store, builds engines and binds the listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let state = Services::build(config).await?;
        let config = Arc::clone(&state.config);
        crate::engines::providers::install_crypto();
        let tls = if config.server.tls.enabled {
            Some(super::tls::Tls::load(&config.server.tls)?)
        } else {
            None
        };
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("cannot bind {}", config.server.bind))?;
        let unix = if config.server.unix_socket.path.as_os_str().is_empty() {
            None
        } else {
            Some(super::socket::bind(&config.server.unix_socket)?)
        };
        let admin = if config.admin.enabled {
            let admin_tls = if config.admin.tls.enabled {
                Some(super::tls::Tls::load(&config.admin.tls)?)
            } else {
                None
            };
            let admin_listener = TcpListener::bind(config.admin.bind)
                .await
                .with_context(|| format!("cannot bind the admin listener {}", config.admin.bind))?;
            Some((
                admin_listener,
                super::admin_router(Arc::clone(&state)),
                admin_tls,
            ))
        } else {
            None
        };
        let mut wyoming = Vec::new();
        for (name, listener) in &config.wyoming {
            wyoming.push(crate::wyoming::Listener::bind(name, listener, Arc::clone(&state)).await?);
        }
        Ok(Self {
            wyoming,
            listener,
            router: super::router(Arc::clone(&state)),
            admin,
            tls,
            tlog: Some(crate::data::audit::tlog::Tlog::open(
                &config.audit,
                &config.data_dir,
                Arc::clone(&state.store),
            )?),
            unix,
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
        self.admin
            .as_ref()
            .and_then(|(l, _, _)| l.local_addr().ok())
    }

    /// The address of the Wyoming listener `name`, if it is configured.
    pub fn wyoming_addr(&self, name: &str) -> Option<SocketAddr> {
        self.wyoming
            .iter()
            .find(|l| l.name() == name)
            .and_then(|l| l.local_addr().ok())
    }

    /// The application's services (store, authenticator, administration…).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains connections for up to the configured
    /// grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let auth = Arc::clone(&self.state.auth);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut reloadable: Vec<Arc<super::tls::Tls>> = self.tls.iter().cloned().collect();
        let admin = self.admin.map(|(listener, router, tls)| {
            let config = Arc::clone(&self.config);
            let stopped = stopped.clone();
            reloadable.extend(tls.iter().cloned());
            tokio::spawn(serve(
                Transport::Tcp(listener, tls),
                router,
                config,
                stopped,
            ))
        });
        let _socket_file = self
            .unix
            .as_ref()
            .map(|_| super::socket::SocketFile(self.config.server.unix_socket.path.clone()));
        let unix = self.unix.map(|(listener, policy)| {
            let config = Arc::clone(&self.config);
            let stopped = stopped.clone();
            let router = self.router.clone();
            tokio::spawn(serve(
                Transport::Unix(listener, policy),
                router,
                config,
                stopped,
            ))
        });
        if !reloadable.is_empty() {
            tokio::spawn(reload_on_hangup(reloadable));
        }
        let wyoming: Vec<_> = self
            .wyoming
            .into_iter()
            .map(|listener| tokio::spawn(listener.run(stopped.clone())))
            .collect();
        // What this process runs with is a security event: a changed configuration shows up
        // in the security log at the next start (names and switches only, never secrets).
        let engines: Vec<&str> = self.config.engines.keys().map(String::as_str).collect();
        let tiers: Vec<&str> = self.config.tiers.keys().map(String::as_str).collect();
        tracing::info!(
            target: "voxgate::security",
            event = "configuration_loaded",
            version = env!("CARGO_PKG_VERSION"),
            bind = %self.config.server.bind,
            tls = self.config.server.tls.enabled,
            admin = self.config.admin.enabled,
            unix_socket = !self.config.server.unix_socket.path.as_os_str().is_empty(),
            wyoming = ?self.config.wyoming.iter().map(|(name, w)| format!("{name}@{}", w.bind)).collect::<Vec<_>>(),
            cors_origins = self.config.server.cors.allowed_origins.len(),
            engines = ?engines,
            tiers = ?tiers,
            limits_backend = if secrecy::ExposeSecret::expose_secret(&self.config.limits.backend).starts_with("redis") { "redis" } else { "memory" },
            "configuration loaded"
        );
        let retention = crate::service::retention::spawn(Arc::clone(&self.state));
        let holds = self.state.holds.spawn(Arc::clone(&self.state.store));
        let alerts = self.config.alerts.enabled.then(|| {
            crate::observe::alerts::spawn(
                self.config.alerts.clone(),
                self.config.data_dir.clone(),
                Arc::clone(&self.state.metrics),
            )
        });
        let tlog = self.tlog.clone();
        let checkpoints = self.tlog.map(crate::data::audit::tlog::Tlog::spawn);
        let public = serve(
            Transport::Tcp(self.listener, self.tls),
            self.router,
            self.config,
            stopped,
        );
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let services = Arc::clone(&self.state);
        let signal = async move {
            signal.await;
            // Realtime sessions left their connections when they were upgraded: they are
            // told to end and waited for here.
            services
                .stop_live(services.config.server.shutdown_grace())
                .await;
        };
        let (result, ()) = tokio::join!(public, signal);
        if let Some(admin) = admin {
            admin.await??;
        }
        if let Some(unix) = unix {
            unix.await??;
        }
        for listener in wyoming {
            let _ = listener.await;
        }
        if let Some(checkpoints) = checkpoints {
            checkpoints.abort();
        }
        retention.abort();
        holds.abort();
        if let Some(alerts) = alerts {
            alerts.abort();
        }
        // What was logged since the last checkpoint is signed before the process ends.
        if let Some(tlog) = tlog
            && let Err(e) = tlog.checkpoint().await
        {
            tracing::error!(target: "voxgate::security", error = %format!("{e:#}"), "final audit checkpoint failed");
        }
        // Usage buffered since the last write is not lost on a clean stop.
        auth.flush_usage().await;
        result
    }
}

/// Re-reads every listener's TLS certificate and key on every SIGHUP; a failed reload keeps
/// the old ones.
async fn reload_on_hangup(listeners: Vec<Arc<super::tls::Tls>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: TLS certificates will not be reloaded");
        return;
    };
    while hangups.recv().await.is_some() {
        for tls in &listeners {
            match tls.reload() {
                Ok(()) => {
                    tracing::info!(target: "voxgate::security", event = "tls_reloaded", "TLS certificate and key reloaded")
                }
                Err(e) => {
                    tracing::warn!(target: "voxgate::security", event = "tls_reload_failed", error = %format!("{e:#}"), "TLS reload failed; keeping the previous certificate")
                }
            }
        }
    }
}

/// What a listener accepts connections on.
pub enum Transport {
    /// TCP, plain or (with `Some`) TLS only.
    Tcp(TcpListener, Option<Arc<super::tls::Tls>>),
    /// A Unix socket whose peers must pass the credential check.
    Unix(tokio::net::UnixListener, Arc<super::socket::PeerPolicy>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp(l, tls) => {
                write!(f, "Tcp({:?}, tls: {})", l.local_addr().ok(), tls.is_some())
            }
            Transport::Unix(..) => f.write_str("Unix"),
        }
    }
}

/// Serves one listener until `stopped` turns true, then drains its connections.
async fn serve(
    transport: Transport,
    router: Router,
    config: Arc<Config>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let server = &config.server;
    // HTTP/1.1 only, with upgrades (the realtime WebSocket).
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout())
        .keep_alive(true);
    let http = Arc::new(http);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(server.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    match &transport {
        Transport::Tcp(listener, tls) => {
            tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "listening")
        }
        Transport::Unix(..) => {
            tracing::info!(path = %server.unix_socket.path.display(), "listening on the unix socket")
        }
    }
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit?,
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = accept(&transport) => accepted,
            () = &mut shutdown => break,
        };
        let conn = Conn {
            http: Arc::clone(&http),
            router: router.clone(),
            watcher: graceful.watcher(),
            permit,
            handshake_timeout: server.header_read_timeout(),
        };
        match accepted {
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(Accepted::Tcp(stream, peer)) => match &transport {
                Transport::Tcp(_, Some(tls)) => {
                    tokio::spawn(conn.tls(stream, peer, tls.acceptor()));
                }
                _ => {
                    tokio::spawn(conn.serve(TokioIo::new(stream), peer, None));
                }
            },
            Ok(Accepted::Unix(stream)) => {
                let Transport::Unix(_, policy) = &transport else {
                    continue;
                };
                if let Some(peer) = policy.admit(&stream) {
                    // Unix peers have no address: they count as loopback for limits.
                    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
                    tokio::spawn(conn.serve(TokioIo::new(stream), addr, Some(peer)));
                }
            }
        }
    }
    drop(transport);
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

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(transport: &Transport) -> std::io::Result<Accepted> {
    match transport {
        Transport::Tcp(listener, _) => {
            let (stream, peer) = listener.accept().await?;
            // Streamed audio leaves in pieces: without it the last small piece of a response
            // waits for the client's delayed ACK (~40 ms per request).
            let _ = stream.set_nodelay(true);
            Ok(Accepted::Tcp(stream, peer))
        }
        Transport::Unix(listener, _) => Ok(Accepted::Unix(listener.accept().await?.0)),
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    http: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
    permit: tokio::sync::OwnedSemaphorePermit,
    handshake_timeout: std::time::Duration,
}

impl Conn {
    /// A TLS connection: the first byte must open a TLS handshake (plain HTTP gets a 400
    /// and is closed, never redirected), and the handshake must finish within the
    /// header-read timeout.
    async fn tls(
        self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        acceptor: tokio_rustls::TlsAcceptor,
    ) {
        use tokio::io::AsyncWriteExt as _;
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(self.handshake_timeout, stream.peek(&mut first)).await;
        if !matches!(peeked, Ok(Ok(1))) {
            return;
        }
        if first[0] != 0x16 {
            let mut stream = stream;
            let _ = stream.write_all(&super::tls::plaintext_refusal()).await;
            let _ = stream.shutdown().await;
            tracing::debug!(%peer, "plain HTTP on the TLS listener refused");
            return;
        }
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.serve(TokioIo::new(tls), peer, None).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    }

    async fn serve<I>(self, io: TokioIo<I>, peer: SocketAddr, cred: Option<super::socket::PeerCred>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let router = self.router;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(cred) = cred {
                request.extensions_mut().insert(cred);
            }
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let http = self.http;
        let connection = http.serve_connection_with_upgrades(io, service);
        let connection = self.watcher.watch(connection);
        let _permit = self.permit;
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
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
