//! The audit trail on SQLite. Appends are serialized by SQLite's write lock: the chain's head is
//! read and the new line inserted in one `IMMEDIATE` transaction.

use rusqlite::{OptionalExtension as _, Transaction, TransactionBehavior, params};

use super::SqliteDb;
use crate::registry::actor::TOKEN_ACTOR_INFIX;
use crate::registry::audit::{AuditQuery, GENESIS, NewAuditLine, StoredAuditLine};
use crate::registry::error::RegistryError;
use crate::registry::storage::AuditStore;

const COLUMNS: &str = "id, time_ms, actor, action, patient_id, target, remote, prev_hash, hash";

/// Appends `line` inside `tx` (which must hold the write lock: begun `IMMEDIATE`); its id.
pub(crate) fn append_in(tx: &Transaction<'_>, line: &NewAuditLine) -> Result<i64, RegistryError> {
    let prev: Vec<u8> = tx
        .query_row("SELECT hash FROM audit ORDER BY id DESC LIMIT 1", [], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or_else(|| GENESIS.to_vec());
    let hash = line.hash_after(&prev);
    tx.execute(
        "INSERT INTO audit (time_ms, actor, action, patient_id, target, remote, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            line.time_ms,
            line.actor,
            line.action,
            line.patient_id,
            line.target,
            line.remote,
            prev,
            &hash[..]
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAuditLine> {
    Ok(StoredAuditLine {
        id: r.get(0)?,
        line: NewAuditLine {
            time_ms: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            patient_id: r.get(4)?,
            target: r.get(5)?,
            remote: r.get(6)?,
        },
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl AuditStore for SqliteDb {
    async fn append_audit(&self, line: NewAuditLine) -> Result<i64, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = append_in(&tx, &line)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn append_audit_batch(&self, lines: Vec<NewAuditLine>) -> Result<(), RegistryError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut prev: Vec<u8> = tx
                .query_row("SELECT hash FROM audit ORDER BY id DESC LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or_else(|| GENESIS.to_vec());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO audit (time_ms, actor, action, patient_id, target, remote,
                                        prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for line in &lines {
                    let hash = line.hash_after(&prev);
                    insert.execute(params![
                        line.time_ms,
                        line.actor,
                        line.action,
                        line.patient_id,
                        line.target,
                        line.remote,
                        prev,
                        &hash[..]
                    ])?;
                    prev = hash.to_vec();
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn audit_records(&self, q: AuditQuery) -> Result<Vec<StoredAuditLine>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM audit
                 WHERE (?1 IS NULL OR patient_id = ?1)
                   AND (?2 IS NULL OR actor = ?2
                        OR substr(actor, 1, length(?2) + length(?6)) = ?2 || ?6)
                   AND time_ms BETWEEN ?3 AND ?4
                 ORDER BY id {} LIMIT ?5",
                if q.newest_first { "DESC" } else { "ASC" }
            ))?;
            let rows = stmt.query_map(
                params![
                    q.patient_id,
                    q.actor,
                    q.from_ms,
                    q.to_ms,
                    limit(q.limit),
                    TOKEN_ACTOR_INFIX,
                ],
                row,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn audit_page(
        &self,
        after_id: i64,
        from_ms: i64,
        to_ms: i64,
        n: usize,
    ) -> Result<Vec<StoredAuditLine>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM audit
                 WHERE id > ?1 AND time_ms BETWEEN ?2 AND ?3 ORDER BY id LIMIT ?4"
            ))?;
            let rows = stmt.query_map(params![after_id, from_ms, to_ms, limit(n)], row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
