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
//! 8. **seccomp** (default allow): `socket()` fails with `EPERM` for every domain (or every domain
//!    but `AF_UNIX` when [`SandboxSpec::allow_unix_sockets`] is set), `io_uring_setup` fails with
//!    `EPERM` (io_uring could create sockets without the `socket` syscall). `socketpair` stays
//!    allowed: it can only make an anonymous, already-connected `AF_UNIX` pair, which reaches
//!    nothing. Foreign syscall ABIs (i386 `int 0x80`) kill the process; x32 aliases are matched too.
//! 9. **Supervision**: wall-clock deadline, stdout cap, stderr kept as a 4 KiB tail (diagnostics
//!    only, never audio). Any kill hits the whole process group with `SIGKILL`, and the leader is
//!    always reaped.
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
//! * A process that escapes the process group (it would need its own `setsid`) is not killed by
//!   the group kill; if it keeps the output pipes open the run ends as a `Timeout`.
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

/// What is wrong with a binary (or its `#!` interpreter).
#[derive(Debug, thiserror::Error)]
pub enum BinaryProblem {
    #[error("path is not absolute")]
    NotAbsolute,
    #[error("cannot resolve path: {0}")]
    Unresolvable(#[source] io::Error),
    #[error("not a regular file")]
    NotRegularFile,
    #[error("writable by group or others (mode {mode:o})")]
    WritableByOthers { mode: u32 },
    #[error("no execute permission (mode {mode:o})")]
    NotExecutable { mode: u32 },
    #[error("{path} is owned by uid {uid}, expected root or the current user")]
    UntrustedOwner { path: PathBuf, uid: u32 },
    #[error("ancestor directory {dir} is writable by group or others")]
    WritableAncestor { dir: PathBuf },
    #[error("interpreter {interpreter:?}: {problem}")]
    Interpreter {
        interpreter: PathBuf,
        problem: Box<BinaryProblem>,
    },
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

/// A binary that passed [`validate_binary`]. Only constructible through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedBinary {
    path: PathBuf,
    resolved: PathBuf,
    interpreter: Option<Box<ValidatedBinary>>,
}

impl ValidatedBinary {
    /// The path as configured (used as `argv[0]`).
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The fully resolved path (what is executed).
    pub fn resolved(&self) -> &Path {
        &self.resolved
    }
    /// The validated `#!` interpreter, if the binary is a script.
    pub fn interpreter(&self) -> Option<&ValidatedBinary> {
        self.interpreter.as_deref()
    }
}

/// Validate an operator-configured binary. See the crate docs for the rules.
pub fn validate_binary(path: &Path) -> Result<ValidatedBinary, SandboxError> {
    check_binary(path, 0).map_err(|problem| SandboxError::InvalidBinary {
        path: path.to_owned(),
        problem,
    })
}

fn check_binary(path: &Path, depth: u32) -> Result<ValidatedBinary, BinaryProblem> {
    if !path.is_absolute() {
        return Err(BinaryProblem::NotAbsolute);
    }
    let resolved = path.canonicalize().map_err(BinaryProblem::Unresolvable)?;
    let meta = std::fs::metadata(&resolved).map_err(BinaryProblem::Unresolvable)?;
    let mode = meta.mode() & 0o7777;
    if !meta.is_file() {
        return Err(BinaryProblem::NotRegularFile);
    }
    if mode & 0o022 != 0 {
        return Err(BinaryProblem::WritableByOthers { mode });
    }
    if mode & 0o111 == 0 {
        return Err(BinaryProblem::NotExecutable { mode });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let trusted = |uid: u32| uid == 0 || uid == euid;
    if !trusted(meta.uid()) {
        let (path, uid) = (resolved.clone(), meta.uid());
        return Err(BinaryProblem::UntrustedOwner { path, uid });
    }
    for dir in resolved.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(BinaryProblem::Unresolvable)?;
        if !trusted(m.uid()) {
            let (path, uid) = (dir.to_owned(), m.uid());
            return Err(BinaryProblem::UntrustedOwner { path, uid });
        }
        if m.mode() & 0o022 != 0 {
            return Err(BinaryProblem::WritableAncestor {
                dir: dir.to_owned(),
            });
        }
    }
    // A script is executed by its interpreter, which must be just as trustworthy (and readable
    // inside the Landlock view, so we remember it). The kernel nests at most 4 levels.
    let mut head = [0u8; 256];
    let n = std::fs::File::open(&resolved)
        .and_then(|mut f| f.read(&mut head))
        .map_err(BinaryProblem::Unresolvable)?;
    let interpreter = match head[..n].strip_prefix(b"#!") {
        None => None,
        Some(rest) => {
            let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
            let interp = line
                .split(|b| b.is_ascii_whitespace())
                .find(|s| !s.is_empty())
                .unwrap_or_default();
            let interp = PathBuf::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(interp),
            );
            let checked = if depth >= 4 {
                Err(BinaryProblem::NotExecutable { mode })
            } else {
                check_binary(&interp, depth + 1)
            };
            Some(Box::new(checked.map_err(|p| {
                BinaryProblem::Interpreter {
                    interpreter: interp,
                    problem: Box::new(p),
                }
            })?))
        }
    };
    Ok(ValidatedBinary {
        path: path.to_owned(),
        resolved,
        interpreter,
    })
}

/// The read-only view that dynamically linked programs from the distribution need.
/// Missing entries (e.g. `/lib64` on other architectures) are skipped.
pub fn default_read_paths() -> Vec<PathBuf> {
    [
        "/usr",
        "/lib",
        "/lib64",
        "/bin",
        "/sbin",
        "/etc/ld.so.cache",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect()
}

/// [`default_read_paths`] plus what known synthesisers read outside `/usr`.
pub fn read_paths_for(binary: &ValidatedBinary) -> Vec<PathBuf> {
    let mut paths = default_read_paths();
    let mut b = Some(binary);
    while let Some(bin) = b {
        let name = bin.resolved().file_name().unwrap_or_default();
        if (name == "festival" || name == "text2wave") && Path::new("/etc/festival.scm").exists() {
            paths.push(PathBuf::from("/etc/festival.scm"));
            break;
        }
        b = bin.interpreter();
    }
    paths
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

// ---------------------------------------------------------------------------------------------
// Preparation (parent side, before fork: allocation allowed here)

fn prepare_landlock(
    spec: &SandboxSpec,
    work: &Path,
) -> Result<(Option<OwnedFd>, LandlockStatus), SandboxError> {
    let mut read: Vec<&Path> = spec.read_paths.iter().map(PathBuf::as_path).collect();
    let mut bin = Some(&spec.binary);
    while let Some(b) = bin {
        read.push(b.resolved());
        bin = b.interpreter();
    }
    let open = |p: &Path| {
        PathFd::new(p).map_err(|source| SandboxError::View {
            path: p.to_owned(),
            source,
        })
    };
    let mut rules = Vec::new();
    for p in read.into_iter().filter(|p| p.exists()) {
        let access = if p.is_dir() {
            AccessFs::from_read(LANDLOCK_ABI)
        } else {
            AccessFs::from_read(LANDLOCK_ABI) & AccessFs::from_file(LANDLOCK_ABI)
        };
        rules.push((open(p)?, access));
    }
    let devnull = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate;
    rules.push((open(Path::new("/dev/null"))?, devnull));
    rules.push((open(work)?, AccessFs::from_all(LANDLOCK_ABI)));
    // The crate does not expose its compatibility verdict before `restrict_self` (which must not
    // run in the parent), so we first build with HardRequirement: success means every requested
    // right is supported. Otherwise a best-effort build tells "partial" (fd) from "none" (no fd).
    let build = |level| -> Result<RulesetCreated, landlock::RulesetError> {
        let abi = LANDLOCK_ABI;
        let mut rs = Ruleset::default()
            .set_compatibility(level)
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(AccessNet::from_all(abi))?
            .scope(Scope::from_all(abi))?
            .create()?;
        for (fd, access) in &rules {
            rs = rs.add_rule(PathBeneath::new(fd, *access))?;
        }
        Ok(rs)
    };
    let (created, full) = match build(CompatLevel::HardRequirement) {
        Ok(rs) => (rs, true),
        Err(_) => (
            build(CompatLevel::BestEffort).map_err(SandboxError::Landlock)?,
            false,
        ),
    };
    // The kernel always creates ruleset fds with O_CLOEXEC, so exec closes the child's copy.
    let fd: Option<OwnedFd> = created.into();
    let status = match (&fd, full) {
        (None, _) => LandlockStatus::NotEnforced,
        (Some(_), true) => LandlockStatus::FullyEnforced,
        (Some(_), false) => LandlockStatus::PartiallyEnforced,
    };
    Ok((fd, status))
}

fn compile_seccomp(allow_unix: bool) -> Result<BpfProgram, SandboxError> {
    let e = SandboxError::Seccomp;
    let socket_rules = if allow_unix {
        let not_unix = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )
        .map_err(e)?;
        vec![SeccompRule::new(vec![not_unix]).map_err(e)?]
    } else {
        Vec::new() // an empty rule list matches unconditionally
    };
    let mut rules = BTreeMap::new();
    rules.insert(libc::SYS_socket, socket_rules.clone());
    rules.insert(libc::SYS_io_uring_setup, Vec::new());
    #[cfg(target_arch = "x86_64")]
    {
        // x32 syscalls report AUDIT_ARCH_X86_64 too, with bit 30 set in the number.
        const X32: i64 = 0x4000_0000;
        rules.insert(X32 | libc::SYS_socket, socket_rules);
        rules.insert(X32 | libc::SYS_io_uring_setup, Vec::new());
    }
    let arch = std::env::consts::ARCH.try_into().map_err(e)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(e)?;
    filter.try_into().map_err(e)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

fn prepare_rlimits(l: &Limits) -> [(Resource, libc::rlimit); 6] {
    // Clamp to the current hard limits: lowering needs no privilege, raising would fail.
    let lim = |res: Resource, soft: u64, hard: u64| {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: `cur` is a valid, writable rlimit struct.
        unsafe { libc::getrlimit(res, &mut cur) };
        let max = cur.rlim_max;
        let rl = libc::rlimit {
            rlim_cur: soft.min(max),
            rlim_max: hard.min(max),
        };
        (res, rl)
    };
    [
        lim(libc::RLIMIT_CORE, 0, 0),
        lim(libc::RLIMIT_CPU, l.cpu_secs, l.cpu_secs.saturating_add(1)),
        lim(libc::RLIMIT_AS, l.address_space, l.address_space),
        lim(libc::RLIMIT_NOFILE, l.open_files, l.open_files),
        lim(libc::RLIMIT_FSIZE, l.file_size, l.file_size),
        lim(libc::RLIMIT_NPROC, l.processes, l.processes),
    ]
}

/// Data the child applies to itself between fork and exec. Plain data only.
struct ChildSetup {
    rlimits: [(Resource, libc::rlimit); 6],
    parent: libc::pid_t,
    /// Owned so that the parent's copy closes when the `Command` (holding this) is dropped.
    ruleset_fd: Option<OwnedFd>,
    bpf: BpfProgram,
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

impl ChildSetup {
    /// Runs in the forked child. Async-signal-safe: only raw syscalls on memory that was prepared
    /// before the fork (copied into the child by fork), stack values, and `io::Error` values built
    /// from a raw errno (no allocation). Must not allocate, lock, or touch the parent's threads.
    fn apply(&self) -> io::Result<()> {
        let check = |rc: libc::c_long| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY (whole block): every call is a raw syscall whose pointer arguments point to
        // live, correctly typed stack or pre-fork-heap values that outlive the call.
        unsafe {
            // New session => new process group with pgid == pid; the supervisor kills -pid.
            check(libc::setsid() as _)?;
            for (res, rl) in &self.rlimits {
                check(libc::setrlimit(*res, rl) as _)?;
            }
            // Drop every capability (permitted/effective/inheritable, ambient). With
            // NO_NEW_PRIVS below, a uid-0 child cannot regain them on execve either.
            let mut hdr = CapHeader {
                version: 0x2008_0522,
                pid: 0,
            };
            let data = [CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            check(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()))?;
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            // Die with the parent (set after the credential changes, which reset it), and
            // close the race where the parent died before the prctl.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) as _)?;
            if libc::getppid() != self.parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Make every inherited fd above stderr close-on-exec (std's own error pipe keeps
            // working until exec). Ignore ENOSYS/EINVAL on old kernels: Rust opens with CLOEXEC.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as _)?;
            if let Some(fd) = &self.ruleset_fd {
                let fd = fd.as_raw_fd();
                check(libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32))?;
                libc::close(fd); // not needed any more in the child
            }
            let prog = SockFprog {
                len: self.bpf.len() as libc::c_ushort,
                filter: self.bpf.as_ptr(),
            };
            check(libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const SockFprog,
                0,
                0,
            ) as _)?;
        }
        Ok(())
    }
}

/// Blocks SIGPIPE in the calling thread while we write to the child's stdin, so a child that
/// exits early yields `EPIPE` instead of killing a host that did not ignore SIGPIPE. A pending
/// thread-directed SIGPIPE is consumed before the old mask is restored.
struct SigpipeBlock {
    old: libc::sigset_t,
}

impl SigpipeBlock {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data; the calls get valid pointers to it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SigpipeBlock { old }
        }
    }
}

impl Drop for SigpipeBlock {
    fn drop(&mut self) {
        // SAFETY: as above; the zero timeout makes sigtimedwait a non-blocking poll.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Supervision (parent side)

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads what is available; returns false on EOF or error (the pipe is then done).
fn drain(pipe: &mut impl Read, mut sink: impl FnMut(&[u8])) -> bool {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => sink(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Pumps stdin/stdout/stderr with one `poll` loop (a child that never reads stdin cannot block
/// us: all fds are non-blocking), enforces the deadline and output cap, kills the process group,
/// always reaps the leader, and classifies the outcome.
fn supervise(
    mut child: Child,
    input: &[u8],
    spec: &SandboxSpec,
    start: Instant,
) -> Result<(Vec<u8>, Vec<u8>), SandboxError> {
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open takes integer arguments; a non-negative result is a new fd we own.
    let pidfd = match unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } {
        fd if fd >= 0 => Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        _ => None, // pre-5.3 kernel: fall back to polling waitid every 10 ms
    };
    let mut stdin = child.stdin.take().filter(|_| !input.is_empty());
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let fds = [
        stdin.as_ref().map(|p| p.as_raw_fd()),
        stdout.as_ref().map(|p| p.as_raw_fd()),
    ];
    for fd in fds
        .into_iter()
        .flatten()
        .chain(stderr.as_ref().map(|p| p.as_raw_fd()))
    {
        if let Err(e) = set_nonblocking(fd) {
            let _ = kill_group_and_reap(pid);
            return Err(SandboxError::Io(e));
        }
    }
    let deadline = start + spec.timeout;
    let (mut out, mut err_tail, mut written) = (Vec::new(), Vec::new(), 0usize);
    let mut killed = None;
    let mut exited = false;
    while !(exited && stdout.is_none() && stderr.is_none()) {
        let now = Instant::now();
        if now >= deadline {
            killed = Some(KillReason::Timeout);
            break;
        }
        let fd_of = |o: Option<RawFd>| o.unwrap_or(-1); // poll ignores negative fds
        let mut pfds = [
            (fd_of(stdin.as_ref().map(|p| p.as_raw_fd())), libc::POLLOUT),
            (fd_of(stdout.as_ref().map(|p| p.as_raw_fd())), libc::POLLIN),
            (fd_of(stderr.as_ref().map(|p| p.as_raw_fd())), libc::POLLIN),
            (
                fd_of(pidfd.as_ref().filter(|_| !exited).map(|p| p.as_raw_fd())),
                libc::POLLIN,
            ),
        ]
        .map(|(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        });
        let mut wait_ms = (deadline - now).as_millis().clamp(1, 60_000) as libc::c_int;
        if pidfd.is_none() && !exited {
            wait_ms = wait_ms.min(10);
        }
        // SAFETY: pfds is a valid array of 4 pollfd structs.
        if unsafe { libc::poll(pfds.as_mut_ptr(), 4, wait_ms) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                let _ = kill_group_and_reap(pid);
                return Err(SandboxError::Io(e));
            }
            continue;
        }
        if let Some(pipe) = stdin.as_mut().filter(|_| pfds[0].revents != 0) {
            let chunk = &input[written..input.len().min(written + 64 * 1024)];
            match pipe.write(chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => written = input.len(), // EPIPE etc.: the child stopped reading
            }
            if written >= input.len() {
                stdin = None; // EOF for the child
            }
        }
        if pfds[1].revents != 0 {
            let open = drain(stdout.as_mut().expect("polled"), |b| {
                out.extend_from_slice(b)
            });
            if !open {
                stdout = None;
            }
            if out.len() > spec.max_output {
                out.truncate(spec.max_output);
                killed = Some(KillReason::OutputLimit);
                break;
            }
        }
        if pfds[2].revents != 0 {
            let open = drain(stderr.as_mut().expect("polled"), |b| {
                err_tail.extend_from_slice(b);
                let excess = err_tail.len().saturating_sub(STDERR_TAIL_MAX);
                err_tail.drain(..excess);
            });
            if !open {
                stderr = None;
            }
        }
        if !exited && (pfds[3].revents != 0 || (pidfd.is_none() && leader_exited(pid))) {
            // The leader is a zombie (so -pid still names its group): kill any stragglers so
            // the pipes reach EOF, and stop feeding stdin.
            exited = true;
            stdin = None;
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
    drop((stdin, stdout, stderr));
    let (status, rusage) = kill_group_and_reap(pid).map_err(SandboxError::Io)?;
    let verdict = match killed {
        Some(reason) => Verdict::Killed(reason),
        None => classify(status, &rusage, &spec.limits, &err_tail),
    };
    match verdict {
        Verdict::Success => Ok((out, err_tail)),
        Verdict::Killed(reason) => Err(SandboxError::Killed {
            reason,
            stdout_len: out.len(),
            stderr_tail: err_tail,
        }),
        Verdict::Failed(code) => Err(SandboxError::Failed {
            code,
            stderr_tail: err_tail,
        }),
    }
}

/// Has the leader exited? Does not reap it (`WNOWAIT`), so its pid keeps naming the group.
fn leader_exited(pid: libc::pid_t) -> bool {
    // SAFETY: `info` is a valid, zeroed siginfo_t for waitid to fill in.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) == 0 && info.si_pid() != 0
    }
}

/// SIGKILL the whole process group, then reap the leader. The leader is not reaped before the
/// group kill, so `-pid` cannot name a recycled group. Fails (rather than inventing an exit
/// status) if the leader cannot be reaped, e.g. because the host set `SIGCHLD` to `SIG_IGN`.
fn kill_group_and_reap(pid: libc::pid_t) -> io::Result<(libc::c_int, libc::rusage)> {
    // SAFETY: kill/wait4 with integer arguments and valid out-pointers to stack values.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL); // in case the group is gone (e.g. setsid failed)
        let mut status = 0;
        let mut rusage: libc::rusage = std::mem::zeroed();
        loop {
            if libc::wait4(pid, &mut status, 0, &mut rusage) == pid {
                return Ok((status, rusage));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

enum Verdict {
    Success,
    Killed(KillReason),
    Failed(i32),
}

/// Classify a child that we did not kill ourselves. See [`KillReason`] for the rules.
fn classify(status: libc::c_int, ru: &libc::rusage, limits: &Limits, stderr: &[u8]) -> Verdict {
    const MEMORY_MARKERS: [&[u8]; 6] = [
        b"MemoryError",
        b"out of memory",
        b"Out of memory",
        b"Cannot allocate memory",
        b"bad_alloc",
        b"memory exhausted",
    ];
    let mentions_oom = MEMORY_MARKERS
        .iter()
        .any(|m| stderr.windows(m.len()).any(|w| w == *m));
    let cpu = Duration::from_secs(ru.ru_utime.tv_sec as u64 + ru.ru_stime.tv_sec as u64)
        + Duration::from_micros(ru.ru_utime.tv_usec as u64 + ru.ru_stime.tv_usec as u64);
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let cpu_spent = cpu + Duration::from_millis(50) >= Duration::from_secs(limits.cpu_secs);
        return Verdict::Killed(match sig {
            libc::SIGXCPU => KillReason::CpuLimit,
            libc::SIGKILL if cpu_spent => KillReason::CpuLimit,
            libc::SIGABRT | libc::SIGSEGV | libc::SIGBUS if mentions_oom => KillReason::MemoryLimit,
            libc::SIGXFSZ => KillReason::FileSizeLimit,
            _ => KillReason::Signal(sig),
        });
    }
    match libc::WEXITSTATUS(status) {
        0 => Verdict::Success,
        _ if mentions_oom => Verdict::Killed(KillReason::MemoryLimit),
        _ if stderr.windows(14).any(|w| w == b"File too large") => {
            Verdict::Killed(KillReason::FileSizeLimit)
        }
        code => Verdict::Failed(code),
    }
}
