//! Time to first audio over Wyoming against HTTP, on one real server.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::service::Services;

use super::{PARAGRAPH, scratch_server};

/// A real server (HTTP and a Wyoming listener on loopback, both bound to one key, limits
/// that never refuse) asked for the same text in turns: the time from sending the request
/// to the first audio byte over HTTP (`stream_format` audio, pcm) and to the first
/// `audio-chunk` over Wyoming. Prints both medians and their ratio.
pub(super) async fn wyoming_vs_http(
    config: &Config,
    n: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use voxgate_wyoming::frame::{self, Frame, Limits};

    let (mut config, dir) = scratch_server(config, "wyoming")?;
    for tier in config.tiers.values_mut() {
        // Every round synthesizes: no cached answer.
        tier.cache = false;
    }
    // The key first, then the listener that names it (as an operator would).
    let key = super::bench_key(&Services::build(config.clone()).await?.accounts, "admin").await?;
    config.wyoming.insert(
        "bench".into(),
        crate::config::WyomingConfig {
            bind: "127.0.0.1:0".parse()?,
            key_id: key.record.keyid.clone(),
            allow: Vec::new(),
            tts_model: "tts-1".into(),
            asr_model: "whisper-1".into(),
            limits: crate::config::WyomingLimits::default(),
        },
    );
    let app = crate::http::server::Application::build(config).await?;
    let http = app.local_addr()?;
    let wyoming = app
        .wyoming_addr("bench")
        .ok_or_else(|| anyhow::anyhow!("no Wyoming listener"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    crate::engines::providers::install_crypto();
    let client = reqwest::Client::new();
    let url = format!("http://{http}/v1/audio/speech");
    let bearer = format!("Bearer {}", key.secret.expose_secret());
    let body = serde_json::json!({
        "model": "tts-1", "voice": "alloy", "input": PARAGRAPH, "response_format": "pcm",
    });
    let mut socket = tokio::net::TcpStream::connect(wyoming).await?;
    socket.set_nodelay(true)?;
    let request = frame::encode(&Frame::with_data(
        "synthesize",
        serde_json::json!({"text": PARAGRAPH, "voice": {"name": "tts-1/alloy"}}),
    ));
    let limits = Limits {
        max_payload_bytes: 1 << 20,
        ..Limits::default()
    };
    let (mut over_http, mut over_wyoming) = (Vec::new(), Vec::new());
    for _ in 0..n + 1 {
        let start = Instant::now();
        let mut response = client
            .post(&url)
            .header("authorization", &bearer)
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        let mut first = None;
        while let Some(chunk) = response.chunk().await? {
            if first.is_none() && !chunk.is_empty() {
                first = Some(start.elapsed());
            }
        }
        over_http.push(first.ok_or_else(|| anyhow::anyhow!("no audio over HTTP"))?);

        let start = Instant::now();
        socket.write_all(&request).await?;
        let mut buf = Vec::new();
        let mut first = None;
        loop {
            if let Some((event, used)) = frame::decode(&buf, &limits)? {
                buf.drain(..used);
                match event.kind.as_str() {
                    "audio-chunk" if first.is_none() => first = Some(start.elapsed()),
                    "audio-stop" => break,
                    "error" => anyhow::bail!("Wyoming error: {:?}", event.data),
                    _ => {}
                }
                continue;
            }
            let mut piece = [0u8; 16 * 1024];
            let read = socket.read(&mut piece).await?;
            anyhow::ensure!(read > 0, "the Wyoming listener closed the connection");
            buf.extend_from_slice(&piece[..read]);
        }
        over_wyoming.push(first.ok_or_else(|| anyhow::anyhow!("no audio over Wyoming"))?);
    }
    // The first round warms both paths (engine start, connection set-up): not counted.
    let median = |times: &mut Vec<Duration>| {
        times.remove(0);
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1e3
    };
    let (http_ms, wyoming_ms) = (median(&mut over_http), median(&mut over_wyoming));
    writeln!(
        out,
        "HTTP {http_ms:.1} ms, Wyoming {wyoming_ms:.1} ms (median of {n}; Wyoming/HTTP {:.2})",
        wyoming_ms / http_ms
    )?;
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
