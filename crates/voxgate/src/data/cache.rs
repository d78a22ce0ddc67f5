//! The encrypted speech cache: complete encoded responses, per account, on disk.
//!
//! - **Names reveal nothing.** An entry lives at `<dir>/<owner tag>/<entry tag>`, both
//!   HMAC-SHA-256 tags under a key derived from the master key, so neither account ids nor a
//!   hash of short (guessable) text appear on disk.
//! - **Sealed.** Each file is the vault's XChaCha20-Poly1305 box under the owner's data key,
//!   AAD binding the entry tag and owner; the header inside (engine, creation time, seconds)
//!   is authenticated too, so a file's age cannot be faked with its mtime.
//! - **Per account.** The same text asked by two accounts is two entries: a fast answer never
//!   tells one account what another has asked for.
//! - **Bounded.** Entries above `max_entry_bytes` are not kept; past `max_bytes` the least
//!   recently used go. Fresh for `ttl_secs`; afterwards kept `stale_if_error_secs` longer to
//!   answer only when every engine of the chain fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::config::CacheConfig;
use crate::data::vault::Vault;
use crate::util::hex;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The vault kind of cache entries.
const KIND: &str = "speech_cache";

/// What identifies a response: every input that changes the audio.
#[derive(Debug, Serialize)]
pub struct KeyParts<'a> {
    pub model: &'a str,
    /// The chain's engines, in order (the entry records who actually served).
    pub engines: Vec<&'a str>,
    /// The requested voice name, or the stored voice id.
    pub voice: &'a str,
    /// The normalised script (text pieces, speeds, pauses), serialised.
    pub script: &'a str,
    pub speed: f32,
    pub format: &'a str,
}

/// An entry's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    owner: String,
    owner_tag: String,
    tag: String,
}

/// A cached response.
#[derive(Debug)]
pub struct Cached {
    pub engine: String,
    pub audio: Vec<u8>,
    /// Seconds of audio (quotas and usage count it as if synthesized).
    pub seconds: f64,
    /// False for an expired entry served because every engine failed.
    pub fresh: bool,
}

#[derive(Serialize, Deserialize)]
struct Header {
    engine: String,
    created: u64,
    seconds: f64,
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    size: u64,
    /// Monotonic use counter (least recently used goes first).
    used: u64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
}

#[derive(Debug)]
pub struct SpeechCache {
    dir: PathBuf,
    vault: Arc<Vault>,
    mac_key: [u8; 32],
    config: CacheConfig,
    index: Mutex<Index>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SpeechCache {
    /// Opens (and indexes) the cache directory, creating it with mode 0700. Files that are
    /// not entries, and temporary files of interrupted writes, are removed.
    pub fn open(dir: &Path, vault: Arc<Vault>, config: CacheConfig) -> std::io::Result<Self> {
        crate::util::private_dir(dir)?;
        let mut index = Index::default();
        for owner in std::fs::read_dir(dir)? {
            let owner = owner?;
            if !owner.file_type()?.is_dir() {
                std::fs::remove_file(owner.path())?;
                continue;
            }
            for file in std::fs::read_dir(owner.path())? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                let meta = file.metadata()?;
                if !meta.is_file()
                    || name.len() != 64
                    || !name.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    let _ = std::fs::remove_file(file.path());
                    continue;
                }
                index.total += meta.len();
                index.entries.insert(
                    name,
                    Entry {
                        path: file.path(),
                        size: meta.len(),
                        used: 0,
                    },
                );
            }
        }
        let mac_key = vault.mac_key("speech-cache");
        Ok(Self {
            dir: dir.to_owned(),
            vault,
            mac_key,
            config,
            index: Mutex::new(index),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tag(&self, domain: &[u8], data: &[u8]) -> String {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.mac_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(domain);
        mac.update(data);
        hex(&mac.finalize().into_bytes())
    }

    /// The key of a response for `owner`.
    pub fn key(&self, owner: &str, parts: &KeyParts<'_>) -> CacheKey {
        let canonical = serde_json::to_vec(&(owner, parts)).unwrap_or_default();
        CacheKey {
            owner: owner.to_owned(),
            owner_tag: self.tag(b"owner\0", owner.as_bytes())[..32].to_owned(),
            tag: self.tag(b"entry\0", &canonical),
        }
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(&key.owner_tag).join(&key.tag)
    }

    /// The entry for `key`: fresh, or (with `stale_ok`) expired but within the stale window.
    /// An entry that fails to open (tampered, another master key) is removed.
    pub async fn get(&self, key: &CacheKey, stale_ok: bool) -> Option<Cached> {
        if !self.config.enabled || !self.lock().entries.contains_key(&key.tag) {
            return None;
        }
        let path = self.path(key);
        let sealed = tokio::fs::read(&path).await.ok()?;
        let vault = Arc::clone(&self.vault);
        let (owner, tag) = (key.owner.clone(), key.tag.clone());
        let account_key = self.vault.existing_key(&owner).await.ok()?;
        let opened = tokio::task::spawn_blocking(move || {
            vault.open(&owner, account_key.as_ref(), KIND, &tag, &sealed)
        })
        .await
        .ok()?;
        let Ok(plain) = opened else {
            tracing::warn!(target: "voxgate::security", event = "cache_entry_inauthentic", "a cache entry failed authentication and was removed");
            self.remove(key).await;
            return None;
        };
        let (header, audio) = split(&plain)?;
        let age = now_secs().saturating_sub(header.created);
        let fresh = age < self.config.ttl_secs;
        if !fresh && (!stale_ok || age >= self.config.ttl_secs + self.config.stale_if_error_secs) {
            if age >= self.config.ttl_secs + self.config.stale_if_error_secs {
                self.remove(key).await;
            }
            return None;
        }
        {
            let mut index = self.lock();
            index.clock += 1;
            let clock = index.clock;
            if let Some(entry) = index.entries.get_mut(&key.tag) {
                entry.used = clock;
            }
        }
        Some(Cached {
            engine: header.engine,
            audio: audio.to_vec(),
            seconds: header.seconds,
            fresh,
        })
    }

    /// Keeps a complete response. Too large: not kept. Then least recently used entries go
    /// until the total fits.
    pub async fn put(&self, key: &CacheKey, engine: &str, seconds: f64, audio: &[u8]) {
        if !self.config.enabled || audio.len() as u64 > self.config.max_entry_bytes {
            return;
        }
        let header = serde_json::to_vec(&Header {
            engine: engine.to_owned(),
            created: now_secs(),
            seconds,
        })
        .unwrap_or_default();
        let mut plain = Vec::with_capacity(4 + header.len() + audio.len());
        plain.extend_from_slice(&(header.len() as u32).to_be_bytes());
        plain.extend_from_slice(&header);
        plain.extend_from_slice(audio);
        let vault = Arc::clone(&self.vault);
        let Ok(account_key) = self.vault.key(&key.owner).await else {
            return;
        };
        let tag = key.tag.clone();
        let Ok(sealed) =
            tokio::task::spawn_blocking(move || vault.seal(&account_key, KIND, &tag, &plain)).await
        else {
            return;
        };
        let path = self.path(key);
        let size = sealed.len() as u64;
        let written = tokio::task::spawn_blocking({
            let path = path.clone();
            move || write_private(&path, &sealed)
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!("could not write a cache entry");
            return;
        }
        // The account may have been erased while this response streamed: its key is then
        // gone, and so goes the entry (sealed under a destroyed key, it is useless anyway).
        if !matches!(self.vault.existing_key(&key.owner).await, Ok(Some(_))) {
            let _ = tokio::fs::remove_file(&path).await;
            return;
        }
        let evicted = {
            let mut index = self.lock();
            index.clock += 1;
            let used = index.clock;
            if let Some(old) = index
                .entries
                .insert(key.tag.clone(), Entry { path, size, used })
            {
                index.total -= old.size;
            }
            index.total += size;
            let mut evicted = Vec::new();
            while index.total > self.config.max_bytes {
                let Some(oldest) = index
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(tag, _)| tag.clone())
                else {
                    break;
                };
                if let Some(entry) = index.entries.remove(&oldest) {
                    index.total -= entry.size;
                    evicted.push(entry.path);
                }
            }
            evicted
        };
        for path in evicted {
            let _ = tokio::fs::remove_file(path).await;
        }
    }

    async fn remove(&self, key: &CacheKey) {
        let removed = {
            let mut index = self.lock();
            let removed = index.entries.remove(&key.tag);
            if let Some(e) = &removed {
                index.total -= e.size;
            }
            removed
        };
        if let Some(entry) = removed {
            let _ = tokio::fs::remove_file(entry.path).await;
        }
    }

    /// Removes entries past their TTL and stale window (judged by file age; an entry's own
    /// sealed creation time is checked again on every read); returns how many.
    pub async fn sweep(&self) -> u64 {
        let age = Duration::from_secs(self.config.ttl_secs + self.config.stale_if_error_secs);
        let expired: Vec<(String, PathBuf)> = {
            let index = self.lock();
            index
                .entries
                .iter()
                .filter(|(_, e)| {
                    std::fs::metadata(&e.path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| crate::util::older_than(t, age))
                })
                .map(|(tag, e)| (tag.clone(), e.path.clone()))
                .collect()
        };
        let mut swept = 0;
        for (tag, path) in expired {
            {
                let mut index = self.lock();
                if let Some(e) = index.entries.remove(&tag) {
                    index.total -= e.size;
                }
            }
            if tokio::fs::remove_file(path).await.is_ok() {
                swept += 1;
            }
        }
        swept
    }

    /// Removes every entry of `owner` (account deletion).
    pub async fn remove_owner(&self, owner: &str) {
        let owner_tag = self.tag(b"owner\0", owner.as_bytes())[..32].to_owned();
        let dir = self.dir.join(&owner_tag);
        {
            let mut index = self.lock();
            let gone: Vec<String> = index
                .entries
                .iter()
                .filter(|(_, e)| e.path.starts_with(&dir))
                .map(|(t, _)| t.clone())
                .collect();
            for tag in gone {
                if let Some(e) = index.entries.remove(&tag) {
                    index.total -= e.size;
                }
            }
        }
        let _ = tokio::fs::remove_dir_all(dir).await;
    }

    /// Bytes held now.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Larger responses are not kept.
    pub fn max_entry_bytes(&self) -> u64 {
        self.config.max_entry_bytes
    }

    /// How long entries answer.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.config.ttl_secs)
    }
}

fn split(plain: &[u8]) -> Option<(Header, &[u8])> {
    let len = u32::from_be_bytes(plain.get(..4)?.try_into().ok()?) as usize;
    let header: Header = serde_json::from_slice(plain.get(4..4 + len)?).ok()?;
    Some((header, &plain[4 + len..]))
}

/// Writes to a temporary name (0600) and renames, so readers never see half an entry.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().ok_or(std::io::ErrorKind::InvalidInput)?;
    crate::util::private_dir(dir)?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn config() -> CacheConfig {
        CacheConfig {
            enabled: true,
            max_bytes: 10_000,
            max_entry_bytes: 4_000,
            ttl_secs: 3600,
            stale_if_error_secs: 3600,
        }
    }

    async fn cache(dir: &Path, config: CacheConfig) -> SpeechCache {
        std::fs::create_dir_all(dir.join("db")).expect("db dir");
        let store = crate::data::store::open("", &dir.join("db"))
            .await
            .expect("store");
        let vault = Arc::new(Vault::new(
            &SecretString::from("0123456789abcdef0123456789abcdef".to_owned()),
            store,
            Duration::from_secs(1),
        ));
        SpeechCache::open(&dir.join("cache"), vault, config).expect("open")
    }

    fn parts(text: &str) -> KeyParts<'_> {
        KeyParts {
            model: "tts-1",
            engines: vec!["flite"],
            voice: "alloy",
            script: text,
            speed: 1.0,
            format: "mp3",
        }
    }

    #[tokio::test]
    async fn entries_are_sealed_per_account_and_named_by_keyed_hash() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cache(dir.path(), config()).await;
        let key = c.key("acct_a", &parts("hello canary-text"));
        c.put(&key, "flite", 1.5, b"AUDIO-BYTES-canary").await;
        let got = c.get(&key, false).await.expect("hit");
        assert_eq!(
            (got.engine.as_str(), got.audio.as_slice(), got.seconds),
            ("flite", &b"AUDIO-BYTES-canary"[..], 1.5)
        );
        assert!(got.fresh);
        // Another account asking the same thing misses.
        let other = c.key("acct_b", &parts("hello canary-text"));
        assert!(c.get(&other, true).await.is_none());
        // Nothing readable on disk: no text, no audio, no account id in names or bytes.
        for entry in walk(&dir.path().join("cache")) {
            let name = entry.to_string_lossy().into_owned();
            assert!(
                !name.contains("acct_a") && !name.contains("hello"),
                "{name}"
            );
            let bytes = std::fs::read(&entry).expect("read");
            let window = b"AUDIO-BYTES";
            assert!(
                !bytes.windows(window.len()).any(|w| w == window),
                "plaintext on disk"
            );
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&entry)
                    .expect("meta")
                    .permissions()
                    .mode()
                    & 0o777,
                0o600
            );
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[tokio::test]
    async fn a_tampered_entry_is_refused_and_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cache(dir.path(), config()).await;
        let key = c.key("acct_a", &parts("x"));
        c.put(&key, "flite", 1.0, b"audio").await;
        let file = walk(&dir.path().join("cache")).pop().expect("file");
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, bytes).expect("write");
        assert!(c.get(&key, true).await.is_none());
        assert!(!file.exists());
        assert_eq!(c.total_bytes(), 0);
    }

    #[tokio::test]
    async fn least_recently_used_entries_go_first_and_large_ones_are_not_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cache(dir.path(), config()).await;
        let keys: Vec<CacheKey> = (0..4).map(|i| c.key("a", &parts(&i.to_string()))).collect();
        for key in &keys[..3] {
            c.put(key, "flite", 1.0, &[7; 3000]).await;
        }
        assert!(c.get(&keys[0], false).await.is_some(), "touch the first");
        c.put(&keys[3], "flite", 1.0, &[7; 3000]).await;
        assert!(c.total_bytes() <= 10_000);
        assert!(
            c.get(&keys[0], false).await.is_some(),
            "recently used stays"
        );
        assert!(
            c.get(&keys[1], false).await.is_none(),
            "least recently used went"
        );
        let big = c.key("a", &parts("big"));
        c.put(&big, "flite", 1.0, &[7; 4001]).await;
        assert!(c.get(&big, false).await.is_none());
    }

    #[tokio::test]
    async fn expired_entries_answer_only_when_stale_is_acceptable() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cache(
            dir.path(),
            CacheConfig {
                ttl_secs: 0,
                ..config()
            },
        )
        .await;
        let key = c.key("a", &parts("x"));
        c.put(&key, "flite", 1.0, b"audio").await;
        assert!(c.get(&key, false).await.is_none());
        let stale = c.get(&key, true).await.expect("stale");
        assert!(!stale.fresh);
    }

    #[tokio::test]
    async fn reopening_indexes_what_is_on_disk_and_owners_can_be_erased() {
        let dir = tempfile::tempdir().expect("dir");
        let key;
        {
            let c = cache(dir.path(), config()).await;
            key = c.key("a", &parts("x"));
            c.put(&key, "flite", 1.0, b"audio").await;
            c.put(&c.key("b", &parts("x")), "flite", 1.0, b"audio")
                .await;
        }
        let c = cache(dir.path(), config()).await;
        assert_eq!(c.len(), 2);
        assert!(c.get(&key, false).await.is_some());
        c.remove_owner("a").await;
        assert_eq!(c.len(), 1);
        assert!(c.get(&key, false).await.is_none());
    }
}
