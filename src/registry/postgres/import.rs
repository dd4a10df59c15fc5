//! Filling an empty PostgreSQL registry from another backend's rows (`vigil db migrate`).
//!
//! The whole copy is one transaction: the target is checked empty inside it (rows its own
//! migrations made, such as the default care team, are replaced by the source's), every table is
//! filled in an order that puts each after the tables it references, the identity sequences are
//! moved past the copied ids, and it commits only once the source says it read everything. A
//! failure anywhere leaves the target as it was.
//!
//! Values are sent as text and cast to each column's type by the server (`bytea` from hex), so
//! one path serves every table; a value the column cannot hold is refused by the server with
//! its reason, never coerced.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::{PgDb, PgError};
use crate::registry::error::RegistryError;
use crate::registry::transfer::{Cell, Chunk, Copied, Wanted};

/// Rows the migrations put in a new database themselves, by table: the target may hold these
/// and still count as empty; the source's own rows replace them.
const SEEDED: &[(&str, &str)] = &[
    ("teams", "id = 'default'"),
    ("programs", "created_by = 'vigil' AND created_ms = 0"),
];

/// Most parameters in one INSERT (PostgreSQL allows 65,535).
const MAX_PARAMS: usize = 30_000;

/// One column of a target table.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// Its type as SQL spells it (`bigint`, `text`, `bytea`, ...).
    sql_type: String,
    identity: bool,
}

/// A table of the target, as the copy fills it.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<Column>,
}

impl PgDb {
    /// The registry's tables in an order that fills each after those it references.
    pub async fn transfer_plan(&self) -> Result<Vec<Wanted>, RegistryError> {
        Ok(self
            .tables()
            .await?
            .into_iter()
            .map(|t| Wanted {
                table: t.name,
                columns: t.columns.into_iter().map(|c| c.name).collect(),
            })
            .collect())
    }

    /// Copies the chunks arriving on `chunks` into this database, which must be empty, and
    /// commits once `source_done` says the source read everything without error. How many rows
    /// each table received.
    pub async fn import(
        &self,
        mut chunks: mpsc::Receiver<Chunk>,
        source_done: oneshot::Receiver<Result<(), RegistryError>>,
    ) -> Result<Vec<Copied>, RegistryError> {
        let tables = self.tables().await?;
        let by_name: BTreeMap<&str, &Table> = tables.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(PgError::from)?;
        // Nothing else may write while the copy runs: it would be lost or collide with it.
        for t in &tables {
            tx.batch_execute(&format!(
                "LOCK TABLE \"{}\" IN ACCESS EXCLUSIVE MODE",
                t.name
            ))
            .await
            .map_err(PgError::from)?;
        }
        for t in &tables {
            let seed = SEEDED.iter().find(|(n, _)| *n == t.name).map(|(_, w)| *w);
            let sql = match seed {
                Some(cond) => format!("SELECT count(*) FROM \"{}\" WHERE NOT ({cond})", t.name),
                None => format!("SELECT count(*) FROM \"{}\"", t.name),
            };
            let n: i64 = tx.query_one(&sql, &[]).await.map_err(PgError::from)?.get(0);
            if n > 0 {
                return Err(RegistryError::Invalid(format!(
                    "the target database is not empty (table {} has {n} rows): give an empty \
                     database; nothing was copied",
                    t.name
                )));
            }
        }
        // Seeded rows go in reverse fill order, so no row is deleted before those referencing it.
        for t in tables.iter().rev() {
            if let Some((_, cond)) = SEEDED.iter().find(|(n, _)| *n == t.name) {
                tx.execute(&format!("DELETE FROM \"{}\" WHERE {cond}", t.name), &[])
                    .await
                    .map_err(PgError::from)?;
            }
        }
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut order_seen: Vec<String> = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            let Some(table) = by_name.get(chunk.table.as_str()) else {
                return Err(RegistryError::Invalid(format!(
                    "the source sent rows of table {}, which the target does not have",
                    chunk.table
                )));
            };
            if order_seen.last() != Some(&chunk.table) {
                if order_seen.contains(&chunk.table) {
                    return Err(RegistryError::Db(format!(
                        "the source sent table {} twice",
                        chunk.table
                    )));
                }
                order_seen.push(chunk.table.clone());
            }
            insert(&tx, table, &chunk).await?;
            *counts.entry(chunk.table.clone()).or_default() += chunk.rows.len() as u64;
        }
        match source_done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(RegistryError::Db(
                    "the source stopped before it read everything; nothing was copied".into(),
                ));
            }
        }
        for t in &tables {
            for c in t.columns.iter().filter(|c| c.identity) {
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('\"{t}\"', '{c}'),
                                       coalesce((SELECT max(\"{c}\") FROM \"{t}\"), 1),
                                       (SELECT max(\"{c}\") FROM \"{t}\") IS NOT NULL)",
                        t = t.name,
                        c = c.name
                    ),
                    &[],
                )
                .await
                .map_err(PgError::from)?;
            }
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(tables
            .iter()
            .map(|t| Copied {
                table: t.name.clone(),
                rows: counts.get(&t.name).copied().unwrap_or(0),
            })
            .collect())
    }

    /// The registry's tables (not the migrations' own), each after the tables it references.
    async fn tables(&self) -> Result<Vec<Table>, RegistryError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
                        a.attidentity <> ''
                   FROM pg_class c
                   JOIN pg_attribute a ON a.attrelid = c.oid
                  WHERE c.relnamespace = current_schema()::regnamespace
                    AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                    AND c.relname NOT IN ('vigil_schema', 'vigil_store_schema',
                                          'credential_changes', 'engine_notices')
                    AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                  ORDER BY c.relname, a.attnum",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        let mut tables: BTreeMap<String, Vec<Column>> = BTreeMap::new();
        for r in rows {
            tables.entry(r.get(0)).or_default().push(Column {
                name: r.get(1),
                sql_type: r.get(2),
                identity: r.get(3),
            });
        }
        let refs = conn
            .query(
                "SELECT a.relname::text, b.relname::text
                   FROM pg_constraint k
                   JOIN pg_class a ON a.oid = k.conrelid
                   JOIN pg_class b ON b.oid = k.confrelid
                  WHERE k.contype = 'f' AND a.relnamespace = current_schema()::regnamespace",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in refs {
            let (from, to): (String, String) = (r.get(0), r.get(1));
            if from != to {
                needs.entry(from).or_default().insert(to);
            }
        }
        let order = fill_order(tables.keys().cloned().collect(), &needs)?;
        Ok(order
            .into_iter()
            .map(|name| Table {
                columns: tables.remove(&name).unwrap_or_default(),
                name,
            })
            .collect())
    }
}

/// The tables ordered so that each comes after every table it references (alphabetical where
/// the references leave a choice, so the order is the same on every run).
fn fill_order(
    tables: BTreeSet<String>,
    needs: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<String>, RegistryError> {
    let mut done: Vec<String> = Vec::new();
    let mut left = tables;
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|t| {
                needs
                    .get(*t)
                    .is_none_or(|n| n.iter().all(|d| done.contains(d) || !left.contains(d)))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            return Err(RegistryError::Db(format!(
                "the tables {left:?} reference each other in a cycle; no fill order exists"
            )));
        }
        for t in ready {
            left.remove(&t);
            done.push(t);
        }
    }
    Ok(done)
}

/// Inserts one chunk's rows, as many per statement as the parameter limit allows.
async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    table: &Table,
    chunk: &Chunk,
) -> Result<(), RegistryError> {
    let cols: Vec<&Column> = chunk
        .columns
        .iter()
        .map(|name| {
            table
                .columns
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| {
                    RegistryError::Invalid(format!(
                        "column {}.{name} has no place in the target database",
                        table.name
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    if cols.is_empty() {
        return Ok(());
    }
    let per_statement = (MAX_PARAMS / cols.len()).max(1);
    let overriding = if cols.iter().any(|c| c.identity) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let names = cols
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ");
    for rows in chunk.rows.chunks(per_statement) {
        let mut values: Vec<Option<String>> = Vec::with_capacity(rows.len() * cols.len());
        let mut tuples = Vec::with_capacity(rows.len());
        for row in rows {
            let mut exprs = Vec::with_capacity(cols.len());
            for (c, cell) in cols.iter().zip(row) {
                values.push(as_text(cell, c, &table.name)?);
                let n = values.len();
                exprs.push(if c.sql_type == "bytea" {
                    format!("decode(${n}::text, 'hex')")
                } else {
                    format!("(${n}::text)::{}", c.sql_type)
                });
            }
            tuples.push(format!("({})", exprs.join(", ")));
        }
        let sql = format!(
            "INSERT INTO \"{}\" ({names}){overriding} VALUES {}",
            table.name,
            tuples.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        tx.execute(&sql, &params).await.map_err(|e| {
            RegistryError::Db(format!("copying into {}: {}", table.name, PgError::from(e)))
        })?;
    }
    Ok(())
}

/// A value as the text its column's type reads (hex for `bytea`).
fn as_text(cell: &Cell, column: &Column, table: &str) -> Result<Option<String>, RegistryError> {
    let bytea = column.sql_type == "bytea";
    Ok(match cell {
        Cell::Null => None,
        Cell::Int(v) => Some(v.to_string()),
        // Rust writes the shortest text that reads back as the same f64.
        Cell::Real(v) => Some(v.to_string()),
        Cell::Text(s) if bytea => Some(hex::encode(s.as_bytes())),
        Cell::Text(s) => Some(s.clone()),
        Cell::Blob(b) if bytea => Some(hex::encode(b)),
        Cell::Blob(b) => Some(String::from_utf8(b.clone()).map_err(|_| {
            RegistryError::Invalid(format!(
                "column {table}.{} holds bytes that are not text",
                column.name
            ))
        })?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_filled_after_the_tables_they_reference() {
        let tables: BTreeSet<String> = ["audit", "devices", "patients", "teams", "users"]
            .into_iter()
            .map(String::from)
            .collect();
        let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        needs
            .entry("devices".into())
            .or_default()
            .insert("patients".into());
        needs
            .entry("patients".into())
            .or_default()
            .insert("teams".into());
        let order = fill_order(tables, &needs).unwrap();
        let at = |t: &str| order.iter().position(|o| o == t).unwrap();
        assert!(
            at("teams") < at("patients") && at("patients") < at("devices"),
            "{order:?}"
        );
        assert_eq!(order.len(), 5);
        let mut cyclic = needs.clone();
        cyclic
            .entry("teams".into())
            .or_default()
            .insert("devices".into());
        let e = fill_order(
            ["devices", "patients", "teams"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            &cyclic,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn values_are_sent_as_the_text_their_column_reads() {
        let col = |t: &str| Column {
            name: "c".into(),
            sql_type: t.into(),
            identity: false,
        };
        assert_eq!(
            as_text(&Cell::Blob(vec![0xde, 0xad]), &col("bytea"), "t").unwrap(),
            Some("dead".into())
        );
        assert_eq!(
            as_text(&Cell::Int(1), &col("boolean"), "t").unwrap(),
            Some("1".into())
        );
        assert_eq!(
            as_text(&Cell::Real(0.1), &col("double precision"), "t").unwrap(),
            Some("0.1".into())
        );
        assert_eq!(as_text(&Cell::Null, &col("text"), "t").unwrap(), None);
        let e = as_text(&Cell::Blob(vec![0xff]), &col("text"), "audit")
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit.c"), "{e}");
    }
}
