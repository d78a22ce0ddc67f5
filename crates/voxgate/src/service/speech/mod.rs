//! The speech service: an order → a metered stream of encoded audio.
//!
//! [`Services::prepare_speech`] validates an order into a [`SpeechJob`] (auditing tier
//! denials); [`Services::speak`] runs it through its whole metered life:
//!
//! 1. the caller's slots (key, account, instance), held for the whole stream;
//! 2. the quota reservation (characters, a generous estimate of audio seconds, one request);
//! 3. the cache, asked before any engine slot is taken (a hit needs none);
//! 4. the chain's engines in order, each admitted on its own queue ([`pipeline::start`]);
//! 5. the stream, capped at the reserved audio seconds, and settled when it ends, however it
//!    ends: at the characters of the parts started and the audio seconds produced, with a
//!    full refund only when no audio byte left the service (a client that hangs up after
//!    90 % of a stream pays for 90 %). An answer in one piece is settled as delivered just
//!    before its head is sent (see `Metered`): a client that hangs up in that moment pays
//!    for it.

mod pipeline;
mod relay;
mod validate;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::Peekable;
use futures::{FutureExt as _, Stream, StreamExt as _};

pub use pipeline::{
    ByteStream, FailingEngines, Part, Runtime, Speech, SpeechJob, SpeechStats, keep,
    start as start_job,
};

use super::Services;
use crate::audio::AudioFormat;
use crate::data::cache::{CacheKey, KeyParts};
use crate::error::{Code, Error};
use crate::identity::auth::Principal;
use crate::limits::quota::{Amounts, Budget, Metric, QuotaHold};
use crate::limits::{EngineSlot, InFlight};
use crate::observe::Metrics;
use crate::observe::metrics::ActiveStream;

/// What a front door asks to be spoken, before validation.
#[derive(Debug, Clone)]
pub struct SpeechOrder {
    pub model: String,
    pub input: String,
    pub voice: VoiceChoice,
    pub instructions: Option<String>,
    pub format: AudioFormat,
    pub speed: Option<f64>,
    /// `input` is SSML (tiers with `ssml = true`).
    pub ssml: bool,
}

/// A voice by name, or a stored voice reference by id.
#[derive(Debug, Clone)]
pub enum VoiceChoice {
    Name(String),
    Stored(String),
}

/// Whether the cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// A fresh entry.
    Hit,
    /// Synthesized now, kept if it ends cleanly.
    Miss,
    /// Every engine failed; an expired entry answered.
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }
}

/// The operation name tier denials are audited under.
const OPERATION: &str = "speech";

impl Services {
    /// Validates an order: model and voice looked up by table, the tier's gates (audited
    /// when they deny), the text pipeline, SSML.
    pub async fn prepare_speech(
        &self,
        principal: &Principal,
        order: SpeechOrder,
    ) -> Result<SpeechJob, Error> {
        let job = validate::job(self, principal, order).await;
        if let Err(err) = &job {
            self.audit_denial(principal, OPERATION, err).await;
        }
        job
    }

    /// Runs a validated job through its metered life (see the module documentation).
    pub async fn speak(
        &self,
        principal: &Principal,
        job: SpeechJob,
    ) -> Result<SpeechStream, Error> {
        let in_flight = self.admit(principal)?;
        let characters = i64::try_from(job.characters).unwrap_or(i64::MAX);
        let estimate = Amounts {
            characters,
            requests: 1,
            audio_seconds: validate::estimated_audio_seconds(characters, job.speed),
            ..Amounts::default()
        };
        let hold = self.reserve(principal, estimate).await?;
        let budget = hold.character_budget();
        // Audio beyond the reserved seconds is not produced: the stream ends there.
        let cap_seconds = hold.reserved(Metric::AudioSeconds).map(|s| s as f64);
        let started = std::time::Instant::now();
        let job_characters = job.characters;
        let format = job.format;
        let (speech, cache) = match self.serve(principal, job).await {
            Ok(served) => served,
            Err(err) => {
                if matches!(
                    err,
                    Error::Limited {
                        code: Code::Overloaded,
                        ..
                    }
                ) {
                    self.count_overload();
                }
                // Nothing left the service: the hold drops and gives everything back.
                return Err(err);
            }
        };
        let synthesized = !matches!(cache, Some(CacheStatus::Hit | CacheStatus::Stale));
        let relayed = speech.relayed;
        let mut metered = Metered {
            audio: speech.audio.peekable(),
            // Bytes in hand (relayed from the engine's connection, or replayed from the
            // cache): looking one piece ahead costs no synthesis and starts no text part.
            look_ahead: relayed || !synthesized,
            held: None,
            cap_seconds,
            stats: Arc::clone(&speech.stats),
            hold: Some(hold),
            finishing: None,
            end: None,
            delivered: false,
            sent_seconds: 0.0,
            rtf: synthesized.then(|| (speech.engine.clone(), started)),
            metrics: Arc::clone(&self.metrics),
            _in_flight: in_flight,
            _slot: speech.slot,
            _active: ActiveStream::start(&self.metrics),
        };
        // A one-piece answer waits for its settlement before its head (see `Metered`), for a
        // moment at most: past that the head leaves, and the piece follows once settled.
        let _ = tokio::time::timeout(SETTLED_BEFORE_HEAD_WITHIN, metered.prime()).await;
        Ok(SpeechStream {
            engine: speech.engine,
            cache,
            budget,
            format,
            characters: job_characters,
            stats: speech.stats,
            relayed,
            audio: Box::pin(metered),
        })
    }

    /// Validates and runs an order.
    pub async fn speak_order(
        &self,
        principal: &Principal,
        order: SpeechOrder,
    ) -> Result<SpeechStream, Error> {
        let job = self.prepare_speech(principal, order).await?;
        self.speak(principal, job).await
    }

    /// What running a job needs.
    pub fn runtime(&self) -> Runtime {
        Runtime {
            encoders: self.encoders.clone(),
            concurrency: Arc::clone(&self.concurrency),
            metrics: Arc::clone(&self.metrics),
            failing: Arc::clone(&self.failing_engines),
            clones: Some(Arc::clone(&self.clones)),
        }
    }

    /// Serves a job from the cache or the engine chain. A fresh entry answers at once, before
    /// any engine slot; a miss synthesizes and keeps the complete response; when every
    /// engine fails before any audio, an expired entry still answers. Tiers without a cache
    /// go to the chain alone.
    async fn serve(
        &self,
        principal: &Principal,
        job: SpeechJob,
    ) -> Result<(Speech, Option<CacheStatus>), Error> {
        if !principal.tier.cache {
            return Ok((pipeline::start(job, &self.runtime()).await?, None));
        }
        let key = self.cache_key(principal, &job);
        let characters = job.characters;
        if let Some(hit) = self.cache.get(&key, false).await {
            self.metrics.cache_hits.inc();
            let speech = Speech::replay(hit.engine, hit.audio, hit.seconds, characters);
            return Ok((speech, Some(CacheStatus::Hit)));
        }
        self.metrics.cache_misses.inc();
        match pipeline::start(job, &self.runtime()).await {
            Ok(speech) => Ok((
                pipeline::keep(Arc::clone(&self.cache), key, speech),
                Some(CacheStatus::Miss),
            )),
            Err(err) if err.falls_back() => match self.cache.get(&key, true).await {
                Some(stale) => {
                    self.metrics.cache_hits.inc();
                    tracing::warn!(error = %err, "every engine failed; served an expired cache entry");
                    let speech =
                        Speech::replay(stale.engine, stale.audio, stale.seconds, characters);
                    Ok((speech, Some(CacheStatus::Stale)))
                }
                None => Err(err),
            },
            Err(err) => Err(err),
        }
    }

    fn cache_key(&self, principal: &Principal, job: &SpeechJob) -> CacheKey {
        let script = serde_json::to_string(&job.script).unwrap_or_default();
        self.cache.key(
            &principal.account_id,
            &KeyParts {
                model: &job.model,
                engines: job
                    .candidates
                    .iter()
                    .map(|c| c.engine_id.as_str())
                    .collect(),
                voice: &job.voice,
                script: &script,
                speed: job.speed,
                format: job.format.as_str(),
            },
        )
    }
}

/// A response that is streaming: who serves it, how the cache answered, the caller's
/// character budget, and the audio. Dropping it (the client left) settles what was
/// delivered and frees every slot.
pub struct SpeechStream {
    /// The engine that serves it (`x-voxgate-engine`).
    pub engine: String,
    pub cache: Option<CacheStatus>,
    /// The tightest character budget after this request's reservation.
    pub budget: Option<Budget>,
    pub format: AudioFormat,
    /// Characters of text in the request.
    pub characters: usize,
    pub stats: Arc<SpeechStats>,
    /// The engine's own bytes, relayed unchanged (`x-voxgate-audio: relayed`).
    pub relayed: bool,
    audio: Pin<Box<Metered>>,
}

impl std::fmt::Debug for SpeechStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechStream")
            .field("engine", &self.engine)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Stream for SpeechStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.audio.as_mut().poll_next(cx)
    }
}

/// The longest a one-piece answer's head waits for its settlement (see [`Metered`]): a slow
/// store (a settlement waits on SQLite's lock for up to 1.5 s) does not hold heads back.
const SETTLED_BEFORE_HEAD_WITHIN: std::time::Duration = std::time::Duration::from_millis(100);

/// The largest last piece held back while its settlement is written (see [`Metered`]):
/// a larger one leaves at once (its own write costs little next to its bytes), so that
/// streams waiting on their settlements together hold at most this much each.
const HELD_AT_MOST: usize = 64 * 1024;

/// The audio with its meter: counts what leaves, stops at the audio cap, settles the quota
/// when the stream ends (before the end is passed on, so a client that has read the whole
/// response sees its usage recorded) or, if dropped early, right after.
///
/// Where looking ahead is free (`look_ahead`: the bytes are in hand, so peeking starts no
/// synthesis and no text part), a piece found to be the last, the end being already known
/// (and no larger than [`HELD_AT_MOST`]), is held back until the settlement that counts it
/// is written, then passed on with the end; and the first piece is taken before the
/// response's head is ([`Metered::prime`]). A response in one piece (a relayed clip, a
/// cache hit) then leaves in one write with its head and its end, where it took two (head
/// and piece, then the end once settled), each waking the client (the gateway hop's cost,
/// #15). The held piece counts as delivered from the settlement on: a client that leaves
/// while it waits (before the head, for a one-piece answer) pays for it, as it would have a
/// moment later.
struct Metered {
    audio: Peekable<ByteStream>,
    look_ahead: bool,
    /// What the next poll answers first: the first piece when primed, the last while the
    /// settlement that counts it is written.
    held: Option<Option<Result<Bytes, Error>>>,
    cap_seconds: Option<f64>,
    stats: Arc<SpeechStats>,
    hold: Option<QuotaHold>,
    /// The settlement being written; `end` is passed on once it is done.
    finishing: Option<BoxFuture<'static, ()>>,
    end: Option<Option<Result<Bytes, Error>>>,
    /// Whether any audio byte has left the service (or is held, settled as leaving).
    delivered: bool,
    /// Seconds of audio in what has left (a piece held back at the cap is not charged).
    sent_seconds: f64,
    /// The serving engine and when synthesis started (not for cached answers).
    rtf: Option<(String, std::time::Instant)>,
    metrics: Arc<Metrics>,
    _in_flight: InFlight,
    _slot: Option<EngineSlot>,
    _active: ActiveStream,
}

impl Metered {
    /// What the request used so far: nothing when no byte left (a full refund).
    fn usage(&self) -> Option<Amounts> {
        self.delivered.then(|| Amounts {
            characters: i64::try_from(self.stats.characters_started.load(Ordering::Relaxed))
                .unwrap_or(i64::MAX),
            requests: 1,
            audio_seconds: self.sent_seconds.ceil() as i64,
            ..Amounts::default()
        })
    }

    /// Starts writing the settlement; `end` follows once it is written.
    fn finish(&mut self, end: Option<Result<Bytes, Error>>) {
        if let Some((engine, started)) = self.rtf.take() {
            let seconds = self.stats.output_seconds();
            if end.is_none() && seconds > 0.0 {
                self.metrics
                    .observe_rtf(&engine, started.elapsed().as_secs_f64() / seconds);
            }
        }
        self.end = Some(end);
        if let Some(hold) = self.hold.take() {
            self.finishing = Some(settle(hold, self.usage()).boxed());
        }
    }

    /// Takes the first piece now, where looking ahead is free: if it is also the last, the
    /// settlement is written first (see the type's documentation).
    async fn prime(&mut self) {
        if self.look_ahead {
            let first = self.next().await;
            self.held = Some(first);
        }
    }
}

async fn settle(hold: QuotaHold, usage: Option<Amounts>) {
    match usage {
        Some(actual) => hold.settle(actual).await,
        None => hold.refund().await,
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(finishing) = &mut this.finishing {
                ready!(finishing.as_mut().poll(cx));
                this.finishing = None;
            }
            if let Some(held) = this.held.take() {
                return Poll::Ready(held);
            }
            if let Some(end) = this.end.take() {
                // Ended: the next poll (if any) sees `None`.
                this.end = Some(None);
                return Poll::Ready(end);
            }
            match ready!(this.audio.poll_next_unpin(cx)) {
                Some(Ok(bytes)) => {
                    // Past the audio cap, or the hold's lease could not be renewed (the store
                    // is away): the stream ends, so nothing is delivered uncharged.
                    if this
                        .cap_seconds
                        .is_some_and(|cap| this.stats.output_seconds() > cap)
                        || this.hold.as_ref().is_some_and(QuotaHold::lapsed)
                    {
                        this.finish(None);
                        continue;
                    }
                    this.sent_seconds = this.stats.output_seconds();
                    if !bytes.is_empty() {
                        this.delivered = true;
                        // Should this process die, the hold is settled at this.
                        if let (Some(hold), Some(usage)) = (&this.hold, this.usage()) {
                            hold.report(usage);
                        }
                    }
                    if this.look_ahead
                        && this.hold.is_some()
                        && bytes.len() <= HELD_AT_MOST
                        && let Poll::Ready(None) = Pin::new(&mut this.audio).poll_peek(cx)
                    {
                        // The last piece: it leaves with the end, once it is settled.
                        this.held = Some(Some(Ok(bytes)));
                        this.finish(None);
                        continue;
                    }
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Some(Err(err)) => this.finish(Some(Err(err))),
                None => this.finish(None),
            }
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // Dropped before the end: the client left, or the front door gave up. Settle at
        // what was delivered, off this thread; a settlement already being written finishes.
        if let Some(finishing) = self.finishing.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(finishing);
        }
        if let Some(hold) = self.hold.take() {
            let usage = self.usage();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(settle(hold, usage));
            }
        }
    }
}
