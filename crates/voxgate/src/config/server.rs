//! The listeners: the public one (timeouts, proxies, CORS, TLS), the admin one and the
//! optional Unix socket.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether the admin API listens at all.
    pub enabled: bool,
    /// Its own listener, loopback by default; any other address needs `tls`.
    pub bind: SocketAddr,
    /// TLS on the admin listener (its own certificate, reloaded on SIGHUP too).
    pub tls: TlsConfig,
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

/// TLS on a listener (rustls: TLS 1.2 and 1.3, forward-secret AEAD suites only).
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
    pub fn trusted_proxies(&self) -> Vec<Cidr> {
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

/// An address block such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => masked(
                u128::from(u32::from(n)),
                u128::from(u32::from(a)),
                self.prefix,
                32,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn masked(network: u128, addr: u128, prefix: u8, bits: u32) -> bool {
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (network >> shift) == (addr >> shift)
}
