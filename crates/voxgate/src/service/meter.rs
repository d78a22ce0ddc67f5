//! The metered life of a request, shared by every service: the caller's concurrency slots,
//! a place on each engine actually used, the quota reservation. Refusals are counted and
//! logged as security events here, where they are decided.

use std::time::Duration;

use super::Services;
use crate::error::{Code, Error};
use crate::identity::auth::Principal;
use crate::limits::quota::{self, Amounts, QuotaHold};
use crate::limits::{EngineSlot, InFlight, Refusal};

impl Services {
    /// Takes the caller's slots: 429 `too_many_concurrent_requests` when the key or account
    /// has its maximum in flight, 503 `overloaded` when the instance is full.
    pub fn admit(&self, principal: &Principal) -> Result<InFlight, Error> {
        self.concurrency
            .admit_caller(
                &principal.keyid,
                principal.tier.max_concurrent_per_key,
                &principal.account_id,
                principal.tier.max_concurrent_per_account,
            )
            .map_err(|refusal| self.refused(refusal))
    }

    /// A place in `engine`'s queue (503 `overloaded` when it is full or the wait runs out).
    /// The refusal is not counted here: a fallback engine may still serve the request.
    pub async fn admit_engine(&self, engine: &str) -> Result<EngineSlot, Error> {
        self.concurrency
            .admit_engine(engine)
            .await
            .map_err(refusal_error)
    }

    /// Counts a request refused for concurrency (key, account, instance or every engine of
    /// its chain full) and says so in the security log.
    pub fn count_overload(&self) {
        self.metrics.concurrency_refused.inc();
        tracing::info!(target: "voxgate::security", event = "concurrency_refused", "request refused by a concurrency cap");
    }

    fn refused(&self, refusal: Refusal) -> Error {
        self.count_overload();
        refusal_error(refusal)
    }

    /// Reserves `amounts` against the principal's quotas: 429 `quota_exceeded` when a budget
    /// cannot hold them. The hold gives everything back unless settled.
    pub async fn reserve(
        &self,
        principal: &Principal,
        amounts: Amounts,
    ) -> Result<QuotaHold, Error> {
        match quota::reserve(
            &self.store,
            &self.holds,
            principal,
            &principal.tier.quotas,
            amounts,
        )
        .await
        {
            Ok(Ok(hold)) => Ok(hold),
            Ok(Err(exceeded)) => Err(self.quota_refused(exceeded.retry_after)),
            Err(e) => Err(Error::internal(e)),
        }
    }

    /// Counts a quota refusal and says so in the security log.
    pub fn quota_refused(&self, retry_after: Duration) -> Error {
        self.metrics.quota_exceeded.inc();
        tracing::info!(target: "voxgate::security", event = "quota_exceeded", "request refused: quota spent");
        Error::limited(Code::QuotaExceeded, retry_after)
    }
}

fn refusal_error(refusal: Refusal) -> Error {
    match refusal {
        // A slot frees when a request of this caller ends; a second is a fair first wait.
        Refusal::TooManyConcurrent => {
            Error::limited(Code::TooManyConcurrentRequests, Duration::from_secs(1))
        }
        Refusal::Overloaded { retry_after } => Error::limited(Code::Overloaded, retry_after),
    }
}
