//! The speech pipeline: a validated job → engine PCM stream → resampled to 24 kHz →
//! encoded, piece by piece, on the bounded encoder pool; or, when the engine can send the
//! client's format itself and nothing needs the audio decoded, the engine's bytes relayed
//! unchanged and metered from their own frames (`audio::meter`). [`start`] tries the
//! chain's engines in order, each admitted on its own engine queue, until one yields its
//! first bytes.
//!
//! Each request owns its resampler and encoder; nothing here is shared between requests,
//! so concurrent requests never mix audio.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use voxgate_engine::{BlockingPool, EngineError, SynthesisRequest, Synthesizer, VoiceReference};

use super::relay::{relay_format, relay_stream};
use crate::audio::{AudioFormat, Encoder, OUTPUT_RATE, Resampler};
use crate::data::cache::{CacheKey, SpeechCache};
use crate::data::clones::VoiceClones;
use crate::engines::Candidate;
use crate::error::Error;
use crate::limits::{Concurrency, EngineSlot};
use crate::observe::Metrics;

/// One step of a script: text to speak at a speed, or a pause.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Part {
    /// Normalised text (never empty) and its speaking rate.
    Say { text: String, speed: f32 },
    /// Silence, e.g. from an SSML `<break>` for an engine that does not take SSML.
    Pause { ms: u32 },
}

/// What to synthesize, already validated and resolved.
#[derive(Debug, Clone)]
pub struct SpeechJob {
    /// The model asked for (part of the cache key).
    pub model: String,
    /// The voice asked for, a name or a stored voice id (part of the cache key).
    pub voice: String,
    /// The engines to try, in order, each with its native voice (never empty).
    pub candidates: Vec<Candidate>,
    /// A stored voice to clone (the candidates all support cloning then).
    pub reference: Option<Arc<VoiceReference>>,
    /// What to say, in order.
    pub script: Vec<Part>,
    /// Characters of text in the script (what quotas and usage count).
    pub characters: usize,
    /// The request's speed (SSML prosody multiplies it per part).
    pub speed: f32,
    pub format: AudioFormat,
    /// When the whole stream must be done.
    pub deadline: Instant,
}

/// What flows from the engine(s) to the encoder.
enum Piece {
    Pcm(voxgate_engine::PcmChunk),
    Silence { ms: u32 },
}

type PieceStream = Pin<Box<dyn Stream<Item = Result<Piece, EngineError>> + Send + 'static>>;

/// The script as one lazy stream: each part starts only when the previous one is done, and
/// its characters count as started then.
fn script_stream(
    engine: Arc<dyn Synthesizer>,
    voice: String,
    reference: Option<Arc<VoiceReference>>,
    script: Vec<Part>,
    stats: Arc<SpeechStats>,
) -> PieceStream {
    let parts = futures::stream::iter(script).map(move |part| -> PieceStream {
        match part {
            Part::Say { text, speed } => {
                stats
                    .characters_started
                    .fetch_add(text.chars().count() as u64, Ordering::Relaxed);
                let started = engine.synthesize(SynthesisRequest {
                    text,
                    voice: voice.clone(),
                    speed,
                    reference: reference.clone(),
                });
                match started {
                    Ok(pcm) => Box::pin(pcm.map(|chunk| chunk.map(Piece::Pcm))),
                    Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
                }
            }
            Part::Pause { ms } => {
                Box::pin(futures::stream::once(
                    async move { Ok(Piece::Silence { ms }) },
                ))
            }
        }
    });
    Box::pin(parts.flatten())
}

/// Counters for one response, read while it streams and when it ends (usage, settlement).
#[derive(Debug, Default)]
pub struct SpeechStats {
    /// Samples produced at [`OUTPUT_RATE`].
    pub output_samples: AtomicU64,
    /// Characters of the script parts the engine has started on.
    pub characters_started: AtomicU64,
}

impl SpeechStats {
    /// Seconds of audio produced so far.
    pub fn output_seconds(&self) -> f64 {
        self.output_samples.load(Ordering::Relaxed) as f64 / f64::from(OUTPUT_RATE)
    }
}

/// Encoded audio, in order.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send + 'static>>;

/// A response that has produced its first bytes.
pub struct Speech {
    /// The engine that serves it, for `x-voxgate-engine`.
    pub engine: String,
    /// The complete encoded audio, first piece included.
    pub audio: ByteStream,
    pub stats: Arc<SpeechStats>,
    /// The place on the serving engine, held while the stream lives (none for a replay).
    pub slot: Option<EngineSlot>,
    /// The engine's own bytes, relayed unchanged (not decoded and encoded here).
    pub relayed: bool,
}

impl Speech {
    /// A response replayed from complete encoded audio (the cache), in 16 KiB pieces; it
    /// counts as `characters` of text spoken.
    pub fn replay(engine: String, audio: Vec<u8>, seconds: f64, characters: usize) -> Self {
        let stats = Arc::new(SpeechStats::default());
        stats.output_samples.store(
            (seconds * f64::from(OUTPUT_RATE)).round() as u64,
            Ordering::Relaxed,
        );
        stats
            .characters_started
            .store(characters as u64, Ordering::Relaxed);
        let pieces: Vec<Result<Bytes, Error>> = Bytes::from(audio)
            .chunks(16 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Self {
            engine,
            audio: Box::pin(futures::stream::iter(pieces)),
            stats,
            slot: None,
            relayed: false,
        }
    }
}

impl std::fmt::Debug for Speech {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speech")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// What running a job needs besides the job: the encoder pool, the engine queues, and the
/// registry that counts fallbacks.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub encoders: BlockingPool,
    pub concurrency: Arc<Concurrency>,
    pub metrics: Arc<Metrics>,
    /// Which engines' failures have been logged since they last served.
    pub failing: Arc<FailingEngines>,
    /// Clones of stored voices (none where no store is open: stored voices are refused).
    pub clones: Option<Arc<VoiceClones>>,
}

/// Engines whose failure has been logged at WARN and that have not served since: a chain
/// that falls back logs an engine's failure once per episode (it failed, then served
/// again), not once per request. Every fallback is counted in the metrics regardless.
#[derive(Debug, Default)]
pub struct FailingEngines {
    any: std::sync::atomic::AtomicBool,
    engines: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl FailingEngines {
    /// Notes a failure of `engine`; `true` when it is the first since it last served.
    fn failed(&self, engine: &str) -> bool {
        let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        self.any.store(true, std::sync::atomic::Ordering::Relaxed);
        engines.insert(engine.to_owned())
    }

    /// Notes that `engine` served; its next failure is logged again.
    fn served(&self, engine: &str) {
        if self.any.load(std::sync::atomic::Ordering::Relaxed) {
            let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
            engines.remove(engine);
            self.any
                .store(!engines.is_empty(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Starts synthesis and waits for the first encoded bytes, so failures that happen before
/// any audio exists still become a proper refusal. Engines are tried in the chain's order
/// until one produces audio, each holding a place in its own queue only while it is tried
/// (and then for the whole stream); an upstream failure, timeout, full queue or open breaker
/// moves on, a client error does not. Once bytes have left, the response belongs to that
/// engine (a later failure ends the stream).
pub async fn start(job: SpeechJob, runtime: &Runtime) -> Result<Speech, Error> {
    let mut last = None;
    let count = job.candidates.len();
    'candidates: for (i, candidate) in job.candidates.into_iter().enumerate() {
        if tokio::time::Instant::now() >= job.deadline {
            break;
        }
        let more = i + 1 < count;
        // Moves on to the next engine of the chain, or gives up with `err`.
        let mut skip = |err: Error, what: &str| -> Result<(), Error> {
            if !err.falls_back() {
                return Err(err);
            }
            if more {
                // An engine that cannot run now (its breaker open, not installed) was
                // logged when it became so (the breaker's transition at WARN): saying it
                // again per request would bury the log. A failed call is worth a line.
                if !matches!(err, Error::EngineUnavailable)
                    && runtime.failing.failed(&candidate.engine_id)
                {
                    tracing::warn!(engine = %candidate.engine_id, error = %err, source = ?std::error::Error::source(&err), "{what}; trying the next in the chain (logged once until it serves again)");
                } else {
                    tracing::debug!(engine = %candidate.engine_id, error = %err, "{what}; trying the next in the chain");
                }
                runtime.metrics.fallbacks.inc();
            }
            last = Some(err);
            Ok(())
        };
        // A stored voice: the engine speaks with the clone it made of it, found (or made)
        // before the engine's queue is joined, so waiting for another maker holds no place.
        let mut voice = match &job.reference {
            Some(reference) => {
                match clone_for(runtime, &candidate, reference, job.deadline).await {
                    Ok(id) => id,
                    Err(err) => {
                        skip(err, "could not clone the stored voice")?;
                        continue;
                    }
                }
            }
            None => candidate.native_voice.clone(),
        };
        let slot = match runtime
            .concurrency
            .admit_engine(&candidate.engine_id)
            .await
            .map_err(|r| match r {
                crate::limits::Refusal::Overloaded { retry_after } => {
                    Error::limited(crate::error::Code::Overloaded, retry_after)
                }
                crate::limits::Refusal::TooManyConcurrent => Error::limited(
                    crate::error::Code::Overloaded,
                    std::time::Duration::from_secs(1),
                ),
            }) {
            Ok(slot) => slot,
            Err(err) => {
                skip(err, "engine queue full")?;
                continue;
            }
        };
        // Errors known before any audio exists (an unknown voice) surface as the first
        // item, which is awaited below, so they still become a proper refusal.
        let mut remade = false;
        let relay = relay_format(
            job.format,
            job.reference.is_some(),
            &job.script,
            candidate.engine.as_ref(),
        );
        let (first, audio, stats) = loop {
            let stats = Arc::new(SpeechStats::default());
            let mut audio = match (relay, job.script.as_slice()) {
                (Some(format), [Part::Say { text, speed }]) => relay_stream(
                    candidate.engine.as_ref(),
                    SynthesisRequest {
                        text: text.clone(),
                        voice: voice.clone(),
                        speed: *speed,
                        reference: None,
                    },
                    format,
                    job.deadline,
                    Arc::clone(&stats),
                ),
                _ => {
                    let pcm = script_stream(
                        Arc::clone(&candidate.engine),
                        voice.clone(),
                        job.reference.clone(),
                        job.script.clone(),
                        Arc::clone(&stats),
                    );
                    encode_stream(
                        pcm,
                        job.format,
                        runtime.encoders.clone(),
                        job.deadline,
                        Arc::clone(&stats),
                    )
                }
            };
            match audio.next().await {
                Some(Ok(first)) => break (first, audio, stats),
                None => break (Bytes::new(), audio, stats),
                // The provider no longer knows the clone (deleted there): it is forgotten
                // and made again, once.
                Some(Err(Error::Refused {
                    code: crate::error::Code::VoiceNotFound,
                    ..
                })) if !remade
                    && let Some(reference) = &job.reference
                    && let Some(clones) = &runtime.clones =>
                {
                    remade = true;
                    clones
                        .invalidate(
                            &candidate.engine_id,
                            candidate.engine.as_ref(),
                            reference,
                            &voice,
                        )
                        .await?;
                    match clone_for(runtime, &candidate, reference, job.deadline).await {
                        Ok(id) => voice = id,
                        Err(err) => {
                            skip(err, "could not clone the stored voice again")?;
                            continue 'candidates;
                        }
                    }
                }
                Some(Err(err)) => {
                    skip(err, "engine failed before any audio")?;
                    continue 'candidates;
                }
            }
        };
        runtime.failing.served(&candidate.engine_id);
        let audio = futures::stream::once(async move { Ok(first) }).chain(audio);
        return Ok(Speech {
            engine: candidate.engine_id,
            audio: Box::pin(audio),
            stats,
            slot: Some(slot),
            relayed: relay.is_some(),
        });
    }
    Err(last.unwrap_or(Error::Timeout))
}

/// The candidate engine's clone of a stored voice, made on first use.
async fn clone_for(
    runtime: &Runtime,
    candidate: &Candidate,
    reference: &Arc<VoiceReference>,
    deadline: Instant,
) -> Result<String, Error> {
    let clones = runtime.clones.as_ref().ok_or_else(|| {
        Error::from(EngineError::Internal(
            "stored voices need the clone records".into(),
        ))
    })?;
    clones
        .resolve(&candidate.engine_id, &candidate.engine, reference, deadline)
        .await
}

/// Passes the audio through and, once it has ended cleanly, keeps a copy in the cache. A
/// failed, abandoned or oversized response is not kept.
pub fn keep(cache: Arc<SpeechCache>, key: CacheKey, speech: Speech) -> Speech {
    let limit = usize::try_from(cache.max_entry_bytes()).unwrap_or(usize::MAX);
    let engine = speech.engine.clone();
    let stats = Arc::clone(&speech.stats);
    let audio = futures::stream::unfold(
        (speech.audio, Some(Vec::new())),
        move |(mut audio, mut copy)| {
            let (cache, key, engine, stats) = (
                Arc::clone(&cache),
                key.clone(),
                engine.clone(),
                Arc::clone(&stats),
            );
            async move {
                match audio.next().await {
                    Some(Ok(bytes)) => {
                        if copy.as_ref().is_some_and(|c| c.len() + bytes.len() > limit) {
                            copy = None;
                        }
                        if let Some(c) = &mut copy {
                            c.extend_from_slice(&bytes);
                        }
                        Some((Ok(bytes), (audio, copy)))
                    }
                    Some(Err(e)) => Some((Err(e), (audio, None))),
                    None => {
                        if let Some(copy) = copy.take() {
                            cache
                                .put(&key, &engine, stats.output_seconds(), &copy)
                                .await;
                        }
                        None
                    }
                }
            }
        },
    );
    Speech {
        engine: speech.engine,
        audio: Box::pin(audio),
        stats: speech.stats,
        slot: speech.slot,
        relayed: speech.relayed,
    }
}

/// The per-request resampler and encoder, moved to the encoder pool and back for each piece.
struct Pipeline {
    resampler: Option<Resampler>,
    encoder: Encoder,
    stats: Arc<SpeechStats>,
}

impl Pipeline {
    fn feed(&mut self, rate: u32, samples: &[i16]) -> Result<Vec<u8>, Error> {
        let resampler = match &mut self.resampler {
            Some(r) => r,
            None => self
                .resampler
                .insert(Resampler::new(rate, OUTPUT_RATE).map_err(Error::internal)?),
        };
        let pcm = resampler.push(samples).map_err(Error::internal)?;
        self.encode(&pcm)
    }

    /// Silence goes straight to the encoder at the output rate (after what the resampler
    /// holds, which is at most a few milliseconds).
    fn silence(&mut self, ms: u32) -> Result<Vec<u8>, Error> {
        let samples = (u64::from(ms) * u64::from(OUTPUT_RATE) / 1000) as usize;
        self.encode(&vec![0; samples])
    }

    fn finish(&mut self) -> Result<Vec<u8>, Error> {
        let tail = match &mut self.resampler {
            Some(r) => r.finish().map_err(Error::internal)?,
            None => Vec::new(),
        };
        let mut out = self.encode(&tail)?;
        out.extend(self.encoder.finish().map_err(Error::internal)?);
        Ok(out)
    }

    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, Error> {
        self.stats
            .output_samples
            .fetch_add(pcm.len() as u64, Ordering::Relaxed);
        self.encoder.encode(pcm).map_err(Error::internal)
    }
}

enum State {
    Running {
        pcm: PieceStream,
        pipeline: Box<Pipeline>,
    },
    Done,
}

fn encode_stream(
    pcm: PieceStream,
    format: AudioFormat,
    pool: BlockingPool,
    deadline: Instant,
    stats: Arc<SpeechStats>,
) -> ByteStream {
    let pipeline = Encoder::new(format).map(|encoder| {
        Box::new(Pipeline {
            resampler: None,
            encoder,
            stats,
        })
    });
    let initial = match pipeline {
        Ok(pipeline) => State::Running { pcm, pipeline },
        Err(e) => {
            let err = Error::internal(e);
            return Box::pin(futures::stream::once(async move { Err(err) }));
        }
    };
    let stream = futures::stream::unfold(initial, move |state| {
        let pool = pool.clone();
        async move {
            let State::Running {
                mut pcm,
                mut pipeline,
            } = state
            else {
                return None;
            };
            loop {
                let next = match tokio::time::timeout_at(deadline, pcm.next()).await {
                    Ok(next) => next,
                    Err(_) => return Some((Err(Error::Timeout), State::Done)),
                };
                match next {
                    Some(Ok(piece)) => {
                        let (back, bytes) = match pool
                            .run(move || {
                                let bytes = match piece {
                                    Piece::Pcm(chunk) => {
                                        pipeline.feed(chunk.sample_rate, &chunk.samples)
                                    }
                                    Piece::Silence { ms } => pipeline.silence(ms),
                                };
                                (pipeline, bytes)
                            })
                            .await
                        {
                            Ok(done) => done,
                            Err(e) => return Some((Err(e.into()), State::Done)),
                        };
                        pipeline = back;
                        match bytes {
                            Ok(bytes) if bytes.is_empty() => continue,
                            Ok(bytes) => {
                                return Some((
                                    Ok(Bytes::from(bytes)),
                                    State::Running { pcm, pipeline },
                                ));
                            }
                            Err(e) => return Some((Err(e), State::Done)),
                        }
                    }
                    Some(Err(e)) => return Some((Err(engine_failure(e)), State::Done)),
                    None => {
                        let tail = pool.run(move || pipeline.finish()).await;
                        return match tail {
                            Ok(Ok(bytes)) if bytes.is_empty() => None,
                            Ok(Ok(bytes)) => Some((Ok(Bytes::from(bytes)), State::Done)),
                            Ok(Err(e)) => Some((Err(e), State::Done)),
                            Err(e) => Some((Err(e.into()), State::Done)),
                        };
                    }
                }
            }
        }
    });
    Box::pin(stream)
}

pub(super) fn engine_failure(err: EngineError) -> Error {
    Error::from(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use voxgate_flite::Flite;

    fn runtime() -> Runtime {
        Runtime {
            failing: Arc::default(),
            encoders: BlockingPool::new(1),
            concurrency: Arc::new(Concurrency::new(
                8,
                ["flite"],
                1,
                0,
                Duration::from_millis(10),
            )),
            metrics: Arc::new(Metrics::new()),
            clones: None,
        }
    }

    fn job(engine: Arc<dyn Synthesizer>, text: &str, format: AudioFormat) -> SpeechJob {
        SpeechJob {
            model: "tts-1".into(),
            voice: "alloy".into(),
            candidates: vec![Candidate {
                engine_id: "flite".into(),
                engine,
                native_voice: "slt".into(),
            }],
            reference: None,
            script: vec![Part::Say {
                text: text.into(),
                speed: 1.0,
            }],
            characters: text.chars().count(),
            speed: 1.0,
            format,
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    /// The first bytes leave after exactly one sentence has been synthesized.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_audio_follows_the_first_sentence_only() {
        let flite = Flite::new(1);
        let text = "First sentence here. Second one. Third one. Fourth one. Fifth and last.";
        let speech = start(
            job(Arc::new(flite.clone()), text, AudioFormat::Pcm),
            &runtime(),
        )
        .await
        .expect("start");
        assert_eq!(
            flite.segments_synthesized(),
            1,
            "only the first sentence before the first bytes"
        );
        let chunks: Vec<Bytes> = speech
            .audio
            .map(|c| c.expect("chunk"))
            .filter(|c| futures::future::ready(!c.is_empty()))
            .collect()
            .await;
        assert_eq!(flite.segments_synthesized(), 5);
        assert!(
            chunks.len() >= 5,
            "one piece per sentence, got {}",
            chunks.len()
        );
    }

    #[tokio::test]
    async fn output_is_24_khz_of_the_right_length() {
        let flite = Flite::new(1);
        let speech = start(
            job(Arc::new(flite), "Hello there.", AudioFormat::Pcm),
            &runtime(),
        )
        .await
        .expect("start");
        let stats = Arc::clone(&speech.stats);
        let bytes: Vec<u8> = speech
            .audio
            .map(|c| c.expect("chunk").to_vec())
            .concat()
            .await;
        let samples = bytes.len() / 2;
        assert_eq!(samples as u64, stats.output_samples.load(Ordering::Relaxed));
        let direct = Flite::synthesize_blocking("slt", "Hello there.", 1.0)
            .expect("synth")
            .len();
        assert_eq!(
            samples,
            (direct * 3).div_ceil(2),
            "16 kHz → 24 kHz keeps the duration"
        );
    }

    /// A pause between two parts becomes exactly that much silence in the output.
    #[tokio::test]
    async fn pauses_become_silence_between_parts() {
        let flite = Flite::new(1);
        let mut job = job(Arc::new(flite), "", AudioFormat::Pcm);
        job.script = vec![
            Part::Say {
                text: "One.".into(),
                speed: 1.0,
            },
            Part::Pause { ms: 1000 },
            Part::Say {
                text: "Two.".into(),
                speed: 1.0,
            },
        ];
        let speech = start(job, &runtime()).await.expect("start");
        let bytes: Vec<u8> = speech
            .audio
            .map(|c| c.expect("chunk").to_vec())
            .concat()
            .await;
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        // The longest run of exact zeros is the pause (Flite's own silences are shorter).
        let (mut longest, mut run) = (0usize, 0usize);
        for s in &samples {
            run = if *s == 0 { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        let expected = OUTPUT_RATE as usize;
        assert!(
            (expected..expected + OUTPUT_RATE as usize / 2).contains(&longest),
            "longest silence {longest} samples"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_past_its_deadline_ends_with_a_timeout() {
        let flite = Flite::new(1);
        let mut job = job(Arc::new(flite), "One. Two.", AudioFormat::Pcm);
        job.deadline = Instant::now();
        let err = start(job, &runtime()).await.unwrap_err();
        assert!(matches!(err, Error::Timeout), "{err:?}");
    }
}
