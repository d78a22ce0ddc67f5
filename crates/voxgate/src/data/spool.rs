//! Temporary files, per process: each process that needs them (`serve`, or a CLI command
//! that builds engines) owns a [`WorkDir`] under `<data_dir>/tmp/<pid>-<random>/` (0700),
//! holding `uploads/` (the upload spool) and `sandbox/` (sandboxed engines' per-run work
//! directories). Nothing ever deletes another process's directory while that process lives:
//! each work directory holds an exclusive `flock` on its `lock` file for as long as it
//! exists, and a directory is swept only when its lock can be taken, that is when its owner
//! is gone (a crash, a kill). So a CLI command run beside a live server never disturbs it.
//!
//! Uploads are spooled under random names, created 0600, and removed when the request ends
//! ([`TempUpload`] deletes on drop) or, after a crash, with the dead process's directory.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::util::private_dir;

/// This process's private temporary directory; removed when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    /// Open for the directory's lifetime: the exclusive lock says "alive".
    _lock: File,
}

impl WorkDir {
    /// Creates this process's directory under `<data_dir>/tmp`, first sweeping the
    /// directories of processes that are gone.
    pub fn create(data_dir: &Path) -> std::io::Result<Self> {
        let root = data_dir.join("tmp");
        private_dir(&root)?;
        let swept = sweep_abandoned(&root);
        if swept > 0 {
            tracing::info!(
                directories = swept,
                "removed temporary files left by processes that ended"
            );
        }
        let name = format!(
            "{}-{}",
            std::process::id(),
            crate::util::hex(&crate::util::random_bytes::<6>())
        );
        let path = root.join(name);
        private_dir(&path)?;
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path.join("lock"))?;
        if !try_lock(&lock) {
            return Err(std::io::Error::other("cannot lock a fresh work directory"));
        }
        private_dir(&path.join("uploads"))?;
        Ok(Self { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The upload spool inside this directory.
    pub fn uploads(&self) -> UploadDir {
        UploadDir {
            path: self.path.join("uploads"),
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Takes the exclusive lock without waiting.
fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a file descriptor we own and keep open; no memory is involved.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes every directory under `root` whose owner no longer holds its lock; returns how
/// many. A directory without a lock file is being created (or is not ours): left alone
/// unless it is an hour old.
fn sweep_abandoned(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut swept = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let abandoned = match File::options().write(true).open(path.join("lock")) {
            // The owner is gone exactly when its exclusive lock can be taken.
            Ok(lock) => try_lock(&lock),
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| crate::util::older_than(t, std::time::Duration::from_secs(3600))),
        };
        if abandoned && std::fs::remove_dir_all(&path).is_ok() {
            swept += 1;
        }
    }
    swept
}

/// The private directory uploads are spooled to.
#[derive(Debug, Clone)]
pub struct UploadDir {
    path: PathBuf,
}

impl UploadDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes spool files older than `age` (abandoned: requests end long before); returns
    /// how many.
    pub async fn sweep_older_than(&self, age: std::time::Duration) -> u64 {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&path) else {
                return 0;
            };
            let mut swept = 0;
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| crate::util::older_than(t, age));
                if old && std::fs::remove_file(entry.path()).is_ok() {
                    swept += 1;
                }
            }
            swept
        })
        .await
        .unwrap_or(0)
    }

    /// A new, empty, private file under a random name.
    pub async fn create(&self) -> std::io::Result<(TempUpload, tokio::fs::File)> {
        let path = self
            .path
            .join(format!("{}.upload", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        Ok((TempUpload { path }, file))
    }
}

/// A spooled upload; the file is removed when this is dropped.
#[derive(Debug)]
pub struct TempUpload {
    path: PathBuf,
}

impl TempUpload {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, "could not remove a spooled upload");
        }
    }
}

/// An uploaded file, spooled: what the client called it (for the extension check only,
/// never for storage) and its length.
#[derive(Debug)]
pub struct SpooledFile {
    pub temp: TempUpload,
    pub len: u64,
    pub filename: String,
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    /// Two live work directories on one data dir never touch each other (a CLI command
    /// beside a running server); a dead one is swept by the next process that starts.
    #[test]
    fn live_directories_survive_and_dead_ones_are_swept() {
        let data = tempfile::tempdir().expect("tempdir");
        let server = WorkDir::create(data.path()).expect("server");
        let upload = server.uploads().path().join("in-flight.upload");
        std::fs::write(&upload, b"audio").expect("write");
        assert_eq!(mode(server.path()), 0o700);
        assert_eq!(mode(server.uploads().path()), 0o700);

        let cli = WorkDir::create(data.path()).expect("cli");
        assert!(upload.exists(), "a live server's spool is never swept");
        drop(cli);

        // A crashed process: its directory is there, nobody holds its lock.
        let dead = data.path().join("tmp").join("999999-dead");
        std::fs::create_dir_all(dead.join("uploads")).expect("mkdir");
        std::fs::write(dead.join("lock"), b"").expect("lock file");
        std::fs::write(dead.join("uploads/left.upload"), b"old").expect("write");
        let next = WorkDir::create(data.path()).expect("next");
        assert!(!dead.exists(), "the dead process's files are swept");
        assert!(upload.exists(), "the live server's files stay");
        let owned = server.path().to_path_buf();
        drop(server);
        assert!(!owned.exists(), "a work directory goes with its owner");
        drop(next);
    }

    #[tokio::test]
    async fn spooled_files_are_private_and_removed_on_drop() {
        let data = tempfile::tempdir().expect("tempdir");
        let work = WorkDir::create(data.path()).expect("work dir");
        let (temp, _file) = work.uploads().create().await.expect("create");
        let path = temp.path().to_path_buf();
        assert_eq!(mode(&path), 0o600);
        drop(temp);
        assert!(!path.exists());
    }
}
