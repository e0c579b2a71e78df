//! The cluster CA on disk: `<data_dir>/ca.pem` and `<data_dir>/ca-key.pem`
//! (mode 0600). Written atomically; never overwritten unless asked.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use autogit_certs::ClusterCa;

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum PkiStoreError {
    #[error(
        "a cluster CA already exists in {0}; pass --force to replace it (every enrolled agent must then re-join)"
    )]
    AlreadyExists(PathBuf),
    #[error("no cluster CA in {0}: run `autogit-coordinator init --data-dir {0}` first")]
    Missing(PathBuf),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster CA in {path} is unusable: {source}")]
    Invalid {
        path: PathBuf,
        source: autogit_certs::PkiError,
    },
    #[error("generate cluster CA: {0}")]
    Generate(autogit_certs::PkiError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PkiStoreError {
    let path = path.to_path_buf();
    move |source| PkiStoreError::Io {
        action,
        path,
        source,
    }
}

/// Create the data dir (0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> Result<(), PkiStoreError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io("create data dir", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io("set permissions on", dir))?;
    }
    Ok(())
}

/// Write `contents` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Create a new cluster CA in `dir`.
pub fn init(dir: &Path, force: bool) -> Result<ClusterCa, PkiStoreError> {
    ensure_data_dir(dir)?;
    let cert = dir.join(CA_CERT_FILE);
    let key = dir.join(CA_KEY_FILE);
    if (cert.exists() || key.exists()) && !force {
        return Err(PkiStoreError::AlreadyExists(dir.to_path_buf()));
    }
    let ca = ClusterCa::generate("AutoGit cluster CA").map_err(PkiStoreError::Generate)?;
    write_atomic(&key, ca.key_pem().as_bytes(), 0o600).map_err(io("write", &key))?;
    write_atomic(&cert, ca.cert_pem().as_bytes(), 0o644).map_err(io("write", &cert))?;
    Ok(ca)
}

/// Load the cluster CA from `dir`.
pub fn load(dir: &Path) -> Result<ClusterCa, PkiStoreError> {
    let cert = dir.join(CA_CERT_FILE);
    let key = dir.join(CA_KEY_FILE);
    if !cert.exists() || !key.exists() {
        return Err(PkiStoreError::Missing(dir.to_path_buf()));
    }
    let cert_pem = fs::read_to_string(&cert).map_err(io("read", &cert))?;
    let key_pem = fs::read_to_string(&key).map_err(io("read", &key))?;
    ClusterCa::load(&cert_pem, &key_pem).map_err(|source| PkiStoreError::Invalid {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_0600_key_and_refuses_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let ca = init(d.path(), false).unwrap();
        let mode = fs::metadata(d.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            init(d.path(), false),
            Err(PkiStoreError::AlreadyExists(_))
        ));
        assert_eq!(load(d.path()).unwrap().fingerprint(), ca.fingerprint());
        let replaced = init(d.path(), true).unwrap();
        assert_ne!(replaced.fingerprint(), ca.fingerprint());
    }

    #[test]
    fn load_names_missing_ca() {
        let d = tempfile::tempdir().unwrap();
        let err = load(d.path()).unwrap_err().to_string();
        assert!(err.contains("autogit-coordinator init"), "{err}");
    }
}
