//! Binary validation: what may be run at all, and what it needs to read.

use super::*;

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
