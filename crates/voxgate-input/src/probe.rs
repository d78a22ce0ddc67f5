//! The upload probe: decides whether uploaded bytes are real audio of an allowed kind, and
//! decodes them.
//!
//! Everything uploaded is treated as hostile. The checks run in a fixed order:
//!
//! 1. size: empty → `empty_file`, over [`ProbeLimits::max_bytes`] → `file_too_large`;
//! 2. extension of the client filename (the filename is used for nothing else) must be in
//!    [`ALLOWED_EXTENSIONS`] → else `unsupported_file_type`;
//! 3. magic bytes must identify an audio container that agrees with the extension; executables,
//!    archives, documents, markup/scripts and images are refused → `unsupported_media_type`;
//! 4. polyglot / trailing data (a ZIP appended to the audio, a WAV whose RIFF size does not match
//!    the file length) → `polyglot_file`;
//! 5. a real decode, whose duration is counted from decoded frames only (never from header
//!    fields), with sample-rate, channel and duration limits.
//!
//! Error messages never echo file content or the client filename.

mod decode;
mod sniff;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// Limits applied by [`probe_bytes`] and [`probe_file`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeLimits {
    /// Largest accepted upload in bytes (default 25 MiB).
    pub max_bytes: u64,
    /// Longest accepted decoded duration in seconds (default 90).
    pub max_duration_secs: f64,
    /// Shortest accepted decoded duration in seconds (default 0.1).
    pub min_duration_secs: f64,
    /// Lowest accepted sample rate in Hz (default 8000).
    pub min_sample_rate: u32,
    /// Highest accepted sample rate in Hz (default 96000).
    pub max_sample_rate: u32,
    /// Most channels accepted (default 8).
    pub max_channels: u16,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        Self {
            max_bytes: 25 * 1024 * 1024,
            max_duration_secs: 90.0,
            min_duration_secs: 0.1,
            min_sample_rate: 8000,
            max_sample_rate: 96000,
            max_channels: 8,
        }
    }
}

/// The container format of an accepted upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// RIFF/WAVE (PCM, IEEE float, ADPCM).
    Wav,
    /// MPEG audio layer III elementary stream (optionally behind an ID3v2 tag).
    Mp3,
    /// Native FLAC stream (`fLaC`).
    Flac,
    /// Ogg (Vorbis, Opus or FLAC inside).
    Ogg,
    /// ISO base media / MP4 (`ftyp` box), e.g. M4A with AAC.
    Mp4,
    /// WebM (EBML with doctype `webm`).
    Webm,
    /// Raw AAC in ADTS framing (`.aac`).
    Adts,
}

impl Container {
    /// A short human-readable name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Container::Wav => "WAV",
            Container::Mp3 => "MP3",
            Container::Flac => "FLAC",
            Container::Ogg => "Ogg",
            Container::Mp4 => "MP4/M4A",
            Container::Webm => "WebM",
            Container::Adts => "AAC (ADTS)",
        }
    }

    /// The container expected for an (already lowercased) allowed extension.
    pub fn for_extension(ext: &str) -> Option<Container> {
        Some(match ext {
            "wav" => Container::Wav,
            "mp3" => Container::Mp3,
            "flac" => Container::Flac,
            "ogg" | "oga" | "opus" => Container::Ogg,
            "m4a" | "mp4" => Container::Mp4,
            "webm" => Container::Webm,
            "aac" => Container::Adts,
            _ => return None,
        })
    }
}

/// File extensions accepted for uploads (compared after ASCII-lowercasing).
/// `aac` means raw ADTS, which symphonia demuxes.
pub const ALLOWED_EXTENSIONS: &[&str] = &[
    "wav", "mp3", "flac", "ogg", "oga", "opus", "m4a", "mp4", "aac", "webm",
];

/// A successfully probed and decoded upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    /// The detected container (agrees with the extension).
    pub container: Container,
    /// Short codec name: `pcm`, `adpcm`, `mp3`, `flac`, `vorbis`, `aac` or `opus`.
    pub codec: &'static str,
    /// Sample rate of `samples`, in Hz (Opus is decoded at 48 kHz).
    pub sample_rate: u32,
    /// Channel count of the source (before the mono downmix).
    pub channels: u16,
    /// Mono downmix in [-1, 1] at `sample_rate`.
    pub samples: Vec<f32>,
    /// Duration in seconds, counted from decoded frames.
    pub duration_secs: f64,
}

/// The reason an upload was refused; see [`ProbeError::code`] and [`ProbeError::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeErrorKind {
    /// 400 `empty_file`.
    EmptyFile,
    /// 413 `file_too_large`.
    FileTooLarge,
    /// 400 `unsupported_file_type`: missing or disallowed extension.
    UnsupportedFileType,
    /// 415 `unsupported_media_type`: content is not audio of the kind the extension says.
    UnsupportedMediaType,
    /// 415 `polyglot_file`: audio with another file appended or trailing data.
    PolyglotFile,
    /// 400 `unsupported_sample_rate`.
    UnsupportedSampleRate,
    /// 400 `unsupported_channels`.
    UnsupportedChannels,
    /// 400 `audio_too_long` (decoded duration over the limit).
    AudioTooLong,
    /// 400 `audio_too_short` (decoded duration under the limit).
    AudioTooShort,
    /// 400 `invalid_audio`: nothing decodes, no audio track, corrupt, or decoder failure.
    InvalidAudio,
    /// 500 `upload_read_error`: the server's own temp file could not be read.
    Io,
}

impl ProbeErrorKind {
    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::EmptyFile => "empty_file",
            Self::FileTooLarge => "file_too_large",
            Self::UnsupportedFileType => "unsupported_file_type",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PolyglotFile => "polyglot_file",
            Self::UnsupportedSampleRate => "unsupported_sample_rate",
            Self::UnsupportedChannels => "unsupported_channels",
            Self::AudioTooLong => "audio_too_long",
            Self::AudioTooShort => "audio_too_short",
            Self::InvalidAudio => "invalid_audio",
            Self::Io => "upload_read_error",
        }
    }

    /// HTTP status for this refusal.
    pub fn status(self) -> u16 {
        match self {
            Self::FileTooLarge => 413,
            Self::UnsupportedMediaType | Self::PolyglotFile => 415,
            Self::Io => 500,
            _ => 400,
        }
    }
}

/// Why an upload was refused. `Display` gives a precise message that never contains file
/// content or the client filename.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    kind: ProbeErrorKind,
    message: String,
}

impl ProbeError {
    pub(crate) fn new(kind: ProbeErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The kind of refusal.
    pub fn kind(&self) -> ProbeErrorKind {
        self.kind
    }

    /// Stable machine-readable code, e.g. `invalid_audio`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// HTTP status code (400, 413, 415 or 500).
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

/// Random-access view of the upload used by the sniffing stage.
pub(crate) trait ByteSource {
    /// Reads up to `max` bytes starting at `offset` (fewer at end of file).
    fn read_at(&mut self, offset: u64, max: usize) -> std::io::Result<Vec<u8>>;
}

impl ByteSource for &[u8] {
    fn read_at(&mut self, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let end = start.saturating_add(max).min(self.len());
        Ok(self[start..end].to_vec())
    }
}

impl ByteSource for File {
    fn read_at(&mut self, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        self.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(max.min(1 << 20));
        self.by_ref().take(max as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// Probes an in-memory upload (used by tests and fuzzing; same checks as [`probe_file`]).
pub fn probe_bytes(
    bytes: &[u8],
    filename: &str,
    limits: &ProbeLimits,
) -> Result<Probed, ProbeError> {
    let len = bytes.len() as u64;
    check_size(len, limits)?;
    let expected = container_from_filename(filename)?;
    let mut src: &[u8] = bytes;
    let plan = sniff::inspect(&mut src, len, expected, limits)?;
    decode::decode(Box::new(std::io::Cursor::new(bytes)), &plan, limits)
}

/// Probes an upload that the server has streamed to a private temp file. `len` is the number of
/// bytes the server wrote; the larger of it and the file's own length is checked against
/// [`ProbeLimits::max_bytes`].
pub fn probe_file(
    mut file: File,
    len: u64,
    filename: &str,
    limits: &ProbeLimits,
) -> Result<Probed, ProbeError> {
    let real_len = file.metadata().map(|m| m.len()).unwrap_or(len);
    check_size(len.max(real_len), limits)?;
    if real_len == 0 {
        return Err(ProbeError::new(
            ProbeErrorKind::EmptyFile,
            "the uploaded file is empty",
        ));
    }
    let expected = container_from_filename(filename)?;
    let plan = sniff::inspect(&mut file, real_len, expected, limits)?;
    file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    decode::decode(Box::new(file), &plan, limits)
}

pub(crate) fn io_error(_: std::io::Error) -> ProbeError {
    ProbeError::new(ProbeErrorKind::Io, "the uploaded file could not be read")
}

fn check_size(len: u64, limits: &ProbeLimits) -> Result<(), ProbeError> {
    if len == 0 {
        return Err(ProbeError::new(
            ProbeErrorKind::EmptyFile,
            "the uploaded file is empty",
        ));
    }
    if len > limits.max_bytes {
        return Err(ProbeError::new(
            ProbeErrorKind::FileTooLarge,
            format!(
                "the uploaded file is {len} bytes, over the limit of {} bytes",
                limits.max_bytes
            ),
        ));
    }
    Ok(())
}

/// Extracts the lowercased extension of the client filename (the last `.` suffix of its last
/// path component) and maps it to the expected container. The filename is used for nothing else.
fn container_from_filename(filename: &str) -> Result<Container, ProbeError> {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or("");
    let ext = base
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match ext.as_deref().and_then(Container::for_extension) {
        Some(c) => Ok(c),
        None => Err(ProbeError::new(
            ProbeErrorKind::UnsupportedFileType,
            format!(
                "unsupported file type: the filename must end in one of .{}",
                ALLOWED_EXTENSIONS.join(", .")
            ),
        )),
    }
}
