//! Independent decoders for what the server sends: symphonia (mp3, wav), claxon (flac),
//! libopus behind an Ogg demuxer (opus), and plain arithmetic (pcm).

use std::io::Cursor;

use symphonia::core::audio::sample::Sample;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// Decoded mono audio.
#[derive(Debug)]
pub struct Decoded {
    pub rate: u32,
    pub samples: Vec<f32>,
}

impl Decoded {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate)
    }

    /// Root mean square on a 0..1 scale.
    pub fn rms(&self) -> f64 {
        let sum: f64 = self.samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        (sum / self.samples.len().max(1) as f64).sqrt()
    }

    /// Asserts the audio is speech-like: the right rate, a plausible length, not silence.
    pub fn assert_speech(&self, min_secs: f64, max_secs: f64) {
        assert_eq!(self.rate, 24_000, "sample rate");
        let secs = self.seconds();
        assert!(
            (min_secs..=max_secs).contains(&secs),
            "duration {secs:.2}s not in {min_secs}..{max_secs}"
        );
        assert!(self.rms() > 0.01, "silent: rms {}", self.rms());
    }
}

/// Decodes `bytes` as `format`.
pub fn decode(format: &str, bytes: &[u8]) -> Decoded {
    match format {
        "mp3" | "wav" | "aac" => with_symphonia(format, bytes),
        "flac" => flac(bytes),
        "opus" => opus(bytes),
        "pcm" => Decoded {
            rate: 24_000,
            samples: bytes
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                .collect(),
        },
        other => panic!("no decoder for {other}"),
    }
}

fn with_symphonia(extension: &str, bytes: &[u8]) -> Decoded {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(extension);
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .expect("probe");
    let track = format.default_track(TrackType::Audio).expect("audio track");
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(
            track
                .codec_params
                .as_ref()
                .and_then(|p| p.audio())
                .expect("audio params"),
            &AudioDecoderOptions::default(),
        )
        .expect("decoder");
    let mut rate = 0;
    let mut samples = Vec::new();
    let mut buf: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A streamed WAV declares an unknown (maximal) length: the end of data is its end.
            Err(symphonia::core::errors::Error::IoError(_)) => break,
            Err(e) => panic!("demux: {e}"),
        };
        if packet.track_id != track_id {
            continue;
        }
        let audio = decoder.decode(&packet).expect("decode");
        rate = audio.spec().rate();
        assert_eq!(audio.spec().channels().count(), 1, "mono");
        buf.resize(audio.samples_interleaved(), f32::MID);
        audio.copy_to_slice_interleaved(&mut buf);
        samples.extend_from_slice(&buf);
    }
    Decoded { rate, samples }
}

fn flac(bytes: &[u8]) -> Decoded {
    let mut reader = claxon::FlacReader::new(Cursor::new(bytes)).expect("flac header");
    let info = reader.streaminfo();
    assert_eq!(info.channels, 1);
    assert_eq!(info.bits_per_sample, 16);
    let samples = reader
        .samples()
        .map(|s| s.expect("flac sample") as f32 / 32768.0)
        .collect();
    Decoded {
        rate: info.sample_rate,
        samples,
    }
}

fn opus(bytes: &[u8]) -> Decoded {
    let mut reader = ogg::PacketReader::new(Cursor::new(bytes));
    let head = reader.read_packet_expected().expect("OpusHead");
    assert_eq!(&head.data[..8], b"OpusHead");
    assert_eq!(head.data[9], 1, "mono");
    let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]) as usize;
    let input_rate =
        u32::from_le_bytes([head.data[12], head.data[13], head.data[14], head.data[15]]);
    let tags = reader.read_packet_expected().expect("OpusTags");
    assert_eq!(&tags.data[..8], b"OpusTags");
    // Decode at 48 kHz, as Ogg Opus granules count, then take every other sample (24 kHz).
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).expect("decoder");
    let mut pcm48: Vec<i16> = Vec::new();
    let mut frame = vec![0i16; 5760];
    let mut end_granule = None;
    while let Some(packet) = reader.read_packet().expect("ogg page") {
        let n = decoder
            .decode(&packet.data, &mut frame, false)
            .expect("opus packet");
        pcm48.extend_from_slice(&frame[..n]);
        if packet.last_in_stream() {
            end_granule = Some(packet.absgp_page() as usize);
        }
    }
    let end = end_granule.expect("end of stream");
    pcm48.truncate(end);
    let pcm48 = &pcm48[pre_skip.min(pcm48.len())..];
    Decoded {
        rate: input_rate,
        samples: pcm48
            .iter()
            .step_by(2)
            .map(|&s| f32::from(s) / 32768.0)
            .collect(),
    }
}
