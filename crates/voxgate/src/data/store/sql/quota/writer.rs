//! The SQLite writer of reservations and settlements: one thread that owns a connection of
//! its own, takes whatever operations are queued and writes them in as few statements (and
//! commits) as their rows allow (see the parent module for the statements, and `drain` for
//! when it waits for company).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{BATCH_ROWS, is_exceeded, reserve_rows, settle_batch};
use crate::data::store::{HoldTag, QuotaAsk, StoreError};

/// One request's reservation, owned, on its way to the batcher.
#[derive(Debug)]
pub(super) struct Reservation {
    pub(super) hold: String,
    pub(super) instance: String,
    pub(super) lease_secs: i64,
    pub(super) asks: Vec<(String, String, i64, i64, i64)>, // subject, metric, window start, amount, limit
}

/// What a reservation statement answers for one request: the counters after it, one per
/// quota, or `None`: a limit refused it (and nothing of it was written).
pub(super) type Reserved = Result<Option<Vec<(i64, i64)>>, StoreError>;

impl Reservation {
    pub(super) fn of(hold: &HoldTag<'_>, asks: &[QuotaAsk<'_>]) -> Self {
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
pub(super) enum Op {
    Reserve(Reservation, oneshot::Sender<Reserved>),
    Settle(String, [i64; 4], oneshot::Sender<Result<usize, StoreError>>),
}

/// The writer's queue of reservations and settlements (see the module's comment).
#[derive(Debug, Clone)]
pub(in crate::data::store::sql) struct Batcher {
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
    pub(in crate::data::store::sql) fn start(path: &Path) -> Result<Self, StoreError> {
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
    pub(super) async fn run<T>(
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
pub(super) fn open_writer(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
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
pub(super) struct Granted {
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

/// One statement for every request of `batch`. A request past its limit aborts the whole
/// statement: the batch is then split in halves and each tried again, down to the request
/// that is refused (a few statements for one refusal, not one per request). Any other
/// failure is every request's answer. What it grants is noted in `granted`.
pub(super) fn reserve_batch(
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

#[cfg(test)]
mod tests {
    use super::super::tests::{
        holding_the_write_lock, reservation, reserve, reserve_leased, store,
    };
    use super::*;

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
