//! Encryption at rest for users' content (voice references, cached audio).
//!
//! XChaCha20-Poly1305 under a per-account data key. The key is derived with HKDF-SHA-256 from
//! the master key (outside the database: configuration or a 0600 file) and a random 256-bit
//! salt kept per account in the database (`account_data_keys`). Both are needed: a database
//! dump alone reveals nothing but sizes, and deleting an account's salt ([`Vault::shred`])
//! makes every copy of its sealed objects unreadable, backups included (crypto-shredding).
//! Every sealed object carries a fresh random 192-bit nonce, and its associated data binds
//! the object's kind, id and owner: a ciphertext copied to another row, another account or
//! another kind of object fails to open.
//!
//! Format: version byte ‖ nonce ‖ ciphertext. Version 2 uses the salted key. Version 1
//! (objects sealed before per-account salts existed) used HKDF(master, owner), which no
//! shredding can destroy: such objects are re-sealed at start-up (`reseal_legacy`), the only
//! place that still opens them.
//!
//! Shredding leaves a tombstone (an empty salt): an erased account's key can never be made
//! again, so nothing (a response still streaming into the cache, another instance) can seal
//! for it afterwards. Salts are cached for at most the authentication cache's lifetime, so
//! an erasure on one instance reaches every other within that bound (1 s by default).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use sha2::Sha256;

use crate::data::store::Store;

/// The salted format.
const VERSION: u8 = 2;
/// The unsalted format of earlier versions (opened, never produced).
const LEGACY: u8 = 1;
const NONCE_LEN: usize = 24;
const SALT: &[u8] = b"voxgate/v1/data-key";
const MAC_SALT: &[u8] = b"voxgate/v1/mac-key";
const SYSTEM_SALT: &[u8] = b"voxgate/v1/system-key";

/// Why a sealed object cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Tampered with, truncated, moved to another owner/id, or sealed under another master key.
    #[error("the stored object fails authentication")]
    Inauthentic,
    /// Not something this version sealed.
    #[error("the stored object has an unknown format")]
    Format,
    /// The owner's data key was destroyed (the account was erased).
    #[error("the owner's data key no longer exists")]
    Shredded,
    /// The salt could not be read or stored.
    #[error("data key store: {0}")]
    Store(String),
}

/// One account's data key, ready to seal and open.
pub struct AccountKey {
    owner: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKey")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl AccountKey {
    /// Whose key this is (an account id, or `system/…` for [`Vault::system_key`]).
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

/// Seals and opens objects under per-account keys.
pub struct Vault {
    master: SecretSlice<u8>,
    store: Arc<dyn Store>,
    /// Salts read or created, by owner, and when they were read.
    salts: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    /// How long a cached salt is trusted before the store is asked again.
    ttl: Duration,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

fn decode_salt(hex: &str) -> Option<[u8; 32]> {
    crate::util::unhex(hex)?.try_into().ok()
}

impl Vault {
    /// A vault keyed by `master` (at least 32 bytes; checked by the loader), keeping salts in
    /// `store`.
    /// `ttl` bounds how long a salt read from the store is trusted (other instances see an
    /// erasure within it).
    pub fn new(master: &SecretString, store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            master: SecretSlice::from(master.expose_secret().as_bytes().to_vec()),
            store,
            salts: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn cached(&self, owner: &str) -> Option<[u8; 32]> {
        let mut salts = self.salts.lock().unwrap_or_else(|e| e.into_inner());
        match salts.get(owner) {
            Some((salt, read)) if read.elapsed() < self.ttl => Some(*salt),
            Some(_) => {
                salts.remove(owner);
                None
            }
            None => None,
        }
    }

    fn remember(&self, owner: &str, salt: [u8; 32]) {
        let mut salts = self.salts.lock().unwrap_or_else(|e| e.into_inner());
        if salts.len() >= 10_000 {
            let ttl = self.ttl;
            salts.retain(|_, (_, read)| read.elapsed() < ttl);
        }
        salts.insert(owner.to_owned(), (salt, Instant::now()));
    }

    fn derive(&self, owner: &str, salt: &[u8; 32]) -> AccountKey {
        let hkdf = Hkdf::<Sha256>::new(Some(salt), self.master.expose_secret());
        let mut key = [0u8; 32];
        let mut info = SALT.to_vec();
        info.push(0);
        info.extend_from_slice(owner.as_bytes());
        // 32 bytes is far below HKDF-SHA-256's 8160-byte output limit: this cannot fail.
        let _ = hkdf.expand(&info, &mut key);
        let cipher = XChaCha20Poly1305::new(&key.into());
        key.fill(0);
        AccountKey {
            owner: owner.to_owned(),
            cipher,
        }
    }

    /// The owner's data key, creating its salt on first use (for sealing).
    pub async fn key(&self, owner: &str) -> Result<AccountKey, VaultError> {
        if let Some(salt) = self.cached(owner) {
            return Ok(self.derive(owner, &salt));
        }
        let fresh = crate::util::hex(&crate::util::random_bytes::<32>());
        let stored = self
            .store
            .ensure_data_key_salt(owner, &fresh)
            .await
            .map_err(|e| VaultError::Store(e.to_string()))?;
        if stored.is_empty() {
            return Err(VaultError::Shredded);
        }
        let salt = decode_salt(&stored).ok_or(VaultError::Format)?;
        self.remember(owner, salt);
        Ok(self.derive(owner, &salt))
    }

    /// The owner's data key if it exists (for opening); `None` once shredded or never made.
    pub async fn existing_key(&self, owner: &str) -> Result<Option<AccountKey>, VaultError> {
        if let Some(salt) = self.cached(owner) {
            return Ok(Some(self.derive(owner, &salt)));
        }
        let Some(stored) = self
            .store
            .data_key_salt(owner)
            .await
            .map_err(|e| VaultError::Store(e.to_string()))?
        else {
            return Ok(None);
        };
        if stored.is_empty() {
            return Ok(None); // shredded
        }
        let salt = decode_salt(&stored).ok_or(VaultError::Format)?;
        self.remember(owner, salt);
        Ok(Some(self.derive(owner, &salt)))
    }

    /// Destroys the owner's data key for good: everything sealed for it, wherever copies
    /// live, can no longer be opened, and no new key can be made for it.
    pub async fn shred(&self, owner: &str) -> Result<(), VaultError> {
        self.salts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(owner);
        self.store
            .shred_data_key(owner)
            .await
            .map_err(|e| VaultError::Store(e.to_string()))?;
        Ok(())
    }

    /// Seals in the version-1 format, as earlier versions did (to test re-sealing).
    #[cfg(test)]
    pub(crate) fn seal_legacy(
        &self,
        owner: &str,
        kind: &str,
        id: &str,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let nonce = crate::util::random_bytes::<NONCE_LEN>();
        let aad = associated_data(owner, kind, id);
        let mut out = vec![LEGACY];
        out.extend_from_slice(&nonce);
        out.extend(
            self.legacy(owner)
                .encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: plaintext,
                        aad: &aad,
                    },
                )
                .unwrap_or_default(),
        );
        out
    }

    /// Whether `sealed` is in the unsalted version-1 format.
    pub fn is_legacy(sealed: &[u8]) -> bool {
        sealed.first() == Some(&LEGACY)
    }

    /// Opens a version-1 object, for re-sealing it (the only use: see the module docs).
    pub fn open_legacy(
        &self,
        owner: &str,
        kind: &str,
        id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        self.open_with(&self.legacy(owner), owner, kind, id, sealed)
    }

    /// The unsalted key of version-1 objects.
    fn legacy(&self, owner: &str) -> XChaCha20Poly1305 {
        let hkdf = Hkdf::<Sha256>::new(Some(SALT), self.master.expose_secret());
        let mut key = [0u8; 32];
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

    /// A key of the gateway's own for `purpose`, derived from the master key alone: for what
    /// must stay readable after its account's key is shredded (the ids of provider-side
    /// clones, which erasure still has to delete). Never used for users' content.
    pub fn system_key(&self, purpose: &str) -> AccountKey {
        let hkdf = Hkdf::<Sha256>::new(Some(SYSTEM_SALT), self.master.expose_secret());
        let mut key = [0u8; 32];
        let _ = hkdf.expand(purpose.as_bytes(), &mut key);
        let cipher = XChaCha20Poly1305::new(&key.into());
        key.fill(0);
        AccountKey {
            owner: format!("system/{purpose}"),
            cipher,
        }
    }

    /// Encrypts `plaintext` for the key's owner, bound to `kind` and `id`.
    pub fn seal(&self, key: &AccountKey, kind: &str, id: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = crate::util::random_bytes::<NONCE_LEN>();
        let nonce = XNonce::from(nonce_bytes);
        let aad = associated_data(&key.owner, kind, id);
        let sealed = key
            .cipher
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

    /// Decrypts what [`Vault::seal`] produced for the same owner, `kind` and `id`. `key` is
    /// the owner's existing key (`None`: shredded, or never made).
    pub fn open(
        &self,
        owner: &str,
        key: Option<&AccountKey>,
        kind: &str,
        id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        match sealed.first() {
            Some(&VERSION) => match key {
                Some(key) if key.owner == owner => {
                    self.open_with(&key.cipher, owner, kind, id, sealed)
                }
                Some(_) => Err(VaultError::Inauthentic),
                None => Err(VaultError::Shredded),
            },
            // Re-sealed at start-up; one found later (a restored backup) is not opened.
            _ => Err(VaultError::Format),
        }
    }

    fn open_with(
        &self,
        cipher: &XChaCha20Poly1305,
        owner: &str,
        kind: &str,
        id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let rest = sealed.get(1..).ok_or(VaultError::Format)?;
        if rest.len() < NONCE_LEN + 16 {
            return Err(VaultError::Format);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| VaultError::Format)?;
        let aad = associated_data(owner, kind, id);
        cipher
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

    const KEY: &str = "0123456789abcdef0123456789abcdef-master";

    async fn vault(dir: &std::path::Path, key: &str) -> Vault {
        let store = crate::data::store::open("", dir).await.expect("store");
        Vault::new(
            &SecretString::from(key.to_owned()),
            store,
            Duration::from_millis(100),
        )
    }

    #[tokio::test]
    async fn round_trips_and_hides_the_plaintext() {
        let dir = tempfile::tempdir().expect("dir");
        let v = vault(dir.path(), KEY).await;
        let plain = b"RIFF....WAVEfmt a voice sample".repeat(10);
        let key = v.key("acct_1").await.expect("key");
        let sealed = v.seal(&key, "voice", "voice_1", &plain);
        assert!(!sealed.windows(8).any(|w| w == b"WAVEfmt "));
        let existing = v.existing_key("acct_1").await.expect("read");
        assert_eq!(
            v.open("acct_1", existing.as_ref(), "voice", "voice_1", &sealed)
                .expect("open"),
            plain
        );
        // Nonces are fresh for every seal.
        let a = v.seal(&key, "voice", "voice_1", b"same");
        let b = v.seal(&key, "voice", "voice_1", b"same");
        assert_ne!(a[1..25], b[1..25]);
    }

    #[tokio::test]
    async fn binding_owner_id_kind_and_key() {
        let dir = tempfile::tempdir().expect("dir");
        let v = vault(dir.path(), KEY).await;
        let key = v.key("acct_1").await.expect("key");
        let other_key = v.key("acct_2").await.expect("key");
        let sealed = v.seal(&key, "voice", "voice_1", b"secret audio");
        for (owner, k, kind, id) in [
            ("acct_2", &other_key, "voice", "voice_1"),
            ("acct_1", &key, "voice", "voice_2"),
            ("acct_1", &key, "cache", "voice_1"),
            ("acct_1", &other_key, "voice", "voice_1"),
        ] {
            assert!(
                v.open(owner, Some(k), kind, id, &sealed).is_err(),
                "{owner} {kind} {id}"
            );
        }
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(
            v.open("acct_1", Some(&key), "voice", "voice_1", &flipped)
                .is_err()
        );
        assert!(matches!(
            v.open("acct_1", Some(&key), "voice", "voice_1", &sealed[..20]),
            Err(VaultError::Format)
        ));
        // Another master key with the same salts opens nothing.
        let other = vault(dir.path(), "another master key, also 32 bytes long").await;
        let theirs = other.existing_key("acct_1").await.expect("read");
        assert!(
            other
                .open("acct_1", theirs.as_ref(), "voice", "voice_1", &sealed)
                .is_err()
        );
    }

    #[tokio::test]
    async fn shredding_the_key_makes_every_copy_unreadable() {
        let dir = tempfile::tempdir().expect("dir");
        let v = vault(dir.path(), KEY).await;
        let key = v.key("acct_1").await.expect("key");
        let copy = v.seal(&key, "voice", "voice_1", b"kept in a backup");
        v.shred("acct_1").await.expect("shred");
        // A fresh vault (another instance, after a restart) has no salt to find either.
        let fresh = vault(dir.path(), KEY).await;
        let gone = fresh.existing_key("acct_1").await.expect("read");
        assert!(gone.is_none());
        assert!(matches!(
            fresh.open("acct_1", None, "voice", "voice_1", &copy),
            Err(VaultError::Shredded)
        ));
        // No key can be made for the owner again: nothing more is ever sealed for it.
        assert!(matches!(
            fresh.key("acct_1").await,
            Err(VaultError::Shredded)
        ));
    }

    /// An erasure on one instance reaches another within the cache lifetime: its cached
    /// salt expires, and then it can neither open nor seal for the account.
    #[tokio::test]
    async fn another_instance_stops_within_the_cache_lifetime() {
        let dir = tempfile::tempdir().expect("dir");
        let here = vault(dir.path(), KEY).await;
        let there = vault(dir.path(), KEY).await;
        let key = here.key("acct_1").await.expect("key");
        let sealed = here.seal(&key, "voice", "voice_1", b"audio");
        assert!(there.key("acct_1").await.is_ok(), "cached over there");
        here.shred("acct_1").await.expect("shred");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(matches!(
            there.key("acct_1").await,
            Err(VaultError::Shredded)
        ));
        let gone = there.existing_key("acct_1").await.expect("read");
        assert!(matches!(
            there.open("acct_1", gone.as_ref(), "voice", "voice_1", &sealed),
            Err(VaultError::Shredded)
        ));
    }

    /// Version-1 objects (unsalted) open only for re-sealing.
    #[tokio::test]
    async fn legacy_objects_open_only_to_be_resealed() {
        let dir = tempfile::tempdir().expect("dir");
        let v = vault(dir.path(), KEY).await;
        let nonce = [7u8; NONCE_LEN];
        let aad = associated_data("acct_1", "voice", "voice_1");
        let mut legacy = vec![LEGACY];
        legacy.extend_from_slice(&nonce);
        legacy.extend(
            v.legacy("acct_1")
                .encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: b"old audio",
                        aad: &aad,
                    },
                )
                .expect("seal"),
        );
        assert!(Vault::is_legacy(&legacy));
        let key = v.key("acct_1").await.expect("key");
        assert!(matches!(
            v.open("acct_1", Some(&key), "voice", "voice_1", &legacy),
            Err(VaultError::Format)
        ));
        assert_eq!(
            v.open_legacy("acct_1", "voice", "voice_1", &legacy)
                .expect("re-seal path"),
            b"old audio"
        );
    }
}
