//! The agent's state dir: everything `autogit-agent run` needs, written by
//! `join` and updated by certificate renewal.
//!
//! ```text
//! <state_dir>/agent.json   agent id and coordinator address
//! <state_dir>/ca.pem       the cluster CA (pinned at join)
//! <state_dir>/cert.pem     this agent's client certificate   (0600)
//! <state_dir>/key.pem      this agent's private key           (0600, never leaves the host)
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const AGENT_FILE: &str = "agent.json";
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// Identity facts stored next to the key material.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentFile {
    pub agent_id: String,
    pub coordinator: String,
}

/// Key material loaded from disk. `Debug` hides the key.
#[derive(Clone)]
pub struct Identity {
    pub agent: AgentFile,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("agent", &self.agent).field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("agent is not enrolled: {0} has no {AGENT_FILE}; run `autogit-agent join --coordinator HOST:PORT --token TOKEN --state-dir {0}` first")]
    NotEnrolled(PathBuf),
    #[error("agent is already enrolled in {0}; pass --force to enroll again with a new identity")]
    AlreadyEnrolled(PathBuf),
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// The state dir.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn is_enrolled(&self) -> bool {
        self.dir.join(AGENT_FILE).exists()
    }

    fn io(&self, action: &'static str, file: &str) -> impl FnOnce(std::io::Error) -> StateError {
        let path = self.dir.join(file);
        move |source| StateError::Io { action, path, source }
    }

    /// Write a fresh identity (after `join`). Key and cert are 0600; the
    /// agent file is written last so a crash never leaves a half-enrolled
    /// state that looks complete.
    pub fn save(&self, id: &Identity) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(self.io("create", ""))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(self.io("set permissions on", ""))?;
        write_atomic(&self.dir.join(KEY_FILE), id.key_pem.as_bytes(), 0o600).map_err(self.io("write", KEY_FILE))?;
        write_atomic(&self.dir.join(CERT_FILE), id.cert_pem.as_bytes(), 0o600).map_err(self.io("write", CERT_FILE))?;
        write_atomic(&self.dir.join(CA_FILE), id.ca_pem.as_bytes(), 0o644).map_err(self.io("write", CA_FILE))?;
        let json = serde_json::to_vec_pretty(&id.agent).map_err(|e| StateError::Corrupt { path: self.dir.join(AGENT_FILE), detail: e.to_string() })?;
        write_atomic(&self.dir.join(AGENT_FILE), &json, 0o644).map_err(self.io("write", AGENT_FILE))?;
        Ok(())
    }

    /// Replace key and certificate after a renewal. The key is written first:
    /// a crash in between leaves a new key with the old cert, which `load`
    /// detects (mismatch) and reports instead of failing obscurely.
    pub fn save_renewed(&self, cert_pem: &str, key_pem: &str) -> Result<(), StateError> {
        // Write both to temporaries, then rename cert and key back to back.
        write_atomic(&self.dir.join("key.pem.new"), key_pem.as_bytes(), 0o600).map_err(self.io("write", "key.pem.new"))?;
        write_atomic(&self.dir.join("cert.pem.new"), cert_pem.as_bytes(), 0o600).map_err(self.io("write", "cert.pem.new"))?;
        fs::rename(self.dir.join("key.pem.new"), self.dir.join(KEY_FILE)).map_err(self.io("replace", KEY_FILE))?;
        fs::rename(self.dir.join("cert.pem.new"), self.dir.join(CERT_FILE)).map_err(self.io("replace", CERT_FILE))?;
        Ok(())
    }

    pub fn load(&self) -> Result<Identity, StateError> {
        if !self.is_enrolled() {
            return Err(StateError::NotEnrolled(self.dir.clone()));
        }
        let read = |f: &str| fs::read_to_string(self.dir.join(f)).map_err(self.io("read", f));
        let agent_json = read(AGENT_FILE)?;
        let agent: AgentFile = serde_json::from_str(&agent_json)
            .map_err(|e| StateError::Corrupt { path: self.dir.join(AGENT_FILE), detail: e.to_string() })?;
        Ok(Identity { agent, ca_pem: read(CA_FILE)?, cert_pem: read(CERT_FILE)?, key_pem: read(KEY_FILE)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident() -> Identity {
        Identity {
            agent: AgentFile { agent_id: "a".into(), coordinator: "127.0.0.1:1".into() },
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "SECRETKEY".into(),
        }
    }

    #[test]
    fn saves_with_private_modes_and_loads() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path().join("st"));
        assert!(matches!(s.load(), Err(StateError::NotEnrolled(_))));
        s.save(&ident()).unwrap();
        for f in [KEY_FILE, CERT_FILE] {
            let mode = fs::metadata(s.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let loaded = s.load().unwrap();
        assert_eq!(loaded.agent, ident().agent);
        assert!(!format!("{loaded:?}").contains("SECRETKEY"));
        s.save_renewed("cert2", "key2").unwrap();
        assert_eq!(s.load().unwrap().cert_pem, "cert2");
    }

    /// Fault 5: a crash between the two renames of `save_renewed` leaves the
    /// new key next to the old certificate. Loading must still give a pair
    /// that works (the complete new pair is still on disk as `cert.pem.new`).
    #[test]
    fn crash_between_the_two_renames_still_loads_a_working_pair() {
        use autogit_certs::{csr, AgentId, ClusterCa};
        let ca = ClusterCa::generate("t").unwrap();
        let agent = AgentId::new_random();
        let pair = || {
            let k = csr::generate("h").unwrap();
            let c = ca.sign_agent_csr(&k.csr_pem, agent, std::time::Duration::from_secs(3600)).unwrap();
            (k.key_pem, c.cert_pem)
        };
        let (old_key, old_cert) = pair();
        let (new_key, new_cert) = pair();
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path().join("st"));
        s.save(&Identity {
            agent: AgentFile { agent_id: agent.to_string(), coordinator: "127.0.0.1:1".into() },
            ca_pem: ca.cert_pem().into(),
            cert_pem: old_cert,
            key_pem: old_key,
        })
        .unwrap();
        // The state after `rename(key.pem.new, key.pem)` and before the cert's rename.
        fs::write(s.path().join(KEY_FILE), &new_key).unwrap();
        fs::write(s.path().join("cert.pem.new"), &new_cert).unwrap();
        let id = s.load().expect("a working identity");
        autogit_certs::tls::agent_client_config(&id.ca_pem, &id.cert_pem, &id.key_pem).expect("key and certificate belong together");
    }
}
