//! Tests for the upload probe. WAV and Ogg Opus inputs are generated in code; the lossy
//! formats come from small committed fixtures (tests/fixtures, made once with ffmpeg from
//! `0.5*sin(2*PI*440*t)`, 1 s mono).

use std::io::Cursor;

use proptest::prelude::*;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).expect("fixture present")
}

fn sine(rate: u32, secs: f64, amp: f32) -> Vec<f32> {
    let n = (f64::from(rate) * secs).round() as usize;
    (0..n)
        .map(|i| amp * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin())
        .collect()
}

/// 16-bit PCM WAV of a 0.5-amplitude 440 Hz sine, same signal on every channel.
fn wav_i16(rate: u32, channels: u16, secs: f64) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cur = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cur, spec).expect("wav writer");
        for s in sine(rate, secs, 0.5) {
            for _ in 0..channels {
                w.write_sample((s * 32767.0) as i16).expect("write sample");
            }
        }
        w.finalize().expect("finalize");
    }
    cur.into_inner()
}

fn wav_f32(rate: u32, secs: f64) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut cur = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cur, spec).expect("wav writer");
        for s in sine(rate, secs, 0.5) {
            w.write_sample(s).expect("write sample");
        }
        w.finalize().expect("finalize");
    }
    cur.into_inner()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("chunk present")
}

fn opus_head(channels: u8, pre_skip: u16) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

fn opus_tags() -> Vec<u8> {
    let mut t = b"OpusTags".to_vec();
    let vendor = b"voxgate-test";
    t.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    t.extend_from_slice(vendor);
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}

/// Ogg stream: OpusHead, OpusTags, then `packets` (each 20 ms at 48 kHz for the granule).
fn ogg_opus_container(channels: u8, pre_skip: u16, packets: &[Vec<u8>], true_len: u64) -> Vec<u8> {
    use ogg::writing::PacketWriteEndInfo as E;
    let serial = 0x766f_7867;
    let mut out = Vec::new();
    {
        let mut w = ogg::PacketWriter::new(&mut out);
        w.write_packet(opus_head(channels, pre_skip), serial, E::EndPage, 0)
            .expect("write head");
        w.write_packet(opus_tags(), serial, E::EndPage, 0)
            .expect("write tags");
        let last = packets.len().saturating_sub(1);
        for (i, p) in packets.iter().enumerate() {
            let granule =
                (u64::from(pre_skip) + (i as u64 + 1) * 960).min(u64::from(pre_skip) + true_len);
            let info = if i == last {
                E::EndStream
            } else {
                E::NormalPacket
            };
            w.write_packet(p.clone(), serial, info, granule)
                .expect("write packet");
        }
    }
    out
}

fn ogg_opus(channels: u8, secs: f64) -> Vec<u8> {
    let ch = if channels == 1 {
        opus::Channels::Mono
    } else {
        opus::Channels::Stereo
    };
    let mut enc = opus::Encoder::new(48_000, ch, opus::Application::Audio).expect("encoder");
    let pre_skip = u16::try_from(enc.get_lookahead().expect("lookahead")).expect("small");
    let mono = sine(48_000, secs, 0.5);
    let true_len = mono.len() as u64;
    let mut interleaved: Vec<f32> = mono
        .iter()
        .flat_map(|&s| std::iter::repeat_n(s, usize::from(channels)))
        .collect();
    // Pad with silence to whole 20 ms frames, plus the encoder lookahead.
    let frame = 960 * usize::from(channels);
    let want =
        (interleaved.len() + usize::from(pre_skip) * usize::from(channels)).div_ceil(frame) * frame;
    interleaved.resize(want, 0.0);
    let packets: Vec<Vec<u8>> = interleaved
        .chunks_exact(frame)
        .map(|f| enc.encode_vec_float(f, 4000).expect("encode"))
        .collect();
    ogg_opus_container(channels, pre_skip, &packets, true_len)
}

fn rms(s: &[f32]) -> f64 {
    (s.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / s.len() as f64).sqrt()
}

fn assert_ok(p: &Probed, container: Container, codec: &str, rate: u32, channels: u16, secs: f64) {
    assert_eq!(p.container, container);
    assert_eq!(p.codec, codec);
    assert_eq!(p.sample_rate, rate);
    assert_eq!(p.channels, channels);
    assert!(
        (p.duration_secs - secs).abs() <= secs * 0.05,
        "duration {} vs {secs}",
        p.duration_secs
    );
    assert_eq!(
        p.samples.len() as f64 / f64::from(p.sample_rate),
        p.duration_secs
    );
    let r = rms(&p.samples);
    assert!(r > 0.05, "signal too quiet: rms {r}");
    assert!(p.samples.iter().all(|s| (-1.0..=1.0).contains(s)));
}

fn code_of(bytes: &[u8], name: &str, limits: &ProbeLimits) -> &'static str {
    match probe_bytes(bytes, name, limits) {
        Ok(p) => panic!("unexpectedly accepted as {:?}/{}", p.container, p.codec),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            e.code()
        }
    }
}

fn zip_tail() -> Vec<u8> {
    let mut z = b"PK\x03\x04".to_vec();
    z.extend_from_slice(&[0u8; 26]);
    z.extend_from_slice(b"payload.sh");
    z.extend_from_slice(b"PK\x05\x06");
    z.extend_from_slice(&[0u8; 16]);
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}

// ---------- positive ----------

#[test]
fn wav_16k_mono() {
    let p = probe_bytes(&wav_i16(16_000, 1, 1.0), "a.wav", &ProbeLimits::default()).expect("ok");
    assert_ok(&p, Container::Wav, "pcm", 16_000, 1, 1.0);
    assert_eq!(p.samples.len(), 16_000);
}

#[test]
fn wav_44k_stereo_uppercase_extension() {
    let p = probe_bytes(
        &wav_i16(44_100, 2, 1.0),
        "Voice.WAV",
        &ProbeLimits::default(),
    )
    .expect("ok");
    assert_ok(&p, Container::Wav, "pcm", 44_100, 2, 1.0);
}

#[test]
fn wav_float() {
    let p = probe_bytes(&wav_f32(22_050, 1.0), "f.wav", &ProbeLimits::default()).expect("ok");
    assert_ok(&p, Container::Wav, "pcm", 22_050, 1, 1.0);
}

#[test]
fn wav_via_probe_file() {
    let bytes = wav_i16(16_000, 1, 0.5);
    let path = std::env::temp_dir().join(format!("voxgate-probe-test-{}.bin", std::process::id()));
    std::fs::write(&path, &bytes).expect("write temp");
    let file = std::fs::File::open(&path).expect("open temp");
    let res = probe_file(
        file,
        bytes.len() as u64,
        "clip.wav",
        &ProbeLimits::default(),
    );
    std::fs::remove_file(&path).expect("remove temp");
    assert_ok(&res.expect("ok"), Container::Wav, "pcm", 16_000, 1, 0.5);
}

#[test]
fn flac_fixture() {
    let p = probe_bytes(&fixture("tone.flac"), "t.flac", &ProbeLimits::default()).expect("ok");
    assert_ok(&p, Container::Flac, "flac", 16_000, 1, 1.0);
}

#[test]
fn mp3_fixture_with_id3() {
    let bytes = fixture("tone.mp3");
    assert!(bytes.starts_with(b"ID3"));
    let p = probe_bytes(&bytes, "t.mp3", &ProbeLimits::default()).expect("ok");
    assert_ok(&p, Container::Mp3, "mp3", 22_050, 1, 1.0);
}

#[test]
fn mp3_fixture_without_id3() {
    let bytes = fixture("tone.mp3");
    let tag = super::sniff::id3v2_len(&bytes).expect("id3") as usize;
    let p = probe_bytes(&bytes[tag..], "t.mp3", &ProbeLimits::default()).expect("ok");
    assert_ok(&p, Container::Mp3, "mp3", 22_050, 1, 1.0);
}

#[test]
fn ogg_vorbis_fixture() {
    let p = probe_bytes(
        &fixture("tone_vorbis.ogg"),
        "t.ogg",
        &ProbeLimits::default(),
    )
    .expect("ok");
    assert_ok(&p, Container::Ogg, "vorbis", 22_050, 1, 1.0);
    let p = probe_bytes(
        &fixture("tone_vorbis.ogg"),
        "t.oga",
        &ProbeLimits::default(),
    )
    .expect("ok");
    assert_eq!(p.codec, "vorbis");
}

#[test]
fn m4a_aac_fixture() {
    let p = probe_bytes(&fixture("tone_aac.m4a"), "t.m4a", &ProbeLimits::default()).expect("ok");
    assert_ok(&p, Container::Mp4, "aac", 44_100, 1, 1.0);
    let p = probe_bytes(&fixture("tone_aac.m4a"), "t.mp4", &ProbeLimits::default()).expect("ok");
    assert_eq!(p.codec, "aac");
}

#[test]
fn adts_aac_fixture() {
    let p = probe_bytes(&fixture("tone_adts.aac"), "t.aac", &ProbeLimits::default()).expect("ok");
    assert_ok(&p, Container::Adts, "aac", 44_100, 1, 1.0);
}

#[test]
fn webm_opus_fixture() {
    let p = probe_bytes(
        &fixture("tone_opus.webm"),
        "t.webm",
        &ProbeLimits::default(),
    )
    .expect("ok");
    assert_ok(&p, Container::Webm, "opus", 48_000, 1, 1.0);
}

#[test]
fn ogg_opus_generated_mono_and_stereo() {
    for (ch, name) in [(1u8, "v.opus"), (2, "v.ogg")] {
        let bytes = ogg_opus(ch, 1.0);
        let p = probe_bytes(&bytes, name, &ProbeLimits::default()).expect("ok");
        assert_ok(&p, Container::Ogg, "opus", 48_000, u16::from(ch), 1.0);
    }
}

#[test]
fn ogg_opus_decodes_at_lower_rate_when_limits_require() {
    let limits = ProbeLimits {
        max_sample_rate: 16_000,
        ..ProbeLimits::default()
    };
    let p = probe_bytes(&ogg_opus(1, 1.0), "v.opus", &limits).expect("ok");
    assert_ok(&p, Container::Ogg, "opus", 16_000, 1, 1.0);
}

// ---------- negative ----------

#[test]
fn empty_file() {
    let e = probe_bytes(&[], "a.wav", &ProbeLimits::default()).expect_err("refused");
    assert_eq!((e.code(), e.status()), ("empty_file", 400));
}

#[test]
fn too_large() {
    let limits = ProbeLimits {
        max_bytes: 100,
        ..ProbeLimits::default()
    };
    let e = probe_bytes(&wav_i16(8000, 1, 0.1), "a.wav", &limits).expect_err("refused");
    assert_eq!((e.code(), e.status()), ("file_too_large", 413));
}

#[test]
fn bad_filenames() {
    let wav = wav_i16(16_000, 1, 0.2);
    for name in [
        "setup.exe",
        "noextension",
        "../../etc/passwd",
        "x.wav/evil",
        "x.",
        "",
        "a.wav.exe",
    ] {
        let e = probe_bytes(&wav, name, &ProbeLimits::default()).expect_err("refused");
        assert_eq!(
            (e.code(), e.status()),
            ("unsupported_file_type", 400),
            "{name}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(".wav") && msg.contains(".webm"),
            "lists allowed: {msg}"
        );
        if name.len() > 2 {
            assert!(!msg.contains(name), "message echoes filename: {msg}");
        }
    }
    // Only the last path component's suffix counts; directories are never looked at.
    assert!(probe_bytes(&wav, "../../etc/passwd.wav", &ProbeLimits::default()).is_ok());
}

#[test]
fn executables_archives_documents_images() {
    let l = ProbeLimits::default();
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(256, 0);
    let mut pe = b"MZ\x90\x00".to_vec();
    pe.resize(256, 0);
    let mut zip = zip_tail();
    zip.resize(300, 0);
    let pdf = b"%PDF-1.7\n1 0 obj\n<< >>\nendobj\ntrailer\n%%EOF\n".to_vec();
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.resize(64, 0);
    let html = b"  <!DOCTYPE html><html><script>alert(1)</script></html>".to_vec();
    let mut macho = b"\xcf\xfa\xed\xfe".to_vec();
    macho.resize(64, 0);
    let mut gz = b"\x1f\x8b\x08\x00".to_vec();
    gz.resize(64, 0);
    for (bytes, name) in [
        (&elf, "x.wav"),
        (&pe, "x.wav"),
        (&zip, "x.wav"),
        (&pdf, "x.mp3"),
        (&png, "x.flac"),
        (&html, "x.ogg"),
        (&macho, "x.m4a"),
        (&gz, "x.webm"),
    ] {
        let e = probe_bytes(bytes, name, &l).expect_err("refused");
        assert_eq!(
            (e.code(), e.status()),
            ("unsupported_media_type", 415),
            "{name}"
        );
        assert!(!e.to_string().contains(name));
    }
}

#[test]
fn extension_mismatch() {
    let l = ProbeLimits::default();
    let wav = wav_i16(16_000, 1, 0.5);
    assert_eq!(code_of(&wav, "x.mp3", &l), "unsupported_media_type");
    assert_eq!(
        code_of(&fixture("tone.flac"), "x.ogg", &l),
        "unsupported_media_type"
    );
    assert_eq!(
        code_of(&fixture("tone_opus.webm"), "x.m4a", &l),
        "unsupported_media_type"
    );
    assert_eq!(
        code_of(&fixture("tone_adts.aac"), "x.mp3", &l),
        "unsupported_media_type"
    );
    assert_eq!(
        code_of(&fixture("tone.mp3"), "x.aac", &l),
        "unsupported_media_type"
    );
    assert_eq!(code_of(&[0u8; 64], "x.wav", &l), "unsupported_media_type");
}

#[test]
fn matroska_doctype_is_not_webm() {
    let mut mkv = fixture("tone_opus.webm");
    let pos = find(&mkv, b"webm");
    mkv[pos..pos + 4].copy_from_slice(b"mkvx");
    assert_eq!(
        code_of(&mkv, "x.webm", &ProbeLimits::default()),
        "unsupported_media_type"
    );
}

#[test]
fn polyglot_zip_appended() {
    let l = ProbeLimits::default();
    let mut wav = wav_i16(16_000, 1, 0.5);
    wav.extend_from_slice(&zip_tail());
    assert_eq!(code_of(&wav, "x.wav", &l), "polyglot_file");
    // Caught by the EOCD scan even where no RIFF size exists.
    for (name, file) in [
        ("x.flac", "tone.flac"),
        ("x.mp3", "tone.mp3"),
        ("x.ogg", "tone_vorbis.ogg"),
    ] {
        let mut bytes = fixture(file);
        bytes.extend_from_slice(&zip_tail());
        let e = probe_bytes(&bytes, name, &l).expect_err("refused");
        assert_eq!((e.code(), e.status()), ("polyglot_file", 415), "{name}");
    }
}

#[test]
fn wav_trailing_data_is_polyglot_but_one_pad_byte_is_fine() {
    let l = ProbeLimits::default();
    let mut wav = wav_i16(16_000, 1, 0.5);
    wav.push(0);
    assert!(probe_bytes(&wav, "x.wav", &l).is_ok());
    wav.extend_from_slice(b"<?php system($_GET['c']); ?>");
    assert_eq!(code_of(&wav, "x.wav", &l), "polyglot_file");
}

/// Decision: a WAV header is never trusted for duration, and a header claiming 10 hours over a
/// 1 s body is refused before any duration is computed from it:
/// * RIFF size also claims the phantom bytes: the RIFF size no longer matches the file
///   length → `polyglot_file` (step 4, before decoding);
/// * RIFF size is the streaming placeholder 0xFFFFFFFF (what streaming writers, OpenAI's and
///   ours, leave): accepted, and judged by its decoded frames: 1 s, not 10 hours;
/// * RIFF size honest but the `data` chunk overflows it: the header is self-contradictory and
///   the demuxer refuses it → `invalid_audio`.
///
/// Either way nothing 10 hours long is ever allocated or decoded; duration limits are enforced
/// on decoded frames (see `wav_too_long_stops_at_limit`).
#[test]
fn wav_header_claims_ten_hours() {
    let l = ProbeLimits::default();
    let mut wav = wav_i16(16_000, 1, 1.0);
    let data = find(&wav, b"data");
    wav[data + 4..data + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let e = probe_bytes(&wav, "x.wav", &l).expect_err("refused");
    assert_eq!((e.code(), e.status()), ("invalid_audio", 400));

    let riff = 0x7fff_fff0u32.wrapping_add(data as u32);
    wav[4..8].copy_from_slice(&riff.to_le_bytes());
    let e = probe_bytes(&wav, "x.wav", &l).expect_err("refused");
    assert_eq!((e.code(), e.status()), ("polyglot_file", 415));
    wav[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    match probe_bytes(&wav, "x.wav", &l) {
        Ok(p) => assert!(p.duration_secs <= 1.05, "{}", p.duration_secs),
        Err(e) => assert_eq!(e.code(), "invalid_audio"),
    }
}

/// A streamed WAV (both sizes left at 0xFFFFFFFF) is real audio: accepted, duration from
/// its frames; a ZIP appended to it is still a polyglot.
#[test]
fn streaming_wav_placeholders_are_accepted() {
    let l = ProbeLimits::default();
    let mut wav = wav_i16(16_000, 1, 1.0);
    let data = find(&wav, b"data");
    wav[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    wav[data + 4..data + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let p = probe_bytes(&wav, "x.wav", &l).expect("accepted");
    assert!((p.duration_secs - 1.0).abs() < 0.01, "{}", p.duration_secs);
    wav.extend_from_slice(b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(code_of(&wav, "x.wav", &l), "polyglot_file");
}

#[test]
fn wav_huge_sample_rate() {
    let mut wav = wav_i16(16_000, 1, 0.5);
    let fmt = find(&wav, b"fmt ");
    wav[fmt + 12..fmt + 16].copy_from_slice(&4_000_000_000u32.to_le_bytes());
    let e = probe_bytes(&wav, "x.wav", &ProbeLimits::default()).expect_err("refused");
    assert_eq!((e.code(), e.status()), ("unsupported_sample_rate", 400));
    // And too low.
    assert_eq!(
        code_of(&wav_i16(4000, 1, 0.5), "x.wav", &ProbeLimits::default()),
        "unsupported_sample_rate"
    );
}

#[test]
fn wav_too_many_channels() {
    let l = ProbeLimits {
        max_channels: 2,
        ..ProbeLimits::default()
    };
    let e = probe_bytes(&wav_i16(8000, 3, 0.5), "x.wav", &l).expect_err("refused");
    assert_eq!((e.code(), e.status()), ("unsupported_channels", 400));
    let mut wav = wav_i16(8000, 1, 0.5);
    let fmt = find(&wav, b"fmt ");
    wav[fmt + 10..fmt + 12].copy_from_slice(&0u16.to_le_bytes());
    assert_eq!(
        code_of(&wav, "x.wav", &ProbeLimits::default()),
        "unsupported_channels"
    );
}

#[test]
fn wav_too_long_stops_at_limit() {
    let wav = wav_i16(8000, 1, 100.0);
    let e = probe_bytes(&wav, "x.wav", &ProbeLimits::default()).expect_err("refused");
    assert_eq!((e.code(), e.status()), ("audio_too_long", 400));
}

#[test]
fn wav_too_short() {
    let e = probe_bytes(&wav_i16(16_000, 1, 0.02), "x.wav", &ProbeLimits::default())
        .expect_err("refused");
    assert_eq!((e.code(), e.status()), ("audio_too_short", 400));
}

#[test]
fn wav_header_without_frames_is_invalid() {
    let wav = wav_i16(16_000, 1, 0.0);
    assert_eq!(
        code_of(&wav, "x.wav", &ProbeLimits::default()),
        "invalid_audio"
    );
}

#[test]
fn truncated_mp3_and_flac_are_invalid() {
    let l = ProbeLimits::default();
    // A lone MP3 frame header with a body far shorter than the frame.
    let mut mp3 = vec![0xff, 0xfb, 0x90, 0x64];
    mp3.extend_from_slice(&[0x55; 20]);
    let e = probe_bytes(&mp3, "x.mp3", &l).expect_err("refused");
    assert_eq!((e.code(), e.status()), ("invalid_audio", 400));
    // ID3 tag claiming more bytes than the file has.
    let mut id3 = b"ID3\x04\x00\x00\x00\x00\x7f\x7f".to_vec();
    id3.resize(40, 0);
    assert_eq!(code_of(&id3, "x.mp3", &l), "unsupported_media_type");
    // FLAC: magic with a truncated STREAMINFO.
    let flac = fixture("tone.flac");
    assert_eq!(code_of(&flac[..20], "x.flac", &l), "invalid_audio");
    // FLAC: valid headers but frames cut off.
    let cut = find(&flac, &[0xff, 0xf8]);
    assert_eq!(code_of(&flac[..cut + 2], "x.flac", &l), "invalid_audio");
    // FLAC: frames replaced by garbage.
    let mut garbled = flac.clone();
    for (i, b) in garbled[cut..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0xa5;
    }
    assert_eq!(code_of(&garbled, "x.flac", &l), "invalid_audio");
}

#[test]
fn ogg_with_garbage_opus_packets() {
    let garbage: Vec<Vec<u8>> = (0..50).map(|_| vec![0xff; 40]).collect();
    let bytes = ogg_opus_container(1, 312, &garbage, 48_000);
    let e = probe_bytes(&bytes, "x.opus", &ProbeLimits::default()).expect_err("refused");
    assert_eq!((e.code(), e.status()), ("invalid_audio", 400));
}

#[test]
fn ogg_opus_bad_channel_counts() {
    let packets: Vec<Vec<u8>> = vec![vec![0xf8, 0xff, 0xfe]; 10];
    let bytes = ogg_opus_container(0, 0, &packets, 9600);
    assert_eq!(
        code_of(&bytes, "x.opus", &ProbeLimits::default()),
        "unsupported_channels"
    );
    let bytes = ogg_opus_container(6, 0, &packets, 9600);
    assert_eq!(
        code_of(&bytes, "x.opus", &ProbeLimits::default()),
        "unsupported_channels"
    );
}

#[test]
fn corrupt_fixtures_are_refused_cleanly() {
    let l = ProbeLimits::default();
    for (file, name) in [
        ("tone_aac.m4a", "x.m4a"),
        ("tone_opus.webm", "x.webm"),
        ("tone_vorbis.ogg", "x.ogg"),
        ("tone_adts.aac", "x.aac"),
    ] {
        let bytes = fixture(file);
        // Keep only the first 200 bytes: headers, no audio.
        let e = probe_bytes(&bytes[..200], name, &l).expect_err("refused");
        assert!(
            matches!(e.code(), "invalid_audio" | "audio_too_short"),
            "{file}: {}",
            e.code()
        );
    }
}

#[test]
fn error_codes_and_statuses() {
    use ProbeErrorKind as K;
    let table = [
        (K::EmptyFile, "empty_file", 400),
        (K::FileTooLarge, "file_too_large", 413),
        (K::UnsupportedFileType, "unsupported_file_type", 400),
        (K::UnsupportedMediaType, "unsupported_media_type", 415),
        (K::PolyglotFile, "polyglot_file", 415),
        (K::UnsupportedSampleRate, "unsupported_sample_rate", 400),
        (K::UnsupportedChannels, "unsupported_channels", 400),
        (K::AudioTooLong, "audio_too_long", 400),
        (K::AudioTooShort, "audio_too_short", 400),
        (K::InvalidAudio, "invalid_audio", 400),
        (K::Io, "upload_read_error", 500),
    ];
    for (k, code, status) in table {
        assert_eq!((k.code(), k.status()), (code, status));
    }
}

// ---------- property tests ----------

fn ext_strategy() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(ALLOWED_EXTENSIONS)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048), ext in ext_strategy()) {
        let _ = probe_bytes(&bytes, &format!("f.{ext}"), &ProbeLimits::default());
    }

    #[test]
    fn never_panics_on_magic_plus_noise(
        which in 0usize..7,
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let (prefix, name): (&[u8], &str) = [
            (b"RIFF\0\0\0\0WAVEfmt ".as_slice(), "f.wav"),
            (b"\xff\xfb\x90\x64".as_slice(), "f.mp3"),
            (b"fLaC\0\0\0\x22".as_slice(), "f.flac"),
            (b"OggS\0\x02\0\0\0\0\0\0\0\0".as_slice(), "f.ogg"),
            (b"\0\0\0\x18ftypM4A ".as_slice(), "f.m4a"),
            (b"\x1a\x45\xdf\xa3\x84\x42\x82\x84webm".as_slice(), "f.webm"),
            (b"\xff\xf1\x50\x40".as_slice(), "f.aac"),
        ][which];
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&body);
        let _ = probe_bytes(&bytes, name, &ProbeLimits::default());
    }

    #[test]
    fn wav_with_random_flips_never_panics(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16)) {
        let mut wav = wav_i16(8000, 1, 0.25);
        for (idx, val) in flips {
            let i = idx.index(wav.len());
            wav[i] ^= val;
        }
        if let Ok(p) = probe_bytes(&wav, "f.wav", &ProbeLimits::default()) {
            prop_assert!(p.duration_secs <= 90.0);
            prop_assert!(p.samples.iter().all(|s| s.is_finite() && (-1.0..=1.0).contains(s)));
        }
    }

    #[test]
    fn fixtures_with_random_flips_never_panic(
        which in 0usize..6,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (file, name) = [
            ("tone.flac", "f.flac"),
            ("tone.mp3", "f.mp3"),
            ("tone_vorbis.ogg", "f.ogg"),
            ("tone_aac.m4a", "f.m4a"),
            ("tone_opus.webm", "f.webm"),
            ("tone_adts.aac", "f.aac"),
        ][which];
        let mut bytes = fixture(file);
        for (idx, val) in flips {
            let i = idx.index(bytes.len());
            bytes[i] ^= val;
        }
        let _ = probe_bytes(&bytes, name, &ProbeLimits::default());
    }
}
