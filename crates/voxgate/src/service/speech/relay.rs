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
    // One timer for the whole stream: a `timeout_at` per chunk put an entry in the runtime's
    // timer wheel, and took it out, for every chunk that had to wait.
    let expiry = Box::pin(tokio::time::sleep_until(deadline));
    let state = Some((upstream, StreamMeter::new(format), expiry));
    Box::pin(futures::stream::unfold(state, move |state| {
        let stats = Arc::clone(&stats);
        async move {
            let (mut upstream, mut meter, mut expiry) = state?;
            let next = tokio::select! {
                biased;
                next = upstream.next() => next,
                () = &mut expiry => return Some((Err(Error::Timeout), None)),
            };
            match next {
                Some(Ok(bytes)) => match meter.push(&bytes) {
                    Ok(()) => {
                        stats
                            .output_samples
                            .store(meter.output_samples(), Ordering::Relaxed);
                        Some((Ok(bytes), Some((upstream, meter, expiry))))
                    }
                    Err(e) => Some((Err(malformed(e)), None)),
                },
                Some(Err(e)) => Some((Err(engine_failure(e)), None)),
                None => match meter.finish() {
                    Ok(()) => None,
                    Err(e) => Some((Err(malformed(e)), None)),
                },
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use voxgate_engine::VoiceInfo;

    use super::*;

    /// Sends a PCM chunk at once, at 10 s and at 20 s, then nothing ever again.
    #[derive(Debug)]
    struct Stalls;

    impl Synthesizer for Stalls {
        fn id(&self) -> &str {
            "stalls"
        }

        fn voices(&self) -> &[VoiceInfo] {
            &[]
        }

        fn synthesize(
            &self,
            _request: SynthesisRequest,
        ) -> Result<voxgate_engine::PcmStream, EngineError> {
            Err(EngineError::Unsupported("relay only"))
        }

        fn relay(
            &self,
            _request: SynthesisRequest,
            _format: RelayFormat,
        ) -> Result<EncodedStream, EngineError> {
            let chunks = futures::stream::iter([0u64, 10, 10]).then(|wait| async move {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                Ok(Bytes::from(vec![0u8; 4_800]))
            });
            Ok(Box::pin(chunks.chain(futures::stream::pending())))
        }
    }

    fn request() -> SynthesisRequest {
        SynthesisRequest {
            text: "hello".into(),
            voice: "v".into(),
            speed: 1.0,
            reference: None,
        }
    }

    /// The next item, or a failure (not a hang) if none comes within a minute.
    async fn next(stream: &mut ByteStream) -> Option<Result<Bytes, Error>> {
        tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("an item or the end within a minute")
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_upstream_ends_at_the_deadline_after_what_it_sent() {
        let stats = Arc::new(SpeechStats::default());
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        let mut stream = relay_stream(
            &Stalls,
            request(),
            RelayFormat::Pcm24k,
            deadline,
            Arc::clone(&stats),
        );
        for n in 1..=3u64 {
            let chunk = next(&mut stream).await.expect("a chunk").expect("audio");
            assert_eq!(chunk.len(), 4_800);
            assert_eq!(stats.output_samples.load(Ordering::Relaxed), 2_400 * n);
        }
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        // The deadline counts from the start, not from the last chunk.
        let end = next(&mut stream).await.expect("an end");
        assert!(matches!(end, Err(Error::Timeout)), "{end:?}");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(30),
            "at the deadline"
        );
        assert!(
            next(&mut stream).await.is_none(),
            "nothing after the timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn audio_ready_past_the_deadline_is_still_passed_on() {
        let stats = Arc::new(SpeechStats::default());
        let deadline = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut stream = relay_stream(&Stalls, request(), RelayFormat::Pcm24k, deadline, stats);
        let first = next(&mut stream).await.expect("a chunk");
        assert_eq!(first.expect("the ready chunk").len(), 4_800);
        let end = next(&mut stream).await.expect("an end");
        assert!(matches!(end, Err(Error::Timeout)), "{end:?}");
    }
}
