//! Run a local speech-synthesis binary as an isolated, resource-limited subprocess.
//!
//! # Threat model
//!
//! The text handed to the synthesiser is hostile user input. The synthesiser itself (espeak-ng,
//! festival's `text2wave`, or an operator-configured binary) is trusted to be *installed* by the
//! operator but not trusted to be free of parser bugs: we assume a crafted text may take over
//! the child process. The sandbox must then keep the child from reading secrets, writing
//! anywhere persistent, reaching the network, signalling the gateway, or exhausting the host.
//!
//! # Layers (outermost first)
//!
//! 1. **Binary validation** ([`validate_binary`]): absolute path, resolves to a regular file that
//!    is executable, not writable by group/others, owned by root or us, in directories that are
//!    not group/other-writable either. A `#!` interpreter is validated the same way.
//! 2. **No shell, fixed argv**: the binary is `execve`d directly with the spec's fixed argument
//!    vector. The text only ever travels on **stdin**, so it cannot become an option or a file name.
//! 3. **Cleared environment**: only the spec's explicit `env` pairs reach the child.
//! 4. **Private work dir**: a fresh `0700` directory under `temp_root` is the child's cwd and the
//!    only writable place; it is removed after the run.
//! 5. **rlimits**: `RLIMIT_CPU`, `RLIMIT_AS`, `RLIMIT_NOFILE`, `RLIMIT_FSIZE`, `RLIMIT_NPROC`,
//!    `RLIMIT_CORE=0`.
//! 6. **Process hygiene**: `setsid` (own session and process group, so one `kill(-pgid)` reaches
//!    every descendant), `PR_SET_PDEATHSIG(SIGKILL)`, all inherited fds marked close-on-exec,
//!    all capabilities dropped (matters when the gateway runs as root), `PR_SET_NO_NEW_PRIVS`.
//!    Optionally [`SandboxSpec::run_as`] switches to an unprivileged uid/gid (needed for
//!    `RLIMIT_NPROC` to bite: the kernel never enforces it for the root user).
//! 7. **Landlock** (ABI v6 requested, best effort): read+execute only below `read_paths` (plus the
//!    binary and its interpreter), read/write `/dev/null`, full access only inside the work dir;
//!    TCP bind/connect denied; signals and abstract UNIX sockets scoped to the sandbox. The
//!    achieved level is reported as [`LandlockStatus`]; [`SandboxSpec::require_landlock`] makes
//!    [`run`] fail when Landlock is not enforced at all.
//! 8. **seccomp** (an allow-list, default `EPERM`): what a synthesizer needs to compute, read,
//!    write its output and fork helpers is allowed; everything else fails, among it `socket()`
//!    of every domain (or every domain but `AF_UNIX` when [`SandboxSpec::allow_unix_sockets`] is
//!    set), `io_uring_*`, namespaces (`unshare`, `setns`, `clone` with a namespace flag; `clone3`
//!    answers `ENOSYS` so libc falls back to `clone`), `setsid`/`setpgid`, `ptrace`, `keyctl`,
//!    `bpf`, `perf_event_open`, `userfaultfd`, mounts, `pivot_root`, module loading and `kexec`,
//!    and `ioctl(TIOCSTI)`. `socketpair` stays allowed: it can only make an anonymous,
//!    already-connected `AF_UNIX` pair, which reaches nothing. Foreign syscall ABIs (i386
//!    `int 0x80`) kill the process; x32 numbers are not on the list.
//! 9. **Supervision**: wall-clock deadline, stdout cap, stderr kept as a 4 KiB tail (diagnostics
//!    only, never audio). When the leader exits or is stopped, the whole process group is
//!    killed with `SIGKILL` until none of it is left, and the leader is always reaped. Since no
//!    descendant can leave the group (seccomp refuses `setsid` and `setpgid`), no process of a
//!    run outlives it, whatever it forks or ignores.
//!
//! # Fork safety
//!
//! Callers are multi-threaded (tokio). After `fork` only async-signal-safe code may run in the
//! child, because another thread may have held the allocator or another libc lock at fork time.
//! Everything that allocates — the Landlock ruleset fd and rules, the compiled seccomp BPF
//! program, the argv/env `CString`s (built by `std`) — is therefore prepared **before** the fork;
//! the `pre_exec` hook only issues raw syscalls on that prepared data (see `ChildSetup::apply`).
//!
//! # Known-good specs (verified by the tests on Debian 12)
//!
//! * espeak-ng, WAV to stdout ([`SandboxSpec::espeak_ng_wav`]):
//!   `/usr/bin/espeak-ng --stdin --stdout -b 1 -v en-us` (`--stdin` reads all of stdin; `-b 1` is
//!   UTF-8 input; do **not** add `-q`, it suppresses audio). Needs ~128 MiB of address space.
//!   Its stderr says `Failed to get home directory.` and `socket(): Operation not permitted`
//!   (no `HOME`, and its PulseAudio probe is denied): both harmless. Writing to a pipe, it
//!   streams a header with placeholder sizes (`0x7FFFF024`).
//! * festival, WAV to stdout ([`SandboxSpec::text2wave_wav`]):
//!   `/usr/bin/text2wave -otype riff -o - -` (`-o -` is stdout, the trailing `-` is stdin; no
//!   `-eval` ever). `text2wave` is a `#!/usr/bin/festival --script` script. It needs more than
//!   256 MiB of address space and opens `/dev/null` for writing. Because stdout is a pipe,
//!   festival cannot seek back to patch the RIFF/`data` sizes: they stay 36 / 0; the samples
//!   follow. For both synthesisers, consumers must derive sizes from the byte length.
//! * Default read view ([`default_read_paths`]): `/usr`, `/lib`, `/lib64`, `/bin`, `/sbin`,
//!   `/etc/ld.so.cache`, and for festival additionally `/etc/festival.scm`
//!   ([`read_paths_for`]). espeak-ng data lives in `/usr/lib/x86_64-linux-gnu/espeak-ng-data`,
//!   festival's in `/usr/share/festival` and `/usr/lib/festival`, all below `/usr`.
//!
//! # Limitations
//!
//! * Validation happens when the spec is built; the file is executed later by path. Requiring
//!   non-writable ancestors keeps other users from swapping it, not root or the owner.
//! * `RLIMIT_NPROC` is ignored for uid 0 and counts every task of the uid (gateway threads
//!   included): it only means something with [`SandboxSpec::run_as`] and a dedicated uid.
//! * [`KillReason::MemoryLimit`] (and the exit-code path of [`KillReason::FileSizeLimit`]) are
//!   inferred from stderr text; a crash without such text is reported as `Failed`/`Signal`.
//! * `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits; [`run`] blocks
//!   that thread for the child's whole life, so this only matters if the whole process dies.
#![deny(unsafe_op_in_unsafe_fn)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::Permissions;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

mod binary;
mod confine;
mod supervise;

pub use binary::{
    BinaryProblem, ValidatedBinary, default_read_paths, read_paths_for, validate_binary,
};
use confine::{ChildSetup, compile_seccomp, prepare_landlock, prepare_rlimits};

/// How much of the sandbox's Landlock policy (ABI v6: filesystem, TCP, scopes) the running
/// kernel enforces. Checked at start-up, so an operator learns it before the first run.
pub fn kernel_landlock() -> LandlockStatus {
    confine::kernel_landlock()
}
use supervise::{SigpipeBlock, supervise};

/// How many trailing bytes of the child's stderr are kept (for logs only).
pub const STDERR_TAIL_MAX: usize = 4096;
/// The Landlock ABI whose access rights we ask for (v6: fs incl. truncate/ioctl, TCP, scopes).
const LANDLOCK_ABI: ABI = ABI::V6;

/// Resource limits applied in the child with `setrlimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_CPU` soft limit in seconds (SIGXCPU); the hard limit is one second more (SIGKILL).
    pub cpu_secs: u64,
    /// `RLIMIT_AS` in bytes.
    pub address_space: u64,
    /// `RLIMIT_NOFILE`: highest fd number + 1 the child may open.
    pub open_files: u64,
    /// `RLIMIT_FSIZE` in bytes: largest file the child may write (SIGXFSZ / EFBIG beyond).
    pub file_size: u64,
    /// `RLIMIT_NPROC`: counts *all* tasks (threads included) of the child's real uid, and is never
    /// enforced for uid 0 — use [`SandboxSpec::run_as`] with a dedicated uid for it to matter.
    pub processes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_secs: 10,
            address_space: 1 << 30,
            open_files: 64,
            file_size: 64 << 20,
            processes: 512,
        }
    }
}

/// Why a sandboxed run was stopped. Every variant is a security-relevant event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// The wall-clock deadline passed; we killed the process group.
    Timeout,
    /// `RLIMIT_CPU` was hit: death by `SIGXCPU`, or by `SIGKILL` after using >= `cpu_secs` of CPU.
    CpuLimit,
    /// Best effort: the child exited non-zero or died by `SIGABRT`/`SIGSEGV`/`SIGBUS` *and* its
    /// stderr tail names an allocation failure (`MemoryError`, `out of memory`, `bad_alloc`,
    /// `Cannot allocate memory`, …). `RLIMIT_AS` makes allocations fail rather than killing, so
    /// this is inferred; the marker text could in theory be echoed input, hence "best effort".
    MemoryLimit,
    /// stdout exceeded `max_output`; we killed the process group.
    OutputLimit,
    /// `RLIMIT_FSIZE` was hit: death by `SIGXFSZ`, or (best effort, like `MemoryLimit`) a
    /// non-zero exit whose stderr says `File too large` (programs that ignore `SIGXFSZ`).
    FileSizeLimit,
    /// Killed by another signal (crash, or `SIGKILL` from someone else such as the OOM killer).
    Signal(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid binary {path}: {problem}")]
    InvalidBinary {
        path: PathBuf,
        problem: BinaryProblem,
    },
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(&'static str),
    #[error("cannot prepare the private work dir: {0}")]
    WorkDir(#[source] io::Error),
    #[error("cannot build the Landlock ruleset: {0}")]
    Landlock(#[source] landlock::RulesetError),
    #[error("cannot open {path} for the Landlock view: {source}")]
    View {
        path: PathBuf,
        source: landlock::PathFdError,
    },
    #[error("Landlock is required but not enforced by this kernel")]
    LandlockUnavailable,
    #[error("cannot compile the seccomp filter: {0}")]
    Seccomp(#[source] seccompiler::BackendError),
    #[error("cannot spawn the sandboxed process: {0}")]
    Spawn(#[source] io::Error),
    #[error("I/O error while supervising the sandboxed process: {0}")]
    Io(#[source] io::Error),
    /// The child was stopped by a limit. `stdout_len` is how much stdout was retained before
    /// (at most `max_output`; the bytes are discarded); `stderr_tail` is for logs only.
    #[error("sandboxed process stopped: {reason:?}")]
    Killed {
        reason: KillReason,
        stdout_len: usize,
        stderr_tail: Vec<u8>,
    },
    /// The child exited with a non-zero code (and no limit was identified).
    #[error("sandboxed process exited with code {code}")]
    Failed { code: i32, stderr_tail: Vec<u8> },
}

impl SandboxError {
    /// True when a limit stopped the child: the caller should raise a security event.
    pub fn is_kill(&self) -> bool {
        matches!(self, SandboxError::Killed { .. })
    }

    pub fn kill_reason(&self) -> Option<KillReason> {
        match self {
            SandboxError::Killed { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// How much of the requested Landlock policy the running kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockStatus {
    /// Every requested restriction (ABI v6) is enforced.
    FullyEnforced,
    /// An older kernel: the filesystem view is enforced, some newer rights are not.
    PartiallyEnforced,
    /// No Landlock at all: only the other layers protect the host.
    NotEnforced,
}

impl LandlockStatus {
    pub fn is_enforced(self) -> bool {
        self != LandlockStatus::NotEnforced
    }
}

/// Everything needed to run one sandboxed child. Build with [`SandboxSpec::new`], then adjust.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SandboxSpec {
    pub binary: ValidatedBinary,
    /// Fixed arguments after `argv[0]`. Never put user text here.
    pub args: Vec<OsString>,
    /// The complete child environment (default: empty).
    pub env: Vec<(OsString, OsString)>,
    /// Read+execute view (Landlock). The binary and its interpreter are added automatically.
    pub read_paths: Vec<PathBuf>,
    pub limits: Limits,
    /// Wall-clock deadline for the whole run.
    pub timeout: Duration,
    /// stdout cap in bytes; the child is killed when it writes more.
    pub max_output: usize,
    /// Fail with [`SandboxError::LandlockUnavailable`] when Landlock is not enforced.
    pub require_landlock: bool,
    /// Let `socket(AF_UNIX, ..)` through the seccomp filter (all other domains stay denied).
    pub allow_unix_sockets: bool,
    /// Run the child as this `(uid, gid)` (requires a root parent). Supplementary groups are
    /// cleared and the work dir is chowned to it.
    pub run_as: Option<(u32, u32)>,
    /// Where the per-run private work dir is created.
    pub temp_root: PathBuf,
}

impl SandboxSpec {
    pub fn new(binary: ValidatedBinary) -> Self {
        SandboxSpec {
            read_paths: read_paths_for(&binary),
            binary,
            args: Vec::new(),
            env: Vec::new(),
            limits: Limits::default(),
            timeout: Duration::from_secs(10),
            max_output: 32 << 20,
            require_landlock: true,
            allow_unix_sockets: false,
            run_as: None,
            temp_root: std::env::temp_dir(),
        }
    }

    /// `/usr/bin/espeak-ng --stdin --stdout -b 1 -v <voice>`: UTF-8 text on stdin, WAV on stdout.
    pub fn espeak_ng_wav(voice: &str) -> Result<Self, SandboxError> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_+".contains(c);
        if voice.is_empty() || voice.starts_with('-') || !voice.chars().all(ok) {
            return Err(SandboxError::InvalidSpec(
                "voice name must match [A-Za-z0-9_+-]+",
            ));
        }
        let mut spec = Self::new(validate_binary(Path::new("/usr/bin/espeak-ng"))?);
        spec.args = ["--stdin", "--stdout", "-b", "1", "-v", voice]
            .map(OsString::from)
            .to_vec();
        Ok(spec)
    }

    /// `/usr/bin/text2wave -otype riff -o - -`: text on stdin, RIFF WAV on stdout.
    pub fn text2wave_wav() -> Result<Self, SandboxError> {
        let mut spec = Self::new(validate_binary(Path::new("/usr/bin/text2wave"))?);
        spec.args = ["-otype", "riff", "-o", "-", "-"]
            .map(OsString::from)
            .to_vec();
        Ok(spec)
    }
}

/// Result of a successful (exit code 0) run.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    /// Last [`STDERR_TAIL_MAX`] bytes of stderr, for logs only.
    pub stderr_tail: Vec<u8>,
    pub landlock: LandlockStatus,
    pub elapsed: Duration,
}

/// Run the spec's binary in the sandbox, feeding `stdin`. Blocking; call it from a blocking pool.
pub fn run(spec: &SandboxSpec, stdin: &[u8]) -> Result<Output, SandboxError> {
    if spec.timeout.is_zero() || spec.max_output == 0 || !spec.temp_root.is_absolute() {
        return Err(SandboxError::InvalidSpec(
            "timeout and max_output must be non-zero and temp_root absolute",
        ));
    }
    let work = tempfile::Builder::new()
        .prefix("voxgate-sbx-")
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in(&spec.temp_root)
        .map_err(SandboxError::WorkDir)?;
    if let Some((uid, gid)) = spec.run_as {
        std::os::unix::fs::chown(work.path(), Some(uid), Some(gid))
            .map_err(SandboxError::WorkDir)?;
    }
    let (ruleset_fd, landlock) = prepare_landlock(spec, work.path())?;
    if spec.require_landlock && !landlock.is_enforced() {
        return Err(SandboxError::LandlockUnavailable);
    }
    let setup = ChildSetup {
        rlimits: prepare_rlimits(&spec.limits),
        // SAFETY: getpid has no preconditions and cannot fail.
        parent: unsafe { libc::getpid() },
        ruleset_fd,
        bpf: compile_seccomp(spec.allow_unix_sockets)?,
    };

    let mut cmd = Command::new(spec.binary.resolved());
    cmd.arg0(spec.binary.path())
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(work.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = spec.run_as {
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: `ChildSetup::apply` only performs async-signal-safe raw syscalls on data prepared
    // above; it neither allocates nor takes locks (see its documentation).
    unsafe { cmd.pre_exec(move || setup.apply()) };

    let _sigpipe = SigpipeBlock::new();
    let start = Instant::now();
    let spawned = cmd.spawn();
    // Dropping the Command drops the hook and with it the parent's copy of the ruleset fd.
    drop(cmd);
    let child = spawned.map_err(SandboxError::Spawn)?;
    let result = supervise(child, stdin, spec, start);
    // Every process of the group is dead and reaped by now; removal is best effort.
    let _ = work.close();
    let (stdout, stderr_tail) = result?;
    Ok(Output {
        stdout,
        stderr_tail,
        landlock,
        elapsed: start.elapsed(),
    })
}
