//! Whisper on CTranslate2's low-level model: log-mel features, language detection, the
//! decoder prompt (transcribe or translate, with or without timestamps) and word timing
//! from the cross-attention alignment.
//!
//! `ct2rs` has a high-level `Whisper` too, but its prompt always asks to transcribe and it
//! decodes a whole file in one batch; this module owns the prompt (so the same loaded model
//! also translates) and can decode window by window (so text streams as each 30-second
//! window is done).

use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use ct2rs::Tokenizer as _;
use ct2rs::sys::{self, StorageView, WhisperOptions};
use ct2rs::tokenizers::hf;
use mel_spec::mel::{log_mel_spectrogram, mel, norm_mel};
use mel_spec::stft::Spectrogram;
use ndarray::Array2;
use voxgate_engine::{Task, TranscriptWord};

/// Encoder frames per second (Whisper's encoder halves the 100 feature frames per second).
const FRAMES_PER_SECOND: f32 = 50.0;

/// `preprocessor_config.json`: how audio becomes features.
struct Features {
    /// Mel bands.
    mels: usize,
    hop: usize,
    fft: usize,
    /// Samples per window (30 s).
    window: usize,
    /// Feature frames per window.
    frames: usize,
    filters: Array2<f64>,
}

impl Features {
    fn read(path: &Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Raw {
            feature_size: usize,
            hop_length: usize,
            n_fft: usize,
            n_samples: usize,
            nb_max_frames: usize,
            sampling_rate: usize,
            mel_filters: Option<Vec<Vec<f64>>>,
        }
        let raw: Raw = serde_json::from_reader(BufReader::new(File::open(path)?))
            .with_context(|| format!("reading {}", path.display()))?;
        let filters = match raw.mel_filters {
            Some(rows) => {
                let width = rows.first().map_or(0, Vec::len);
                Array2::from_shape_vec((rows.len(), width), rows.into_iter().flatten().collect())?
            }
            None => mel(
                raw.sampling_rate as f64,
                raw.n_fft,
                raw.feature_size,
                None,
                None,
                false,
                true,
            ),
        };
        if raw.hop_length == 0 || raw.n_samples == 0 || raw.nb_max_frames == 0 {
            return Err(anyhow!("{}: zero hop, window or frames", path.display()));
        }
        Ok(Self {
            mels: raw.feature_size,
            hop: raw.hop_length,
            fft: raw.n_fft,
            window: raw.n_samples,
            frames: raw.nb_max_frames,
            filters,
        })
    }

    /// Normalised log-mel features of every 30-second window, window after window, each
    /// `mels × frames` (row-major), zero-padded past the audio's end.
    fn compute(&self, samples: &[f32]) -> Vec<Vec<f32>> {
        let mut stft = Spectrogram::new(self.fft, self.hop);
        samples
            .chunks(self.window)
            .map(|window| {
                let mut out = vec![0f32; self.mels * self.frames];
                for (frame, hop) in window.chunks(self.hop).enumerate().take(self.frames) {
                    if let Some(spectrum) = stft.add(hop) {
                        let column = norm_mel(&log_mel_spectrogram(&spectrum, &self.filters));
                        for (band, value) in column.column(0).iter().enumerate().take(self.mels) {
                            out[band * self.frames + frame] = *value as f32;
                        }
                    }
                }
                out
            })
            .collect()
    }
}

/// A loaded model: the network, its tokenizer and its feature settings.
pub struct Model {
    whisper: sys::Whisper,
    tokenizer: hf::Tokenizer,
    features: Features,
}

/// One decoded window: its text and (when asked) its timed words.
pub struct Decoded {
    pub text: String,
    pub words: Vec<TranscriptWord>,
}

impl Model {
    pub fn load(dir: &Path, config: ct2rs::Config) -> Result<Self> {
        Ok(Self {
            whisper: sys::Whisper::new(dir, config)?,
            tokenizer: hf::Tokenizer::new(dir)?,
            features: Features::read(&dir.join("preprocessor_config.json"))?,
        })
    }

    /// The features of each 30-second window of `samples`.
    pub fn windows(&self, samples: &[f32]) -> Vec<Vec<f32>> {
        self.features.compute(samples)
    }

    fn view<'a>(&self, window: &'a mut [f32]) -> Result<StorageView<'a>> {
        StorageView::new(
            &[1, self.features.mels, self.features.frames],
            window,
            ct2rs::Device::CPU,
        )
    }

    /// The most likely language of a window, as its code (`en`).
    pub fn detect_language(&self, window: &mut [f32]) -> Result<String> {
        let view = self.view(window)?;
        let found = self.whisper.detect_language(&view)?;
        let best = found
            .first()
            .and_then(|ranked| ranked.first())
            .ok_or_else(|| anyhow!("no language detected"))?;
        let token = best.language.as_str();
        Ok(token
            .strip_prefix("<|")
            .and_then(|t| t.strip_suffix("|>"))
            .unwrap_or(token)
            .to_owned())
    }

    /// Samples per window.
    pub fn window_samples(&self) -> usize {
        self.features.window
    }

    /// Decodes one window in `language`: its text, and with `words` its timed words
    /// (offset by `offset_secs`, the window's start in the audio; aligned only within the
    /// `heard` samples the window really holds, not its padding).
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, each argument distinct"
    )]
    pub fn decode(
        &self,
        window: &mut [f32],
        heard: usize,
        language: &str,
        task: Task,
        words: bool,
        offset_secs: f32,
        options: &WhisperOptions,
    ) -> Result<Decoded> {
        let language = format!("<|{language}|>");
        let mut prompt = vec![
            "<|startoftranscript|>",
            language.as_str(),
            match task {
                Task::Transcribe => "<|transcribe|>",
                Task::Translate => "<|translate|>",
            },
        ];
        if !words {
            prompt.push("<|notimestamps|>");
        }
        let view = self.view(window)?;
        if !words {
            let result = self.whisper.generate(&view, &[prompt], options)?;
            let tokens = result
                .into_iter()
                .next()
                .and_then(|r| r.sequences.into_iter().next())
                .ok_or_else(|| anyhow!("no sequence decoded"))?;
            return Ok(Decoded {
                text: self.text_of(&tokens)?,
                words: Vec::new(),
            });
        }
        // Timed words: encode once, decode with timestamps, then align the decoded tokens
        // with the audio frames through the decoder's cross-attention.
        let encoded = self.whisper.encode(&view, false)?;
        let result = self
            .whisper
            .generate(&encoded, std::slice::from_ref(&prompt), options)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no sequence decoded"))?;
        let tokens = result
            .sequences
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no sequence decoded"))?;
        let ids = result
            .sequences_ids
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no sequence decoded"))?;
        let start: Vec<usize> = prompt
            .iter()
            .map(|t| self.tokenizer.token_to_id(t).map_or(0, |id| id as usize))
            .collect();
        let frames = heard
            .div_ceil(self.features.hop)
            .clamp(1, self.features.frames);
        let aligned = self.whisper.align(&encoded, &start, &[ids], &[frames], 7)?;
        let alignment = aligned
            .first()
            .map(|a| a.alignments.as_slice())
            .unwrap_or_default();
        let mut timed = Vec::new();
        for (range, (start, end)) in word_ranges(&tokens)
            .into_iter()
            .zip(word_times(&tokens, alignment))
        {
            let word = self.tokenizer.decode(tokens[range].to_vec())?;
            let word = word.trim();
            if !word.is_empty() {
                timed.push(TranscriptWord {
                    word: word.to_owned(),
                    start: start + offset_secs,
                    end: end + offset_secs,
                });
            }
        }
        Ok(Decoded {
            text: self.text_of(&tokens)?,
            words: timed,
        })
    }

    fn text_of(&self, tokens: &[String]) -> Result<String> {
        let plain: Vec<String> = tokens.iter().filter(|t| !special(t)).cloned().collect();
        Ok(self.tokenizer.decode(plain)?.trim().to_owned())
    }
}

/// `<|…|>` tokens: language, task, timestamps, end of text.
fn special(token: &str) -> bool {
    token.starts_with("<|") && token.ends_with("|>")
}

/// Whether a text token begins a word: the tokenizer marks a leading space with `Ġ`;
/// punctuation stands on its own.
fn begins_word(token: &str) -> bool {
    token.starts_with(['Ġ', ' ']) || token.starts_with(|c: char| c.is_ascii_punctuation())
}

/// The token ranges of the words in a decoded sequence (special tokens end a word).
fn word_ranges(tokens: &[String]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut open: Option<usize> = None;
    for (i, token) in tokens.iter().enumerate() {
        if special(token) {
            if let Some(start) = open.take() {
                ranges.push(start..i);
            }
        } else if open.is_none() {
            open = Some(i);
        } else if begins_word(token)
            && let Some(start) = open.replace(i)
        {
            ranges.push(start..i);
        }
    }
    if let Some(start) = open {
        ranges.push(start..tokens.len());
    }
    ranges
}

/// Start and end (seconds into the window) of each word of [`word_ranges`]: a token spans
/// the encoder frames the alignment maps it to; tokens without frames, or starting before
/// the previous one ended, are moved to where the previous one ended. A word longer than
/// twice the median word (at most 1.4 s) is cut to that, as the alignment tends to stretch
/// a word into the pause after it.
fn word_times(tokens: &[String], alignment: &[sys::WhisperTokenAlignment]) -> Vec<(f32, f32)> {
    let n = tokens.len();
    let mut first = vec![i64::MAX; n];
    let mut last = vec![i64::MIN; n];
    for step in alignment {
        if let Ok(t) = usize::try_from(step.token_x)
            && t < n
        {
            first[t] = first[t].min(step.frame_x);
            last[t] = last[t].max(step.frame_x + 1);
        }
    }
    let mut end_so_far = 0i64;
    let mut spans = Vec::with_capacity(n);
    for t in 0..n {
        let (start, end) = if first[t] == i64::MAX {
            (end_so_far, end_so_far)
        } else {
            let start = first[t].max(end_so_far);
            (start, last[t].max(start))
        };
        end_so_far = end;
        spans.push((start, end));
    }
    let mut times: Vec<(f32, f32)> = word_ranges(tokens)
        .into_iter()
        .map(|r| {
            let start = spans[r.start].0 as f32 / FRAMES_PER_SECOND;
            let end = spans[r.end - 1].1 as f32 / FRAMES_PER_SECOND;
            (start, end)
        })
        .collect();
    let mut lengths: Vec<f32> = times
        .iter()
        .map(|(s, e)| e - s)
        .filter(|d| *d > 0.0)
        .collect();
    if !lengths.is_empty() {
        lengths.sort_by(f32::total_cmp);
        let longest = 2.0 * lengths[lengths.len() / 2].min(0.7);
        for (start, end) in &mut times {
            *end = end.min(*start + longest);
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn words_start_at_space_marks_and_punctuation() {
        let t = tokens(&[
            "<|0.00|>",
            "ĠHel",
            "lo",
            "Ġthere",
            ".",
            "<|1.00|>",
            "ĠBye",
            "<|endoftext|>",
        ]);
        assert_eq!(word_ranges(&t), [1..3, 3..4, 4..5, 6..7]);
        assert!(word_ranges(&tokens(&["<|0.00|>", "<|endoftext|>"])).is_empty());
    }

    #[test]
    fn word_times_follow_the_alignment_and_stay_in_order() {
        let t = tokens(&["<|0.00|>", "ĠHel", "lo", "Ġthere", "."]);
        let step = |token_x, frame_x| sys::WhisperTokenAlignment { token_x, frame_x };
        // "Hel" frames 10..12, "lo" 12..15, "there" 20..30, "." without frames.
        let alignment = [
            step(1, 10),
            step(1, 11),
            step(2, 12),
            step(2, 14),
            step(3, 20),
            step(3, 29),
        ];
        let times = word_times(&t, &alignment);
        assert_eq!(times.len(), 3);
        assert_eq!(times[0], (0.2, 0.3));
        assert_eq!(times[1], (0.4, 0.6));
        // The punctuation mark without frames sits where the word before it ended.
        assert_eq!(times[2], (0.6, 0.6));
    }

    #[test]
    fn an_overlong_word_is_cut_to_twice_the_median() {
        let t = tokens(&["ĠA", "Ġb", "Ġc"]);
        let step = |token_x, frame_x| sys::WhisperTokenAlignment { token_x, frame_x };
        let alignment = [
            step(0, 0),
            step(0, 9),
            step(1, 10),
            step(1, 19),
            step(2, 20),
            step(2, 199),
        ];
        let times = word_times(&t, &alignment);
        // Median length 0.2 s: the last word (3.6 s) is cut to 0.4 s.
        assert_eq!(times[2], (0.4, 0.8));
    }
}
