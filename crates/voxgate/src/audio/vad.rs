//! Turn detection from voice-activity probabilities (one per 32 ms frame at 16 kHz, from
//! Silero VAD): where speech starts and stops, live ([`Turns`]) or over a whole recording
//! ([`speech_regions`]).
//!
//! Speech starts at the first frame whose probability reaches `threshold`, and stops once
//! the probability has stayed below `threshold - 0.15` (hysteresis, so a word's quiet
//! middle does not end it) for `silence_duration_ms`. A region keeps `prefix_padding_ms`
//! of audio before its start, and as much after its last speech frame, so the recogniser
//! hears the whole first and last word.

use std::ops::Range;

/// Samples per probability (32 ms at 16 kHz).
pub const FRAME: usize = 512;
/// The rate the probabilities are for.
pub const RATE: usize = 16_000;

/// OpenAI's `server_vad` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnDetection {
    /// 0–1: how sure the detector must be that a frame is speech.
    pub threshold: f32,
    /// Audio kept before the detected start.
    pub prefix_padding_ms: u32,
    /// Silence that ends a turn.
    pub silence_duration_ms: u32,
}

impl Default for TurnDetection {
    /// OpenAI's defaults.
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

impl TurnDetection {
    fn frames(ms: u32) -> usize {
        (ms as usize * RATE / 1000).div_ceil(FRAME)
    }

    fn low(&self) -> f32 {
        (self.threshold - 0.15).max(0.01)
    }
}

/// A change of turn, at a sample offset from the start of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Speech began at this sample (before the prefix padding).
    Started(usize),
    /// Speech ended at this sample (the end of its last speech frame).
    Stopped(usize),
}

/// Live turn detection: fed one probability per frame, in order.
#[derive(Debug, Clone)]
pub struct Turns {
    settings: TurnDetection,
    /// Frames seen.
    frames: usize,
    /// In speech: the frame after the last one at or above the low threshold.
    speaking: Option<usize>,
}

impl Turns {
    pub fn new(settings: TurnDetection) -> Self {
        Self {
            settings,
            frames: 0,
            speaking: None,
        }
    }

    /// Whether a turn is under way.
    pub fn in_speech(&self) -> bool {
        self.speaking.is_some()
    }

    /// Takes the next frame's probability; says when a turn starts or stops.
    pub fn push(&mut self, probability: f32) -> Option<Turn> {
        let frame = self.frames;
        self.frames += 1;
        match self.speaking {
            None if probability >= self.settings.threshold => {
                self.speaking = Some(frame + 1);
                Some(Turn::Started(frame * FRAME))
            }
            None => None,
            Some(_) if probability >= self.settings.low() => {
                self.speaking = Some(frame + 1);
                None
            }
            Some(last) => {
                let silent = frame + 1 - last;
                if silent >= TurnDetection::frames(self.settings.silence_duration_ms).max(1) {
                    self.speaking = None;
                    Some(Turn::Stopped(last * FRAME))
                } else {
                    None
                }
            }
        }
    }
}

/// The stretches of a recording worth recognising: each turn with its padding, merged where
/// they touch, and split so none is longer than `max_samples` (Whisper hears 30 s at a
/// time), at the quietest frame of its second half.
pub fn speech_regions(
    probabilities: &[f32],
    settings: &TurnDetection,
    total_samples: usize,
    max_samples: usize,
) -> Vec<Range<usize>> {
    let mut turns = Turns::new(*settings);
    let mut raw: Vec<Range<usize>> = Vec::new();
    let mut start = None;
    for &p in probabilities {
        match turns.push(p) {
            Some(Turn::Started(at)) => start = Some(at),
            Some(Turn::Stopped(at)) => {
                if let Some(s) = start.take() {
                    raw.push(s..at);
                }
            }
            None => {}
        }
    }
    if let Some(s) = start {
        let end = turns.speaking.map_or(total_samples, |last| last * FRAME);
        raw.push(s..end.min(total_samples));
    }
    let pad = settings.prefix_padding_ms as usize * RATE / 1000;
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in raw {
        let padded = r.start.saturating_sub(pad)..(r.end + pad).min(total_samples);
        match merged.last_mut() {
            Some(last) if padded.start <= last.end => last.end = last.end.max(padded.end),
            _ => merged.push(padded),
        }
    }
    let max_samples = max_samples.max(FRAME * 2);
    let mut out = Vec::with_capacity(merged.len());
    for mut r in merged {
        while r.len() > max_samples {
            // The quietest frame between half the limit and the limit.
            let first = (r.start + max_samples / 2) / FRAME;
            let last = (r.start + max_samples) / FRAME;
            let cut = (first..last)
                .filter(|f| *f < probabilities.len())
                .min_by(|a, b| probabilities[*a].total_cmp(&probabilities[*b]))
                .map_or(r.start + max_samples, |f| f * FRAME)
                .clamp(r.start + FRAME, r.start + max_samples);
            out.push(r.start..cut);
            r.start = cut;
        }
        if !r.is_empty() {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probabilities for `pattern`: one character per frame, `#` speech, `.` silence.
    fn frames(pattern: &str) -> Vec<f32> {
        pattern
            .chars()
            .map(|c| if c == '#' { 0.9 } else { 0.05 })
            .collect()
    }

    #[test]
    fn a_turn_stops_after_the_silence_duration_not_at_a_pause() {
        let settings = TurnDetection {
            threshold: 0.5,
            prefix_padding_ms: 0,
            // 16 frames of 32 ms.
            silence_duration_ms: 500,
        };
        let mut turns = Turns::new(settings);
        let mut events = Vec::new();
        // Speech, a 5-frame pause (160 ms), speech, then long silence.
        for (i, p) in frames(&format!("..###.....###{}", ".".repeat(20)))
            .into_iter()
            .enumerate()
        {
            if let Some(e) = turns.push(p) {
                events.push((i, e));
            }
        }
        assert_eq!(
            events,
            [
                (2, Turn::Started(2 * FRAME)),
                (28, Turn::Stopped(13 * FRAME))
            ]
        );
        assert!(!turns.in_speech());
    }

    #[test]
    fn a_middling_frame_keeps_a_turn_going_but_does_not_start_one() {
        let mut turns = Turns::new(TurnDetection::default());
        // 0.4 is below the threshold (0.5) but above its low mark (0.35).
        assert_eq!(turns.push(0.4), None);
        assert_eq!(turns.push(0.6), Some(Turn::Started(FRAME)));
        for _ in 0..30 {
            assert_eq!(turns.push(0.4), None);
        }
        assert!(turns.in_speech());
    }

    #[test]
    fn regions_are_padded_merged_and_split() {
        let settings = TurnDetection {
            threshold: 0.5,
            prefix_padding_ms: 64,
            silence_duration_ms: 96,
        };
        let p = frames("....##.....##......................######");
        let total = p.len() * FRAME;
        let regions = speech_regions(&p, &settings, total, usize::MAX);
        // The first two turns are 5 frames apart: padded by 2 frames each, they stay apart;
        // the last runs to the end of the recording.
        assert_eq!(
            regions,
            [
                2 * FRAME..8 * FRAME,
                9 * FRAME..15 * FRAME,
                33 * FRAME..total
            ]
        );
        // Closer turns merge.
        let regions = speech_regions(&frames("..##..##......"), &settings, 14 * FRAME, usize::MAX);
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0], 0..10 * FRAME);
        // A long turn is split at its quietest frame within the limit.
        let mut long = vec![0.9f32; 100];
        long[70] = 0.4;
        let regions = speech_regions(&long, &settings, 100 * FRAME, 80 * FRAME);
        assert_eq!(regions, [0..70 * FRAME, 70 * FRAME..100 * FRAME]);
        assert!(speech_regions(&frames("......"), &settings, 6 * FRAME, usize::MAX).is_empty());
    }
}
