//! The real decode (step 5): symphonia for everything but Opus, libopus for Opus in Ogg and
//! WebM. Duration is counted from decoded frames only.

use std::io::{Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known::{
    CODEC_ID_AAC, CODEC_ID_FLAC, CODEC_ID_MP1, CODEC_ID_MP2, CODEC_ID_MP3, CODEC_ID_OPUS,
    CODEC_ID_VORBIS,
};
use symphonia::core::codecs::audio::{
    AudioCodecId, AudioCodecParameters, AudioDecoder, AudioDecoderOptions, CODEC_ID_NULL_AUDIO,
};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::default::formats::{
    AdtsReader, FlacReader, IsoMp4Reader, MkvReader, MpaReader, OggReader, WavReader,
};

use super::sniff::Plan;
use super::{Container, ProbeError, ProbeErrorKind, ProbeLimits, Probed};

/// Per-packet decode errors tolerated before the file is judged corrupt.
const MAX_DECODE_ERRORS: u32 = 16;
/// Upper bound on demuxed packets, a guard against demuxer loops on crafted input.
const MAX_PACKETS: u64 = 2_000_000;
/// Largest Opus frame: 120 ms at 48 kHz.
const OPUS_MAX_FRAME: usize = 5760;

pub(crate) fn invalid(msg: impl Into<String>) -> ProbeError {
    ProbeError::new(ProbeErrorKind::InvalidAudio, msg)
}

/// Refuses a sample rate outside the limits.
pub(crate) fn check_rate(rate: u32, limits: &ProbeLimits) -> Result<(), ProbeError> {
    if rate < limits.min_sample_rate || rate > limits.max_sample_rate {
        return Err(ProbeError::new(
            ProbeErrorKind::UnsupportedSampleRate,
            format!(
                "sample rate {rate} Hz is outside the accepted range {}..={} Hz",
                limits.min_sample_rate, limits.max_sample_rate
            ),
        ));
    }
    Ok(())
}

/// Refuses zero channels or more than the limit.
pub(crate) fn check_channels(channels: u32, limits: &ProbeLimits) -> Result<(), ProbeError> {
    if channels == 0 || channels > u32::from(limits.max_channels) {
        return Err(ProbeError::new(
            ProbeErrorKind::UnsupportedChannels,
            format!(
                "{channels} channels is outside the accepted range 1..={}",
                limits.max_channels
            ),
        ));
    }
    Ok(())
}

/// Decodes the upload; any decoder panic becomes `invalid_audio`.
pub(crate) fn decode<'s>(
    src: Box<dyn MediaSource + 's>,
    plan: &Plan,
    limits: &ProbeLimits,
) -> Result<Probed, ProbeError> {
    catch_unwind(AssertUnwindSafe(|| {
        if plan.ogg_opus {
            decode_ogg_opus(src, limits)
        } else {
            decode_symphonia(src, plan, limits)
        }
    }))
    .unwrap_or_else(|_| Err(invalid("the audio decoder failed on this file")))
}

/// Accumulates the mono downmix and enforces the duration limit as frames arrive.
struct Accum<'l> {
    limits: &'l ProbeLimits,
    rate: u32,
    channels: u16,
    samples: Vec<f32>,
    errors: u32,
}

impl<'l> Accum<'l> {
    fn new(limits: &'l ProbeLimits) -> Self {
        Self {
            limits,
            rate: 0,
            channels: 0,
            samples: Vec::new(),
            errors: 0,
        }
    }

    /// Fixes the output format from the first decoded buffer; later buffers must keep the rate.
    fn format(&mut self, rate: u32, channels: usize) -> Result<(), ProbeError> {
        if self.rate == 0 {
            check_rate(rate, self.limits)?;
            check_channels(u32::try_from(channels).unwrap_or(u32::MAX), self.limits)?;
            self.rate = rate;
            self.channels = u16::try_from(channels).unwrap_or(u16::MAX);
        } else if rate != self.rate {
            return Err(invalid(
                "the sample rate changes in the middle of the stream",
            ));
        } else {
            check_channels(u32::try_from(channels).unwrap_or(u32::MAX), self.limits)?;
        }
        Ok(())
    }

    /// Appends interleaved frames as a mono downmix, refusing once the limit is passed.
    fn push(&mut self, interleaved: &[f32], channels: usize) -> Result<(), ProbeError> {
        if channels == 0 {
            return Err(invalid("decoded audio has no channels"));
        }
        let frames = interleaved.len() / channels;
        let total = self.samples.len() + frames;
        if total as f64 / f64::from(self.rate) > self.limits.max_duration_secs {
            return Err(ProbeError::new(
                ProbeErrorKind::AudioTooLong,
                format!(
                    "the audio is longer than the limit of {} seconds",
                    self.limits.max_duration_secs
                ),
            ));
        }
        let scale = 1.0 / channels as f32;
        self.samples
            .extend(interleaved.chunks_exact(channels).map(|frame| {
                let v = frame.iter().sum::<f32>() * scale;
                if v.is_finite() {
                    v.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }));
        Ok(())
    }

    /// Counts one per-packet error; too many make the file invalid.
    fn error(&mut self) -> Result<(), ProbeError> {
        self.errors += 1;
        if self.errors > MAX_DECODE_ERRORS {
            return Err(invalid(format!(
                "more than {MAX_DECODE_ERRORS} packets failed to decode"
            )));
        }
        Ok(())
    }

    fn finish(self, container: Container, codec: &'static str) -> Result<Probed, ProbeError> {
        if self.samples.is_empty() || self.rate == 0 {
            return Err(invalid("no audio could be decoded from the file"));
        }
        let duration_secs = self.samples.len() as f64 / f64::from(self.rate);
        if duration_secs < self.limits.min_duration_secs {
            return Err(ProbeError::new(
                ProbeErrorKind::AudioTooShort,
                format!(
                    "the audio lasts {duration_secs:.3} seconds, under the minimum of {} seconds",
                    self.limits.min_duration_secs
                ),
            ));
        }
        Ok(Probed {
            container,
            codec,
            sample_rate: self.rate,
            channels: self.channels,
            samples: self.samples,
            duration_secs,
        })
    }
}

fn codec_name(id: AudioCodecId, short_name: &'static str) -> &'static str {
    match id {
        CODEC_ID_MP3 => "mp3",
        CODEC_ID_MP2 => "mp2",
        CODEC_ID_MP1 => "mp1",
        CODEC_ID_AAC => "aac",
        CODEC_ID_FLAC => "flac",
        CODEC_ID_VORBIS => "vorbis",
        CODEC_ID_OPUS => "opus",
        _ if short_name.starts_with("pcm") => "pcm",
        _ if short_name.starts_with("adpcm") => "adpcm",
        _ => short_name,
    }
}

fn demux_error(e: SymError) -> ProbeError {
    match e {
        SymError::Unsupported(what) => invalid(format!("unsupported audio stream: {what}")),
        SymError::DecodeError(what) | SymError::LimitError(what) => {
            invalid(format!("the audio stream is malformed: {what}"))
        }
        _ => invalid("the audio stream could not be read"),
    }
}

fn open_reader<'s>(
    src: Box<dyn MediaSource + 's>,
    plan: &Plan,
) -> Result<Box<dyn FormatReader + 's>, ProbeError> {
    let mut mss = MediaSourceStream::new(src, MediaSourceStreamOptions::default());
    if plan.payload_offset > 0 {
        mss.seek(SeekFrom::Start(plan.payload_offset))
            .map_err(|_| invalid("the audio stream could not be read"))?;
    }
    let opts = FormatOptions::default();
    let reader: Box<dyn FormatReader + 's> = match plan.container {
        Container::Wav => Box::new(WavReader::try_new(mss, opts).map_err(demux_error)?),
        Container::Mp3 => Box::new(MpaReader::try_new(mss, opts).map_err(demux_error)?),
        Container::Flac => Box::new(FlacReader::try_new(mss, opts).map_err(demux_error)?),
        Container::Ogg => Box::new(OggReader::try_new(mss, opts).map_err(demux_error)?),
        Container::Mp4 => Box::new(IsoMp4Reader::try_new(mss, opts).map_err(demux_error)?),
        Container::Webm => Box::new(MkvReader::try_new(mss, opts).map_err(demux_error)?),
        Container::Adts => Box::new(AdtsReader::try_new(mss, opts).map_err(demux_error)?),
    };
    Ok(reader)
}

fn decode_symphonia<'s>(
    src: Box<dyn MediaSource + 's>,
    plan: &Plan,
    limits: &ProbeLimits,
) -> Result<Probed, ProbeError> {
    let mut reader = open_reader(src, plan)?;
    let (track_id, params) = reader
        .tracks()
        .iter()
        .find_map(|t| match &t.codec_params {
            Some(CodecParameters::Audio(p)) if p.codec != CODEC_ID_NULL_AUDIO => {
                Some((t.id, p.clone()))
            }
            _ => None,
        })
        .ok_or_else(|| invalid("the file has no decodable audio track"))?;

    // Declared format, checked before any decoding.
    if let Some(rate) = params.sample_rate {
        check_rate(rate, limits)?;
    }
    if let Some(ch) = &params.channels {
        check_channels(u32::try_from(ch.count()).unwrap_or(u32::MAX), limits)?;
    }

    if params.codec == CODEC_ID_OPUS {
        return decode_packets_opus(reader.as_mut(), track_id, &params, plan.container, limits);
    }

    let mut decoder: Box<dyn AudioDecoder> = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(_) => invalid("the audio codec in this file is not supported"),
            other => demux_error(other),
        })?;
    let codec = codec_name(params.codec, decoder.codec_info().short_name);

    let mut acc = Accum::new(limits);
    let mut interleaved: Vec<f32> = Vec::new();
    let mut packets = 0u64;
    while let Some(packet) = next_packet(reader.as_mut(), track_id, &mut packets, &mut acc)? {
        match decoder.decode(&packet) {
            Ok(buf) => {
                if buf.frames() == 0 {
                    continue;
                }
                let channels = buf.spec().channels().count();
                acc.format(buf.spec().rate(), channels)?;
                buf.copy_to_vec_interleaved(&mut interleaved);
                acc.push(&interleaved, channels)?;
            }
            Err(_) => acc.error()?,
        }
    }
    acc.finish(plan.container, codec)
}

/// Fields of an `OpusHead` identification header that the decoder needs.
#[derive(Debug, Clone, Copy)]
struct OpusHead {
    channels: u8,
    pre_skip: u16,
}

fn parse_opus_head(data: &[u8]) -> Option<OpusHead> {
    if data.len() < 19 || !data.starts_with(b"OpusHead") || data[8] & 0xf0 != 0 {
        return None;
    }
    Some(OpusHead {
        channels: data[9],
        pre_skip: u16::from_le_bytes([data[10], data[11]]),
    })
}

/// libopus decoder state with pre-skip handling.
struct OpusState {
    decoder: opus::Decoder,
    channels: usize,
    skip: usize,
    buf: Vec<f32>,
}

impl OpusState {
    fn new(head: OpusHead, acc: &mut Accum<'_>, limits: &ProbeLimits) -> Result<Self, ProbeError> {
        check_channels(u32::from(head.channels), limits)?;
        let channels = match head.channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => {
                return Err(ProbeError::new(
                    ProbeErrorKind::UnsupportedChannels,
                    format!("Opus with {n} channels is not supported (only mono and stereo)"),
                ));
            }
        };
        // Opus decodes at 48 kHz; fall back to a lower native Opus rate if the limits demand it.
        let rate = [48_000u32, 24_000, 16_000, 12_000, 8_000]
            .into_iter()
            .find(|&r| r >= limits.min_sample_rate && r <= limits.max_sample_rate)
            .ok_or_else(|| {
                ProbeError::new(
                    ProbeErrorKind::UnsupportedSampleRate,
                    "no Opus decoding rate lies within the accepted sample-rate range",
                )
            })?;
        acc.format(rate, usize::from(head.channels))?;
        let decoder = opus::Decoder::new(rate, channels)
            .map_err(|_| invalid("the Opus decoder could not be created"))?;
        let n = usize::from(head.channels);
        Ok(Self {
            decoder,
            channels: n,
            skip: usize::from(head.pre_skip) * (rate as usize) / 48_000,
            buf: vec![0.0; OPUS_MAX_FRAME * n],
        })
    }

    fn packet(&mut self, data: &[u8], acc: &mut Accum<'_>) -> Result<(), ProbeError> {
        if data.is_empty() {
            return Ok(());
        }
        match self.decoder.decode_float(data, &mut self.buf, false) {
            Ok(frames) => {
                let frames = frames.min(self.buf.len() / self.channels);
                let skip = self.skip.min(frames);
                self.skip -= skip;
                let out = &self.buf[skip * self.channels..frames * self.channels];
                acc.push(out, self.channels)
            }
            Err(_) => acc.error(),
        }
    }
}

/// Opus inside Matroska/WebM: packets from symphonia's demuxer, samples from libopus.
fn decode_packets_opus(
    reader: &mut dyn FormatReader,
    track_id: u32,
    params: &AudioCodecParameters,
    container: Container,
    limits: &ProbeLimits,
) -> Result<Probed, ProbeError> {
    let head = match params.extra_data.as_deref().and_then(parse_opus_head) {
        Some(h) => h,
        None => OpusHead {
            channels: params
                .channels
                .as_ref()
                .map(|c| u8::try_from(c.count()).unwrap_or(u8::MAX))
                .ok_or_else(|| invalid("the Opus track has no channel count"))?,
            pre_skip: 0,
        },
    };
    let mut acc = Accum::new(limits);
    let mut state = OpusState::new(head, &mut acc, limits)?;
    let mut packets = 0u64;
    while let Some(packet) = next_packet(reader, track_id, &mut packets, &mut acc)? {
        state.packet(&packet.data, &mut acc)?;
    }
    acc.finish(container, "opus")
}

/// The next packet of `track_id`, or `None` at the end of the usable data (including a
/// truncated final packet or an unrecoverable demuxer state: what was decoded is judged).
/// Every packet read counts against `MAX_PACKETS`; a damaged one mid-stream counts against
/// the decode-error budget, and the demuxer may resynchronise.
fn next_packet(
    reader: &mut dyn FormatReader,
    track_id: u32,
    packets: &mut u64,
    acc: &mut Accum,
) -> Result<Option<symphonia::core::packet::Packet>, ProbeError> {
    loop {
        *packets += 1;
        if *packets > MAX_PACKETS {
            return Err(invalid("the file has too many packets"));
        }
        match reader.next_packet() {
            Ok(Some(packet)) if packet.track_id == track_id => return Ok(Some(packet)),
            Ok(Some(_)) => {}
            Err(SymError::DecodeError(_)) => acc.error()?,
            Ok(None) | Err(_) => return Ok(None),
        }
    }
}

/// Opus inside Ogg: demuxed with `ogg::PacketReader`, decoded with libopus.
fn decode_ogg_opus<'s>(
    src: Box<dyn MediaSource + 's>,
    limits: &ProbeLimits,
) -> Result<Probed, ProbeError> {
    let mut reader = ogg::PacketReader::new(src);
    let first = match reader.read_packet() {
        Ok(Some(p)) => p,
        _ => return Err(invalid("the Ogg stream has no readable first packet")),
    };
    let head =
        parse_opus_head(&first.data).ok_or_else(|| invalid("the OpusHead header is malformed"))?;
    let serial = first.stream_serial();
    let mut acc = Accum::new(limits);
    let mut state = OpusState::new(head, &mut acc, limits)?;
    let rate = u64::from(acc.rate);

    let mut seen_tags = false;
    let mut last_granule: Option<u64> = None;
    let mut packets = 0u64;
    loop {
        packets += 1;
        if packets > MAX_PACKETS {
            return Err(invalid("the file has too many packets"));
        }
        let packet = match reader.read_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // Damaged or truncated pages end the stream; what was decoded is judged below.
            Err(_) => break,
        };
        if packet.stream_serial() != serial {
            continue;
        }
        if !seen_tags {
            seen_tags = true;
            if packet.data.starts_with(b"OpusTags") {
                continue;
            }
        }
        if packet.last_in_page() {
            let g = packet.absgp_page();
            // -1 means "no packet finishes on this page".
            if g != u64::MAX {
                last_granule = Some(g);
            }
        }
        state.packet(&packet.data, &mut acc)?;
    }

    // The final granule position may only shorten the output (end trimming), never lengthen it.
    if let Some(g) = last_granule {
        let playable = g.saturating_sub(u64::from(head.pre_skip)) * rate / 48_000;
        if let Ok(playable) = usize::try_from(playable) {
            let max_trim = OPUS_MAX_FRAME * (rate as usize) / 48_000;
            if playable > 0
                && playable < acc.samples.len()
                && acc.samples.len() - playable <= max_trim
            {
                acc.samples.truncate(playable);
            }
        }
    }
    acc.finish(Container::Ogg, "opus")
}
