//! The listeners: the public one (timeouts, proxies, CORS, TLS), the admin one and the
//! optional Unix socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether the admin API listens at all.
    pub enabled: bool,
    /// Its own listener, loopback by default.
    pub bind: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub header_read_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub stream_timeout_secs: u64,
    pub json_body_limit_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub max_connections: usize,
    /// Proxies whose `X-Forwarded-For` is believed (address blocks, e.g. "10.0.0.0/8").
    pub trusted_proxies: Vec<String>,
    pub cors: CorsConfig,
    pub tls: TlsConfig,
    pub unix_socket: UnixSocketConfig,
}

/// Cross-origin access for browsers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`, scheme, host and port) that may call the
    /// API from a browser. Empty: none.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer.
    pub max_age_secs: u64,
}

/// TLS on the public listener (rustls: TLS 1.2 and 1.3, forward-secret AEAD suites only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub enabled: bool,
    /// PEM certificate chain and private key; re-read on SIGHUP.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A local listener on a Unix socket, for processes on this host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixSocketConfig {
    /// Empty: no socket.
    pub path: PathBuf,
    /// Octal file mode of the socket, e.g. "0660".
    pub mode: String,
    /// A group to own the socket (its members may connect); empty keeps ours.
    pub group: String,
    /// Peers allowed to connect, by uid and by gid (either list admits).
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
}

impl ServerConfig {
    /// The parsed `trusted_proxies` (validated at start-up).
    pub fn trusted_proxies(&self) -> Vec<crate::api::client_ip::Cidr> {
        self.trusted_proxies
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}

impl ServerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
    pub fn stream_timeout(&self) -> Duration {
        Duration::from_secs(self.stream_timeout_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
