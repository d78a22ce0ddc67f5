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
//! clone; the others see the claim and wait (bounded by their deadline) for the sealed id. A
//! claim whose maker died is taken over after [`STALE_CLAIM_SECS`]. A maker whose claim is
//! gone when it finishes (the voice was deleted meanwhile) deletes the clone it made.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use voxgate_engine::{EngineError, Synthesizer, VoiceReference};

use crate::data::store::{CloneClaim, CloneRecord, Store, StoreError};
use crate::data::vault::{AccountKey, Vault};
use crate::engines::Catalog;

/// The vault kind of a sealed clone id.
const KIND: &str = "voice_clone";
/// A claim older than this, with no clone recorded, belongs to a maker that died. Far longer
/// than any provider call may take.
pub const STALE_CLAIM_SECS: i64 = 120;
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

fn store_error(err: StoreError) -> EngineError {
    EngineError::Internal(format!("clone records: {err}"))
}

/// The id a sealed clone is bound to: its account, stored voice and engine.
fn bound_id(account_id: &str, voice_id: &str, engine_id: &str) -> String {
    format!("{account_id}/{voice_id}/{engine_id}")
}

impl VoiceClones {
    pub fn new(store: Arc<dyn Store>, vault: Arc<Vault>) -> Self {
        let key = vault.system_key("voice-clones");
        Self { store, vault, key }
    }

    /// The engine's id for its clone of `reference`, made on first use (once, whichever
    /// instance asks first). Waits for another maker no later than `deadline`.
    pub async fn resolve(
        &self,
        engine_id: &str,
        engine: &dyn Synthesizer,
        reference: &VoiceReference,
        deadline: Instant,
    ) -> Result<String, EngineError> {
        let token = crate::util::hex(&crate::util::random_bytes::<16>());
        let mut pause = Duration::from_millis(20);
        loop {
            let stale_before = crate::util::now() - STALE_CLAIM_SECS;
            let claim = self
                .store
                .claim_clone(
                    &reference.id,
                    engine_id,
                    &reference.owner,
                    &token,
                    stale_before,
                )
                .await
                .map_err(store_error)?;
            match claim {
                CloneClaim::Made(sealed) => {
                    return self.open(&reference.owner, &reference.id, engine_id, &sealed);
                }
                CloneClaim::Claimed => {
                    return self.make(engine_id, engine, reference, &token).await;
                }
                CloneClaim::Busy => {
                    if Instant::now() + pause >= deadline {
                        return Err(EngineError::Timeout);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_POLL);
                }
            }
        }
    }

    /// Makes the clone under `token`'s claim and records it.
    async fn make(
        &self,
        engine_id: &str,
        engine: &dyn Synthesizer,
        reference: &VoiceReference,
        token: &str,
    ) -> Result<String, EngineError> {
        let made = match engine.clone_voice(reference).await {
            Ok(made) => made,
            Err(err) => {
                if let Err(e) = self
                    .store
                    .release_clone(&reference.id, engine_id, token)
                    .await
                {
                    tracing::warn!(engine = engine_id, error = %e, "could not release a clone claim; it lapses on its own");
                }
                return Err(err);
            }
        };
        let sealed = self.vault.seal(
            &self.key,
            KIND,
            &bound_id(&reference.owner, &reference.id, engine_id),
            made.as_bytes(),
        );
        let recorded = self
            .store
            .seal_clone(&reference.id, engine_id, token, &sealed)
            .await;
        // The voice may have been deleted while the clone was made: its deletion removed the
        // claim (or, if it came after the record, will find it; the voice check below covers
        // a deletion between the two).
        let voice_lives = match &recorded {
            Ok(true) => self
                .store
                .voice(&reference.owner, &reference.id)
                .await
                .map(|v| v.is_some()),
            Ok(false) => Ok(false),
            Err(_) => Ok(false),
        };
        match (recorded, voice_lives) {
            (Ok(true), Ok(true)) => Ok(made),
            (recorded, _) => {
                if let Err(err) = engine.delete_clone(&made).await {
                    // Recorded: the sweep deletes it later. Not recorded: nothing can.
                    tracing::warn!(engine = engine_id, error = %err, recorded = matches!(recorded, Ok(true)), "could not delete the clone of a voice deleted while it was made");
                } else if matches!(recorded, Ok(true)) {
                    let _ = self
                        .store
                        .delete_clone_record(&reference.id, engine_id)
                        .await;
                }
                Err(match recorded {
                    Err(e) => store_error(e),
                    Ok(_) => EngineError::Unsupported("the stored voice was deleted"),
                })
            }
        }
    }

    fn open(
        &self,
        account_id: &str,
        voice_id: &str,
        engine_id: &str,
        sealed: &[u8],
    ) -> Result<String, EngineError> {
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
            .map_err(|_| EngineError::Internal("clone record: not UTF-8".into()))
    }

    /// Forgets a clone the engine no longer knows (deleted at the provider), so the next use
    /// makes a new one.
    pub async fn invalidate(&self, voice_id: &str, engine_id: &str) -> Result<(), EngineError> {
        self.store
            .delete_clone_record(voice_id, engine_id)
            .await
            .map_err(store_error)
    }

    /// Deletes every clone made of a stored voice, at its engine and then its record. Claims
    /// in flight are removed (their makers then delete what they made); a clone the engine
    /// could not delete stays recorded for the retention sweep.
    pub async fn forget(&self, voice_id: &str, catalog: &Catalog) -> Forgotten {
        match self.store.clones_of(voice_id).await {
            Ok(rows) => self.forget_rows(rows, catalog).await,
            Err(err) => {
                tracing::warn!(error = %err, "could not read clone records; the retention sweep retries");
                Forgotten::default()
            }
        }
    }

    /// Deletes the clones whose stored voices are gone (a deletion whose engine call failed,
    /// or one that raced the clone's making).
    pub async fn forget_orphans(&self, catalog: &Catalog) -> Result<Forgotten, StoreError> {
        let rows = self
            .store
            .orphan_clones(crate::util::now() - STALE_CLAIM_SECS)
            .await?;
        Ok(self.forget_rows(rows, catalog).await)
    }

    async fn forget_rows(&self, rows: Vec<CloneRecord>, catalog: &Catalog) -> Forgotten {
        let mut done = Forgotten::default();
        for row in rows {
            let Some(sealed) = &row.sealed else {
                // Being made: removing the claim makes its maker delete the clone.
                match self
                    .store
                    .delete_clone_record(&row.voice_id, &row.engine_id)
                    .await
                {
                    Ok(()) => {}
                    Err(_) => done.kept += 1,
                }
                continue;
            };
            let engine = catalog
                .engines()
                .find(|(id, _)| *id == row.engine_id)
                .map(|(_, engine)| Arc::clone(engine));
            let Some(engine) = engine else {
                tracing::warn!(engine = %row.engine_id, "a voice clone's engine is no longer configured; its record is kept");
                done.kept += 1;
                continue;
            };
            let id = match self.open(&row.account_id, &row.voice_id, &row.engine_id, sealed) {
                Ok(id) => id,
                Err(err) => {
                    tracing::warn!(engine = %row.engine_id, error = %err, "a voice clone's record cannot be opened; it is kept");
                    done.kept += 1;
                    continue;
                }
            };
            match engine.delete_clone(&id).await {
                Ok(()) => match self
                    .store
                    .delete_clone_record(&row.voice_id, &row.engine_id)
                    .await
                {
                    Ok(()) => done.deleted += 1,
                    Err(err) => {
                        tracing::warn!(error = %err, "could not remove a deleted clone's record");
                        done.kept += 1;
                    }
                },
                Err(err) => {
                    tracing::warn!(engine = %row.engine_id, error = %err, "could not delete a provider-side voice clone; the retention sweep retries");
                    done.kept += 1;
                }
            }
        }
        done
    }
}
