//! Usernames ignore case, on SQLite: the SQL and lookups that find an account by any spelling,
//! and the warning about older accounts whose names differ only in case. (PostgreSQL needs
//! neither: a unique index on `lower(username)` has held there from the start.)

use rusqlite::Connection;

/// SQL for the stored spelling of the username bound to `?1`, whatever its case: the exact
/// spelling if an account has it, else the one account that matches ignoring case, else NULL
/// (none, or two older accounts that differ only in case: neither is guessed).
pub(crate) const NAMED: &str = "COALESCE(
    (SELECT username FROM users WHERE username = ?1),
    (SELECT CASE WHEN COUNT(*) = 1 THEN MIN(username) END
     FROM users WHERE username = ?1 COLLATE NOCASE))";

/// The stored spelling of the user `name` names ([`NAMED`]), if any.
pub(crate) fn stored_name(c: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached(&format!("SELECT {NAMED}"))?
        .query_row([name], |r| r.get(0))
}

/// Logs the accounts whose names differ only in case (made before usernames ignored case).
pub(crate) fn warn_of_case_twins(c: &Connection) -> rusqlite::Result<()> {
    let mut stmt = c.prepare(
        "SELECT group_concat(username, ', ') FROM users
         GROUP BY username COLLATE NOCASE HAVING COUNT(*) > 1",
    )?;
    for names in stmt.query_map([], |r| r.get::<_, String>(0))? {
        tracing::warn!(
            users = %names?,
            "user accounts whose names differ only in case: each signs in under its exact spelling only; retire the one not in use (new password, no teams)"
        );
    }
    Ok(())
}
