//! The FHIR spool's reading side: readings the store committed with `fhir.all_readings` on,
//! waiting to be moved into the FHIR worker's outbox.
//!
//! The store's writer puts a reading's key in the spool in the same transaction as the reading
//! itself, so a reading accepted (and acknowledged to its device) is never lost to a crash
//! before it reaches the outbox; the worker takes the oldest, queues them in the outbox (where
//! a reading already queued is ignored), and only then removes them from the spool
//! ([`Store::fhir_spool_done`]). A crash between the two queues nothing twice.

use rusqlite::params;

use super::embedded::{Store, StoreError};
use crate::domain::{DeviceId, Metric, Observation, PatientId};

/// One spooled reading: its spool id, and the reading (`None` when it is no longer stored:
/// retention removed it first).
pub type Spooled = (i64, Option<Observation>);

impl Store {
    /// The oldest `limit` readings in the FHIR spool, in order.
    pub async fn fhir_spool_batch(&self, limit: usize) -> Result<Vec<Spooled>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT s.id, s.device_id, s.metric, s.time_ms, o.patient_id, o.value
                 FROM fhir_spool s LEFT JOIN observations o
                   ON o.device_id = s.device_id AND o.metric = s.metric AND o.time_ms = s.time_ms
                 ORDER BY s.id LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                let device: String = r.get(1)?;
                let code: u8 = r.get(2)?;
                let patient: Option<String> = r.get(4)?;
                let value: Option<f64> = r.get(5)?;
                let obs = (|| {
                    Some(Observation {
                        patient_id: PatientId::parse(&patient?).ok()?,
                        device_id: DeviceId::parse(&device).ok()?,
                        metric: Metric::from_code(code)?,
                        value: value?,
                        time_ms: r.get(3).ok()?,
                    })
                })();
                Ok((r.get(0)?, obs))
            })?;
            rows.collect()
        })
        .await
    }

    /// How many readings wait in the FHIR spool.
    pub async fn fhir_spool_depth(&self) -> Result<i64, StoreError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM fhir_spool", [], |r| r.get(0)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    fn obs(t: i64) -> Observation {
        Observation {
            patient_id: PatientId::parse("p1").unwrap(),
            device_id: DeviceId::parse("d1").unwrap(),
            metric: Metric::HeartRate,
            value: 60.0 + t as f64,
            time_ms: t,
        }
    }

    #[tokio::test]
    async fn new_readings_are_spooled_once_with_their_commit_and_leave_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_with_outbox(dir.path(), 64, 64, Metrics::new(), None, true).unwrap();
        store.insert(vec![obs(1), obs(2)], 0).await.unwrap();
        // A redelivery stores nothing and spools nothing.
        store.insert(vec![obs(2), obs(3)], 0).await.unwrap();
        let spooled = store.fhir_spool_batch(10).await.unwrap();
        let times: Vec<i64> = spooled
            .iter()
            .map(|(_, o)| o.as_ref().unwrap().time_ms)
            .collect();
        assert_eq!(times, [1, 2, 3]);
        assert_eq!(spooled[1].1.as_ref().unwrap().value, 62.0);
        store.fhir_spool_done(spooled[1].0).await.unwrap();
        assert_eq!(store.fhir_spool_depth().await.unwrap(), 1);
        // Pruned before it was moved: still listed, without the reading, so it can be cleared.
        store.prune(10).await.unwrap();
        let left = store.fhir_spool_batch(10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].1.is_none());
        // Restarted without all_readings: nothing new is spooled, what was there stays.
        store.close().await;
        let store = Store::open(dir.path(), 64, 64, Metrics::new()).unwrap();
        store.insert(vec![obs(20)], 0).await.unwrap();
        assert_eq!(store.fhir_spool_depth().await.unwrap(), 1);
    }
}
