//! Account and key administration: the library functions behind both the CLI
//! (`voxgate accounts|keys …`) and the admin API. Every change is audited.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use secrecy::SecretString;

use super::auth::{Pepper, Principal, Scope, join_scopes, key};
use crate::config::TierConfig;
use crate::data::audit::{Actor, Audit, AuditEvent};
use crate::data::store::{
    Account, AuditRecord, KeyRecord, QuotaWindow, Store, StoreError, quota_subject,
};
use crate::util::now;

/// What [`Accounts::usage`] reads.
#[derive(Debug)]
pub struct Usage {
    pub account: Account,
    /// The account's own counters (`per = "account"` quotas).
    pub own: Vec<QuotaWindow>,
    /// Each key of the account with its counters (`per = "key"` quotas).
    pub keys: Vec<(KeyRecord, Vec<QuotaWindow>)>,
}

/// Why an administrative change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no tier `{0}` is configured")]
    UnknownTier(String),
    #[error("no such account")]
    NoAccount,
    #[error("no such key, or it is already revoked or rotated")]
    NoKey,
    #[error("a key cannot have a higher tier than its account")]
    WidensTier,
    #[error("a key cannot have scopes its tier lacks: {0}")]
    WidensScopes(String),
    #[error("the account is deactivated")]
    AccountInactive,
    #[error("a key created or rotated through the API cannot exceed the caller's own rights")]
    ExceedsCaller,
    #[error("invalid value for {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a new key looks like.
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    pub name: String,
    pub tier: Option<String>,
    pub scopes: Option<Vec<Scope>>,
    pub expires_at: Option<i64>,
    /// A browser key: the exact web origins (`https://app.example`) it works from.
    pub origins: Option<Vec<String>>,
}

/// Whether `origin` is a serialized web origin: `http(s)://host[:port]`, nothing more.
pub fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 253
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// What a caller of the admin API may itself do: keys it creates or rotates never exceed
/// it (a narrowed admin key cannot mint itself a wider one). The CLI, run by the operator,
/// has no ceiling.
#[derive(Debug, Clone)]
pub struct Ceiling {
    pub tier_rank: u32,
    pub scopes: BTreeSet<Scope>,
    pub expires_at: Option<i64>,
}

impl From<&Principal> for Ceiling {
    fn from(p: &Principal) -> Self {
        Self {
            tier_rank: p.tier.rank,
            scopes: p.scopes.clone(),
            expires_at: p.expires_at,
        }
    }
}

/// A key as created: the record and the full secret, shown once.
#[derive(Debug)]
pub struct CreatedKey {
    pub record: KeyRecord,
    pub secret: SecretString,
}

/// Administration over one store.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    audit: Audit,
    pepper: Arc<Pepper>,
    tiers: BTreeMap<String, TierConfig>,
    rotation_grace_secs: i64,
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        audit: Audit,
        pepper: Arc<Pepper>,
        tiers: BTreeMap<String, TierConfig>,
        rotation_grace_secs: u64,
    ) -> Self {
        Self {
            audit,
            store,
            pepper,
            tiers,
            rotation_grace_secs: i64::try_from(rotation_grace_secs).unwrap_or(i64::MAX),
        }
    }

    /// Every account (an audited read).
    pub async fn list(&self, actor: Actor) -> Result<Vec<Account>, AdminError> {
        self.audit_read(&actor, "accounts", None).await;
        Ok(self.store.accounts().await?)
    }

    /// One account with its keys (an audited read).
    pub async fn show(
        &self,
        actor: Actor,
        id: &str,
    ) -> Result<(Account, Vec<KeyRecord>), AdminError> {
        let account = self.store.account(id).await?.ok_or(AdminError::NoAccount)?;
        self.audit_read(&actor, "account", Some(id)).await;
        let keys = self.store.keys(Some(id)).await?;
        Ok((account, keys))
    }

    /// Keys, of one account or of all (an audited read).
    pub async fn keys(
        &self,
        actor: Actor,
        account_id: Option<&str>,
    ) -> Result<Vec<KeyRecord>, AdminError> {
        self.audit_read(&actor, "keys", account_id).await;
        Ok(self.store.keys(account_id).await?)
    }

    /// An account's quota counters since `since`: the account's own and each key's (an
    /// audited read), with the keys they belong to.
    pub async fn usage(&self, actor: Actor, id: &str, since: i64) -> Result<Usage, AdminError> {
        let account = self.store.account(id).await?.ok_or(AdminError::NoAccount)?;
        self.audit_read(&actor, "usage", Some(id)).await;
        let keys = self.store.keys(Some(id)).await?;
        let own = self
            .store
            .quota_history(&quota_subject::account(id), since)
            .await?;
        let mut of_keys = Vec::with_capacity(keys.len());
        for key in keys {
            let windows = self
                .store
                .quota_history(&quota_subject::key(&key.keyid), since)
                .await?;
            of_keys.push((key, windows));
        }
        Ok(Usage {
            account,
            own,
            keys: of_keys,
        })
    }

    /// Keys of an account, for a change the actor is making (not a read of its own).
    pub async fn keys_of(&self, account_id: &str) -> Result<Vec<KeyRecord>, AdminError> {
        Ok(self.store.keys(Some(account_id)).await?)
    }

    /// A page of the audit log (an audited read).
    pub async fn audit_events(
        &self,
        actor: Actor,
        filter: &crate::data::store::AuditFilter,
    ) -> Result<Vec<AuditRecord>, AdminError> {
        self.audit_read(&actor, "audit", filter.account_id.as_deref())
            .await;
        Ok(self.store.audit_page(filter).await?)
    }

    pub async fn create_account(
        &self,
        actor: Actor,
        name: &str,
        contact: Option<&str>,
        tier: &str,
    ) -> Result<Account, AdminError> {
        if !self.tiers.contains_key(tier) {
            return Err(AdminError::UnknownTier(tier.to_owned()));
        }
        if name.trim().is_empty()
            || name.chars().count() > 200
            || name.chars().any(char::is_control)
        {
            return Err(AdminError::Invalid("name"));
        }
        if contact.is_some_and(|c| c.chars().count() > 200 || c.chars().any(char::is_control)) {
            return Err(AdminError::Invalid("contact"));
        }
        let t = now();
        let account = Account {
            id: format!("acct_{}", uuid::Uuid::new_v4().simple()),
            name: name.trim().to_owned(),
            contact: contact.map(str::to_owned),
            tier: tier.to_owned(),
            active: true,
            created_at: t,
            updated_at: t,
        };
        self.store.create_account(&account).await?;
        self.audit
            .record(
                actor,
                None,
                AuditEvent::AccountCreated {
                    account_id: account.id.clone(),
                    tier: tier.to_owned(),
                },
            )
            .await;
        Ok(account)
    }

    pub async fn deactivate_account(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        if !self.store.set_account_active(id, false, now()).await? {
            return Err(AdminError::NoAccount);
        }
        self.audit
            .record(
                actor,
                None,
                AuditEvent::AccountDeactivated {
                    account_id: id.to_owned(),
                },
            )
            .await;
        Ok(())
    }

    /// Creates a key for `account_id`; its tier and scopes may only narrow the account's.
    pub async fn create_key(
        &self,
        actor: Actor,
        account_id: &str,
        mut request: KeyRequest,
        ceiling: Option<&Ceiling>,
    ) -> Result<CreatedKey, AdminError> {
        let account = self
            .store
            .account(account_id)
            .await?
            .ok_or(AdminError::NoAccount)?;
        if !account.active {
            return Err(AdminError::AccountInactive);
        }
        if let Err(err) = self.check_request(&account, &mut request, ceiling) {
            self.audit_refusal(&actor, "key_create", &account.id, &err)
                .await;
            return Err(err);
        }
        let (record, secret) = self.fresh_key(
            &account.id,
            &request.name,
            request.tier.clone(),
            request.scopes.as_deref().map(join_scopes),
            request.expires_at,
            request.origins.as_ref().map(|o| o.join(" ")),
        );
        self.store.create_key(&record).await?;
        self.audit
            .record(
                actor,
                None,
                AuditEvent::KeyCreated {
                    keyid: record.keyid.clone(),
                    account_id: account.id.clone(),
                    tier: record.tier.clone(),
                    scopes: record.scopes.clone(),
                },
            )
            .await;
        Ok(CreatedKey { record, secret })
    }

    /// A new key's request against its creator's ceiling (an expiry is inherited) and its
    /// account's tier.
    fn check_request(
        &self,
        account: &Account,
        request: &mut KeyRequest,
        ceiling: Option<&Ceiling>,
    ) -> Result<(), AdminError> {
        if let Some(ceiling) = ceiling {
            if let (Some(limit), None) = (ceiling.expires_at, request.expires_at) {
                request.expires_at = Some(limit);
            }
            self.check_ceiling(
                &account.tier,
                request.tier.as_deref(),
                request.scopes.as_deref(),
                request.expires_at,
                ceiling,
            )?;
        }
        self.check_narrowing(account, request)
    }

    /// Audits a refused escalation (a key wider than its account's tier or its creator).
    async fn audit_refusal(
        &self,
        actor: &Actor,
        action: &'static str,
        account_id: &str,
        err: &AdminError,
    ) {
        let reason = match err {
            AdminError::WidensTier => "tier_widening",
            AdminError::WidensScopes(_) => "scope_widening",
            AdminError::ExceedsCaller => "exceeds_caller",
            _ => return,
        };
        self.audit
            .record(
                actor.clone(),
                None,
                AuditEvent::AdminRefused {
                    action,
                    account_id: account_id.to_owned(),
                    reason,
                },
            )
            .await;
    }

    /// Audits an administrator's read.
    async fn audit_read(&self, actor: &Actor, what: &'static str, account_id: Option<&str>) {
        self.audit
            .record(
                actor.clone(),
                None,
                AuditEvent::AdminRead {
                    what,
                    account_id: account_id.map(str::to_owned),
                },
            )
            .await;
    }

    fn check_narrowing(&self, account: &Account, request: &KeyRequest) -> Result<(), AdminError> {
        let account_tier = self
            .tiers
            .get(&account.tier)
            .ok_or_else(|| AdminError::UnknownTier(account.tier.clone()))?;
        let tier = match &request.tier {
            Some(name) => {
                let tier = self
                    .tiers
                    .get(name)
                    .ok_or_else(|| AdminError::UnknownTier(name.clone()))?;
                if tier.rank > account_tier.rank {
                    return Err(AdminError::WidensTier);
                }
                tier
            }
            None => account_tier,
        };
        if let Some(scopes) = &request.scopes {
            let extra: Vec<&str> = scopes
                .iter()
                .filter(|s| !tier.scopes.contains(s))
                .map(|s| s.as_str())
                .collect();
            if !extra.is_empty() {
                return Err(AdminError::WidensScopes(extra.join(" ")));
            }
        }
        if request.expires_at.is_some_and(|e| e <= now()) {
            return Err(AdminError::Invalid("expires"));
        }
        if request.name.chars().count() > 200 || request.name.chars().any(char::is_control) {
            return Err(AdminError::Invalid("name"));
        }
        if let Some(origins) = &request.origins
            && (origins.is_empty() || origins.len() > 16 || !origins.iter().all(|o| is_origin(o)))
        {
            return Err(AdminError::Invalid("origins"));
        }
        Ok(())
    }

    /// A new key (id, secret, digest) and its record, unused and unrevoked.
    fn fresh_key(
        &self,
        account_id: &str,
        name: &str,
        tier: Option<String>,
        scopes: Option<String>,
        expires_at: Option<i64>,
        origins: Option<String>,
    ) -> (KeyRecord, SecretString) {
        let generated = key::generate(&self.pepper);
        let record = KeyRecord {
            keyid: generated.keyid,
            account_id: account_id.to_owned(),
            name: name.to_owned(),
            digest_version: key::DIGEST_VERSION,
            digest: generated.digest,
            tier,
            scopes,
            created_at: now(),
            expires_at,
            revoked_at: None,
            grace_until: None,
            replaced_by: None,
            request_count: 0,
            last_used_at: None,
            last_ip: None,
            origins,
        };
        (record, generated.full)
    }

    pub async fn revoke_key(&self, actor: Actor, keyid: &str) -> Result<(), AdminError> {
        if !self.store.revoke_key(keyid, now()).await? {
            return Err(AdminError::NoKey);
        }
        self.audit
            .record(
                actor,
                None,
                AuditEvent::KeyRevoked {
                    keyid: keyid.to_owned(),
                },
            )
            .await;
        Ok(())
    }

    /// Issues a replacement with the same account, tier, scopes and expiry; the old key works
    /// until the grace deadline, then stops.
    /// Checks that a key with this tier, scopes and expiry stays within `ceiling`.
    fn check_ceiling(
        &self,
        account_tier: &str,
        key_tier: Option<&str>,
        key_scopes: Option<&[Scope]>,
        expires_at: Option<i64>,
        ceiling: &Ceiling,
    ) -> Result<(), AdminError> {
        let tier_name = key_tier.unwrap_or(account_tier);
        let tier = self
            .tiers
            .get(tier_name)
            .ok_or_else(|| AdminError::UnknownTier(tier_name.to_owned()))?;
        let scopes: Vec<Scope> = key_scopes.map_or_else(|| tier.scopes.clone(), <[Scope]>::to_vec);
        let within_expiry = match (ceiling.expires_at, expires_at) {
            (Some(limit), Some(e)) => e <= limit,
            (Some(_), None) => false,
            (None, _) => true,
        };
        if tier.rank > ceiling.tier_rank
            || !scopes.iter().all(|s| ceiling.scopes.contains(s))
            || !within_expiry
        {
            return Err(AdminError::ExceedsCaller);
        }
        Ok(())
    }

    pub async fn rotate_key(
        &self,
        actor: Actor,
        keyid: &str,
        ceiling: Option<&Ceiling>,
    ) -> Result<CreatedKey, AdminError> {
        let (old, account) = self
            .store
            .key_with_account(keyid)
            .await?
            .ok_or(AdminError::NoKey)?;
        if old.revoked_at.is_some() || old.replaced_by.is_some() {
            return Err(AdminError::NoKey);
        }
        if let Some(ceiling) = ceiling {
            let scopes = old.scopes.as_deref().and_then(super::auth::parse_scopes);
            if let Err(err) = self.check_ceiling(
                &account.tier,
                old.tier.as_deref(),
                scopes.as_deref(),
                old.expires_at,
                ceiling,
            ) {
                self.audit_refusal(&actor, "key_rotate", &account.id, &err)
                    .await;
                return Err(err);
            }
        }
        let (record, secret) = self.fresh_key(
            &account.id,
            &old.name,
            old.tier.clone(),
            old.scopes.clone(),
            old.expires_at,
            old.origins.clone(),
        );
        let grace_until = now().saturating_add(self.rotation_grace_secs);
        if !self.store.rotate_key(keyid, &record, grace_until).await? {
            return Err(AdminError::NoKey);
        }
        self.audit
            .record(
                actor,
                None,
                AuditEvent::KeyRotated {
                    keyid: keyid.to_owned(),
                    replaced_by: record.keyid.clone(),
                    grace_until,
                },
            )
            .await;
        Ok(CreatedKey { record, secret })
    }
}

/// Parses an expiry: a duration from now (`90d`, `12h`, `30m`, `3600s`) → seconds since
/// the epoch.
pub fn parse_expiry(text: &str) -> Option<i64> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    now().checked_add(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_durations_from_now() {
        let t = now();
        assert!((parse_expiry("90d").expect("90d") - t - 90 * 86_400).abs() <= 1);
        assert!((parse_expiry("3600s").expect("s") - t - 3600).abs() <= 1);
        for bad in ["", "d", "0d", "-1d", "5y", "1.5h", "99999999999999999d"] {
            assert!(parse_expiry(bad).is_none(), "{bad}");
        }
    }
}
