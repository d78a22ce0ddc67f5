//! Flite 2.2, statically linked, as a voxgate [`Synthesizer`].
//!
//! The four CMU US voices are compiled in (no data files at run time). Text is split into
//! sentences; each sentence is synthesized on the [`BlockingPool`] only when the stream is
//! polled for it, so the first audio leaves after the first sentence. `speed` maps to
//! Flite's own `duration_stretch`, set on each utterance, never on the shared voice.

mod ffi;

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use voxgate_engine::{
    BlockingPool, EngineError, PcmChunk, PcmStream, SynthesisRequest, Synthesizer, VoiceInfo,
    sentences,
};

/// Flite's native sample rate for all bundled voices.
pub const SAMPLE_RATE: u32 = 16_000;

/// The engine. Cheap to clone: all state is shared.
#[derive(Debug, Clone)]
pub struct Flite {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: BlockingPool,
    voices: Vec<VoiceInfo>,
    /// Sentences synthesized so far, for metrics and the streaming tests.
    segments: AtomicU64,
}

/// A registered voice.
///
/// Flite documents itself as thread safe once its voices are registered: synthesis reads
/// the voice's (immutable) features and builds all mutable state in the utterance. Only
/// registration mutates globals, so it runs once, under [`INIT_LOCK`]. The concurrency test
/// below checks that parallel synthesis gives the same samples as serial synthesis.
struct Voice {
    ptr: *mut ffi::CstVoice,
    /// The voice's own `duration_stretch` (kal16 ships 1.1); speed scales it.
    base_stretch: f32,
}

// SAFETY: voice pointers are created once, never freed or mutated after registration, and
// Flite only reads them during synthesis.
unsafe impl Send for Voice {}
unsafe impl Sync for Voice {}

struct Library {
    voices: Vec<(&'static str, Voice)>,
}

static LIBRARY: OnceLock<Library> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// The bundled voices: id, description.
const VOICES: &[(&str, &str)] = &[
    ("slt", "CMU SLT (US English, female)"),
    ("kal16", "CMU KAL (US English, male)"),
    ("rms", "CMU RMS (US English, male)"),
    ("awb", "CMU AWB (Scottish English, male)"),
];

fn library() -> &'static Library {
    LIBRARY.get_or_init(|| {
        let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: called once, under the lock, before any synthesis; the registration
        // functions accept a NULL voice directory for compiled-in voices and return a voice
        // that lives for the rest of the process.
        unsafe {
            ffi::flite_init();
            let null = std::ptr::null();
            let voice = |ptr: *mut ffi::CstVoice| {
                assert!(!ptr.is_null(), "flite voice registration failed");
                let base_stretch =
                    ffi::get_param_float((*ptr).features, c"duration_stretch".as_ptr(), 1.0);
                Voice { ptr, base_stretch }
            };
            Library {
                voices: vec![
                    ("slt", voice(ffi::register_cmu_us_slt(null))),
                    ("kal16", voice(ffi::register_cmu_us_kal16(null))),
                    ("rms", voice(ffi::register_cmu_us_rms(null))),
                    ("awb", voice(ffi::register_cmu_us_awb(null))),
                ],
            }
        }
    })
}

impl Flite {
    /// Initialises Flite (once per process) with a pool of `threads` synthesis slots.
    pub fn new(threads: usize) -> Self {
        library();
        let voices = VOICES
            .iter()
            .map(|(id, name)| VoiceInfo {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
                language: if *id == "awb" { "en-GB" } else { "en-US" }.to_owned(),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                pool: BlockingPool::new(threads),
                voices,
                segments: AtomicU64::new(0),
            }),
        }
    }

    /// How many sentences this engine has synthesized.
    pub fn segments_synthesized(&self) -> u64 {
        self.inner.segments.load(Ordering::SeqCst)
    }

    /// Synthesizes one piece of text synchronously (callers run it on the blocking pool).
    pub fn synthesize_blocking(
        voice: &str,
        text: &str,
        speed: f32,
    ) -> Result<Vec<i16>, EngineError> {
        let voice = library()
            .voices
            .iter()
            .find(|(id, _)| *id == voice)
            .map(|(_, v)| v)
            .ok_or(EngineError::UnknownVoice)?;
        let text = CString::new(to_flite_text(text))
            .map_err(|_| EngineError::Internal("NUL survived text preparation".into()))?;
        // SAFETY: the utterance is created, used and deleted here and never shared; the voice
        // is only read; the wave belongs to the utterance, so its samples are copied out
        // before deletion.
        unsafe {
            let utt = ffi::new_utterance();
            if utt.is_null() {
                return Err(EngineError::Internal("flite: no utterance".into()));
            }
            ffi::utt_set_input_text(utt, text.as_ptr());
            ffi::utt_init(utt, voice.ptr);
            // Set on the utterance, whose features shadow the voice's: the voice is untouched.
            let stretch = voice.base_stretch / speed;
            ffi::feat_set_float((*utt).features, c"duration_stretch".as_ptr(), stretch);
            let wave = if ffi::utt_synth(utt).is_null() {
                std::ptr::null_mut()
            } else {
                ffi::utt_wave(utt)
            };
            let samples = if wave.is_null() || (*wave).samples.is_null() {
                Vec::new()
            } else {
                let n = usize::try_from((*wave).num_samples.max(0)).unwrap_or(0);
                let channels = usize::try_from((*wave).num_channels.max(1)).unwrap_or(1);
                let all = std::slice::from_raw_parts((*wave).samples, n * channels);
                all.iter().step_by(channels).copied().collect()
            };
            ffi::delete_utterance(utt);
            Ok(samples)
        }
    }
}

/// Flite's English front end reads ASCII. Common typographic characters are mapped to their
/// ASCII forms; anything else non-printable becomes a space (never a NUL).
fn to_flite_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '‘' | '’' | '‚' | '′' => '\'',
            '“' | '”' | '„' | '″' => '"',
            '–' | '—' | '‒' | '−' => '-',
            '…' => '.',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => ' ',
        })
        .collect()
}

impl Synthesizer for Flite {
    fn id(&self) -> &str {
        "flite"
    }

    fn voices(&self) -> &[VoiceInfo] {
        &self.inner.voices
    }

    fn synthesize(&self, request: SynthesisRequest) -> Result<PcmStream, EngineError> {
        if !self.inner.voices.iter().any(|v| v.id == request.voice) {
            return Err(EngineError::UnknownVoice);
        }
        let inner = Arc::clone(&self.inner);
        let pieces = sentences::split(&request.text);
        let stream = futures::stream::iter(pieces).then(move |piece| {
            let inner = Arc::clone(&inner);
            let voice = request.voice.clone();
            let speed = request.speed;
            async move {
                let samples = inner
                    .pool
                    .run(move || Flite::synthesize_blocking(&voice, &piece, speed))
                    .await??;
                inner.segments.fetch_add(1, Ordering::SeqCst);
                Ok(PcmChunk {
                    sample_rate: SAMPLE_RATE,
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

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        (sum / samples.len().max(1) as f64).sqrt()
    }

    #[test]
    fn every_voice_speaks() {
        for (id, _) in VOICES {
            let samples = Flite::synthesize_blocking(id, "Hello there.", 1.0).expect("synth");
            let secs = samples.len() as f64 / f64::from(SAMPLE_RATE);
            assert!((0.4..3.0).contains(&secs), "{id}: {secs}s");
            assert!(rms(&samples) > 300.0, "{id}: silent");
        }
    }

    #[test]
    fn speed_changes_duration() {
        let text = "The quick brown fox jumps over the lazy dog.";
        let normal = Flite::synthesize_blocking("slt", text, 1.0)
            .expect("synth")
            .len();
        let fast = Flite::synthesize_blocking("slt", text, 2.0)
            .expect("synth")
            .len();
        let ratio = fast as f64 / normal as f64;
        assert!((0.4..0.65).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn unknown_voice_is_a_client_error() {
        let err = Flite::synthesize_blocking("../../etc/passwd", "hi", 1.0).unwrap_err();
        assert!(matches!(err, EngineError::UnknownVoice));
    }

    #[test]
    fn hostile_bytes_are_made_safe() {
        assert_eq!(to_flite_text("a\0b\u{202e}c’d"), "a b c'd");
        // Whatever comes in, Flite survives it.
        let nasty = "\u{7f}\u{1}🙂 ½ ∞ ﷽ \\x00 %s%n $(id) `id` ; rm -rf /";
        Flite::synthesize_blocking("slt", nasty, 1.0).expect("synth");
    }

    /// kal16 is deterministic (the other voices add random excitation), so parallel
    /// synthesis must reproduce the serial samples exactly.
    #[test]
    fn parallel_synthesis_matches_serial() {
        let texts = [
            "The first text.",
            "A second, longer piece of text to speak.",
            "Three.",
        ];
        let serial: Vec<Vec<i16>> = texts
            .iter()
            .map(|t| Flite::synthesize_blocking("kal16", t, 1.0).expect("synth"))
            .collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..12)
                .map(|i| {
                    let text = texts[i % texts.len()];
                    let voice = if i % 2 == 0 { "kal16" } else { "slt" };
                    scope.spawn(move || (i, voice, Flite::synthesize_blocking(voice, text, 1.0)))
                })
                .collect();
            for handle in handles {
                let (i, voice, samples) = handle.join().expect("thread");
                let samples = samples.expect("synth");
                if voice == "kal16" {
                    assert_eq!(
                        samples,
                        serial[i % texts.len()],
                        "text {i} differs under concurrency"
                    );
                }
            }
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_one_sentence_per_poll() {
        let flite = Flite::new(2);
        let request = SynthesisRequest {
            text: "One. Two. Three.".into(),
            voice: "slt".into(),
            speed: 1.0,
            reference: None,
        };
        let mut stream = flite.synthesize(request).expect("start");
        let first = stream.next().await.expect("chunk").expect("audio");
        assert!(!first.samples.is_empty());
        assert_eq!(flite.segments_synthesized(), 1);
        let rest: Vec<_> = stream.collect().await;
        assert_eq!(rest.len(), 2);
        assert_eq!(flite.segments_synthesized(), 3);
    }
}
