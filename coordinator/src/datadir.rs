//! The data dir's permissions, made private at every `serve` start.
//!
//! Whatever an older release, an image (which creates the dir 0755) or an
//! operator's umask left behind, the coordinator sets the data dir to 0700
//! and the files that hold secrets or fleet state to 0600 before it opens
//! anything: the SQLite database and its `-wal`/`-shm` siblings (SQLite
//! gives new `-wal`/`-shm` files the database file's mode) and the CA key.
//! `ca.pem` is public and stays as it is. Each change is logged with the
//! old and new mode. A path whose mode cannot be set (another owner, a
//! read-only mount) stops the start with an error naming it: a data dir the
//! coordinator cannot keep private is a misconfiguration to fix, not to run
//! with.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::db::DB_FILE;
use crate::pki::CA_KEY_FILE;

/// The data dir's mode.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in [`private_files`].
pub const FILE_MODE: u32 = 0o600;

/// A mode that was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    pub from: u32,
    pub to: u32,
}

/// The data dir's mode could not be read or set.
#[derive(Debug, thiserror::Error)]
#[error(
    "make {} private (mode {mode:04o}): {source}; the coordinator's user must own the data dir and its files",
    .path.display()
)]
pub struct TightenError {
    pub path: PathBuf,
    pub mode: u32,
    pub source: std::io::Error,
}

/// The files in a data dir that must be 0600 (those that exist are changed).
pub fn private_files() -> [String; 4] {
    [
        DB_FILE.to_string(),
        format!("{DB_FILE}-wal"),
        format!("{DB_FILE}-shm"),
        CA_KEY_FILE.to_string(),
    ]
}

/// Set `path` to `mode` unless it already has it; `None` when absent.
fn tighten(path: &Path, mode: u32) -> Result<Option<Tightened>, TightenError> {
    let err = |source| TightenError {
        path: path.to_path_buf(),
        mode,
        source,
    };
    let from = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    if from == mode {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(Some(Tightened {
        path: path.to_path_buf(),
        from,
        to: mode,
    }))
}

/// Make the data dir 0700 and its private files 0600; returns what changed.
/// A missing data dir is left to the caller (it reports "run init first").
pub fn make_private(dir: &Path) -> Result<Vec<Tightened>, TightenError> {
    let mut changed = Vec::new();
    changed.extend(tighten(dir, DIR_MODE)?);
    for f in private_files() {
        changed.extend(tighten(&dir.join(f), FILE_MODE)?);
    }
    Ok(changed)
}

/// [`make_private`], logging each change.
pub fn make_private_logged(dir: &Path) -> Result<(), TightenError> {
    for t in make_private(dir)? {
        tracing::warn!(
            path = %t.path.display(),
            from = %format!("{:04o}", t.from),
            to = %format!("{:04o}", t.to),
            "tightened permissions in the data dir (left by an older release, the image or a umask)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_open_data_dir_becomes_private_and_public_files_stay() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        for f in [DB_FILE, "autogit.db-wal", CA_KEY_FILE, "ca.pem"] {
            fs::write(dir.join(f), "x").unwrap();
            fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).unwrap();
        }
        let changed = make_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in [DB_FILE, "autogit.db-wal", CA_KEY_FILE] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        assert_eq!(
            mode(&dir.join("ca.pem")),
            0o644,
            "the CA certificate is public"
        );
        assert!(
            !dir.join("autogit.db-shm").exists(),
            "absent files are not created"
        );
        assert_eq!(changed.len(), 4, "{changed:?}");
        assert_eq!(changed[0].from, 0o755);
        // Nothing left to do the second time.
        assert!(make_private(&dir).unwrap().is_empty());
    }

    /// A fresh install (`init`, then `serve`) has nothing to tighten, so
    /// its first start logs no warning. Under the usual umask 022 SQLite
    /// alone would create the database 0644.
    #[tokio::test]
    async fn a_new_store_is_private_from_its_first_byte() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        // As `init` makes it.
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).unwrap();
        let db = crate::db::Db::open(dir).await.unwrap();
        assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
        for f in ["autogit.db-wal", "autogit.db-shm"] {
            if dir.join(f).exists() {
                assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
            }
        }
        assert_eq!(make_private(dir).unwrap(), vec![], "nothing to tighten");
        drop(db);
        // An existing store opens as before.
        crate::db::Db::open(dir).await.unwrap();
    }

    #[test]
    fn a_mode_that_cannot_be_set_names_the_path() {
        let t = tempfile::tempdir().unwrap();
        // A path under a regular file: its mode can be neither read nor set.
        let file = t.path().join("plain");
        fs::write(&file, "x").unwrap();
        let err = make_private(&file.join("data")).unwrap_err();
        assert!(err.to_string().contains("plain/data"), "{err}");
        assert!(err.to_string().contains("0700"), "{err}");
    }
}
