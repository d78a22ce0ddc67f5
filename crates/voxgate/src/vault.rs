//! Encryption at rest for users' content (voice references now; cached audio and retained
//! output later).
//!
//! XChaCha20-Poly1305 under a per-account data key derived with HKDF-SHA-256 from the master
//! key, which lives outside the database (configuration or a 0600 file). Every sealed object
//! carries a fresh random 192-bit nonce, and its associated data binds the object's kind, id
//! and owner: a ciphertext copied to another row, another account or another kind of object
//! fails to open. A database dump alone reveals nothing but sizes.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use sha2::Sha256;

/// Format version, the first byte of every sealed object.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const SALT: &[u8] = b"voxgate/v1/data-key";
const MAC_SALT: &[u8] = b"voxgate/v1/mac-key";

/// Why a sealed object cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Tampered with, truncated, moved to another owner/id, or sealed under another master key.
    #[error("the stored object fails authentication")]
    Inauthentic,
    /// Not something this version sealed.
    #[error("the stored object has an unknown format")]
    Format,
}

/// Seals and opens objects under per-account keys.
pub struct Vault {
    master: SecretSlice<u8>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    /// A vault keyed by `master` (at least 32 bytes; checked by the loader).
    pub fn new(master: &SecretString) -> Self {
        Self {
            master: SecretSlice::from(master.expose_secret().as_bytes().to_vec()),
        }
    }

    fn cipher(&self, owner: &str) -> XChaCha20Poly1305 {
        let hkdf = Hkdf::<Sha256>::new(Some(SALT), self.master.expose_secret());
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA-256's 8160-byte output limit: this cannot fail.
        let _ = hkdf.expand(owner.as_bytes(), &mut key);
        let cipher = XChaCha20Poly1305::new(&key.into());
        key.fill(0);
        cipher
    }

    /// A 256-bit key for keyed hashes (cache file names, …), derived from the master key apart
    /// from every account's data key.
    pub fn mac_key(&self, purpose: &str) -> [u8; 32] {
        let hkdf = Hkdf::<Sha256>::new(Some(MAC_SALT), self.master.expose_secret());
        let mut key = [0u8; 32];
        let _ = hkdf.expand(purpose.as_bytes(), &mut key);
        key
    }

    /// Encrypts `plaintext` for `owner`, bound to `kind` and `id`.
    pub fn seal(&self, owner: &str, kind: &str, id: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = crate::auth::key::random_bytes::<NONCE_LEN>();
        let nonce = XNonce::from(nonce_bytes);
        let aad = associated_data(owner, kind, id);
        let sealed = self
            .cipher(owner)
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // XChaCha20-Poly1305 refuses only messages beyond 256 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Vault::seal`] produced for the same `owner`, `kind` and `id`.
    pub fn open(
        &self,
        owner: &str,
        kind: &str,
        id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let (&version, rest) = sealed.split_first().ok_or(VaultError::Format)?;
        if version != VERSION || rest.len() < NONCE_LEN + 16 {
            return Err(VaultError::Format);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| VaultError::Format)?;
        let aad = associated_data(owner, kind, id);
        self.cipher(owner)
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Inauthentic)
    }
}

/// Length-prefixed, so no two (kind, id, owner) triples encode alike.
fn associated_data(owner: &str, kind: &str, id: &str) -> Vec<u8> {
    let mut aad = b"voxgate/v1".to_vec();
    for part in [kind, id, owner] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(key: &str) -> Vault {
        Vault::new(&SecretString::from(key.to_owned()))
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef-master";

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let v = vault(KEY);
        let plain = b"RIFF....WAVEfmt a voice sample".repeat(10);
        let sealed = v.seal("acct_1", "voice", "voice_1", &plain);
        assert!(!sealed.windows(8).any(|w| w == b"WAVEfmt "));
        assert_eq!(
            v.open("acct_1", "voice", "voice_1", &sealed).expect("open"),
            plain
        );
    }

    #[test]
    fn nonces_are_fresh_for_every_seal() {
        let v = vault(KEY);
        let a = v.seal("acct_1", "voice", "voice_1", b"same");
        let b = v.seal("acct_1", "voice", "voice_1", b"same");
        assert_ne!(a[1..25], b[1..25]);
        assert_ne!(a, b);
    }

    #[test]
    fn binding_owner_id_kind_and_key() {
        let v = vault(KEY);
        let sealed = v.seal("acct_1", "voice", "voice_1", b"secret audio");
        for (owner, kind, id) in [
            ("acct_2", "voice", "voice_1"),
            ("acct_1", "voice", "voice_2"),
            ("acct_1", "cache", "voice_1"),
        ] {
            assert!(matches!(
                v.open(owner, kind, id, &sealed),
                Err(VaultError::Inauthentic)
            ));
        }
        let other = vault("another master key, also 32 bytes long");
        assert!(other.open("acct_1", "voice", "voice_1", &sealed).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(v.open("acct_1", "voice", "voice_1", &flipped).is_err());
        assert!(matches!(
            v.open("acct_1", "voice", "voice_1", &sealed[..20]),
            Err(VaultError::Format)
        ));
    }
}
