//! The audit log as an administrator reads it: the latest signed checkpoint and a full
//! verification, the same one `voxgate audit verify` runs, against this server's own
//! verifier key and witness copy (an independent check uses an off-host copy of both with
//! the CLI).

use serde::Serialize;

use super::Services;
use crate::data::audit::{Actor, AuditEvent, tlog};
use crate::error::Error;

/// What a verification found.
#[derive(Debug, Serialize)]
pub struct Verification {
    /// Whether the log checked out and is vouched for by a fresh checkpoint.
    pub ok: bool,
    pub entries: u64,
    /// Checkpoint signatures that verified (database and witness copies).
    pub checkpoints: usize,
    /// Entries covered by a verified checkpoint.
    pub covered: u64,
    /// The first bad position and why.
    pub first_bad: Option<(u64, String)>,
    /// Why the checkpoints do not vouch for the log, if they do not.
    pub stale: Option<String>,
    /// The newest checkpoint, as signed (a C2SP note).
    pub latest_checkpoint: Option<String>,
}

impl Services {
    /// Verifies the whole audit log against the signed checkpoints (database and witness),
    /// one verification at a time; an audited read of `actor`.
    pub async fn verify_audit(&self, actor: Actor) -> Result<Verification, Error> {
        let _one = self.verifying.lock().await;
        self.audit
            .record(
                actor,
                None,
                AuditEvent::AdminRead {
                    what: "audit_verify",
                    account_id: None,
                },
            )
            .await;
        let config = &self.config;
        let witness = tlog::witness_dir(&config.audit, &config.data_dir);
        let verifier = tlog::load_verifier(None, &witness).map_err(internal)?;
        let freshness = tlog::Freshness::of(&config.audit, false);
        let report = tlog::verify(self.store.as_ref(), &verifier, Some(&witness), &freshness)
            .await
            .map_err(internal)?;
        let latest_checkpoint = self
            .store
            .checkpoints()
            .await
            .map_err(Error::internal)?
            .into_iter()
            .max_by_key(|(size, _)| *size)
            .map(|(_, note)| note);
        Ok(Verification {
            ok: report.first_bad.is_none() && report.stale.is_none(),
            entries: report.entries,
            checkpoints: report.checkpoints,
            covered: report.covered,
            first_bad: report.first_bad,
            stale: report.stale,
            latest_checkpoint,
        })
    }
}

fn internal(err: anyhow::Error) -> Error {
    Error::internal(std::io::Error::other(format!("{err:#}")))
}
