//! The store behind a circuit breaker and time bounds, so a database outage degrades
//! instead of stalling every request.
//!
//! - Every operation on the request path is bounded (`database.timeout_ms`, on top of the
//!   pool's sub-second acquire timeout); bulk reads (exports, audit verification,
//!   listings) get a longer bound.
//! - Failures that mean "the database is not there" (connection refused or reset, pool
//!   timeout, a shutting-down server, a locked or full SQLite file, a bound exceeded) count
//!   against the breaker; a failed statement does not. While the breaker is open, calls
//!   fail at once with `StoreError::Outage` (503 `store_unavailable`, Retry-After),
//!   and one probe at a time tests recovery: no restart is needed.
//! - [`GuardedStore::ready`] says whether the store answers now (`/readyz`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Account, AuditFilter, AuditRecord, ClientSecretRecord, CloneClaim, CloneRecord, HoldProgress,
    HoldRecord, HoldTag, KeyRecord, QuotaAsk, QuotaCell, QuotaWindow, Store, StoreError,
    VoiceRecord, WebSessionRecord,
};
use crate::engines::breaker::{BreakerConfig, CircuitBreaker};
use crate::observe::Metrics;

/// Which time bound an operation gets.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// On a request's path.
    Request,
    /// Bulk work: migrations, exports, listings, the audit log.
    Slow,
}

/// The store, guarded.
#[derive(Debug)]
pub struct GuardedStore {
    inner: Arc<dyn Store>,
    breaker: Arc<CircuitBreaker>,
    timeout: Duration,
}

/// How long bulk operations may take before they count as an outage.
const SLOW_BOUND: Duration = Duration::from_secs(120);

impl GuardedStore {
    pub fn new(inner: Arc<dyn Store>, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        let breaker = CircuitBreaker::new(
            "store",
            BreakerConfig {
                consecutive_failures: 3,
                failure_rate: 1.0,
                min_requests: u32::MAX,
                window: Duration::from_secs(10),
                cooldown: Duration::from_secs(1),
            },
            metrics,
        );
        Self {
            inner,
            breaker,
            timeout,
        }
    }

    /// Whether the store answers now: `false` while the breaker is open, or when a quick
    /// check (itself guarded, so it probes a half-open breaker) fails.
    pub async fn ready(&self) -> bool {
        self.call(Bound::Request, self.inner.audit_size())
            .await
            .is_ok()
    }

    async fn call<T>(
        &self,
        bound: Bound,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let permit = self.breaker.try_acquire().map_err(|rejected| {
            StoreError::unavailable(format!(
                "the store's breaker is open (next probe in {} ms)",
                rejected.retry_after.as_millis()
            ))
        })?;
        let limit = match bound {
            Bound::Request => self.timeout,
            Bound::Slow => SLOW_BOUND,
        };
        match tokio::time::timeout(limit, op).await {
            Ok(Ok(value)) => {
                permit.success();
                Ok(value)
            }
            Ok(Err(err)) if err.is_outage() => {
                permit.failure();
                Err(err)
            }
            // A failed statement: the database answered.
            Ok(Err(err)) => {
                permit.success();
                Err(err)
            }
            Err(_) => {
                permit.failure();
                Err(StoreError::unavailable(format!(
                    "no answer within {} ms",
                    limit.as_millis()
                )))
            }
        }
    }
}

#[async_trait]
impl Store for GuardedStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.call(Bound::Slow, self.inner.migrate()).await
    }

    async fn create_account(&self, account: &Account) -> Result<(), StoreError> {
        self.call(Bound::Request, self.inner.create_account(account))
            .await
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.call(Bound::Request, self.inner.account(id)).await
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.call(Bound::Slow, self.inner.accounts()).await
    }

    async fn set_account_active(
        &self,
        id: &str,
        active: bool,
        at: i64,
    ) -> Result<bool, StoreError> {
        self.call(
            Bound::Request,
            self.inner.set_account_active(id, active, at),
        )
        .await
    }

    async fn erase_account(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        self.call(Bound::Request, self.inner.erase_account(id, at))
            .await
    }

    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.call(Bound::Request, self.inner.create_key(key)).await
    }

    async fn key_with_account(
        &self,
        keyid: &str,
    ) -> Result<Option<(KeyRecord, Account)>, StoreError> {
        self.call(Bound::Request, self.inner.key_with_account(keyid))
            .await
    }

    async fn keys(&self, account_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        self.call(Bound::Slow, self.inner.keys(account_id)).await
    }

    async fn revoke_key(&self, keyid: &str, at: i64) -> Result<bool, StoreError> {
        self.call(Bound::Request, self.inner.revoke_key(keyid, at))
            .await
    }

    async fn rotate_key(
        &self,
        old: &str,
        new: &KeyRecord,
        grace_until: i64,
    ) -> Result<bool, StoreError> {
        self.call(Bound::Request, self.inner.rotate_key(old, new, grace_until))
            .await
    }

    async fn record_key_use(
        &self,
        keyid: &str,
        count: i64,
        at: i64,
        ip: Option<&str>,
    ) -> Result<(), StoreError> {
        self.call(
            Bound::Request,
            self.inner.record_key_use(keyid, count, at, ip),
        )
        .await
    }

    async fn reserve_quota(
        &self,
        hold: &HoldTag<'_>,
        quota: &QuotaCell<'_>,
        amount: i64,
        limit: i64,
    ) -> Result<bool, StoreError> {
        self.call(
            Bound::Request,
            self.inner.reserve_quota(hold, quota, amount, limit),
        )
        .await
    }

    async fn reserve_quotas(
        &self,
        hold: &HoldTag<'_>,
        asks: &[QuotaAsk<'_>],
    ) -> Result<Result<Vec<(i64, i64)>, usize>, StoreError> {
        self.call(Bound::Request, self.inner.reserve_quotas(hold, asks))
            .await
    }

    async fn settle_hold(
        &self,
        hold_id: &str,
        actual: &(dyn for<'m> Fn(&'m str) -> i64 + Sync),
    ) -> Result<usize, StoreError> {
        self.call(Bound::Request, self.inner.settle_hold(hold_id, actual))
            .await
    }

    async fn release_quota(
        &self,
        hold_id: &str,
        quota: &QuotaCell<'_>,
        amount: i64,
    ) -> Result<(), StoreError> {
        self.call(
            Bound::Request,
            self.inner.release_quota(hold_id, quota, amount),
        )
        .await
    }

    async fn settle_quota(
        &self,
        hold_id: &str,
        quota: &QuotaCell<'_>,
        actual: i64,
    ) -> Result<bool, StoreError> {
        self.call(
            Bound::Request,
            self.inner.settle_quota(hold_id, quota, actual),
        )
        .await
    }

    async fn renew_holds(
        &self,
        lease_secs: i64,
        progress: &[HoldProgress],
    ) -> Result<(), StoreError> {
        self.call(Bound::Slow, self.inner.renew_holds(lease_secs, progress))
            .await
    }

    async fn reconcile_holds(&self, grace_secs: i64) -> Result<Vec<HoldRecord>, StoreError> {
        self.call(Bound::Slow, self.inner.reconcile_holds(grace_secs))
            .await
    }

    async fn quota_holds(&self) -> Result<Vec<HoldRecord>, StoreError> {
        self.call(Bound::Slow, self.inner.quota_holds()).await
    }

    async fn quota_usage(
        &self,
        subject: &str,
        metric: &str,
        window_start: i64,
    ) -> Result<(i64, i64), StoreError> {
        self.call(
            Bound::Request,
            self.inner.quota_usage(subject, metric, window_start),
        )
        .await
    }

    async fn insert_voice(
        &self,
        voice: &VoiceRecord,
        max_per_account: i64,
    ) -> Result<bool, StoreError> {
        self.call(
            Bound::Request,
            self.inner.insert_voice(voice, max_per_account),
        )
        .await
    }

    async fn voices(&self, account_id: &str) -> Result<Vec<VoiceRecord>, StoreError> {
        self.call(Bound::Request, self.inner.voices(account_id))
            .await
    }

    async fn voice(&self, account_id: &str, id: &str) -> Result<Option<VoiceRecord>, StoreError> {
        self.call(Bound::Request, self.inner.voice(account_id, id))
            .await
    }

    async fn voices_created_before(&self, cutoff: i64) -> Result<Vec<VoiceRecord>, StoreError> {
        self.call(Bound::Slow, self.inner.voices_created_before(cutoff))
            .await
    }

    async fn delete_voice(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        self.call(Bound::Request, self.inner.delete_voice(account_id, id))
            .await
    }

    async fn insert_client_secret(&self, secret: &ClientSecretRecord) -> Result<(), StoreError> {
        self.call(Bound::Request, self.inner.insert_client_secret(secret))
            .await
    }

    async fn client_secret(&self, id: &str) -> Result<Option<ClientSecretRecord>, StoreError> {
        self.call(Bound::Request, self.inner.client_secret(id))
            .await
    }

    async fn purge_client_secrets(&self, expired_before: i64) -> Result<u64, StoreError> {
        self.call(Bound::Slow, self.inner.purge_client_secrets(expired_before))
            .await
    }

    async fn quota_history(
        &self,
        subject: &str,
        since: i64,
    ) -> Result<Vec<QuotaWindow>, StoreError> {
        self.call(Bound::Slow, self.inner.quota_history(subject, since))
            .await
    }

    async fn insert_web_session(&self, session: &WebSessionRecord) -> Result<(), StoreError> {
        self.call(Bound::Request, self.inner.insert_web_session(session))
            .await
    }

    async fn web_session(&self, digest: &[u8]) -> Result<Option<WebSessionRecord>, StoreError> {
        self.call(Bound::Request, self.inner.web_session(digest))
            .await
    }

    async fn touch_web_session(&self, digest: &[u8], seen_at: i64) -> Result<(), StoreError> {
        self.call(
            Bound::Request,
            self.inner.touch_web_session(digest, seen_at),
        )
        .await
    }

    async fn delete_web_session(&self, digest: &[u8]) -> Result<bool, StoreError> {
        self.call(Bound::Request, self.inner.delete_web_session(digest))
            .await
    }

    async fn purge_web_sessions(&self, now: i64, idle_before: i64) -> Result<u64, StoreError> {
        self.call(Bound::Slow, self.inner.purge_web_sessions(now, idle_before))
            .await
    }

    async fn append_audit(
        &self,
        event: &AuditRecord,
        leaf: for<'r> fn(&'r AuditRecord) -> String,
    ) -> Result<i64, StoreError> {
        self.call(Bound::Request, self.inner.append_audit(event, leaf))
            .await
    }

    async fn ensure_data_key_salt(
        &self,
        account_id: &str,
        salt: &str,
    ) -> Result<String, StoreError> {
        self.call(
            Bound::Request,
            self.inner.ensure_data_key_salt(account_id, salt),
        )
        .await
    }

    async fn data_key_salt(&self, account_id: &str) -> Result<Option<String>, StoreError> {
        self.call(Bound::Request, self.inner.data_key_salt(account_id))
            .await
    }

    async fn shred_data_key(&self, account_id: &str) -> Result<(), StoreError> {
        self.call(Bound::Request, self.inner.shred_data_key(account_id))
            .await
    }

    async fn reseal_voice(
        &self,
        account_id: &str,
        id: &str,
        name: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.call(
            Bound::Request,
            self.inner.reseal_voice(account_id, id, name, sealed),
        )
        .await
    }

    async fn claim_clone(
        &self,
        voice_id: &str,
        engine_id: &str,
        account_id: &str,
        token: &str,
        stale_secs: i64,
    ) -> Result<CloneClaim, StoreError> {
        self.call(
            Bound::Request,
            self.inner
                .claim_clone(voice_id, engine_id, account_id, token, stale_secs),
        )
        .await
    }

    async fn renew_clone_claim(
        &self,
        voice_id: &str,
        engine_id: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        self.call(
            Bound::Request,
            self.inner.renew_clone_claim(voice_id, engine_id, token),
        )
        .await
    }

    async fn seal_clone(
        &self,
        voice_id: &str,
        engine_id: &str,
        token: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.call(
            Bound::Request,
            self.inner.seal_clone(voice_id, engine_id, token, sealed),
        )
        .await
    }

    async fn release_clone(
        &self,
        voice_id: &str,
        engine_id: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        self.call(
            Bound::Request,
            self.inner.release_clone(voice_id, engine_id, token),
        )
        .await
    }

    async fn clones_of(
        &self,
        voice_id: &str,
        stale_secs: i64,
    ) -> Result<Vec<CloneRecord>, StoreError> {
        self.call(Bound::Request, self.inner.clones_of(voice_id, stale_secs))
            .await
    }

    async fn clones_of_account(
        &self,
        account_id: &str,
        stale_secs: i64,
    ) -> Result<Vec<CloneRecord>, StoreError> {
        self.call(
            Bound::Slow,
            self.inner.clones_of_account(account_id, stale_secs),
        )
        .await
    }

    async fn orphan_clones(&self, stale_secs: i64) -> Result<Vec<CloneRecord>, StoreError> {
        self.call(Bound::Slow, self.inner.orphan_clones(stale_secs))
            .await
    }

    async fn delete_clone_record(
        &self,
        voice_id: &str,
        engine_id: &str,
        sealed: Option<&[u8]>,
        claim: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.call(
            Bound::Request,
            self.inner
                .delete_clone_record(voice_id, engine_id, sealed, claim),
        )
        .await
    }

    async fn delete_voices(&self, account_id: &str) -> Result<u64, StoreError> {
        self.call(Bound::Slow, self.inner.delete_voices(account_id))
            .await
    }

    async fn audit_size(&self) -> Result<i64, StoreError> {
        self.call(Bound::Request, self.inner.audit_size()).await
    }

    async fn audit_log_from(&self, from: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.call(Bound::Slow, self.inner.audit_log_from(from))
            .await
    }

    async fn add_checkpoint(&self, size: i64, at: i64, note: &str) -> Result<(), StoreError> {
        self.call(Bound::Request, self.inner.add_checkpoint(size, at, note))
            .await
    }

    async fn checkpoints(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.call(Bound::Slow, self.inner.checkpoints()).await
    }

    async fn audit_events(&self, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.call(Bound::Slow, self.inner.audit_events(limit)).await
    }

    async fn audit_page(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.call(Bound::Slow, self.inner.audit_page(filter)).await
    }
}
