//! Streaming sample-rate conversion (rubato's FFT resampler) with its delay removed, so
//! chunked input gives the same samples as one-shot input, aligned and of the right length.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

/// Input frames per resampler call.
const CHUNK: usize = 1024;

/// Converts a mono stream from one rate to another, chunk by chunk.
pub struct Resampler {
    inner: Option<Fft<f32>>,
    from: u32,
    to: u32,
    pending: Vec<f32>,
    out: Vec<f32>,
    /// Output frames still to drop (the resampler's delay).
    skip: usize,
    consumed_in: u64,
    produced_out: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// The resampler could not be built or run; a bug, not a client error.
#[derive(Debug, thiserror::Error)]
#[error("resampling failed: {0}")]
pub struct ResampleError(String);

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz (a pass-through when they are equal).
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let inner = if from == to {
            None
        } else {
            let fft = Fft::<f32>::new(from as usize, to as usize, CHUNK, 1, FixedSync::Input)
                .map_err(|e| ResampleError(e.to_string()))?;
            Some(fft)
        };
        let skip = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self {
            inner,
            from,
            to,
            pending: Vec::new(),
            out: Vec::new(),
            skip,
            consumed_in: 0,
            produced_out: 0,
        })
    }

    /// Feeds samples; returns whatever output is ready.
    pub fn push(&mut self, samples: &[i16]) -> Result<Vec<i16>, ResampleError> {
        self.consumed_in += samples.len() as u64;
        if self.inner.is_none() {
            self.produced_out += samples.len() as u64;
            return Ok(samples.to_vec());
        }
        self.pending
            .extend(samples.iter().map(|&s| f32::from(s) / 32768.0));
        while self.pending.len() >= CHUNK {
            self.run_chunk(CHUNK)?;
        }
        Ok(self.take(None))
    }

    /// Flushes the tail; the total output is then `input × to / from`, rounded.
    pub fn finish(&mut self) -> Result<Vec<i16>, ResampleError> {
        if self.inner.is_none() {
            return Ok(Vec::new());
        }
        let expected = (self.consumed_in * u64::from(self.to)).div_ceil(u64::from(self.from));
        // Feed silence until everything the real input contributed has come out.
        let mut guard = 0;
        while self.produced_out + (self.out.len() as u64) < expected && guard < 64 {
            let real = self.pending.len();
            self.pending.resize(CHUNK, 0.0);
            self.run_chunk(CHUNK)?;
            if real == 0 {
                guard += 1;
            }
        }
        self.pending.clear();
        let left = expected.saturating_sub(self.produced_out);
        Ok(self.take(Some(usize::try_from(left).unwrap_or(usize::MAX))))
    }

    fn run_chunk(&mut self, frames: usize) -> Result<(), ResampleError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let mut output = vec![0.0f32; inner.output_frames_max()];
        let input = InterleavedSlice::new(&self.pending[..frames], 1, frames)
            .map_err(|e| ResampleError(e.to_string()))?;
        let out_frames = output.len();
        let mut output_adapter = InterleavedSlice::new_mut(&mut output, 1, out_frames)
            .map_err(|e| ResampleError(e.to_string()))?;
        let (used, written) = inner
            .process_into_buffer(&input, &mut output_adapter, None)
            .map_err(|e| ResampleError(e.to_string()))?;
        self.pending.drain(..used);
        let drop = self.skip.min(written);
        self.skip -= drop;
        self.out.extend_from_slice(&output[drop..written]);
        Ok(())
    }

    fn take(&mut self, limit: Option<usize>) -> Vec<i16> {
        let n = limit.map_or(self.out.len(), |l| l.min(self.out.len()));
        let taken: Vec<i16> = self.out.drain(..n).map(to_i16).collect();
        if limit.is_some() {
            self.out.clear();
        }
        self.produced_out += taken.len() as u64;
        taken
    }
}

fn to_i16(sample: f32) -> i16 {
    // Saturating float-to-int conversion: `as` clamps out-of-range values.
    (sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, secs: f32) -> Vec<i16> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| {
                ((i as f32 / rate as f32 * hz * std::f32::consts::TAU).sin() * 10_000.0) as i16
            })
            .collect()
    }

    /// Estimates the frequency of a signal from its zero crossings.
    fn frequency(samples: &[i16], rate: u32) -> f32 {
        let crossings = samples
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        crossings as f32 / 2.0 / (samples.len() as f32 / rate as f32)
    }

    #[test]
    fn chunked_16k_to_24k_keeps_length_and_pitch() {
        let input = sine(16_000, 440.0, 1.3);
        let mut r = Resampler::new(16_000, 24_000).expect("new");
        let mut out = Vec::new();
        for chunk in input.chunks(777) {
            out.extend(r.push(chunk).expect("push"));
        }
        out.extend(r.finish().expect("finish"));
        assert_eq!(out.len(), input.len() * 3 / 2);
        let f = frequency(&out[2000..out.len() - 2000], 24_000);
        assert!((f - 440.0).abs() < 5.0, "{f} Hz");
        // The delay is removed: the sine starts at the start.
        let head_energy: i64 = out[..200].iter().map(|&s| i64::from(s).abs()).sum();
        assert!(head_energy > 200 * 2000, "leading silence left in");
    }

    #[test]
    fn equal_rates_pass_through() {
        let mut r = Resampler::new(24_000, 24_000).expect("new");
        assert_eq!(r.push(&[1, 2, 3]).expect("push"), [1, 2, 3]);
        assert!(r.finish().expect("finish").is_empty());
    }

    #[test]
    fn empty_input_gives_empty_output() {
        let mut r = Resampler::new(16_000, 24_000).expect("new");
        assert!(r.finish().expect("finish").is_empty());
    }
}
