//! The monthly partitions of `readings.observations`: made when a month is first written (and
//! ahead of time for this month and the next), dropped whole by retention.
//!
//! A partition is made under a transaction-scoped advisory lock, so instances making the same
//! month at once make it once. It is made beside the table, filled with whatever the default
//! partition already holds of its month, and then attached: attaching a month that the default
//! partition has rows of would otherwise fail. Months far from now (a device clock years off)
//! get no partition of their own and stay in the default one.

use std::collections::HashSet;

use deadpool_postgres::Pool;
use time::{Date, Month, OffsetDateTime};

use super::error::write_err;
use crate::store::types::StoreError;

/// The advisory lock key for partition changes ("vigilprt" in ASCII, any constant of ours).
const PARTITION_LOCK: i64 = 0x7669_6769_6c70_7274;

/// Months of their own only this far back from now (older readings go to the default
/// partition), and this far ahead.
const MONTHS_BACK: i32 = 120;
const MONTHS_AHEAD: i32 = 2;

/// A calendar month (UTC) as a count of months since year 0: `year * 12 + month - 1`.
pub(super) type MonthIndex = i32;

/// The month a time (Unix ms) falls in.
pub(super) fn month_of(time_ms: i64) -> Option<MonthIndex> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000).ok()?;
    Some(t.year() * 12 + i32::from(u8::from(t.month())) - 1)
}

/// When month `m` starts (Unix ms, UTC).
pub(super) fn month_start_ms(m: MonthIndex) -> Option<i64> {
    let year = m.div_euclid(12);
    let month = Month::try_from(u8::try_from(m.rem_euclid(12) + 1).ok()?).ok()?;
    let day = Date::from_calendar_date(year, month, 1).ok()?;
    Some(day.midnight().assume_utc().unix_timestamp() * 1000)
}

/// The partition's table name for month `m`, e.g. `observations_2026_12`.
pub(super) fn table_name(m: MonthIndex) -> String {
    format!(
        "observations_{:04}_{:02}",
        m.div_euclid(12),
        m.rem_euclid(12) + 1
    )
}

/// The month a partition's table name stands for.
pub(super) fn month_of_name(name: &str) -> Option<MonthIndex> {
    let rest = name.strip_prefix("observations_")?;
    let (y, m) = rest.split_once('_')?;
    let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
    (y.to_string().len() == 4 && (1..=12).contains(&m)).then_some(y * 12 + m - 1)
}

/// The months that have a partition, as far as this instance knows.
pub(super) struct Partitions {
    known: HashSet<MonthIndex>,
}

impl Partitions {
    /// Reads the partitions there are.
    pub(super) async fn load(pool: &Pool) -> Result<Partitions, StoreError> {
        let conn = pool.get().await.map_err(write_err)?;
        let rows = conn
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = 'readings.observations'::regclass",
                &[],
            )
            .await
            .map_err(write_err)?;
        Ok(Partitions {
            known: rows
                .iter()
                .filter_map(|r| month_of_name(r.get::<_, &str>(0)))
                .collect(),
        })
    }

    /// Makes sure the months of `times` (and this month and the next, by `now_ms`) have a
    /// partition, making those that lack one.
    pub(super) async fn ensure(
        &mut self,
        pool: &Pool,
        times: impl Iterator<Item = i64>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let Some(now) = month_of(now_ms) else {
            return Ok(());
        };
        let mut wanted: Vec<MonthIndex> = times
            .filter_map(month_of)
            .chain([now, now + 1])
            .filter(|m| (now - MONTHS_BACK..=now + MONTHS_AHEAD).contains(m))
            .filter(|m| !self.known.contains(m))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for m in wanted {
            make(pool, m).await?;
            self.known.insert(m);
        }
        Ok(())
    }

    /// Forgets a month (its partition was dropped).
    pub(super) fn forget(&mut self, m: MonthIndex) {
        self.known.remove(&m);
    }
}

/// Makes month `m`'s partition unless another instance already has.
async fn make(pool: &Pool, m: MonthIndex) -> Result<(), StoreError> {
    let (Some(from), Some(to)) = (month_start_ms(m), month_start_ms(m + 1)) else {
        return Ok(());
    };
    let name = table_name(m);
    let mut conn = pool.get().await.map_err(write_err)?;
    let tx = conn.transaction().await.map_err(write_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await
        .map_err(write_err)?;
    let exists = tx
        .query_opt(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'readings' AND c.relname = $1",
            &[&name],
        )
        .await
        .map_err(write_err)?
        .is_some();
    if !exists {
        // `name`, `from` and `to` are made here from numbers, never from input.
        tx.batch_execute(&format!(
            "CREATE TABLE readings.{name}
               (LIKE readings.observations INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             WITH moved AS (
               DELETE FROM readings.observations_default
                WHERE time_ms >= {from} AND time_ms < {to} RETURNING *)
             INSERT INTO readings.{name} SELECT * FROM moved;
             ALTER TABLE readings.observations
               ATTACH PARTITION readings.{name} FOR VALUES FROM ({from}) TO ({to});"
        ))
        .await
        .map_err(write_err)?;
        tracing::info!(partition = %name, "readings partition made");
    }
    tx.commit().await.map_err(write_err)?;
    Ok(())
}

/// Drops the partitions wholly older than `before_ms`; the rows they held (as PostgreSQL
/// last counted them, an estimate; counted exactly when it never has) and the months dropped.
/// A partition that cannot be locked within two seconds (a long read holds it) is left for
/// the next pass.
pub(super) async fn drop_before(
    tx: &mut deadpool_postgres::Transaction<'_>,
    before_ms: i64,
) -> Result<(usize, Vec<MonthIndex>), StoreError> {
    let rows = tx
        .query(
            "SELECT c.relname::text, CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'readings.observations'::regclass",
            &[],
        )
        .await
        .map_err(write_err)?;
    let mut dropped = (0usize, Vec::new());
    for r in rows {
        let name: &str = r.get(0);
        let Some(m) = month_of_name(name) else {
            continue;
        };
        if month_start_ms(m + 1).is_none_or(|end| end > before_ms) {
            continue;
        }
        let rows = match r.get::<_, Option<i64>>(1) {
            Some(n) => n,
            None => tx
                .query_one(&format!("SELECT count(*) FROM readings.{name}"), &[])
                .await
                .map_err(write_err)?
                .get(0),
        };
        let sp = tx.transaction().await.map_err(write_err)?;
        let done = sp
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = '2s'; DROP TABLE readings.{name};"
            ))
            .await;
        match done {
            Ok(()) => {
                sp.commit().await.map_err(write_err)?;
                dropped.0 += usize::try_from(rows).unwrap_or(0);
                dropped.1.push(m);
                tracing::info!(partition = %name, "retention: readings partition dropped");
            }
            Err(e) => {
                sp.rollback().await.map_err(write_err)?;
                tracing::warn!(partition = %name, error = %e, "retention: partition not dropped this time");
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_round_trip_through_times_and_names() {
        let nov_2026 = month_of(1_795_611_600_000).unwrap(); // 2026-11-25
        assert_eq!(table_name(nov_2026), "observations_2026_11");
        assert_eq!(month_of_name("observations_2026_11"), Some(nov_2026));
        assert_eq!(month_start_ms(nov_2026), Some(1_793_491_200_000)); // 2026-11-01
        assert_eq!(month_start_ms(nov_2026 + 2), Some(1_798_761_600_000)); // 2027-01-01
        assert_eq!(month_of(1_793_491_200_000), Some(nov_2026));
        assert_eq!(month_of(1_793_491_199_999), Some(nov_2026 - 1));
        assert_eq!(month_of(-1), month_of_name("observations_1969_12"));
        for bad in [
            "observations_default",
            "observations_2026_13",
            "observations_26_01",
            "x",
        ] {
            assert_eq!(month_of_name(bad), None, "{bad}");
        }
    }
}
