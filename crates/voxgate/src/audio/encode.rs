//! Streaming encoders for 24 kHz mono 16-bit PCM: each `encode` call returns the bytes that
//! are complete so far, so a response can be sent while later sentences are synthesized.

use std::io::Write as _;

use flacenc::bitsink::ByteSink;
use flacenc::component::{BitRepr, Stream};
use flacenc::error::Verify;
use flacenc::source::{Fill, FrameBuf};
use mp3lame_encoder::{Bitrate, FlushNoGap, Mode, MonoPcm, Quality, max_required_buffer_size};
use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use super::{AudioFormat, OUTPUT_RATE};

/// An encoder failed: a bug or a resource problem, never the client's fault.
#[derive(Debug, thiserror::Error)]
#[error("{codec} encoder: {detail}")]
pub struct EncodeError {
    codec: &'static str,
    detail: String,
}

fn fail(codec: &'static str, detail: impl std::fmt::Display) -> EncodeError {
    EncodeError {
        codec,
        detail: detail.to_string(),
    }
}

/// One response's encoder. Not shared between requests.
pub struct Encoder(Kind);

enum Kind {
    Pcm,
    Wav {
        header_sent: bool,
    },
    Mp3(Box<mp3lame_encoder::Encoder>),
    Opus(Box<OpusState>),
    Flac(Box<FlacState>),
    #[cfg(feature = "aac")]
    Aac(Box<AacState>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.0 {
            Kind::Pcm => "pcm",
            Kind::Wav { .. } => "wav",
            Kind::Mp3(_) => "mp3",
            Kind::Opus(_) => "opus",
            Kind::Flac(_) => "flac",
            #[cfg(feature = "aac")]
            Kind::Aac(_) => "aac",
        };
        f.debug_tuple("Encoder").field(&name).finish()
    }
}

impl Encoder {
    /// An encoder for `format` at [`OUTPUT_RATE`].
    pub fn new(format: AudioFormat) -> Result<Self, EncodeError> {
        Ok(Encoder(match format {
            AudioFormat::Pcm => Kind::Pcm,
            AudioFormat::Wav => Kind::Wav { header_sent: false },
            AudioFormat::Mp3 => {
                let mut builder = mp3lame_encoder::Builder::new()
                    .ok_or_else(|| fail("mp3", "no LAME context"))?;
                builder.set_num_channels(1).map_err(|e| fail("mp3", e))?;
                builder
                    .set_sample_rate(OUTPUT_RATE)
                    .map_err(|e| fail("mp3", e))?;
                builder.set_mode(Mode::Mono).map_err(|e| fail("mp3", e))?;
                // A streamed file cannot go back to fill in a Xing/Info header.
                builder
                    .set_to_write_vbr_tag(false)
                    .map_err(|e| fail("mp3", e))?;
                builder
                    .set_brate(Bitrate::Kbps64)
                    .map_err(|e| fail("mp3", e))?;
                builder
                    .set_quality(Quality::Good)
                    .map_err(|e| fail("mp3", e))?;
                Kind::Mp3(Box::new(builder.build().map_err(|e| fail("mp3", e))?))
            }
            AudioFormat::Opus => Kind::Opus(Box::new(OpusState::new()?)),
            AudioFormat::Flac => Kind::Flac(Box::new(FlacState::new()?)),
            #[cfg(feature = "aac")]
            AudioFormat::Aac => Kind::Aac(Box::new(AacState::new()?)),
            #[cfg(not(feature = "aac"))]
            AudioFormat::Aac => return Err(fail("aac", "not available in this build")),
        }))
    }

    /// Encodes `samples`; returns the bytes ready to send (possibly none).
    pub fn encode(&mut self, samples: &[i16]) -> Result<Vec<u8>, EncodeError> {
        match &mut self.0 {
            Kind::Pcm => Ok(pcm_bytes(samples)),
            Kind::Wav { header_sent } => {
                let mut out = Vec::with_capacity(44 + samples.len() * 2);
                if !*header_sent {
                    out.extend_from_slice(&wav_header());
                    *header_sent = true;
                }
                out.extend_from_slice(&pcm_bytes(samples));
                Ok(out)
            }
            Kind::Mp3(lame) => {
                let mut out = Vec::with_capacity(max_required_buffer_size(samples.len()));
                lame.encode_to_vec(MonoPcm(samples), &mut out)
                    .map_err(|e| fail("mp3", e))?;
                Ok(out)
            }
            Kind::Opus(state) => state.encode(samples, false),
            Kind::Flac(state) => state.encode(samples, false),
            #[cfg(feature = "aac")]
            Kind::Aac(state) => state.encode(samples, false),
        }
    }

    /// Flushes whatever the encoder still holds; the stream is complete afterwards.
    pub fn finish(&mut self) -> Result<Vec<u8>, EncodeError> {
        match &mut self.0 {
            Kind::Pcm => Ok(Vec::new()),
            Kind::Wav { header_sent } => Ok(if *header_sent {
                Vec::new()
            } else {
                *header_sent = true;
                wav_header().to_vec()
            }),
            Kind::Mp3(lame) => {
                let mut out = Vec::with_capacity(7200);
                lame.flush_to_vec::<FlushNoGap>(&mut out)
                    .map_err(|e| fail("mp3", e))?;
                Ok(out)
            }
            Kind::Opus(state) => state.encode(&[], true),
            Kind::Flac(state) => state.encode(&[], true),
            #[cfg(feature = "aac")]
            Kind::Aac(state) => state.encode(&[], true),
        }
    }
}

fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// A streaming WAV header: the length is unknown when it is sent, so both size fields hold
/// the "unknown/streaming" value 0xFFFFFFFF, as OpenAI's streamed WAV does.
fn wav_header() -> [u8; 44] {
    let mut h = [0u8; 44];
    let byte_rate = OUTPUT_RATE * 2;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&OUTPUT_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes()); // block align
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    h
}

/// Opus frame: 20 ms at 24 kHz.
const OPUS_FRAME: usize = 480;
/// Ogg Opus granule positions count 48 kHz samples.
const GRANULE_PER_SAMPLE: u64 = 48_000 / OUTPUT_RATE as u64;
const OGG_SERIAL: u32 = 0x766f_7867; // "voxg"

/// Ogg Opus (RFC 7845) written page by page.
struct OpusState {
    encoder: opus::Encoder,
    writer: PacketWriter<'static, Vec<u8>>,
    pending: Vec<i16>,
    pre_skip: u16,
    /// Input samples encoded so far (at 24 kHz).
    encoded: u64,
    /// Real input samples received (at 24 kHz).
    received: u64,
}

impl OpusState {
    fn new() -> Result<Self, EncodeError> {
        let mut encoder =
            opus::Encoder::new(OUTPUT_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(|e| fail("opus", e))?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(32_000))
            .map_err(|e| fail("opus", e))?;
        let lookahead = encoder.get_lookahead().map_err(|e| fail("opus", e))?;
        // Pre-skip is expressed at 48 kHz.
        let pre_skip = u16::try_from(i64::from(lookahead) * GRANULE_PER_SAMPLE as i64).unwrap_or(0);
        let mut writer = PacketWriter::new(Vec::new());
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&OUTPUT_RATE.to_le_bytes()); // original input rate
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family
        writer
            .write_packet(head, OGG_SERIAL, PacketWriteEndInfo::EndPage, 0)
            .map_err(|e| fail("opus", e))?;
        let vendor = b"voxgate";
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        writer
            .write_packet(tags, OGG_SERIAL, PacketWriteEndInfo::EndPage, 0)
            .map_err(|e| fail("opus", e))?;
        Ok(Self {
            encoder,
            writer,
            pending: Vec::new(),
            pre_skip,
            encoded: 0,
            received: 0,
        })
    }

    fn encode(&mut self, samples: &[i16], last: bool) -> Result<Vec<u8>, EncodeError> {
        self.received += samples.len() as u64;
        self.pending.extend_from_slice(samples);
        if last {
            // Pad with silence so the encoder's look-ahead drains; the final granule position
            // trims the padding again (RFC 7845 §4.5).
            let lookahead = usize::from(self.pre_skip) / GRANULE_PER_SAMPLE as usize;
            let target = self.pending.len() + lookahead;
            let padded = target.div_ceil(OPUS_FRAME).max(1) * OPUS_FRAME;
            self.pending.resize(padded, 0);
        }
        let frames = self.pending.len() / OPUS_FRAME;
        let mut packet = [0u8; 4000];
        for i in 0..frames {
            let frame = &self.pending[i * OPUS_FRAME..(i + 1) * OPUS_FRAME];
            let n = self
                .encoder
                .encode(frame, &mut packet)
                .map_err(|e| fail("opus", e))?;
            self.encoded += OPUS_FRAME as u64;
            let final_packet = last && i + 1 == frames;
            let granule = if final_packet {
                self.received * GRANULE_PER_SAMPLE + u64::from(self.pre_skip)
            } else {
                self.encoded * GRANULE_PER_SAMPLE
            };
            let info = if final_packet {
                PacketWriteEndInfo::EndStream
            } else if i + 1 == frames {
                // Close the page so what is encoded can leave now.
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            self.writer
                .write_packet(packet[..n].to_vec(), OGG_SERIAL, info, granule)
                .map_err(|e| fail("opus", e))?;
        }
        self.pending.drain(..frames * OPUS_FRAME);
        let inner = self.writer.inner_mut();
        inner.flush().map_err(|e| fail("opus", e))?;
        Ok(std::mem::take(inner))
    }
}

/// FLAC block size in samples.
const FLAC_BLOCK: usize = 4096;

/// FLAC written frame by frame after a STREAMINFO whose total length and MD5 are "unknown"
/// (0), as the format allows for streams.
struct FlacState {
    config: flacenc::error::Verified<flacenc::config::Encoder>,
    stream: Stream,
    header_sent: bool,
    pending: Vec<i32>,
    frame_number: usize,
}

impl FlacState {
    fn new() -> Result<Self, EncodeError> {
        let config = flacenc::config::Encoder::default()
            .into_verified()
            .map_err(|(_, e)| fail("flac", e))?;
        let mut stream = Stream::new(OUTPUT_RATE as usize, 1, 16).map_err(|e| fail("flac", e))?;
        stream
            .stream_info_mut()
            .set_block_sizes(FLAC_BLOCK, FLAC_BLOCK)
            .map_err(|e| fail("flac", e))?;
        // Frame sizes are unknown in a stream (0 = unknown).
        stream
            .stream_info_mut()
            .set_frame_sizes(0, 0)
            .map_err(|e| fail("flac", e))?;
        Ok(Self {
            config,
            stream,
            header_sent: false,
            pending: Vec::new(),
            frame_number: 0,
        })
    }

    fn encode(&mut self, samples: &[i16], last: bool) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        if !self.header_sent {
            out.extend(bits(&self.stream)?);
            self.header_sent = true;
        }
        self.pending.extend(samples.iter().map(|&s| i32::from(s)));
        while self.pending.len() >= FLAC_BLOCK || (last && !self.pending.is_empty()) {
            let n = self.pending.len().min(FLAC_BLOCK);
            let mut buf = FrameBuf::with_size(1, n).map_err(|e| fail("flac", e))?;
            buf.fill_interleaved(&self.pending[..n])
                .map_err(|e| fail("flac", e))?;
            let frame = flacenc::encode_fixed_size_frame(
                &self.config,
                &buf,
                self.frame_number,
                self.stream.stream_info(),
            )
            .map_err(|e| fail("flac", e))?;
            out.extend(bits(&frame)?);
            self.frame_number += 1;
            self.pending.drain(..n);
        }
        Ok(out)
    }
}

/// AAC-LC in ADTS frames (FDK AAC, opt-in). The encoder has no explicit flush, so the end
/// is padded with silence long enough to push the last real samples out (under 0.2 s).
#[cfg(feature = "aac")]
struct AacState {
    encoder: fdk_aac::enc::Encoder,
    pending: Vec<i16>,
}

#[cfg(feature = "aac")]
impl AacState {
    /// Samples per AAC-LC frame.
    const FRAME: usize = 1024;

    fn new() -> Result<Self, EncodeError> {
        use fdk_aac::enc::{
            AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport,
        };
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(64_000),
            sample_rate: OUTPUT_RATE,
            transport: Transport::Adts,
            channels: ChannelMode::Mono,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| fail("aac", format!("{e:?}")))?;
        Ok(Self {
            encoder,
            pending: Vec::new(),
        })
    }

    fn encode(&mut self, samples: &[i16], last: bool) -> Result<Vec<u8>, EncodeError> {
        self.pending.extend_from_slice(samples);
        if last {
            self.pending.extend(std::iter::repeat_n(0, 3 * Self::FRAME));
        }
        let mut out = Vec::new();
        let mut frame = vec![0u8; 8192];
        while !self.pending.is_empty() {
            let info = self
                .encoder
                .encode(&self.pending, &mut frame)
                .map_err(|e| fail("aac", format!("{e:?}")))?;
            out.extend_from_slice(&frame[..info.output_size]);
            self.pending
                .drain(..info.input_consumed.min(self.pending.len()));
            if info.input_consumed == 0 && info.output_size == 0 {
                break;
            }
        }
        Ok(out)
    }
}

/// Serializes a FLAC component (all are byte-aligned at the top level).
fn bits(component: &impl BitRepr) -> Result<Vec<u8>, EncodeError> {
    let mut sink = ByteSink::new();
    component
        .write(&mut sink)
        .map_err(|e| fail("flac", format!("{e:?}")))?;
    Ok(sink.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
            .collect()
    }

    #[test]
    fn every_available_format_encodes_in_pieces() {
        for format in AudioFormat::ALL.into_iter().filter(|f| f.is_available()) {
            let mut enc = Encoder::new(format).expect("encoder");
            let mut out = Vec::new();
            for piece in tone(30_000).chunks(7_000) {
                out.extend(enc.encode(piece).expect("encode"));
            }
            out.extend(enc.finish().expect("finish"));
            assert!(out.len() > 500, "{format:?}: {} bytes", out.len());
        }
    }

    #[test]
    #[cfg(feature = "aac")]
    fn aac_is_available_with_the_feature() {
        let mut enc = Encoder::new(AudioFormat::Aac).expect("encoder");
        let mut out = enc.encode(&tone(24_000)).expect("encode");
        out.extend(enc.finish().expect("finish"));
        assert!(out[0] == 0xFF && out[1] & 0xF0 == 0xF0, "ADTS sync word");
    }

    #[test]
    fn magic_bytes_match_the_format() {
        let start = |format| {
            let mut enc = Encoder::new(format).expect("encoder");
            let mut out = enc.encode(&tone(5_000)).expect("encode");
            out.extend(enc.finish().expect("finish"));
            out
        };
        assert_eq!(&start(AudioFormat::Wav)[..4], b"RIFF");
        assert_eq!(&start(AudioFormat::Flac)[..4], b"fLaC");
        assert_eq!(&start(AudioFormat::Opus)[..4], b"OggS");
        let mp3 = start(AudioFormat::Mp3);
        assert!(mp3[0] == 0xFF && mp3[1] & 0xE0 == 0xE0, "mp3 frame sync");
        assert_eq!(start(AudioFormat::Pcm).len(), 10_000);
    }

    #[test]
    #[cfg(not(feature = "aac"))]
    fn aac_is_refused_not_faked() {
        assert!(!AudioFormat::Aac.is_available());
        assert!(Encoder::new(AudioFormat::Aac).is_err());
        assert_eq!(AudioFormat::available_list(), "mp3, opus, flac, wav, pcm");
    }
}
