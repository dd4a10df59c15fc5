//! The data directory: private to Vigil's user.
//!
//! It holds patients' data, password hashes and the visit signing key, so it is created `0700`
//! and every file Vigil creates in it is `0600`, whatever the process's umask (the modes are
//! given at creation; a umask can only remove bits). A directory or file left readable by
//! others (by an older Vigil, or a copy) is tightened at start, with a warning naming it:
//! refusing to start instead would stop every upgrade for no gain.
//!
//! This module must never follow the directory's entries into subdirectories or through
//! symbolic links when it changes modes.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file Vigil creates in it.
pub const FILE_MODE: u32 = 0o600;

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
}
