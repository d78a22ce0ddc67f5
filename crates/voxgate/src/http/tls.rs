//! TLS for the public listener: rustls with the ring provider, TLS 1.3 and 1.2 only, and
//! only forward-secret AEAD suites (ECDHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3's are
//! all of that kind). The certificate chain and key are PEM files; `reload` (on SIGHUP)
//! swaps the configuration new handshakes use, so established connections are not dropped.
//! A reload that fails keeps the old certificate and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The current TLS configuration of a listener.
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate and key; an error names the file.
    pub fn load(config: &TlsConfig) -> anyhow::Result<Arc<Self>> {
        let acceptor = acceptor(&config.cert_file, &config.key_file)?;
        Ok(Arc::new(Self {
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
            current: RwLock::new(acceptor),
        }))
    }

    /// Re-reads the files; new handshakes use them, established connections keep theirs.
    pub fn reload(&self) -> anyhow::Result<()> {
        let acceptor = acceptor(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }

    /// What the next handshake uses.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The provider: ring's suites, keeping only forward-secret AEAD ones (all TLS 1.3 suites;
/// TLS 1.2 ECDHE with GCM or ChaCha20-Poly1305).
fn provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|suite| {
        let name = format!("{:?}", suite.suite());
        name.starts_with("TLS13_")
            || (name.starts_with("TLS_ECDHE_")
                && (name.contains("_GCM_") || name.contains("CHACHA20_POLY1305")))
    });
    provider
}

fn acceptor(cert_file: &Path, key_file: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("server.tls.cert_file {}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("server.tls.cert_file {}", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "server.tls.cert_file {} holds no certificate",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("server.tls.key_file {}", key_file.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server.tls: the key does not match the certificate, or is unsupported")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The answer to plain HTTP on a TLS port: refused, never redirected (a redirect would
/// invite clients to send their key in the clear first).
pub fn plaintext_refusal() -> Vec<u8> {
    let refusal = super::error::ApiError::new(crate::error::Code::HttpsRequired);
    let body = serde_json::to_string(&refusal.envelope()).unwrap_or_default();
    let status = crate::error::Code::HttpsRequired.spec().status;
    format!(
        "HTTP/1.1 {status} Bad Request\r\ncontent-type: application/json\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forward_secret_aead_suites_remain() {
        let names: Vec<String> = provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert!(names.iter().any(|n| n.starts_with("TLS13_")), "{names:?}");
        assert!(
            names.iter().any(|n| n.starts_with("TLS_ECDHE_")),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .all(|n| !n.contains("_CBC_") && !n.contains("TLS_RSA_")),
            "{names:?}"
        );
    }

    #[test]
    fn the_plaintext_refusal_is_a_complete_http_response() {
        let bytes = plaintext_refusal();
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("length")
            .parse()
            .expect("number");
        assert_eq!(body.len(), length);
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "https_required");
    }
}
