//! The audit trail on PostgreSQL. Appends from any number of tasks and Vigil instances are
//! serialized by a transaction-scoped advisory lock taken before the chain's head is read, so
//! the chain never forks: under READ COMMITTED the head read after the lock is granted sees the
//! line the previous holder committed.

use tokio_postgres::Row;

use super::{PgDb, PgError};
use crate::registry::actor::TOKEN_ACTOR_INFIX;
use crate::registry::audit::{AuditQuery, GENESIS, NewAuditLine, StoredAuditLine};
use crate::registry::error::RegistryError;
use crate::registry::storage::AuditStore;

/// The advisory lock of the audit chain's head ("audit" in ASCII).
const CHAIN_LOCK: i64 = 0x0061_7564_6974;

const COLUMNS: &str = "id, time_ms, actor, action, patient_id, target, remote, prev_hash, hash";

/// Appends `line` inside `tx`; its id.
pub(crate) async fn append_in(
    tx: &tokio_postgres::Transaction<'_>,
    line: &NewAuditLine,
) -> Result<i64, PgError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
        .await?;
    let prev: Vec<u8> = tx
        .query_opt("SELECT hash FROM audit ORDER BY id DESC LIMIT 1", &[])
        .await?
        .map(|r| r.get(0))
        .unwrap_or_else(|| GENESIS.to_vec());
    let hash = line.hash_after(&prev).to_vec();
    let row = tx
        .query_one(
            "INSERT INTO audit (time_ms, actor, action, patient_id, target, remote, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &line.time_ms,
                &line.actor,
                &line.action,
                &line.patient_id,
                &line.target,
                &line.remote,
                &prev,
                &hash,
            ],
        )
        .await?;
    Ok(row.get(0))
}

fn line(r: &Row) -> StoredAuditLine {
    StoredAuditLine {
        id: r.get(0),
        line: NewAuditLine {
            time_ms: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            patient_id: r.get(4),
            target: r.get(5),
            remote: r.get(6),
        },
        prev_hash: r.get(7),
        hash: r.get(8),
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl AuditStore for PgDb {
    async fn append_audit(&self, line: NewAuditLine) -> Result<i64, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let id = append_in(&tx, &line).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(id)
    }

    async fn append_audit_batch(&self, lines: Vec<NewAuditLine>) -> Result<(), RegistryError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
            .await
            .map_err(PgError::from)?;
        let mut prev: Vec<u8> = tx
            .query_opt("SELECT hash FROM audit ORDER BY id DESC LIMIT 1", &[])
            .await
            .map_err(PgError::from)?
            .map(|r| r.get(0))
            .unwrap_or_else(|| GENESIS.to_vec());
        // The chain is computed here, then the whole batch goes in one statement (one round
        // trip however many lines): arrays unnested in order, ids taken in that order.
        let n = lines.len();
        let (mut times, mut actors, mut actions, mut patients, mut targets, mut remotes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut prevs, mut hashes) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for line in lines {
            let hash = line.hash_after(&prev).to_vec();
            prevs.push(std::mem::replace(&mut prev, hash.clone()));
            hashes.push(hash);
            times.push(line.time_ms);
            actors.push(line.actor);
            actions.push(line.action);
            patients.push(line.patient_id);
            targets.push(line.target);
            remotes.push(line.remote);
        }
        tx.execute(
            "INSERT INTO audit (time_ms, actor, action, patient_id, target, remote, prev_hash, hash)
             SELECT t, a, ac, p, tg, r, ph, h
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::bytea[], $8::bytea[])
                  WITH ORDINALITY AS x(t, a, ac, p, tg, r, ph, h, n)
             ORDER BY n",
            &[
                &times, &actors, &actions, &patients, &targets, &remotes, &prevs, &hashes,
            ],
        )
        .await
        .map_err(PgError::from)?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(())
    }

    async fn audit_records(&self, q: AuditQuery) -> Result<Vec<StoredAuditLine>, RegistryError> {
        let c = self.conn().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM audit
             WHERE ($1::text IS NULL OR patient_id = $1)
               AND ($2::text IS NULL OR actor = $2 OR starts_with(actor, $2 || $6::text))
               AND time_ms BETWEEN $3 AND $4
             ORDER BY id {} LIMIT $5",
            if q.newest_first { "DESC" } else { "ASC" }
        );
        let rows = c
            .query(
                &sql,
                &[
                    &q.patient_id,
                    &q.actor,
                    &q.from_ms,
                    &q.to_ms,
                    &limit(q.limit),
                    &TOKEN_ACTOR_INFIX,
                ],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows.iter().map(line).collect())
    }

    async fn audit_page(
        &self,
        after_id: i64,
        from_ms: i64,
        to_ms: i64,
        n: usize,
    ) -> Result<Vec<StoredAuditLine>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM audit
                     WHERE id > $1 AND time_ms BETWEEN $2 AND $3 ORDER BY id LIMIT $4"
                ),
                &[&after_id, &from_ms, &to_ms, &limit(n)],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows.iter().map(line).collect())
    }
}
