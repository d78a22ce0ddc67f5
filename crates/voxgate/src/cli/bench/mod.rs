//! `voxgate bench`: prints engine real-time factors, time to first audio, encoder costs and
//! idle memory. Figures are printed, never asserted (targets: TTFA ≤ 5% of full synthesis,
//! idle RSS ≤ 40 MB). The security stack's costs are measured in `stack`, Wyoming against
//! HTTP in `wyoming`, realtime transcription sessions in `realtime`.

mod realtime;
mod stack;
mod wyoming;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use voxgate_flite::{Flite, SAMPLE_RATE};

use crate::audio::{AudioFormat, Encoder, OUTPUT_RATE};
use crate::config::Config;
use crate::engines::Catalog;
use crate::service::speech::{Part, Runtime, Speech, SpeechJob, start_job};

use stack::{auth_cost, key_timing, limiter_throughput, quota_cost, stack_cost};
use wyoming::wyoming_vs_http;

const PARAGRAPH: &str = "The quick brown fox jumps over the lazy dog. Speech synthesis turns \
    written text into sound, one sentence after another. A gateway in front of it decides who \
    may speak, how much, and how fast.";

/// Runs every measurement and prints the figures.
pub async fn run(config: Config, quick: bool) -> anyhow::Result<()> {
    let reps = if quick { 1 } else { 5 };
    let mut out = std::io::stdout().lock();
    writeln!(out, "voxgate bench ({} repetition(s))", reps)?;

    writeln!(
        out,
        "\n## Flite real-time factor, one thread (lower is faster)"
    )?;
    for voice in ["slt", "kal16", "rms", "awb"] {
        let start = Instant::now();
        let mut samples = 0usize;
        for _ in 0..reps {
            samples += Flite::synthesize_blocking(voice, PARAGRAPH, 1.0)?.len();
        }
        let audio = samples as f64 / f64::from(SAMPLE_RATE);
        let rtf = start.elapsed().as_secs_f64() / audio;
        writeln!(out, "{voice:<6} RTF {rtf:.4}  ({audio:.1} s of audio)")?;
    }

    writeln!(
        out,
        "\n## Time to first audio vs full synthesis, 4096-character input, mp3"
    )?;
    let (catalog, runtime, _work) = super::speech_parts(&config)?;
    let long: String = PARAGRAPH
        .repeat(4096 / PARAGRAPH.len() + 1)
        .chars()
        .take(4096)
        .collect();
    let model = catalog
        .model("tts-1")
        .ok_or_else(|| anyhow::anyhow!("no model tts-1"))?;
    let candidates = catalog.resolve(model, "alloy");
    anyhow::ensure!(!candidates.is_empty(), "no voice alloy");
    for _ in 0..reps {
        let job = SpeechJob {
            model: "tts-1".into(),
            voice: "alloy".into(),
            candidates: candidates.clone(),
            reference: None,
            script: vec![Part::Say {
                text: long.clone(),
                speed: 1.0,
            }],
            characters: long.chars().count(),
            speed: 1.0,
            format: AudioFormat::Mp3,
            deadline: tokio::time::Instant::now() + Duration::from_secs(3600),
        };
        let start = Instant::now();
        let speech = start_job(job, &runtime).await?;
        let ttfa = start.elapsed();
        let mut audio = speech.audio;
        while let Some(chunk) = audio.next().await {
            chunk?;
        }
        let full = start.elapsed();
        writeln!(
            out,
            "TTFA {:.1} ms, full {:.1} ms, TTFA/full {:.2}% ({:.1} s of audio)",
            ttfa.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e3,
            ttfa.as_secs_f64() / full.as_secs_f64() * 100.0,
            speech.stats.output_seconds()
        )?;
    }

    writeln!(out, "\n## Encoder cost per format (10 s of 24 kHz speech)")?;
    let speech16 = Flite::synthesize_blocking("slt", &PARAGRAPH.repeat(2), 1.0)?;
    let mut resampler = crate::audio::Resampler::new(SAMPLE_RATE, OUTPUT_RATE)?;
    let mut pcm = resampler.push(&speech16)?;
    pcm.extend(resampler.finish()?);
    pcm.truncate(OUTPUT_RATE as usize * 10);
    let secs = pcm.len() as f64 / f64::from(OUTPUT_RATE);
    for format in AudioFormat::ALL.into_iter().filter(|f| f.is_available()) {
        let start = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..reps {
            let mut encoder = Encoder::new(format)?;
            for piece in pcm.chunks(OUTPUT_RATE as usize) {
                bytes += encoder.encode(piece)?.len();
            }
            bytes += encoder.finish()?.len();
        }
        let per_audio_sec = start.elapsed().as_secs_f64() / (secs * reps as f64) * 1e3;
        writeln!(
            out,
            "{:<5} {per_audio_sec:.3} ms per audio second, {:.1} kB/s",
            format.as_str(),
            bytes as f64 / reps as f64 / secs / 1e3
        )?;
    }

    writeln!(
        out,
        "\n## Upload probe cost (check + full decode), per MB of upload"
    )?;
    probe_cost(&pcm, reps, &mut out)?;

    writeln!(
        out,
        "\n## Speech recognition (Whisper base) real-time factor, Flite speech in"
    )?;
    if let Err(err) = stt_rtf(&catalog, &runtime, reps, &mut out).await {
        writeln!(out, "not measured: {err}")?;
    }

    writeln!(
        out,
        "\n## Piper (en_US-joe-medium) real-time factor, ONNX Runtime"
    )?;
    if let Err(err) = piper_rtf(&catalog, &runtime, reps, &mut out).await {
        writeln!(out, "not measured: {err}")?;
    }

    writeln!(
        out,
        "\n## Speech cache: a hit vs synthesis of the same response (mp3; goal: hit ≥ 50× faster)"
    )?;
    cache_vs_synthesis(&catalog, &runtime, reps, &mut out).await?;

    writeln!(
        out,
        "\n## Authentication cost per request (SQLite, one key)"
    )?;
    auth_cost(&config, if quick { 2_000 } else { 20_000 }, &mut out).await?;

    writeln!(
        out,
        "\n## Failed authentication: an unknown key id vs a known one with a wrong secret"
    )?;
    key_timing(&config, if quick { 2_000 } else { 10_000 }, &mut out).await?;

    writeln!(
        out,
        "\n## Durable quota accounting per request (SQLite: a reservation and a settlement)"
    )?;
    quota_cost(&config, if quick { 1_600 } else { 16_000 }, &mut out).await?;

    writeln!(out, "\n## Rate-limit decisions per second")?;
    limiter_throughput(if quick { 20_000 } else { 200_000 }, &mut out).await?;

    writeln!(
        out,
        "\n## Cost of the auth + limits stack on GET /v1/models (in-process, no network)"
    )?;
    stack_cost(&config, if quick { 2_000 } else { 20_000 }, &mut out).await?;

    writeln!(
        out,
        "\n## Time to first audio: Wyoming `synthesize` vs HTTP streaming (same text, pcm; goal: within 20%)"
    )?;
    if let Err(err) = wyoming_vs_http(&config, if quick { 3 } else { 15 }, &mut out).await {
        writeln!(out, "not measured: {err}")?;
    }

    writeln!(
        out,
        "\n## Realtime transcription (WebSocket, server VAD, Whisper base; Flite speech at real-time pace)"
    )?;
    let (rounds, sessions) = if quick { (2, 4) } else { (5, 12) };
    if let Err(err) = realtime::run(&config, rounds, sessions, &mut out).await {
        writeln!(out, "not measured: {err}")?;
    }

    writeln!(out, "\n## Idle memory of `voxgate serve`")?;
    match idle_rss() {
        Ok(kb) => writeln!(out, "idle RSS {:.1} MB", kb as f64 / 1024.0)?,
        Err(e) => writeln!(out, "idle RSS not measured: {e}")?,
    }
    Ok(())
}

/// One job for `model` and voice `alloy` saying `text` in `format`.
fn job_for(
    catalog: &Catalog,
    model: &str,
    text: &str,
    format: AudioFormat,
) -> anyhow::Result<SpeechJob> {
    let model = catalog
        .model(model)
        .ok_or_else(|| anyhow::anyhow!("no model {model}"))?;
    let candidates = catalog.resolve(model, "alloy");
    anyhow::ensure!(!candidates.is_empty(), "no voice alloy");
    Ok(SpeechJob {
        model: model.id.clone(),
        voice: "alloy".into(),
        candidates,
        reference: None,
        script: vec![Part::Say {
            text: text.to_owned(),
            speed: 1.0,
        }],
        characters: text.chars().count(),
        speed: 1.0,
        format,
        deadline: tokio::time::Instant::now() + Duration::from_secs(3600),
    })
}

/// Synthesizes a job to the end; returns the encoded bytes, the seconds of audio and who
/// served.
async fn synthesize_all(
    job: SpeechJob,
    runtime: &Runtime,
) -> anyhow::Result<(Vec<u8>, f64, String)> {
    let speech = start_job(job, runtime).await?;
    let mut bytes = Vec::new();
    let mut audio = speech.audio;
    while let Some(chunk) = audio.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok((bytes, speech.stats.output_seconds(), speech.engine))
}

async fn piper_rtf(
    catalog: &Catalog,
    runtime: &Runtime,
    reps: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let text = PARAGRAPH.repeat(2);
    let start = Instant::now();
    let (_, _, engine) = synthesize_all(
        job_for(catalog, "piper", "Hello.", AudioFormat::Pcm)?,
        runtime,
    )
    .await?;
    anyhow::ensure!(
        engine == "piper",
        "served by {engine} (run scripts/fetch-models)"
    );
    writeln!(
        out,
        "first call (verify 3 checksums, load, one word) {:.2} s",
        start.elapsed().as_secs_f64()
    )?;
    for _ in 0..reps {
        let start = Instant::now();
        let (_, seconds, _) =
            synthesize_all(job_for(catalog, "piper", &text, AudioFormat::Pcm)?, runtime).await?;
        let took = start.elapsed().as_secs_f64();
        writeln!(
            out,
            "RTF {:.3}  ({seconds:.1} s of audio in {took:.2} s, pcm out)",
            took / seconds
        )?;
    }
    // Punctuation must not multiply phonemizer runs: 400 characters of "a, a, a, …" against
    // 400 characters of prose (goal: at most 1.5×).
    let commas: String = "a, ".repeat(134).chars().take(400).collect();
    let prose: String = PARAGRAPH.repeat(2).chars().take(400).collect();
    let mut took = [0.0f64; 2];
    for _ in 0..reps {
        for (i, text) in [&commas, &prose].into_iter().enumerate() {
            let start = Instant::now();
            synthesize_all(job_for(catalog, "piper", text, AudioFormat::Pcm)?, runtime).await?;
            took[i] += start.elapsed().as_secs_f64();
        }
    }
    writeln!(
        out,
        "400 characters of \"a, a, a, …\" {:.0} ms, of prose {:.0} ms: {:.2}× (goal ≤ 1.5×)",
        took[0] * 1e3 / reps as f64,
        took[1] * 1e3 / reps as f64,
        took[0] / took[1]
    )?;
    Ok(())
}

async fn cache_vs_synthesis(
    catalog: &Catalog,
    runtime: &Runtime,
    reps: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use crate::data::cache::{KeyParts, SpeechCache};
    let dir = tempfile::tempdir()?;
    let master = secrecy::SecretString::from(crate::util::hex(&crate::util::random_bytes::<32>()));
    let store = crate::data::store::open("", dir.path()).await?;
    let vault = Arc::new(crate::data::vault::Vault::new(
        &master,
        store,
        Duration::from_secs(1),
    ));
    let config = Config::defaults()?.cache;
    let cache = SpeechCache::open(&dir.path().join("cache"), vault, config)?;
    for model in ["tts-1", "piper"] {
        let mut synth = Duration::ZERO;
        let mut hit = Duration::ZERO;
        let mut bytes = 0;
        for rep in 0..reps {
            let key = cache.key(
                "acct_bench",
                &KeyParts {
                    model,
                    engines: vec![model],
                    voice: "alloy",
                    script: &format!("{PARAGRAPH} {rep}"),
                    speed: 1.0,
                    format: "mp3",
                },
            );
            let start = Instant::now();
            let (audio, seconds, engine) = match synthesize_all(
                job_for(catalog, model, PARAGRAPH, AudioFormat::Mp3)?,
                runtime,
            )
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    writeln!(out, "{model}: not measured: {e}")?;
                    break;
                }
            };
            synth += start.elapsed();
            cache.put(&key, &engine, seconds, &audio).await;
            bytes = audio.len();
            let start = Instant::now();
            let cached = cache
                .get(&key, false)
                .await
                .ok_or_else(|| anyhow::anyhow!("cache miss right after put"))?;
            let characters = PARAGRAPH.chars().count();
            let replay = Speech::replay(cached.engine, cached.audio, cached.seconds, characters);
            let mut audio = replay.audio;
            while let Some(chunk) = audio.next().await {
                chunk?;
            }
            hit += start.elapsed();
        }
        if hit.is_zero() {
            continue;
        }
        writeln!(
            out,
            "{model:<6} synthesis {:.1} ms, cache hit {:.2} ms ({} kB sealed on disk): {:.0}× faster",
            synth.as_secs_f64() * 1e3 / reps as f64,
            hit.as_secs_f64() * 1e3 / reps as f64,
            bytes / 1000,
            synth.as_secs_f64() / hit.as_secs_f64()
        )?;
    }
    Ok(())
}

/// Encodes `pcm` (24 kHz) as each accepted upload format this build can write, then times
/// `probe_bytes` on it: magic bytes, polyglot checks and a complete decode.
fn probe_cost(pcm: &[i16], reps: usize, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    use voxgate_input::probe::{ProbeLimits, probe_bytes};
    let secs = pcm.len() as f64 / f64::from(OUTPUT_RATE);
    let limits = ProbeLimits {
        max_duration_secs: 3600.0,
        ..ProbeLimits::default()
    };
    for (format, ext) in [
        (AudioFormat::Wav, "wav"),
        (AudioFormat::Mp3, "mp3"),
        (AudioFormat::Flac, "flac"),
        (AudioFormat::Opus, "ogg"),
    ] {
        let mut encoder = Encoder::new(format)?;
        let mut bytes = encoder.encode(pcm)?;
        bytes.extend(encoder.finish()?);
        if format == AudioFormat::Wav {
            // The streaming WAV header leaves the sizes open; an upload has them filled in.
            let riff = u32::try_from(bytes.len() - 8)?;
            bytes[4..8].copy_from_slice(&riff.to_le_bytes());
            let data = u32::try_from(bytes.len() - 44)?;
            bytes[40..44].copy_from_slice(&data.to_le_bytes());
        }
        let start = Instant::now();
        for _ in 0..reps {
            probe_bytes(&bytes, &format!("upload.{ext}"), &limits)
                .map_err(|e| anyhow::anyhow!("{ext}: {e}"))?;
        }
        let elapsed = start.elapsed().as_secs_f64() / reps as f64;
        let mb = bytes.len() as f64 / 1e6;
        writeln!(
            out,
            "{ext:<5} {:.1} ms per MB ({mb:.2} MB, {secs:.0} s of audio, {:.1} ms per audio minute)",
            elapsed * 1e3 / mb,
            elapsed * 1e3 / secs * 60.0
        )?;
    }
    Ok(())
}

/// Times the configured `whisper-1` recogniser on the paragraph spoken by Flite: the first
/// call (checksums and loading) apart, then plain text and with word timings.
async fn stt_rtf(
    catalog: &Catalog,
    runtime: &Runtime,
    reps: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use voxgate_engine::TranscriptionRequest;
    let model = catalog
        .model("whisper-1")
        .ok_or_else(|| anyhow::anyhow!("no model whisper-1"))?;
    let engine = catalog
        .transcriber(model)
        .ok_or_else(|| anyhow::anyhow!("whisper-1 has no recogniser"))?;
    let pcm = Flite::synthesize_blocking("slt", PARAGRAPH, 1.0)?;
    let samples: Vec<f32> = pcm.iter().map(|s| f32::from(*s) / 32768.0).collect();
    let rate = engine.sample_rate();
    let samples = runtime
        .encoders
        .run(move || crate::service::transcription::resample(&samples, SAMPLE_RATE, rate))
        .await??;
    let secs = samples.len() as f64 / f64::from(rate);
    let request = |timestamps| TranscriptionRequest {
        samples: samples.clone(),
        language: Some("en".into()),
        temperature: 0.0,
        timestamps,
        ..TranscriptionRequest::default()
    };
    let start = Instant::now();
    engine.transcribe(request(false)).await?;
    writeln!(
        out,
        "first call (verify checksums, load, transcribe): {:.2} s",
        start.elapsed().as_secs_f64()
    )?;
    for (label, timestamps) in [("text", false), ("word timings", true)] {
        let start = Instant::now();
        for _ in 0..reps {
            engine.transcribe(request(timestamps)).await?;
        }
        let rtf = start.elapsed().as_secs_f64() / (secs * reps as f64);
        writeln!(out, "{label:<13} RTF {rtf:.3}  ({secs:.1} s of audio)")?;
    }
    Ok(())
}

/// A throw-away server configuration for a measurement: its own data directory (returned,
/// to be removed afterwards), SQLite, a fixed pepper, loopback on a free port, no admin
/// listener, limits that never refuse and no quotas.
pub(super) fn scratch_server(
    config: &Config,
    name: &str,
) -> anyhow::Result<(Config, std::path::PathBuf)> {
    let dir = std::env::temp_dir().join(format!("voxgate-bench-{name}-{}", std::process::id()));
    let mut config = config.clone();
    config.data_dir = dir.clone();
    config.database.url = secrecy::SecretString::from(String::new());
    config.auth.pepper = Some(secrecy::SecretString::from("d".repeat(32)));
    config.server.bind = "127.0.0.1:0".parse()?;
    config.admin.enabled = false;
    never_refusing(&mut config);
    for tier in config.tiers.values_mut() {
        tier.quotas.clear();
    }
    Ok((config, dir))
}

/// A new account of `tier` and a key of it, made as the CLI makes them.
pub(super) async fn bench_key(
    accounts: &crate::identity::accounts::Accounts,
    tier: &str,
) -> anyhow::Result<crate::identity::accounts::CreatedKey> {
    use crate::data::audit::Actor;
    use crate::identity::accounts::KeyRequest;
    let account = accounts
        .create_account(Actor::Cli, "bench", None, tier)
        .await?;
    Ok(accounts
        .create_key(Actor::Cli, &account.id, KeyRequest::default(), None)
        .await?)
}

/// Rate limits that decide on every request (per address and per account) and never
/// refuse.
fn never_refusing(config: &mut Config) {
    let generous = |per| crate::config::RateRule {
        per,
        period: crate::config::Period::Minute,
        limit: 1_000_000_000,
        burst: None,
        route: None,
    };
    for tier in config.tiers.values_mut() {
        tier.rate_limits = vec![generous(crate::config::RateSubject::Account)];
    }
    config.limits.per_ip = vec![generous(crate::config::RateSubject::Account)];
}

/// Starts `voxgate serve` on a free loopback port, waits until it listens, reads its RSS.
fn idle_rss() -> anyhow::Result<u64> {
    let dir = std::env::temp_dir().join(format!("voxgate-bench-{}", std::process::id()));
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(&dir)
        .env("VOXGATE_ADMIN__ENABLED", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let listening = BufReader::new(stderr)
        .lines()
        .take(50)
        .map_while(Result::ok)
        .any(|line| line.contains("listening"));
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(listening, "server did not start");
    let status = status?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))
}
