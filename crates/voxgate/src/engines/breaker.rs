//! A circuit breaker per remote provider, and the wrappers that put an engine behind one: closed → open after
//! `consecutive_failures` failures in a row, or when the failure rate over `window` reaches
//! `failure_rate` with at least `min_requests` outcomes → after `cooldown`, half-open: one
//! probe at a time; its success closes the breaker, its failure opens it again.
//!
//! Time is Tokio's, so tests drive it with paused time. State changes are security events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use voxgate_engine::{
    EncodedStream, EngineError, ErrorClass, PcmStream, RelayFormat, SynthesisRequest, Synthesizer,
    Transcriber, TranscriptionFuture, TranscriptionRequest, VoiceInfo,
};

use crate::observe::Metrics;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub cooldown: Duration,
}

impl From<&crate::config::BreakerSettings> for BreakerConfig {
    fn from(s: &crate::config::BreakerSettings) -> Self {
        Self {
            consecutive_failures: s.consecutive_failures,
            failure_rate: s.failure_rate,
            min_requests: s.min_requests,
            window: Duration::from_secs(s.window_secs),
            cooldown: Duration::from_secs(s.cooldown_secs),
        }
    }
}

/// What a breaker is doing now.
#[cfg(test)]
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
    outcomes: Outcomes,
}

/// The outcomes of the last `window`, counted in [`BUCKETS`] buckets of `window / BUCKETS`
/// each (so memory and the cost of a record stay constant however busy the provider is:
/// counting each call on its own cost a scan of every call in the window per call). An
/// outcome counts until its bucket is older than the window: between `window − window /
/// BUCKETS` and `window`.
#[derive(Debug, Default)]
struct Outcomes {
    buckets: VecDeque<Bucket>,
    total: u32,
    failed: u32,
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    total: u32,
    failed: u32,
}

const BUCKETS: u32 = 60;

impl Outcomes {
    fn record(&mut self, now: Instant, ok: bool, window: Duration) {
        while self
            .buckets
            .front()
            .is_some_and(|b| now.duration_since(b.start) > window)
        {
            if let Some(old) = self.buckets.pop_front() {
                self.total -= old.total;
                self.failed -= old.failed;
            }
        }
        let span = window / BUCKETS;
        if self
            .buckets
            .back()
            .is_none_or(|b| now.duration_since(b.start) >= span)
        {
            self.buckets.push_back(Bucket {
                start: now,
                total: 0,
                failed: 0,
            });
        }
        let failed = u32::from(!ok);
        if let Some(bucket) = self.buckets.back_mut() {
            bucket.total += 1;
            bucket.failed += failed;
        }
        self.total += 1;
        self.failed += failed;
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// One provider's breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
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
    pub fn new(name: &str, config: BreakerConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.breaker_state.set(name, "closed", 1);
        Arc::new(Self {
            name: name.to_owned(),
            config,
            metrics,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive: 0,
                outcomes: Outcomes::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent state (plain fields): go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
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
        inner.outcomes.record(now, ok, self.config.window);
        let (total, failed) = (inner.outcomes.total, f64::from(inner.outcomes.failed));
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
            self.metrics.breaker_state.set(&self.name, from, 0);
            self.metrics.breaker_state.set(&self.name, to, 1);
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

/// Whether an engine failure says the provider is unhealthy (and counts against its
/// breaker). Client errors (an unknown voice, text it refuses) do not.
fn counts_against(err: &EngineError) -> bool {
    matches!(
        err.class(),
        ErrorClass::Upstream | ErrorClass::Timeout | ErrorClass::Overload | ErrorClass::Internal
    )
}

impl Permit {
    /// Reports an outcome: success, a failure that counts, or nothing (dropped).
    fn report(self, engine: &str, outcome: Result<(), &EngineError>) {
        let calls = &self.breaker.metrics.provider_calls;
        match outcome {
            Ok(()) => {
                calls.inc(engine, "success");
                self.success();
            }
            Err(e) if counts_against(e) => {
                calls.inc(engine, "failure");
                self.failure();
            }
            Err(_) => {}
        }
    }
}

impl CircuitBreaker {
    /// The error an open breaker answers with (counted as a rejected call).
    fn rejected(&self, engine: &str, rejected: Rejected) -> EngineError {
        self.metrics.provider_calls.inc(engine, "rejected");
        EngineError::Unavailable(format!(
            "circuit breaker open, next probe in {} s",
            rejected.retry_after.as_secs().max(1)
        ))
    }
}

/// A synthesizer behind its circuit breaker: an open breaker refuses at once with
/// [`EngineError::Unavailable`] (so a fallback chain moves on); a stream that ends cleanly is
/// a success (a half-open probe succeeds at its first audio), one that fails with an upstream, timeout or overload error a failure; a stream
/// dropped midway (the client left) counts for nothing.
#[derive(Debug)]
pub struct GuardedSynthesizer<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

impl<S> GuardedSynthesizer<S> {
    pub fn new(inner: S, breaker: Arc<CircuitBreaker>) -> Self {
        Self { inner, breaker }
    }
}

impl<S: Synthesizer> Synthesizer for GuardedSynthesizer<S> {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn voices(&self) -> &[VoiceInfo] {
        self.inner.voices()
    }
    fn ready(&self) -> bool {
        self.inner.ready()
    }
    fn remote(&self) -> bool {
        self.inner.remote()
    }
    fn supports_cloning(&self) -> bool {
        self.inner.supports_cloning()
    }
    /// Making a clone is a call like any other: refused while the breaker is open, and its
    /// outcome counts.
    fn clone_voice(
        &self,
        reference: &voxgate_engine::VoiceReference,
        label: &str,
    ) -> voxgate_engine::CloneFuture {
        let engine = self.inner.id().to_owned();
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(r) => {
                let err = self.breaker.rejected(&engine, r);
                return Box::pin(async move { Err(err) });
            }
        };
        let made = self.inner.clone_voice(reference, label);
        Box::pin(async move {
            let made = made.await;
            permit.report(&engine, made.as_ref().map(|_| ()));
            made
        })
    }
    /// Deletions are clean-up: they go out whatever the breaker says (a failed one stays
    /// recorded and is retried), and do not count.
    fn delete_clone(&self, clone_id: &str) -> voxgate_engine::ForgetFuture {
        self.inner.delete_clone(clone_id)
    }
    fn delete_clones_named(&self, label: &str) -> voxgate_engine::ForgetFuture {
        self.inner.delete_clones_named(label)
    }

    fn synthesize(&self, request: SynthesisRequest) -> Result<PcmStream, EngineError> {
        let engine = self.inner.id().to_owned();
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|r| self.breaker.rejected(&engine, r))?;
        match self.inner.synthesize(request) {
            Ok(stream) => Ok(Box::pin(guarded(engine, permit, stream))),
            Err(e) => {
                permit.report(&engine, Err(&e));
                Err(e)
            }
        }
    }

    fn relay_formats(&self) -> &[RelayFormat] {
        self.inner.relay_formats()
    }

    /// A relay is a call like a synthesis: refused while the breaker is open, its outcome
    /// counted the same way.
    fn relay(
        &self,
        request: SynthesisRequest,
        format: RelayFormat,
    ) -> Result<EncodedStream, EngineError> {
        let engine = self.inner.id().to_owned();
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|r| self.breaker.rejected(&engine, r))?;
        match self.inner.relay(request, format) {
            Ok(stream) => Ok(Box::pin(guarded(engine, permit, stream))),
            Err(e) => {
                permit.report(&engine, Err(&e));
                Err(e)
            }
        }
    }
}

/// A stream whose outcome is reported to its breaker permit: its end a success, its first
/// error a failure; a half-open probe succeeds at its first item.
fn guarded<T, S>(
    engine: String,
    permit: Permit,
    stream: S,
) -> impl futures::Stream<Item = Result<T, EngineError>> + Send + 'static
where
    T: Send + 'static,
    S: futures::Stream<Item = Result<T, EngineError>> + Send + Unpin + 'static,
{
    futures::stream::unfold((stream, Some(permit)), move |(mut stream, mut permit)| {
        let engine = engine.clone();
        async move {
            let item = stream.next().await;
            match &item {
                // A half-open probe that yields audio has shown the provider is back:
                // close now, not at the end of a long stream, so requests arriving
                // meanwhile are not refused.
                Some(Ok(_)) if permit.as_ref().is_some_and(|p| p.probe) => {
                    if let Some(p) = permit.take() {
                        p.report(&engine, Ok(()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if let Some(p) = permit.take() {
                        p.report(&engine, Err(e));
                    }
                }
                None => {
                    if let Some(p) = permit.take() {
                        p.report(&engine, Ok(()));
                    }
                }
            }
            item.map(|item| (item, (stream, permit)))
        }
    })
}

/// A recogniser behind its circuit breaker (same rules as [`GuardedSynthesizer`]).
#[derive(Debug)]
pub struct GuardedTranscriber<T> {
    inner: Arc<T>,
    breaker: Arc<CircuitBreaker>,
}

impl<T> GuardedTranscriber<T> {
    pub fn new(inner: T, breaker: Arc<CircuitBreaker>) -> Self {
        Self {
            inner: Arc::new(inner),
            breaker,
        }
    }
}

impl<T: Transcriber + 'static> Transcriber for GuardedTranscriber<T> {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }
    fn languages(&self) -> &[&str] {
        self.inner.languages()
    }
    fn word_timestamps(&self) -> bool {
        self.inner.word_timestamps()
    }

    fn translates(&self) -> bool {
        self.inner.translates()
    }

    fn transcribe(&self, request: TranscriptionRequest) -> TranscriptionFuture {
        let engine = self.inner.id().to_owned();
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(r) => {
                let err = self.breaker.rejected(&engine, r);
                return Box::pin(async move { Err(err) });
            }
        };
        let call = self.inner.transcribe(request);
        Box::pin(async move {
            let result = call.await;
            permit.report(&engine, result.as_ref().map(|_| ()));
            result
        })
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
            Arc::new(Metrics::new()),
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

    /// A busy provider's window costs the same as a quiet one's: the outcomes are counted in
    /// at most `BUCKETS` (+1) buckets, and what leaves the window leaves the counts.
    #[tokio::test(start_paused = true)]
    async fn the_window_is_bounded_however_many_calls_it_sees() {
        let window = Duration::from_secs(60);
        let mut outcomes = Outcomes::default();
        // 100 calls a second for 3 minutes, every tenth failing.
        for i in 0..18_000u32 {
            outcomes.record(Instant::now(), i % 10 != 0, window);
            assert!(outcomes.buckets.len() <= BUCKETS as usize + 1);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let sum = |f: fn(&Bucket) -> u32| outcomes.buckets.iter().map(f).sum::<u32>();
        assert_eq!(outcomes.total, sum(|b| b.total));
        assert_eq!(outcomes.failed, sum(|b| b.failed));
        assert!(
            (5_900..=6_000).contains(&outcomes.total),
            "about a window's worth: {}",
            outcomes.total
        );
        assert_eq!(outcomes.failed * 10, outcomes.total);
        // A quiet minute later, one call: it alone is in the window.
        tokio::time::advance(window + Duration::from_secs(1)).await;
        outcomes.record(Instant::now(), false, window);
        assert_eq!((outcomes.total, outcomes.failed), (1, 1));
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
