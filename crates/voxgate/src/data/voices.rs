//! Stored voice references: short clips an account uploads (with consent) so engines that
//! clone voices can speak with them.
//!
//! The clip is kept only as decoded, resampled 16-bit WAV (no container metadata or tags of
//! the upload survive), sealed by the [`Vault`] under the owner's data key and bound to the
//! voice id. Every lookup is by (account, id): another account's id finds nothing, so it is
//! answered exactly like an id that never existed.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::data::store::{Store, VoiceRecord, now};
use crate::data::vault::Vault;
use crate::error::{Code, Error};

/// The vault's `kind` for voice references.
const KIND: &str = "voice";
/// The vault kind of a voice's sealed name, and the marker of a sealed name in the store.
const NAME_KIND: &str = "voice_name";
const NAME_PREFIX: &str = "sealed:";

/// Prefix of voice ids.
pub const ID_PREFIX: &str = "voice_";

/// The answer for an id that is not the caller's (`param` names where it was sent).
pub fn not_found(param: Option<&'static str>) -> Error {
    Error::Refused {
        code: Code::StoredVoiceNotFound,
        param: param.map(Into::into),
        message: Code::StoredVoiceNotFound.spec().message.into(),
    }
}

/// Whether `id` could be a voice id at all (checked before any lookup).
pub fn is_valid_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX).is_some_and(|rest| {
        rest.len() == 32
            && rest
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Stores, lists, opens and deletes voice references.
#[derive(Debug, Clone)]
pub struct VoiceLibrary {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
}

impl VoiceLibrary {
    pub fn new(store: Arc<dyn Store>, vault: Arc<Vault>) -> Self {
        Self { store, vault }
    }

    /// Seals and stores `wav` for `account_id`, unless the account already keeps `max`.
    pub async fn create(
        &self,
        account_id: &str,
        name: &str,
        wav: &[u8],
        duration_ms: i64,
        max: u32,
    ) -> Result<VoiceRecord, Error> {
        let id = format!("{ID_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let key = self.vault.key(account_id).await.map_err(Error::internal)?;
        // The name is the caller's text too: sealed like the audio.
        let sealed_name = format!(
            "{NAME_PREFIX}{}",
            BASE64.encode(self.vault.seal(&key, NAME_KIND, &id, name.as_bytes()))
        );
        let record = VoiceRecord {
            sealed: self.vault.seal(&key, KIND, &id, wav),
            id,
            account_id: account_id.to_owned(),
            name: sealed_name,
            duration_ms,
            created_at: now(),
        };
        let stored = self
            .store
            .insert_voice(&record, i64::from(max))
            .await
            .map_err(Error::internal)?;
        if !stored {
            return Err(Error::refused(
                Code::VoiceLimitReached,
                format!("Your tier keeps at most {max} stored voices; delete one first."),
            ));
        }
        Ok(VoiceRecord {
            sealed: Vec::new(),
            name: name.to_owned(),
            ..record
        })
    }

    /// Opens a stored name (names stored before names were sealed are shown as they are).
    fn open_name(
        &self,
        account_id: &str,
        key: Option<&crate::data::vault::AccountKey>,
        mut record: VoiceRecord,
    ) -> VoiceRecord {
        if let Some(encoded) = record.name.strip_prefix(NAME_PREFIX) {
            record.name = BASE64
                .decode(encoded)
                .ok()
                .and_then(|sealed| {
                    self.vault
                        .open(account_id, key, NAME_KIND, &record.id, &sealed)
                        .ok()
                })
                .and_then(|plain| String::from_utf8(plain).ok())
                .unwrap_or_default();
        }
        record
    }

    pub async fn list(&self, account_id: &str) -> Result<Vec<VoiceRecord>, Error> {
        let records = self
            .store
            .voices(account_id)
            .await
            .map_err(Error::internal)?;
        let key = self
            .vault
            .existing_key(account_id)
            .await
            .map_err(Error::internal)?;
        Ok(records
            .into_iter()
            .map(|r| self.open_name(account_id, key.as_ref(), r))
            .collect())
    }

    /// The caller's voice with this id, if any (sealed audio included, not opened).
    pub async fn find(&self, account_id: &str, id: &str) -> Result<Option<VoiceRecord>, Error> {
        if !is_valid_id(id) {
            return Ok(None);
        }
        let Some(record) = self
            .store
            .voice(account_id, id)
            .await
            .map_err(Error::internal)?
        else {
            return Ok(None);
        };
        let key = self
            .vault
            .existing_key(account_id)
            .await
            .map_err(Error::internal)?;
        Ok(Some(self.open_name(account_id, key.as_ref(), record)))
    }

    /// The caller's voice audio (WAV), decrypted.
    pub async fn audio(&self, account_id: &str, id: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(record) = self.find(account_id, id).await? else {
            return Ok(None);
        };
        let key = self
            .vault
            .existing_key(account_id)
            .await
            .map_err(Error::internal)?;
        self.vault
            .open(account_id, key.as_ref(), KIND, &record.id, &record.sealed)
            .map(Some)
            .map_err(Error::internal)
    }

    pub async fn delete(&self, account_id: &str, id: &str) -> Result<bool, Error> {
        if !is_valid_id(id) {
            return Ok(false);
        }
        self.store
            .delete_voice(account_id, id)
            .await
            .map_err(Error::internal)
    }
}

/// Encodes mono samples as 16-bit WAV.
impl VoiceLibrary {
    /// Re-seals every stored voice whose audio or name is still in the vault's unsalted
    /// version-1 format (or a name in the clear, from before names were sealed) under its
    /// account's salted key, so that erasing the account shreds it; a voice of an account
    /// already erased is deleted. Run at start-up; returns how many voices changed.
    pub async fn reseal_legacy(&self) -> Result<usize, Error> {
        let mut changed = 0;
        for listed in self
            .store
            .voices_created_before(i64::MAX)
            .await
            .map_err(Error::internal)?
        {
            let (owner, id) = (listed.account_id.as_str(), listed.id.as_str());
            let Some(record) = self.store.voice(owner, id).await.map_err(Error::internal)? else {
                continue;
            };
            let sealed_name = record
                .name
                .strip_prefix(NAME_PREFIX)
                .and_then(|b| BASE64.decode(b).ok());
            let name_is_old = sealed_name.as_deref().is_none_or(Vault::is_legacy);
            if !Vault::is_legacy(&record.sealed) && !name_is_old {
                continue;
            }
            let key = match self.vault.key(owner).await {
                Ok(key) => key,
                Err(crate::data::vault::VaultError::Shredded) => {
                    self.store
                        .delete_voice(owner, id)
                        .await
                        .map_err(Error::internal)?;
                    changed += 1;
                    continue;
                }
                Err(e) => return Err(Error::internal(e)),
            };
            let open = |kind: &str, sealed: &[u8]| {
                if Vault::is_legacy(sealed) {
                    self.vault.open_legacy(owner, kind, id, sealed)
                } else {
                    self.vault.open(owner, Some(&key), kind, id, sealed)
                }
            };
            let audio = open(KIND, &record.sealed).map_err(Error::internal)?;
            let name = match &sealed_name {
                Some(sealed) => open(NAME_KIND, sealed).map_err(Error::internal)?,
                None => record.name.clone().into_bytes(),
            };
            let name = format!(
                "{NAME_PREFIX}{}",
                BASE64.encode(self.vault.seal(&key, NAME_KIND, id, &name))
            );
            self.store
                .reseal_voice(owner, id, &name, &self.vault.seal(&key, KIND, id, &audio))
                .await
                .map_err(Error::internal)?;
            changed += 1;
        }
        Ok(changed)
    }
}

pub fn wav_bytes(samples: &[f32], sample_rate: u32) -> Result<Vec<u8>, Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut writer = hound::WavWriter::new(&mut cursor, spec).map_err(Error::internal)?;
        for s in samples {
            let v = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
            writer.write_sample(v).map_err(Error::internal)?;
        }
        writer.finalize().map_err(Error::internal)?;
    }
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Voices from before per-account salts (audio in the version-1 format, a name in the
    /// clear) are re-sealed under the account's key, so erasing the account shreds them; a
    /// voice of an account already erased is deleted.
    #[tokio::test]
    async fn legacy_voices_are_resealed_and_then_shred_with_their_account() {
        let dir = tempfile::tempdir().expect("dir");
        let store = crate::data::store::open("", dir.path())
            .await
            .expect("store");
        let vault = Arc::new(Vault::new(
            &secrecy::SecretString::from("0123456789abcdef0123456789abcdef".to_owned()),
            Arc::clone(&store),
            std::time::Duration::from_secs(1),
        ));
        let library = VoiceLibrary::new(Arc::clone(&store), Arc::clone(&vault));
        for (account, id) in [
            ("acct_kept", "voice_0123456789abcdef0123456789abcdef"),
            ("acct_gone", "voice_fedcba9876543210fedcba9876543210"),
        ] {
            store
                .create_account(&crate::data::store::Account {
                    id: account.into(),
                    name: "x".into(),
                    contact: None,
                    tier: "basic".into(),
                    active: true,
                    created_at: 0,
                    updated_at: 0,
                })
                .await
                .expect("account");
            let record = VoiceRecord {
                id: id.into(),
                account_id: account.into(),
                name: "Grandma".into(),
                duration_ms: 6000,
                created_at: 0,
                sealed: vault.seal_legacy(account, KIND, id, b"RIFF old audio"),
            };
            assert!(store.insert_voice(&record, 10).await.expect("insert"));
        }
        vault.shred("acct_gone").await.expect("shred");
        assert_eq!(library.reseal_legacy().await.expect("reseal"), 2);
        assert_eq!(
            library.reseal_legacy().await.expect("again"),
            0,
            "idempotent"
        );
        let kept = "voice_0123456789abcdef0123456789abcdef";
        assert_eq!(
            library
                .audio("acct_kept", kept)
                .await
                .expect("open")
                .as_deref(),
            Some(&b"RIFF old audio"[..])
        );
        let listed = library.list("acct_kept").await.expect("list");
        assert_eq!(listed[0].name, "Grandma");
        let raw = store
            .voice("acct_kept", kept)
            .await
            .expect("read")
            .expect("row");
        assert!(!Vault::is_legacy(&raw.sealed) && raw.name.starts_with(NAME_PREFIX));
        assert!(store.voices("acct_gone").await.expect("list").is_empty());
        vault.shred("acct_kept").await.expect("shred");
        assert!(
            library.audio("acct_kept", kept).await.is_err(),
            "shredded now"
        );
    }

    #[test]
    fn ids_are_checked_before_any_lookup() {
        let good = format!("{ID_PREFIX}{}", uuid::Uuid::new_v4().simple());
        assert!(is_valid_id(&good));
        for bad in [
            "voice_",
            "voice_../../etc/passwd",
            "../voice_0123",
            "VOICE_0123456789abcdef0123456789abcdef",
            "voice_0123456789ABCDEF0123456789ABCDEF",
            "voice_0123456789abcdef0123456789abcdef0",
            "voice_0123456789abcdef0123456789abcde\0",
        ] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
