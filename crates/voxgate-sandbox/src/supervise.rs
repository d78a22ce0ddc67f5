//! Supervision of a running child (parent side): feeding stdin, draining stdout/stderr with
//! caps, the wall-clock deadline, killing and reaping the group, classifying how it ended.

use super::*;

/// Blocks SIGPIPE in the calling thread while we write to the child's stdin, so a child that
/// exits early yields `EPIPE` instead of killing a host that did not ignore SIGPIPE. A pending
/// thread-directed SIGPIPE is consumed before the old mask is restored.
pub(crate) struct SigpipeBlock {
    old: libc::sigset_t,
}

impl SigpipeBlock {
    pub(crate) fn new() -> Self {
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
pub(crate) fn supervise(
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

/// SIGKILL the whole process group, then reap the leader, then kill the group again until no
/// member is left. The leader is not reaped before the first group kill, so `-pid` cannot name
/// a recycled group; after it, the group id stays reserved while any member lives. Fails
/// (rather than inventing an exit status) if the leader cannot be reaped, e.g. because the
/// host set `SIGCHLD` to `SIG_IGN`.
fn kill_group_and_reap(pid: libc::pid_t) -> io::Result<(libc::c_int, libc::rusage)> {
    // SAFETY: kill/wait4 with integer arguments and valid out-pointers to stack values.
    let reaped = unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL); // in case the group is gone (e.g. setsid failed)
        let mut status = 0;
        let mut rusage: libc::rusage = std::mem::zeroed();
        loop {
            if libc::wait4(pid, &mut status, 0, &mut rusage) == pid {
                break Ok((status, rusage));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                break Err(e);
            }
        }
    };
    // A member forked while the first kill was being delivered, or one that was stopped, is
    // caught here; members already dead are zombies until their new parent reaps them.
    for _ in 0..100 {
        // SAFETY: kill with integer arguments.
        if unsafe { libc::kill(-pid, libc::SIGKILL) } != 0 || !group_has_live_members(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    reaped
}

/// Whether any process of group `pgid` is still running (zombies do not count).
fn group_has_live_members(pgid: libc::pid_t) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after the command name: state ppid pgrp …
        let mut rest = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace();
        let state = rest.next().unwrap_or("Z");
        let pgrp = rest.nth(1).and_then(|p| p.parse::<libc::pid_t>().ok());
        pgrp == Some(pgid) && state != "Z" && state != "X"
    })
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
