//! Confinement prepared in the parent before `fork` (Landlock ruleset, seccomp program,
//! rlimits) and applied in the child by raw syscalls only (`ChildSetup::apply`).

use super::*;

// ---------------------------------------------------------------------------------------------
// Preparation (parent side, before fork: allocation allowed here)

/// How much of the Landlock policy this kernel would enforce (no rule is applied).
pub(crate) fn kernel_landlock() -> LandlockStatus {
    let build = |level| -> Result<RulesetCreated, landlock::RulesetError> {
        let abi = LANDLOCK_ABI;
        Ruleset::default()
            .set_compatibility(level)
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(AccessNet::from_all(abi))?
            .scope(Scope::from_all(abi))?
            .create()
    };
    if build(CompatLevel::HardRequirement).is_ok() {
        return LandlockStatus::FullyEnforced;
    }
    match build(CompatLevel::BestEffort).map(Option::<OwnedFd>::from) {
        Ok(Some(_)) => LandlockStatus::PartiallyEnforced,
        _ => LandlockStatus::NotEnforced,
    }
}

pub(crate) fn prepare_landlock(
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

/// Every namespace flag of `clone`/`unshare`: a child may fork, never make a namespace.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | 0x80/* CLONE_NEWTIME */) as u64;

/// The system calls a sandboxed synthesizer may make, unconditionally: what espeak-ng,
/// festival, a shell, Python and a typical compiled binary need to compute, read their data,
/// write their output and fork helpers. Everything else fails with `EPERM`: among others
/// `socket` (unless `AF_UNIX` is allowed), `connect`, `bind`, `io_uring_*`, `unshare`,
/// `setns`, `setsid`, `setpgid` (so no descendant can leave the process group the supervisor
/// kills), `ptrace`, `process_vm_*`, `keyctl`, `add_key`, `bpf`, `perf_event_open`,
/// `userfaultfd`, `mount` and the new mount API, `pivot_root`, `chroot`, module loading,
/// `kexec_*`, `reboot`, `swapon`, clock setting, `setuid` and friends, `capset`, `mknod`,
/// `personality`, `iopl`, `modify_ldt`, `open_by_handle_at`.
fn allowed_syscalls() -> Vec<libc::c_long> {
    let mut list = vec![
        // Memory and threads.
        libc::SYS_brk,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_mincore,
        libc::SYS_msync,
        libc::SYS_membarrier,
        libc::SYS_futex,
        libc::SYS_set_robust_list,
        libc::SYS_get_robust_list,
        libc::SYS_set_tid_address,
        libc::SYS_rseq,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_sched_getparam,
        libc::SYS_sched_getscheduler,
        libc::SYS_sched_get_priority_max,
        libc::SYS_sched_get_priority_min,
        libc::SYS_getcpu,
        // Processes (clone is allowed below only without namespace flags).
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_clone3, // refused with ENOSYS by the second filter (its flags are in memory)
        libc::SYS_kill,   // Landlock scopes signals to the sandbox's own processes
        libc::SYS_tkill,
        libc::SYS_tgkill,
        libc::SYS_getpid,
        libc::SYS_getppid,
        libc::SYS_gettid,
        libc::SYS_getpgid,
        libc::SYS_getsid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_getresuid,
        libc::SYS_getresgid,
        libc::SYS_getgroups,
        libc::SYS_capget,
        libc::SYS_prctl,
        libc::SYS_prlimit64,
        libc::SYS_getrlimit,
        libc::SYS_getrusage,
        libc::SYS_sysinfo,
        libc::SYS_times,
        libc::SYS_uname,
        libc::SYS_umask,
        libc::SYS_getrandom,
        // Signals and time.
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigsuspend,
        libc::SYS_rt_sigpending,
        libc::SYS_rt_sigtimedwait,
        libc::SYS_sigaltstack,
        libc::SYS_setitimer,
        libc::SYS_getitimer,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_gettimeofday,
        // File descriptors and I/O.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_lseek,
        libc::SYS_close,
        libc::SYS_close_range,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_pipe2,
        libc::SYS_fcntl,
        libc::SYS_flock,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_ftruncate,
        libc::SYS_fallocate,
        libc::SYS_fadvise64,
        libc::SYS_sendfile,
        libc::SYS_copy_file_range,
        libc::SYS_splice,
        libc::SYS_tee,
        libc::SYS_ppoll,
        libc::SYS_pselect6,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_eventfd2,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_settime,
        libc::SYS_timerfd_gettime,
        libc::SYS_signalfd4,
        libc::SYS_memfd_create,
        // An anonymous connected AF_UNIX pair reaches nothing; `socket` itself is refused.
        libc::SYS_socketpair,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_shutdown,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        // Files (Landlock decides which).
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_newfstatat,
        libc::SYS_fstat,
        libc::SYS_statx,
        libc::SYS_statfs,
        libc::SYS_fstatfs,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_readlinkat,
        libc::SYS_getdents64,
        libc::SYS_getcwd,
        libc::SYS_chdir,
        libc::SYS_fchdir,
        libc::SYS_mkdirat,
        libc::SYS_unlinkat,
        libc::SYS_renameat2,
        libc::SYS_linkat,
        libc::SYS_symlinkat,
        libc::SYS_fchmod,
        libc::SYS_fchmodat,
        libc::SYS_utimensat,
        libc::SYS_truncate,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        libc::SYS_arch_prctl,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_pause,
        libc::SYS_alarm,
        libc::SYS_time,
        libc::SYS_dup2,
        libc::SYS_pipe,
        libc::SYS_poll,
        libc::SYS_select,
        libc::SYS_epoll_create,
        libc::SYS_epoll_wait,
        libc::SYS_eventfd,
        libc::SYS_signalfd,
        libc::SYS_getpgrp,
        libc::SYS_open,
        libc::SYS_creat,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_access,
        libc::SYS_readlink,
        libc::SYS_getdents,
        libc::SYS_mkdir,
        libc::SYS_rmdir,
        libc::SYS_unlink,
        libc::SYS_rename,
        libc::SYS_renameat,
        libc::SYS_link,
        libc::SYS_symlink,
        libc::SYS_chmod,
        libc::SYS_utimes,
    ]);
    list
}

/// The seccomp programs, installed in order: an allow-list (anything not listed fails with
/// `EPERM`), then `clone3` answered `ENOSYS` (its flags live in memory a filter cannot read,
/// and libc falls back to `clone`, whose flags it can).
pub(crate) fn compile_seccomp(allow_unix: bool) -> Result<[BpfProgram; 2], SandboxError> {
    let e = SandboxError::Seccomp;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = allowed_syscalls()
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    // clone: only without namespace flags.
    let no_namespace = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS),
        0,
    )
    .map_err(e)?;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![no_namespace]).map_err(e)?],
    );
    // ioctl: anything but pushing input into a terminal (TIOCSTI) or TIOCLINUX.
    #[allow(
        clippy::unnecessary_cast,
        reason = "c_ulong is u64 here but u32 on 32-bit targets"
    )]
    let not = |request: libc::c_ulong| {
        SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, request as u64)
    };
    rules.insert(
        libc::SYS_ioctl,
        vec![
            SeccompRule::new(vec![
                not(libc::TIOCSTI).map_err(e)?,
                not(libc::TIOCLINUX).map_err(e)?,
            ])
            .map_err(e)?,
        ],
    );
    if allow_unix {
        let unix = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            libc::AF_UNIX as u64,
        )
        .map_err(e)?;
        rules.insert(
            libc::SYS_socket,
            vec![SeccompRule::new(vec![unix.clone()]).map_err(e)?],
        );
        rules.insert(libc::SYS_connect, Vec::new());
    }
    let arch: seccompiler::TargetArch = std::env::consts::ARCH.try_into().map_err(e)?;
    let allow_list = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(e)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(e)?;
    Ok([
        allow_list.try_into().map_err(e)?,
        clone3.try_into().map_err(e)?,
    ])
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

pub(crate) fn prepare_rlimits(l: &Limits) -> [(Resource, libc::rlimit); 6] {
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
pub(crate) struct ChildSetup {
    pub(crate) rlimits: [(Resource, libc::rlimit); 6],
    pub(crate) parent: libc::pid_t,
    /// Owned so that the parent's copy closes when the `Command` (holding this) is dropped.
    pub(crate) ruleset_fd: Option<OwnedFd>,
    /// Installed in order (see [`compile_seccomp`]).
    pub(crate) bpf: [BpfProgram; 2],
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
    pub(crate) fn apply(&self) -> io::Result<()> {
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
            for bpf in &self.bpf {
                let prog = SockFprog {
                    len: bpf.len() as libc::c_ushort,
                    filter: bpf.as_ptr(),
                };
                check(libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const SockFprog,
                    0,
                    0,
                ) as _)?;
            }
        }
        Ok(())
    }
}
