//! Brute-force defence: failed authentications are counted per source (the client IP, and
//! IP + key id); past a threshold the source is blocked with a growing back-off. Keys are
//! never locked: a valid key from another address keeps working.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Most sources tracked at once; beyond it, idle entries are dropped first.
const MAX_SOURCES: usize = 100_000;

#[derive(Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    /// Blocks so far; each doubles the next.
    strikes: u32,
    last_seen: Instant,
}

/// Counts failures and blocks sources.
#[derive(Debug)]
pub struct FailureGuard {
    threshold: u32,
    window: Duration,
    block: Duration,
    max_block: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl FailureGuard {
    pub fn new(threshold: u32, window: Duration, block: Duration, max_block: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            window,
            block,
            max_block: max_block.max(block),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while any of `sources` is blocked.
    pub fn check(&self, sources: &[&str]) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let longest = sources
            .iter()
            .filter_map(|s| entries.get(*s)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        longest.map_or(Ok(()), Err)
    }

    /// Records a failure for each source; returns the block imposed, if this failure
    /// crossed the threshold for any of them.
    pub fn fail(&self, sources: &[&str]) -> Option<Duration> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_SOURCES {
            let horizon = self.max_block.max(self.window);
            entries.retain(|_, e| {
                now.duration_since(e.last_seen) < horizon
                    || e.blocked_until.is_some_and(|u| u > now)
            });
            if entries.len() >= MAX_SOURCES {
                // Never forget a block: drop only the counting entries.
                entries.retain(|_, e| e.blocked_until.is_some_and(|u| u > now));
            }
        }
        let mut imposed = None;
        for source in sources {
            let entry = entries.entry((*source).to_owned()).or_insert(Entry {
                window_start: now,
                failures: 0,
                blocked_until: None,
                strikes: 0,
                last_seen: now,
            });
            // A long quiet spell forgives earlier strikes.
            if now.duration_since(entry.last_seen) > self.max_block * 2 {
                entry.strikes = 0;
            }
            entry.last_seen = now;
            if now.duration_since(entry.window_start) > self.window {
                entry.window_start = now;
                entry.failures = 0;
            }
            entry.failures += 1;
            if entry.failures >= self.threshold {
                let factor = 2u32.saturating_pow(entry.strikes.min(16));
                let block = self.block.saturating_mul(factor).min(self.max_block);
                entry.blocked_until = Some(now + block);
                entry.strikes += 1;
                entry.failures = 0;
                entry.window_start = now;
                imposed = Some(imposed.map_or(block, |b: Duration| b.max(block)));
            }
        }
        imposed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> FailureGuard {
        FailureGuard::new(
            3,
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn blocks_at_the_threshold_and_backs_off() {
        let g = guard();
        assert_eq!(g.fail(&["1.2.3.4"]), None);
        assert_eq!(g.fail(&["1.2.3.4"]), None);
        assert_eq!(g.fail(&["1.2.3.4"]), Some(Duration::from_secs(60)));
        assert_eq!(g.check(&["1.2.3.4"]), Err(Duration::from_secs(60)));
        assert_eq!(g.check(&["5.6.7.8"]), Ok(()), "other sources are untouched");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(g.check(&["1.2.3.4"]), Ok(()));
        for _ in 0..2 {
            g.fail(&["1.2.3.4"]);
        }
        assert_eq!(
            g.fail(&["1.2.3.4"]),
            Some(Duration::from_secs(120)),
            "doubles"
        );
        tokio::time::advance(Duration::from_secs(121)).await;
        for _ in 0..2 {
            g.fail(&["1.2.3.4"]);
        }
        assert_eq!(g.fail(&["1.2.3.4"]), Some(Duration::from_secs(240)));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_the_window_do_not_add_up() {
        let g = guard();
        g.fail(&["a"]);
        g.fail(&["a"]);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(g.fail(&["a"]), None);
        assert_eq!(g.check(&["a"]), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_back_off_is_capped() {
        let g = guard();
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            for _ in 0..3 {
                if let Some(b) = g.fail(&["a"]) {
                    last = b;
                }
            }
            tokio::time::advance(last + Duration::from_secs(1)).await;
        }
        assert_eq!(last, Duration::from_secs(600));
    }
}
