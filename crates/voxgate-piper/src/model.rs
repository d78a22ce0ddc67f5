//! The voice files: checksum-first loading, the voice config and the ONNX Runtime session.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use voxgate_engine::EngineError;

use crate::phonemes::PhonemeIdMap;

/// `sha256  file` lines for the three files in the model directory, as `scripts/fetch-models`
/// verifies them.
pub const MANIFEST: &str = include_str!("../assets/piper-joe.sha256");

/// The voice's ONNX graph.
pub const MODEL_FILE: &str = "en_US-joe-medium.onnx";
/// The voice's Piper config (sample rate, eSpeak voice, scales, phoneme ids).
pub const CONFIG_FILE: &str = "en_US-joe-medium.onnx.json";
/// ONNX Runtime, from the `onnxruntime` 1.32.0 wheel.
pub const ORT_LIBRARY_FILE: &str = "libonnxruntime.so.1.32.0";

fn unavailable(message: String) -> EngineError {
    EngineError::Unavailable(format!("piper: {message}"))
}

/// The expected SHA-256 of `file` from `manifest` (`sha256  file` lines).
fn expected_digest(manifest: &'static str, file: &str) -> Result<&'static str, EngineError> {
    manifest
        .lines()
        .filter_map(|line| line.split_once("  "))
        .find(|(digest, name)| *name == file && digest.len() == 64)
        .map(|(digest, _)| digest)
        .ok_or_else(|| EngineError::Internal(format!("the manifest lacks {file}")))
}

/// Opens `dir/file` and hashes it through the open handle against [`MANIFEST`]; returns the
/// handle (whose contents are the verified ones) and the bytes when `keep` is set.
fn open_verified(dir: &Path, file: &str, keep: bool) -> Result<(File, Vec<u8>), EngineError> {
    open_verified_against(MANIFEST, dir, file, keep)
}

/// [`open_verified`] against another manifest.
pub(crate) fn open_verified_against(
    manifest: &'static str,
    dir: &Path,
    file: &str,
    keep: bool,
) -> Result<(File, Vec<u8>), EngineError> {
    let expected = expected_digest(manifest, file)?;
    let path = dir.join(file);
    let mut handle = File::open(&path).map_err(|e| {
        unavailable(format!(
            "cannot open {} ({e}); run scripts/fetch-models",
            path.display()
        ))
    })?;
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = handle
            .read(&mut buf)
            .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if keep {
            kept.extend_from_slice(&buf[..n]);
        }
    }
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != expected {
        return Err(unavailable(format!(
            "{} fails its checksum: expected {expected}, found {actual}",
            path.display()
        )));
    }
    Ok((handle, kept))
}

/// Checks every file of the model directory against [`MANIFEST`] without loading anything.
pub fn verify_model_dir(dir: &Path) -> Result<(), EngineError> {
    for file in [MODEL_FILE, CONFIG_FILE, ORT_LIBRARY_FILE] {
        open_verified(dir, file, false)?;
    }
    Ok(())
}

/// What the engine needs from the voice's `.onnx.json`.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    pub sample_rate: u32,
    /// The eSpeak voice the phonemes come from, e.g. `en-us`.
    pub espeak_voice: String,
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
    pub ids: PhonemeIdMap,
}

#[derive(Deserialize)]
struct RawConfig {
    audio: RawAudio,
    espeak: RawEspeak,
    inference: RawInference,
    phoneme_type: Option<String>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(Deserialize)]
struct RawAudio {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct RawEspeak {
    voice: String,
}

#[derive(Deserialize)]
struct RawInference {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl VoiceConfig {
    /// Parses a Piper voice config; only eSpeak-phonemized voices are supported.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EngineError> {
        let raw: RawConfig = serde_json::from_slice(bytes)
            .map_err(|e| unavailable(format!("bad voice config: {e}")))?;
        if raw.phoneme_type.as_deref().is_some_and(|t| t != "espeak") {
            return Err(unavailable(
                "only eSpeak phoneme voices are supported".into(),
            ));
        }
        let mut map = HashMap::new();
        for (key, ids) in raw.phoneme_id_map {
            let mut chars = key.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    map.insert(c, ids);
                }
                _ => tracing::warn!(key, "piper: phoneme_id_map key is not one codepoint"),
            }
        }
        Ok(Self {
            sample_rate: raw.audio.sample_rate,
            espeak_voice: raw.espeak.voice,
            noise_scale: raw.inference.noise_scale,
            length_scale: raw.inference.length_scale,
            noise_w: raw.inference.noise_w,
            ids: PhonemeIdMap::new(map)?,
        })
    }
}

/// ONNX Runtime's library and environment: process-wide, loaded once and never unloaded
/// (`ort::init_from` can load one library per process). A failure is remembered.
static ORT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime from `library`, an open handle whose contents were just verified.
pub(crate) fn ort_environment(
    library: &File,
    path: &Path,
) -> Result<ort::environment::Environment, EngineError> {
    ORT.get_or_init(|| {
        // Load through the verified handle (Linux), so a file swapped in after hashing is never
        // the one loaded.
        use std::os::fd::AsRawFd;
        ort::init_from(format!("/proc/self/fd/{}", library.as_raw_fd()))
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
            .with_name("voxgate-piper")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .clone()
    .map_err(unavailable)
}

/// A loaded voice: its config and its ONNX Runtime session.
#[derive(Debug)]
pub(crate) struct Voice {
    pub config: VoiceConfig,
    /// `Session::run` takes `&mut self` in ort 2.0.0-rc.15, so runs of one voice take turns;
    /// each run already uses the session's intra-op threads.
    session: Mutex<Session>,
    has_sid: bool,
}

impl Voice {
    /// Verifies all three files, then (and only then) loads them. Blocking.
    pub fn load(dir: &Path, intra_threads: usize) -> Result<Self, EngineError> {
        let (_, model) = open_verified(dir, MODEL_FILE, true)?;
        let (_, config) = open_verified(dir, CONFIG_FILE, true)?;
        let (library, _) = open_verified(dir, ORT_LIBRARY_FILE, false)?;
        let config = VoiceConfig::from_json(&config)?;
        let env = ort_environment(&library, &dir.join(ORT_LIBRARY_FILE))?;
        let load =
            |e: ort::Error<_>| unavailable(format!("ONNX Runtime cannot load the voice: {e}"));
        let session = Session::builder(&env)
            .map_err(|e| unavailable(format!("ONNX Runtime: {e}")))?
            .with_intra_threads(intra_threads.max(1))
            .map_err(load)?
            // Idle intra-op threads sleep instead of spinning: the cores are shared with other
            // requests and engines. On 2 idle cores spinning gains 8% (RTF 0.041 against
            // 0.045); on 2 busy ones it loses 30% (0.12 against 0.09).
            .with_intra_op_spinning(false)
            .map_err(load)?
            .with_inter_threads(1)
            .map_err(load)?
            .commit_from_memory(&model)
            .map_err(|e| unavailable(format!("ONNX Runtime cannot load the voice: {e}")))?;
        let has_sid = session.inputs().iter().any(|i| i.name() == "sid");
        Ok(Self {
            config,
            session: Mutex::new(session),
            has_sid,
        })
    }

    /// Runs the graph on one sentence's phoneme ids; `speed` divides `length_scale`.
    pub fn infer(&self, ids: Vec<i64>, speed: f32) -> Result<Vec<f32>, EngineError> {
        let internal = |e: ort::Error| EngineError::Internal(format!("piper inference: {e}"));
        let c = &self.config;
        let len = i64::try_from(ids.len()).map_err(|_| EngineError::Unsupported("too long"))?;
        let mut inputs = vec![
            (
                "input",
                Tensor::from_array(([1, ids.len()], ids))
                    .map_err(internal)?
                    .upcast(),
            ),
            (
                "input_lengths",
                Tensor::from_array(([1], vec![len]))
                    .map_err(internal)?
                    .upcast(),
            ),
            (
                "scales",
                Tensor::from_array(([3], vec![c.noise_scale, c.length_scale / speed, c.noise_w]))
                    .map_err(internal)?
                    .upcast(),
            ),
        ];
        if self.has_sid {
            inputs.push((
                "sid",
                Tensor::from_array(([1], vec![0i64]))
                    .map_err(internal)?
                    .upcast(),
            ));
        }
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(inputs).map_err(internal)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(internal)?;
        Ok(audio.to_vec())
    }
}

/// Piper's conversion to 16-bit: scale the sentence so its peak is full scale (a peak below
/// 0.01 is taken as 0.01, so near-silence stays quiet), then clamp.
pub(crate) fn to_pcm(audio: &[f32]) -> Vec<i16> {
    let peak = audio.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    let scale = 32767.0 / peak.max(0.01);
    audio
        .iter()
        .map(|s| (s * scale).clamp(-32767.0, 32767.0) as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_the_three_files() {
        for file in [MODEL_FILE, CONFIG_FILE, ORT_LIBRARY_FILE] {
            let digest = expected_digest(MANIFEST, file).unwrap();
            assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{file}");
        }
        assert_eq!(MANIFEST.lines().count(), 3);
    }

    #[test]
    fn garbage_files_fail_their_checksum_before_anything_parses_them() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Voice::load(tmp.path(), 1).unwrap_err();
        assert!(
            matches!(&err, EngineError::Unavailable(m) if m.contains(MODEL_FILE)),
            "{err}"
        );
        for file in [MODEL_FILE, CONFIG_FILE, ORT_LIBRARY_FILE] {
            std::fs::write(tmp.path().join(file), b"not a model").unwrap();
        }
        let err = Voice::load(tmp.path(), 1).unwrap_err();
        assert!(
            matches!(&err, EngineError::Unavailable(m) if m.contains("fails its checksum")),
            "{err}"
        );
    }

    #[test]
    fn pcm_is_peak_normalised_and_clamped() {
        assert_eq!(to_pcm(&[0.5, -0.25, 0.0]), [32767, -16383, 0]);
        // Near silence is not blown up to full scale.
        assert_eq!(to_pcm(&[0.001]), [3276]);
        assert_eq!(to_pcm(&[f32::NAN, 1.0]), [0, 32767]);
    }

    #[test]
    fn the_config_is_read() {
        let json = br#"{"audio":{"sample_rate":22050},"espeak":{"voice":"en-us"},
            "inference":{"noise_scale":0.667,"length_scale":1,"noise_w":0.8},
            "phoneme_type":"espeak","num_speakers":1,
            "phoneme_id_map":{"_":[0],"^":[1],"$":[2],"a":[14],"ab":[99]}}"#;
        let config = VoiceConfig::from_json(json).unwrap();
        assert_eq!(config.sample_rate, 22050);
        assert_eq!(config.espeak_voice, "en-us");
        assert_eq!(config.ids.ids("a").0, [1, 0, 14, 0, 2]);
        let other = br#"{"audio":{"sample_rate":1},"espeak":{"voice":"x"},"inference":
            {"noise_scale":0,"length_scale":1,"noise_w":0},"phoneme_type":"text","phoneme_id_map":{}}"#;
        assert!(matches!(
            VoiceConfig::from_json(other),
            Err(EngineError::Unavailable(_))
        ));
    }
}
