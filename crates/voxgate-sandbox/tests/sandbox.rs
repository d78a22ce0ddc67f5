//! End-to-end tests: every test runs real children under the full sandbox, and the ones whose
//! outcome could be "vacuously" right also run an unsandboxed control that must differ.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use voxgate_sandbox::{
    BinaryProblem, KillReason, LandlockStatus, SandboxError, SandboxSpec, run, validate_binary,
};

const PY: &str = "/usr/bin/python3";

fn python(script: &str, extra: &[&str]) -> SandboxSpec {
    let mut spec = SandboxSpec::new(validate_binary(Path::new(PY)).expect("python3"));
    spec.args = ["-I", "-S", "-c", script]
        .iter()
        .chain(extra)
        .map(OsString::from)
        .collect();
    spec.timeout = Duration::from_secs(30);
    spec
}

/// Parses `key=value` lines (the format our probe scripts print).
fn kv(out: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn kill_reason(r: Result<voxgate_sandbox::Output, SandboxError>) -> (KillReason, SandboxError) {
    let e = r.expect_err("expected the child to be stopped");
    (
        e.kill_reason()
            .unwrap_or_else(|| panic!("not a kill: {e:?}")),
        e,
    )
}

fn assert_wav(bytes: &[u8]) {
    assert!(
        bytes.len() > 44 + 1000,
        "too short for speech: {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("data chunk");
    assert!(
        bytes.len() > data + 8 + 1000,
        "no samples after the data chunk header"
    );
}

const ECHO: &str = r#"
import os, sys
data = sys.stdin.buffer.read()
sys.stdout.buffer.write(b"\0".join(os.fsencode(a) for a in sys.orig_argv) + b"\0\0" + data)
"#;

#[test]
fn hostile_stdin_arrives_verbatim_and_argv_stays_fixed() {
    let fixed = ["--flag", "two words", "$HOME", "*", ";", "--"];
    let mut spec = python(ECHO, &fixed);
    spec.max_output = 4 << 20;
    let mut expected_argv = vec![PY.as_bytes().to_vec()];
    expected_argv.extend(spec.args.iter().map(|a| a.as_encoded_bytes().to_vec()));
    let big = vec![b'A'; 1 << 20];
    let payloads: [&[u8]; 6] = [
        b"; rm -rf /",
        b"$(id)",
        b"`id`",
        b"--output=/etc/x",
        b"a\0b; $(touch /tmp/pwned)\n\0",
        &big,
    ];
    for payload in payloads {
        let out = run(&spec, payload).expect("echo child");
        let mut expected = expected_argv.join(&b'\0');
        expected.extend_from_slice(b"\0\0");
        expected.extend_from_slice(payload);
        assert_eq!(out.stdout.len(), expected.len());
        assert!(out.stdout == expected, "argv or stdin altered");
        assert_eq!(out.landlock, LandlockStatus::FullyEnforced);
    }
}

#[test]
fn espeak_ng_speaks_hostile_text_without_side_effects() {
    let canary_dir = tempfile::tempdir().unwrap();
    let canary = canary_dir.path().join("canary");
    std::fs::write(&canary, b"alive").unwrap();
    let spec = SandboxSpec::espeak_ng_wav("en-us").unwrap();
    let text = b"; rm -rf / ; $(rm -rf /tmp) `id`\n--output=/etc/x -w /etc/x\nhello world\n";
    let out = run(&spec, text).expect("espeak-ng");
    assert_wav(&out.stdout);
    assert!(canary.exists());
    assert!(!Path::new("/etc/x").exists());
    assert!(
        SandboxSpec::espeak_ng_wav("--stdout").is_err(),
        "option-like voice must be refused"
    );
}

#[test]
fn real_synthesizers_produce_wav_under_the_full_sandbox() {
    let espeak = run(
        &SandboxSpec::espeak_ng_wav("en-us").unwrap(),
        b"Hello from voxgate.",
    )
    .expect("espeak-ng");
    assert_wav(&espeak.stdout);
    assert_eq!(espeak.landlock, LandlockStatus::FullyEnforced);

    let spec = SandboxSpec::text2wave_wav().unwrap();
    assert!(
        spec.read_paths
            .contains(&PathBuf::from("/etc/festival.scm"))
    );
    assert!(
        spec.binary.interpreter().is_some(),
        "text2wave is a festival script"
    );
    let festival = run(&spec, b"Hello from voxgate; rm -rf /.").expect("text2wave");
    assert_wav(&festival.stdout);
    assert_eq!(festival.landlock, LandlockStatus::FullyEnforced);
}

const NET: &str = r#"
import socket
for name, fam, kind in [("inet", socket.AF_INET, socket.SOCK_STREAM),
                        ("inet6", socket.AF_INET6, socket.SOCK_DGRAM),
                        ("netlink", socket.AF_NETLINK, socket.SOCK_RAW),
                        ("unix", socket.AF_UNIX, socket.SOCK_STREAM)]:
    try:
        socket.socket(fam, kind).close()
        print(name + "=0")
    except OSError as e:
        print(name + "=" + str(e.errno))
"#;

#[test]
fn network_sockets_are_denied_with_eperm() {
    let eperm = libc::EPERM.to_string();
    let out = run(&python(NET, &[]), b"").unwrap();
    let r = kv(&out.stdout);
    for family in ["inet", "inet6", "netlink", "unix"] {
        assert_eq!(r[family], eperm, "{family}: {r:?}");
    }
    let mut spec = python(NET, &[]);
    spec.allow_unix_sockets = true;
    let r = kv(&run(&spec, b"").unwrap().stdout);
    assert_eq!((r["inet"].as_str(), r["inet6"].as_str()), ("1", "1"));
    assert_eq!(r["unix"], "0", "AF_UNIX allowed when opted in");

    // Control: the very same probe without the sandbox can create the sockets.
    let plain = Command::new(PY)
        .args(["-I", "-S", "-c", NET])
        .output()
        .unwrap();
    let r = kv(&plain.stdout);
    for family in ["inet", "inet6", "unix"] {
        assert_eq!(r[family], "0", "control {family}: {r:?}");
    }
}

const FS: &str = r#"
import os, stat, sys
def probe(name, fn):
    try:
        fn(); print(name + "=0")
    except OSError as e:
        print(name + "=" + str(e.errno))
secret, inside, other, tmp = sys.argv[1:5]
probe("read_secret", lambda: open(secret).read())
probe("read_passwd", lambda: open("/etc/passwd").read())
probe("read_inside", lambda: open(os.path.join(inside, "ok.txt")).read())
probe("write_inside_view", lambda: open(os.path.join(inside, "new.txt"), "w").write("x"))
probe("write_other", lambda: open(os.path.join(other, "x"), "w").write("x"))
probe("write_tmp", lambda: open(tmp, "w").write("x"))
probe("write_workdir", lambda: open("scratch", "w").write("hi"))
probe("readback_workdir", lambda: open("scratch").read())
print("cwd=" + os.getcwd())
print("mode=" + oct(stat.S_IMODE(os.stat(".").st_mode)))
"#;

#[test]
fn filesystem_view_is_read_only_outside_the_work_dir() {
    let (secret_dir, view, other) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, "top secret").unwrap();
    std::fs::write(view.path().join("ok.txt"), "fine").unwrap();
    // Directly in /tmp (not in a private dir), unique per test process.
    let escape = std::env::temp_dir().join(format!("voxgate-escape-{}", std::process::id()));
    let _ = std::fs::remove_file(&escape);
    let args =
        [&secret, view.path(), other.path(), &escape].map(|p| p.to_str().unwrap().to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut spec = python(FS, &args);
    spec.read_paths.push(view.path().to_owned());
    let out = run(&spec, b"").expect("run");
    assert_eq!(out.landlock, LandlockStatus::FullyEnforced);
    let r = kv(&out.stdout);
    let eacces = libc::EACCES.to_string();
    for denied in [
        "read_secret",
        "read_passwd",
        "write_inside_view",
        "write_other",
        "write_tmp",
    ] {
        assert_eq!(r[denied], eacces, "{denied}: {r:?}");
    }
    for allowed in ["read_inside", "write_workdir", "readback_workdir"] {
        assert_eq!(r[allowed], "0", "{allowed}: {r:?}");
    }
    assert_eq!(r["mode"], "0o700");
    assert!(r["cwd"].starts_with(spec.temp_root.to_str().unwrap()));
    assert!(!Path::new(&r["cwd"]).exists(), "work dir must be removed");
    assert!(!escape.exists());

    // Control: without the sandbox the same probe reads the secret.
    let cwd = tempfile::tempdir().unwrap();
    let mut plain = Command::new(PY);
    plain
        .args(["-I", "-S", "-c", FS])
        .args(&args)
        .current_dir(cwd.path());
    assert_eq!(kv(&plain.output().unwrap().stdout)["read_secret"], "0");
    let _ = std::fs::remove_file(&escape);
}

#[test]
fn environment_is_exactly_the_spec_env() {
    env_check(&[], "");
    env_check(
        &[("LANG", "C.UTF-8"), ("VOXGATE_X", "1")],
        "LANG=C.UTF-8\nVOXGATE_X=1\n",
    );
}

fn env_check(env: &[(&str, &str)], expected: &str) {
    let mut spec = SandboxSpec::new(validate_binary(Path::new("/usr/bin/env")).expect("env"));
    spec.env = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    let out = run(&spec, b"").expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn privileges_are_dropped_and_seccomp_is_active() {
    let script = "print(open('/proc/self/status').read())";
    let mut spec = python(script, &[]);
    spec.read_paths.push("/proc".into());
    let out = run(&spec, b"").expect("run");
    let status: HashMap<_, _> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect();
    for cap in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(status[cap], "0000000000000000", "{cap}");
    }
    assert_eq!(status["NoNewPrivs"], "1");
    assert_eq!(status["Seccomp"], "2");
}

#[test]
fn cpu_limit_kills_busy_loop() {
    let mut spec = python("while True: pass", &[]);
    spec.limits.cpu_secs = 1;
    let start = Instant::now();
    let (reason, _) = kill_reason(run(&spec, b""));
    assert_eq!(reason, KillReason::CpuLimit);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn memory_limit_stops_big_allocation() {
    let script = "b = bytearray(2 << 30); print(len(b))";
    let mut spec = python(script, &[]);
    spec.limits.address_space = 256 << 20;
    let (reason, _) = kill_reason(run(&spec, b""));
    assert_eq!(reason, KillReason::MemoryLimit);
    // Control: with room for it the allocation succeeds, so the limit is what stopped it.
    spec.limits.address_space = 8 << 30;
    assert_eq!(run(&spec, b"").unwrap().stdout, b"2147483648\n");
}

#[test]
fn wall_timeout_kills_the_whole_process_group() {
    let mut spec = python("import time; time.sleep(60)", &[]);
    spec.timeout = Duration::from_millis(500);
    let start = Instant::now();
    assert_eq!(kill_reason(run(&spec, b"")).0, KillReason::Timeout);
    assert!(start.elapsed() < Duration::from_secs(5));

    let script = r#"
import os, sys, time
pid = os.fork()
if pid == 0:
    time.sleep(60); os._exit(0)
sys.stderr.write("grandchild=%d\n" % pid); sys.stderr.flush()
time.sleep(60)
"#;
    let mut spec = python(script, &[]);
    spec.timeout = Duration::from_millis(500);
    let start = Instant::now();
    let (reason, err) = kill_reason(run(&spec, b""));
    assert_eq!(reason, KillReason::Timeout);
    assert!(start.elapsed() < Duration::from_secs(5));
    let SandboxError::Killed { stderr_tail, .. } = err else {
        unreachable!()
    };
    let gpid: i32 = kv(&stderr_tail)["grandchild"].parse().unwrap();
    let gone = |pid: i32| {
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        !alive
            || stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(gpid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(gpid), "grandchild {gpid} survived the group kill");
}

#[test]
fn output_cap_kills_endless_writer() {
    let mut spec = SandboxSpec::new(validate_binary(Path::new("/usr/bin/yes")).unwrap());
    spec.max_output = 64 * 1024;
    let start = Instant::now();
    let (reason, err) = kill_reason(run(&spec, b""));
    assert_eq!(reason, KillReason::OutputLimit);
    let SandboxError::Killed { stdout_len, .. } = err else {
        unreachable!()
    };
    assert_eq!(stdout_len, 64 * 1024);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn child_ignoring_stdin_does_not_deadlock() {
    let out = run(&python("print('ok')", &[]), &vec![b'x'; 8 << 20]).unwrap();
    assert_eq!(out.stdout, b"ok\n");
}

const BIG_WRITE: &str = r#"
import os, signal, sys
if sys.argv[1] == "default": signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
try:
    with open("big", "wb", buffering=0) as f:
        for _ in range(16): f.write(b"x" * (1 << 20))
    print("errno=0")
except OSError as e:
    print("errno=%d" % e.errno)
print("size=%d" % os.path.getsize("big"))
"#;

#[test]
fn file_size_limit_stops_big_file() {
    let mut spec = python(BIG_WRITE, &["ignore"]);
    spec.limits.file_size = 1 << 20;
    let r = kv(&run(&spec, b"").unwrap().stdout);
    assert_eq!(r["errno"], libc::EFBIG.to_string());
    assert_eq!(r["size"], (1 << 20).to_string());
    spec.args.last_mut().unwrap().clone_from(&"default".into());
    assert_eq!(kill_reason(run(&spec, b"")).0, KillReason::FileSizeLimit);
    spec.limits.file_size = 64 << 20; // control
    assert_eq!(kv(&run(&spec, b"").unwrap().stdout)["errno"], "0");
}

#[test]
fn open_files_limit_applies() {
    let script = r#"
fs = []
try:
    for _ in range(100): fs.append(open("/dev/null"))
    print("errno=0")
except OSError as e:
    print("errno=%d" % e.errno)
print("opened=%d" % len(fs))
"#;
    let mut spec = python(script, &[]);
    spec.limits.open_files = 16;
    let r = kv(&run(&spec, b"").unwrap().stdout);
    assert_eq!(r["errno"], libc::EMFILE.to_string());
    assert!(r["opened"].parse::<u32>().unwrap() < 16);
}

#[test]
fn process_limit_applies_to_an_unprivileged_uid() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("!!! SKIPPED: run_as needs a root parent; RLIMIT_NPROC is not testable here");
        return;
    }
    let script = r#"
import os
try:
    pid = os.fork()
    if pid == 0: os._exit(0)
    os.waitpid(pid, 0); print("errno=0")
except OSError as e:
    print("errno=%d" % e.errno)
"#;
    let mut spec = python(script, &[]);
    spec.run_as = Some((65534, 65534));
    spec.limits.processes = 1;
    assert_eq!(
        kv(&run(&spec, b"").unwrap().stdout)["errno"],
        libc::EAGAIN.to_string()
    );
    spec.limits.processes = 64; // control
    assert_eq!(kv(&run(&spec, b"").unwrap().stdout)["errno"], "0");
}

#[test]
fn binary_validation_refuses_unsafe_paths() {
    let problem = |p: &Path| match validate_binary(p) {
        Err(SandboxError::InvalidBinary { problem, .. }) => problem,
        other => panic!("{p:?} accepted: {other:?}"),
    };
    assert!(matches!(
        problem(Path::new("usr/bin/espeak-ng")),
        BinaryProblem::NotAbsolute
    ));
    assert!(matches!(
        problem(Path::new("espeak-ng")),
        BinaryProblem::NotAbsolute
    ));
    assert!(matches!(
        problem(Path::new("/nonexistent/tts")),
        BinaryProblem::Unresolvable(_)
    ));
    assert!(matches!(
        problem(Path::new("/usr/bin")),
        BinaryProblem::NotRegularFile
    ));

    // A directory that is not group/other-writable, so only the file's own mode matters.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = |name: &str, mode: u32, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let ok = file("ok", 0o755, "#!/bin/sh\n");
    let v = validate_binary(&ok).expect("a sane script");
    assert_eq!(
        v.interpreter().unwrap().resolved(),
        Path::new("/usr/bin/dash")
    );
    let ww = file("world-writable", 0o777, "");
    assert!(matches!(
        problem(&ww),
        BinaryProblem::WritableByOthers { mode: 0o777 }
    ));
    let gw = file("group-writable", 0o775, "");
    assert!(matches!(
        problem(&gw),
        BinaryProblem::WritableByOthers { mode: 0o775 }
    ));
    let noexec = file("noexec", 0o644, "");
    assert!(matches!(
        problem(&noexec),
        BinaryProblem::NotExecutable { mode: 0o644 }
    ));
    let bad_interp = file("bad-interp", 0o755, "#!/nonexistent/interp -x\n");
    assert!(matches!(
        problem(&bad_interp),
        BinaryProblem::Interpreter { .. }
    ));
    let rel_interp = file("rel-interp", 0o755, "#!python3\n");
    assert!(matches!(
        problem(&rel_interp),
        BinaryProblem::Interpreter { .. }
    ));

    let open = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let inner = open.path().join("tts");
    std::fs::copy(&ok, &inner).unwrap();
    assert!(matches!(
        problem(&inner),
        BinaryProblem::WritableAncestor { .. }
    ));

    // A symlink is judged by its target; the configured path stays argv[0].
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&ww, &link).unwrap();
    assert!(matches!(
        problem(&link),
        BinaryProblem::WritableByOthers { .. }
    ));
    let py = validate_binary(Path::new(PY)).expect("python3");
    assert_eq!(py.path(), Path::new(PY));
    assert_eq!(py.resolved(), std::fs::canonicalize(PY).unwrap());
}

/// Processes whose command line carries `marker` (alive, not zombies).
fn alive_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if !zombie
            && cmdline
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

/// A hostile child tries every way out of the process group the supervisor kills: `setsid`
/// and `setpgid` (refused by seccomp), a double fork, ignoring SIGTERM. It then exits at once,
/// leaving its descendants behind. After the run, none of them is alive.
#[test]
fn no_descendant_outlives_the_run() {
    let marker = format!("voxgate-hostile-{}", std::process::id());
    let script = r#"
import os, signal, sys, time
errors = []
for attempt in (os.setsid, lambda: os.setpgid(0, 0)):
    try:
        attempt()
    except OSError as e:
        errors.append(e.errno)
print("errors=%s" % ",".join(map(str, errors)), flush=True)
if os.fork() == 0:
    try:
        os.setsid()
    except OSError:
        pass
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.close(1); os.close(2)
        time.sleep(3600)
    os._exit(0)
os._exit(0)
"#;
    let spec = python(script, &[&marker]);
    let out = run(&spec, b"").expect("run");
    let errors = &kv(&out.stdout)["errors"];
    assert_eq!(
        errors,
        &format!("{0},{0}", libc::EPERM),
        "setsid and setpgid refused"
    );
    // Give a straggler the time it would need to show up.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        alive_with(&marker),
        Vec::<i32>::new(),
        "a descendant survived"
    );

    // Control: outside the sandbox the same script does leave a sleeper behind.
    let mut child = Command::new(PY)
        .args(["-I", "-S", "-c", script, &marker])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    child.wait().expect("wait");
    std::thread::sleep(Duration::from_millis(300));
    let survivors = alive_with(&marker);
    assert!(!survivors.is_empty(), "the control must leave a sleeper");
    for pid in survivors {
        // SAFETY: kill with integer arguments.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Namespaces, tracing, kernel keys, BPF, perf, userfaultfd, mounts, modules and kexec are
/// refused with EPERM; `clone3` answers ENOSYS (so libc falls back to `clone`, whose flags the
/// filter checks). The same calls behave differently unsandboxed. (The numbers are x86_64's.)
#[cfg(target_arch = "x86_64")]
#[test]
fn dangerous_system_calls_are_refused() {
    let script = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(name, *args)
    return "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
SYS = {"unshare": 272, "setns": 308, "ptrace": 101, "keyctl": 250, "bpf": 321,
       "perf_event_open": 298, "userfaultfd": 323, "mount": 165, "pivot_root": 155,
       "init_module": 175, "kexec_load": 246, "setsid": 112, "clone3": 435}
print("unshare_user=" + call(SYS["unshare"], 0x10000000))
print("setns=" + call(SYS["setns"], 0, 0))
print("ptrace=" + call(SYS["ptrace"], 0, 0, 0, 0))
print("keyctl=" + call(SYS["keyctl"], 0, 0, 0, 0))
print("bpf=" + call(SYS["bpf"], 0, 0, 0))
print("perf_event_open=" + call(SYS["perf_event_open"], 0, 0, -1, -1, 0))
print("userfaultfd=" + call(SYS["userfaultfd"], 0))
print("mount=" + call(SYS["mount"], 0, 0, 0, 0, 0))
print("pivot_root=" + call(SYS["pivot_root"], 0, 0))
print("init_module=" + call(SYS["init_module"], 0, 0, 0))
print("kexec_load=" + call(SYS["kexec_load"], 0, 0, 0, 0))
print("clone3=" + call(SYS["clone3"], 0, 0))
pid = os.fork()
if pid == 0:
    os._exit(7)
print("fork=%d" % os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#;
    let out = run(&python(script, &[]), b"").expect("run");
    let got = kv(&out.stdout);
    for name in [
        "unshare_user",
        "setns",
        "ptrace",
        "keyctl",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "mount",
        "pivot_root",
        "init_module",
        "kexec_load",
    ] {
        assert_eq!(got[name], "EPERM", "{name}: {got:?}");
    }
    assert_eq!(got["clone3"], "ENOSYS");
    assert_eq!(got["fork"], "7", "ordinary forks still work");

    // Control (only the harmless calls): unsandboxed, clone3 is a real system call and
    // unsharing a user namespace is not refused by a filter.
    let harmless = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    return "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
print("clone3=" + call(435, 0, 0))
print("unshare_user=" + call(272, 0x10000000))
"#;
    let control = Command::new(PY)
        .args(["-I", "-S", "-c", harmless])
        .output()
        .expect("control");
    let control = kv(&control.stdout);
    assert_ne!(control["clone3"], "ENOSYS", "{control:?}");
    assert_ne!(control["unshare_user"], "EPERM", "{control:?}");
}

/// The start-up probe agrees with what a real run reports.
#[test]
fn the_kernel_probe_matches_a_run() {
    let out = run(&python("print('ok')", &[]), b"").expect("run");
    assert_eq!(voxgate_sandbox::kernel_landlock(), out.landlock);
}
