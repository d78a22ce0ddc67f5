//! Quotas: durable per-period budgets (characters, audio seconds, requests) per account or
//! key, reserved atomically in the store before the work, then settled to the actual amount
//! or refunded on failure. Parallel requests can never overspend: each reservation is one
//! conditional upsert, and a request's reservations on all its quotas are one transaction
//! (as is its settlement).
//!
//! Every reservation has a holder (`quota_holds`: the request's random id, this instance,
//! a deadline). The [`HoldBook`] renews the deadlines of this instance's live holds every few
//! seconds, with what each has delivered so far; a hold whose deadline has passed by a
//! whole lease (its process was killed, or is stuck) is settled by any instance at its last
//! reported delivery. So a crash never leaves quota stuck, and settling is idempotent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::RateSubject;
use crate::data::journal::{Entry, Journal};
use crate::data::store::{
    HoldProgress, HoldTag, QuotaAsk, QuotaCell, Store, StoreError, quota_subject,
};
use crate::identity::auth::Principal;
use crate::util::{hex, now, random_bytes};

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
    /// The window's (used, reserved) right after this reservation was made.
    usage: (i64, i64),
}

impl Reservation {
    fn cell(&self) -> QuotaCell<'_> {
        QuotaCell {
            subject: &self.subject,
            metric: self.metric.as_str(),
            window_start: self.window_start,
        }
    }
}

/// How long a hold lives without renewal, and how often live holds are renewed (with their
/// progress) and dead holders' holds reconciled.
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    pub lease: Duration,
    pub renew_every: Duration,
}

impl Default for Leases {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// What one request has delivered so far, as its front door reports it (atomics: written
/// per chunk by the stream, read by the renewal).
#[derive(Debug, Default)]
struct Progress {
    characters: AtomicI64,
    audio_seconds: AtomicI64,
    requests: AtomicI64,
    transcribed_seconds: AtomicI64,
}

impl Progress {
    fn get(&self, metric: Metric) -> i64 {
        let cell = match metric {
            Metric::Characters => &self.characters,
            Metric::AudioSeconds => &self.audio_seconds,
            Metric::Requests => &self.requests,
            Metric::TranscribedSeconds => &self.transcribed_seconds,
        };
        cell.load(Ordering::Relaxed)
    }
}

/// A live hold's progress and the metrics it reserved.
type LiveHold = (Arc<Progress>, Vec<Metric>);

/// This instance's live holds: their ids and progress, renewed together. Holds register
/// when they reserve and leave when they settle (or drop).
#[derive(Debug)]
pub struct HoldBook {
    /// This process's id in `quota_holds.instance` (random per start).
    instance: String,
    leases: Leases,
    live: Mutex<HashMap<String, LiveHold>>,
    /// Where settlements wait while the store is unavailable.
    journal: Arc<Journal>,
    /// When this instance's holds were last renewed (or it started).
    renewed: Mutex<tokio::time::Instant>,
    /// Since when every upkeep reached the store and left nothing in this instance's
    /// journal (`None` after one did not). Reconciling waits until this is a lease and a
    /// renewal old: after an outage every holder first gets that long to replay its
    /// journal and renew, so a hold whose settlement is journaled is not reconciled at an
    /// older report.
    reachable_since: Mutex<Option<tokio::time::Instant>>,
}

impl HoldBook {
    pub fn new(leases: Leases, journal: Arc<Journal>) -> Arc<Self> {
        Arc::new(Self {
            instance: hex(&random_bytes::<8>()),
            leases,
            live: Mutex::new(HashMap::new()),
            journal,
            renewed: Mutex::new(tokio::time::Instant::now()),
            // A start counts as the store just returning: an instance may start (or restart
            // in a loop) exactly when the database comes back, and the holders must still
            // get their turn to replay their journals. Holds a crash left wait a lease and
            // a renewal longer for it.
            reachable_since: Mutex::new(Some(tokio::time::Instant::now())),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn lease_secs(&self) -> i64 {
        i64::try_from(self.leases.lease.as_secs())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveHold>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reachable_since(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        self.reachable_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn leave(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The progress of every live hold, per metric it reserved.
    fn progress(&self) -> Vec<HoldProgress> {
        let live = self.lock();
        let mut out = Vec::with_capacity(live.len());
        for (id, (progress, metrics)) in live.iter() {
            for &metric in metrics {
                out.push(HoldProgress {
                    id: id.clone(),
                    metric: metric.as_str(),
                    delivered: progress.get(metric),
                });
            }
        }
        out
    }

    /// One round of upkeep: renews this instance's live holds (recording what they
    /// delivered so far), then settles the holds of dead holders: those whose deadline
    /// passed a whole lease ago (so a live holder that could not renew for a moment keeps
    /// its holds). Returns how many were reconciled.
    pub async fn upkeep(&self, store: &Arc<dyn Store>) -> Result<usize, StoreError> {
        // Bounded by a lease (the store's own bound on these calls is longer): a holder
        // whose upkeep stalls on a dead connection gets back to replaying its journal
        // within the time other instances give it.
        let result = tokio::time::timeout(self.leases.lease, self.upkeep_once(store))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::unavailable(
                    "the quota upkeep took longer than a lease",
                ))
            });
        if result.is_err() {
            *self.reachable_since() = None;
        }
        result
    }

    async fn upkeep_once(&self, store: &Arc<dyn Store>) -> Result<usize, StoreError> {
        // Journaled settlements first: their holds are settled at what was delivered,
        // before reconciliation could settle them at an older report.
        let mut pending = 0;
        if !self.journal.is_empty() {
            let replayed = self.journal.replay(store.as_ref()).await;
            pending = replayed.pending;
            if replayed.applied > 0 {
                tracing::info!(
                    applied = replayed.applied,
                    pending,
                    "wrote journaled quota settlements"
                );
            }
        }
        store
            .renew_holds(self.lease_secs(), &self.progress())
            .await?;
        let now = tokio::time::Instant::now();
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = now;
        if pending > 0 {
            // The store took the renewal but not every settlement: not back yet, as far
            // as reconciling goes (one of the holds waiting could be this instance's).
            *self.reachable_since() = None;
            return Ok(0);
        }
        let since = *self.reachable_since().get_or_insert(now);
        if now.duration_since(since) < self.leases.lease + self.leases.renew_every {
            return Ok(0);
        }
        let settled = store.reconcile_holds(self.lease_secs()).await?;
        for hold in &settled {
            tracing::warn!(
                target: "voxgate::security",
                event = "quota_hold_reconciled",
                instance = %hold.instance,
                metric = %hold.metric,
                reserved = hold.amount,
                charged = hold.delivered.clamp(0, hold.amount),
                "settled a quota reservation whose holder stopped renewing it"
            );
        }
        Ok(settled.len())
    }

    /// Runs [`HoldBook::upkeep`] at once and then every `renew_every`, until the process
    /// ends (a restart settles what a crash left once its lease has run out and the
    /// restarted instance has reached the store for a lease and a renewal).
    pub fn spawn(self: &Arc<Self>, store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
        let book = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(book.leases.renew_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = book.upkeep(&store).await {
                    tracing::warn!(error = %err, "could not renew or reconcile quota holds");
                }
            }
        })
    }
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
    book: Arc<HoldBook>,
    /// This request's hold id (random).
    id: String,
    progress: Arc<Progress>,
    reservations: Vec<Reservation>,
    /// When the hold was made (its rows' first deadline is a lease after).
    created: tokio::time::Instant,
}

impl QuotaHold {
    /// Reports what the request has delivered so far: if this process dies, its holds are
    /// settled at the last report that reached the store (renewed every few seconds).
    pub fn report(&self, delivered: Amounts) {
        let p = &self.progress;
        p.characters.store(delivered.characters, Ordering::Relaxed);
        p.audio_seconds
            .store(delivered.audio_seconds, Ordering::Relaxed);
        p.requests.store(delivered.requests, Ordering::Relaxed);
        p.transcribed_seconds
            .store(delivered.transcribed_seconds, Ordering::Relaxed);
    }

    /// Whether this hold may have been taken by reconciliation: its instance has not renewed
    /// its holds for a whole lease (the store was away). Work under it must stop: what it
    /// delivers from now on might not be charged.
    pub fn lapsed(&self) -> bool {
        if self.reservations.is_empty() {
            return false;
        }
        // The hold's own deadline was set a lease after it was made: a hold younger than the
        // last renewal counts from its creation.
        let renewed = *self.book.renewed.lock().unwrap_or_else(|e| e.into_inner());
        renewed.max(self.created).elapsed() > self.book.leases.lease
    }

    fn tag(&self) -> HoldTag<'_> {
        HoldTag {
            id: &self.id,
            instance: &self.book.instance,
            lease_secs: self.book.lease_secs(),
        }
    }

    /// How much of `metric` is reserved (the most a request may use of it).
    pub fn reserved(&self, metric: Metric) -> Option<i64> {
        self.reservations
            .iter()
            .filter(|r| r.metric == metric)
            .map(|r| r.amount)
            .min()
    }

    /// The tightest character budget right after this reservation.
    pub fn character_budget(&self) -> Option<Budget> {
        let t = now();
        self.reservations
            .iter()
            .filter(|r| r.metric == Metric::Characters)
            .map(|r| Budget {
                limit: r.limit,
                remaining: (r.limit - r.usage.0 - r.usage.1).max(0),
                reset_after: Duration::from_secs(
                    u64::try_from(r.window_start + r.period - t).unwrap_or(0),
                ),
            })
            .min_by_key(|b| b.remaining)
    }

    /// Reserves `extra` more of `metric` on every quota that counts it (all or none):
    /// `false` when a budget cannot hold it, and then nothing more is reserved.
    pub async fn extend(&mut self, metric: Metric, extra: i64) -> Result<bool, StoreError> {
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
                .reserve_quota(&self.tag(), &r.cell(), extra, r.limit)
                .await;
            match granted {
                Ok(true) => done.push(i),
                outcome => {
                    // Give back what this call took on the other quotas.
                    for &j in &done {
                        let r = &self.reservations[j];
                        let _ = self.store.release_quota(&self.id, &r.cell(), extra).await;
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
        release(
            &self.store,
            &self.book,
            &self.id,
            &reservations,
            Some(actual),
        )
        .await;
        self.book.leave(&self.id);
    }

    /// Gives everything back (nothing was used).
    pub async fn refund(mut self) {
        let reservations = std::mem::take(&mut self.reservations);
        release(&self.store, &self.book, &self.id, &reservations, None).await;
        self.book.leave(&self.id);
    }
}

impl Drop for QuotaHold {
    fn drop(&mut self) {
        if self.reservations.is_empty() {
            self.book.leave(&self.id);
            return;
        }
        // Still registered until the refund is written: its lease stays renewed meanwhile.
        let store = Arc::clone(&self.store);
        let book = Arc::clone(&self.book);
        let id = std::mem::take(&mut self.id);
        let reservations = std::mem::take(&mut self.reservations);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                release(&store, &book, &id, &reservations, None).await;
                book.leave(&id);
            });
        }
    }
}

/// Settles the hold's reservations in one transaction; when the store cannot take it now,
/// each is journaled (and replayed by the upkeep), so what was delivered is always charged.
async fn release(
    store: &Arc<dyn Store>,
    book: &HoldBook,
    id: &str,
    reservations: &[Reservation],
    actual: Option<Amounts>,
) {
    if reservations.is_empty() {
        return;
    }
    // Never more than was reserved (the store clamps to the held amount as well).
    let used = |r: &Reservation| actual.map_or(0, |a| a.of(r.metric).clamp(0, r.amount));
    let of_metric = |metric: &str| {
        reservations
            .iter()
            .find(|r| r.metric.as_str() == metric)
            .map_or(0, used)
    };
    // Two quotas on one counter share a holder row.
    let mut counters: Vec<QuotaCell<'_>> = reservations.iter().map(Reservation::cell).collect();
    counters.sort_by_key(|c| (c.subject, c.metric, c.window_start));
    counters.dedup();
    match store.settle_hold(id, &of_metric).await {
        Ok(settled) if settled >= counters.len() => {}
        Ok(_) if actual.is_none() => {} // a refund: nothing (or less) was left to give back
        Ok(_) => {
            // Reconciled meanwhile (its lease ran out while the store was away): charged
            // at the last renewed delivery instead of this.
            tracing::warn!("a quota hold was reconciled before its settlement");
        }
        Err(e) if e.is_outage() => {
            for r in reservations {
                let entry = Entry::Settle {
                    hold: id.to_owned(),
                    subject: r.subject.clone(),
                    metric: r.metric.as_str().to_owned(),
                    window_start: r.window_start,
                    actual: used(r),
                };
                book.journal.append(entry).await;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "quota settlement failed");
        }
    }
}

/// Reserves every quota of the principal's tier for a request.
pub async fn reserve(
    store: &Arc<dyn Store>,
    book: &Arc<HoldBook>,
    principal: &Principal,
    rules: &[QuotaRule],
    estimate: Amounts,
) -> Result<Result<QuotaHold, QuotaExceeded>, StoreError> {
    let mut hold = QuotaHold {
        store: Arc::clone(store),
        book: Arc::clone(book),
        // Unique, not secret: uuid's v4 from the thread's userspace CSPRNG, so a request
        // makes no system call for it (`random_bytes` is one `getrandom` per call).
        id: uuid::Uuid::new_v4().simple().to_string(),
        progress: Arc::default(),
        reservations: Vec::new(),
        created: tokio::time::Instant::now(),
    };
    let mut metrics = Vec::new();
    let t = now();
    for rule in rules {
        let amount = estimate.of(rule.metric);
        if amount <= 0 {
            continue;
        }
        let subject = match rule.per {
            RateSubject::Account => quota_subject::account(&principal.account_id),
            RateSubject::Key => quota_subject::key(&principal.keyid),
        };
        let period = period_secs(rule);
        if !metrics.contains(&rule.metric) {
            metrics.push(rule.metric);
        }
        hold.reservations.push(Reservation {
            subject,
            metric: rule.metric,
            window_start: t - t.rem_euclid(period),
            amount,
            limit: i64::try_from(rule.limit).unwrap_or(i64::MAX),
            period,
            usage: (0, 0),
        });
    }
    if hold.reservations.is_empty() {
        return Ok(Ok(hold));
    }
    // Registered before the first row exists: renewal never misses a live hold.
    book.lock()
        .insert(hold.id.clone(), (Arc::clone(&hold.progress), metrics));
    let asks: Vec<QuotaAsk<'_>> = hold
        .reservations
        .iter()
        .map(|r| QuotaAsk {
            cell: r.cell(),
            amount: r.amount,
            limit: r.limit,
        })
        .collect();
    let granted = store.reserve_quotas(&hold.tag(), &asks).await;
    let usage = match granted {
        Ok(Ok(usage)) => usage,
        Ok(Err(refused)) => {
            // Nothing was reserved: the hold has nothing to give back.
            let r = &hold.reservations[refused];
            let retry_after = Duration::from_secs(
                u64::try_from(r.window_start + r.period - t)
                    .unwrap_or(1)
                    .max(1),
            );
            hold.reservations.clear();
            return Ok(Err(QuotaExceeded { retry_after }));
        }
        Err(e) => {
            // The transaction may or may not have committed (an answer lost on the way):
            // the hold drops and settles at nothing whatever was written.
            return Err(e);
        }
    };
    for (r, usage) in hold.reservations.iter_mut().zip(usage) {
        r.usage = usage;
    }
    Ok(Ok(hold))
}
