//! `vigil db backup`: a consistent snapshot of the embedded databases, taken while Vigil runs.
//!
//! Each database (`store.db`, then `registry.db`) is copied with SQLite's `VACUUM INTO` on a
//! read-only connection: one read transaction, so the copy is the database as of one instant,
//! holding every transaction committed before it began — every reading a device was told is
//! stored — and never half of one. Vigil keeps writing meanwhile (WAL mode lets a reader and the
//! writer run together); the backup never takes Vigil's lock on the data directory. Each copy
//! must pass `PRAGMA integrity_check` before it is kept.
//!
//! The result is one uncompressed tar file: `store.db`, `registry.db`, the visit-link signing
//! key (`visit-signing.key`, so join links already sent keep working after a restore) and
//! `backup.json` (when, which Vigil, each database's schema version and row counts). It holds
//! password hashes, device-secret hashes and the signing key, so it is written with mode 0600,
//! first under a temporary name and renamed into place once complete and synced: a crash or a
//! full disk never leaves a half backup under the name asked for.
//!
//! Restoring: stop Vigil, move the data directory's `registry.db*` and `store.db*` away, unpack
//! the file into the data directory (`tar -xf FILE -C DATA_DIR`), start Vigil.
//!
//! With `[database] url` the registry and the readings are both in PostgreSQL (backed up with
//! its own tools: `pg_dump`, continuous archiving); the backup then holds only the data
//! directory's other files, and its manifest says where the databases are. A `registry.db` or
//! `store.db` left from before the move is stale and not taken.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// The databases, in the order they are copied: the readings first, so that the registry's copy
/// is the later one. What moves from the store to the registry between the two copies (a
/// reading's FHIR spool entry becoming an outbox row) is then in both, and queued once more
/// after a restore (the conditional create keeps one on the server), rather than in neither.
const DATABASES: [&str; 2] = ["store.db", "registry.db"];
/// Other files of the data directory a restore needs, when present.
const FILES: [&str; 1] = ["visit-signing.key"];

/// What went wrong; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "{0} is not a Vigil data directory (no registry.db, or no visit-signing.key with [database] url set): give the server's --data-dir or --config"
    )]
    NotADataDir(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the copy of {name} failed its integrity check ({result}); the data directory may be damaged: nothing was written"
    )]
    Damaged { name: &'static str, result: String },
}

/// What a backup holds, as written into it (`backup.json`) and reported.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// When the snapshot began (RFC 3339, UTC).
    pub taken_at: String,
    pub vigil_version: &'static str,
    pub databases: Vec<DatabaseCopy>,
    /// The other files included.
    pub files: Vec<&'static str>,
    /// Where the databases are when they are not in the data directory (then not in this
    /// backup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub databases_elsewhere: Option<&'static str>,
}

/// Said of the registry and the readings when they live on PostgreSQL.
const ON_POSTGRES: &str =
    "PostgreSQL ([database] url): back it up with pg_dump or continuous archiving";

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseCopy {
    pub name: &'static str,
    /// `PRAGMA user_version`: the schema version.
    pub schema_version: i64,
    pub bytes: u64,
    /// Rows of the tables that tell a reader at a glance what is there.
    pub rows: Vec<(String, i64)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sql(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// Takes a snapshot of the data directory `data_dir` into the tar file `to`. With
/// `on_postgres` the databases are in PostgreSQL: a `registry.db` or `store.db` left from
/// before a move is stale and not taken, only the other files are.
pub fn backup(
    data_dir: &Path,
    to: &Path,
    on_postgres: bool,
) -> Result<(Manifest, std::time::Duration), BackupError> {
    let started = Instant::now();
    let marker = if on_postgres {
        "visit-signing.key"
    } else {
        "registry.db"
    };
    if !data_dir.join(marker).is_file() {
        return Err(BackupError::NotADataDir(data_dir.to_owned()));
    }
    let taken_at = crate::domain::format_rfc3339(crate::domain::now_ms());
    // The copies go next to the target (same file system, so no surprise about space elsewhere),
    // in a private folder removed whatever happens.
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let work = WorkDir::new(&parent)?;
    let mut databases = Vec::new();
    for name in DATABASES {
        if on_postgres {
            break;
        }
        let src = data_dir.join(name);
        if !src.is_file() {
            continue;
        }
        let copy = work.path().join(name);
        databases.push(snapshot(&src, &copy, name)?);
    }
    let files: Vec<&'static str> = FILES
        .into_iter()
        .filter(|f| data_dir.join(f).is_file())
        .collect();
    let manifest = Manifest {
        taken_at,
        vigil_version: env!("CARGO_PKG_VERSION"),
        databases,
        files,
        databases_elsewhere: on_postgres.then_some(ON_POSTGRES),
    };
    write_tar(work.path(), data_dir, &manifest, to)?;
    Ok((manifest, started.elapsed()))
}

/// A private folder for the copies, removed when dropped (after success or failure).
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(parent: &Path) -> Result<WorkDir, BackupError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        let path = parent.join(format!(
            ".vigil-backup-{}-{}",
            std::process::id(),
            u64::from_le_bytes(b)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io(&path))?;
        Ok(WorkDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies one database with `VACUUM INTO` and checks the copy.
fn snapshot(src: &Path, copy: &Path, name: &'static str) -> Result<DatabaseCopy, BackupError> {
    let conn = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(src))?;
    // Vigil's writer may hold the write lock for a moment; a reader in WAL mode is not blocked
    // by it, but a checkpoint can be: wait rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sql(src))?;
    let target = copy.to_str().ok_or_else(|| BackupError::Io {
        path: copy.to_owned(),
        source: std::io::Error::other("the backup's folder is not valid UTF-8"),
    })?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(sql(src))?;
    drop(conn);
    let c =
        Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql(copy))?;
    let result: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sql(copy))?;
    if result != "ok" {
        return Err(BackupError::Damaged { name, result });
    }
    let schema_version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql(copy))?;
    let mut rows = Vec::new();
    let tables: Vec<String> = {
        let mut stmt = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .map_err(sql(copy))?;
        stmt.query_map([], |r| r.get(0))
            .map_err(sql(copy))?
            .collect::<Result<_, _>>()
            .map_err(sql(copy))?
    };
    for t in tables {
        // The name comes from the database's own catalogue; quoted as an identifier.
        let n: i64 = c
            .query_row(
                &format!("SELECT count(*) FROM \"{}\"", t.replace('"', "\"\"")),
                [],
                |r| r.get(0),
            )
            .map_err(sql(copy))?;
        rows.push((t, n));
    }
    let bytes = std::fs::metadata(copy).map_err(io(copy))?.len();
    Ok(DatabaseCopy {
        name,
        schema_version,
        bytes,
        rows,
    })
}

/// Writes the tar under a temporary name (0600), syncs it, and renames it to `to`.
fn write_tar(
    work: &Path,
    data_dir: &Path,
    manifest: &Manifest,
    to: &Path,
) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = work.join("backup.tar");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let json = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    let mut header = tar::Header::new_ustar();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(crate::domain::now_ms() / 1000).unwrap_or(0));
    header.set_cksum();
    tar.append_data(&mut header, "backup.json", json.as_slice())
        .map_err(io(&tmp))?;
    for db in &manifest.databases {
        append(&mut tar, &work.join(db.name), db.name, &tmp)?;
    }
    for f in &manifest.files {
        append(&mut tar, &data_dir.join(f), f, &tmp)?;
    }
    let mut out = tar.into_inner().map_err(io(&tmp))?;
    out.flush().map_err(io(&tmp))?;
    let file = out.into_inner().map_err(|e| BackupError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, to).map_err(io(to))?;
    if let Some(dir) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The rename is durable once the folder is synced.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// One file into the tar, private (0600) whatever its mode in the data directory.
fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &str,
    out: &Path,
) -> Result<(), BackupError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let meta = f.metadata().map_err(io(path))?;
    let mut header = tar::Header::new_ustar();
    header.set_metadata(&meta);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, name, &mut f).map_err(io(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_a_registry_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("b.tar");
        let e = backup(dir.path(), &to, false).unwrap_err().to_string();
        assert!(e.contains("not a Vigil data directory"), "{e}");
        assert!(!to.exists());
    }

    #[test]
    fn the_snapshot_holds_both_databases_checked_and_private() {
        let dir = tempfile::tempdir().unwrap();
        for name in DATABASES {
            let c = Connection::open(dir.path().join(name)).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA user_version = 7;
                 CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2), (3);",
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("visit-signing.key"), b"k").unwrap();
        let out = tempfile::tempdir().unwrap();
        let to = out.path().join("vigil.tar");
        let (m, _) = backup(dir.path(), &to, false).unwrap();
        assert!(m.databases_elsewhere.is_none());
        assert_eq!(m.databases.len(), 2);
        assert_eq!(m.databases[1].schema_version, 7);
        assert_eq!(m.databases[1].rows, [("t".to_owned(), 3)]);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&to).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut names = Vec::new();
        let mut a = tar::Archive::new(std::fs::File::open(&to).unwrap());
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mode().unwrap(), 0o600);
            names.push(e.path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            [
                "backup.json",
                "store.db",
                "registry.db",
                "visit-signing.key"
            ]
        );
        // Only the tar is left next to it: the working folder is gone.
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);

        // With the databases on PostgreSQL the files left from before the move are stale:
        // only the signing key is taken, and the manifest says where the databases are.
        let to = out.path().join("files.tar");
        let (m, _) = backup(dir.path(), &to, true).unwrap();
        assert!(m.databases.is_empty());
        assert_eq!(m.files, ["visit-signing.key"]);
        assert!(m.databases_elsewhere.unwrap().contains("pg_dump"));
    }
}
