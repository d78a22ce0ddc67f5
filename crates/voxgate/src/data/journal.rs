//! The settlement journal: quota settlements that could not be written because the store
//! was unavailable (down, unreachable, its disk full) wait here, on disk and fsync'd, and are
//! replayed once it answers again. A settlement names its hold, and the store settles a hold
//! once (`Store::settle_quota`), so replaying an entry twice (after a crash mid-replay, or
//! by two processes at once) never charges twice.
//!
//! - `<data_dir>/journal/settlements.jsonl` (0600, one JSON object per line) takes appends;
//!   `journal/lock` is `flock`ed for each append and for each hand-over, so every process on
//!   the data directory shares it and a restarted process replays what a crashed one left.
//! - A replay takes the whole file over by renaming it (`replaying-<random>.jsonl`) under the
//!   lock, applies it without the lock (appends are never held up by the store), writes back
//!   what the store could not take, and only then deletes its copy: a crash at any point
//!   leaves every entry in some file.
//! - Bounded: at most [`MAX_BYTES`] on disk. When the disk cannot take an entry (full, or
//!   the journal at its bound) it is kept in memory (at most [`MAX_IN_MEMORY`] entries) and
//!   replayed with the rest; beyond that it is dropped, counted and logged as an error.

use std::fs::File;
use std::io::{BufRead as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::data::store::{QuotaCell, Store, StoreError};

/// The most the journal file may hold (about 20,000 settlements).
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Entries kept in memory when the disk cannot take them.
pub const MAX_IN_MEMORY: usize = 10_000;

/// One write that waits for the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// `Store::settle_quota(hold, cell, actual)`.
    Settle {
        hold: String,
        subject: String,
        metric: String,
        window_start: i64,
        actual: i64,
    },
}

impl Entry {
    async fn apply(&self, store: &dyn Store) -> Result<(), StoreError> {
        match self {
            Entry::Settle {
                hold,
                subject,
                metric,
                window_start,
                actual,
            } => {
                let cell = QuotaCell {
                    subject,
                    metric,
                    window_start: *window_start,
                };
                store.settle_quota(hold, &cell, *actual).await.map(|_| ())
            }
        }
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub applied: usize,
    /// Still waiting (the store went away again).
    pub pending: usize,
}

/// The journal of one data directory.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    memory: Mutex<Vec<Entry>>,
}

impl Journal {
    /// The journal under `data_dir` (the directory is created, 0700, on first use).
    pub fn new(data_dir: &Path) -> Arc<Self> {
        Arc::new(Self {
            dir: data_dir.join("journal"),
            memory: Mutex::new(Vec::new()),
        })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("settlements.jsonl")
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `entry` until the store takes it: on disk (fsync'd) when it can, else in
    /// memory; `false` when it had to be dropped (both full).
    pub async fn append(self: &Arc<Self>, entry: Entry) -> bool {
        let journal = Arc::clone(self);
        let line = vec![entry.clone()];
        let written = tokio::task::spawn_blocking(move || journal.append_to_disk(&line))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match written {
            Ok(()) => true,
            Err(err) => self.keep_in_memory(vec![entry], &err),
        }
    }

    fn keep_in_memory(&self, entries: Vec<Entry>, err: &std::io::Error) -> bool {
        let mut memory = self.memory();
        let room = MAX_IN_MEMORY.saturating_sub(memory.len());
        let dropped = entries.len().saturating_sub(room);
        memory.extend(entries.into_iter().take(room));
        if dropped > 0 {
            tracing::error!(error = %err, dropped, "settlement journal full: quota settlements were dropped");
            false
        } else {
            tracing::warn!(error = %err, "settlement journal not writable; kept in memory until the store returns");
            true
        }
    }

    /// Appends `entries` to the journal file under the lock, fsync'd.
    fn append_to_disk(&self, entries: &[Entry]) -> std::io::Result<()> {
        let mut text = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut text, entry).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        let _lock = self.lock()?;
        let file = File::options()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.file())?;
        // An existing file keeps its owner-only mode whatever made it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        if file.metadata()?.len() + text.len() as u64 > MAX_BYTES {
            return Err(std::io::Error::other("the journal is at its size bound"));
        }
        (&file).write_all(&text)?;
        file.sync_data()
    }

    /// The exclusive lock every process takes to append or take the file over.
    fn lock(&self) -> std::io::Result<Locked> {
        crate::util::private_dir(&self.dir)?;
        let file = File::options()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(self.dir.join("lock"))?;
        // SAFETY: flock on a descriptor we own and keep open; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Locked(file))
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.memory().is_empty()
            && std::fs::read_dir(&self.dir).map_or(true, |entries| {
                !entries.flatten().any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".jsonl") && e.metadata().is_ok_and(|m| m.len() > 0)
                })
            })
    }

    /// Applies waiting entries in order, stopping at the first outage and keeping the
    /// rest. An entry the store refuses for another reason (it cannot succeed later either)
    /// is logged and dropped.
    pub async fn replay(self: &Arc<Self>, store: &dyn Store) -> Replayed {
        let journal = Arc::clone(self);
        let taken = tokio::task::spawn_blocking(move || journal.take_over())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let (files, mut entries) = match taken {
            Ok(taken) => taken,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the settlement journal");
                (Vec::new(), Vec::new())
            }
        };
        entries.append(&mut self.memory());
        let mut done = Replayed::default();
        let mut rest = entries.into_iter();
        let mut kept = Vec::new();
        while let Some(entry) = rest.next() {
            match entry.apply(store).await {
                Ok(()) => done.applied += 1,
                Err(err) if err.is_outage() => {
                    kept.push(entry);
                    kept.extend(rest);
                    break;
                }
                Err(err) => {
                    tracing::error!(error = %err, "a journaled settlement was refused by the store and dropped");
                }
            }
        }
        done.pending = kept.len();
        // What is left goes back into the journal before the taken copies are deleted.
        let journal = Arc::clone(self);
        let back = kept.clone();
        let written = tokio::task::spawn_blocking(move || {
            if !back.is_empty() {
                journal.append_to_disk(&back)?;
            }
            for file in files {
                std::fs::remove_file(file)?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(err) = written {
            // The taken copies stay (a later replay applies them again, harmlessly); what
            // could not be written back is kept in memory.
            self.keep_in_memory(kept, &err);
        }
        done
    }

    /// Under the lock, renames the journal file to a private name, then reads every taken
    /// file (this one and any a crashed replay left). Returns the files and their entries.
    fn take_over(&self) -> std::io::Result<(Vec<PathBuf>, Vec<Entry>)> {
        {
            let _lock = self.lock()?;
            if self.file().exists() {
                let name = format!(
                    "replaying-{}.jsonl",
                    crate::util::hex(&crate::util::random_bytes::<6>())
                );
                std::fs::rename(self.file(), self.dir.join(name))?;
                File::open(&self.dir)?.sync_all()?;
            }
        }
        let mut files = Vec::new();
        let mut entries = Vec::new();
        for found in std::fs::read_dir(&self.dir)?.flatten() {
            let name = found.file_name();
            if name.to_string_lossy().starts_with("replaying-") {
                let path = found.path();
                entries.extend(read_entries(&File::open(&path)?));
                files.push(path);
            }
        }
        Ok((files, entries))
    }
}

/// Every readable entry of a journal file, oldest first.
fn read_entries(file: &File) -> Vec<Entry> {
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str(&l) {
            Ok(entry) => Some(entry),
            Err(err) => {
                // A torn last line (a crash mid-write) was never acknowledged.
                tracing::warn!(error = %err, "skipped an unreadable settlement journal line");
                None
            }
        })
        .collect()
}

/// An exclusive `flock` on the journal's lock file, released when dropped (closed).
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: as in `Journal::lock`.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
