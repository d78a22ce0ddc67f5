//! Silero VAD: the probability that a 32 ms frame of 16 kHz audio holds speech, from the
//! ONNX graph the `silero-vad` wheel ships, run by the same ONNX Runtime as Piper.
//!
//! The graph is recurrent: each run takes 512 new samples behind the 64 samples before
//! them, and a state (2 × 1 × 128) the previous run returned. [`SileroVad`] is the loaded
//! graph, shared; a [`VadStream`] is one audio stream's context and state.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::value::Tensor;
use voxgate_engine::EngineError;

use crate::model::{ORT_LIBRARY_FILE, open_verified_against, ort_environment};

/// `sha256  file` for the VAD directory, as `scripts/fetch-models` verifies it.
pub const VAD_MANIFEST: &str = include_str!("../assets/silero-vad.sha256");

/// The graph, from the `silero-vad` 6.2.3 wheel.
pub const VAD_MODEL_FILE: &str = "silero_vad.onnx";

/// The rate the detector listens at.
pub const VAD_RATE: u32 = 16_000;

/// New samples per run (32 ms).
pub const VAD_FRAME: usize = 512;

/// Samples of the previous frame each run sees again.
const CONTEXT: usize = 64;

/// State values per stream.
const STATE: usize = 2 * 128;

fn unavailable(message: String) -> EngineError {
    EngineError::Unavailable(format!("silero-vad: {message}"))
}

/// The loaded graph. Runs take turns on its session (one run is well under a millisecond).
#[derive(Debug, Clone)]
pub struct SileroVad {
    session: Arc<Mutex<Session>>,
}

impl SileroVad {
    /// Verifies the graph in `vad_dir` against [`VAD_MANIFEST`] and ONNX Runtime in
    /// `ort_dir` (Piper's directory) against Piper's manifest, then loads them. Blocking.
    pub fn load(vad_dir: &Path, ort_dir: &Path) -> Result<Self, EngineError> {
        let (_, model) = open_verified_against(VAD_MANIFEST, vad_dir, VAD_MODEL_FILE, true)
            .map_err(|e| unavailable(e.to_string()))?;
        let (library, _) = open_verified_against(crate::MANIFEST, ort_dir, ORT_LIBRARY_FILE, false)
            .map_err(|e| unavailable(e.to_string()))?;
        let env = ort_environment(&library, &ort_dir.join(ORT_LIBRARY_FILE))?;
        let load = |e: ort::Error<_>| unavailable(format!("ONNX Runtime cannot load it: {e}"));
        let session = Session::builder(&env)
            .map_err(|e| unavailable(format!("ONNX Runtime: {e}")))?
            .with_intra_threads(1)
            .map_err(load)?
            .with_inter_threads(1)
            .map_err(load)?
            .with_intra_op_spinning(false)
            .map_err(load)?
            .commit_from_memory(&model)
            .map_err(|e| unavailable(format!("ONNX Runtime cannot load it: {e}")))?;
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
        })
    }

    /// A fresh stream: silence before it, an empty state.
    pub fn stream(&self) -> VadStream {
        VadStream {
            vad: self.clone(),
            input: vec![0.0; CONTEXT + VAD_FRAME],
            state: vec![0.0; STATE],
        }
    }

    /// The speech probability of every whole frame of `samples` (16 kHz, in [-1, 1]); a
    /// last partial frame is padded with silence.
    pub fn probabilities(&self, samples: &[f32]) -> Result<Vec<f32>, EngineError> {
        let mut stream = self.stream();
        samples
            .chunks(VAD_FRAME)
            .map(|frame| stream.push(frame))
            .collect()
    }
}

/// One stream's place in the audio.
#[derive(Debug)]
pub struct VadStream {
    vad: SileroVad,
    /// The context (last 64 samples) followed by the frame being judged.
    input: Vec<f32>,
    state: Vec<f32>,
}

impl VadStream {
    /// The speech probability of the next frame: [`VAD_FRAME`] samples, or fewer for the
    /// last frame of a stream (padded with silence, which then stands as the context of
    /// any frame after it: buffer live audio into whole frames).
    pub fn push(&mut self, frame: &[f32]) -> Result<f32, EngineError> {
        let internal = |e: ort::Error| EngineError::Internal(format!("silero-vad: {e}"));
        if frame.len() > VAD_FRAME {
            return Err(EngineError::Internal(format!(
                "silero-vad: a frame of {} samples (at most {VAD_FRAME})",
                frame.len()
            )));
        }
        let n = frame.len();
        self.input[CONTEXT..CONTEXT + n].copy_from_slice(&frame[..n]);
        self.input[CONTEXT + n..].fill(0.0);
        let inputs = vec![
            (
                "input",
                Tensor::from_array(([1, CONTEXT + VAD_FRAME], self.input.clone()))
                    .map_err(internal)?
                    .upcast(),
            ),
            (
                "state",
                Tensor::from_array(([2, 1, 128], self.state.clone()))
                    .map_err(internal)?
                    .upcast(),
            ),
            (
                "sr",
                Tensor::from_array(([1], vec![i64::from(VAD_RATE)]))
                    .map_err(internal)?
                    .upcast(),
            ),
        ];
        let probability = {
            let mut session = self.vad.session.lock().unwrap_or_else(|e| e.into_inner());
            let outputs = session.run(inputs).map_err(internal)?;
            let (_, p) = outputs[0].try_extract_tensor::<f32>().map_err(internal)?;
            let (_, state) = outputs[1].try_extract_tensor::<f32>().map_err(internal)?;
            if state.len() == STATE {
                self.state.copy_from_slice(state);
            }
            p.first().copied().unwrap_or(0.0)
        };
        // The context for the next frame: this frame's last 64 samples.
        self.input.copy_within(VAD_FRAME.., 0);
        Ok(probability)
    }
}
