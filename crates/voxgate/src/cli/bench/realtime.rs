//! Realtime transcription figures: the latency from the end of an utterance to its
//! `completed` event, and how many sessions streaming at real-time pace this machine keeps
//! up with. A real server on loopback, real WebSocket clients, the embedded voice's speech.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{SinkExt as _, StreamExt as _};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::config::Config;

const UTTERANCE: &str = "The quick brown fox jumps over the lazy dog near the river bank.";
/// Silence after each utterance (server VAD needs 500 ms of it to end the turn).
const GAP_SECS: f64 = 1.5;
/// Utterances per session in the capacity rounds.
const TURNS: usize = 3;

/// Prints both figures; `rounds` latency measurements, capacity up to `max_sessions`.
pub async fn run(
    config: &Config,
    rounds: usize,
    max_sessions: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let (mut config, dir) = super::scratch_server(config, "realtime")?;
    config.transcription.realtime.max_sessions = max_sessions.max(1);
    for tier in config.tiers.values_mut() {
        tier.max_concurrent_per_key = 1_000;
        tier.max_concurrent_per_account = 1_000;
    }
    let app = crate::http::server::Application::build(config).await?;
    let addr = app.local_addr()?;
    let key = super::bench_key(&app.state().accounts, "admin").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let bearer = format!("Bearer {}", key.secret.expose_secret());
    let measured = measure(addr, &bearer, rounds, max_sessions, out).await;
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

async fn measure(
    addr: std::net::SocketAddr,
    bearer: &str,
    rounds: usize,
    max_sessions: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    crate::engines::providers::install_crypto();
    let speech = reqwest::Client::new()
        .post(format!("http://{addr}/v1/audio/speech"))
        .header("authorization", bearer)
        .json(&json!({"model": "tts-1", "voice": "alloy", "input": UTTERANCE, "response_format": "pcm"}))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let spoken: Vec<i16> = speech
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let secs = spoken.len() as f64 / 24_000.0;

    // The first session loads the recogniser and the detector: not counted.
    session(addr, bearer, &spoken, 1).await?;
    let mut lags = Vec::new();
    for _ in 0..rounds {
        lags.extend(session(addr, bearer, &spoken, 1).await?);
    }
    lags.sort_by(f64::total_cmp);
    writeln!(
        out,
        "end of utterance → completed: median {:.0} ms, max {:.0} ms ({rounds} utterance(s) of {secs:.1} s; includes the 500 ms of silence that ends a turn)",
        lags[lags.len() / 2] * 1e3,
        lags[lags.len() - 1] * 1e3,
    )?;

    // Sessions that keep up: each turn's lag stays near the lone session's, not growing
    // turn after turn (a backlog).
    let alone = lags[lags.len() / 2];
    let mut sustained = 0;
    let mut n = 1;
    while n <= max_sessions {
        let started = Instant::now();
        let sessions: Vec<_> = (0..n)
            .map(|_| {
                let (bearer, spoken) = (bearer.to_owned(), spoken.clone());
                tokio::spawn(async move { session(addr, &bearer, &spoken, TURNS).await })
            })
            .collect();
        let mut all = Vec::new();
        for s in sessions {
            all.push(s.await??);
        }
        let last: Vec<f64> = all.iter().filter_map(|l| l.last().copied()).collect();
        let worst = last.iter().copied().fold(0.0, f64::max);
        let audio = n as f64 * TURNS as f64 * (secs + GAP_SECS);
        let keeps_up = worst <= alone * 2.0 + 1.0;
        writeln!(
            out,
            "{n:>2} session(s): last turn's lag max {:.2} s, {:.0} s of audio in {:.1} s{}",
            worst,
            audio,
            started.elapsed().as_secs_f64(),
            if keeps_up { "" } else { "  (falls behind)" }
        )?;
        if !keeps_up {
            break;
        }
        sustained = n;
        n = if n < 2 { n + 1 } else { n + 2 };
    }
    writeln!(
        out,
        "sessions sustained at real-time pace (RTF < 1): {sustained}{}",
        if sustained == max_sessions {
            " (the most tried)"
        } else {
            ""
        }
    )?;
    Ok(())
}

/// One session: `turns` × (the utterance, then silence) in 20 ms chunks at real-time pace;
/// returns each turn's lag from the end of its speech to its `completed` event, in seconds.
async fn session(
    addr: std::net::SocketAddr,
    bearer: &str,
    spoken: &[i16],
    turns: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut request =
        format!("ws://{addr}/v1/realtime?intent=transcription").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", bearer.parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut writer, mut reader) = ws.split();
    let collector = tokio::spawn(async move {
        let mut completed = Vec::new();
        while completed.len() < turns {
            let message = tokio::time::timeout(Duration::from_secs(300), reader.next())
                .await
                .map_err(|_| anyhow::anyhow!("no event for 300 s"))?
                .ok_or_else(|| anyhow::anyhow!("the session closed"))??;
            if let Message::Text(text) = message {
                let event: Value = serde_json::from_str(&text)?;
                match event["type"].as_str() {
                    Some("conversation.item.input_audio_transcription.completed") => {
                        completed.push(Instant::now());
                    }
                    Some("error") => anyhow::bail!("error event: {}", event["error"]),
                    _ => {}
                }
            }
        }
        Ok::<_, anyhow::Error>(completed)
    });
    let mut audio = Vec::new();
    for _ in 0..turns {
        audio.extend_from_slice(spoken);
        audio.extend(std::iter::repeat_n(0i16, (GAP_SECS * 24_000.0) as usize));
    }
    let per_turn = spoken.len() + (GAP_SECS * 24_000.0) as usize;
    let mut speech_ends = Vec::new();
    let started = Instant::now();
    for (i, chunk) in audio.chunks(480).enumerate() {
        let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
        let event = json!({"type": "input_audio_buffer.append", "audio": BASE64.encode(bytes)});
        writer.send(Message::text(event.to_string())).await?;
        let sent = (i + 1) * 480;
        if speech_ends.len() < turns && sent >= speech_ends.len() * per_turn + spoken.len() {
            speech_ends.push(Instant::now());
        }
        tokio::time::sleep_until((started + Duration::from_millis(20 * (i as u64 + 1))).into())
            .await;
    }
    let completed = collector.await??;
    let _ = writer.send(Message::Close(None)).await;
    Ok(speech_ends
        .iter()
        .zip(&completed)
        .map(|(end, done)| done.saturating_duration_since(*end).as_secs_f64())
        .collect())
}
