//! Real-time factor of Piper joe-medium: synthesis seconds per audio second, on ~20 s of text.
//!
//! `cargo run --release --example rtf -- models/piper-joe [threads]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use voxgate_engine::sentences;
use voxgate_piper::{CommandPhonemizer, Piper, PiperSettings, sentence_phonemes};

const TEXT: &str = "The gateway streams audio as soon as the first sentence is ready. \
    Each request is checked, queued and sent to the engine that serves its tier. \
    When a remote provider fails, the circuit breaker opens and a local engine answers instead. \
    Piper speaks with a neural voice, while Flite remains the small and fast fallback. \
    The model files are verified against their checksums before anything loads them. \
    If nobody asks for speech for a while, the voice is unloaded to give the memory back.";

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: rtf MODEL_DIR [THREADS]")?;
    let threads = args.next().map_or(Ok(2), |t| t.parse())?;
    let mut settings = PiperSettings::new(dir);
    settings.intra_threads = threads;
    settings.idle_unload = None;
    settings.sentence_silence = Duration::ZERO;
    let espeak = Arc::new(CommandPhonemizer::default());
    let piper = Piper::new(settings, espeak.clone());

    let started = Instant::now();
    piper.preload()?;
    println!(
        "load (checksums + session): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    piper.speak_blocking("Warm up.", 1.0)?;

    let pieces = sentences::split(TEXT);
    let started = Instant::now();
    for piece in &pieces {
        sentence_phonemes(piece, "en-us", &*espeak)?;
    }
    let phonemize = started.elapsed().as_secs_f64();
    for round in 1..=3 {
        let cpu = cpu_seconds();
        let started = Instant::now();
        let mut samples = 0;
        let mut rate = 1;
        for piece in &pieces {
            let (r, audio) = piper.speak_blocking(piece, 1.0)?;
            rate = r;
            samples += audio.len();
        }
        let synth = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let audio = samples as f64 / f64::from(rate);
        println!(
            "round {round}: {} sentences, {audio:.2} s audio in {synth:.2} s on {threads} threads: \
             RTF {:.3}, CPU {:.3} s per audio s (espeak-ng alone took {phonemize:.2} s)",
            pieces.len(),
            synth / audio,
            cpu / audio,
        );
    }
    Ok(())
}

/// This process's user and system CPU time, all threads (Linux `/proc/self/stat`, 100 Hz).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
