//! The settlement journal: quota settlements that could not be written because the store
//! was unavailable (down, unreachable, its disk full) wait here, on disk and fsync'd, and are
//! replayed in order once it answers again. A settlement names its hold, and the store
//! settles a hold once (`Store::settle_quota`), so a replay that is interrupted and run
//! again never charges twice.
//!
//! - One file, `<data_dir>/journal/settlements.jsonl` (0600, one JSON object per line),
//!   shared by every process on the data directory under an exclusive `flock` held for each
//!   append and each replay, so a restarted process replays what a crashed one left.
//! - Bounded: at most [`MAX_BYTES`] on disk. When the disk cannot take an entry (full, or
//!   the journal at its bound) it is kept in memory (at most [`MAX_IN_MEMORY`] entries) and
//!   replayed with the rest; beyond that it is dropped, counted and logged as an error.

use std::fs::File;
use std::io::{BufRead as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
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
    path: PathBuf,
    memory: Mutex<Vec<Entry>>,
}

impl Journal {
    /// The journal under `data_dir` (the directory is created, 0700, on first use).
    pub fn new(data_dir: &Path) -> Arc<Self> {
        Arc::new(Self {
            path: data_dir.join("journal").join("settlements.jsonl"),
            memory: Mutex::new(Vec::new()),
        })
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `entry` until the store takes it: on disk (fsync'd) when it can, else in
    /// memory; `false` when it had to be dropped (both full).
    pub async fn append(self: &Arc<Self>, entry: Entry) -> bool {
        let journal = Arc::clone(self);
        let line = entry.clone();
        let written = tokio::task::spawn_blocking(move || journal.append_to_disk(&line))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match written {
            Ok(()) => true,
            Err(err) => {
                let mut memory = self.memory();
                if memory.len() < MAX_IN_MEMORY {
                    tracing::warn!(error = %err, "settlement journal not writable; kept in memory until the store returns");
                    memory.push(entry);
                    true
                } else {
                    tracing::error!(error = %err, "settlement journal full: a quota settlement was dropped");
                    false
                }
            }
        }
    }

    fn append_to_disk(&self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let file = self.open()?;
        let _lock = Locked::take(&file)?;
        if file.metadata()?.len() + line.len() as u64 > MAX_BYTES {
            return Err(std::io::Error::other("the journal is at its size bound"));
        }
        (&file).write_all(&line)?;
        file.sync_data()
    }

    fn open(&self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent() {
            crate::util::private_dir(dir)?;
        }
        File::options()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&self.path)
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.memory().is_empty() && std::fs::metadata(&self.path).map_or(true, |m| m.len() == 0)
    }

    /// Applies waiting entries in order, stopping at the first outage and keeping the
    /// rest. An entry the store refuses for another reason (it cannot succeed later
    /// either) is logged and dropped.
    pub async fn replay(self: &Arc<Self>, store: &dyn Store) -> Replayed {
        let mut done = Replayed::default();
        let file = match self.open() {
            Ok(file) => Some(file),
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the settlement journal");
                None
            }
        };
        let _lock = file.as_ref().and_then(|f| Locked::take(f).ok());
        let mut entries: Vec<Entry> = file.as_ref().map(read_entries).unwrap_or_default();
        entries.append(&mut self.memory());
        let mut rest = entries.into_iter();
        while let Some(entry) = rest.next() {
            match entry.apply(store).await {
                Ok(()) => done.applied += 1,
                Err(err) if err.is_outage() => {
                    let mut kept = vec![entry];
                    kept.extend(rest);
                    done.pending = kept.len();
                    self.keep(file.as_ref(), kept);
                    return done;
                }
                Err(err) => {
                    tracing::error!(error = %err, "a journaled settlement was refused by the store and dropped");
                }
            }
        }
        self.keep(file.as_ref(), Vec::new());
        done
    }

    /// Rewrites the journal with `kept` (still under the caller's lock); what the disk
    /// cannot take stays in memory.
    fn keep(&self, file: Option<&File>, kept: Vec<Entry>) {
        let mut text = Vec::new();
        for entry in &kept {
            if serde_json::to_writer(&mut text, entry).is_ok() {
                text.push(b'\n');
            }
        }
        let written = file.is_some_and(|file| {
            file.set_len(0).is_ok() && (&*file).write_all(&text).is_ok() && file.sync_data().is_ok()
        });
        if !written && !kept.is_empty() {
            let mut memory = self.memory();
            memory.extend(kept);
            memory.truncate(MAX_IN_MEMORY);
        }
    }
}

/// Every readable entry of the journal file, oldest first.
fn read_entries(file: &File) -> Vec<Entry> {
    let mut reader = std::io::BufReader::new(file);
    let _ = std::io::Seek::rewind(&mut reader);
    reader
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

/// An exclusive `flock` on the journal file, released when dropped.
struct Locked<'a>(&'a File);

impl<'a> Locked<'a> {
    fn take(file: &'a File) -> std::io::Result<Self> {
        // SAFETY: flock on a descriptor we own and keep open; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(file))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
