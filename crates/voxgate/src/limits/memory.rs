//! The in-process limiter: GCRA state in a bounded map, time from `tokio::time::Instant`
//! (so tests can pause and advance it).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Decision, LimiterError, Policy, RateLimiter, gcra};

/// Keys tracked at once before idle ones are swept.
const DEFAULT_CAPACITY: usize = 1_000_000;

/// GCRA in memory. A key whose TAT lies in the past holds no information and is dropped by
/// the sweep, so memory is bounded by the keys active within their periods.
#[derive(Debug)]
pub struct MemoryLimiter {
    origin: Instant,
    capacity: usize,
    tats: Mutex<HashMap<String, u64>>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryLimiter {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            origin: Instant::now(),
            capacity: capacity.max(1),
            tats: Mutex::new(HashMap::new()),
        }
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.tats.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same decision, synchronously.
    pub fn acquire_now(&self, key: &str, policy: &Policy, cost: u64) -> Decision {
        self.acquire_since(key, policy, cost, None)
    }

    /// Whether `key` has state (its bucket is not full).
    pub fn holds(&self, key: &str) -> bool {
        let now = self.micros(Instant::now());
        self.tats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|t| *t > now)
    }

    /// Forgets every key.
    pub fn clear(&self) {
        self.tats.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// A decision where every bucket was empty at `empty_at` (when given): a key first seen
    /// after it has only what refilled since, never a fresh burst.
    pub fn acquire_since(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        empty_at: Option<Instant>,
    ) -> Decision {
        let now = self.micros(Instant::now());
        let floor = empty_at.map(|at| {
            self.micros(at)
                .saturating_add(u64::try_from(policy.tolerance().as_micros()).unwrap_or(u64::MAX))
        });
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let stored = tats.get(key).copied();
        let start = match (stored, floor) {
            (Some(t), Some(f)) => Some(t.max(f)),
            (t, f) => t.or(f),
        };
        let (decision, tat) = gcra(start, now, policy, cost);
        if decision.allowed {
            if tats.len() >= self.capacity && !tats.contains_key(key) {
                tats.retain(|_, t| *t > now);
                if tats.len() >= self.capacity {
                    // Every key is active: forget the ones closest to full, which costs at
                    // most one extra burst each.
                    let mut by_tat: Vec<(String, u64)> = tats.drain().collect();
                    by_tat.sort_unstable_by_key(|(_, t)| std::cmp::Reverse(*t));
                    by_tat.truncate(self.capacity / 2);
                    tats.extend(by_tat);
                }
            }
            match tats.get_mut(key) {
                Some(existing) => *existing = tat,
                None => {
                    tats.insert(key.to_owned(), tat);
                }
            }
        }
        decision
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn acquire(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
    ) -> Result<Decision, LimiterError> {
        Ok(self.acquire_now(key, policy, cost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn refills_with_time() {
        let limiter = MemoryLimiter::default();
        let policy = Policy::new(2, Duration::from_secs(10));
        assert!(limiter.acquire_now("k", &policy, 1).allowed);
        assert!(limiter.acquire_now("k", &policy, 1).allowed);
        let denied = limiter.acquire_now("k", &policy, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(limiter.acquire_now("k", &policy, 1).allowed);
        assert!(
            limiter.acquire_now("other", &policy, 1).allowed,
            "keys are independent"
        );
    }

    /// A flood of refused requests leaves no state behind: memory stays flat while rejecting.
    #[test]
    fn rejections_allocate_nothing() {
        let limiter = MemoryLimiter::default();
        let policy = Policy::new(1, Duration::from_secs(60));
        for i in 0..10_000 {
            assert!(
                !limiter.acquire_now(&format!("k{i}"), &policy, 2).allowed,
                "cost above the burst"
            );
        }
        assert!(limiter.is_empty());
    }

    /// A bucket empty since a moment refills from then on: no fresh burst for new keys.
    #[tokio::test(start_paused = true)]
    async fn buckets_empty_since_a_moment_grant_only_what_refilled() {
        let limiter = MemoryLimiter::default();
        let policy = Policy::new(10, Duration::from_secs(10));
        let since = Instant::now();
        assert!(!limiter.acquire_since("k", &policy, 1, Some(since)).allowed);
        tokio::time::advance(Duration::from_millis(3_500)).await;
        let granted = (0..10)
            .filter(|_| limiter.acquire_since("k", &policy, 1, Some(since)).allowed)
            .count();
        assert_eq!(granted, 3, "one per second refilled, nothing more");
        assert!(limiter.holds("k"));
        assert!(!limiter.holds("other"));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded() {
        let limiter = MemoryLimiter::with_capacity(100);
        let policy = Policy::new(1, Duration::from_secs(1));
        for i in 0..10_000 {
            limiter.acquire_now(&format!("k{i}"), &policy, 1);
            if i % 100 == 0 {
                tokio::time::advance(Duration::from_secs(2)).await;
            }
        }
        assert!(limiter.len() <= 100);
    }
}
