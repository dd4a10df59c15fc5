//! The store on PostgreSQL (with `[database] url`): every instance's readings in one database,
//! in the `readings` schema beside the registry's tables ([`schema`]), observations partitioned
//! by month ([`partitions`]).
//!
//! The writer is the same thread as on SQLite (see [`super::writer`]); each batch is one
//! transaction on a pooled connection, driven on the runtime from that thread. The batch's
//! observations go in as one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING RETURNING`
//! (the returned keys say which were new), then their InfluxDB lines and FHIR spool keys, all
//! committed together. While the database is away each commit fails, so nothing is
//! acknowledged; the pool reconnects by itself when it is back.

mod error;
mod feed;
pub(super) mod import;
mod partitions;
mod reads;
mod schema;

use crate::pg::listen::READINGS_CHANNEL;
use std::collections::HashSet;

use deadpool_postgres::Pool;

use super::types::{Committed, StoreError, StoreOptions};
use super::writer::{Committer, Write};
use crate::domain::partition::alert_partition;
use crate::domain::{Observation, PatientId, now_ms};
use crate::pg::PgError;
use error::write_err;
use partitions::Partitions;
pub(super) use reads::PgReads;

/// Brings the readings' schema up to date: the writer's side and the readers' side.
pub(super) async fn open(
    pool: Pool,
    options: &StoreOptions,
) -> Result<(PgWriter, PgReads), StoreError> {
    let open_err = |e: PgError| StoreError::Open {
        path: "the PostgreSQL database".into(),
        reason: e.to_string(),
    };
    crate::pg::migrate(&pool, schema::VERSION_TABLE, schema::STEPS)
        .await
        .map_err(open_err)?;
    let mut partitions = Partitions::load(&pool).await?;
    partitions
        .ensure(&pool, std::iter::empty(), now_ms())
        .await?;
    Ok((
        PgWriter {
            pool: pool.clone(),
            runtime: tokio::runtime::Handle::current(),
            influx: options.influx_measurement.clone(),
            fhir_readings: options.fhir_readings,
            partitions,
        },
        PgReads { pool },
    ))
}

/// The writer's side: the pool, and what it writes besides the observations.
pub(super) struct PgWriter {
    pool: Pool,
    /// The runtime the writer thread drives its transactions on.
    runtime: tokio::runtime::Handle,
    influx: Option<String>,
    fhir_readings: bool,
    partitions: Partitions,
}

impl Committer for PgWriter {
    fn commit(
        &mut self,
        batch: &[Write],
        fresh: Option<&mut Vec<Observation>>,
    ) -> Result<Vec<Committed>, StoreError> {
        let runtime = self.runtime.clone();
        runtime.block_on(self.commit_batch(batch, fresh))
    }
}

/// A reading's identity, as the database returns it.
type Key = (String, i16, i64);

impl PgWriter {
    async fn commit_batch(
        &mut self,
        batch: &[Write],
        mut fresh: Option<&mut Vec<Observation>>,
    ) -> Result<Vec<Committed>, StoreError> {
        let observations = || {
            batch.iter().flat_map(|w| match w {
                Write::Observations {
                    rows, received_ms, ..
                } => rows.iter().map(|o| (o, *received_ms)).collect::<Vec<_>>(),
                _ => Vec::new(),
            })
        };
        self.partitions
            .ensure(&self.pool, observations().map(|(o, _)| o.time_ms), now_ms())
            .await?;
        let mut conn = self.pool.get().await.map_err(write_err)?;
        let mut tx = conn.transaction().await.map_err(write_err)?;
        let mut new = insert_observations(&tx, observations()).await?;
        let stored_new = !new.is_empty();
        let mut lines = Vec::new();
        let mut spool: (Vec<&str>, Vec<i16>, Vec<i64>) = Default::default();
        let mut results = Vec::with_capacity(batch.len());
        for w in batch {
            let mut c = Committed::default();
            match w {
                Write::Observations { rows, .. } => {
                    for o in rows {
                        let key = (
                            o.device_id.as_str().to_owned(),
                            i16::from(o.metric.code()),
                            o.time_ms,
                        );
                        // Taken out once: the same reading twice in one batch is new once.
                        if !new.remove(&key) {
                            c.duplicates += 1;
                            continue;
                        }
                        c.inserted += 1;
                        if let Some(f) = fresh.as_deref_mut() {
                            f.push(o.clone());
                        }
                        // Only new rows go out: a redelivery is not sent twice.
                        if let Some(measurement) = self.influx.as_deref() {
                            lines.push(super::line_protocol::line(measurement, o));
                        }
                        if self.fhir_readings {
                            spool.0.push(o.device_id.as_str());
                            spool.1.push(i16::from(o.metric.code()));
                            spool.2.push(o.time_ms);
                        }
                    }
                }
                Write::DeadLetter { letter, .. } => {
                    tx.execute(
                        "INSERT INTO readings.dead_letters
                           (time_ms, device_id, patient_id, topic, reason, payload)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[
                            &letter.time_ms,
                            &letter.device_id.as_str(),
                            &letter.patient_id.as_ref().map(PatientId::as_str),
                            &letter.topic,
                            &letter.reason,
                            &letter.payload,
                        ],
                    )
                    .await
                    .map_err(write_err)?;
                    c.inserted = 1;
                }
                Write::OutboxDone {
                    ids,
                    rejected,
                    reason,
                    at_ms,
                    ..
                } => {
                    if !rejected.is_empty() {
                        tx.execute(
                            "INSERT INTO readings.influx_rejected (time_ms, line, reason)
                             SELECT $1, l, $3 FROM unnest($2::text[]) WITH ORDINALITY AS u(l, n)
                             ORDER BY n",
                            &[at_ms, rejected, reason],
                        )
                        .await
                        .map_err(write_err)?;
                    }
                    c.inserted = count(
                        tx.execute(
                            "DELETE FROM readings.influx_outbox WHERE id = ANY($1)",
                            &[ids],
                        )
                        .await
                        .map_err(write_err)?,
                    );
                }
                Write::FhirSpoolDone { ids, .. } => {
                    c.inserted = count(
                        tx.execute("DELETE FROM readings.fhir_spool WHERE id = ANY($1)", &[ids])
                            .await
                            .map_err(write_err)?,
                    );
                }
                Write::Prune { before_ms, .. } => {
                    let (rows, months) = partitions::drop_before(&mut tx, *before_ms).await?;
                    let deleted = tx
                        .execute(
                            "DELETE FROM readings.observations WHERE time_ms < $1",
                            &[before_ms],
                        )
                        .await
                        .map_err(write_err)?
                        + tx.execute(
                            "DELETE FROM readings.dead_letters WHERE time_ms < $1",
                            &[before_ms],
                        )
                        .await
                        .map_err(write_err)?;
                    c.inserted = rows + count(deleted);
                    for m in months {
                        self.partitions.forget(m);
                    }
                }
                Write::Shutdown => {}
            }
            results.push(c);
        }
        if !lines.is_empty() {
            tx.execute(
                "INSERT INTO readings.influx_outbox (line)
                 SELECT l FROM unnest($1::text[]) WITH ORDINALITY AS u(l, n) ORDER BY n",
                &[&lines],
            )
            .await
            .map_err(write_err)?;
        }
        if !spool.0.is_empty() {
            tx.execute(
                "INSERT INTO readings.fhir_spool (device_id, metric, time_ms)
                 SELECT d, m, t FROM unnest($1::text[], $2::int2[], $3::int8[])
                   WITH ORDINALITY AS u(d, m, t, n) ORDER BY n",
                &[&spool.0, &spool.1, &spool.2],
            )
            .await
            .map_err(write_err)?;
        }
        if stored_new {
            // Wakes every instance's displays' feed once this commits (`store::everyone`).
            tx.batch_execute(&format!("NOTIFY {READINGS_CHANNEL}"))
                .await
                .map_err(write_err)?;
        }
        tx.commit().await.map_err(write_err)?;
        Ok(results)
    }
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Inserts the batch's observations in one statement; the keys of those that were new.
async fn insert_observations<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: impl Iterator<Item = (&'a Observation, i64)>,
) -> Result<HashSet<Key>, StoreError> {
    // In key order: two instances inserting the same readings at once (a redelivery to
    // another member of a shared subscription) then wait on each other in the same order
    // instead of deadlocking.
    let mut rows: Vec<_> = rows.collect();
    rows.sort_by(|(a, _), (b, _)| {
        (a.device_id.as_str(), a.metric.code(), a.time_ms).cmp(&(
            b.device_id.as_str(),
            b.metric.code(),
            b.time_ms,
        ))
    });
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let devices: Vec<&str> = rows.iter().map(|(o, _)| o.device_id.as_str()).collect();
    let metrics: Vec<i16> = rows
        .iter()
        .map(|(o, _)| i16::from(o.metric.code()))
        .collect();
    let times: Vec<i64> = rows.iter().map(|(o, _)| o.time_ms).collect();
    let patients: Vec<&str> = rows.iter().map(|(o, _)| o.patient_id.as_str()).collect();
    let parts: Vec<i16> = rows
        .iter()
        .map(|(o, _)| i16::try_from(alert_partition(&o.patient_id)).unwrap_or(0))
        .collect();
    let values: Vec<f64> = rows.iter().map(|(o, _)| o.value).collect();
    let received: Vec<i64> = rows.iter().map(|(_, r)| *r).collect();
    let returned = tx
        .query(
            "INSERT INTO readings.observations
               (device_id, metric, time_ms, patient_id, value, received_ms, part)
             SELECT * FROM unnest($1::text[], $2::int2[], $3::int8[], $4::text[],
                                  $5::float8[], $6::int8[], $7::int2[])
             ON CONFLICT DO NOTHING
             RETURNING device_id, metric, time_ms",
            &[
                &devices, &metrics, &times, &patients, &values, &received, &parts,
            ],
        )
        .await
        .map_err(write_err)?;
    Ok(returned
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
