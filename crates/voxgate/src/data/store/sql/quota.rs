//! A request's quota reservation and settlement, the two database trips every metered
//! request makes. On SQLite each is one statement (the triggers of migration 0010 move the
//! counters, atomically with the statement); on PostgreSQL each is one transaction.

use sqlx::Row as _;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use super::{PostgresStore, SQLITE_NOW, SqliteStore, postgres_sql, sqlite_sql};
use crate::data::store::{HoldTag, QuotaAsk, QuotaCell, Store as _, StoreError};

/// The message of the reservation trigger's abort.
const EXCEEDED: &str = "quota_exceeded";

/// What a settlement charges `metric`: one parameter per metric, in this order.
const SETTLED: &str = "CASE metric WHEN 'characters' THEN ?2 WHEN 'audio_seconds' THEN ?3 \
     WHEN 'requests' THEN ?4 WHEN 'transcribed_seconds' THEN ?5 ELSE 0 END";
const METRICS: [&str; 4] = [
    "characters",
    "audio_seconds",
    "requests",
    "transcribed_seconds",
];

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
        // ?1 hold, ?2 instance, ?3 lease, then five per quota.
        let rows: Vec<String> = (0..asks.len())
            .map(|i| {
                let p = 4 + 5 * i;
                format!(
                    "(?1, ?{}, ?{}, ?{}, ?{}, 0, ?2, {SQLITE_NOW} + ?3, ?{})",
                    p,
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4
                )
            })
            .collect();
        // Each window's counter as it was before this row's trigger moved it (SQLite runs a
        // row's RETURNING before the row's own AFTER trigger, after those of earlier rows;
        // two rows of one statement never share a counter, see above), so the counter
        // after this reservation is (used, reserved + amount). The store contract test
        // checks the figures.
        let counter = |column| {
            format!(
                "(SELECT {column} FROM quota_usage u WHERE u.subject = quota_holds.subject \
                 AND u.metric = quota_holds.metric AND u.window_start = quota_holds.window_start)"
            )
        };
        let sql = format!(
            "INSERT INTO quota_holds (id, subject, metric, window_start, amount, delivered, \
             instance, deadline, quota_limit) VALUES {} \
             RETURNING subject, metric, window_start, {} AS used, {} AS reserved",
            rows.join(", "),
            counter("used"),
            counter("reserved")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hold.id)
            .bind(hold.instance)
            .bind(hold.lease_secs);
        for ask in asks {
            query = query
                .bind(ask.cell.subject)
                .bind(ask.cell.metric)
                .bind(ask.cell.window_start)
                .bind(ask.amount)
                .bind(ask.limit);
        }
        let returned = match query.fetch_all(self.writer()).await {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(e)) if e.message() == EXCEEDED => {
                return Ok(Err(self.refused_at(asks).await));
            }
            Err(e) => return Err(e.into()),
        };
        let mut usage = vec![(0, 0); asks.len()];
        for row in &returned {
            let (subject, metric, window_start): (String, String, i64) = (
                row.try_get("subject")?,
                row.try_get("metric")?,
                row.try_get("window_start")?,
            );
            let Some(i) = cells.iter().position(|c| {
                c.subject == subject && c.metric == metric && c.window_start == window_start
            }) else {
                continue;
            };
            let used: Option<i64> = row.try_get("used")?;
            let reserved: Option<i64> = row.try_get("reserved")?;
            usage[i] = (used.unwrap_or(0), reserved.unwrap_or(0) + asks[i].amount);
        }
        Ok(Ok(usage))
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
        // Rows the statement itself updated (the trigger's deletions are not counted).
        let sql =
            format!("UPDATE quota_holds SET settled = {SETTLED} WHERE id = ?1 AND settled IS NULL");
        let mut query = sqlx::query(sqlite_sql(&sql)).bind(hold_id);
        for metric in METRICS {
            query = query.bind(actual(metric));
        }
        let done = query.execute(self.writer()).await?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
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
