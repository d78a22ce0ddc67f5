//! Provider-side clones of stored voices (ElevenLabs' instant voice cloning).
//!
//! An engine that clones makes a voice of its own from a stored reference and gives back its
//! id. The id is kept in the store, one row per (stored voice, engine), sealed under a system
//! key derived from the master key: not under the account's key, because an erasure shreds
//! that key and must still be able to delete the clone. So deleting a voice, erasing an
//! account and the retention sweep reach clones made before a restart or by another instance.
//!
//! The row is also the per-voice lock that makes concurrent first uses create one clone,
//! across instances: the first caller inserts it with a random claim token and makes the
//! clone; the others see the claim and wait (bounded by their deadline) for the sealed id.
//! Making runs in a task of its own, so a caller that hangs up cannot strand an upload half
//! recorded; the maker renews its claim while the provider works, and the record is written
//! in the statement that checks the stored voice still exists (otherwise the maker deletes
//! what it made). Claim ages are the database's clock. A claim not renewed for
//! [`STALE_CLAIM_SECS`] belongs to a maker that died: the clone is uploaded under a label
//! naming the voice and the claim, so whoever takes the claim over (or the retention sweep)
//! deletes by that label whatever the dead maker may have left at the provider.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use voxgate_engine::{EngineError, Synthesizer, VoiceReference};

use crate::data::store::{CloneClaim, CloneRecord, Store, StoreError};
use crate::data::vault::{AccountKey, Vault};
use crate::engines::Catalog;
use crate::error::Error;

/// The vault kind of a sealed clone id.
const KIND: &str = "voice_clone";
/// A claim not renewed for this long (by the database's clock) belongs to a maker that died.
pub const STALE_CLAIM_SECS: i64 = 30;
/// How often a maker renews its claim while the provider works.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// The longest pause between two looks at a clone another caller is making.
const MAX_POLL: Duration = Duration::from_millis(250);

/// Makes, finds and deletes provider-side clones.
pub struct VoiceClones {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    key: AccountKey,
}

impl std::fmt::Debug for VoiceClones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VoiceClones(..)")
    }
}

/// What deleting clones left behind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forgotten {
    /// Clones the engines deleted.
    pub deleted: u64,
    /// Clones still recorded (the engine failed or is no longer configured): retried by the
    /// retention sweep.
    pub kept: u64,
}

fn store_error(err: StoreError) -> Error {
    if err.is_outage() {
        // 503 `store_unavailable` with a wait, like every other outage.
        return Error::internal(err);
    }
    Error::from(EngineError::Internal(format!("clone records: {err}")))
}

/// The id a sealed clone is bound to: its account, stored voice and engine.
fn bound_id(account_id: &str, voice_id: &str, engine_id: &str) -> String {
    format!("{account_id}/{voice_id}/{engine_id}")
}

/// The provider-side name of a clone made under `claim`: opaque ids only, never user text.
pub fn label(voice_id: &str, claim: &str) -> String {
    format!("voxgate {voice_id} {claim}")
}

/// What one attempt to make a clone came to.
enum Made {
    Id(String),
    /// The claim was taken over meanwhile (this maker stalled): look again.
    Lost,
}

impl VoiceClones {
    pub fn new(store: Arc<dyn Store>, vault: Arc<Vault>) -> Self {
        let key = vault.system_key("voice-clones");
        Self { store, vault, key }
    }

    /// The engine's id for its clone of `reference`, made on first use (once, whichever
    /// instance asks first). Waits for another maker no later than `deadline`.
    pub async fn resolve(
        self: &Arc<Self>,
        engine_id: &str,
        engine: &Arc<dyn Synthesizer>,
        reference: &Arc<VoiceReference>,
        deadline: Instant,
    ) -> Result<String, Error> {
        let mut pause = Duration::from_millis(20);
        loop {
            let token = crate::util::hex(&crate::util::random_bytes::<16>());
            let claim = self
                .store
                .claim_clone(
                    &reference.id,
                    engine_id,
                    &reference.owner,
                    &token,
                    STALE_CLAIM_SECS,
                )
                .await
                .map_err(store_error)?;
            match claim {
                CloneClaim::Made(sealed) => {
                    return self.open(&reference.owner, &reference.id, engine_id, &sealed);
                }
                CloneClaim::Claimed { replaced } => {
                    // In a task of its own: the caller may leave, the maker finishes.
                    let maker = tokio::spawn(Arc::clone(self).make(
                        engine_id.to_owned(),
                        Arc::clone(engine),
                        Arc::clone(reference),
                        token,
                        replaced,
                    ));
                    match maker.await.map_err(|e| {
                        Error::from(EngineError::Internal(format!("clone maker: {e}")))
                    })?? {
                        Made::Id(id) => return Ok(id),
                        Made::Lost => {}
                    }
                }
                CloneClaim::Busy => {
                    if Instant::now() + pause >= deadline {
                        return Err(Error::Timeout);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_POLL);
                }
            }
        }
    }

    /// Makes the clone under `token`'s claim and records it, or deletes it again.
    async fn make(
        self: Arc<Self>,
        engine_id: String,
        engine: Arc<dyn Synthesizer>,
        reference: Arc<VoiceReference>,
        token: String,
        replaced: Option<String>,
    ) -> Result<Made, Error> {
        let voice_id = &reference.id;
        if let Some(dead) = replaced {
            // Its maker died: whatever it uploaded goes before a new one is made.
            if let Err(err) = engine.delete_clones_named(&label(voice_id, &dead)).await {
                tracing::warn!(engine = %engine_id, error = %err, "could not look for the clone of a maker that died");
            }
        }
        let upload = engine.clone_voice(&reference, &label(voice_id, &token));
        let made = {
            tokio::pin!(upload);
            let mut renew = tokio::time::interval_at(Instant::now() + RENEW_EVERY, RENEW_EVERY);
            loop {
                tokio::select! {
                    made = &mut upload => break made,
                    _ = renew.tick() => {
                        if let Err(err) = self.store.renew_clone_claim(voice_id, &engine_id, &token).await {
                            tracing::warn!(error = %err, "could not renew a clone claim");
                        }
                    }
                }
            }
        };
        let id = match made {
            Ok(id) => id,
            Err(err) => {
                self.release(voice_id, &engine_id, &token).await;
                return Err(err.into());
            }
        };
        let sealed = self.vault.seal(
            &self.key,
            KIND,
            &bound_id(&reference.owner, voice_id, &engine_id),
            id.as_bytes(),
        );
        match self
            .store
            .seal_clone(voice_id, &engine_id, &token, &sealed)
            .await
        {
            Ok(true) => Ok(Made::Id(id)),
            Ok(false) => {
                // The voice went while the clone was made (its deletion removed the claim or
                // the voice), or a taker thought this maker dead: the clone is not recorded.
                self.delete_unrecorded(&engine_id, engine.as_ref(), &id)
                    .await;
                self.release(voice_id, &engine_id, &token).await;
                match self.store.voice(&reference.owner, voice_id).await {
                    Ok(Some(_)) => Ok(Made::Lost),
                    Ok(None) => Err(crate::data::voices::not_found(Some("voice"))),
                    Err(err) => Err(store_error(err)),
                }
            }
            Err(err) => {
                self.delete_unrecorded(&engine_id, engine.as_ref(), &id)
                    .await;
                self.release(voice_id, &engine_id, &token).await;
                Err(store_error(err))
            }
        }
    }

    async fn release(&self, voice_id: &str, engine_id: &str, token: &str) {
        if let Err(err) = self.store.release_clone(voice_id, engine_id, token).await {
            tracing::warn!(engine = engine_id, error = %err, "could not release a clone claim; it lapses on its own");
        }
    }

    /// Deletes a clone that could not be recorded (a failure here leaves it at the provider
    /// under its label, which only an operator can now find: logged as such).
    async fn delete_unrecorded(&self, engine_id: &str, engine: &dyn Synthesizer, id: &str) {
        if let Err(err) = engine.delete_clone(id).await {
            tracing::error!(engine = engine_id, error = %err, "could not delete an unrecorded voice clone; delete it at the provider (its name starts with \"voxgate voice_\")");
        }
    }

    fn open(
        &self,
        account_id: &str,
        voice_id: &str,
        engine_id: &str,
        sealed: &[u8],
    ) -> Result<String, Error> {
        let plain = self
            .vault
            .open(
                self.key.owner(),
                Some(&self.key),
                KIND,
                &bound_id(account_id, voice_id, engine_id),
                sealed,
            )
            .map_err(|e| EngineError::Internal(format!("clone record: {e}")))?;
        String::from_utf8(plain)
            .map_err(|_| EngineError::Internal("clone record: not UTF-8".into()).into())
    }

    /// The provider no longer knows the clone `id` (deleted there): deletes it for good and
    /// forgets its record, unless the record already names another clone (someone else got
    /// there first), so the next use makes a new one.
    pub async fn invalidate(
        &self,
        engine_id: &str,
        engine: &dyn Synthesizer,
        reference: &VoiceReference,
        id: &str,
    ) -> Result<(), Error> {
        let rows = self
            .store
            .clones_of(&reference.id, STALE_CLAIM_SECS)
            .await
            .map_err(store_error)?;
        let Some(sealed) = rows
            .into_iter()
            .find(|r| r.engine_id == engine_id)
            .and_then(|r| r.sealed)
        else {
            return Ok(());
        };
        if self.open(&reference.owner, &reference.id, engine_id, &sealed)? != id {
            return Ok(());
        }
        engine.delete_clone(id).await?;
        self.store
            .delete_clone_record(&reference.id, engine_id, Some(&sealed), None)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Deletes every clone made of a stored voice (call it once the voice is gone), at its
    /// engine and then its record. Claims in flight are removed (their makers then delete
    /// what they made); a clone the engine could not delete stays recorded for the sweep.
    pub async fn forget(&self, voice_id: &str, catalog: &Catalog) -> Forgotten {
        match self.store.clones_of(voice_id, STALE_CLAIM_SECS).await {
            Ok(rows) => self.forget_rows(rows, catalog).await,
            Err(err) => {
                tracing::warn!(error = %err, "could not read clone records; the retention sweep retries");
                Forgotten::default()
            }
        }
    }

    /// Like [`VoiceClones::forget`] for every voice of an account (erasure), including
    /// clones whose earlier deletion failed.
    pub async fn forget_account(
        &self,
        account_id: &str,
        catalog: &Catalog,
    ) -> Result<Forgotten, StoreError> {
        let rows = self
            .store
            .clones_of_account(account_id, STALE_CLAIM_SECS)
            .await?;
        Ok(self.forget_rows(rows, catalog).await)
    }

    /// Deletes the clones whose stored voices are gone (a deletion whose engine call failed,
    /// or one that raced the clone's making) and what makers that died left behind.
    pub async fn forget_orphans(&self, catalog: &Catalog) -> Result<Forgotten, StoreError> {
        let rows = self.store.orphan_clones(STALE_CLAIM_SECS).await?;
        Ok(self.forget_rows(rows, catalog).await)
    }

    async fn forget_rows(&self, rows: Vec<CloneRecord>, catalog: &Catalog) -> Forgotten {
        let mut done = Forgotten::default();
        for row in rows {
            let (voice, engine_id) = (&row.voice_id, &row.engine_id);
            let engine = catalog
                .engines()
                .find(|(id, _)| *id == engine_id.as_str())
                .map(|(_, engine)| Arc::clone(engine));
            let deleted = match (&row.sealed, &row.claim) {
                // Being made by a live maker: removing the claim makes it delete the clone.
                (None, Some(claim)) if !row.stale => self
                    .store
                    .delete_clone_record(voice, engine_id, None, Some(claim))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                // Its maker died: delete whatever it may have uploaded, by label.
                (None, Some(claim)) => match &engine {
                    None => Err("its engine is no longer configured".to_owned()),
                    Some(engine) => match engine.delete_clones_named(&label(voice, claim)).await {
                        Ok(()) => self
                            .store
                            .delete_clone_record(voice, engine_id, None, Some(claim))
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Err(err) => Err(err.to_string()),
                    },
                },
                (Some(sealed), _) => match &engine {
                    None => Err("its engine is no longer configured".to_owned()),
                    Some(engine) => match self.open(&row.account_id, voice, engine_id, sealed) {
                        Err(err) => Err(err.to_string()),
                        Ok(id) => match engine.delete_clone(&id).await {
                            Ok(()) => self
                                .store
                                .delete_clone_record(voice, engine_id, Some(sealed), None)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string()),
                            Err(err) => Err(err.to_string()),
                        },
                    },
                },
                (None, None) => Err("a clone record with neither id nor claim".to_owned()),
            };
            match deleted {
                Ok(()) if row.sealed.is_some() => done.deleted += 1,
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(engine = %engine_id, %error, "could not delete a provider-side voice clone; the retention sweep retries");
                    done.kept += 1;
                }
            }
        }
        done
    }
}
