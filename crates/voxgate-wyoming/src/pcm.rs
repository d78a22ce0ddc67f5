//! What clients send as audio (`width` bytes per sample, `channels` interleaved,
//! little-endian; 8-bit is unsigned, as in WAV) turned into mono samples in [-1, 1], and
//! what voxgate sends (16-bit mono) from them.

use crate::event::AudioFormat;

/// Mono samples in [-1, 1] (channels averaged); a trailing partial frame is ignored.
pub fn to_mono(audio: &[u8], format: AudioFormat) -> Vec<f32> {
    let width = usize::from(format.width);
    let channels = usize::from(format.channels).max(1);
    let frame = width * channels;
    if frame == 0 {
        return Vec::new();
    }
    audio
        .chunks_exact(frame)
        .map(|frame| {
            let sum: f32 = frame.chunks_exact(width).map(sample).sum();
            sum / channels as f32
        })
        .collect()
}

fn sample(bytes: &[u8]) -> f32 {
    match *bytes {
        [b] => (f32::from(b) - 128.0) / 128.0,
        [a, b] => f32::from(i16::from_le_bytes([a, b])) / 32_768.0,
        // 24-bit: the top byte carries the sign.
        [a, b, c] => (i32::from_le_bytes([0, a, b, c]) >> 8) as f32 / 8_388_608.0,
        [a, b, c, d] => (f64::from(i32::from_le_bytes([a, b, c, d])) / 2_147_483_648.0) as f32,
        _ => 0.0,
    }
}

/// Seconds of audio in `bytes` of `format`.
pub fn seconds(bytes: usize, format: AudioFormat) -> f64 {
    let frames = bytes / format.frame_bytes().max(1);
    frames as f64 / f64::from(format.rate.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn widths_and_channels_are_converted() {
        let stereo16 = AudioFormat {
            rate: 16_000,
            width: 2,
            channels: 2,
        };
        // Left full scale negative, right zero: the mono mean is -0.5.
        let audio = [0x00, 0x80, 0x00, 0x00];
        assert_eq!(to_mono(&audio, stereo16), vec![-0.5]);
        let mono8 = AudioFormat {
            rate: 8_000,
            width: 1,
            channels: 1,
        };
        assert_eq!(
            to_mono(&[128, 255, 0], mono8),
            vec![0.0, 127.0 / 128.0, -1.0]
        );
        let mono32 = AudioFormat {
            rate: 48_000,
            width: 4,
            channels: 1,
        };
        assert_eq!(to_mono(&i32::MIN.to_le_bytes(), mono32), vec![-1.0]);
        let mono24 = AudioFormat {
            rate: 16_000,
            width: 3,
            channels: 1,
        };
        assert_eq!(
            to_mono(
                &[0x00, 0x00, 0x80, 0x00, 0x00, 0x40, 0xff, 0xff, 0xff],
                mono24
            ),
            vec![-1.0, 0.5, -1.0 / 8_388_608.0]
        );
        assert!(
            (seconds(
                32_000,
                AudioFormat {
                    rate: 16_000,
                    width: 2,
                    channels: 1
                }
            ) - 1.0)
                .abs()
                < 1e-9
        );
    }

    proptest! {
        #[test]
        fn samples_stay_in_range(audio in proptest::collection::vec(any::<u8>(), 0..512), width in 1u8..=4, channels in 1u8..=8) {
            let format = AudioFormat { rate: 16_000, width, channels };
            let mono = to_mono(&audio, format);
            prop_assert_eq!(mono.len(), audio.len() / format.frame_bytes());
            prop_assert!(mono.iter().all(|s| (-1.0..=1.0).contains(s)));
        }
    }
}
