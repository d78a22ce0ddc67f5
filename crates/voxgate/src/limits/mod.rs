//! Rate limits: one atomic `acquire(key, policy, cost)` per decision, GCRA everywhere.
//!
//! - [`MemoryLimiter`]: one instance; GCRA on `tokio::time::Instant`, memory bounded.
//! - [`RedisLimiter`]: several instances; one Lua script (`EVALSHA`), Redis `TIME` as the
//!   shared clock, one round trip, `{…}` hash tags so every key lives on one cluster slot.
//! - [`FallbackLimiter`]: Redis with a conservative local limiter (or deny/allow) when Redis
//!   cannot be reached; switching is a security event; recovery is automatic.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per key, the theoretical arrival
//! time (TAT). With emission interval `T = period / limit` and tolerance `τ = burst × T`, a
//! request of cost `c` at `now` is allowed when `max(TAT, now) + c×T − τ ≤ now`, and then
//! `TAT ← max(TAT, now) + c×T`. A burst of `burst + 1` requests admits exactly `burst`.

mod concurrency;
mod fallback;
mod gate;
mod memory;
pub mod quota;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use concurrency::{AdmissionQueue, Concurrency, EngineSlot, InFlight, PerSubject, Refusal};
pub use fallback::{FallbackLimiter, OnBackendError};
pub use gate::{Gate, Verdict};
pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;

/// A limit: `limit` units per `period`, with bursts up to `burst` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub limit: u64,
    pub period: Duration,
    pub burst: u64,
}

impl Policy {
    pub fn new(limit: u64, period: Duration) -> Self {
        Self {
            limit,
            period,
            burst: limit,
        }
    }

    /// Time per unit.
    pub fn emission(&self) -> Duration {
        self.period / u32::try_from(self.limit.max(1)).unwrap_or(u32::MAX)
    }

    /// How far ahead of now the TAT may run.
    pub fn tolerance(&self) -> Duration {
        self.emission()
            .saturating_mul(u32::try_from(self.burst.max(1)).unwrap_or(u32::MAX))
    }

    /// The same policy with its limit and burst scaled by `fraction` (at least 1).
    pub fn scaled(&self, fraction: f64) -> Self {
        let scale = |n: u64| ((n as f64 * fraction).floor() as u64).max(1);
        Self {
            limit: scale(self.limit),
            period: self.period,
            burst: scale(self.burst),
        }
    }
}

/// The outcome of one acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policy's burst (what a full bucket holds).
    pub limit: u64,
    /// Units that could still be taken now.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset_after: Duration,
    /// When denied: until the request would be allowed.
    pub retry_after: Duration,
}

/// The backend could not decide (unreachable, timed out, answered nonsense).
#[derive(Debug, thiserror::Error)]
#[error("rate-limit backend unavailable: {0}")]
pub struct LimiterError(pub String);

/// One atomic decision per call; never check-then-increment.
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    async fn acquire(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
    ) -> Result<Decision, LimiterError>;
}

/// The pure GCRA step, shared by the memory limiter and mirrored by the Lua script.
/// Times are in microseconds on any monotonic clock. Returns the decision and the new TAT
/// (unchanged when denied).
pub fn gcra(tat: Option<u64>, now: u64, policy: &Policy, cost: u64) -> (Decision, u64) {
    let emission = micros(policy.emission()).max(1);
    let tolerance = micros(policy.tolerance());
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(emission.saturating_mul(cost));
    let allow_at = new_tat.saturating_sub(tolerance);
    if allow_at > now {
        let used = tat.saturating_sub(now);
        let decision = Decision {
            allowed: false,
            limit: policy.burst,
            remaining: tolerance.saturating_sub(used) / emission,
            reset_after: Duration::from_micros(used),
            retry_after: Duration::from_micros(allow_at - now),
        };
        return (decision, tat);
    }
    let used = new_tat - now;
    let decision = Decision {
        allowed: true,
        limit: policy.burst,
        remaining: tolerance.saturating_sub(used) / emission,
        reset_after: Duration::from_micros(used),
        retry_after: Duration::ZERO,
    };
    (decision, new_tat)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// OpenAI's duration format for `x-ratelimit-reset-*`: `1s`, `6m0s`, `1h2m3s`, `250ms`.
pub fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64().ceil() as u64;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn a_burst_of_limit_plus_one_admits_exactly_limit() {
        for limit in [1, 2, 10, 60, 1000] {
            let policy = Policy::new(limit, Duration::from_secs(60));
            let mut tat = None;
            let mut allowed = 0;
            for _ in 0..=limit {
                let (d, t) = gcra(tat, 100 * SEC, &policy, 1);
                tat = Some(t);
                allowed += u64::from(d.allowed);
            }
            assert_eq!(allowed, limit, "limit {limit}");
        }
    }

    #[test]
    fn retry_after_is_exactly_when_the_next_unit_frees() {
        let policy = Policy::new(60, Duration::from_secs(60));
        let mut tat = None;
        for _ in 0..60 {
            tat = Some(gcra(tat, 0, &policy, 1).1);
        }
        let (denied, _) = gcra(tat, 0, &policy, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_secs(1));
        assert_eq!(denied.remaining, 0);
        let (later, _) = gcra(tat, SEC, &policy, 1);
        assert!(later.allowed, "allowed once retry_after has passed");
    }

    /// The boundary double burst: a full burst at the end of one period and another at the
    /// start of the next. GCRA admits at most `burst` + (elapsed / T) over any window, so
    /// two back-to-back bursts within a second admit only `burst + 1` (the tolerance).
    #[test]
    fn no_double_burst_at_a_window_boundary() {
        let policy = Policy::new(100, Duration::from_secs(60));
        let mut tat = None;
        let mut allowed = 0;
        for now in [59 * SEC + SEC / 2, 60 * SEC + SEC / 2] {
            for _ in 0..100 {
                let (d, t) = gcra(tat, now, &policy, 1);
                tat = Some(t);
                allowed += u64::from(d.allowed);
            }
        }
        // One second passed between the bursts: at most one extra unit (60 s / 100 = 0.6 s).
        assert!(allowed <= 101 + 1, "admitted {allowed}");
        assert!(allowed >= 100);
    }

    #[test]
    fn costs_take_several_units_and_never_go_negative() {
        let policy = Policy::new(10, Duration::from_secs(10));
        let (d, tat) = gcra(None, 0, &policy, 7);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        let (d, _) = gcra(Some(tat), 0, &policy, 4);
        assert!(!d.allowed, "7 + 4 > 10");
        let (d, _) = gcra(Some(tat), 0, &policy, 3);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn durations_read_like_openai() {
        assert_eq!(openai_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(openai_duration(Duration::from_secs(1)), "1s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(openai_duration(Duration::from_secs(3723)), "1h2m3s");
    }
}
