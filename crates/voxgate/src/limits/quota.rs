//! Quotas: durable per-period budgets (characters, audio seconds, requests) per account or
//! key, reserved atomically in the store before the work, then settled to the actual amount
//! or refunded on failure. Parallel requests can never overspend: the reservation is one
//! conditional UPDATE.

use std::sync::Arc;
use std::time::Duration;

use crate::config::RateSubject;
use crate::data::store::Store;
use crate::identity::auth::Principal;
use crate::util::now;

pub use crate::config::{Metric, QuotaRule};

fn period_secs(rule: &QuotaRule) -> i64 {
    rule.period.duration().as_secs() as i64
}

/// The amounts one request will use (estimates when reserving, actuals when settling).
#[derive(Debug, Clone, Copy, Default)]
pub struct Amounts {
    pub characters: i64,
    pub audio_seconds: i64,
    pub requests: i64,
    pub transcribed_seconds: i64,
}

impl Amounts {
    fn of(&self, metric: Metric) -> i64 {
        match metric {
            Metric::Characters => self.characters,
            Metric::AudioSeconds => self.audio_seconds,
            Metric::Requests => self.requests,
            Metric::TranscribedSeconds => self.transcribed_seconds,
        }
    }
}

/// A quota would be exceeded.
#[derive(Debug, Clone, Copy)]
pub struct QuotaExceeded {
    /// Until the window that ran out ends.
    pub retry_after: Duration,
}

#[derive(Debug, Clone)]
struct Reservation {
    subject: String,
    metric: Metric,
    window_start: i64,
    amount: i64,
    limit: i64,
    period: i64,
}

/// A character budget as OpenAI's `x-ratelimit-*-tokens` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: i64,
    pub remaining: i64,
    pub reset_after: Duration,
}

/// Reservations held by one request. Settle them when the work is done; dropped unsettled
/// (failure, client gone) they are refunded.
#[derive(Debug)]
pub struct QuotaHold {
    store: Arc<dyn Store>,
    reservations: Vec<Reservation>,
}

impl QuotaHold {
    /// How much of `metric` is reserved (the most a request may use of it).
    pub fn reserved(&self, metric: Metric) -> Option<i64> {
        self.reservations
            .iter()
            .filter(|r| r.metric == metric)
            .map(|r| r.amount)
            .min()
    }

    /// The tightest character budget after this reservation (one read per quota).
    pub async fn character_budget(&self) -> Option<Budget> {
        let t = now();
        let mut tightest: Option<Budget> = None;
        for r in self
            .reservations
            .iter()
            .filter(|r| r.metric == Metric::Characters)
        {
            let (used, reserved) = self
                .store
                .quota_usage(&r.subject, r.metric.as_str(), r.window_start)
                .await
                .ok()?;
            let budget = Budget {
                limit: r.limit,
                remaining: (r.limit - used - reserved).max(0),
                reset_after: Duration::from_secs(
                    u64::try_from(r.window_start + r.period - t).unwrap_or(0),
                ),
            };
            if tightest.is_none_or(|b| budget.remaining < b.remaining) {
                tightest = Some(budget);
            }
        }
        tightest
    }

    /// Reserves `extra` more of `metric` on every quota that counts it (all or none):
    /// `false` when a budget cannot hold it, and then nothing more is reserved.
    pub async fn extend(
        &mut self,
        metric: Metric,
        extra: i64,
    ) -> Result<bool, crate::data::store::StoreError> {
        if extra <= 0 {
            return Ok(true);
        }
        let mut done: Vec<usize> = Vec::new();
        for (i, r) in self.reservations.iter().enumerate() {
            if r.metric != metric {
                continue;
            }
            let granted = self
                .store
                .reserve_quota(
                    &r.subject,
                    r.metric.as_str(),
                    r.window_start,
                    extra,
                    r.limit,
                )
                .await;
            match granted {
                Ok(true) => done.push(i),
                outcome => {
                    // Give back what this call took on the other quotas.
                    for &j in &done {
                        let r = &self.reservations[j];
                        let _ = self
                            .store
                            .settle_quota(&r.subject, r.metric.as_str(), r.window_start, extra, 0)
                            .await;
                    }
                    return outcome.map(|_| false);
                }
            }
        }
        for i in done {
            self.reservations[i].amount += extra;
        }
        Ok(true)
    }

    /// Records the actual use (never above what was reserved) and releases the rest.
    pub async fn settle(mut self, actual: Amounts) {
        let reservations = std::mem::take(&mut self.reservations);
        release(&self.store, &reservations, Some(actual)).await;
    }

    /// Gives everything back (nothing was used).
    pub async fn refund(mut self) {
        let reservations = std::mem::take(&mut self.reservations);
        release(&self.store, &reservations, None).await;
    }
}

impl Drop for QuotaHold {
    fn drop(&mut self) {
        if self.reservations.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        let reservations = std::mem::take(&mut self.reservations);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&store, &reservations, None).await });
        }
    }
}

async fn release(store: &Arc<dyn Store>, reservations: &[Reservation], actual: Option<Amounts>) {
    for r in reservations {
        let used = actual.map_or(0, |a| a.of(r.metric).clamp(0, r.amount));
        if let Err(e) = store
            .settle_quota(
                &r.subject,
                r.metric.as_str(),
                r.window_start,
                r.amount,
                used,
            )
            .await
        {
            tracing::error!(error = %e, metric = r.metric.as_str(), "quota settlement failed");
        }
    }
}

/// Reserves every quota of the principal's tier for a request.
pub async fn reserve(
    store: &Arc<dyn Store>,
    principal: &Principal,
    rules: &[QuotaRule],
    estimate: Amounts,
) -> Result<Result<QuotaHold, QuotaExceeded>, crate::data::store::StoreError> {
    let mut hold = QuotaHold {
        store: Arc::clone(store),
        reservations: Vec::new(),
    };
    let t = now();
    for rule in rules {
        let amount = estimate.of(rule.metric);
        if amount <= 0 {
            continue;
        }
        let subject = match rule.per {
            RateSubject::Account => format!("acct:{}", principal.account_id),
            RateSubject::Key => format!("key:{}", principal.keyid),
        };
        let period = period_secs(rule);
        let window_start = t - t.rem_euclid(period);
        let limit = i64::try_from(rule.limit).unwrap_or(i64::MAX);
        // On refusal (or error) `hold` drops and refunds what was already reserved.
        if !store
            .reserve_quota(&subject, rule.metric.as_str(), window_start, amount, limit)
            .await?
        {
            let retry_after =
                Duration::from_secs(u64::try_from(window_start + period - t).unwrap_or(1).max(1));
            return Ok(Err(QuotaExceeded { retry_after }));
        }
        hold.reservations.push(Reservation {
            subject,
            metric: rule.metric,
            window_start,
            amount,
            limit,
            period,
        });
    }
    Ok(Ok(hold))
}
