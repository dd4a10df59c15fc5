//! The data directory: private to Vigil's user, and used by one gateway at a time.
//!
//! It holds patients' data, password hashes and the visit signing key, so it is created `0700`
//! and every file Vigil creates in it is `0600`, whatever the process's umask (the modes are
//! given at creation; a umask can only remove bits). A directory or file left readable by
//! others (by an older Vigil, or a copy) is tightened at start, with a warning naming it:
//! refusing to start instead would stop every upgrade for no gain.
//!
//! [`DataDirLock`] is an exclusive `flock` on `vigil.lock` in the directory, held by `vigil serve`
//! for its lifetime: a second gateway on the same directory would run a second store writer and
//! alert engine on the same databases. The kernel releases the lock when the holder's process
//! ends, however it ends (SIGKILL included), so a stale lock file never blocks a start. The
//! file names the holder (pid and HTTP address) for the refusal message. Command-line tools
//! that open the databases while the gateway runs (`vigil user add`, `vigil broker
//! mosquitto-config`) do not take it: SQLite (WAL, busy timeout) serialises their writes.
//!
//! This module must never follow the directory's entries into subdirectories or through
//! symbolic links when it changes modes.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file Vigil creates in it.
pub const FILE_MODE: u32 = 0o600;
/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "vigil.lock";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data_dir: cannot create {path}: {reason}")]
    Create { path: String, reason: String },
    #[error("data_dir: {path} is not a directory")]
    NotADirectory { path: String },
    #[error(
        "data_dir: {path} is readable by other users (mode {mode:o}) and cannot be made private: {reason}"
    )]
    Tighten {
        path: String,
        mode: u32,
        reason: String,
    },
    #[error(
        "data_dir: {path} is in use by another vigil serve ({holder}); stop it first, or give this one its own --data-dir"
    )]
    InUse { path: String, holder: String },
    #[error("data_dir: cannot lock {path}: {reason}")]
    Lock { path: String, reason: String },
}

/// Creates `dir` (mode `0700`) if missing, and takes group and other permissions away from it
/// and from the regular files directly in it.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    let shown = || dir.display().to_string();
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| DataDirError::Create {
            path: shown(),
            reason: e.to_string(),
        })?;
    let meta = fs::metadata(dir).map_err(|e| DataDirError::Create {
        path: shown(),
        reason: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(DataDirError::NotADirectory { path: shown() });
    }
    make_private(dir, &meta)?;
    let entries = fs::read_dir(dir).map_err(|e| DataDirError::Create {
        path: shown(),
        reason: e.to_string(),
    })?;
    for entry in entries.flatten() {
        // `DirEntry::metadata` does not follow symbolic links: a link is left alone.
        if let Ok(meta) = entry.metadata()
            && meta.is_file()
        {
            make_private(&entry.path(), &meta)?;
        }
    }
    Ok(())
}

/// Clears the group and other bits of `path`, logging when there were any.
fn make_private(path: &Path, meta: &fs::Metadata) -> Result<(), DataDirError> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let private = mode & 0o700;
    fs::set_permissions(path, Permissions::from_mode(private)).map_err(|e| {
        DataDirError::Tighten {
            path: path.display().to_string(),
            mode,
            reason: e.to_string(),
        }
    })?;
    tracing::warn!(
        path = %path.display(),
        was = %format!("{mode:o}"),
        now = %format!("{private:o}"),
        "data directory entry was readable by other users; made private"
    );
    Ok(())
}

/// Creates `path` empty with mode `0600` if it does not exist (opening an existing file changes
/// nothing). SQLite would create a database `0644`, and its `-wal` and `-shm` files take the
/// database file's mode, so creating the database file first makes all three private.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map(drop)
}

/// The exclusive lock on a data directory; released when dropped or when the process ends.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Locks `dir` (which [`prepare`] made), or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let path = dir.join(LOCK_FILE);
        let lock_err = |reason: String| DataDirError::Lock {
            path: path.display().to_string(),
            reason,
        };
        // Not truncated on open: the holder's line must survive a refused contender.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| lock_err(e.to_string()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(DataDirError::InUse {
                    path: dir.display().to_string(),
                    holder: holder(&text),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(lock_err(e.to_string())),
        }
        let mut lock = DataDirLock {
            file,
            path: path.clone(),
        };
        lock.describe(None).map_err(|e| lock_err(e.to_string()))?;
        Ok(lock)
    }

    /// Records the HTTP address beside the pid, for the message another contender gets.
    pub fn announce(&mut self, http: SocketAddr) {
        if let Err(e) = self.describe(Some(http)) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the lock file");
        }
    }

    fn describe(&mut self, http: Option<SocketAddr>) -> std::io::Result<()> {
        let mut line = format!("pid {}", std::process::id());
        if let Some(a) = http {
            line.push_str(&format!(", http {a}"));
        }
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(format!("{line}\n").as_bytes())
    }
}

/// The holder's line from the lock file, kept to characters it can contain (the file is
/// ours, but a message must not carry whatever someone wrote into it).
fn holder(text: &str) -> String {
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || " ,.:[]".contains(*c))
        .take(120)
        .collect();
    if line.trim().is_empty() {
        "pid unknown".into()
    } else {
        line.trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_private_and_a_loose_one_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let db = dir.join("registry.db");
        fs::write(&db, b"").unwrap();
        fs::set_permissions(&db, Permissions::from_mode(0o664)).unwrap();
        let sub = dir.join("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, Permissions::from_mode(0o755)).unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"").unwrap();
        fs::set_permissions(&outside, Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();

        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&sub), 0o755, "subdirectories are left alone");
        assert_eq!(mode(&outside), 0o644, "links are not followed");
    }

    #[test]
    fn a_private_file_is_created_0600_and_an_existing_one_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("store.db");
        create_private_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        fs::write(&f, b"data").unwrap();
        create_private_file(&f).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"data");
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let mut first = DataDirLock::acquire(tmp.path()).unwrap();
        first.announce("127.0.0.1:8080".parse().unwrap());
        assert_eq!(mode(&tmp.path().join(LOCK_FILE)), 0o600);
        let e = DataDirLock::acquire(tmp.path()).unwrap_err().to_string();
        let pid = std::process::id();
        assert!(
            e.contains(&format!("(pid {pid}, http 127.0.0.1:8080)")),
            "{e}"
        );
        assert!(e.contains("in use by another vigil serve"), "{e}");
        drop(first);
        DataDirLock::acquire(tmp.path()).unwrap();
    }

    #[test]
    fn the_holder_line_is_sanitised() {
        assert_eq!(holder(""), "pid unknown");
        assert_eq!(holder("pid 7, http [::1]:80\nmore"), "pid 7, http [::1]:80");
        assert_eq!(
            holder("pid 7\u{1b}[31m;rm\r"),
            "pid 7[31mrm",
            "no control characters"
        );
    }
}
