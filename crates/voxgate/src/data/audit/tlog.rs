//! The tamper-evident audit log: every audit event is a leaf of an RFC 6962 Merkle tree
//! ([`super::merkle`]) at a dense position; the tree's size and root are signed with Ed25519
//! as C2SP checkpoints ([`super::checkpoint`]) every `checkpoint_every` events or
//! `checkpoint_interval_secs`, kept in the database and written to a witness directory
//! outside it (for the operator to ship elsewhere). The signing key never enters the
//! database. [`verify`] recomputes everything and names the first bad position.
//!
//! What [`verify`] detects, and how exactly it can place the damage:
//! - an edited field: the stored leaf hash no longer matches the row → that position;
//! - a deleted row or a reordered pair: a position is missing or holds another leaf → that
//!   position;
//! - a truncated tail or a rollback to an older state: a checkpoint (witness or database)
//!   is larger than the log → the log's size;
//! - a rewritten chain (rows and leaf hashes recomputed without the key): the checkpoint
//!   signatures fail, or the recomputed roots disagree with the signed ones → the first
//!   position after the last checkpoint that still agrees (the damage lies between it and
//!   the first disagreeing checkpoint).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sha2::Digest as _;

use super::checkpoint::{self, Checkpoint, Signer, Verifier};
use super::merkle::{self, Hash};
use crate::config::AuditConfig;
use crate::data::store::{AuditRecord, Store};
use crate::util::hex;

/// The bytes a leaf hashes: the event with its position, as a JSON array (fixed order).
pub fn entry_bytes(r: &AuditRecord) -> Vec<u8> {
    serde_json::to_vec(&(
        r.idx,
        r.at,
        &r.kind,
        &r.actor,
        &r.account_id,
        &r.subject,
        &r.source,
        &r.detail,
    ))
    .unwrap_or_default()
}

/// The hex leaf hash stored beside an event.
pub fn leaf_hex(r: &AuditRecord) -> String {
    hex(&merkle::leaf_hash(&entry_bytes(r)))
}

/// The signer and where checkpoints go.
#[derive(Debug)]
pub struct Tlog {
    store: Arc<dyn Store>,
    signer: Signer,
    origin: String,
    witness: PathBuf,
    every: i64,
    interval: Duration,
    /// The size of the last signed checkpoint.
    last: AtomicI64,
    /// The tree's right edge over every leaf read so far: each checkpoint reads only the
    /// events appended since the previous one.
    frontier: tokio::sync::Mutex<merkle::Frontier>,
}

/// The Ed25519 key from the configured secret or a generated 0600 file; the seed is
/// SHA-256 of the secret.
fn signer(config: &AuditConfig, data_dir: &Path) -> anyhow::Result<Signer> {
    let secret = crate::data::secrets::load_or_create(
        config.signing_key.as_ref(),
        &config.signing_key_file,
        data_dir,
        "audit_signing_key",
    )?;
    let seed: [u8; 32] =
        sha2::Sha256::digest(secrecy::ExposeSecret::expose_secret(&secret).as_bytes()).into();
    Signer::from_seed(&config.origin, seed)
        .map_err(|e| anyhow::anyhow!("audit.origin {:?}: {e}", config.origin))
}

/// The witness directory: configured, or `<data_dir>/audit-witness`.
pub fn witness_dir(config: &AuditConfig, data_dir: &Path) -> PathBuf {
    if config.witness_dir.as_os_str().is_empty() {
        data_dir.join("audit-witness")
    } else {
        config.witness_dir.clone()
    }
}

/// The verifier key of this deployment (`<origin>+<keyid>+<key>`).
pub fn verifier_key(config: &AuditConfig, data_dir: &Path) -> anyhow::Result<String> {
    Ok(signer(config, data_dir)?.verifier_key())
}

impl Tlog {
    /// Loads (or creates) the signing key and prepares the witness directory, where the
    /// verifier key is written as `vkey`.
    pub fn open(
        config: &AuditConfig,
        data_dir: &Path,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Arc<Self>> {
        let signer = signer(config, data_dir)?;
        let witness = witness_dir(config, data_dir);
        std::fs::create_dir_all(&witness)
            .with_context(|| format!("cannot create the audit witness {}", witness.display()))?;
        std::fs::write(witness.join("vkey"), format!("{}\n", signer.verifier_key()))
            .with_context(|| format!("cannot write to {}", witness.display()))?;
        Ok(Arc::new(Self {
            store,
            signer,
            origin: config.origin.clone(),
            witness,
            every: i64::from(config.checkpoint_every.max(1)),
            interval: Duration::from_secs(config.checkpoint_interval_secs.max(1)),
            last: AtomicI64::new(-1),
            frontier: tokio::sync::Mutex::new(merkle::Frontier::new()),
        }))
    }

    /// Signs a checkpoint of the whole log if it grew since the last one; returns its size.
    pub async fn checkpoint(&self) -> anyhow::Result<Option<i64>> {
        let mut frontier = self.frontier.lock().await;
        let read = i64::try_from(frontier.size()).unwrap_or(i64::MAX);
        for row in self.store.audit_log_from(read).await? {
            frontier.push(merkle::leaf_hash(&entry_bytes(&row)));
        }
        let size = i64::try_from(frontier.size()).unwrap_or(i64::MAX);
        if size == 0 || size <= self.last.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let note = self.signer.sign(&Checkpoint {
            origin: self.origin.clone(),
            size: frontier.size(),
            root: frontier.root(),
        })?;
        self.store
            .add_checkpoint(size, crate::util::now(), &note)
            .await?;
        let path = self.witness.join(format!("checkpoint-{size:012}.note"));
        let tmp = self.witness.join(format!(".checkpoint-{size:012}.tmp"));
        tokio::fs::write(&tmp, &note).await?;
        tokio::fs::rename(&tmp, &path).await?;
        self.last.store(size, Ordering::Relaxed);
        Ok(Some(size))
    }

    /// Checkpoints every `checkpoint_every` events or `checkpoint_interval_secs`, whichever
    /// comes first (the log's size is polled once a second).
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut since = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let size = match self.store.audit_size().await {
                    Ok(size) => size,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the audit log");
                        continue;
                    }
                };
                let last = self.last.load(Ordering::Relaxed).max(0);
                if size > last && (size - last >= self.every || since.elapsed() >= self.interval) {
                    match self.checkpoint().await {
                        Ok(_) => since = tokio::time::Instant::now(),
                        Err(e) => {
                            tracing::error!(target: "voxgate::security", error = %format!("{e:#}"), "audit checkpoint failed")
                        }
                    }
                }
            }
        })
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub entries: u64,
    /// Checkpoints whose signature verified (database and witness copies).
    pub checkpoints: usize,
    /// The largest size a verified checkpoint covers.
    pub covered: u64,
    /// The first bad position and why, if any.
    pub first_bad: Option<(u64, String)>,
    /// Why the checkpoints are not fresh enough to vouch for the log, if they are not: the
    /// log could then have been rewritten (and its checkpoints deleted) unnoticed.
    pub stale: Option<String>,
}

/// How fresh the checkpoints must be for [`verify`] to vouch for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Entries the newest checkpoint may lag the log by (`checkpoint_every` plus a grace).
    pub max_lag: u64,
    /// How old the oldest entry no checkpoint covers may be (the interval plus a grace).
    pub max_age_secs: i64,
    /// Only checkpoints in the witness directory count (an off-host copy is mandatory).
    pub require_witness: bool,
}

impl Freshness {
    /// The policy for `config`: half of `checkpoint_every` (at least 10) and 60 seconds of
    /// grace over what the running server guarantees.
    pub fn of(config: &AuditConfig, require_witness: bool) -> Self {
        let every = u64::from(config.checkpoint_every.max(1));
        Self {
            max_lag: every + (every / 2).max(10),
            max_age_secs: i64::try_from(config.checkpoint_interval_secs)
                .unwrap_or(i64::MAX / 2)
                .saturating_add(60),
            require_witness,
        }
    }
}

impl Report {
    fn bad(&mut self, index: u64, why: String) {
        if self.first_bad.as_ref().is_none_or(|(i, _)| index < *i) {
            self.first_bad = Some((index, why));
        }
    }
}

/// Reads the witness directory's checkpoint notes as (file name, note).
fn witness_notes(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut notes = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("checkpoint-") && name.ends_with(".note") {
            notes.push((name, std::fs::read_to_string(entry.path())?));
        }
    }
    notes.sort();
    Ok(notes)
}

/// Recomputes the tree from the rows, checks every stored leaf hash, every checkpoint's
/// signature (database and witness) and root, and names the first bad position.
///
/// Then it judges freshness: a log whose newest valid checkpoint lags it by more than
/// `freshness.max_lag` entries, or whose oldest uncovered entry is older than
/// `freshness.max_age_secs`, is `stale` (so is a non-empty log without any checkpoint):
/// someone with the database could have rewritten it and deleted the checkpoints.
pub async fn verify(
    store: &dyn Store,
    verifier: &Verifier,
    witness: Option<&Path>,
    freshness: &Freshness,
) -> anyhow::Result<Report> {
    // The checkpoints first, then the log: the log only grows and a checkpoint is signed
    // over entries already written, so every entry a checkpoint read here covers is in the
    // log read after it. (The other order would take a checkpoint signed in between for a
    // rolled-back log.) The age of what no checkpoint covers is judged as of then too: a
    // long log read does not make it look older.
    let as_of = crate::util::now();
    let mut notes: Vec<(String, String)> = store
        .checkpoints()
        .await?
        .into_iter()
        .map(|(size, note)| (format!("database checkpoint {size}"), note))
        .collect();
    if let Some(dir) = witness {
        notes.extend(
            witness_notes(dir)?
                .into_iter()
                .map(|(name, note)| (format!("witness {name}"), note)),
        );
    }
    let log = store.audit_log().await?;
    let mut report = Report {
        entries: log.len() as u64,
        checkpoints: 0,
        covered: 0,
        first_bad: None,
        stale: None,
    };
    let mut leaves = Vec::with_capacity(log.len());
    for (i, row) in log.iter().enumerate() {
        let i = i as u64;
        if row.idx != Some(i as i64) {
            report.bad(
                i,
                format!("position {i} is missing (the next row says {:?})", row.idx),
            );
        }
        let leaf = merkle::leaf_hash(&entry_bytes(row));
        if let Some(stored) = &row.leaf_hash
            && *stored != hex(&leaf)
        {
            report.bad(
                i,
                format!("entry {i} does not match its recorded leaf hash"),
            );
        }
        leaves.push(leaf);
    }
    // Row-level findings are exact; checkpoints place what they cannot see.
    let exact = report.first_bad.as_ref().map(|(i, _)| *i);
    // Valid checkpoints by size; the largest one whose root agrees bounds a rewrite.
    let mut valid: Vec<(u64, Hash, String)> = Vec::new();
    // The largest size a valid checkpoint that counts for freshness covers.
    let mut vouched = 0u64;
    for (label, note) in &notes {
        match checkpoint::open(note, verifier) {
            Ok(c) => {
                report.checkpoints += 1;
                valid.push((c.size, c.root, label.clone()));
            }
            Err(e) => {
                // Position unknown: the good checkpoints below place the damage.
                report.bad(
                    report.entries,
                    format!("{label} does not verify ({e}); it was not signed by this log's key"),
                );
            }
        }
    }
    valid.sort_by_key(|(size, ..)| *size);
    let mut last_good = 0u64;
    for (size, root, label) in &valid {
        if *size > report.entries {
            report.bad(
                report.entries,
                format!(
                    "{label} covers {size} entries but the log has {}: truncated or rolled back",
                    report.entries
                ),
            );
            continue;
        }
        if merkle::root(&leaves[..*size as usize]) == *root {
            last_good = last_good.max(*size);
            report.covered = report.covered.max(*size);
            if !freshness.require_witness || label.starts_with("witness ") {
                vouched = vouched.max(*size);
            }
        } else if exact.is_none_or(|e| e >= *size) {
            // No row-level finding explains it: the damage lies after the last checkpoint
            // that agrees (a rewrite that also recomputed the leaf hashes).
            report.bad(
                last_good,
                format!(
                    "{label}: the entries after position {last_good} do not match its signed root"
                ),
            );
        }
    }
    if valid.is_empty() && !notes.is_empty() && report.entries > 0 {
        report.bad(0, "no checkpoint verifies".into());
    }
    let whose = if freshness.require_witness {
        "witness checkpoint"
    } else {
        "checkpoint"
    };
    let lag = report.entries - vouched.min(report.entries);
    if lag > freshness.max_lag {
        report.stale = Some(format!(
            "the newest valid {whose} covers {vouched} of {} entries: more than {} are vouched for by none",
            report.entries, freshness.max_lag
        ));
    } else if let Some(oldest) = log.get(vouched as usize) {
        let age = as_of - oldest.at;
        if age > freshness.max_age_secs {
            report.stale = Some(format!(
                "entry {vouched} is {age} s old and no valid {whose} covers it (at most {} s expected)",
                freshness.max_age_secs
            ));
        }
    }
    Ok(report)
}

/// The verifier to check with: an explicitly given vkey, or `<witness>/vkey`.
pub fn load_verifier(vkey: Option<&str>, witness: &Path) -> anyhow::Result<Verifier> {
    let text = match vkey {
        Some(v) => v.to_owned(),
        None => std::fs::read_to_string(witness.join("vkey"))
            .with_context(|| format!("no vkey given and none in {}", witness.display()))?,
    };
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("not a verifier key: {e:?}"))
}
