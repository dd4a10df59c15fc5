//! Reading a whole SQLite registry for `vigil db migrate`, as of one instant, while Vigil may
//! still be running on it.
//!
//! One read transaction on a read-only connection of its own (never the registry's lock): in
//! WAL mode it sees the database as of its first read, every transaction committed before and
//! none after, and Vigil keeps writing meanwhile. Rows go out in chunks, so a large registry
//! never sits in memory whole.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::registry::error::RegistryError;
use crate::registry::transfer::{CHUNK_ROWS, Cell, Chunk, Wanted};

/// Reads the tables `wanted` names from the registry at `path`, in that order, giving each
/// chunk to `send` (which answers false to stop). Before sending anything it refuses a source
/// the target cannot hold: a column of a wanted table the target lacks, or rows in a table the
/// target does not know.
pub fn export(
    path: &Path,
    wanted: &[Wanted],
    mut send: impl FnMut(Chunk) -> bool,
) -> Result<(), RegistryError> {
    if !path.is_file() {
        return Err(RegistryError::NotFound(format!(
            "{} (give the data directory of the Vigil to move)",
            path.display()
        )));
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // Deferred: the snapshot is taken at the first read below and held to the end.
    let tx = conn.transaction()?;
    let present = tables(&tx)?;
    let known: BTreeSet<&str> = wanted.iter().map(|w| w.table.as_str()).collect();
    for table in present.iter().filter(|t| !known.contains(t.as_str())) {
        let rows: i64 = tx.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        })?;
        if rows > 0 {
            return Err(RegistryError::Invalid(format!(
                "table {table} has {rows} rows and the target database has no such table: \
                 is the target's Vigil older than this registry's?"
            )));
        }
    }
    let mut plan = Vec::new();
    for w in wanted.iter().filter(|w| present.contains(&w.table)) {
        let have = columns(&tx, &w.table)?;
        if let Some(lost) = have.iter().find(|c| !w.columns.contains(c)) {
            return Err(RegistryError::Invalid(format!(
                "column {}.{lost} has no place in the target database: is the target's Vigil \
                 older than this registry's?",
                w.table
            )));
        }
        let read: Vec<String> = w
            .columns
            .iter()
            .filter(|c| have.contains(c))
            .cloned()
            .collect();
        plan.push((w.table.clone(), read));
    }
    for (table, cols) in plan {
        let list = cols
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = tx.prepare(&format!("SELECT {list} FROM \"{table}\" ORDER BY rowid"))?;
        let mut rows = stmt.query([])?;
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(cols.len());
            for i in 0..cols.len() {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
                });
            }
            chunk.push(row);
            if chunk.len() == CHUNK_ROWS {
                let rows = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS));
                if !send(Chunk {
                    table: table.clone(),
                    columns: cols.clone(),
                    rows,
                }) {
                    return Ok(());
                }
            }
        }
        if !chunk.is_empty()
            && !send(Chunk {
                table: table.clone(),
                columns: cols.clone(),
                rows: chunk,
            })
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The registry's own tables (not SQLite's internal ones).
fn tables(c: &Connection) -> Result<BTreeSet<String>, RegistryError> {
    let mut stmt = c.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )?;
    let names = stmt.query_map([], |r| r.get(0))?;
    Ok(names.collect::<Result<_, _>>()?)
}

fn columns(c: &Connection, table: &str) -> Result<Vec<String>, RegistryError> {
    let mut stmt = c.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let names = stmt.query_map([table], |r| r.get(0))?;
    Ok(names.collect::<Result<_, _>>()?)
}
