//! Counting the audio in an encoded stream without decoding it: what a relay delivers is
//! metered from the stream itself. PCM (16-bit mono at 24 kHz) by its byte count, MP3 by
//! its frame headers (an ID3v2 tag in front, at most [`MAX_ID3_BYTES`], and an ID3v1 tag at
//! the end are skipped; a LAME/Xing info frame counts as one frame of audio, as decoders
//! play it).

use voxgate_engine::RelayFormat;

use super::OUTPUT_RATE;

/// The largest ID3v2 tag accepted in front of MP3 audio: a tag is skipped uncounted, so a
/// large one could hide frames that some decoders find and play.
pub const MAX_ID3_BYTES: u64 = 64 * 1024;

/// The stream is not what its format says.
#[derive(Debug, thiserror::Error)]
#[error("malformed {format} stream: {why}")]
pub struct MeterError {
    format: &'static str,
    why: &'static str,
}

/// Counts one encoded stream, piece by piece.
#[derive(Debug)]
pub struct StreamMeter {
    format: RelayFormat,
    bytes: u64,
    /// MP3: header bytes gathered across pieces.
    head: Vec<u8>,
    /// MP3: bytes of the current frame or tag still to pass.
    skip: u64,
    /// MP3: nothing but a possible ID3v2 tag seen yet.
    at_start: bool,
    /// MP3: the ID3v1 tag at the end was seen; nothing may follow.
    trailer: bool,
    /// Samples counted, at `rate`.
    samples: u64,
    rate: u32,
}

impl StreamMeter {
    pub fn new(format: RelayFormat) -> Self {
        Self {
            format,
            bytes: 0,
            head: Vec::with_capacity(10),
            skip: 0,
            at_start: true,
            trailer: false,
            samples: 0,
            rate: match format {
                RelayFormat::Pcm24k => OUTPUT_RATE,
                RelayFormat::Mp3 => 0,
            },
        }
    }

    /// Counts the next piece of the stream.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), MeterError> {
        self.bytes += piece.len() as u64;
        match self.format {
            RelayFormat::Pcm24k => {
                self.samples = self.bytes / 2;
                Ok(())
            }
            RelayFormat::Mp3 => self.push_mp3(piece),
        }
    }

    /// The end of the stream: a well-formed one holds whole samples, or at least one
    /// frame (a last frame cut short counts whole: decoders drop it, at most one frame).
    pub fn finish(&self) -> Result<(), MeterError> {
        match self.format {
            RelayFormat::Pcm24k if self.bytes == 0 || self.bytes % 2 == 1 => {
                Err(Self::malformed(self.format, "odd or empty"))
            }
            RelayFormat::Mp3 if self.samples == 0 => Err(Self::malformed(self.format, "no frame")),
            _ => Ok(()),
        }
    }

    /// Samples counted so far, at the gateway's output rate (24 kHz).
    pub fn output_samples(&self) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        self.samples * u64::from(OUTPUT_RATE) / u64::from(self.rate)
    }

    fn malformed(format: RelayFormat, why: &'static str) -> MeterError {
        MeterError {
            format: match format {
                RelayFormat::Pcm24k => "PCM",
                RelayFormat::Mp3 => "MP3",
            },
            why,
        }
    }

    fn push_mp3(&mut self, piece: &[u8]) -> Result<(), MeterError> {
        let mut at = 0;
        while at < piece.len() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(piece.len() - at);
                self.skip -= n as u64;
                at += n;
                continue;
            }
            if self.trailer {
                return Err(Self::malformed(self.format, "data after the ID3v1 tag"));
            }
            // Ten bytes at the start (an ID3v2 header is ten), four for a frame header.
            let want = if self.at_start { 10 } else { 4 };
            let n = (want - self.head.len()).min(piece.len() - at);
            self.head.extend_from_slice(&piece[at..at + n]);
            at += n;
            if self.head.len() < want {
                break;
            }
            self.header()?;
        }
        Ok(())
    }

    /// Reads the gathered header: an ID3 tag or a frame, whose rest is then skipped.
    fn header(&mut self) -> Result<(), MeterError> {
        let head = std::mem::take(&mut self.head);
        let taken = head.len() as u64;
        if self.at_start && head.starts_with(b"ID3") {
            self.at_start = false;
            let version = head[3];
            if !(2..=4).contains(&version) || head[6..10].iter().any(|b| b & 0x80 != 0) {
                return Err(Self::malformed(self.format, "an invalid ID3v2 header"));
            }
            let size = head[6..10]
                .iter()
                .fold(0u64, |acc, b| (acc << 7) | u64::from(*b));
            let footer = if version == 4 && head[5] & 0x10 != 0 {
                10
            } else {
                0
            };
            if size + footer > MAX_ID3_BYTES {
                return Err(Self::malformed(self.format, "an ID3v2 tag over 64 KiB"));
            }
            self.skip = size + footer;
            self.head = Vec::with_capacity(10);
            return Ok(());
        }
        if !self.at_start && head.starts_with(b"TAG") {
            self.trailer = true;
            self.skip = 128 - taken;
            return Ok(());
        }
        self.at_start = false;
        let frame = frame_header([head[0], head[1], head[2], head[3]])
            .ok_or_else(|| Self::malformed(self.format, "no frame header where one belongs"))?;
        if self.rate != 0 && self.rate != frame.rate {
            return Err(Self::malformed(self.format, "the sample rate changes"));
        }
        self.rate = frame.rate;
        self.samples += u64::from(frame.samples);
        self.skip = u64::from(frame.length).saturating_sub(taken);
        self.head = head;
        self.head.clear();
        Ok(())
    }
}

/// What an MPEG audio layer III frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    rate: u32,
    samples: u32,
    /// Bytes, header included.
    length: u32,
}

/// Parses a layer III frame header; `None` for anything else (no sync, another layer,
/// free-format or reserved bit rates, a reserved sample rate).
fn frame_header(h: [u8; 4]) -> Option<Frame> {
    const MPEG1_KBPS: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const MPEG2_KBPS: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 0b11;
    let layer = (h[1] >> 1) & 0b11;
    if version == 0b01 || layer != 0b01 {
        return None;
    }
    let bitrate_index = usize::from(h[2] >> 4);
    let rate_index = usize::from((h[2] >> 2) & 0b11);
    if bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    let padding = u32::from((h[2] >> 1) & 1);
    let mpeg1 = version == 0b11;
    let (kbps, rates, samples, factor) = if mpeg1 {
        (
            MPEG1_KBPS[bitrate_index],
            [44_100, 48_000, 32_000],
            1152,
            144,
        )
    } else if version == 0b10 {
        (MPEG2_KBPS[bitrate_index], [22_050, 24_000, 16_000], 576, 72)
    } else {
        (MPEG2_KBPS[bitrate_index], [11_025, 12_000, 8_000], 576, 72)
    };
    let rate = rates[rate_index];
    Some(Frame {
        rate,
        samples,
        length: factor * kbps * 1000 / rate + padding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{AudioFormat, Encoder};

    fn tone(secs: f64) -> Vec<i16> {
        (0..(secs * f64::from(OUTPUT_RATE)) as usize)
            .map(|i| ((i as f32 * 0.0575).sin() * 8000.0) as i16)
            .collect()
    }

    fn mp3_of(samples: &[i16]) -> Vec<u8> {
        let mut encoder = Encoder::new(AudioFormat::Mp3).expect("encoder");
        let mut out = encoder.encode(samples).expect("encode");
        out.extend(encoder.finish().expect("finish"));
        out
    }

    /// The frames counted are the frames a decoder plays (symphonia, through the upload
    /// probe, decodes the same stream), whichever way the stream is cut into pieces; and
    /// they are the audio that was encoded, within the encoder's delay and padding.
    #[test]
    fn mp3_frames_add_up_to_the_audio_in_any_pieces() {
        let samples = tone(2.5);
        let mp3 = mp3_of(&samples);
        let decoded = voxgate_input::probe::probe_bytes(
            &mp3,
            "clip.mp3",
            &voxgate_input::probe::ProbeLimits::default(),
        )
        .expect("decodes");
        let played = (decoded.duration_secs * f64::from(OUTPUT_RATE)).round() as u64;
        for piece in [1, 3, 417, 4096, mp3.len()] {
            let mut meter = StreamMeter::new(RelayFormat::Mp3);
            for chunk in mp3.chunks(piece) {
                meter.push(chunk).expect("well-formed");
            }
            meter.finish().expect("complete");
            let counted = meter.output_samples();
            assert!(
                counted.abs_diff(played) <= 1152,
                "pieces of {piece}: counted {counted}, the decoder played {played}"
            );
            assert!(
                counted.abs_diff(samples.len() as u64) <= 2 * 1152,
                "pieces of {piece}: counted {counted}, encoded {}",
                samples.len()
            );
        }
    }

    #[test]
    fn id3_tags_are_skipped_and_garbage_is_refused() {
        let mp3 = mp3_of(&tone(1.0));
        let mut plain = StreamMeter::new(RelayFormat::Mp3);
        plain.push(&mp3).expect("plain");
        // An ID3v2 tag of 20 bytes in front, an ID3v1 tag at the end.
        let mut tagged = b"ID3\x04\x00\x00\x00\x00\x00\x14".to_vec();
        tagged.extend([0u8; 20]);
        tagged.extend(&mp3);
        tagged.extend(b"TAG");
        tagged.extend([b' '; 125]);
        let mut meter = StreamMeter::new(RelayFormat::Mp3);
        for chunk in tagged.chunks(7) {
            meter.push(chunk).expect("tagged");
        }
        meter.finish().expect("complete");
        assert_eq!(meter.output_samples(), plain.output_samples());

        // A tag too large to be metadata, or not a tag at all, is refused.
        let mut huge = StreamMeter::new(RelayFormat::Mp3);
        assert!(huge.push(b"ID3\x04\x00\x00\x00\x08\x00\x00").is_err());
        let mut bogus = StreamMeter::new(RelayFormat::Mp3);
        assert!(bogus.push(b"ID3\x09\x00\x00\x00\x00\x00\x14").is_err());

        let mut html = StreamMeter::new(RelayFormat::Mp3);
        assert!(html.push(b"<html><body>oops</body></html>").is_err());
        let mut cut = StreamMeter::new(RelayFormat::Mp3);
        let mut bad = mp3.clone();
        bad.extend(b"not a frame");
        assert!(cut.push(&bad).is_err());
        assert!(StreamMeter::new(RelayFormat::Mp3).finish().is_err());
    }

    #[test]
    fn pcm_counts_bytes_and_refuses_odd_or_empty_streams() {
        let mut meter = StreamMeter::new(RelayFormat::Pcm24k);
        meter.push(&[0; 4801]).expect("push");
        meter.push(&[0; 47_999]).expect("push");
        meter.finish().expect("even");
        assert_eq!(meter.output_samples(), 26_400);
        let mut odd = StreamMeter::new(RelayFormat::Pcm24k);
        odd.push(&[1, 2, 3]).expect("push");
        assert!(odd.finish().is_err());
        assert!(StreamMeter::new(RelayFormat::Pcm24k).finish().is_err());
    }

    /// Every header of the three MPEG versions gives a frame length decoders agree with.
    #[test]
    fn frame_lengths_follow_the_standard() {
        // MPEG1 layer III, 128 kbit/s, 44.1 kHz, no padding: 417 bytes.
        let f = frame_header([0xFF, 0xFB, 0x90, 0x00]).expect("mpeg1");
        assert_eq!((f.rate, f.samples, f.length), (44_100, 1152, 417));
        // MPEG2 layer III, 64 kbit/s, 24 kHz, padded: 193 bytes.
        let f = frame_header([0xFF, 0xF3, 0x86, 0x00]).expect("mpeg2");
        assert_eq!((f.rate, f.samples, f.length), (24_000, 576, 193));
        // MPEG2.5, 8 kbit/s, 8 kHz: 72 bytes.
        let f = frame_header([0xFF, 0xE3, 0x18, 0x00]).expect("mpeg2.5");
        assert_eq!((f.rate, f.samples, f.length), (8_000, 576, 72));
        // Layer II, free format, reserved rate: refused.
        assert!(frame_header([0xFF, 0xFD, 0x90, 0x00]).is_none());
        assert!(frame_header([0xFF, 0xFB, 0x00, 0x00]).is_none());
        assert!(frame_header([0xFF, 0xFB, 0x9C, 0x00]).is_none());
    }
}
