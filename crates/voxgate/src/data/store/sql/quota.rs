//! A request's quota reservation and settlement, the two database trips every metered
//! request makes. On SQLite each is one statement (the triggers of migration 0010 move the
//! counters, atomically with the statement), and the reservations (and settlements) of
//! requests that arrive while one statement runs go in the next one together (and, while
//! many other requests are under way, those that arrive within 100 µs: see `writer`). One
//! [`Batcher`] thread owns a SQLite connection of its own and runs the statements itself:
//! a busy gateway pays one commit per batch rather than per request, and one hand-over to
//! that thread and back, where sqlx's connection would add several (each statement, and
//! each return of the connection to its pool, is a round trip through sqlx's worker
//! thread). On PostgreSQL each is one transaction.

use std::collections::HashMap;

use sqlx::Row as _;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use tokio::sync::oneshot;

mod writer;

pub(super) use writer::Batcher;
use writer::{Op, Reservation};

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

/// Whether `err` is the reservation trigger's refusal.
fn is_exceeded(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(_, Some(message)) if message == EXCEEDED)
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
    use super::writer::{Granted, open_writer, reserve_batch};
    use super::*;

    fn ask(subject: &str, amount: i64, limit: i64) -> (String, String, i64, i64, i64) {
        (subject.into(), "characters".into(), 0, amount, limit)
    }

    pub(super) fn reservation(
        hold: &str,
        asks: Vec<(String, String, i64, i64, i64)>,
    ) -> Reservation {
        Reservation {
            hold: hold.into(),
            instance: "i".into(),
            lease_secs: 60,
            asks,
        }
    }

    pub(super) async fn store() -> (tempfile::TempDir, SqliteStore) {
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
    pub(super) fn holding_the_write_lock(dir: &tempfile::TempDir) -> rusqlite::Connection {
        let blocker = writer(dir);
        blocker
            .execute_batch("BEGIN IMMEDIATE")
            .expect("the write lock");
        blocker
    }

    /// One request's reservation of `amount` characters of acct's 100, through the batcher.
    pub(super) async fn reserve(
        store: &SqliteStore,
        hold: &str,
        amount: i64,
    ) -> Result<Vec<(i64, i64)>, usize> {
        reserve_leased(store, hold, amount, 60).await
    }

    /// [`reserve`] with a lease of `lease_secs`.
    pub(super) async fn reserve_leased(
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
}
