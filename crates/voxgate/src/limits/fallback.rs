//! Redis with a fallback: when Redis cannot decide, a conservative per-instance limiter
//! (a fraction of each limit), or deny everything, or (explicitly) allow everything.
//! Switching either way is a security event, logged by every instance that switches; Redis
//! is retried on every decision, so recovery is automatic.
//!
//! The local fallback never over-admits:
//! - Its buckets start **empty** at the moment of the switch (whatever they held before):
//!   an instance grants only what refills at `fraction × limit` per period from then on,
//!   never a fresh burst. With `fraction = 1 / instances`, all instances together admit at
//!   most the limit's rate during an outage. (`Policy::scaled`: limit and burst are
//!   `floor(n × fraction)`, at least 1.)
//! - After recovery, for the longest period the fallback applied, a key that used its local
//!   bucket needs the local bucket's leave as well as Redis's: a Redis that restarted empty
//!   cannot hand such a key a fresh burst on top of what it had during the outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;

use super::{Decision, LimiterError, MemoryLimiter, Policy, RateLimiter};
pub use crate::config::OnBackendError;
use crate::observe::Metrics;

/// A shared limiter with a local fallback.
#[derive(Debug)]
pub struct FallbackLimiter {
    primary: Arc<dyn RateLimiter>,
    local: MemoryLimiter,
    mode: OnBackendError,
    /// The fraction of each limit the local fallback grants per instance.
    fraction: f64,
    degraded: AtomicBool,
    /// When this instance switched to the fallback, and until when after recovery the
    /// local buckets still apply.
    times: Mutex<Times>,
    /// The longest period (µs) the fallback applied during the current or last outage.
    longest_period: AtomicU64,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Times {
    degraded_since: Option<Instant>,
    recovering_until: Option<Instant>,
}

impl FallbackLimiter {
    pub fn new(
        primary: Arc<dyn RateLimiter>,
        mode: OnBackendError,
        fraction: f64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            metrics,
            primary,
            local: MemoryLimiter::default(),
            mode,
            fraction: fraction.clamp(0.01, 1.0),
            degraded: AtomicBool::new(false),
            times: Mutex::new(Times::default()),
            longest_period: AtomicU64::new(0),
        }
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether decisions are currently made without the shared backend.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }
}

impl FallbackLimiter {
    /// Within the recovery window, a key that used its local bucket during the outage also
    /// needs that bucket's leave (see the module documentation).
    fn after_recovery(&self, key: &str, policy: &Policy, cost: u64, shared: Decision) -> Decision {
        let until = self.times().recovering_until;
        match until {
            Some(until) if Instant::now() < until => {
                if self.local.holds(key) {
                    let local = self
                        .local
                        .acquire_now(key, &policy.scaled(self.fraction), cost);
                    if !local.allowed {
                        return local;
                    }
                }
                shared
            }
            Some(_) => {
                let mut times = self.times();
                if !self.degraded.load(Ordering::Relaxed) && times.recovering_until.is_some() {
                    times.recovering_until = None;
                    self.local.clear();
                }
                shared
            }
            None => shared,
        }
    }
}

#[async_trait]
impl RateLimiter for FallbackLimiter {
    async fn acquire(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
    ) -> Result<Decision, LimiterError> {
        match self.primary.acquire(key, policy, cost).await {
            Ok(decision) => {
                // The flag and the times change together, under the times' lock.
                let recovered = self.degraded.load(Ordering::Relaxed) && {
                    let mut times = self.times();
                    let switched = self.degraded.swap(false, Ordering::Relaxed);
                    if switched {
                        let longest =
                            Duration::from_micros(self.longest_period.swap(0, Ordering::Relaxed));
                        times.degraded_since = None;
                        times.recovering_until = Some(Instant::now() + longest);
                    }
                    switched
                };
                if recovered {
                    self.metrics.limiter_degraded.set(0);
                    self.metrics.limiter_switches.inc();
                    tracing::warn!(target: "voxgate::security", event = "rate_limit_backend_recovered", "rate-limit backend is back; shared limits apply again");
                }
                if decision.allowed && self.mode == OnBackendError::Local {
                    return Ok(self.after_recovery(key, policy, cost, decision));
                }
                Ok(decision)
            }
            Err(err) => {
                // Under the times' lock: a concurrent caller sees the flag only together
                // with the switch time and the emptied buckets.
                let switched = {
                    let mut times = self.times();
                    let switched = !self.degraded.swap(true, Ordering::Relaxed);
                    if switched {
                        times.degraded_since = Some(Instant::now());
                        times.recovering_until = None;
                        // Buckets start empty at the switch: what they held is forgotten.
                        self.local.clear();
                    }
                    switched
                };
                if switched {
                    self.metrics.limiter_degraded.set(1);
                    self.metrics.limiter_switches.inc();
                    tracing::warn!(target: "voxgate::security", event = "rate_limit_backend_failed", error = %err, mode = ?self.mode, "rate-limit backend unavailable; falling back");
                }
                match self.mode {
                    OnBackendError::Local => {
                        let period = u64::try_from(policy.period.as_micros()).unwrap_or(u64::MAX);
                        self.longest_period.fetch_max(period, Ordering::Relaxed);
                        let since = self.times().degraded_since;
                        Ok(self.local.acquire_since(
                            key,
                            &policy.scaled(self.fraction),
                            cost,
                            since,
                        ))
                    }
                    OnBackendError::Deny => Ok(Decision {
                        allowed: false,
                        limit: policy.burst,
                        remaining: 0,
                        reset_after: policy.period,
                        retry_after: std::time::Duration::from_secs(1),
                    }),
                    OnBackendError::Allow => Ok(Decision {
                        allowed: true,
                        limit: policy.burst,
                        remaining: policy.burst,
                        reset_after: std::time::Duration::ZERO,
                        retry_after: std::time::Duration::ZERO,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared backend's part, for the fallback's own logic: decides like Redis (GCRA)
    /// while up, fails while down, and can lose its state (a restart without persistence).
    #[derive(Debug, Default)]
    struct Backend {
        state: Mutex<MemoryLimiter>,
        down: AtomicBool,
    }

    #[async_trait]
    impl RateLimiter for Backend {
        async fn acquire(
            &self,
            key: &str,
            policy: &Policy,
            cost: u64,
        ) -> Result<Decision, LimiterError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(LimiterError("connection refused".into()));
            }
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            Ok(state.acquire_now(key, policy, cost))
        }
    }

    async fn admitted(limiter: &FallbackLimiter, policy: &Policy, for_secs: u64) -> usize {
        let mut admitted = 0;
        for _ in 0..for_secs * 10 {
            if limiter
                .acquire("acct", policy, 1)
                .await
                .expect("decides")
                .allowed
            {
                admitted += 1;
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        admitted
    }

    /// The measured failure: 60/min per account, a 22 s outage, then Redis back empty.
    /// The fallback grants only what refills at the fraction's rate from the switch on,
    /// and a Redis that forgot everything hands out no fresh burst to a key that used its
    /// local bucket; both switches are counted.
    #[tokio::test(start_paused = true)]
    async fn the_fallback_never_over_admits() {
        let backend = Arc::new(Backend::default());
        let metrics = Arc::new(Metrics::new());
        let limiter = FallbackLimiter::new(
            Arc::clone(&backend) as Arc<dyn RateLimiter>,
            OnBackendError::Local,
            0.5,
            Arc::clone(&metrics),
        );
        let policy = Policy::new(60, Duration::from_secs(60));
        for _ in 0..60 {
            assert!(
                limiter
                    .acquire("acct", &policy, 1)
                    .await
                    .expect("ok")
                    .allowed
            );
        }
        assert!(
            !limiter
                .acquire("acct", &policy, 1)
                .await
                .expect("ok")
                .allowed
        );

        backend.down.store(true, Ordering::Relaxed);
        let during = admitted(&limiter, &policy, 22).await;
        // 30/min from an empty bucket: one every 2 s.
        assert!(
            (10..=11).contains(&during),
            "{during} admitted during the outage"
        );
        assert!(limiter.is_degraded());

        *backend.state.lock().expect("lock") = MemoryLimiter::default();
        backend.down.store(false, Ordering::Relaxed);
        let after = admitted(&limiter, &policy, 38).await;
        assert!(!limiter.is_degraded());
        // Without the local leave this would be a fresh burst of 60 plus refills.
        assert!(after <= 20, "{after} admitted after Redis came back empty");
        assert_eq!(metrics.limiter_switches.get(), 2, "both switches");
        assert_eq!(metrics.limiter_degraded.get(), 0);

        // Past the recovery window the shared limits alone apply again.
        tokio::time::advance(Duration::from_secs(120)).await;
        let later = admitted(&limiter, &policy, 1).await;
        assert!(later >= 1);
        assert!(
            limiter.local.is_empty(),
            "local state forgotten after recovery"
        );
    }
}
