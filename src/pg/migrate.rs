//! A PostgreSQL schema's migrations: an ordered list of steps, applied at start inside one
//! session-level advisory lock, so two instances starting together apply each step once (the
//! second waits, then finds nothing left to do). Each schema (the registry's, the readings
//! store's) keeps its version as the one row of a table of its own (`vigil_schema`,
//! `vigil_store_schema`); each step and its version bump commit together.
//!
//! It must never run against a database newer than the build: that is refused, not misread.

use deadpool_postgres::Pool;

use super::PgError;

/// The advisory lock's key: any constant of our own ("vigil" in ASCII).
const MIGRATION_LOCK: i64 = 0x0076_6967_696c;

/// Applies the steps past the schema's version (kept in `version_table`), in order; the
/// version it is now at.
pub async fn migrate(pool: &Pool, version_table: &str, steps: &[&str]) -> Result<i32, PgError> {
    let known = i32::try_from(steps.len()).unwrap_or(i32::MAX);
    let mut conn = pool.get().await?;
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(&mut conn, version_table, steps, known).await;
    // Unlocked whatever happened (the lock is the session's, and the pool keeps the session).
    let unlocked = conn
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let version = result?;
    unlocked?;
    Ok(version)
}

async fn apply(
    conn: &mut deadpool_postgres::Object,
    table: &str,
    steps: &[&str],
    known: i32,
) -> Result<i32, PgError> {
    // `table` is one of our constants, never input.
    conn.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (version integer NOT NULL);
         INSERT INTO {table} (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM {table});"
    ))
    .await?;
    let mut version: i32 = conn
        .query_one(&format!("SELECT version FROM {table}"), &[])
        .await?
        .get(0);
    if version > known {
        return Err(PgError::TooNew {
            found: version,
            known,
        });
    }
    for (i, step) in steps
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction().await?;
        tx.batch_execute(step).await?;
        let next = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(&format!("UPDATE {table} SET version = $1"), &[&next])
            .await?;
        tx.commit().await?;
        tracing::info!(schema = table, version = next, "database schema migrated");
        version = next;
    }
    Ok(version)
}
