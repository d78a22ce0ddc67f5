//! Voices: the ones a caller may name, and the caller's stored voice references (decoded,
//! resampled, sealed; audited when created or deleted, with the clones providers made of
//! them deleted too).

use voxgate_input::probe::ProbeLimits;
use voxgate_input::text::{self, TextPolicy, ZeroWidth};

use super::Services;
use super::transcription::{decode_upload, resample};
use crate::config::Scope;
use crate::data::audit::{Actor, AuditEvent};
use crate::data::clones::Forgotten;
use crate::data::spool::SpooledFile;
use crate::data::store::VoiceRecord;
use crate::engines::ListedVoice;
use crate::error::{Code, Error};
use crate::identity::auth::Principal;

/// Sample rate stored references are kept at.
const STORED_RATE: u32 = 24_000;

/// A new stored voice, as sent.
#[derive(Debug)]
pub struct NewVoice {
    pub name: Option<String>,
    /// The uploader confirms the speaker agreed to having their voice cloned.
    pub consent: bool,
    pub sample: Option<SpooledFile>,
}

impl Services {
    /// The voices the caller's tier may name (with the models that accept each), and the
    /// caller's stored references when its key may manage them.
    pub async fn voices_for(
        &self,
        principal: &Principal,
    ) -> Result<(Vec<ListedVoice>, Vec<VoiceRecord>), Error> {
        let tier = &principal.tier;
        let voices = self
            .catalog
            .voices()
            .into_iter()
            .filter(|v| tier.allows_voice(&v.id) && tier.allows_engine(&v.engine))
            .map(|mut v| {
                v.models.retain(|m| tier.allows_model(m));
                v
            })
            .filter(|v| !v.models.is_empty())
            .collect();
        let stored = if principal.has(Scope::VoicesManage) {
            self.voices.list(&principal.account_id).await?
        } else {
            Vec::new()
        };
        Ok((voices, stored))
    }

    /// Stores a voice reference: consent required, the name through the text pipeline, the
    /// clip decoded (5–8 s by default), resampled and sealed.
    pub async fn store_voice(
        &self,
        principal: &Principal,
        voice: NewVoice,
    ) -> Result<VoiceRecord, Error> {
        let settings = &self.config.voices;
        let tier = &principal.tier;
        if !voice.consent {
            return Err(Error::invalid(
                "consent",
                Code::ConsentRequired,
                Code::ConsentRequired.spec().message,
            ));
        }
        let policy = TextPolicy {
            max_chars: settings.max_name_chars,
            zero_width: ZeroWidth::Reject,
            profanity: None,
            spam: false,
        };
        let name = voice
            .name
            .as_deref()
            .ok_or_else(|| Error::invalid("name", Code::MissingParameter, "'name' is required."))?;
        let name = text::normalize(name, &policy)
            .map_err(|e| Error::text("name", &e))?
            .replace('\n', " ");
        let limits = ProbeLimits {
            max_bytes: tier.max_upload_bytes,
            max_duration_secs: settings.max_secs,
            min_duration_secs: settings.min_secs,
            ..ProbeLimits::default()
        };
        let sample = voice.sample.as_ref().ok_or_else(|| {
            Error::invalid(
                "audio_sample",
                Code::MissingParameter,
                "'audio_sample' is required.",
            )
        })?;
        let probed = decode_upload(sample, "audio_sample", limits).await?;
        let duration_ms = (probed.duration_secs * 1000.0).round() as i64;
        let (samples, rate) = (probed.samples, probed.sample_rate);
        let wav = self
            .encoders
            .run(move || {
                resample(&samples, rate, STORED_RATE)
                    .and_then(|s| crate::data::voices::wav_bytes(&s, STORED_RATE))
            })
            .await??;
        let record = self
            .voices
            .create(
                &principal.account_id,
                &name,
                &wav,
                duration_ms,
                tier.max_stored_voices,
            )
            .await;
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                self.audit_denial(principal, "voices", &err).await;
                return Err(err);
            }
        };
        self.audit
            .record(
                Actor::Key(principal.keyid.clone()),
                Some(principal.source),
                AuditEvent::VoiceCreated {
                    voice_id: record.id.clone(),
                    account_id: principal.account_id.clone(),
                },
            )
            .await;
        Ok(record)
    }

    /// The caller's stored voice (another account's id is not found).
    pub async fn stored_voice(
        &self,
        principal: &Principal,
        voice_id: &str,
    ) -> Result<VoiceRecord, Error> {
        self.voices
            .find(&principal.account_id, voice_id)
            .await?
            .ok_or_else(|| crate::data::voices::not_found(None))
    }

    /// Deletes the caller's stored voice and the clones providers made of it.
    pub async fn delete_voice(&self, principal: &Principal, voice_id: &str) -> Result<(), Error> {
        if !self.voices.delete(&principal.account_id, voice_id).await? {
            return Err(crate::data::voices::not_found(None));
        }
        self.forget_clones(voice_id).await;
        self.audit
            .record(
                Actor::Key(principal.keyid.clone()),
                Some(principal.source),
                AuditEvent::VoiceDeleted {
                    voice_id: voice_id.to_owned(),
                    account_id: principal.account_id.clone(),
                },
            )
            .await;
        Ok(())
    }

    /// Deletes the clones providers made of `voice_id` (see [`crate::data::clones`]).
    pub async fn forget_clones(&self, voice_id: &str) -> Forgotten {
        self.clones.forget(voice_id, &self.catalog).await
    }
}
