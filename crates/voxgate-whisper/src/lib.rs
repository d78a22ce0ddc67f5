//! Whisper speech recognition through CTranslate2 (`ct2rs`), as a voxgate engine.
//!
//! This crate is its own compilation unit because CTranslate2 is a large C++ build (about
//! 16 minutes on two cores): the gateway reaches it only through the
//! [`voxgate_engine::Transcriber`] trait, behind the `whisper` feature.
//!
//! Loading is checksum-first: [`verify_model`] hashes every file of the model directory
//! against the manifest compiled into this crate ([`MANIFEST`]) before CTranslate2 opens any
//! of them, so a swapped or truncated file refuses to load with a message naming it.

mod model;

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use voxgate_engine::{
    BlockingPool, EngineError, Transcriber, Transcript, TranscriptSegment, TranscriptWord,
    TranscriptionFuture, TranscriptionRequest,
};

use model::Model;

/// `sha256  file` lines for the Whisper base model, as `scripts/fetch-models` verifies them.
pub const MANIFEST: &str = include_str!("../assets/whisper-base.sha256");

/// The sample rate Whisper listens at.
pub const SAMPLE_RATE: u32 = 16_000;

/// Languages Whisper base knows (the list lives in the engine contract, where remote
/// Whisper-compatible providers share it).
pub use voxgate_engine::WHISPER_LANGUAGES as LANGUAGES;

/// Why a model directory cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the manifest names is not there.
    #[error("model file {file} is missing from {dir} (run scripts/fetch-models)")]
    Missing { dir: PathBuf, file: String },
    /// A file's SHA-256 differs from the manifest.
    #[error("model file {file} in {dir} fails its checksum: expected {expected}, found {actual}")]
    Checksum {
        dir: PathBuf,
        file: String,
        expected: String,
        actual: String,
    },
    /// Reading a file failed.
    #[error("cannot read model file {file} in {dir}")]
    Io {
        dir: PathBuf,
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The manifest compiled into the binary is malformed (a build defect).
    #[error("the model manifest is malformed")]
    Manifest,
    /// CTranslate2 refused the verified files.
    #[error("CTranslate2 cannot load the model in {dir}: {message}")]
    Load { dir: PathBuf, message: String },
}

/// Parses [`MANIFEST`] into `(file, sha256 hex)` pairs.
fn manifest() -> Result<Vec<(&'static str, &'static str)>, ModelError> {
    MANIFEST
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (digest, file) = line.split_once("  ").ok_or(ModelError::Manifest)?;
            let plain = !file.is_empty() && !file.contains(['/', '\\']) && file != "..";
            if digest.len() != 64 || !plain {
                return Err(ModelError::Manifest);
            }
            Ok((file, digest))
        })
        .collect()
}

/// Hashes every file the manifest names in `dir` and compares it with the manifest.
pub fn verify_model(dir: &Path) -> Result<(), ModelError> {
    for (file, expected) in manifest()? {
        let path = dir.join(file);
        let io = |source| ModelError::Io {
            dir: dir.to_path_buf(),
            file: file.to_owned(),
            source,
        };
        let mut handle = match File::open(&path) {
            Ok(handle) => handle,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModelError::Missing {
                    dir: dir.to_path_buf(),
                    file: file.to_owned(),
                });
            }
            Err(err) => return Err(io(err)),
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = handle.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = hex(&hasher.finalize());
        if actual != expected {
            return Err(ModelError::Checksum {
                dir: dir.to_path_buf(),
                file: file.to_owned(),
                expected: expected.to_owned(),
                actual,
            });
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct WhisperSettings {
    /// The directory holding the verified model files.
    pub model_dir: PathBuf,
    /// CPU threads CTranslate2 uses for one transcription.
    pub threads: usize,
    /// Transcriptions running at once (further ones wait in the gateway's admission queue).
    pub parallel: usize,
    /// Beam width for greedy decoding (`temperature` 0); 1 is fastest.
    pub beam_size: usize,
}

/// Whisper base, loaded and ready.
pub struct WhisperEngine {
    id: String,
    model: Arc<Model>,
    pool: BlockingPool,
    beam_size: usize,
}

impl fmt::Debug for WhisperEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhisperEngine")
            .field("id", &self.id)
            .field("beam_size", &self.beam_size)
            .finish_non_exhaustive()
    }
}

impl WhisperEngine {
    /// Verifies the model's checksums, then loads it. Blocking (hashes ~150 MB, reads it).
    pub fn load(id: &str, settings: &WhisperSettings) -> Result<Self, ModelError> {
        verify_model(&settings.model_dir)?;
        let config = ct2rs::Config {
            num_threads_per_replica: settings.threads.max(1),
            ..Default::default()
        };
        let model = Model::load(&settings.model_dir, config).map_err(|e| ModelError::Load {
            dir: settings.model_dir.clone(),
            message: format!("{e:#}"),
        })?;
        Ok(Self {
            id: id.to_owned(),
            model: Arc::new(model),
            pool: BlockingPool::new(settings.parallel.max(1)),
            beam_size: settings.beam_size.max(1),
        })
    }

    fn options(&self, temperature: f32) -> ct2rs::WhisperOptions {
        let mut options = ct2rs::WhisperOptions {
            beam_size: self.beam_size,
            return_no_speech_prob: false,
            ..Default::default()
        };
        if temperature > 0.0 {
            // Sampling instead of beam search, as OpenAI's `temperature` asks.
            options.beam_size = 1;
            options.sampling_topk = 0;
            options.sampling_temperature = temperature;
        }
        options
    }
}

/// Decodes the request window by window (30 s each), in the language asked for or the one
/// detected in the first window, sending each window's text to the request's sink as soon
/// as it is decoded.
fn run(
    model: &Model,
    request: &TranscriptionRequest,
    options: &ct2rs::WhisperOptions,
) -> Result<Transcript, EngineError> {
    let internal = |e: anyhow::Error| EngineError::Internal(format!("whisper: {e:#}"));
    let mut windows = model.windows(&request.samples);
    let Some(first) = windows.first_mut() else {
        return Ok(Transcript {
            language: request.language.clone(),
            ..Transcript::default()
        });
    };
    let language = match &request.language {
        Some(code) => code.clone(),
        None => model.detect_language(first).map_err(internal)?,
    };
    let per_window = model.window_samples();
    let window_secs = per_window as f32 / SAMPLE_RATE as f32;
    let mut texts = Vec::new();
    let mut words = Vec::new();
    for (i, window) in windows.iter_mut().enumerate() {
        let heard = request
            .samples
            .len()
            .saturating_sub(i * per_window)
            .min(per_window);
        let decoded = model
            .decode(
                window,
                heard,
                &language,
                request.task,
                request.timestamps,
                i as f32 * window_secs,
                options,
            )
            .map_err(internal)?;
        if let Some(sink) = &request.partial {
            sink.send(&decoded.text);
        }
        if !decoded.text.is_empty() {
            texts.push(decoded.text);
        }
        words.extend(decoded.words.into_iter().map(|w| TranscriptWord {
            start: w.start.max(0.0),
            end: w.end.max(w.start).max(0.0),
            word: w.word,
        }));
    }
    Ok(Transcript {
        text: texts.join(" "),
        language: Some(language),
        segments: if request.timestamps {
            segments_from_words(words)
        } else {
            Vec::new()
        },
    })
}

/// Groups timed words into caption-sized segments: a segment ends after a word that ends a
/// sentence, before a pause of more than a second, or once it spans ten seconds.
pub fn segments_from_words(words: Vec<TranscriptWord>) -> Vec<TranscriptSegment> {
    let mut segments: Vec<TranscriptSegment> = Vec::new();
    let mut current: Vec<TranscriptWord> = Vec::new();
    let flush = |current: &mut Vec<TranscriptWord>, segments: &mut Vec<TranscriptSegment>| {
        if let (Some(first), Some(last)) = (current.first(), current.last()) {
            let text = join_words(current);
            segments.push(TranscriptSegment {
                start: first.start,
                end: last.end,
                text,
                words: std::mem::take(current),
            });
        }
    };
    for word in words {
        if let (Some(first), Some(last)) = (current.first(), current.last())
            && (word.start - last.end > 1.0 || word.end - first.start > 10.0)
        {
            flush(&mut current, &mut segments);
        }
        let ends_sentence = word.word.ends_with(['.', '?', '!']);
        current.push(word);
        if ends_sentence {
            flush(&mut current, &mut segments);
        }
    }
    flush(&mut current, &mut segments);
    segments
}

/// The words as text: Whisper marks a word that starts after a space with a leading
/// space and leaves punctuation bare; words given without spaces are separated by one,
/// except punctuation, which joins the word before it.
fn join_words(words: &[TranscriptWord]) -> String {
    let mut text = String::new();
    for word in words {
        let piece = word.word.as_str();
        let trimmed = piece.trim();
        if trimmed.is_empty() {
            continue;
        }
        let joins = trimmed.starts_with([',', '.', '?', '!', ';', ':', '%', ')', ']', '}', '…'])
            || trimmed.starts_with('\'') && !piece.starts_with(char::is_whitespace);
        if !text.is_empty() && (piece.starts_with(char::is_whitespace) || !joins) {
            text.push(' ');
        }
        text.push_str(trimmed);
    }
    text
}

impl Transcriber for WhisperEngine {
    fn id(&self) -> &str {
        &self.id
    }

    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    fn languages(&self) -> &[&str] {
        LANGUAGES
    }

    fn word_timestamps(&self) -> bool {
        true
    }

    fn translates(&self) -> bool {
        true
    }

    fn transcribe(&self, request: TranscriptionRequest) -> TranscriptionFuture {
        let model = Arc::clone(&self.model);
        let options = self.options(request.temperature);
        let pool = self.pool.clone();
        Box::pin(async move { pool.run(move || run(&model, &request, &options)).await? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_every_file_once_with_a_sha256() {
        let entries = manifest().unwrap();
        let mut files: Vec<_> = entries.iter().map(|(f, _)| *f).collect();
        files.sort_unstable();
        assert_eq!(
            files,
            [
                "config.json",
                "model.bin",
                "preprocessor_config.json",
                "tokenizer.json",
                "vocabulary.txt"
            ]
        );
        assert!(
            entries
                .iter()
                .all(|(_, d)| d.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn the_committed_preprocessor_config_matches_the_manifest() {
        let bytes = include_bytes!("../assets/preprocessor_config.json");
        let digest = hex(&Sha256::digest(bytes));
        let expected = manifest()
            .unwrap()
            .into_iter()
            .find(|(f, _)| *f == "preprocessor_config.json")
            .unwrap()
            .1;
        assert_eq!(digest, expected);
    }

    #[test]
    fn a_missing_or_altered_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = verify_model(dir).unwrap_err();
        assert!(matches!(err, ModelError::Missing { ref file, .. } if file == "model.bin"));
        std::fs::write(dir.join("model.bin"), b"not a model").unwrap();
        let err = verify_model(dir).unwrap_err();
        match err {
            ModelError::Checksum { file, actual, .. } => {
                assert_eq!(file, "model.bin");
                assert_eq!(actual, hex(&Sha256::digest(b"not a model")));
            }
            other => panic!("expected a checksum error, got {other:?}"),
        }
    }

    #[test]
    fn segments_break_at_sentences_and_pauses() {
        let w = |word: &str, start: f32, end: f32| TranscriptWord {
            word: word.into(),
            start,
            end,
        };
        let segments = segments_from_words(vec![
            w("Hello", 0.0, 0.4),
            w("there.", 0.5, 0.9),
            w("After", 1.0, 1.3),
            w("a", 1.3, 1.4),
            w("pause", 3.0, 3.4),
        ]);
        let texts: Vec<_> = segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["Hello there.", "After a", "pause"]);
        assert_eq!(segments[1].start, 1.0);
        assert_eq!(segments[1].end, 1.4);
        // Whisper's own spacing (leading spaces, bare punctuation) and bare words alike.
        let segments = segments_from_words(vec![
            w(" Well", 0.0, 0.2),
            w(",", 0.2, 0.2),
            w(" it's", 0.3, 0.5),
            w(" done", 0.5, 0.8),
            w(".", 0.8, 0.8),
            w("Yes", 1.0, 1.2),
            w(",", 1.2, 1.2),
            w("really", 1.3, 1.6),
            w("!", 1.6, 1.6),
        ]);
        let texts: Vec<_> = segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["Well, it's done.", "Yes, really!"]);
    }
}
