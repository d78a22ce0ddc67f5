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
