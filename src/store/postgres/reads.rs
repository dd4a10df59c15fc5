//! The store's reads on PostgreSQL: the same answers as on SQLite, from the pool.

use deadpool_postgres::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::error::read_err;
use crate::domain::{DeviceId, Metric, Observation, PatientId};
use crate::store::reads::Reads;
use crate::store::types::{
    FedReadings, InfluxLine, ObservationQuery, SeriesPoint, Spooled, StoreError, StoredDeadLetter,
    StoredObservation,
};

/// Reads from the pool shared with the writer and the registry.
pub(in crate::store) struct PgReads {
    pub(super) pool: Pool,
}

impl PgReads {
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let conn = self.pool.get().await.map_err(read_err)?;
        let stmt = conn.prepare_cached(sql).await.map_err(read_err)?;
        conn.query(&stmt, params).await.map_err(read_err)
    }

    async fn count(&self, sql: &str) -> Result<i64, StoreError> {
        Ok(self.query(sql, &[]).await?[0].get(0))
    }
}

fn metric_code(m: Metric) -> i16 {
    i16::from(m.code())
}

fn observation(r: &Row) -> Option<StoredObservation> {
    Some(StoredObservation {
        time_ms: r.get(0),
        metric: Metric::from_code(u8::try_from(r.get::<_, i16>(1)).ok()?)?,
        value: r.get(2),
        device_id: r.get(3),
        received_ms: r.get(4),
    })
}

fn point(r: &Row) -> SeriesPoint {
    SeriesPoint {
        time_ms: r.get(0),
        mean: r.get(1),
        min: r.get(2),
        max: r.get(3),
        count: r.get(4),
    }
}

const COLUMNS: &str =
    "SELECT time_ms, metric, value, device_id, received_ms FROM readings.observations";

#[async_trait::async_trait]
impl Reads for PgReads {
    async fn latest(
        &self,
        patient: PatientId,
        metric: Metric,
    ) -> Result<Option<StoredObservation>, StoreError> {
        let rows = self
            .query(
                &format!(
                    "{COLUMNS} WHERE patient_id = $1 AND metric = $2 ORDER BY time_ms DESC LIMIT 1"
                ),
                &[&patient.as_str(), &metric_code(metric)],
            )
            .await?;
        Ok(rows.first().and_then(observation))
    }

    async fn observations(
        &self,
        q: ObservationQuery,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        // Ties broken as SQLite breaks them: device ids bytewise.
        let order = match (q.metric.is_some(), q.newest_first) {
            (true, false) => "time_ms, device_id COLLATE \"C\"",
            (true, true) => "time_ms DESC, device_id COLLATE \"C\" DESC",
            (false, false) => "time_ms, metric, device_id COLLATE \"C\"",
            (false, true) => "time_ms DESC, metric DESC, device_id COLLATE \"C\" DESC",
        };
        let rows = match q.metric {
            Some(m) => {
                self.query(
                    &format!(
                        "{COLUMNS} WHERE patient_id = $1 AND metric = $2
                           AND time_ms BETWEEN $3 AND $4 ORDER BY {order} LIMIT $5"
                    ),
                    &[
                        &q.patient_id.as_str(),
                        &metric_code(m),
                        &q.from_ms,
                        &q.to_ms,
                        &limit,
                    ],
                )
                .await?
            }
            None => {
                self.query(
                    &format!(
                        "{COLUMNS} WHERE patient_id = $1 AND time_ms BETWEEN $2 AND $3
                           ORDER BY {order} LIMIT $4"
                    ),
                    &[&q.patient_id.as_str(), &q.from_ms, &q.to_ms, &limit],
                )
                .await?
            }
        };
        Ok(rows.iter().filter_map(observation).collect())
    }

    async fn count_in(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<i64, StoreError> {
        let rows = self
            .query(
                "SELECT count(*) FROM readings.observations
                  WHERE patient_id = $1 AND metric = $2 AND time_ms BETWEEN $3 AND $4",
                &[&patient.as_str(), &metric_code(metric), &from_ms, &to_ms],
            )
            .await?;
        Ok(rows[0].get(0))
    }

    async fn last_reading(
        &self,
        device: DeviceId,
        metrics: Vec<Metric>,
    ) -> Result<Option<i64>, StoreError> {
        // A backward index scan per metric, not a scan of the device's readings.
        let codes: Vec<i16> = metrics.into_iter().map(metric_code).collect();
        let rows = self
            .query(
                "SELECT max(t) FROM unnest($2::smallint[]) AS m(code),
                        LATERAL (SELECT max(time_ms) AS t FROM readings.observations
                                  WHERE device_id = $1 AND metric = m.code) AS latest",
                &[&device.as_str(), &codes],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    async fn quarter_hours(
        &self,
        patient: PatientId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .query(
                "SELECT DISTINCT device_id, (time_ms / 900000) * 900000
                   FROM readings.observations
                  WHERE patient_id = $1 AND time_ms >= $2 AND time_ms < $3",
                &[&patient.as_str(), &from_ms, &to_ms],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn points(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let rows = self
            .query(
                "SELECT time_ms, value, value, value, 1::bigint FROM readings.observations
                  WHERE patient_id = $1 AND metric = $2 AND time_ms BETWEEN $3 AND $4
                  ORDER BY time_ms",
                &[&patient.as_str(), &metric_code(metric), &from_ms, &to_ms],
            )
            .await?;
        Ok(rows.iter().map(point).collect())
    }

    async fn buckets(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let rows = self
            .query(
                "SELECT $3 + ((time_ms - $3) / $5) * $5 AS bucket, avg(value), min(value),
                        max(value), count(*)
                   FROM readings.observations
                  WHERE patient_id = $1 AND metric = $2 AND time_ms BETWEEN $3 AND $4
                  GROUP BY bucket ORDER BY bucket",
                &[
                    &patient.as_str(),
                    &metric_code(metric),
                    &from_ms,
                    &to_ms,
                    &step_ms,
                ],
            )
            .await?;
        Ok(rows.iter().map(point).collect())
    }

    async fn count_observations(&self) -> Result<i64, StoreError> {
        self.count("SELECT count(*) FROM readings.observations")
            .await
    }

    async fn dead_letters(
        &self,
        device_id: Option<DeviceId>,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql =
            "SELECT id, time_ms, device_id, topic, reason, payload FROM readings.dead_letters";
        let rows = match device_id {
            Some(d) => {
                self.query(
                    &format!("{sql} WHERE device_id = $1 ORDER BY id DESC LIMIT $2"),
                    &[&d.as_str(), &limit],
                )
                .await?
            }
            None => {
                self.query(&format!("{sql} ORDER BY id DESC LIMIT $1"), &[&limit])
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|r| StoredDeadLetter {
                id: r.get(0),
                time_ms: r.get(1),
                device_id: r.get(2),
                topic: r.get(3),
                reason: r.get(4),
                payload: r.get(5),
            })
            .collect())
    }

    async fn outbox_batch(&self, limit: usize) -> Result<Vec<InfluxLine>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT id, line FROM readings.influx_outbox ORDER BY id LIMIT $1",
                &[&limit],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn outbox_depth(&self) -> Result<i64, StoreError> {
        self.count("SELECT count(*) FROM readings.influx_outbox")
            .await
    }

    async fn influx_rejected(
        &self,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT time_ms, line, reason FROM readings.influx_rejected
                  ORDER BY id DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    async fn fhir_spool_batch(&self, limit: usize) -> Result<Vec<Spooled>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT s.id, s.device_id, s.metric, s.time_ms, o.patient_id, o.value
                   FROM readings.fhir_spool s LEFT JOIN readings.observations o
                     ON o.device_id = s.device_id AND o.metric = s.metric
                    AND o.time_ms = s.time_ms
                  ORDER BY s.id LIMIT $1",
                &[&limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let obs = (|| {
                    Some(Observation {
                        patient_id: PatientId::parse(r.get::<_, Option<&str>>(4)?).ok()?,
                        device_id: DeviceId::parse(r.get::<_, &str>(1)).ok()?,
                        metric: Metric::from_code(u8::try_from(r.get::<_, i16>(2)).ok()?)?,
                        value: r.get::<_, Option<f64>>(5)?,
                        time_ms: r.get(3),
                    })
                })();
                (r.get(0), obs)
            })
            .collect())
    }

    async fn fhir_spool_depth(&self) -> Result<i64, StoreError> {
        self.count("SELECT count(*) FROM readings.fhir_spool").await
    }

    async fn commit_horizon(&self) -> Result<Option<i64>, StoreError> {
        super::feed::horizon(&self.pool).await.map(Some)
    }

    async fn committed_in(
        &self,
        parts: Vec<u16>,
        from: i64,
        until: i64,
    ) -> Result<Option<FedReadings>, StoreError> {
        super::feed::committed(&self.pool, &parts, from, until)
            .await
            .map(Some)
    }
}
