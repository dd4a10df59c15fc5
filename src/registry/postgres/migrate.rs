//! The PostgreSQL schema's migrations: an ordered list of steps, applied at start inside one
//! session-level advisory lock, so two instances starting together apply each step once (the
//! second waits, then finds nothing left to do). The version is a row in `vigil_schema`; each
//! step and its version bump commit together.
//!
//! It must never run against a database newer than the build: that is refused, not misread.

use deadpool_postgres::Pool;

use super::PgError;

/// The advisory lock's key: any constant of our own ("vigil" in ASCII).
const MIGRATION_LOCK: i64 = 0x0076_6967_696c;

/// Applies the steps past the database's version, in order; the version it is now at.
pub async fn migrate(pool: &Pool, steps: &[&str]) -> Result<i32, PgError> {
    let known = i32::try_from(steps.len()).unwrap_or(i32::MAX);
    let mut conn = pool.get().await?;
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(&mut conn, steps, known).await;
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
    steps: &[&str],
    known: i32,
) -> Result<i32, PgError> {
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS vigil_schema (version integer NOT NULL);
         INSERT INTO vigil_schema (version)
           SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM vigil_schema);",
    )
    .await?;
    let mut version: i32 = conn
        .query_one("SELECT version FROM vigil_schema", &[])
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
        tx.execute("UPDATE vigil_schema SET version = $1", &[&next])
            .await?;
        tx.commit().await?;
        tracing::info!(version = next, "database schema migrated");
        version = next;
    }
    Ok(version)
}
