//! Settings of local engines that run outside the gateway's own code: synthesizer binaries in
//! the sandbox (`subprocess`) and the Piper neural voice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which binary a `subprocess` engine runs. The presets fix the argument vector; `custom`
/// takes the operator's absolute path and fixed arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Program {
    /// `/usr/bin/espeak-ng --stdin --stdout -b 1 -s <wpm> -v <voice>`.
    EspeakNg,
    /// `/usr/bin/text2wave -otype riff -o - -` (festival; one voice, `default`).
    Festival,
    /// `binary` with `args`: text on stdin, 16-bit PCM WAV on stdout (one voice, `default`).
    Custom,
}

/// The sandbox shared by every sandboxed engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Refuse to start sandboxed engines unless the kernel enforces all of Landlock.
    pub require_landlock: bool,
}

/// A synthesizer binary run in the sandbox, one sentence per run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubprocessConfig {
    pub program: Program,
    /// `custom` only: an absolute path (validated at start-up: a regular file, not writable
    /// by group or others).
    #[serde(default)]
    pub binary: PathBuf,
    /// `custom` only: the fixed argument vector (never a shell; user text is never in it).
    #[serde(default)]
    pub args: Vec<String>,
    /// The engine's native voices (espeak-ng voice names such as `en-us`; others `default`).
    /// Empty: `["en-us", "en-gb"]` for espeak-ng, `["default"]` otherwise.
    #[serde(default)]
    pub native_voices: Vec<String>,
    /// Alias → native voice.
    #[serde(default)]
    pub voices: BTreeMap<String, String>,
    /// Runs at once.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// CPU seconds one run may use.
    #[serde(default = "default_cpu_secs")]
    pub cpu_secs: u64,
    /// Address space one run may map.
    #[serde(default = "default_memory")]
    pub memory_bytes: u64,
    /// Wall-clock time one run may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest WAV one run may write.
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
    /// Directories the binary may read besides the system ones (/usr, /lib, …).
    #[serde(default)]
    pub read_paths: Vec<PathBuf>,
    /// Who the binary runs as: "auto" (an unprivileged uid when voxgate runs as root,
    /// otherwise voxgate's own), "keep", or "uid:gid".
    #[serde(default = "default_run_as")]
    pub run_as: String,
}

fn default_run_as() -> String {
    "auto".into()
}

/// The uid and gid a sandboxed binary runs as, from a `run_as` setting.
pub fn run_as(setting: &str) -> Result<Option<(u32, u32)>, String> {
    match setting {
        "keep" => Ok(None),
        // nobody/nogroup: root inside the sandbox would still own the process table's
        // RLIMIT_NPROC exemption and root-owned files.
        "auto" => Ok(is_root().then_some((65_534, 65_534))),
        other => {
            let (uid, gid) = other
                .split_once(':')
                .ok_or("run_as must be \"auto\", \"keep\" or \"uid:gid\"")?;
            let parse = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| format!("run_as: {v:?} is not a number"))
            };
            let (uid, gid) = (parse(uid)?, parse(gid)?);
            if uid == 0 {
                return Err("run_as must not be uid 0".into());
            }
            Ok(Some((uid, gid)))
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl SubprocessConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The native voices, defaults filled in.
    pub fn natives(&self) -> Vec<String> {
        if !self.native_voices.is_empty() {
            return self.native_voices.clone();
        }
        match self.program {
            Program::EspeakNg => vec!["en-us".into(), "en-gb".into()],
            Program::Festival | Program::Custom => vec!["default".into()],
        }
    }
}

fn default_parallel() -> usize {
    2
}
fn default_cpu_secs() -> u64 {
    10
}
fn default_memory() -> u64 {
    1 << 30
}
fn default_timeout_ms() -> u64 {
    15_000
}
fn default_max_output() -> usize {
    32 << 20
}
