//! Sandboxed synthesizer binaries (espeak-ng, festival's `text2wave`, or the operator's own)
//! as an engine: one sandboxed run per sentence ([`voxgate_sandbox`]), text on stdin, WAV on
//! stdout, each run started only when the stream is polled for it. A run that is killed (time,
//! CPU, memory, output) is a security event.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use voxgate_engine::{
    BlockingPool, EngineError, PcmChunk, PcmStream, SynthesisRequest, Synthesizer, VoiceInfo,
    sentences,
};
use voxgate_sandbox::{LandlockStatus, Limits, SandboxError, SandboxSpec, ValidatedBinary};

use crate::config::{Program, SubprocessConfig};

/// What the kernel enforces of the sandbox's Landlock policy, and what the operator requires
/// (`sandbox.require_landlock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landlock {
    pub status: LandlockStatus,
    pub required: bool,
}

impl Landlock {
    /// Probes the kernel; a shortfall is a security event (said once, at start-up).
    pub fn probe(required: bool) -> Self {
        let landlock = Self {
            status: voxgate_sandbox::kernel_landlock(),
            required,
        };
        landlock.report();
        landlock
    }

    fn report(&self) {
        match self.status {
            LandlockStatus::FullyEnforced => {
                tracing::info!(
                    landlock = "full",
                    "the kernel enforces the sandbox's Landlock policy"
                )
            }
            LandlockStatus::PartiallyEnforced => tracing::warn!(
                target: "voxgate::security",
                event = "landlock_partial",
                required = self.required,
                "the kernel enforces the sandbox's Landlock policy only in part (an older Landlock ABI): the filesystem view holds, newer restrictions such as network rules or scopes may not"
            ),
            LandlockStatus::NotEnforced => tracing::warn!(
                target: "voxgate::security",
                event = "landlock_unavailable",
                required = self.required,
                "the kernel does not enforce Landlock: sandboxed engines have no filesystem view"
            ),
        }
    }

    /// Whether sandboxed engines may start: always, unless Landlock is required and not all of
    /// it is enforced.
    pub fn allows_start(&self) -> Result<(), String> {
        if self.required && self.status != LandlockStatus::FullyEnforced {
            return Err(format!(
                "sandbox.require_landlock is set but the kernel's Landlock is {:?}",
                self.status
            ));
        }
        Ok(())
    }
}

/// espeak-ng's normal rate, in words per minute (speed 1.0).
const ESPEAK_WPM: f32 = 175.0;

#[derive(Debug)]
pub struct SubprocessEngine {
    id: String,
    template: Arc<Template>,
    voices: Vec<VoiceInfo>,
    pool: BlockingPool,
}

/// Everything but the per-request arguments, fixed at start-up.
#[derive(Debug)]
struct Template {
    engine: String,
    program: Program,
    binary: ValidatedBinary,
    custom_args: Vec<OsString>,
    read_paths: Vec<PathBuf>,
    limits: Limits,
    timeout: std::time::Duration,
    max_output: usize,
    temp_root: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl SubprocessEngine {
    /// Validates the binary (absolute, a regular file, not writable by group or others) and
    /// prepares the private temp root (`<work_dir>/sandbox`, mode 0700).
    pub fn new(
        id: &str,
        config: &SubprocessConfig,
        work_dir: &Path,
        landlock: Landlock,
    ) -> Result<Self, String> {
        landlock.allows_start()?;
        let path = match config.program {
            Program::EspeakNg => PathBuf::from("/usr/bin/espeak-ng"),
            Program::Festival => PathBuf::from("/usr/bin/text2wave"),
            Program::Custom => config.binary.clone(),
        };
        let binary = voxgate_sandbox::validate_binary(&path).map_err(|e| e.to_string())?;
        let run_as = crate::config::run_as(&config.run_as)?;
        let temp_root = sandbox_root(work_dir, run_as)?;
        let mut read_paths = voxgate_sandbox::read_paths_for(&binary);
        read_paths.extend(config.read_paths.iter().cloned());
        let language: fn(&str) -> String = match config.program {
            Program::EspeakNg => |v: &str| v.to_owned(),
            Program::Festival | Program::Custom => |_: &str| "en-US".to_owned(),
        };
        Ok(Self {
            id: id.to_owned(),
            voices: config
                .natives()
                .into_iter()
                .map(|v| VoiceInfo {
                    name: format!("{v} ({id})"),
                    language: language(&v),
                    id: v,
                })
                .collect(),
            template: Arc::new(Template {
                engine: id.to_owned(),
                program: config.program,
                binary,
                custom_args: config.args.iter().map(OsString::from).collect(),
                read_paths,
                limits: Limits {
                    cpu_secs: config.cpu_secs,
                    address_space: config.memory_bytes,
                    ..Limits::default()
                },
                timeout: config.timeout(),
                max_output: config.max_output_bytes,
                temp_root,
                run_as,
            }),
            pool: BlockingPool::new(config.parallel),
        })
    }
}

/// Where per-run work directories go: `<work_dir>/sandbox` (0700; `work_dir` is this
/// process's own, see `data::spool::WorkDir`), or, when runs switch
/// to another uid that cannot traverse the data directory, the system temp directory (each
/// work directory is still private to the run's uid).
fn sandbox_root(work_dir: &Path, run_as: Option<(u32, u32)>) -> Result<PathBuf, String> {
    if run_as.is_some() {
        return Ok(std::env::temp_dir());
    }
    let root = work_dir.join("sandbox");
    crate::util::private_dir(&root)
        .map_err(|e| format!("cannot prepare {}: {e}", root.display()))?;
    Ok(root)
}

impl Template {
    /// The fixed argument vector for one run: the preset's, with the voice (a name from the
    /// engine's closed list) and the rate (a number we format) as the only variables.
    fn spec(&self, voice: &str, speed: f32) -> SandboxSpec {
        let mut spec = SandboxSpec::new(self.binary.clone());
        spec.args = match self.program {
            Program::EspeakNg => {
                let wpm = (ESPEAK_WPM * speed).round().clamp(80.0, 450.0) as u32;
                let args = [
                    "--stdin",
                    "--stdout",
                    "-b",
                    "1",
                    "-s",
                    &wpm.to_string(),
                    "-v",
                    voice,
                ];
                args.iter().map(OsString::from).collect()
            }
            Program::Festival => ["-otype", "riff", "-o", "-", "-"]
                .iter()
                .map(OsString::from)
                .collect(),
            Program::Custom => self.custom_args.clone(),
        };
        spec.env = vec![("LANG".into(), "C.UTF-8".into())];
        spec.read_paths = self.read_paths.clone();
        spec.limits = self.limits;
        spec.timeout = self.timeout;
        spec.max_output = self.max_output;
        spec.temp_root = self.temp_root.clone();
        spec.run_as = self.run_as;
        spec
    }

    fn run(&self, voice: &str, speed: f32, text: &str) -> Result<PcmChunk, EngineError> {
        let spec = self.spec(voice, speed);
        // Each sentence ends with a newline: espeak-ng and festival read to the end of input.
        let input = format!("{text}\n");
        match voxgate_sandbox::run(&spec, input.as_bytes()) {
            Ok(output) => parse_wav(&output.stdout).ok_or_else(|| {
                EngineError::Internal(format!("{}: output is not 16-bit PCM WAV", self.engine))
            }),
            Err(err) => Err(failure(&self.engine, err)),
        }
    }
}

/// A run of the engine's process that failed: an upstream failure (it falls back).
fn crashed(what: String) -> EngineError {
    EngineError::Upstream(Box::new(std::io::Error::other(what)))
}

/// Maps a sandbox failure; a kill (time, CPU, memory, output, file size) is a security event.
fn failure(engine: &str, err: SandboxError) -> EngineError {
    if let Some(reason) = err.kill_reason() {
        tracing::warn!(target: "voxgate::security", event = "sandbox_kill", engine, reason = ?reason, "a sandboxed engine run was killed");
        return match reason {
            voxgate_sandbox::KillReason::Timeout => EngineError::Timeout,
            // The engine's process failed this run (a crash, a limit): like a provider that
            // failed, the next engine of the chain may serve it (502 if none does).
            _ => crashed(format!("{engine}: run killed ({reason:?})")),
        };
    }
    match err {
        SandboxError::Failed { code, .. } => {
            crashed(format!("{engine}: exited with status {code}"))
        }
        SandboxError::InvalidBinary { .. } | SandboxError::LandlockUnavailable => {
            EngineError::Unavailable(format!("{engine}: {err}"))
        }
        other => EngineError::Internal(format!("{engine}: {other}")),
    }
}

/// Piper's phonemizer: espeak-ng run in the sandbox with Piper's fixed arguments
/// ([`voxgate_piper::espeak_args`]), the clause on stdin, IPA on stdout. espeak-ng (GPL-3.0)
/// stays a separate program, never linked. A missing or unsafe binary makes Piper
/// unavailable (its fallback serves), not the gateway.
#[derive(Debug)]
pub struct SandboxedEspeak {
    binary: Result<ValidatedBinary, String>,
    temp_root: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// Limits for one phonemizer run (a clause of text).
const PHONEMIZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const PHONEMIZE_MAX_OUTPUT: usize = 1 << 20;

impl SandboxedEspeak {
    pub fn new(work_dir: &Path, landlock: Landlock) -> Self {
        let run_as = crate::config::run_as("auto").unwrap_or(None);
        let mut temp_root = std::env::temp_dir();
        let binary = landlock
            .allows_start()
            .and_then(|()| {
                voxgate_sandbox::validate_binary(Path::new(voxgate_piper::ESPEAK_NG))
                    .map_err(|e| e.to_string())
            })
            .and_then(|b| {
                temp_root = sandbox_root(work_dir, run_as)?;
                Ok(b)
            });
        if let Err(e) = &binary {
            tracing::warn!(error = %e, "espeak-ng is not usable: the Piper engine will be unavailable");
        }
        Self {
            binary,
            temp_root,
            run_as,
        }
    }
}

impl voxgate_piper::Phonemizer for SandboxedEspeak {
    fn phonemize(&self, input: &str, voice: &str) -> Result<String, EngineError> {
        let binary = self
            .binary
            .as_ref()
            .map_err(|e| EngineError::Unavailable(format!("espeak-ng: {e}")))?;
        let mut spec = SandboxSpec::new(binary.clone());
        spec.args = voxgate_piper::espeak_args(voice)?
            .iter()
            .map(OsString::from)
            .collect();
        spec.env = vec![("LANG".into(), "C.UTF-8".into())];
        spec.limits = Limits {
            cpu_secs: 10,
            address_space: 1 << 30,
            ..Limits::default()
        };
        spec.timeout = PHONEMIZE_TIMEOUT;
        spec.max_output = PHONEMIZE_MAX_OUTPUT;
        spec.temp_root = self.temp_root.clone();
        spec.run_as = self.run_as;
        match voxgate_sandbox::run(&spec, input.as_bytes()) {
            Ok(output) => String::from_utf8(output.stdout)
                .map_err(|_| EngineError::Internal("espeak-ng wrote invalid UTF-8".into())),
            Err(err) => Err(failure("piper-phonemizer", err)),
        }
    }
}

/// Reads 16-bit PCM WAV as written to a pipe: the RIFF and `data` sizes may be placeholders
/// (espeak-ng writes 0x7FFFF024, text2wave leaves 36/0), so the data runs to the end of the
/// bytes when the declared size does not fit. The first channel is kept.
pub fn parse_wav(bytes: &[u8]) -> Option<PcmChunk> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut format: Option<(u16, u32)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " {
            let fmt = bytes.get(body..body + 16)?;
            let tag = u16::from_le_bytes([fmt[0], fmt[1]]);
            let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
            let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
            let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
            if tag != 1 || bits != 16 || channels == 0 || !(8_000..=48_000).contains(&rate) {
                return None;
            }
            format = Some((channels, rate));
        } else if id == b"data" {
            let (channels, rate) = format?;
            let end = match body.checked_add(size) {
                Some(end) if end <= bytes.len() && size > 0 => end,
                _ => bytes.len(),
            };
            let frame = 2 * usize::from(channels);
            let samples = bytes[body..end]
                .chunks_exact(frame)
                .map(|f| i16::from_le_bytes([f[0], f[1]]))
                .collect();
            return Some(PcmChunk {
                sample_rate: rate,
                samples,
            });
        }
        at = body.checked_add(size + (size & 1))?;
    }
    None
}

impl Synthesizer for SubprocessEngine {
    fn id(&self) -> &str {
        &self.id
    }

    fn voices(&self) -> &[VoiceInfo] {
        &self.voices
    }

    fn synthesize(&self, request: SynthesisRequest) -> Result<PcmStream, EngineError> {
        if !self.voices.iter().any(|v| v.id == request.voice) {
            return Err(EngineError::UnknownVoice);
        }
        let template = Arc::clone(&self.template);
        let pool = self.pool.clone();
        let (voice, speed) = (request.voice, request.speed);
        let pieces = sentences::split(&request.text);
        let stream = futures::stream::iter(pieces).then(move |sentence| {
            let template = Arc::clone(&template);
            let pool = pool.clone();
            let voice = voice.clone();
            async move {
                pool.run(move || template.run(&voice, speed, &sentence))
                    .await?
            }
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, samples: &[i16], data_size: u32) -> Vec<u8> {
        let mut out = b"RIFF\x24\xf0\xff\x7fWAVEfmt ".to_vec();
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        out.extend_from_slice(&(2 * channels).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_size.to_le_bytes());
        for s in samples {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    fn espeak(dir: &Path, timeout_ms: u64) -> SubprocessEngine {
        let config: SubprocessConfig = serde_json::from_value(
            serde_json::json!({"program": "espeak-ng", "timeout_ms": timeout_ms}),
        )
        .expect("config");
        SubprocessEngine::new("espeak", &config, dir, Landlock::probe(false))
            .expect("espeak-ng is installed (scripts/setup)")
    }

    #[test]
    fn espeak_speaks_hostile_text_as_text() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = espeak(dir.path(), 10_000);
        let hostile = "; rm -rf / $(id) `id` --output=/etc/voxgate-x \0 done.";
        let chunk = engine.template.run("en-us", 1.0, hostile).expect("speaks");
        assert_eq!(chunk.sample_rate, 22_050);
        assert!(
            chunk.samples.len() > 22_050,
            "{} samples",
            chunk.samples.len()
        );
        assert!(!Path::new("/etc/voxgate-x").exists());
        let fast = engine
            .template
            .run("en-us", 2.0, "A short sentence to time.")
            .expect("fast");
        let slow = engine
            .template
            .run("en-us", 1.0, "A short sentence to time.")
            .expect("slow");
        assert!(
            fast.samples.len() * 10 < slow.samples.len() * 7,
            "speed 2 is clearly faster: {} vs {}",
            fast.samples.len(),
            slow.samples.len()
        );
    }

    /// Captures JSON log lines written while `f` runs on this thread.
    fn capture(f: impl FnOnce()) -> String {
        crate::observe::json_lines::tests::raw(f)
    }

    #[test]
    fn a_killed_run_is_a_timeout_and_a_security_event() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = espeak(dir.path(), 1);
        let logs = capture(|| {
            let err = engine
                .template
                .run("en-us", 1.0, &"A long sentence. ".repeat(200))
                .unwrap_err();
            assert!(matches!(err, EngineError::Timeout), "{err:?}");
        });
        let line = logs
            .lines()
            .find(|l| l.contains("sandbox_kill"))
            .unwrap_or_else(|| panic!("no security event in {logs}"));
        assert!(
            line.contains("voxgate::security") && line.contains("Timeout"),
            "{line}"
        );
        assert!(!line.contains("A long sentence"), "no text in logs: {line}");
    }

    /// A run that crashes or fails is the engine failing, not a bug of the gateway: the
    /// chain falls back to its next engine (and a 502 follows if none serves), never a 500.
    #[test]
    fn a_failed_run_falls_back() {
        let err = failure(
            "x",
            SandboxError::Failed {
                code: 1,
                stderr_tail: Vec::new(),
            },
        );
        assert_eq!(err.class(), voxgate_engine::ErrorClass::Upstream);
        assert!(crate::error::Error::from(err).falls_back());
    }

    /// As root, a sandboxed binary runs as nobody (65534): a custom binary reports its uid as
    /// the one sample of a WAV it writes.
    #[test]
    fn binaries_run_unprivileged_when_voxgate_is_root() {
        let dir = tempfile::tempdir().expect("dir");
        let script = "import os,struct,sys\nsys.stdin.read()\nu=os.getuid()%30000\nd=struct.pack('<h',u)\nsys.stdout.buffer.write(b'RIFF'+struct.pack('<I',36+len(d))+b'WAVEfmt '+struct.pack('<IHHIIHH',16,1,1,16000,32000,2,16)+b'data'+struct.pack('<I',len(d))+d)";
        let config: SubprocessConfig = serde_json::from_value(serde_json::json!({
            "program": "custom",
            "binary": "/usr/bin/python3",
            "args": ["-c", script],
        }))
        .expect("config");
        let engine = SubprocessEngine::new("who", &config, dir.path(), Landlock::probe(false))
            .expect("engine");
        let chunk = engine.template.run("default", 1.0, "Hello.").expect("runs");
        // SAFETY: geteuid has no preconditions.
        let expected = if unsafe { libc::geteuid() } == 0 {
            65_534 % 30_000
        } else {
            // SAFETY: as above.
            (unsafe { libc::geteuid() } % 30_000) as i16 as u32
        };
        assert_eq!(chunk.samples, [expected as i16]);
    }

    #[test]
    fn run_as_settings_are_checked() {
        assert_eq!(crate::config::run_as("keep"), Ok(None));
        assert_eq!(crate::config::run_as("1000:1000"), Ok(Some((1000, 1000))));
        assert!(crate::config::run_as("0:0").is_err());
        assert!(crate::config::run_as("nobody").is_err());
    }

    #[test]
    fn the_binary_must_be_safe_to_run() {
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("synth");
        std::fs::write(&script, "#!/bin/sh\ncat\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let mut config: SubprocessConfig =
            serde_json::from_value(serde_json::json!({"program": "custom"})).expect("config");
        config.binary = script;
        let err = SubprocessEngine::new("custom", &config, dir.path(), Landlock::probe(false))
            .unwrap_err();
        assert!(err.contains("writable"), "{err}");
        config.binary = PathBuf::from("relative/synth");
        assert!(
            SubprocessEngine::new("custom", &config, dir.path(), Landlock::probe(false)).is_err()
        );
    }

    #[test]
    fn piped_wav_with_placeholder_sizes_reads_to_the_end() {
        for size in [0x7fff_f000, 0, 6] {
            let chunk = parse_wav(&wav(22_050, 1, &[1, 2, 3], size)).expect("parses");
            assert_eq!(chunk.sample_rate, 22_050);
            assert_eq!(chunk.samples, [1, 2, 3], "size {size:#x}");
        }
        let stereo = parse_wav(&wav(16_000, 2, &[1, 9, 2, 9], 8)).expect("stereo");
        assert_eq!(stereo.samples, [1, 2], "first channel");
        assert!(parse_wav(b"RIFF\0\0\0\0WAVE").is_none());
        assert!(parse_wav(b"not a wav at all").is_none());
        let mut float = wav(16_000, 1, &[1], 2);
        float[20] = 3;
        assert!(parse_wav(&float).is_none(), "IEEE float is refused");
    }

    /// A kernel that enforces Landlock only in part (or not at all) lets sandboxed engines
    /// start unless the operator requires all of it.
    #[test]
    fn require_landlock_refuses_a_partial_kernel() {
        for (status, required, starts) in [
            (LandlockStatus::FullyEnforced, true, true),
            (LandlockStatus::PartiallyEnforced, true, false),
            (LandlockStatus::NotEnforced, true, false),
            (LandlockStatus::PartiallyEnforced, false, true),
            (LandlockStatus::NotEnforced, false, true),
        ] {
            let landlock = Landlock { status, required };
            assert_eq!(landlock.allows_start().is_ok(), starts, "{landlock:?}");
        }
        let refused = Landlock {
            status: LandlockStatus::PartiallyEnforced,
            required: true,
        };
        let phonemizer = SandboxedEspeak::new(std::path::Path::new("/tmp"), refused);
        let err =
            voxgate_piper::Phonemizer::phonemize(&phonemizer, "a<break/>", "en-us").unwrap_err();
        assert!(err.to_string().contains("require_landlock"), "{err}");
    }
}
