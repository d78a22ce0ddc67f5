//! The store: domain operations on accounts, API keys and audit events, behind one trait
//! with two real implementations: SQLite (embedded default, a file under the data dir) and
//! PostgreSQL (selected by a `postgres://` URL). Only this module contains SQL.

mod guard;
mod sql;

pub use crate::error::StoreOutage;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

pub use guard::GuardedStore;
pub use sql::{PostgresStore, SqliteStore};

/// An account: the owner of keys, quotas and stored artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub contact: Option<String>,
    pub tier: String,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An ephemeral client secret as stored: only its keyed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSecretRecord {
    /// The public id (`ek_<id>_…`).
    pub id: String,
    /// HMAC-SHA-256(pepper, secret).
    pub digest: Vec<u8>,
    /// The key that minted it: the secret works only while that key does.
    pub keyid: String,
    /// The validated session configuration (JSON) a connection with it starts from.
    pub session: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The subjects quota counters are kept under.
pub mod quota_subject {
    /// An account's own counters (`per = "account"`).
    pub fn account(account_id: &str) -> String {
        format!("acct:{account_id}")
    }

    /// A key's counters (`per = "key"`).
    pub fn key(keyid: &str) -> String {
        format!("key:{keyid}")
    }
}

/// One quota counter: a subject's use of a metric in one window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaWindow {
    pub metric: String,
    pub window_start: i64,
    pub used: i64,
    pub reserved: i64,
}

/// A browser session of the web console or the playground, as stored: only the keyed
/// digest of its id (the id itself lives in the browser's HttpOnly cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSessionRecord {
    /// HMAC-SHA-256(pepper, session id).
    pub digest: Vec<u8>,
    /// The key presented at sign-in: the session works only while that key does.
    pub keyid: String,
    /// `console` or `playground`: a session opens one surface only.
    pub surface: String,
    pub created_at: i64,
    /// The absolute end of the session.
    pub expires_at: i64,
    /// The last request seen (at a minute's resolution: see `touch_web_session`).
    pub seen_at: i64,
}

/// An API key as stored: never the secret, only its keyed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The public key id (`vg_<keyid>_…`).
    pub keyid: String,
    pub account_id: String,
    pub name: String,
    /// Which digest scheme `digest` uses.
    pub digest_version: i16,
    /// HMAC-SHA-256(pepper, secret).
    pub digest: Vec<u8>,
    /// A tier narrower than the account's, if set.
    pub tier: Option<String>,
    /// Scopes narrower than the tier's (space-separated), if set.
    pub scopes: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Set when the key was rotated: it keeps working until then.
    pub grace_until: Option<i64>,
    pub replaced_by: Option<String>,
    pub request_count: i64,
    pub last_used_at: Option<i64>,
    pub last_ip: Option<String>,
    /// Web origins (space-separated) a browser key works from; `None`: any caller.
    pub origins: Option<String>,
}

/// One audit event as stored. `detail` is JSON and never holds a secret or user content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub actor: Option<String>,
    pub account_id: Option<String>,
    pub subject: Option<String>,
    pub source: Option<String>,
    pub detail: String,
    /// Position in the Merkle log (dense, from 0); set by the store on append.
    pub idx: Option<i64>,
    /// Hex SHA-256 leaf hash recorded at append (absent for events older than the log).
    pub leaf_hash: Option<String>,
}

/// A store operation failed.
/// A stored voice reference. `sealed` is the encrypted audio (empty in listings).
#[derive(Clone, PartialEq, Eq)]
pub struct VoiceRecord {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub duration_ms: i64,
    pub created_at: i64,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for VoiceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceRecord")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("duration_ms", &self.duration_ms)
            .field("sealed_bytes", &self.sealed.len())
            .finish_non_exhaustive()
    }
}

/// A voice a remote engine made from a stored voice reference (a provider-side clone), or
/// the claim of an instance making one.
#[derive(Clone, PartialEq, Eq)]
pub struct CloneRecord {
    pub voice_id: String,
    pub engine_id: String,
    pub account_id: String,
    /// The engine's id for the clone, sealed; `None` while an instance is making it.
    pub sealed: Option<Vec<u8>>,
    /// The token of the instance making it (`None` once made).
    pub claim: Option<String>,
    /// An unfinished claim older than the caller's bound (by the database's clock): its maker
    /// died or hangs.
    pub stale: bool,
}

impl std::fmt::Debug for CloneRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloneRecord")
            .field("voice_id", &self.voice_id)
            .field("engine_id", &self.engine_id)
            .field("made", &self.sealed.is_some())
            .field("stale", &self.stale)
            .finish_non_exhaustive()
    }
}

/// What [`Store::claim_clone`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneClaim {
    /// No clone yet, and the caller now holds the per-voice lock: it makes the clone.
    /// `replaced` is the token of a stale claim it took over (whose maker may have uploaded
    /// a clone before it died).
    Claimed { replaced: Option<String> },
    /// The clone exists: its sealed id.
    Made(Vec<u8>),
    /// Another caller (maybe another instance) is making it.
    Busy,
}

/// One quota's counter: a subject's metric in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCell<'a> {
    pub subject: &'a str,
    pub metric: &'a str,
    pub window_start: i64,
}

/// One quota a request reserves on: `amount` in `cell`, unless the window would then hold
/// more than `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaAsk<'a> {
    pub cell: QuotaCell<'a>,
    pub amount: i64,
    pub limit: i64,
}

/// Who holds a reservation: one request (`id`, random) on one instance, until `lease_secs`
/// from now unless renewed.
#[derive(Debug, Clone, Copy)]
pub struct HoldTag<'a> {
    pub id: &'a str,
    pub instance: &'a str,
    pub lease_secs: i64,
}

/// What a live hold has delivered so far of one metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldProgress {
    pub id: String,
    pub metric: &'static str,
    pub delivered: i64,
}

/// One hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRecord {
    pub id: String,
    pub subject: String,
    pub metric: String,
    pub window_start: i64,
    pub amount: i64,
    pub delivered: i64,
    pub instance: String,
    pub deadline: i64,
}

/// Which audit events [`Store::audit_page`] returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Events about this account: recorded for it, or about it or one of its keys.
    pub account_id: Option<String>,
    /// Events of this kind only (`key_revoked`, `auth_failed`…).
    pub kind: Option<String>,
    /// Events at or after / at or before these times (seconds since the epoch).
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// The `seq` the page starts after (oldest first) or before (newest first).
    pub cursor: Option<i64>,
    pub newest_first: bool,
    /// Most events returned (at most 1,000).
    pub limit: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// The database cannot be reached now (down, restarting, unreachable, too slow, its
    /// breaker open) or its disk is full: a request may be retried later, nothing is wrong
    /// with it.
    #[error("{0}")]
    Outage(#[source] StoreOutage),
    #[error("unsupported database URL (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl,
    #[error("a record with this id already exists")]
    Conflict,
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match classify(&err) {
            Failure::Unavailable => StoreError::Outage(StoreOutage::Unavailable(Box::new(err))),
            Failure::DiskFull => StoreError::Outage(StoreOutage::DiskFull(Box::new(err))),
            Failure::Other => StoreError::Database(err),
        }
    }
}

impl StoreError {
    /// The store could not be reached or written at all (as opposed to a failed statement):
    /// this counts against the store's breaker, and the client is told to retry later.
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Outage(_))
    }

    /// The store cannot be reached now, for `why`.
    pub fn unavailable(why: impl Into<crate::error::BoxError>) -> Self {
        StoreError::Outage(StoreOutage::Unavailable(why.into()))
    }

    /// A failure of the quota writer's own SQLite connection (`sql::quota`), sorted as
    /// sqlx's SQLite errors are; each caller of a failed batch gets its own copy.
    pub(crate) fn of_sqlite(err: &rusqlite::Error) -> Self {
        let why = || -> crate::error::BoxError { err.to_string().into() };
        let failure = match err {
            rusqlite::Error::SqliteFailure(code, message) => {
                sqlite_failure(code.extended_code, message.as_deref().unwrap_or(""))
            }
            _ => Failure::Other,
        };
        match failure {
            Failure::Unavailable => StoreError::Outage(StoreOutage::Unavailable(why())),
            Failure::DiskFull => StoreError::Outage(StoreOutage::DiskFull(why())),
            Failure::Other => StoreError::Database(sqlx::Error::Protocol(err.to_string())),
        }
    }
}

enum Failure {
    Unavailable,
    DiskFull,
    Other,
}

/// Sorts a database error: the server or file cannot be reached or is shutting down, the
/// disk is full, or anything else (a bug, a constraint).
fn classify(err: &sqlx::Error) -> Failure {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Failure::Unavailable,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            if db.message().contains("No space left on device") {
                return Failure::DiskFull;
            }
            // SQLite reports (extended) result codes as numbers; PostgreSQL SQLSTATEs, which
            // may be all digits too, so the numeric table is for SQLite's errors only.
            let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
            if sqlite && let Ok(n) = code.parse::<i32>() {
                return sqlite_failure(n, db.message());
            }
            match code {
                "53100" => Failure::DiskFull,
                // Connection exceptions, operator intervention (shutdown), too many
                // connections; a deadlock or serialization failure is retryable too.
                c if c.starts_with("08")
                    || c.starts_with("57P")
                    || c == "53300"
                    || c == "40P01"
                    || c == "40001" =>
                {
                    Failure::Unavailable
                }
                _ => Failure::Other,
            }
        }
        _ => Failure::Other,
    }
}

/// Sorts a SQLite error by its extended result code.
fn sqlite_failure(extended_code: i32, message: &str) -> Failure {
    // SQLITE_IOERR_SHMSIZE: the WAL index could not grow, which on a full disk is what a
    // new connection meets first.
    const SQLITE_IOERR_SHMSIZE: i32 = 10 | (19 << 8);
    if extended_code == SQLITE_IOERR_SHMSIZE || message.contains("No space left on device") {
        return Failure::DiskFull;
    }
    match extended_code & 0xff {
        13 => Failure::DiskFull,                 // SQLITE_FULL
        5 | 6 | 10 | 14 => Failure::Unavailable, // BUSY, LOCKED, IOERR, CANTOPEN
        _ => Failure::Other,
    }
}

/// Domain operations; no generic CRUD.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies pending migrations (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;

    async fn create_account(&self, account: &Account) -> Result<(), StoreError>;
    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Activates or deactivates; `false` if there is no such account.
    async fn set_account_active(&self, id: &str, active: bool, at: i64)
    -> Result<bool, StoreError>;

    /// Deactivates the account and blanks its name and contact (the row stays, as the
    /// subject of audit records); deletes its keys' browser sessions.
    async fn erase_account(&self, id: &str, at: i64) -> Result<bool, StoreError>;

    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    /// One indexed lookup: the key and its account.
    async fn key_with_account(
        &self,
        keyid: &str,
    ) -> Result<Option<(KeyRecord, Account)>, StoreError>;
    async fn keys(&self, account_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError>;
    /// Revokes; `false` if there is no such key or it was already revoked.
    async fn revoke_key(&self, keyid: &str, at: i64) -> Result<bool, StoreError>;
    /// In one transaction: stores `new` and lets `old` live until `grace_until`.
    /// `false` (and nothing stored) if `old` does not exist or is revoked.
    async fn rotate_key(
        &self,
        old: &str,
        new: &KeyRecord,
        grace_until: i64,
    ) -> Result<bool, StoreError>;
    /// Usage tracking: `count` more requests, the last one when and from where.
    async fn record_key_use(
        &self,
        keyid: &str,
        count: i64,
        at: i64,
        ip: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Atomically reserves `amount` of `metric` for `subject` in the window starting at
    /// `window_start`, unless used + reserved + amount would exceed `limit`, and records
    /// `hold` as its holder (adding to the hold's row when it already reserved there).
    /// `true` when reserved. Parallel reservations can never overspend.
    async fn reserve_quota(
        &self,
        hold: &HoldTag<'_>,
        quota: &QuotaCell<'_>,
        amount: i64,
        limit: i64,
    ) -> Result<bool, StoreError>;
    /// A request's reservations on all its quotas in one transaction, all or none: each as
    /// [`Store::reserve_quota`]. `Ok(usage)` holds each window's (used, reserved) after the
    /// reservation, in the order asked; `Err(i)` names the first quota that could not hold
    /// its amount (nothing is reserved then). Rows are taken in a fixed order, so concurrent
    /// reservations never deadlock.
    async fn reserve_quotas(
        &self,
        hold: &HoldTag<'_>,
        asks: &[QuotaAsk<'_>],
    ) -> Result<Result<Vec<(i64, i64)>, usize>, StoreError>;
    /// Gives back `amount` of what `hold_id` reserved in this window (the rest stays held).
    async fn release_quota(
        &self,
        hold_id: &str,
        quota: &QuotaCell<'_>,
        amount: i64,
    ) -> Result<(), StoreError>;
    /// Ends `hold_id`'s reservation in this window: records `actual` as used (never more
    /// than was reserved; 0 refunds) and releases the rest. `false` when the hold was
    /// already settled (by its holder or, after its deadline, by reconciliation): nothing
    /// changes then, so a settlement may be written twice (replayed) without harm.
    async fn settle_quota(
        &self,
        hold_id: &str,
        quota: &QuotaCell<'_>,
        actual: i64,
    ) -> Result<bool, StoreError>;
    /// Ends every reservation of `hold_id` in one transaction, each as
    /// [`Store::settle_quota`] with `actual(metric)` as used; returns how many there were
    /// (fewer than the holder made when reconciliation settled some first).
    async fn settle_hold(
        &self,
        hold_id: &str,
        actual: &(dyn for<'m> Fn(&'m str) -> i64 + Sync),
    ) -> Result<usize, StoreError>;
    /// Moves the deadline of every hold in `progress` to `lease_secs` from now (the
    /// database's clock) and records what each has delivered so far. With nothing to renew
    /// it still makes one round trip: `Ok` always means the store answered (the upkeep
    /// counts on it to know when the store is back, see `HoldBook::upkeep`).
    async fn renew_holds(
        &self,
        lease_secs: i64,
        progress: &[HoldProgress],
    ) -> Result<(), StoreError>;
    /// Settles every hold whose deadline passed more than `grace_secs` ago at what it last
    /// reported as delivered (a dead holder's); returns them.
    async fn reconcile_holds(&self, grace_secs: i64) -> Result<Vec<HoldRecord>, StoreError>;
    /// Every hold, for checks and reports.
    async fn quota_holds(&self) -> Result<Vec<HoldRecord>, StoreError>;
    /// (used, reserved) in a window.
    async fn quota_usage(
        &self,
        subject: &str,
        metric: &str,
        window_start: i64,
    ) -> Result<(i64, i64), StoreError>;
    /// Every counter of `subject` in windows starting at or after `since`, oldest first.
    async fn quota_history(
        &self,
        subject: &str,
        since: i64,
    ) -> Result<Vec<QuotaWindow>, StoreError>;

    /// Stores a voice reference unless the account already has `max_per_account`; returns
    /// whether it was stored.
    async fn insert_voice(
        &self,
        voice: &VoiceRecord,
        max_per_account: i64,
    ) -> Result<bool, StoreError>;
    /// The account's voice references, without their audio.
    async fn voices(&self, account_id: &str) -> Result<Vec<VoiceRecord>, StoreError>;
    /// One voice reference of this account (another account's id finds nothing).
    async fn voice(&self, account_id: &str, id: &str) -> Result<Option<VoiceRecord>, StoreError>;
    /// Every account's voices created before `cutoff` (retention), without audio.
    async fn voices_created_before(&self, cutoff: i64) -> Result<Vec<VoiceRecord>, StoreError>;
    async fn delete_voice(&self, account_id: &str, id: &str) -> Result<bool, StoreError>;

    async fn insert_client_secret(&self, secret: &ClientSecretRecord) -> Result<(), StoreError>;
    async fn client_secret(&self, id: &str) -> Result<Option<ClientSecretRecord>, StoreError>;
    /// Deletes secrets that expired before `expired_before`; how many went.
    async fn purge_client_secrets(&self, expired_before: i64) -> Result<u64, StoreError>;

    async fn insert_web_session(&self, session: &WebSessionRecord) -> Result<(), StoreError>;
    async fn web_session(&self, digest: &[u8]) -> Result<Option<WebSessionRecord>, StoreError>;
    /// Records a request of the session at `seen_at`.
    async fn touch_web_session(&self, digest: &[u8], seen_at: i64) -> Result<(), StoreError>;
    /// Ends a session (sign-out); whether there was one.
    async fn delete_web_session(&self, digest: &[u8]) -> Result<bool, StoreError>;
    /// Deletes sessions past their absolute end at `now` or not seen since `idle_before`;
    /// how many went.
    async fn purge_web_sessions(&self, now: i64, idle_before: i64) -> Result<u64, StoreError>;

    /// Appends `event` at the next position of the audit log; `leaf` computes the leaf hash
    /// of the event with its position set. Returns the position.
    async fn append_audit(
        &self,
        event: &AuditRecord,
        leaf: for<'r> fn(&'r AuditRecord) -> String,
    ) -> Result<i64, StoreError>;
    /// The account's data-key salt, storing `salt` first if it has none (the stored one wins
    /// a race).
    async fn ensure_data_key_salt(
        &self,
        account_id: &str,
        salt: &str,
    ) -> Result<String, StoreError>;
    async fn data_key_salt(&self, account_id: &str) -> Result<Option<String>, StoreError>;
    /// Destroys the salt (crypto-shredding); true if there was one.
    /// Destroys the account's salt for good: the row stays with an empty salt (a tombstone),
    /// so `ensure_data_key_salt` can never make a new one.
    async fn shred_data_key(&self, account_id: &str) -> Result<(), StoreError>;
    /// Replaces a stored voice's sealed audio and name (re-sealing in another format).
    async fn reseal_voice(
        &self,
        account_id: &str,
        id: &str,
        name: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError>;
    /// The clone of a stored voice on an engine, or the lock for making it: claims the
    /// (voice, engine) row with `token` when there is none, or when the claim on it has not
    /// been renewed for `stale_secs` and no clone was recorded (its maker died). Claim times
    /// are the database's clock, so instances' clocks do not matter.
    async fn claim_clone(
        &self,
        voice_id: &str,
        engine_id: &str,
        account_id: &str,
        token: &str,
        stale_secs: i64,
    ) -> Result<CloneClaim, StoreError>;
    /// Keeps `token`'s claim fresh while its maker works; `false` if it is gone.
    async fn renew_clone_claim(
        &self,
        voice_id: &str,
        engine_id: &str,
        token: &str,
    ) -> Result<bool, StoreError>;
    /// Records the clone made under `token`'s claim, in the same statement that checks the
    /// stored voice still exists; `false` if the claim or the voice is gone: the caller must
    /// delete its clone.
    async fn seal_clone(
        &self,
        voice_id: &str,
        engine_id: &str,
        token: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError>;
    /// Gives up `token`'s claim (making the clone failed).
    async fn release_clone(
        &self,
        voice_id: &str,
        engine_id: &str,
        token: &str,
    ) -> Result<(), StoreError>;
    /// Every clone row of a stored voice (made or being made); `stale` against `stale_secs`.
    async fn clones_of(
        &self,
        voice_id: &str,
        stale_secs: i64,
    ) -> Result<Vec<CloneRecord>, StoreError>;
    /// Every clone row of an account's voices.
    async fn clones_of_account(
        &self,
        account_id: &str,
        stale_secs: i64,
    ) -> Result<Vec<CloneRecord>, StoreError>;
    /// Clone rows whose stored voice no longer exists: every made clone, and claims not
    /// renewed for `stale_secs` (younger ones are still in their makers' hands).
    async fn orphan_clones(&self, stale_secs: i64) -> Result<Vec<CloneRecord>, StoreError>;
    /// Forgets a clone row if it still holds this sealed id or this claim (so a row made or
    /// claimed again meanwhile is left alone); `true` if it did.
    async fn delete_clone_record(
        &self,
        voice_id: &str,
        engine_id: &str,
        sealed: Option<&[u8]>,
        claim: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Deletes every stored voice of the account; returns how many.
    async fn delete_voices(&self, account_id: &str) -> Result<u64, StoreError>;
    /// How many events the log holds.
    async fn audit_size(&self) -> Result<i64, StoreError>;
    /// Every positioned event, in log order.
    async fn audit_log(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_log_from(0).await
    }
    /// The positioned events from position `from` on, in log order.
    async fn audit_log_from(&self, from: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// Keeps a signed checkpoint note (a second one for the same size is ignored).
    async fn add_checkpoint(&self, size: i64, at: i64, note: &str) -> Result<(), StoreError>;
    /// Every stored checkpoint as (size, note), smallest first.
    async fn checkpoints(&self) -> Result<Vec<(i64, String)>, StoreError>;
    /// The newest `limit` events, newest first.
    async fn audit_events(&self, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;

    /// One page of audit events matching `filter`, in position order (oldest first, or
    /// newest first with `newest_first`), starting after (or before) `filter.cursor`.
    async fn audit_page(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
}

/// Opens the store named by `url`: `postgres://…` or `sqlite://PATH`; an empty URL means
/// SQLite at `<data_dir>/voxgate.db`. Migrations run before it is returned.
pub async fn open(url: &str, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = if url.is_empty() {
        Arc::new(SqliteStore::open(&data_dir.join("voxgate.db")).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(PostgresStore::connect(url).await?)
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Arc::new(SqliteStore::open(Path::new(path)).await?)
    } else {
        return Err(StoreError::UnsupportedUrl);
    };
    store.migrate().await?;
    Ok(store)
}

/// Seconds since the epoch (the one clock the store's rows use).
pub use crate::util::now;
