//! The Wyoming front door: voxgate as Home Assistant's speech server.
//!
//! Each `[wyoming.<name>]` listener accepts TCP connections from loopback or its `allow`
//! blocks and serves the protocol's speech events ([`session`]) as the key it is bound to:
//! every request goes through the same service calls as HTTP (`Services::bound_caller`,
//! `authorize`, `speak_order`, `prepare_transcription` + `transcribe`), so admission,
//! quotas, settlement and audit are the services', never this module's. Frames are read by
//! the bounded codec of `voxgate-wyoming`; whatever exceeds a cap gets an `error` event and
//! the connection is closed, without touching other connections.

mod describe;
mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use voxgate_wyoming::frame;

use crate::config::{Cidr, WyomingConfig};
use crate::service::Services;

/// A bound Wyoming listener, ready to run.
#[derive(Debug)]
pub struct Listener {
    name: Arc<str>,
    config: Arc<WyomingConfig>,
    allow: Arc<Vec<Cidr>>,
    listener: TcpListener,
    slots: Arc<Semaphore>,
    services: Arc<Services>,
}

impl Listener {
    /// Binds `[wyoming.<name>]` (validated with the configuration).
    pub async fn bind(
        name: &str,
        config: &WyomingConfig,
        services: Arc<Services>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.bind).await.with_context(|| {
            format!("cannot bind the Wyoming listener {name} on {}", config.bind)
        })?;
        let allow = config.allow.iter().filter_map(|c| c.parse().ok()).collect();
        Ok(Self {
            name: name.into(),
            config: Arc::new(config.clone()),
            allow: Arc::new(allow),
            listener,
            slots: Arc::new(Semaphore::new(config.limits.max_connections)),
            services,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `stopped` turns true, then waits (up to
    /// `server.shutdown_grace_secs`) for the open ones: idle ones close at once, one in the
    /// middle of a request finishes it. Sessions still running after that are dropped
    /// while the runtime still runs, so their reservations are settled.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let loopback = self.config.bind.ip().is_loopback();
        tracing::info!(listener = %self.name, bind = %self.config.bind, "Wyoming listener ready");
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stopped.changed() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(listener = %self.name, error = %err, "Wyoming accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let metrics = &self.services.metrics;
            if !peer_allowed(peer.ip(), loopback, &self.allow) {
                metrics.wyoming_connections.inc(&self.name, "peer_refused");
                tracing::warn!(target: "voxgate::security", event = "wyoming_peer_refused", listener = %self.name, peer = %peer.ip(), "a peer outside the listener's allow-list was refused");
                continue;
            }
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                metrics.wyoming_connections.inc(&self.name, "full");
                tokio::spawn(refuse_full(
                    stream,
                    self.name.clone(),
                    Arc::clone(&self.services),
                ));
                continue;
            };
            metrics.wyoming_connections.inc(&self.name, "accepted");
            let session = session::Session::new(
                Arc::clone(&self.name),
                Arc::clone(&self.config),
                Arc::clone(&self.services),
                peer.ip(),
            );
            let stopping = stopped.clone();
            sessions.spawn(async move {
                let _slot = slot;
                session.serve(stream, stopping).await;
            });
        }
        drop(self.listener);
        let grace = self.services.config.server.shutdown_grace();
        let drained = tokio::time::timeout(grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            sessions.abort_all();
            while sessions.join_next().await.is_some() {}
        }
    }
}

/// On a loopback bind, loopback peers; otherwise (and additionally) the allow-list.
fn peer_allowed(ip: IpAddr, loopback_bind: bool, allow: &[Cidr]) -> bool {
    (loopback_bind && ip.is_loopback()) || allow.iter().any(|c| c.contains(ip))
}

/// A connection over the listener's cap: an `error` event, then the close.
async fn refuse_full(mut stream: TcpStream, name: Arc<str>, services: Arc<Services>) {
    use tokio::io::AsyncWriteExt as _;
    let code = crate::error::Code::Overloaded;
    services
        .metrics
        .wyoming_errors
        .inc(&name, code.as_str().unwrap_or("overloaded"));
    let bytes = frame::encode(&voxgate_wyoming::event::error(
        code.spec().message,
        code.as_str().unwrap_or("overloaded"),
    ));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&bytes)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_loopback_on_loopback_or_listed() {
        let lan: Vec<Cidr> = vec!["192.168.1.0/24".parse().expect("cidr")];
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let inside: IpAddr = "192.168.1.20".parse().expect("ip");
        let outside: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!(peer_allowed(local, true, &[]));
        assert!(!peer_allowed(outside, true, &[]));
        assert!(peer_allowed(inside, false, &lan));
        assert!(!peer_allowed(outside, false, &lan));
        assert!(
            !peer_allowed(local, false, &lan),
            "off loopback, loopback is not implied"
        );
    }
}
