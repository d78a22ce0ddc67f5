//! What voxgate keeps and for how long: encryption at rest, the speech cache, the audit
//! log's checkpoints, retention.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// How long each kind of stored content is kept; a background sweeper enforces it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Stored voice references, days after creation (0: until deleted).
    pub voice_days: u64,
    /// Spooled uploads older than this are abandoned and removed (requests end long before).
    pub upload_minutes: u64,
    /// How often the sweeper runs.
    pub sweep_interval_secs: u64,
}

/// The tamper-evident audit log's checkpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The log's name in its checkpoints (and the signing key's name): no spaces, no `+`.
    pub origin: String,
    /// The Ed25519 signing secret (at least 32 bytes), usually from
    /// `VOXGATE_AUDIT__SIGNING_KEY`; never stored in the database.
    #[serde(default)]
    pub signing_key: Option<SecretString>,
    /// Or a file holding it. Empty: `<data_dir>/secrets/audit_signing_key`, created on first use.
    pub signing_key_file: PathBuf,
    /// Where signed checkpoints are also written, for an operator to ship off this machine.
    /// Empty: `<data_dir>/audit-witness`.
    pub witness_dir: PathBuf,
    /// A checkpoint every this many events …
    pub checkpoint_every: u32,
    /// … or this often when fewer arrived.
    pub checkpoint_interval_secs: u64,
}

/// The encrypted speech cache (for tiers with `cache = true`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// All entries together; the least recently used go first.
    pub max_bytes: u64,
    /// Larger responses are not kept.
    pub max_entry_bytes: u64,
    /// How long an entry answers requests.
    pub ttl_secs: u64,
    /// How much longer an expired entry is kept to answer when every engine of the chain
    /// fails (`x-voxgate-cache: stale`); 0 disables that.
    pub stale_if_error_secs: u64,
}

/// Encryption at rest for what voxgate keeps of users' content.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The master key (at least 32 bytes), usually from `VOXGATE_STORAGE__MASTER_KEY`.
    #[serde(default)]
    pub master_key: Option<SecretString>,
    /// A file holding the master key. Empty: `<data_dir>/secrets/master_key`, created on first
    /// use.
    pub master_key_file: PathBuf,
}
