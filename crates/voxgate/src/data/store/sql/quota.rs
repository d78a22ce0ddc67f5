//! A request's quota reservation and settlement, the two database trips every metered
//! request makes. On SQLite each is one statement (the triggers of migration 0010 move the
//! counters, atomically with the statement), and the reservations (and settlements) of
//! requests that arrive while one statement runs go in the next one together (and, while
//! many other requests are under way, those that arrive within 100 µs: see `drain`). One
//! [`Batcher`] thread owns a SQLite connection of its own and runs the statements itself:
//! a busy gateway pays one commit per batch rather than per request, and one hand-over to
//! that thread and back, where sqlx's connection would add several (each statement, and
//! each return of the connection to its pool, is a round trip through sqlx's worker
//! thread). On PostgreSQL each is one transaction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Row as _;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::{PostgresStore, SQLITE_NOW, SqliteStore, postgres_sql};
use crate::data::store::{HoldTag, QuotaAsk, QuotaCell, Store as _, StoreError};

/// The message of the reservation trigger's abort.
const EXCEEDED: &str = "quota_exceeded";

/// The metrics a settlement charges: the `n`th is element `n + 1` of a hold's JSON array.
const METRICS: [&str; 4] = [
    "characters",
    "audio_seconds",
    "requests",
    "transcribed_seconds",
];

/// Holder rows one reservation statement writes (unless one request alone has more: it
/// goes alone), and operations taken from the queue at once: it bounds how long one
/// statement holds the writer while other requests wait.
const BATCH_ROWS: usize = 128;

/// One request's reservation, owned, on its way to the batcher.
#[derive(Debug)]
struct Reservation {
    hold: String,
    instance: String,
    lease_secs: i64,
    asks: Vec<(String, String, i64, i64, i64)>, // subject, metric, window start, amount, limit
}

/// What a reservation statement answers for one request: the counters after it, one per
/// quota, or `None`: a limit refused it (and nothing of it was written).
type Reserved = Result<Option<Vec<(i64, i64)>>, StoreError>;

impl Reservation {
    fn of(hold: &HoldTag<'_>, asks: &[QuotaAsk<'_>]) -> Self {
        Self {
            hold: hold.id.to_owned(),
            instance: hold.instance.to_owned(),
            lease_secs: hold.lease_secs,
            asks: asks
                .iter()
                .map(|a| {
                    let c = &a.cell;
                    let (subject, metric) = (c.subject.to_owned(), c.metric.to_owned());
                    (subject, metric, c.window_start, a.amount, a.limit)
                })
                .collect(),
        }
    }
}

#[derive(Debug)]
enum Op {
    Reserve(Reservation, oneshot::Sender<Reserved>),
    Settle(String, [i64; 4], oneshot::Sender<Result<usize, StoreError>>),
}

/// The writer's queue of reservations and settlements (see the module's comment).
#[derive(Debug, Clone)]
pub(super) struct Batcher {
    ops: mpsc::Sender<Op>,
    /// What the writer counts, for the tests.
    #[cfg_attr(not(test), expect(dead_code, reason = "the tests read it"))]
    counts: Arc<Counts>,
}

/// What the writer counts, for the tests.
#[derive(Debug, Default)]
struct Counts {
    /// Batches of reservations taken so far (one statement each unless one was refused).
    batches: AtomicUsize,
    /// Operations taken from the queue so far.
    taken: AtomicUsize,
    /// Times the writer waited [`GATHER_FOR`] for more operations before a batch.
    gathered: AtomicUsize,
}

impl Batcher {
    /// Opens the writer's connection to the database at `path` and starts the thread that
    /// drains the queue into it; the thread ends when the last handle is dropped.
    pub(super) fn start(path: &Path) -> Result<Self, StoreError> {
        let writer = open_writer(path).map_err(|e| StoreError::of_sqlite(&e))?;
        let (ops, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let written = Arc::clone(&counts);
        std::thread::Builder::new()
            .name("voxgate-quota".into())
            .spawn(move || drain(&writer, rx, &written))
            .map_err(StoreError::unavailable)?;
        Ok(Self { ops, counts })
    }

    /// Queues `op` and waits for its answer; the writer thread gone (it panicked) is an
    /// outage.
    async fn run<T>(
        &self,
        op: Op,
        answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.ops.send(op).await.is_err() {
            return Err(StoreError::unavailable("the quota writer has stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::unavailable("the quota writer has stopped")))
    }
}

/// The writer's connection, set up as sqlx sets up the store's others (the file is in WAL
/// mode already: the store's pool opened it first).
fn open_writer(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The store's other writes (renewals, reconciliation, replayed settlements, key use)
    // go through sqlx's writer connection, so this one meets them at SQLite's write lock.
    // SQLite's own busy handler sleeps a millisecond, then 2, 5, 10 and more between
    // tries, and every request queued here would wait as long: this one tries again every
    // 50 µs instead (their transactions are one short statement each), for 1.5 s at most,
    // below the guard's bound on an operation, as the pool's (see `SqliteStore::open`).
    conn.busy_handler(Some(retry_soon))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// The writer's busy handler: another connection holds the write lock; `tries` so far in
/// this wait (0 when it begins). Gives up 1.5 s after the wait began, by the clock: a
/// count of pauses would wait far longer on a loaded machine, where each oversleeps.
fn retry_soon(tries: i32) -> bool {
    const PAUSE: std::time::Duration = std::time::Duration::from_micros(50);
    const PATIENCE: std::time::Duration = std::time::Duration::from_millis(1_500);
    thread_local! {
        static SINCE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    let since = SINCE.with(|since| {
        if tries == 0 {
            since.set(Some(now));
        }
        since.get().unwrap_or(now)
    });
    if now.duration_since(since) >= PATIENCE {
        return false;
    }
    std::thread::sleep(PAUSE);
    true
}

/// Operations waiting for the writer at most; a request beyond waits to queue.
const QUEUE: usize = 4096;

/// How long the writer waits for more operations before it writes a batch while other
/// requests are under way (see `drain`).
const GATHER_FOR: std::time::Duration = std::time::Duration::from_micros(100);

/// Holds under way, besides those a batch settles, at which the writer starts to wait
/// [`GATHER_FOR`] for company (see `drain`).
const GATHER_AMONG: usize = 8;

/// The writer thread: takes whatever waits (up to [`BATCH_ROWS`] operations) and writes it.
///
/// A batch's commit costs about the same for one operation as for several (the WAL frames
/// of the same few pages, SQLite's file locks, the writer's wake-up), and on a busy gateway
/// the operations rarely wait for one another by themselves: the writer usually wakes for
/// one. So while many other requests are under way ([`GATHER_AMONG`] holds it granted, not
/// counting those this batch settles: `Granted`), it first waits [`GATHER_FOR`] (at least:
/// the timer's slack and the scheduler add to it) for more to join the batch. With fewer,
/// another's operation seldom arrives within the wait, which each request would pay twice
/// in latency (measured: waiting while any other request held cost a third of the
/// throughput at 2 and 4 clients). A lone client does not wait (unless holds settled some
/// other way are still remembered: see `Granted`).
fn drain(writer: &rusqlite::Connection, mut rx: mpsc::Receiver<Op>, counts: &Counts) {
    let mut ops = Vec::new();
    let mut granted = Granted::default();
    while rx.blocking_recv_many(&mut ops, BATCH_ROWS) > 0 {
        counts.taken.fetch_add(ops.len(), Ordering::Relaxed);
        granted.sweep();
        if ops.len() < BATCH_ROWS && granted.others_than(&ops) {
            counts.gathered.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(GATHER_FOR);
            while ops.len() < BATCH_ROWS {
                let Ok(op) = rx.try_recv() else { break };
                counts.taken.fetch_add(1, Ordering::Relaxed);
                ops.push(op);
            }
        }
        granted.settling(&ops);
        // A bug that panics fails this batch's callers (their answers are dropped: an
        // outage to them), not every reservation until a restart.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write(writer, ops.drain(..), &counts.batches, &mut granted)
        }));
        if written.is_err() {
            tracing::error!("the quota writer failed a batch (a panic); it goes on");
        }
    }
}

/// The holds the writer granted and has not been asked to settle, each until its first
/// lease runs out, [`QUEUE`] at most: only whether the writer waits for company depends on
/// it, never what it writes. A hold settled some other way (a settlement that could not
/// reach the writer in an outage is journaled and replayed through the store's pool) is
/// forgotten when its lease ends; until then the writer may wait when it need not. A
/// renewed hold is forgotten early, and a hold past the bound is not remembered: the
/// writer may then wait less than it could.
#[derive(Default)]
struct Granted {
    holds: HashMap<String, std::time::Instant>,
    /// When the holds past their lease were last forgotten.
    swept: Option<std::time::Instant>,
}

impl Granted {
    /// The longest lease a hold is remembered for (the longest the configuration allows).
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(86_400);

    /// Forgets the holds past their lease, at most once a second.
    fn sweep(&mut self) {
        if self.holds.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .swept
            .is_none_or(|at| now.duration_since(at).as_secs() >= 1)
        {
            self.holds.retain(|_, until| *until > now);
            self.swept = Some(now);
        }
    }

    /// Whether [`GATHER_AMONG`] holds or more, besides those `ops` settle, are under way.
    fn others_than(&self, ops: &[Op]) -> bool {
        let settled_here = ops
            .iter()
            .filter(|op| matches!(op, Op::Settle(hold, ..) if self.holds.contains_key(hold)))
            .count();
        self.holds.len() >= settled_here + GATHER_AMONG
    }

    /// Forgets the holds `ops` settle.
    fn settling(&mut self, ops: &[Op]) {
        for op in ops {
            if let Op::Settle(hold, ..) = op {
                self.holds.remove(hold);
            }
        }
    }

    /// Remembers a hold granted now, for its lease (none when [`QUEUE`] are remembered).
    fn granted(&mut self, reservation: &Reservation) {
        if self.holds.len() >= QUEUE {
            return;
        }
        let secs = u64::try_from(reservation.lease_secs).unwrap_or(0);
        let lease = std::time::Duration::from_secs(secs).min(Self::LONGEST);
        let until = std::time::Instant::now() + lease;
        self.holds.insert(reservation.hold.clone(), until);
    }
}

/// One batch of operations: the settlements in one statement, then the reservations in as
/// few as their rows allow; what it grants is noted in `granted`.
fn write(
    writer: &rusqlite::Connection,
    ops: impl Iterator<Item = Op>,
    batches: &AtomicUsize,
    granted: &mut Granted,
) {
    let (mut reserves, mut settles) = (Vec::new(), Vec::new());
    for op in ops {
        match op {
            // A caller that gave up (its bound on the store passed) reserves nothing.
            Op::Reserve(r, reply) if !reply.is_closed() => reserves.push((r, reply)),
            Op::Reserve(..) => {}
            Op::Settle(hold, amounts, reply) => settles.push((hold, amounts, reply)),
        }
    }
    // Settlements first: what they free is there for the reservations. A settlement
    // has no refusal to isolate: if the statement fails, it failed for each of them.
    if !settles.is_empty() {
        let batch: Vec<_> = settles.iter().map(|(h, a, _)| (h.as_str(), *a)).collect();
        match settle_batch(writer, &batch) {
            Ok(counts) => {
                for ((_, _, reply), n) in settles.into_iter().zip(counts) {
                    let _ = reply.send(Ok(n));
                }
            }
            Err(e) => {
                for (_, _, reply) in settles {
                    let _ = reply.send(Err(StoreError::of_sqlite(&e)));
                }
            }
        }
    }
    let (mut batch, mut rows) = (Vec::new(), 0);
    for (r, reply) in reserves {
        if rows + r.asks.len() > BATCH_ROWS && !batch.is_empty() {
            batches.fetch_add(1, Ordering::Relaxed);
            reserve_batch(writer, std::mem::take(&mut batch), granted);
            rows = 0;
        }
        rows += r.asks.len();
        batch.push((r, reply));
    }
    if !batch.is_empty() {
        batches.fetch_add(1, Ordering::Relaxed);
        reserve_batch(writer, batch, granted);
    }
}

/// Whether `err` is the reservation trigger's refusal.
fn is_exceeded(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(_, Some(message)) if message == EXCEEDED)
}

/// One statement for every request of `batch`. A request past its limit aborts the whole
/// statement: the batch is then split in halves and each tried again, down to the request
/// that is refused (a few statements for one refusal, not one per request). Any other
/// failure is every request's answer. What it grants is noted in `granted`.
fn reserve_batch(
    writer: &rusqlite::Connection,
    mut batch: Vec<(Reservation, oneshot::Sender<Reserved>)>,
    granted: &mut Granted,
) {
    // A caller that gave up meanwhile reserves nothing.
    batch.retain(|(_, reply)| !reply.is_closed());
    if batch.is_empty() {
        return;
    }
    let all: Vec<&Reservation> = batch.iter().map(|(r, _)| r).collect();
    match reserve_rows(writer, &all) {
        Ok(usage) => {
            for ((r, reply), usage) in batch.into_iter().zip(usage) {
                granted.granted(&r);
                let _ = reply.send(Ok(Some(usage)));
            }
        }
        Err(e) if is_exceeded(&e) && batch.len() == 1 => {
            let _ = batch.remove(0).1.send(Ok(None));
        }
        Err(e) if is_exceeded(&e) => {
            let second = batch.split_off(batch.len() / 2);
            reserve_batch(writer, batch, granted);
            reserve_batch(writer, second, granted);
        }
        Err(e) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::of_sqlite(&e)));
            }
        }
    }
}

/// Inserts the holder rows of `reservations` in one statement (all or none: the trigger
/// aborts the statement past any limit) and returns each request's counters after its
/// reservation, quota by quota. No request may name one counter twice (see `reserve_all`).
///
/// The rows travel as one JSON array bound to the statement's one parameter (read back
/// with `jsonb_each`), so the statement's text is the same for every batch: prepared once
/// on the writer and kept, where a `VALUES` list of the batch's own length would be parsed
/// and planned again for each batch. `jsonb_each` hands each row over as binary JSON, which
/// `->>` reads as it is; `json_each` rendered each row back to text at every `r.value`, for
/// `->>` to look up in SQLite's cache of parsed JSON (eight times a row).
fn reserve_rows(
    writer: &rusqlite::Connection,
    reservations: &[&Reservation],
) -> rusqlite::Result<Vec<Vec<(i64, i64)>>> {
    // One array per row: hold, subject, metric, window start, amount, instance, lease, limit.
    let mut rows = Vec::new();
    for r in reservations {
        let (hold, instance, lease) = (&r.hold, &r.instance, r.lease_secs);
        for (subject, metric, start, amount, limit) in &r.asks {
            rows.push((hold, subject, metric, start, amount, instance, lease, limit));
        }
    }
    // Where each returned row goes: (request, ask) by the row's primary key (hold, subject,
    // metric, window start), which the statement cannot have written twice.
    let mut place: HashMap<(&str, &str, &str, i64), (usize, usize)> = HashMap::new();
    for (r, reservation) in reservations.iter().enumerate() {
        let hold = reservation.hold.as_str();
        for (i, (subject, metric, start, ..)) in reservation.asks.iter().enumerate() {
            place.insert((hold, subject.as_str(), metric.as_str(), *start), (r, i));
        }
    }
    let mut usage: Vec<Vec<(i64, i64)>> = reservations
        .iter()
        .map(|r| vec![(0, 0); r.asks.len()])
        .collect();
    let mut statement = writer.prepare_cached(&RESERVE)?;
    let mut returned = statement.query([json(&rows)?])?;
    while let Some(row) = returned.next()? {
        let key = (
            row.get_ref(0)?.as_str()?,
            row.get_ref(1)?.as_str()?,
            row.get_ref(2)?.as_str()?,
            row.get::<_, i64>(3)?,
        );
        let Some(&(r, i)) = place.get(&key) else {
            continue;
        };
        let used: Option<i64> = row.get(4)?;
        let reserved: Option<i64> = row.get(5)?;
        usage[r][i] = (
            used.unwrap_or(0),
            reserved.unwrap_or(0) + reservations[r].asks[i].3,
        );
    }
    Ok(usage)
}

/// A batch's rows as the one parameter of its statement.
fn json(rows: &impl serde::Serialize) -> rusqlite::Result<String> {
    serde_json::to_string(rows).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// The reservation statement (see `reserve_rows`). `->>` needs SQLite 3.38, `jsonb_each`
/// and text with a NUL kept whole 3.45: the `sqlite-bundled` build brings its own, newer
/// (a test pins the version and the round trip of awkward text). Each window's counter is
/// read as it was before this row's trigger moved it (SQLite evaluates a row's RETURNING
/// before the row's own AFTER trigger, after those of earlier rows), so the counter after
/// this row's reservation is (used, reserved + amount). The store contract test checks the
/// figures.
static RESERVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let counter = |column| {
        format!(
            "(SELECT {column} FROM quota_usage u WHERE u.subject = quota_holds.subject \
             AND u.metric = quota_holds.metric AND u.window_start = quota_holds.window_start)"
        )
    };
    format!(
        "INSERT INTO quota_holds (id, subject, metric, window_start, amount, delivered, \
         instance, deadline, quota_limit) \
         SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3, r.value ->> 4, 0, \
         r.value ->> 5, {SQLITE_NOW} + (r.value ->> 6), r.value ->> 7 FROM jsonb_each(?) AS r \
         RETURNING id, subject, metric, window_start, {} AS used, {} AS reserved",
        counter("used"),
        counter("reserved")
    )
});

/// Settles every hold of `holds` (id, what it used of each of [`METRICS`]) in one
/// statement; how many rows each settled (0 for a hold already settled, or named twice:
/// the first naming counts). One JSON parameter, as in `reserve_rows`.
fn settle_batch(
    writer: &rusqlite::Connection,
    holds: &[(&str, [i64; 4])],
) -> rusqlite::Result<Vec<usize>> {
    let mut named = std::collections::HashSet::new();
    let first: Vec<(&str, i64, i64, i64, i64)> = holds
        .iter()
        .filter(|(hold, _)| named.insert(*hold))
        .map(|(hold, [a, b, c, d])| (*hold, *a, *b, *c, *d))
        .collect();
    // Rows the statement itself updated (the trigger's deletions are not counted).
    let mut settled: HashMap<String, usize> = HashMap::new();
    let mut statement = writer.prepare_cached(&SETTLE)?;
    let mut returned = statement.query([json(&first)?])?;
    while let Some(row) = returned.next()? {
        *settled.entry(row.get(0)?).or_default() += 1;
    }
    Ok(holds
        .iter()
        .map(|(hold, _)| settled.remove(*hold).unwrap_or(0))
        .collect())
}

/// The settlement statement (see `settle_batch`): each hold's row of a metric is set to
/// that metric's amount, the `n`th of [`METRICS`] being the array's element `n + 1`.
static SETTLE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let arms: Vec<String> = METRICS
        .iter()
        .enumerate()
        .map(|(n, metric)| format!("WHEN '{metric}' THEN s.value ->> {}", n + 1))
        .collect();
    format!(
        "UPDATE quota_holds SET settled = CASE quota_holds.metric {} ELSE 0 END \
         FROM jsonb_each(?) AS s \
         WHERE quota_holds.id = s.value ->> 0 AND quota_holds.settled IS NULL \
         RETURNING quota_holds.id",
        arms.join(" ")
    )
});

impl SqliteStore {
    pub(super) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    pub(super) async fn reserve_all(
        &self,
        hold: &HoldTag<'_>,
        asks: &[QuotaAsk<'_>],
    ) -> Result<Result<Vec<(i64, i64)>, usize>, StoreError> {
        if asks.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let cells: Vec<_> = asks.iter().map(|a| a.cell).collect();
        if (1..cells.len()).any(|i| cells[..i].contains(&cells[i])) {
            // Two quotas on one counter (a minute's and a day's window can start at the same
            // second): one row each is not possible, so one statement per quota.
            return self.reserve_each(hold, asks).await;
        }
        let (reply, answer) = oneshot::channel();
        let op = Op::Reserve(Reservation::of(hold, asks), reply);
        match self.batcher.run(op, answer).await? {
            Some(usage) => Ok(Ok(usage)),
            None => Ok(Err(self.refused_at(asks).await)),
        }
    }

    /// Which quota refused a reservation (read after the fact: the first that cannot hold
    /// its amount now; the first when none can be named, as the window may have moved
    /// meanwhile or the read failed: the refusal stands either way).
    async fn refused_at(&self, asks: &[QuotaAsk<'_>]) -> usize {
        for (i, ask) in asks.iter().enumerate() {
            let c = &ask.cell;
            let Ok((used, reserved)) = self.quota_usage(c.subject, c.metric, c.window_start).await
            else {
                break;
            };
            if used + reserved + ask.amount > ask.limit {
                return i;
            }
        }
        0
    }

    pub(super) async fn settle_all(
        &self,
        hold_id: &str,
        actual: &(dyn for<'m> Fn(&'m str) -> i64 + Sync),
    ) -> Result<usize, StoreError> {
        let amounts = METRICS.map(actual);
        let (reply, answer) = oneshot::channel();
        self.batcher
            .run(Op::Settle(hold_id.to_owned(), amounts, reply), answer)
            .await
    }
}

impl PostgresStore {
    pub(super) fn writer(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn reserve_all(
        &self,
        hold: &HoldTag<'_>,
        asks: &[QuotaAsk<'_>],
    ) -> Result<Result<Vec<(i64, i64)>, usize>, StoreError> {
        self.reserve_each(hold, asks).await
    }

    pub(super) async fn settle_all(
        &self,
        hold_id: &str,
        actual: &(dyn for<'m> Fn(&'m str) -> i64 + Sync),
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let take = postgres_sql(
            "DELETE FROM quota_holds WHERE id = $1 RETURNING subject, metric, window_start, amount",
        );
        let mut rows = Vec::new();
        for row in sqlx::query(take).bind(hold_id).fetch_all(&mut *tx).await? {
            let key: (String, String, i64) = (
                row.try_get("subject")?,
                row.try_get("metric")?,
                row.try_get("window_start")?,
            );
            rows.push((key, row));
        }
        // The counters are locked in the order reservations lock them (sorted), whatever
        // order the rows came in: a settlement and a reservation cannot deadlock.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, row) in &rows {
            let (subject, metric): (String, String) =
                (row.try_get("subject")?, row.try_get("metric")?);
            let amount: i64 = row.try_get("amount")?;
            let quota = QuotaCell {
                subject: &subject,
                metric: &metric,
                window_start: row.try_get("window_start")?,
            };
            Self::unreserve(&mut tx, &quota, amount, actual(&metric).clamp(0, amount)).await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(subject: &str, amount: i64, limit: i64) -> (String, String, i64, i64, i64) {
        (subject.into(), "characters".into(), 0, amount, limit)
    }

    fn reservation(hold: &str, asks: Vec<(String, String, i64, i64, i64)>) -> Reservation {
        Reservation {
            hold: hold.into(),
            instance: "i".into(),
            lease_secs: 60,
            asks,
        }
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(&dir.path().join("t.db"))
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        (dir, store)
    }

    /// A connection set up as the batcher's, for calling its statements directly.
    fn writer(dir: &tempfile::TempDir) -> rusqlite::Connection {
        open_writer(&dir.path().join("t.db")).expect("writer")
    }

    /// A second connection holding the database's write lock until it commits.
    fn holding_the_write_lock(dir: &tempfile::TempDir) -> rusqlite::Connection {
        let blocker = writer(dir);
        blocker
            .execute_batch("BEGIN IMMEDIATE")
            .expect("the write lock");
        blocker
    }

    /// One request's reservation of `amount` characters of acct's 100, through the batcher.
    async fn reserve(
        store: &SqliteStore,
        hold: &str,
        amount: i64,
    ) -> Result<Vec<(i64, i64)>, usize> {
        reserve_leased(store, hold, amount, 60).await
    }

    /// [`reserve`] with a lease of `lease_secs`.
    async fn reserve_leased(
        store: &SqliteStore,
        hold: &str,
        amount: i64,
        lease_secs: i64,
    ) -> Result<Vec<(i64, i64)>, usize> {
        let tag = HoldTag {
            id: hold,
            instance: "i",
            lease_secs,
        };
        let cell = QuotaCell {
            subject: "acct",
            metric: "characters",
            window_start: 0,
        };
        let ask = QuotaAsk {
            cell,
            amount,
            limit: 100,
        };
        store.reserve_all(&tag, &[ask]).await.expect("store")
    }

    /// Several requests in one statement: each gets the counters after its own rows, in
    /// the statement's order; one past its limit aborts the statement, and then each is
    /// split in halves until it stands alone: the others are granted, it alone is refused,
    /// nothing of it is written.
    #[tokio::test]
    async fn a_batch_grants_each_request_in_turn_and_one_refusal_refuses_only_it() {
        let (dir, store) = store().await;
        let writer = writer(&dir);
        let usage = reserve_rows(
            &writer,
            &[
                &reservation("h1", vec![ask("a", 3, 10), ask("b", 1, 10)]),
                &reservation("h2", vec![ask("a", 4, 10)]),
            ],
        )
        .expect("one statement");
        assert_eq!(usage, vec![vec![(0, 3), (0, 1)], vec![(0, 7)]]);

        let (mut replies, mut batch) = (Vec::new(), Vec::new());
        // A caller that has gone (its bound on the store passed) reserves nothing.
        let (gone, _) = oneshot::channel();
        batch.push((reservation("h6", vec![ask("a", 1, 10)]), gone));
        for (hold, amount) in [("h3", 2), ("h4", 5), ("h5", 1)] {
            let (tx, rx) = oneshot::channel();
            batch.push((reservation(hold, vec![ask("a", amount, 10)]), tx));
            replies.push(rx);
        }
        reserve_batch(&writer, batch, &mut Granted::default());
        let mut answers = Vec::new();
        for rx in replies {
            answers.push(rx.await.expect("answered").expect("no error"));
        }
        // 7 + 2 = 9 fits, 9 + 5 does not, 9 + 1 = 10 fits; nothing of h6.
        assert_eq!(answers, vec![Some(vec![(0, 9)]), None, Some(vec![(0, 10)])]);
        let h6: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quota_holds WHERE id = 'h6'")
            .fetch_one(&store.writer)
            .await
            .expect("count");
        assert_eq!(h6, 0);
        assert_eq!(
            store.quota_usage("a", "characters", 0).await.expect("read"),
            (0, 10)
        );

        // Settled together; a hold named twice is settled once, an unknown one not at all.
        let counts = settle_batch(
            &writer,
            &[
                ("h1", [2, 0, 0, 0]),
                ("h2", [9, 0, 0, 0]),
                ("h1", [3, 0, 0, 0]),
                ("h9", [1, 0, 0, 0]),
            ],
        )
        .expect("one statement");
        assert_eq!(counts, vec![2, 1, 0, 0]);
        // Each row is charged at most what it reserved: h1 2 of its 3 on a and 1 of its 1
        // on b (it used 2 characters), h2 4 of its 4 (it claims 9); h3 and h5 still hold 3.
        assert_eq!(
            store.quota_usage("a", "characters", 0).await.expect("read"),
            (6, 3)
        );
        assert_eq!(
            store.quota_usage("b", "characters", 0).await.expect("read"),
            (1, 0)
        );
    }

    /// The rows go through JSON: text that needs escaping and the extremes of i64 come back
    /// as they went in, in the holder rows and in the counters.
    #[tokio::test]
    async fn batch_rows_survive_their_json_encoding() {
        let (dir, store) = store().await;
        let writer = writer(&dir);
        let version: String = writer
            .query_row("SELECT sqlite_version()", [], |row| row.get(0))
            .expect("version");
        let parts: Vec<u32> = version
            .split('.')
            .map(|p| p.parse().expect("number"))
            .collect();
        assert!(
            parts[..2] >= [3, 45][..],
            "bundled SQLite {version} is older than 3.45"
        );
        let awkward = "a\"b\\c\u{e9}\u{1F600}\u{2028}\u{0}\n";
        let hold = "hold\"\\\u{e9}";
        let rows = vec![(
            awkward.to_owned(),
            "characters".to_owned(),
            i64::MIN,
            5,
            i64::MAX,
        )];
        let usage = reserve_rows(&writer, &[&reservation(hold, rows)]).expect("reserved");
        assert_eq!(usage, vec![vec![(0, 5)]]);
        let (id, subject, start): (String, String, i64) =
            sqlx::query_as("SELECT id, subject, window_start FROM quota_holds")
                .fetch_one(&store.writer)
                .await
                .expect("row");
        assert_eq!(
            (id.as_str(), subject.as_str(), start),
            (hold, awkward, i64::MIN)
        );
        let counts = settle_batch(&writer, &[(hold, [3, 0, 0, 0])]).expect("settled");
        assert_eq!(counts, vec![1]);
        assert_eq!(
            store
                .quota_usage(awkward, "characters", i64::MIN)
                .await
                .expect("read"),
            (3, 0)
        );
    }

    /// Through the batcher: requests that wait together are answered one by one, as alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_through_the_batcher_never_overspend() {
        let (_dir, store) = store().await;
        let mut tasks = Vec::new();
        for n in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let granted = reserve(&store, &format!("h{n}"), 3).await;
                granted.is_ok().then(|| format!("h{n}"))
            }));
        }
        let mut granted = Vec::new();
        for task in tasks {
            granted.extend(task.await.expect("task"));
        }
        assert_eq!(granted.len(), 33, "100 / 3 reservations fit");
        let mut tasks = Vec::new();
        for hold in granted {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.settle_all(&hold, &|_| 2).await.expect("store")
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task"), 1, "each hold settles its row");
        }
        assert_eq!(
            store
                .quota_usage("acct", "characters", 0)
                .await
                .expect("read"),
            (66, 0)
        );
    }

    /// The writer's failures are sorted as sqlx's: the database locked by another writer
    /// past the writer's patience is an outage (the request is told to retry), a limit's
    /// refusal is not a failure at all, and a malformed statement is a database error.
    #[tokio::test]
    async fn the_writers_failures_are_sorted_as_the_stores() {
        let (dir, _store) = store().await;
        let blocker = holding_the_write_lock(&dir);
        let impatient = writer(&dir);
        impatient.busy_handler(None).expect("no retries");
        let busy = reserve_rows(&impatient, &[&reservation("h1", vec![ask("a", 1, 10)])])
            .expect_err("the database is locked");
        assert!(!is_exceeded(&busy));
        assert!(StoreError::of_sqlite(&busy).is_outage(), "{busy}");
        blocker.execute_batch("COMMIT").expect("released");

        let refused = reserve_rows(&impatient, &[&reservation("h2", vec![ask("a", 11, 10)])])
            .expect_err("past the limit");
        assert!(is_exceeded(&refused), "{refused}");
        let broken = impatient
            .execute_batch("INSERT INTO no_such_table VALUES (1)")
            .expect_err("no such table");
        let sorted = StoreError::of_sqlite(&broken);
        assert!(
            matches!(sorted, StoreError::Database(_)),
            "{broken}: {sorted:?}"
        );
    }

    /// Reservations that wait together go in one statement. While another connection holds
    /// the database's write lock, the batcher's first statement waits in its busy handler
    /// and the other requests queue behind it; when the lock goes, they all go in the next
    /// statement: two at most for eight requests, however the first batch was cut (the
    /// lock is held for less than the handler's 1.5 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reservations_that_wait_together_share_one_batch() {
        let (dir, store) = store().await;
        let blocker = holding_the_write_lock(&dir);
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { reserve(&store, &format!("h{n}"), 1).await })
            })
            .collect();
        // Every request is queued (the queue's used capacity) or taken by the batcher.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while QUEUE - store.batcher.ops.capacity()
            + store.batcher.counts.taken.load(Ordering::Relaxed)
            < 8
        {
            assert!(std::time::Instant::now() < deadline, "the requests queue");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        blocker.execute_batch("COMMIT").expect("released");
        let mut granted = Vec::new();
        for task in tasks {
            granted.push(task.await.expect("task").expect("granted"));
        }
        assert!((1..=2).contains(&store.batcher.counts.batches.load(Ordering::Relaxed)));
        assert_eq!(store.batcher.counts.taken.load(Ordering::Relaxed), 8);
        // Each saw the counter after its own row, in the statements' order.
        granted.sort();
        let expected: Vec<Vec<(i64, i64)>> = (1..=8).map(|n| vec![(0, n)]).collect();
        assert_eq!(granted, expected);
    }

    /// The writer waits for more operations only while [`GATHER_AMONG`] holds it granted,
    /// besides those being settled, are under way: not for a lone client, nor among fewer;
    /// a settlement of a hold the writer never granted forgets nothing, and a refused
    /// reservation holds nothing.
    #[tokio::test]
    async fn the_writer_waits_for_company_only_among_many_holds() {
        let (_dir, store) = store().await;
        let gathered = || store.batcher.counts.gathered.load(Ordering::Relaxed);
        let settle = |hold: &'static str| store.settle_all(hold, &|_| 1);

        reserve(&store, "alone", 1).await.expect("granted");
        assert_eq!(settle("alone").await.expect("settled"), 1);
        assert_eq!(gathered(), 0, "a lone client never waits");

        for n in 0..GATHER_AMONG {
            reserve(&store, &format!("h{n}"), 1).await.expect("granted");
        }
        assert_eq!(gathered(), 0, "fewer others held");
        assert_eq!(settle("never").await.expect("settled"), 0);
        assert_eq!(gathered(), 1, "GATHER_AMONG others hold");
        reserve(&store, "h8", 1).await.expect("granted");
        assert_eq!(gathered(), 2, "the unknown hold's settlement forgot none");
        assert_eq!(settle("h8").await.expect("settled"), 1);
        assert_eq!(gathered(), 3, "GATHER_AMONG others hold");
        assert_eq!(settle("h7").await.expect("settled"), 1);
        assert_eq!(gathered(), 3, "one fewer holds");

        assert_eq!(reserve(&store, "too-much", 200).await, Err(0));
        reserve(&store, "after", 1).await.expect("granted");
        assert_eq!(gathered(), 3, "a refusal holds nothing");
    }

    /// A hold the writer granted and never saw settled (its settlement went through the
    /// journal, or its holder died) is forgotten when its lease ends: the writer does not
    /// count it for ever.
    #[tokio::test]
    async fn a_hold_the_writer_never_sees_settled_is_forgotten_after_its_lease() {
        // The writer's first sweep comes at its first wake with a hold remembered, the
        // next a second later: "lost" (a lease of 0 s) is forgotten at the second wake.
        let (_dir, store) = store().await;
        reserve_leased(&store, "lost", 1, 0).await.expect("granted");
        for n in 1..GATHER_AMONG {
            reserve(&store, &format!("h{n}"), 1).await.expect("granted");
        }
        reserve(&store, "next", 1).await.expect("granted");
        assert_eq!(store.batcher.counts.gathered.load(Ordering::Relaxed), 0);
    }

    /// Any lease a hold names is remembered without overflow (a negative one as none, a
    /// huge one as the longest the configuration allows), and no more holds than the
    /// queue's bound.
    #[test]
    fn the_holds_the_writer_remembers_are_bounded() {
        let mut granted = Granted::default();
        for (hold, lease_secs) in [("negative", -1), ("huge", i64::MAX)] {
            granted.granted(&Reservation {
                lease_secs,
                ..reservation(hold, Vec::new())
            });
        }
        assert_eq!(granted.holds.len(), 2);
        for n in 0..QUEUE + 10 {
            granted.granted(&reservation(&format!("h{n}"), Vec::new()));
        }
        assert_eq!(granted.holds.len(), QUEUE);
    }
}
