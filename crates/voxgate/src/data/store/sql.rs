//! The SQL behind [`Store`](super::Store) for SQLite and PostgreSQL. One body of code is
//! instantiated for both by `impl_store!`; queries are written with `$n` placeholders and
//! parameterised only (SQLite reads them as `?n`). Migrations are per backend, embedded.

use std::path::Path;
use std::str::FromStr as _;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row as _};

mod quota;

use super::{
    Account, AuditFilter, AuditRecord, ClientSecretRecord, CloneClaim, CloneRecord, HoldProgress,
    HoldRecord, HoldTag, KeyRecord, QuotaAsk, QuotaCell, QuotaWindow, Store, StoreError,
    VoiceRecord, WebSessionRecord,
};

/// Embedded migrations, in order: (version, SQL).
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../../migrations/sqlite/0001_identity.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_quotas.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_voices.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_audit_log.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_data_keys.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_key_origins.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_voice_clones.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/sqlite/0008_quota_holds.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/sqlite/0009_client_secrets.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/sqlite/0010_quota_statements.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/sqlite/0011_web_sessions.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../../migrations/postgres/0001_identity.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/postgres/0002_quotas.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/postgres/0003_voices.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/postgres/0004_audit_log.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/postgres/0005_data_keys.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/postgres/0006_key_origins.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/postgres/0007_voice_clones.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/postgres/0008_quota_holds.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/postgres/0009_client_secrets.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/postgres/0010_web_sessions.sql"),
    ),
];

/// How long a request waits for a PostgreSQL connection: sub-second, so an unreachable
/// database answers 503 quickly instead of stalling requests (sqlx's default is 30 s).
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(750);

/// The embedded default: one SQLite file in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection for the store's other quota writes (renewals, reconciliation,
    /// replayed settlements) and key use: SQLite has one writer at a time, and these queue
    /// in order here instead of polling the database's lock against each other (SQLite's
    /// busy handler sleeps a millisecond and more between tries). They meet the batcher's
    /// connection at the lock, whose own handler retries every 50 µs.
    writer: SqlitePool,
    /// The queue of reservations and settlements, which the batcher's own connection
    /// writes in batches (`sql::quota`).
    batcher: quota::Batcher,
}

/// The SQLite pool's connections (besides the writer and the batcher's connection).
const SQLITE_CONNECTIONS: u32 = 4;

/// Connections the PostgreSQL pool keeps at most (`tests/chaos` allows for them).
const POSTGRES_CONNECTIONS: u32 = 16;

/// PostgreSQL, for several instances sharing state.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, mode 0600.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Below the guard's bound on an operation (`database.timeout_ms`), so a
            // contended write answers BUSY before the guard gives up on it.
            .busy_timeout(std::time::Duration::from_millis(1_500));
        let options = quiet_statements(options);
        // A local file: connections open without a network, but slowly on a loaded machine
        // (and the request path is bounded by the guard anyway).
        let open = |connections| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(std::time::Duration::from_secs(10))
                // No ping before each use: a file's connection does not go stale the way a
                // socket does, and the ping is a round trip through sqlx's worker thread
                // (as dear as the statement it would precede). A connection that failed is
                // judged on release (below).
                .test_before_acquire(false)
                .after_release(|conn, _| Box::pin(release_only_outside_transactions(conn)))
                .connect_with(options.clone())
        };
        let pool = open(SQLITE_CONNECTIONS).await?;
        let writer = open(1).await?;
        restrict_permissions(path);
        let batcher = quota::Batcher::start(path)?;
        Ok(Self {
            pool,
            writer,
            batcher,
        })
    }
}

/// Keeps a released connection only if no transaction is left on it. A connection whose
/// transaction SQLite rolled back by itself (it does so on some SQLITE_FULL and I/O errors)
/// fails sqlx's own ROLLBACK, and sqlx then still counts a transaction open: its next
/// `begin` would be a SAVEPOINT, whose rollback leaves a write transaction holding the
/// database lock for good (every other writer BUSY: the chaos suite's full disk found it).
/// Such a connection is closed instead (closing ends whatever SQLite still has open).
async fn release_only_outside_transactions(
    conn: &mut sqlx::SqliteConnection,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A dropped transaction's rollback is queued on the connection: let it run first.
    conn.ping().await?;
    Ok(!conn.is_in_transaction())
}

fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    for file in [
        path.to_path_buf(),
        path.with_extension("db-wal"),
        path.with_extension("db-shm"),
    ] {
        if file.exists() {
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
    }
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = quiet_statements(sqlx::postgres::PgConnectOptions::from_str(url)?);
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

/// No log line per statement; one that takes over a second still gets a WARN line (sqlx's
/// default). The statements are this file's constants (values travel bound, never in the
/// text), and checking whether to log each one was a dispatch through the subscriber's
/// filters on every statement, about 1 % of a relayed request's CPU.
fn quiet_statements<O: sqlx::ConnectOptions>(options: O) -> O {
    options.log_statements(tracing_log::log::LevelFilter::Off)
}

/// SQLite numbers parameters `?n`; the queries below use PostgreSQL's `$n`. Every query is
/// built from constants in this file (never from input), which is what `AssertSqlSafe`
/// asserts; values always travel as bound parameters.
fn sqlite_sql(sql: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql.replace('$', "?"))
}

fn postgres_sql(sql: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql.to_owned())
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

const HOLD_COLUMNS: &str =
    "id, subject, metric, window_start, amount, delivered, instance, deadline";
const ACCOUNT_COLUMNS: &str = "id, name, contact, tier, active, created_at, updated_at";
const KEY_COLUMNS: &str = "k.keyid, k.account_id, k.name, k.digest_version, k.digest, k.tier, k.scopes, \
    k.created_at, k.expires_at, k.revoked_at, k.grace_until, k.replaced_by, k.request_count, \
    k.last_used_at, k.last_ip, k.origins";

macro_rules! impl_store {
    ($store:ty, $db:ty, $sql:ident, $now:expr, $migrations:ident, $lock:expr, $audit_lock:expr) => {
        impl $store {
            fn account_from(row: &<$db as sqlx::Database>::Row, prefix: &str) -> Result<Account, sqlx::Error> {
                let col = |name: &str| format!("{prefix}{name}");
                Ok(Account {
                    id: row.try_get(col("id").as_str())?,
                    name: row.try_get(col("name").as_str())?,
                    contact: row.try_get(col("contact").as_str())?,
                    tier: row.try_get(col("tier").as_str())?,
                    active: row.try_get(col("active").as_str())?,
                    created_at: row.try_get(col("created_at").as_str())?,
                    updated_at: row.try_get(col("updated_at").as_str())?,
                })
            }

            fn hold_from(r: &<$db as sqlx::Database>::Row) -> Result<HoldRecord, sqlx::Error> {
                Ok(HoldRecord {
                    id: r.try_get("id")?,
                    subject: r.try_get("subject")?,
                    metric: r.try_get("metric")?,
                    window_start: r.try_get("window_start")?,
                    amount: r.try_get("amount")?,
                    delivered: r.try_get("delivered")?,
                    instance: r.try_get("instance")?,
                    deadline: r.try_get("deadline")?,
                })
            }

            /// Moves `amount` out of a quota's `reserved`, `used` of it into `used`.
            async fn unreserve(
                tx: &mut sqlx::Transaction<'_, $db>,
                quota: &QuotaCell<'_>,
                amount: i64,
                used: i64,
            ) -> Result<(), sqlx::Error> {
                let sql = $sql(
                    "UPDATE quota_usage SET reserved = reserved - $1, used = used + $2 \
                     WHERE subject = $3 AND metric = $4 AND window_start = $5",
                );
                sqlx::query(sql).bind(amount).bind(used).bind(quota.subject).bind(quota.metric).bind(quota.window_start).execute(&mut **tx).await?;
                Ok(())
            }

            /// [`Store::reserve_quotas`] as one transaction of two statements per quota.
            async fn reserve_each(&self, hold: &HoldTag<'_>, asks: &[QuotaAsk<'_>]) -> Result<Result<Vec<(i64, i64)>, usize>, StoreError> {
                // Two statements per quota in one transaction (a request's whole reservation
                // is one round of the database's lock, not one per quota).
                let reserve = "INSERT INTO quota_usage (subject, metric, window_start, used, reserved) \
                     SELECT $1, $2, $3, 0, $4 WHERE $4 <= $5 \
                     ON CONFLICT (subject, metric, window_start) DO UPDATE \
                     SET reserved = quota_usage.reserved + excluded.reserved \
                     WHERE quota_usage.used + quota_usage.reserved + excluded.reserved <= $5 \
                     RETURNING used, reserved";
                let held = format!(
                    "INSERT INTO quota_holds (id, subject, metric, window_start, amount, delivered, instance, deadline) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6, {} + $7) \
                     ON CONFLICT (id, subject, metric, window_start) DO UPDATE SET amount = quota_holds.amount + excluded.amount",
                    $now
                );
                // Rows are locked in one order whatever the caller's (two tiers may list an
                // account's quotas differently): concurrent requests cannot deadlock.
                let mut order: Vec<usize> = (0..asks.len()).collect();
                order.sort_by_key(|&i| (asks[i].cell.subject, asks[i].cell.metric, asks[i].cell.window_start));
                let mut tx = self.writer().begin().await?;
                let mut usage = vec![(0, 0); asks.len()];
                for i in order {
                    let ask = &asks[i];
                    let q = &ask.cell;
                    // One conditional upsert: the check and the reservation cannot be separated.
                    let row = sqlx::query($sql(reserve))
                        .bind(q.subject)
                        .bind(q.metric)
                        .bind(q.window_start)
                        .bind(ask.amount)
                        .bind(ask.limit)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(row) = row else {
                        tx.rollback().await?;
                        return Ok(Err(i));
                    };
                    usage[i] = (row.try_get("used")?, row.try_get("reserved")?);
                    // The holder, in the same transaction: no reservation without one.
                    sqlx::query($sql(&held))
                        .bind(hold.id)
                        .bind(q.subject)
                        .bind(q.metric)
                        .bind(q.window_start)
                        .bind(ask.amount)
                        .bind(hold.instance)
                        .bind(hold.lease_secs)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Ok(usage))
            }

            fn audit_from(r: &<$db as sqlx::Database>::Row) -> Result<AuditRecord, sqlx::Error> {
                Ok(AuditRecord {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    actor: r.try_get("actor")?,
                    account_id: r.try_get("account_id")?,
                    subject: r.try_get("subject")?,
                    source: r.try_get("source")?,
                    detail: r.try_get("detail")?,
                    idx: r.try_get("idx")?,
                    leaf_hash: r.try_get("leaf_hash")?,
                })
            }

            fn key_from(row: &<$db as sqlx::Database>::Row) -> Result<KeyRecord, sqlx::Error> {
                Ok(KeyRecord {
                    keyid: row.try_get("keyid")?,
                    account_id: row.try_get("account_id")?,
                    name: row.try_get("name")?,
                    digest_version: row.try_get("digest_version")?,
                    digest: row.try_get("digest")?,
                    tier: row.try_get("tier")?,
                    scopes: row.try_get("scopes")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                    grace_until: row.try_get("grace_until")?,
                    replaced_by: row.try_get("replaced_by")?,
                    request_count: row.try_get("request_count")?,
                    last_used_at: row.try_get("last_used_at")?,
                    last_ip: row.try_get("last_ip")?,
                    origins: row.try_get("origins")?,
                })
            }

            /// A voice row; `sealed` only when the query selected it (listings leave it out).
            fn voice_from(row: &<$db as sqlx::Database>::Row, sealed: bool) -> Result<VoiceRecord, sqlx::Error> {
                Ok(VoiceRecord {
                    id: row.try_get("id")?,
                    account_id: row.try_get("account_id")?,
                    name: row.try_get("name")?,
                    duration_ms: row.try_get("duration_ms")?,
                    created_at: row.try_get("created_at")?,
                    sealed: if sealed { row.try_get("sealed")? } else { Vec::new() },
                })
            }

            fn clone_from(r: &<$db as sqlx::Database>::Row) -> Result<CloneRecord, sqlx::Error> {
                Ok(CloneRecord {
                    voice_id: r.try_get("voice_id")?,
                    engine_id: r.try_get("engine_id")?,
                    account_id: r.try_get("account_id")?,
                    sealed: r.try_get("sealed")?,
                    claim: r.try_get("claim")?,
                    stale: r.try_get("stale")?,
                })
            }

            async fn insert_key<'e, E>(executor: E, key: &KeyRecord) -> Result<(), StoreError>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let sql = $sql(
                    "INSERT INTO api_keys (keyid, account_id, name, digest_version, digest, tier, scopes, \
                     created_at, expires_at, revoked_at, grace_until, replaced_by, request_count, last_used_at, last_ip, origins) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                );
                sqlx::query(sql)
                    .bind(&key.keyid)
                    .bind(&key.account_id)
                    .bind(&key.name)
                    .bind(key.digest_version)
                    .bind(&key.digest)
                    .bind(&key.tier)
                    .bind(&key.scopes)
                    .bind(key.created_at)
                    .bind(key.expires_at)
                    .bind(key.revoked_at)
                    .bind(key.grace_until)
                    .bind(&key.replaced_by)
                    .bind(key.request_count)
                    .bind(key.last_used_at)
                    .bind(&key.last_ip)
                    .bind(&key.origins)
                    .execute(executor)
                    .await
                    .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { e.into() })?;
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn migrate(&self) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                // Instances starting together must not migrate at the same time.
                if let Some(lock) = $lock {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
                    .execute(&mut *tx)
                    .await?;
                let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
                    .fetch_all(&mut *tx)
                    .await?;
                for (version, script) in $migrations {
                    if applied.contains(version) {
                        continue;
                    }
                    sqlx::raw_sql(*script).execute(&mut *tx).await?;
                    sqlx::query($sql("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)"))
                        .bind(*version)
                        .bind(super::now())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn create_account(&self, a: &Account) -> Result<(), StoreError> {
                let sql = $sql("INSERT INTO accounts (id, name, contact, tier, active, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)");
                sqlx::query(sql)
                    .bind(&a.id)
                    .bind(&a.name)
                    .bind(&a.contact)
                    .bind(&a.tier)
                    .bind(a.active)
                    .bind(a.created_at)
                    .bind(a.updated_at)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { e.into() })?;
                Ok(())
            }

            async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
                let sql = $sql(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"));
                let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| Self::account_from(&r, "")).transpose()?)
            }

            async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
                let sql = AssertSqlSafe(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"));
                let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(|r| Self::account_from(r, "")).collect::<Result<_, _>>()?)
            }

            async fn set_account_active(&self, id: &str, active: bool, at: i64) -> Result<bool, StoreError> {
                let sql = $sql("UPDATE accounts SET active = $1, updated_at = $2 WHERE id = $3");
                let done = sqlx::query(sql).bind(active).bind(at).bind(id).execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn erase_account(&self, id: &str, at: i64) -> Result<bool, StoreError> {
                let sql = $sql("UPDATE accounts SET name = '(erased)', contact = NULL, active = $1, updated_at = $2 WHERE id = $3");
                let done = sqlx::query(sql).bind(false).bind(at).bind(id).execute(&self.pool).await?;
                // Its keys' browser sessions go too (their keys are revoked anyway).
                let sql = $sql("DELETE FROM web_sessions WHERE keyid IN (SELECT keyid FROM api_keys WHERE account_id = $1)");
                sqlx::query(sql).bind(id).execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
                Self::insert_key(&self.pool, key).await
            }

            async fn key_with_account(&self, keyid: &str) -> Result<Option<(KeyRecord, Account)>, StoreError> {
                // Exactly one row either way: the key's, or (for an id that does not exist) a
                // placeholder of the same shape that is decoded the same way, so an unknown id
                // and a known one with a wrong secret cost the same work (no timing oracle).
                let sql = $sql(&format!(
                    "SELECT {KEY_COLUMNS}, a.id AS a_id, a.name AS a_name, a.contact AS a_contact, a.tier AS a_tier, \
                     a.active AS a_active, a.created_at AS a_created_at, a.updated_at AS a_updated_at, CAST(1 AS INTEGER) AS found \
                     FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.keyid = $1 \
                     UNION ALL SELECT $1, '', '', CAST(0 AS SMALLINT), $2, NULL, NULL, 0, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, \
                     '', '', NULL, '', FALSE, 0, 0, CAST(0 AS INTEGER) \
                     WHERE NOT EXISTS (SELECT 1 FROM api_keys WHERE keyid = $1)"
                ));
                let placeholder = vec![0u8; 32];
                let row = sqlx::query(sql).bind(keyid).bind(placeholder).fetch_one(&self.pool).await?;
                let key = Self::key_from(&row)?;
                let account = Self::account_from(&row, "a_")?;
                let found: i32 = row.try_get("found")?;
                Ok((found == 1).then_some((key, account)))
            }

            async fn keys(&self, account_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
                let rows = match account_id {
                    Some(id) => {
                        let sql = $sql(&format!("SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.account_id = $1 ORDER BY k.created_at, k.keyid"));
                        sqlx::query(sql).bind(id).fetch_all(&self.pool).await?
                    }
                    None => {
                        let sql = AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys k ORDER BY k.created_at, k.keyid"));
                        sqlx::query(sql).fetch_all(&self.pool).await?
                    }
                };
                Ok(rows.iter().map(Self::key_from).collect::<Result<_, _>>()?)
            }

            async fn revoke_key(&self, keyid: &str, at: i64) -> Result<bool, StoreError> {
                let sql = $sql("UPDATE api_keys SET revoked_at = $1 WHERE keyid = $2 AND revoked_at IS NULL");
                let done = sqlx::query(sql).bind(at).bind(keyid).execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn rotate_key(&self, old: &str, new: &KeyRecord, grace_until: i64) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let sql = $sql(
                    "UPDATE api_keys SET grace_until = $1, replaced_by = $2 \
                     WHERE keyid = $3 AND revoked_at IS NULL AND replaced_by IS NULL",
                );
                let done = sqlx::query(sql).bind(grace_until).bind(&new.keyid).bind(old).execute(&mut *tx).await?;
                if done.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                // An error here drops the transaction, which rolls it back.
                Self::insert_key(&mut *tx, new).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn record_key_use(&self, keyid: &str, count: i64, at: i64, ip: Option<&str>) -> Result<(), StoreError> {
                let sql = $sql("UPDATE api_keys SET request_count = request_count + $1, last_used_at = $2, last_ip = $3 WHERE keyid = $4");
                sqlx::query(sql).bind(count).bind(at).bind(ip).bind(keyid).execute(self.writer()).await?;
                Ok(())
            }

            async fn append_audit(
                &self,
                e: &AuditRecord,
                leaf: for<'r> fn(&'r AuditRecord) -> String,
            ) -> Result<i64, StoreError> {
                // The next position and the insert in one transaction; a concurrent writer
                // that took the same position makes the unique index refuse ours: try again.
                let mut attempts = 0;
                loop {
                    let mut tx = self.pool.begin().await?;
                    if let Some(lock) = $audit_lock {
                        sqlx::query(lock).execute(&mut *tx).await?;
                    }
                    let idx: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_events")
                        .fetch_one(&mut *tx)
                        .await?;
                    let mut positioned = e.clone();
                    positioned.idx = Some(idx);
                    let hash = leaf(&positioned);
                    let sql = $sql("INSERT INTO audit_events (at, kind, actor, account_id, subject, source, detail, idx, leaf_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
                    let inserted = sqlx::query(sql)
                        .bind(e.at)
                        .bind(&e.kind)
                        .bind(&e.actor)
                        .bind(&e.account_id)
                        .bind(&e.subject)
                        .bind(&e.source)
                        .bind(&e.detail)
                        .bind(idx)
                        .bind(&hash)
                        .execute(&mut *tx)
                        .await;
                    match inserted {
                        Ok(_) => {
                            tx.commit().await?;
                            return Ok(idx);
                        }
                        Err(err) if attempts < 5 => {
                            attempts += 1;
                            tracing::debug!(error = %err, "audit position taken; retrying");
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
            }

            async fn ensure_data_key_salt(&self, account_id: &str, salt: &str) -> Result<String, StoreError> {
                let insert = $sql("INSERT INTO account_data_keys (account_id, salt, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING");
                sqlx::query(insert).bind(account_id).bind(salt).bind(super::now()).execute(&self.pool).await?;
                let stored: String = sqlx::query_scalar($sql("SELECT salt FROM account_data_keys WHERE account_id = $1"))
                    .bind(account_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(stored)
            }

            async fn data_key_salt(&self, account_id: &str) -> Result<Option<String>, StoreError> {
                let stored: Option<String> = sqlx::query_scalar($sql("SELECT salt FROM account_data_keys WHERE account_id = $1"))
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(stored)
            }

            async fn shred_data_key(&self, account_id: &str) -> Result<(), StoreError> {
                let sql = $sql(
                    "INSERT INTO account_data_keys (account_id, salt, created_at) VALUES ($1, '', $2) \
                     ON CONFLICT (account_id) DO UPDATE SET salt = ''",
                );
                sqlx::query(sql).bind(account_id).bind(super::now()).execute(&self.pool).await?;
                Ok(())
            }

            async fn reseal_voice(&self, account_id: &str, id: &str, name: &str, sealed: &[u8]) -> Result<(), StoreError> {
                let sql = $sql("UPDATE voice_references SET name = $1, sealed = $2 WHERE account_id = $3 AND id = $4");
                sqlx::query(sql).bind(name).bind(sealed).bind(account_id).bind(id).execute(&self.pool).await?;
                Ok(())
            }

            async fn claim_clone(
                &self,
                voice_id: &str,
                engine_id: &str,
                account_id: &str,
                token: &str,
                stale_secs: i64,
            ) -> Result<CloneClaim, StoreError> {
                let insert = $sql(&format!(
                    "INSERT INTO voice_clones (voice_id, engine_id, account_id, sealed, claim, claimed_at) \
                     VALUES ($1, $2, $3, NULL, $4, {}) ON CONFLICT DO NOTHING",
                    $now
                ));
                let done = sqlx::query(insert)
                    .bind(voice_id)
                    .bind(engine_id)
                    .bind(account_id)
                    .bind(token)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 1 {
                    return Ok(CloneClaim::Claimed { replaced: None });
                }
                let read = $sql(&format!(
                    "SELECT sealed, claim, claimed_at < {} - $3 AS stale FROM voice_clones \
                     WHERE voice_id = $1 AND engine_id = $2",
                    $now
                ));
                let row = sqlx::query(read)
                    .bind(voice_id)
                    .bind(engine_id)
                    .bind(stale_secs)
                    .fetch_optional(&self.pool)
                    .await?;
                // Deleted since the insert was refused: ask again.
                let Some(row) = row else { return Ok(CloneClaim::Busy) };
                if let Some(sealed) = row.try_get::<Option<Vec<u8>>, _>("sealed")? {
                    return Ok(CloneClaim::Made(sealed));
                }
                let stale: bool = row.try_get("stale")?;
                let Some(old) = row.try_get::<Option<String>, _>("claim")?.filter(|_| stale) else {
                    return Ok(CloneClaim::Busy);
                };
                // A claim whose maker died is taken over; the condition names the old token,
                // so of several takers one wins.
                let take = $sql(&format!(
                    "UPDATE voice_clones SET claim = $1, claimed_at = {} \
                     WHERE voice_id = $2 AND engine_id = $3 AND sealed IS NULL AND claim = $4",
                    $now
                ));
                let done = sqlx::query(take)
                    .bind(token)
                    .bind(voice_id)
                    .bind(engine_id)
                    .bind(&old)
                    .execute(&self.pool)
                    .await?;
                Ok(if done.rows_affected() == 1 {
                    CloneClaim::Claimed { replaced: Some(old) }
                } else {
                    CloneClaim::Busy
                })
            }

            async fn renew_clone_claim(&self, voice_id: &str, engine_id: &str, token: &str) -> Result<bool, StoreError> {
                let sql = $sql(&format!(
                    "UPDATE voice_clones SET claimed_at = {} \
                     WHERE voice_id = $1 AND engine_id = $2 AND claim = $3 AND sealed IS NULL",
                    $now
                ));
                let done = sqlx::query(sql).bind(voice_id).bind(engine_id).bind(token).execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn seal_clone(&self, voice_id: &str, engine_id: &str, token: &str, sealed: &[u8]) -> Result<bool, StoreError> {
                let sql = $sql(
                    "UPDATE voice_clones SET sealed = $1, claim = NULL \
                     WHERE voice_id = $2 AND engine_id = $3 AND claim = $4 AND sealed IS NULL \
                     AND EXISTS (SELECT 1 FROM voice_references v \
                     WHERE v.id = voice_clones.voice_id AND v.account_id = voice_clones.account_id)",
                );
                let done = sqlx::query(sql).bind(sealed).bind(voice_id).bind(engine_id).bind(token).execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_clone(&self, voice_id: &str, engine_id: &str, token: &str) -> Result<(), StoreError> {
                let sql = $sql("DELETE FROM voice_clones WHERE voice_id = $1 AND engine_id = $2 AND claim = $3 AND sealed IS NULL");
                sqlx::query(sql).bind(voice_id).bind(engine_id).bind(token).execute(&self.pool).await?;
                Ok(())
            }

            async fn clones_of(&self, voice_id: &str, stale_secs: i64) -> Result<Vec<CloneRecord>, StoreError> {
                let sql = $sql(&format!(
                    "SELECT voice_id, engine_id, account_id, sealed, claim, claimed_at < {} - $2 AS stale \
                     FROM voice_clones WHERE voice_id = $1 ORDER BY engine_id",
                    $now
                ));
                let rows = sqlx::query(sql).bind(voice_id).bind(stale_secs).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(Self::clone_from).collect::<Result<_, _>>()?)
            }

            async fn clones_of_account(&self, account_id: &str, stale_secs: i64) -> Result<Vec<CloneRecord>, StoreError> {
                let sql = $sql(&format!(
                    "SELECT voice_id, engine_id, account_id, sealed, claim, claimed_at < {} - $2 AS stale \
                     FROM voice_clones WHERE account_id = $1 ORDER BY voice_id, engine_id",
                    $now
                ));
                let rows = sqlx::query(sql).bind(account_id).bind(stale_secs).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(Self::clone_from).collect::<Result<_, _>>()?)
            }

            async fn orphan_clones(&self, stale_secs: i64) -> Result<Vec<CloneRecord>, StoreError> {
                let sql = $sql(&format!(
                    "SELECT voice_id, engine_id, account_id, sealed, claim, claimed_at < {now} - $1 AS stale \
                     FROM voice_clones c \
                     WHERE (c.sealed IS NOT NULL OR c.claimed_at < {now} - $1) AND NOT EXISTS \
                     (SELECT 1 FROM voice_references v WHERE v.id = c.voice_id AND v.account_id = c.account_id) \
                     ORDER BY c.claimed_at, c.voice_id, c.engine_id",
                    now = $now
                ));
                let rows = sqlx::query(sql).bind(stale_secs).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(Self::clone_from).collect::<Result<_, _>>()?)
            }

            async fn delete_clone_record(
                &self,
                voice_id: &str,
                engine_id: &str,
                sealed: Option<&[u8]>,
                claim: Option<&str>,
            ) -> Result<bool, StoreError> {
                let sql = $sql("DELETE FROM voice_clones WHERE voice_id = $1 AND engine_id = $2 AND (sealed = $3 OR claim = $4)");
                let done = sqlx::query(sql).bind(voice_id).bind(engine_id).bind(sealed).bind(claim).execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_voices(&self, account_id: &str) -> Result<u64, StoreError> {
                let done = sqlx::query($sql("DELETE FROM voice_references WHERE account_id = $1"))
                    .bind(account_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn audit_size(&self) -> Result<i64, StoreError> {
                let size: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_events")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(size)
            }

            async fn audit_log_from(&self, from: i64) -> Result<Vec<AuditRecord>, StoreError> {
                let sql = $sql("SELECT seq, at, kind, actor, account_id, subject, source, detail, idx, leaf_hash FROM audit_events WHERE idx >= $1 ORDER BY idx");
                let rows = sqlx::query(sql).bind(from).fetch_all(&self.pool).await?;
                rows.iter()
                    .map(Self::audit_from)
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn add_checkpoint(&self, size: i64, at: i64, note: &str) -> Result<(), StoreError> {
                let sql = $sql("INSERT INTO audit_checkpoints (size, at, note) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING");
                sqlx::query(sql).bind(size).bind(at).bind(note).execute(&self.pool).await?;
                Ok(())
            }

            async fn checkpoints(&self) -> Result<Vec<(i64, String)>, StoreError> {
                let rows: Vec<(i64, String)> = sqlx::query_as("SELECT size, note FROM audit_checkpoints ORDER BY size")
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows)
            }

            async fn reserve_quota(&self, hold: &HoldTag<'_>, quota: &QuotaCell<'_>, amount: i64, limit: i64) -> Result<bool, StoreError> {
                let ask = QuotaAsk { cell: *quota, amount, limit };
                Ok(self.reserve_each(hold, &[ask]).await?.is_ok())
            }

            async fn reserve_quotas(&self, hold: &HoldTag<'_>, asks: &[QuotaAsk<'_>]) -> Result<Result<Vec<(i64, i64)>, usize>, StoreError> {
                self.reserve_all(hold, asks).await
            }

            async fn settle_hold(&self, hold_id: &str, actual: &(dyn for<'m> Fn(&'m str) -> i64 + Sync)) -> Result<usize, StoreError> {
                self.settle_all(hold_id, actual).await
            }

            async fn release_quota(&self, hold_id: &str, quota: &QuotaCell<'_>, amount: i64) -> Result<(), StoreError> {
                let mut tx = self.writer().begin().await?;
                let held = $sql(
                    "UPDATE quota_holds SET amount = amount - $1 \
                     WHERE id = $2 AND subject = $3 AND metric = $4 AND window_start = $5 AND amount >= $1",
                );
                let done = sqlx::query(held).bind(amount).bind(hold_id).bind(quota.subject).bind(quota.metric).bind(quota.window_start).execute(&mut *tx).await?;
                if done.rows_affected() == 1 {
                    Self::unreserve(&mut tx, quota, amount, 0).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn settle_quota(&self, hold_id: &str, quota: &QuotaCell<'_>, actual: i64) -> Result<bool, StoreError> {
                let mut tx = self.writer().begin().await?;
                let take = $sql(
                    "DELETE FROM quota_holds WHERE id = $1 AND subject = $2 AND metric = $3 AND window_start = $4 RETURNING amount",
                );
                let amount: Option<i64> = sqlx::query_scalar(take).bind(hold_id).bind(quota.subject).bind(quota.metric).bind(quota.window_start).fetch_optional(&mut *tx).await?;
                let Some(amount) = amount else {
                    return Ok(false);
                };
                Self::unreserve(&mut tx, quota, amount, actual.clamp(0, amount)).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn renew_holds(&self, lease_secs: i64, progress: &[HoldProgress]) -> Result<(), StoreError> {
                if progress.is_empty() {
                    // Still a round trip: an instance without live holds learns from this
                    // whether the store is reachable (it must not reconcile right after an
                    // outage it did not notice).
                    sqlx::query("SELECT 1").execute(self.writer()).await?;
                    return Ok(());
                }
                let renew = format!(
                    "UPDATE quota_holds SET deadline = {} + $1, delivered = $2 WHERE id = $3 AND metric = $4",
                    $now
                );
                // One statement per hold, each its own transaction: renewal takes no lock
                // while it waits for another, so it can never be part of a deadlock.
                for p in progress {
                    sqlx::query($sql(&renew)).bind(lease_secs).bind(p.delivered).bind(&p.id).bind(p.metric).execute(self.writer()).await?;
                }
                Ok(())
            }

            async fn reconcile_holds(&self, grace_secs: i64) -> Result<Vec<HoldRecord>, StoreError> {
                let expired = $sql(&format!(
                    "SELECT {HOLD_COLUMNS} FROM quota_holds WHERE deadline < {} - $1 ORDER BY deadline LIMIT 500",
                    $now
                ));
                let rows = sqlx::query(expired).bind(grace_secs).fetch_all(self.writer()).await?;
                let candidates = rows.iter().map(Self::hold_from).collect::<Result<Vec<_>, _>>()?;
                // Each taken by a conditional DELETE: of two instances reconciling at once,
                // or a holder settling late, exactly one moves the amount.
                let take = format!(
                    "DELETE FROM quota_holds WHERE id = $1 AND subject = $2 AND metric = $3 AND window_start = $4 \
                     AND deadline < {} - $5 RETURNING {HOLD_COLUMNS}",
                    $now
                );
                let mut settled = Vec::new();
                for c in candidates {
                    let mut tx = self.writer().begin().await?;
                    let row = sqlx::query($sql(&take)).bind(&c.id).bind(&c.subject).bind(&c.metric).bind(c.window_start).bind(grace_secs).fetch_optional(&mut *tx).await?;
                    let Some(row) = row else { continue };
                    let hold = Self::hold_from(&row)?;
                    let quota = QuotaCell { subject: &hold.subject, metric: &hold.metric, window_start: hold.window_start };
                    Self::unreserve(&mut tx, &quota, hold.amount, hold.delivered.clamp(0, hold.amount)).await?;
                    tx.commit().await?;
                    settled.push(hold);
                }
                Ok(settled)
            }

            async fn quota_holds(&self) -> Result<Vec<HoldRecord>, StoreError> {
                let sql = $sql(&format!("SELECT {HOLD_COLUMNS} FROM quota_holds ORDER BY id, subject, metric"));
                let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(Self::hold_from).collect::<Result<_, _>>()?)
            }

            async fn quota_usage(&self, subject: &str, metric: &str, window_start: i64) -> Result<(i64, i64), StoreError> {
                let sql = $sql("SELECT used, reserved FROM quota_usage WHERE subject = $1 AND metric = $2 AND window_start = $3");
                let row = sqlx::query(sql).bind(subject).bind(metric).bind(window_start).fetch_optional(&self.pool).await?;
                Ok(match row {
                    Some(r) => (r.try_get("used")?, r.try_get("reserved")?),
                    None => (0, 0),
                })
            }

            async fn quota_history(&self, subject: &str, since: i64) -> Result<Vec<QuotaWindow>, StoreError> {
                let sql = $sql("SELECT metric, window_start, used, reserved FROM quota_usage WHERE subject = $1 AND window_start >= $2 ORDER BY window_start, metric");
                let rows = sqlx::query(sql).bind(subject).bind(since).fetch_all(&self.pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    out.push(QuotaWindow {
                        metric: r.try_get("metric")?,
                        window_start: r.try_get("window_start")?,
                        used: r.try_get("used")?,
                        reserved: r.try_get("reserved")?,
                    });
                }
                Ok(out)
            }

            async fn insert_voice(&self, v: &VoiceRecord, max_per_account: i64) -> Result<bool, StoreError> {
                // The count check and the insert in one statement: concurrent uploads cannot
                // exceed the account's limit.
                let sql = $sql(
                    "INSERT INTO voice_references (id, account_id, name, duration_ms, created_at, sealed) \
                     SELECT $1, $2, $3, $4, $5, $6 \
                     WHERE (SELECT COUNT(*) FROM voice_references WHERE account_id = $2) < $7",
                );
                let done = sqlx::query(sql)
                    .bind(&v.id)
                    .bind(&v.account_id)
                    .bind(&v.name)
                    .bind(v.duration_ms)
                    .bind(v.created_at)
                    .bind(&v.sealed)
                    .bind(max_per_account)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { e.into() })?;
                Ok(done.rows_affected() == 1)
            }

            async fn voices(&self, account_id: &str) -> Result<Vec<VoiceRecord>, StoreError> {
                let sql = $sql("SELECT id, account_id, name, duration_ms, created_at FROM voice_references WHERE account_id = $1 ORDER BY created_at, id");
                let rows = sqlx::query(sql).bind(account_id).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(|r| Self::voice_from(r, false)).collect::<Result<_, _>>()?)
            }

            async fn voices_created_before(&self, cutoff: i64) -> Result<Vec<VoiceRecord>, StoreError> {
                let sql = $sql("SELECT id, account_id, name, duration_ms, created_at FROM voice_references WHERE created_at < $1 ORDER BY created_at, id");
                let rows = sqlx::query(sql).bind(cutoff).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(|r| Self::voice_from(r, false)).collect::<Result<_, _>>()?)
            }

            async fn voice(&self, account_id: &str, id: &str) -> Result<Option<VoiceRecord>, StoreError> {
                let sql = $sql("SELECT id, account_id, name, duration_ms, created_at, sealed FROM voice_references WHERE account_id = $1 AND id = $2");
                let row = sqlx::query(sql).bind(account_id).bind(id).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| Self::voice_from(&r, true)).transpose()?)
            }

            async fn insert_client_secret(&self, secret: &ClientSecretRecord) -> Result<(), StoreError> {
                let sql = $sql("INSERT INTO client_secrets (id, digest, keyid, session, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)");
                sqlx::query(sql)
                    .bind(&secret.id)
                    .bind(&secret.digest)
                    .bind(&secret.keyid)
                    .bind(&secret.session)
                    .bind(secret.created_at)
                    .bind(secret.expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn client_secret(&self, id: &str) -> Result<Option<ClientSecretRecord>, StoreError> {
                let sql = $sql("SELECT id, digest, keyid, session, created_at, expires_at FROM client_secrets WHERE id = $1");
                let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
                let read = |r: &<$db as sqlx::Database>::Row| -> Result<ClientSecretRecord, sqlx::Error> {
                    Ok(ClientSecretRecord {
                        id: r.try_get("id")?,
                        digest: r.try_get("digest")?,
                        keyid: r.try_get("keyid")?,
                        session: r.try_get("session")?,
                        created_at: r.try_get("created_at")?,
                        expires_at: r.try_get("expires_at")?,
                    })
                };
                Ok(row.as_ref().map(read).transpose()?)
            }

            async fn purge_client_secrets(&self, expired_before: i64) -> Result<u64, StoreError> {
                let sql = $sql("DELETE FROM client_secrets WHERE expires_at < $1");
                let done = sqlx::query(sql).bind(expired_before).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn insert_web_session(&self, session: &WebSessionRecord) -> Result<(), StoreError> {
                let sql = $sql("INSERT INTO web_sessions (digest, keyid, surface, created_at, expires_at, seen_at) VALUES ($1, $2, $3, $4, $5, $6)");
                sqlx::query(sql)
                    .bind(&session.digest)
                    .bind(&session.keyid)
                    .bind(&session.surface)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .bind(session.seen_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn web_session(&self, digest: &[u8]) -> Result<Option<WebSessionRecord>, StoreError> {
                let sql = $sql("SELECT digest, keyid, surface, created_at, expires_at, seen_at FROM web_sessions WHERE digest = $1");
                let row = sqlx::query(sql).bind(digest).fetch_optional(&self.pool).await?;
                let read = |r: &<$db as sqlx::Database>::Row| -> Result<WebSessionRecord, sqlx::Error> {
                    Ok(WebSessionRecord {
                        digest: r.try_get("digest")?,
                        keyid: r.try_get("keyid")?,
                        surface: r.try_get("surface")?,
                        created_at: r.try_get("created_at")?,
                        expires_at: r.try_get("expires_at")?,
                        seen_at: r.try_get("seen_at")?,
                    })
                };
                Ok(row.as_ref().map(read).transpose()?)
            }

            async fn touch_web_session(&self, digest: &[u8], seen_at: i64) -> Result<(), StoreError> {
                let sql = $sql("UPDATE web_sessions SET seen_at = $2 WHERE digest = $1 AND seen_at < $2");
                sqlx::query(sql).bind(digest).bind(seen_at).execute(&self.pool).await?;
                Ok(())
            }

            async fn delete_web_session(&self, digest: &[u8]) -> Result<bool, StoreError> {
                let sql = $sql("DELETE FROM web_sessions WHERE digest = $1");
                let done = sqlx::query(sql).bind(digest).execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn purge_web_sessions(&self, now: i64, idle_before: i64) -> Result<u64, StoreError> {
                let sql = $sql("DELETE FROM web_sessions WHERE expires_at <= $1 OR seen_at < $2");
                let done = sqlx::query(sql).bind(now).bind(idle_before).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn delete_voice(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
                let sql = $sql("DELETE FROM voice_references WHERE account_id = $1 AND id = $2");
                let done = sqlx::query(sql).bind(account_id).bind(id).execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn audit_page(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
                // One constant statement per direction; an absent filter binds NULL.
                const MATCH: &str = "(CAST($2 AS TEXT) IS NULL OR account_id = $2 OR subject = $2 \
                     OR subject IN (SELECT keyid FROM api_keys WHERE account_id = $2)) \
                     AND (CAST($3 AS TEXT) IS NULL OR kind = $3) \
                     AND (CAST($4 AS BIGINT) IS NULL OR at >= $4) \
                     AND (CAST($5 AS BIGINT) IS NULL OR at <= $5)";
                let (sql, cursor) = if filter.newest_first {
                    (
                        format!("SELECT seq, at, kind, actor, account_id, subject, source, detail, idx, leaf_hash FROM audit_events WHERE seq < $1 AND {MATCH} ORDER BY seq DESC LIMIT $6"),
                        filter.cursor.unwrap_or(i64::MAX),
                    )
                } else {
                    (
                        format!("SELECT seq, at, kind, actor, account_id, subject, source, detail, idx, leaf_hash FROM audit_events WHERE seq > $1 AND {MATCH} ORDER BY seq LIMIT $6"),
                        filter.cursor.unwrap_or(i64::MIN),
                    )
                };
                let rows = sqlx::query($sql(&sql))
                    .bind(cursor)
                    .bind(filter.account_id.as_deref())
                    .bind(filter.kind.as_deref())
                    .bind(filter.since)
                    .bind(filter.until)
                    .bind(filter.limit.clamp(1, 1000))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(Self::audit_from)
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn audit_events(&self, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
                let sql = $sql("SELECT seq, at, kind, actor, account_id, subject, source, detail, idx, leaf_hash FROM audit_events ORDER BY seq DESC LIMIT $1");
                let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await?;
                rows.iter()
                    .map(Self::audit_from)
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }
        }
    };
}

/// The database's clock, in seconds since the epoch (for rows whose age several instances
/// compare: their own clocks may disagree).
const SQLITE_NOW: &str = "CAST(strftime('%s', 'now') AS INTEGER)";
const POSTGRES_NOW: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)";

/// SQLite: one process writes at a time anyway (`BEGIN` on the first write).
const SQLITE_MIGRATION_LOCK: Option<&'static str> = None;
/// Audit appends: SQLite has one writer; PostgreSQL instances take turns on an advisory lock
/// (the unique position index would refuse a collision anyway).
const SQLITE_AUDIT_LOCK: Option<&'static str> = None;
const POSTGRES_AUDIT_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7366761298)");
/// PostgreSQL: a transaction-scoped advisory lock serialises concurrent migrators.
const POSTGRES_MIGRATION_LOCK: Option<&'static str> =
    Some("SELECT pg_advisory_xact_lock(7366761297)");

impl_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlite_sql,
    SQLITE_NOW,
    SQLITE_MIGRATIONS,
    SQLITE_MIGRATION_LOCK,
    SQLITE_AUDIT_LOCK
);
impl_store!(
    PostgresStore,
    sqlx::Postgres,
    postgres_sql,
    POSTGRES_NOW,
    POSTGRES_MIGRATIONS,
    POSTGRES_MIGRATION_LOCK,
    POSTGRES_AUDIT_LOCK
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The state a transaction SQLite rolled back by itself leaves in sqlx (its ROLLBACK
    /// fails, its count stays at one): the connection is not reused, so no later
    /// `SAVEPOINT` can keep a write transaction, and the database lock, open.
    #[tokio::test]
    async fn a_connection_whose_transaction_sqlite_ended_is_not_reused() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(&dir.path().join("t.db"))
            .await
            .expect("open");
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&store.pool)
            .await
            .expect("create");
        {
            let mut tx = store.pool.begin().await.expect("begin");
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut *tx)
                .await
                .expect("insert");
            // As SQLite does after some errors: the transaction ends under sqlx's feet.
            sqlx::raw_sql("ROLLBACK")
                .execute(&mut *tx)
                .await
                .expect("rollback");
        }
        // Every connection of the pool in turn: begin, write, drop (roll back).
        for _ in 0..16 {
            let mut tx = store.pool.begin().await.expect("begin");
            sqlx::query("INSERT INTO t VALUES (2)")
                .execute(&mut *tx)
                .await
                .expect("insert");
        }
        // Another writer is not locked out.
        let started = std::time::Instant::now();
        let mut writers = Vec::new();
        for _ in 0..SQLITE_CONNECTIONS {
            writers.push(store.pool.acquire().await.expect("acquire"));
        }
        for conn in &mut writers {
            sqlx::query("INSERT INTO t VALUES (3)")
                .execute(&mut **conn)
                .await
                .unwrap_or_else(|e| panic!("locked out after {:?}: {e}", started.elapsed()));
        }
        drop(writers);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&store.pool)
            .await
            .expect("count");
        assert_eq!(
            rows,
            i64::from(SQLITE_CONNECTIONS),
            "only the autocommitted rows stay"
        );
    }
}
