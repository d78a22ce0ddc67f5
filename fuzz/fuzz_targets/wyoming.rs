//! Fuzzes the Wyoming codec: bytes as a client would send them, decoded frame by frame under
//! small limits, each frame parsed as an event and its audio converted. Refusals are fine;
//! panics, frames over a limit and frames that do not survive a round trip are not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_wyoming::event::Event;
use voxgate_wyoming::frame::{self, Limits};
use voxgate_wyoming::pcm;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_header_bytes: 512,
        max_data_bytes: 1024,
        max_payload_bytes: 4096,
    };
    let mut rest = data;
    while let Ok(Some((frame, used))) = frame::decode(rest, &limits) {
        assert!(used > 0 && used <= rest.len());
        assert!(frame.payload.len() <= limits.max_payload_bytes);
        rest = &rest[used..];
        // What voxgate writes, it reads back unchanged.
        let wire = frame::encode(&frame);
        let roomy = Limits {
            max_header_bytes: 1 << 20,
            max_data_bytes: 1 << 20,
            max_payload_bytes: 1 << 20,
        };
        match frame::decode(&wire, &roomy) {
            Ok(Some((again, n))) => {
                assert_eq!(n, wire.len());
                assert_eq!(again, frame);
            }
            other => panic!("a decoded frame does not decode again: {other:?}"),
        }
        if let Ok(Event::AudioChunk { format, audio }) = Event::parse(frame) {
            let samples = pcm::to_mono(&audio, format);
            assert_eq!(samples.len(), audio.len() / format.frame_bytes());
            assert!(samples.iter().all(|s| s.is_finite() && (-1.0..=1.0).contains(s)));
        }
    }
});
