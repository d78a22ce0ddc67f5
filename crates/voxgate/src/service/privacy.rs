//! Data protection duties: an account's export of what voxgate keeps about it, and its
//! erasure.
//!
//! Erasure removes every artifact (stored voices and the clones providers made of them, cached
//! speech), revokes every key, deactivates the account and blanks its name and contact, then
//! destroys the account's data-key salt ([`crate::data::vault::Vault::shred`]): any copy of its
//! sealed objects left anywhere (backups) can no longer be opened. The account row stays, as
//! the subject of audit records (which hold ids and reasons, never content); an
//! `account_erased` record says who erased it.

use std::net::IpAddr;

use serde::Serialize;

use super::Services;
use crate::data::audit::{Actor, AuditEvent};
use crate::data::clones::Forgotten;
use crate::data::store::AuditFilter;
use crate::error::Error;
use crate::util::now;

/// Audit events read per page for an export.
const EXPORT_PAGE: i64 = 500;

/// Everything voxgate keeps about an account, minus secrets (key digests) and the sealed
/// audio itself (listed, not included: it is the caller's own recording).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountExport {
    /// Always `account.export`.
    pub object: &'static str,
    pub exported_at: i64,
    pub account: ExportedAccount,
    pub keys: Vec<ExportedKey>,
    pub voices: Vec<ExportedVoice>,
    /// Audit records about the account or its keys.
    pub audit: Vec<ExportedAudit>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedAccount {
    pub id: String,
    pub name: String,
    pub contact: Option<String>,
    pub tier: String,
    pub active: bool,
    pub created_at: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedKey {
    pub keyid: String,
    pub name: String,
    pub tier: Option<String>,
    pub scopes: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub request_count: i64,
    pub last_used_at: Option<i64>,
    pub last_ip: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedVoice {
    pub id: String,
    pub name: String,
    pub duration_ms: i64,
    pub created_at: i64,
    /// The engines (remote providers) that hold a clone made from it.
    pub cloned_by: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedAudit {
    pub at: i64,
    pub kind: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub detail: String,
}

/// What an erasure removed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Erased {
    pub id: String,
    /// Always `account.deleted`.
    pub object: &'static str,
    pub deleted: bool,
    pub voices_deleted: u64,
    /// Provider-side clones of those voices deleted at their providers.
    pub voice_clones_deleted: u64,
    /// Clones a provider could not delete now; the retention sweep keeps trying.
    pub voice_clones_pending: u64,
    pub keys_revoked: u64,
}

/// The export of `account_id` (which must exist).
impl Services {
    /// Everything voxgate keeps about `account_id`; the export itself is audited, by `actor`.
    pub async fn export_account(
        &self,
        actor: Actor,
        source: Option<IpAddr>,
        account_id: &str,
    ) -> Result<AccountExport, Error> {
        let export = self.export(account_id).await?;
        self.audit
            .record(
                actor,
                source,
                AuditEvent::AccountExported {
                    account_id: account_id.to_owned(),
                },
            )
            .await;
        Ok(export)
    }

    async fn export(&self, account_id: &str) -> Result<AccountExport, Error> {
        let store = &self.store;
        let account = store
            .account(account_id)
            .await
            .map_err(Error::internal)?
            .ok_or_else(|| Error::refused(crate::error::Code::NotFound, "No such account."))?;
        let keys = store
            .keys(Some(account_id))
            .await
            .map_err(Error::internal)?;
        let mut voices = Vec::new();
        for v in self.voices.list(account_id).await? {
            let cloned_by = store
                .clones_of(&v.id, crate::data::clones::STALE_CLAIM_SECS)
                .await
                .map_err(Error::internal)?
                .into_iter()
                .filter(|c| c.sealed.is_some())
                .map(|c| c.engine_id)
                .collect();
            voices.push(ExportedVoice {
                id: v.id,
                name: v.name,
                duration_ms: v.duration_ms,
                created_at: v.created_at,
                cloned_by,
            });
        }
        // The account's audit history, read page by page (the log is never loaded whole).
        let mut audit = Vec::new();
        let mut filter = AuditFilter {
            account_id: Some(account_id.to_owned()),
            limit: EXPORT_PAGE,
            ..AuditFilter::default()
        };
        loop {
            let page = store.audit_page(&filter).await.map_err(Error::internal)?;
            let full = page.len() as i64 == EXPORT_PAGE;
            filter.cursor = page.last().map(|r| r.seq);
            audit.extend(page.into_iter().map(|r| ExportedAudit {
                at: r.at,
                kind: r.kind,
                actor: r.actor,
                subject: r.subject,
                detail: r.detail,
            }));
            if !full {
                break;
            }
        }
        Ok(AccountExport {
            object: "account.export",
            exported_at: now(),
            account: ExportedAccount {
                id: account.id,
                name: account.name,
                contact: account.contact,
                tier: account.tier,
                active: account.active,
                created_at: account.created_at,
            },
            keys: keys
                .into_iter()
                .map(|k| ExportedKey {
                    keyid: k.keyid,
                    name: k.name,
                    tier: k.tier,
                    scopes: k.scopes,
                    created_at: k.created_at,
                    expires_at: k.expires_at,
                    revoked_at: k.revoked_at,
                    request_count: k.request_count,
                    last_used_at: k.last_used_at,
                    last_ip: k.last_ip,
                })
                .collect(),
            voices,
            audit,
        })
    }

    /// Erases `account_id`: see the module documentation for what that means.
    pub async fn erase_account(
        &self,
        actor: Actor,
        source: Option<IpAddr>,
        account_id: &str,
    ) -> Result<Erased, Error> {
        let store = &self.store;
        if store
            .account(account_id)
            .await
            .map_err(Error::internal)?
            .is_none()
        {
            return Err(Error::refused(
                crate::error::Code::NotFound,
                "No such account.",
            ));
        }
        // The data key goes before the content: from here nothing can be sealed for the
        // account (a response still streaming cannot write a cache entry after the cache is
        // emptied below), and any copy left anywhere is unreadable.
        self.vault
            .shred(account_id)
            .await
            .map_err(Error::internal)?;
        let voices_deleted = store
            .delete_voices(account_id)
            .await
            .map_err(Error::internal)?;
        self.cache.remove_owner(account_id).await;
        // Provider-side clones after their voices (a clone still being made then finds its
        // voice gone and deletes itself); their ids are sealed under a system key, so the
        // shredding above does not hide them. One the provider could not delete stays
        // recorded and is retried by the retention sweep.
        let clones = match self.clones.forget_account(account_id, &self.catalog).await {
            Ok(clones) => clones,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the account's clone records; the retention sweep retries");
                Forgotten {
                    deleted: 0,
                    kept: 1,
                }
            }
        };
        let mut keys_revoked = 0;
        for key in store
            .keys(Some(account_id))
            .await
            .map_err(Error::internal)?
        {
            if store
                .revoke_key(&key.keyid, now())
                .await
                .map_err(Error::internal)?
            {
                keys_revoked += 1;
            }
            self.auth.invalidate(&key.keyid);
        }
        store
            .erase_account(account_id, now())
            .await
            .map_err(Error::internal)?;
        self.audit
            .record(
                actor,
                source,
                AuditEvent::AccountErased {
                    account_id: account_id.to_owned(),
                    voices_deleted,
                    keys_revoked,
                },
            )
            .await;
        Ok(Erased {
            id: account_id.to_owned(),
            object: "account.deleted",
            deleted: true,
            voices_deleted,
            voice_clones_deleted: clones.deleted,
            voice_clones_pending: clones.kept,
            keys_revoked,
        })
    }
}
