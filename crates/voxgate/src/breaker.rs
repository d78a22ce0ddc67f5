//! A circuit breaker per remote provider (#6 wires it to the providers): closed → open after
//! `consecutive_failures` failures in a row, or when the failure rate over `window` reaches
//! `failure_rate` with at least `min_requests` outcomes → after `cooldown`, half-open: one
//! probe at a time; its success closes the breaker, its failure opens it again.
//!
//! Time is Tokio's, so tests drive it with paused time. State changes are security events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub cooldown: Duration,
}

/// What a breaker is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive: u32,
    outcomes: VecDeque<(Instant, bool)>,
}

/// One provider's breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

/// The breaker is open: do not call the provider; retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after: Duration,
}

/// Leave to make one call. Report the outcome with [`Permit::success`] or
/// [`Permit::failure`]; a permit dropped unreported (the caller went away) counts for
/// nothing, but frees the half-open probe slot.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
    reported: bool,
}

impl CircuitBreaker {
    pub fn new(name: &str, config: BreakerConfig) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            config,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive: 0,
                outcomes: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent state (plain fields): go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to call the provider.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let mut inner = self.lock();
        let now = Instant::now();
        let probe = match inner.phase {
            Phase::Closed => false,
            Phase::Open { until } if now < until => {
                return Err(Rejected {
                    retry_after: until - now,
                });
            }
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                self.transition(&mut inner, Phase::HalfOpen { probing: true });
                true
            }
            Phase::HalfOpen { probing: true } => {
                return Err(Rejected {
                    retry_after: self.config.cooldown,
                });
            }
        };
        Ok(Permit {
            breaker: Arc::clone(self),
            probe,
            reported: false,
        })
    }

    fn record(&self, ok: bool, probe: bool) {
        let mut inner = self.lock();
        let now = Instant::now();
        if probe {
            let next = if ok {
                inner.consecutive = 0;
                inner.outcomes.clear();
                Phase::Closed
            } else {
                Phase::Open {
                    until: now + self.config.cooldown,
                }
            };
            self.transition(&mut inner, next);
            return;
        }
        if !matches!(inner.phase, Phase::Closed) {
            return;
        }
        inner.consecutive = if ok { 0 } else { inner.consecutive + 1 };
        inner.outcomes.push_back((now, ok));
        while inner
            .outcomes
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.config.window)
        {
            inner.outcomes.pop_front();
        }
        let total = inner.outcomes.len() as u32;
        let failed = inner.outcomes.iter().filter(|(_, ok)| !ok).count() as f64;
        let by_rate = total >= self.config.min_requests
            && failed / f64::from(total.max(1)) >= self.config.failure_rate;
        if inner.consecutive >= self.config.consecutive_failures || by_rate {
            let until = now + self.config.cooldown;
            self.transition(&mut inner, Phase::Open { until });
        }
    }

    fn release_probe(&self) {
        let mut inner = self.lock();
        if matches!(inner.phase, Phase::HalfOpen { probing: true }) {
            inner.phase = Phase::HalfOpen { probing: false };
        }
    }

    fn transition(&self, inner: &mut Inner, next: Phase) {
        let name = |p: &Phase| match p {
            Phase::Closed => "closed",
            Phase::Open { .. } => "open",
            Phase::HalfOpen { .. } => "half_open",
        };
        let (from, to) = (name(&inner.phase), name(&next));
        if from != to {
            tracing::warn!(target: "voxgate::security", event = "breaker_state_changed", provider = %self.name, from, to, "circuit breaker changed state");
        }
        inner.phase = next;
    }
}

impl Permit {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(true, self.probe);
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(false, self.probe);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Arc<CircuitBreaker> {
        CircuitBreaker::new(
            "upstream",
            BreakerConfig {
                consecutive_failures: 3,
                failure_rate: 0.5,
                min_requests: 10,
                window: Duration::from_secs(60),
                cooldown: Duration::from_secs(30),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes_and_closes() {
        let b = breaker();
        b.try_acquire().expect("closed").success();
        for _ in 0..3 {
            b.try_acquire().expect("closed").failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        let rejected = b.try_acquire().unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(30));

        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(b.try_acquire().is_err(), "still cooling down");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.try_acquire().expect("one probe");
        assert!(b.try_acquire().is_err(), "only one probe at a time");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().expect("closed again").success();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_an_abandoned_one_frees_the_slot() {
        let b = breaker();
        for _ in 0..3 {
            b.try_acquire().expect("closed").failure();
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(b.try_acquire().expect("probe"));
        let probe = b.try_acquire().expect("the slot came back");
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after,
            Duration::from_secs(30)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_within_the_window_only() {
        let b = breaker();
        // Alternating outcomes never make three failures in a row, but half fail.
        for i in 0..9 {
            let p = b.try_acquire().expect("closed");
            if i % 2 == 0 { p.failure() } else { p.success() }
        }
        assert_eq!(b.state(), BreakerState::Closed, "below min_requests");
        // Outcomes older than the window no longer count.
        tokio::time::advance(Duration::from_secs(61)).await;
        b.try_acquire().expect("closed").failure();
        assert_eq!(b.state(), BreakerState::Closed);
        for i in 0..9 {
            let p = b.try_acquire().expect("closed");
            if i % 2 == 0 { p.success() } else { p.failure() }
        }
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "5 of 10 failed in the window"
        );
    }
}
