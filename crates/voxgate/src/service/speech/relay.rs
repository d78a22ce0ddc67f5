//! The relay: an engine that can send the client's format itself passes its bytes on
//! unchanged, counted by their own frames (`audio::meter`) into the response's
//! [`SpeechStats`], so the audio cap, settlement and cache work as for encoded audio.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use tokio::time::Instant;
use voxgate_engine::{EncodedStream, EngineError, RelayFormat, SynthesisRequest, Synthesizer};

use super::pipeline::{ByteStream, Part, SpeechStats, engine_failure};
use crate::audio::AudioFormat;
use crate::audio::meter::StreamMeter;
use crate::error::Error;

/// The format `engine` can send exactly as the client asked, if any: the
/// client's format is one the engine relays, the script is one piece of text (no pause to
/// insert), and no stored voice is involved (cloning goes through the pipeline).
pub(super) fn relay_format(
    format: AudioFormat,
    stored_voice: bool,
    script: &[Part],
    engine: &dyn Synthesizer,
) -> Option<RelayFormat> {
    let format = match format {
        AudioFormat::Pcm => RelayFormat::Pcm24k,
        AudioFormat::Mp3 => RelayFormat::Mp3,
        _ => return None,
    };
    (!stored_voice
        && matches!(script, [Part::Say { .. }])
        && engine.relay_formats().contains(&format))
    .then_some(format)
}

/// The engine's bytes, passed on as they arrive and counted by their own frames: the audio
/// seconds come from the stream (what the meter and the audio cap read), a stream that is
/// not what its format says ends with an upstream failure (before the first bytes: the
/// next engine is tried).
pub(super) fn relay_stream(
    engine: &dyn Synthesizer,
    request: SynthesisRequest,
    format: RelayFormat,
    deadline: Instant,
    stats: Arc<SpeechStats>,
) -> ByteStream {
    stats
        .characters_started
        .fetch_add(request.text.chars().count() as u64, Ordering::Relaxed);
    let upstream: EncodedStream = match engine.relay(request, format) {
        Ok(upstream) => upstream,
        Err(e) => return Box::pin(futures::stream::once(async move { Err(engine_failure(e)) })),
    };
    let malformed =
        |e: crate::audio::meter::MeterError| engine_failure(EngineError::Upstream(Box::new(e)));
    let state = Some((upstream, StreamMeter::new(format)));
    Box::pin(futures::stream::unfold(state, move |state| {
        let stats = Arc::clone(&stats);
        async move {
            let (mut upstream, mut meter) = state?;
            match tokio::time::timeout_at(deadline, upstream.next()).await {
                Err(_) => Some((Err(Error::Timeout), None)),
                Ok(Some(Ok(bytes))) => match meter.push(&bytes) {
                    Ok(()) => {
                        stats
                            .output_samples
                            .store(meter.output_samples(), Ordering::Relaxed);
                        Some((Ok(bytes), Some((upstream, meter))))
                    }
                    Err(e) => Some((Err(malformed(e)), None)),
                },
                Ok(Some(Err(e))) => Some((Err(engine_failure(e)), None)),
                Ok(None) => match meter.finish() {
                    Ok(()) => None,
                    Err(e) => Some((Err(malformed(e)), None)),
                },
            }
        }
    }))
}
