//! Confinement prepared in the parent before `fork` (Landlock ruleset, seccomp program,
//! rlimits) and applied in the child by raw syscalls only (`ChildSetup::apply`).

use super::*;

// ---------------------------------------------------------------------------------------------
// Preparation (parent side, before fork: allocation allowed here)

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

pub(crate) fn compile_seccomp(allow_unix: bool) -> Result<BpfProgram, SandboxError> {
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
    pub(crate) bpf: BpfProgram,
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
