//! Magic-byte detection, refusal of non-audio content, and polyglot checks (steps 3 and 4).

use super::{ByteSource, Container, ProbeError, ProbeErrorKind, ProbeLimits, io_error};

/// Bytes read from the start of the file for sniffing.
const HEAD_LEN: usize = 64 * 1024;
/// A ZIP end-of-central-directory record is 22 bytes plus a comment of at most 65,535 bytes.
const EOCD_MIN: usize = 22;
const TAIL_LEN: usize = EOCD_MIN + 65_535;
/// At most this many consecutive ID3v2 tags are skipped before the audio stream.
const MAX_ID3_TAGS: usize = 4;

/// What the decode stage needs to know from sniffing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The container, which agrees with the extension.
    pub container: Container,
    /// Byte offset where the container's own data starts (after ID3v2 tags), else 0.
    pub payload_offset: u64,
    /// Ogg whose first packet is `OpusHead`: decoded with libopus instead of symphonia.
    pub ogg_opus: bool,
}

fn media_type(msg: impl Into<String>) -> ProbeError {
    ProbeError::new(ProbeErrorKind::UnsupportedMediaType, msg)
}

/// Runs the magic-byte, agreement and polyglot checks.
pub(crate) fn inspect<S: ByteSource + ?Sized>(
    src: &mut S,
    len: u64,
    expected: Container,
    limits: &ProbeLimits,
) -> Result<Plan, ProbeError> {
    let head = src.read_at(0, HEAD_LEN).map_err(io_error)?;

    if let Some(what) = forbidden_kind(&head) {
        return Err(media_type(format!(
            "the file content is {what}, not audio; expected {} audio",
            expected.name()
        )));
    }
    if let Some(t) = infer::get(&head) {
        use infer::MatcherType as M;
        if !matches!(t.matcher_type(), M::Audio | M::Video) {
            return Err(media_type(format!(
                "the file content is {} ({}), not audio; expected {} audio",
                t.mime_type(),
                t.extension(),
                expected.name()
            )));
        }
    }

    let (detected, payload_offset) = detect(src, &head)?;
    let Some(detected) = detected else {
        return Err(media_type(format!(
            "the file content is not a recognised audio format; expected {} audio",
            expected.name()
        )));
    };
    if detected != expected {
        return Err(media_type(format!(
            "the file content is {} audio but the file extension calls for {} audio",
            detected.name(),
            expected.name()
        )));
    }

    // Step 4: polyglot / trailing data.
    let tail_start = len.saturating_sub(TAIL_LEN as u64);
    let tail = src.read_at(tail_start, TAIL_LEN).map_err(io_error)?;
    if zip_eocd_at_end(&tail, tail_start, len) {
        return Err(ProbeError::new(
            ProbeErrorKind::PolyglotFile,
            "the file has a ZIP archive appended to it",
        ));
    }
    if detected == Container::Wav {
        check_riff_size(&head, len)?;
        if let Some((rate, channels)) = wav_format(&head) {
            super::decode::check_rate(rate, limits)?;
            super::decode::check_channels(u32::from(channels), limits)?;
        }
    }

    let ogg_opus = detected == Container::Ogg && ogg_first_packet_is_opus_head(&head);
    Ok(Plan {
        container: detected,
        payload_offset,
        ogg_opus,
    })
}

/// Recognises content that must never be accepted, whatever the extension says.
fn forbidden_kind(head: &[u8]) -> Option<&'static str> {
    const SIGS: &[(&[u8], &str)] = &[
        (b"\x7fELF", "an ELF executable"),
        (b"MZ", "a Windows executable"),
        (b"\xfe\xed\xfa\xce", "a Mach-O executable"),
        (b"\xfe\xed\xfa\xcf", "a Mach-O executable"),
        (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
        (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
        (
            b"\xca\xfe\xba\xbe",
            "a Mach-O universal binary or Java class",
        ),
        (b"\0asm", "a WebAssembly module"),
        (b"#!", "a script"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"PK\x05\x06", "a ZIP archive"),
        (b"PK\x07\x08", "a ZIP archive"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"Rar!\x1a\x07", "a RAR archive"),
        (b"BZh", "a bzip2 archive"),
        (b"\xfd7zXZ\0", "an xz archive"),
        (b"\x28\xb5\x2f\xfd", "a zstd archive"),
        (b"%PDF", "a PDF document"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
            "an OLE (Office) document",
        ),
        (b"{\\rtf", "an RTF document"),
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"II*\0", "a TIFF image"),
        (b"MM\0*", "a TIFF image"),
    ];
    if let Some((_, what)) = SIGS.iter().find(|(sig, _)| head.starts_with(sig)) {
        return Some(what);
    }
    if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("a WebP image");
    }
    if looks_like_markup(head) {
        return Some("HTML, XML or script text");
    }
    None
}

/// Markup or script text, possibly behind a UTF-8 BOM and whitespace.
fn looks_like_markup(head: &[u8]) -> bool {
    let mut s = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    while let Some((first, rest)) = s.split_first() {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    const PREFIXES: &[&[u8]] = &[
        b"<!doctype",
        b"<html",
        b"<head",
        b"<body",
        b"<script",
        b"<?xml",
        b"<svg",
        b"<?php",
        b"<iframe",
        b"<!--",
    ];
    PREFIXES
        .iter()
        .any(|p| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p))
}

/// Detects the audio container and where its data starts (after any ID3v2 tags).
fn detect<S: ByteSource + ?Sized>(
    src: &mut S,
    head: &[u8],
) -> Result<(Option<Container>, u64), ProbeError> {
    if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WAVE" {
        return Ok((Some(Container::Wav), 0));
    }
    if head.starts_with(b"fLaC") {
        return Ok((Some(Container::Flac), 0));
    }
    if head.starts_with(b"OggS") {
        return Ok((Some(Container::Ogg), 0));
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        return Ok(((size >= 8).then_some(Container::Mp4), 0));
    }
    if head.starts_with(b"\x1a\x45\xdf\xa3") {
        let webm = ebml_doctype(head).is_some_and(|d| d == b"webm");
        return Ok((webm.then_some(Container::Webm), 0));
    }

    // MPEG elementary streams, possibly behind ID3v2 tags.
    let mut offset = 0u64;
    let mut window = head.get(..16).unwrap_or(head).to_vec();
    for _ in 0..MAX_ID3_TAGS {
        let Some(tag_len) = id3v2_len(&window) else {
            break;
        };
        offset = offset.saturating_add(tag_len);
        window = src.read_at(offset, 16).map_err(io_error)?;
    }
    let found = if is_mp3_frame(&window) {
        Some(Container::Mp3)
    } else if is_adts_frame(&window) {
        Some(Container::Adts)
    } else if offset > 0 && window.starts_with(b"fLaC") {
        Some(Container::Flac)
    } else {
        None
    };
    Ok((found, offset))
}

/// Total length of an ID3v2 tag (header, body and optional footer) starting at `b[0]`.
pub(super) fn id3v2_len(b: &[u8]) -> Option<u64> {
    if b.len() < 10 || &b[0..3] != b"ID3" || b[3] == 0xff || b[4] == 0xff {
        return None;
    }
    let size = &b[6..10];
    if size.iter().any(|&x| x & 0x80 != 0) {
        return None;
    }
    let body = size.iter().fold(0u64, |acc, &x| (acc << 7) | u64::from(x));
    let footer = if b[5] & 0x10 != 0 { 10 } else { 0 };
    Some(10 + body + footer)
}

/// MPEG-1/2/2.5 layer III frame header.
fn is_mp3_frame(b: &[u8]) -> bool {
    b.len() >= 4
        && b[0] == 0xff
        && b[1] & 0xe0 == 0xe0
        && (b[1] >> 3) & 0x03 != 0x01 // version not reserved
        && (b[1] >> 1) & 0x03 == 0x01 // layer III
        && b[2] >> 4 != 0x0f // bitrate index not "bad"
        && (b[2] >> 2) & 0x03 != 0x03 // sample rate not reserved
}

/// AAC ADTS frame header (0xFFF1 / 0xFFF9, with or without CRC).
fn is_adts_frame(b: &[u8]) -> bool {
    b.len() >= 7 && b[0] == 0xff && b[1] & 0xf6 == 0xf0 && (b[2] >> 2) & 0x0f < 13
}

/// Reads an EBML variable-length integer; returns (value, length). With `keep_marker` the
/// length-marker bit is kept (element IDs), otherwise removed (sizes).
fn ebml_vint(b: &[u8], keep_marker: bool) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 || b.len() < len {
        return None;
    }
    let mut v = if keep_marker {
        u64::from(first)
    } else {
        u64::from(first) & (0xff >> len)
    };
    for &x in &b[1..len] {
        v = (v << 8) | u64::from(x);
    }
    Some((v, len))
}

/// The DocType of the EBML header at the start of `head`, if present.
fn ebml_doctype(head: &[u8]) -> Option<&[u8]> {
    let (_, id_len) = ebml_vint(head, true)?;
    let (size, size_len) = ebml_vint(head.get(id_len..)?, false)?;
    let start = id_len + size_len;
    let end = start
        .checked_add(usize::try_from(size).ok()?)?
        .min(head.len());
    let mut pos = start;
    while pos < end {
        let (id, il) = ebml_vint(&head[pos..end], true)?;
        let (sz, sl) = ebml_vint(&head[pos + il..end], false)?;
        let body = pos + il + sl;
        let body_end = body.checked_add(usize::try_from(sz).ok()?)?;
        if body_end > end {
            return None;
        }
        if id == 0x4282 {
            let v = &head[body..body_end];
            // Strings may be NUL-padded.
            let trimmed = v.split(|&c| c == 0).next().unwrap_or(v);
            return Some(trimmed);
        }
        pos = body_end;
    }
    None
}

/// True when a ZIP end-of-central-directory record sits in `tail` and its comment ends exactly
/// at the end of the file, i.e. a ZIP archive was appended.
fn zip_eocd_at_end(tail: &[u8], tail_start: u64, len: u64) -> bool {
    if tail.len() < EOCD_MIN {
        return false;
    }
    (0..=tail.len() - EOCD_MIN).rev().any(|i| {
        tail[i..].starts_with(b"PK\x05\x06") && {
            let comment = u64::from(u16::from_le_bytes([tail[i + 20], tail[i + 21]]));
            tail_start + i as u64 + EOCD_MIN as u64 + comment == len
        }
    })
}

/// The RIFF chunk size that streaming writers (OpenAI's streamed WAV, voxgate's own) leave
/// in the header because the length is unknown when it is written.
pub(crate) const RIFF_STREAMING: u32 = u32::MAX;

/// The RIFF chunk size must account for the whole file (one pad byte allowed), unless it is
/// the streaming placeholder: then the data runs to the end of the file, its duration is
/// still counted from decoded frames, and an appended archive is still caught by the ZIP
/// check that applies to every format.
fn check_riff_size(head: &[u8], len: u64) -> Result<(), ProbeError> {
    let riff = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if riff == RIFF_STREAMING {
        return Ok(());
    }
    let declared = u64::from(riff) + 8;
    if len == declared || len == declared + 1 {
        Ok(())
    } else {
        Err(ProbeError::new(
            ProbeErrorKind::PolyglotFile,
            format!(
                "the WAV RIFF header declares {declared} bytes but the file has {len} bytes \
                 (trailing or missing data)"
            ),
        ))
    }
}

/// Sample rate and channel count from the WAV `fmt ` chunk, if it lies within `head`.
fn wav_format(head: &[u8]) -> Option<(u32, u16)> {
    let mut pos = 12usize;
    while pos.checked_add(8)? <= head.len() {
        let id = &head[pos..pos + 4];
        let size = u32::from_le_bytes([head[pos + 4], head[pos + 5], head[pos + 6], head[pos + 7]]);
        let body = pos + 8;
        if id == b"fmt " {
            let f = head.get(body..body.checked_add(16)?)?;
            let channels = u16::from_le_bytes([f[2], f[3]]);
            let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
            return Some((rate, channels));
        }
        if id == b"data" {
            return None;
        }
        let size = usize::try_from(size).ok()?;
        pos = body.checked_add(size)?.checked_add(size & 1)?;
    }
    None
}

/// True when the first Ogg page's first packet begins with `OpusHead`.
fn ogg_first_packet_is_opus_head(head: &[u8]) -> bool {
    let Some(&nseg) = head.get(26) else {
        return false;
    };
    let payload = 27 + usize::from(nseg);
    head.get(payload..payload + 8) == Some(b"OpusHead".as_slice())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn id3_length_and_frame_headers() {
        assert_eq!(
            id3v2_len(b"ID3\x04\x00\x00\x00\x00\x00\x23xx"),
            Some(10 + 0x23)
        );
        assert_eq!(
            id3v2_len(b"ID3\x04\x00\x10\x00\x00\x01\x00"),
            Some(10 + 128 + 10)
        );
        assert_eq!(id3v2_len(b"ID3\x04\x00\x00\x80\x00\x00\x00"), None);
        assert!(is_mp3_frame(&[0xff, 0xfb, 0x90, 0x00]));
        assert!(!is_mp3_frame(&[0xff, 0xf1, 0x50, 0x40]));
        assert!(is_adts_frame(&[0xff, 0xf1, 0x50, 0x40, 0, 0, 0]));
        assert!(is_adts_frame(&[0xff, 0xf9, 0x50, 0x40, 0, 0, 0]));
        assert!(!is_adts_frame(&[0xff, 0xfb, 0x90, 0x00, 0, 0, 0]));
    }

    #[test]
    fn eocd_must_end_at_eof() {
        let mut data = vec![0u8; 100];
        data.extend_from_slice(b"PK\x05\x06");
        data.extend_from_slice(&[0u8; 16]);
        data.extend_from_slice(&3u16.to_le_bytes());
        data.extend_from_slice(b"abc");
        let len = data.len() as u64;
        assert!(zip_eocd_at_end(&data, 0, len));
        data.push(0);
        assert!(!zip_eocd_at_end(&data, 0, len + 1));
    }

    #[test]
    fn markup_is_refused() {
        assert!(looks_like_markup(b"\xef\xbb\xbf  \n<!DOCTYPE html><html>"));
        assert!(looks_like_markup(b"<script>alert(1)</script>"));
        assert!(!looks_like_markup(b"RIFF"));
    }
}
