//! The agent's state dir: everything `autogit-agent run` needs, written by
//! `join` and updated by certificate renewal.
//!
//! ```text
//! <state_dir>/agent.json     agent id and coordinator address
//! <state_dir>/ca.pem         the cluster CA (pinned at join)
//! <state_dir>/identity.pem   this agent's private key and client certificate,
//!                            with the local time it was received   (0600)
//! ```
//!
//! Key and certificate live in one file so that replacing them is one
//! `rename`: every reader sees the old pair or the new pair, never a mix.
//! A write is: `identity.pem.new` (0600), fsync it, rename it over
//! `identity.pem`, fsync the directory.
//!
//! [`StateDir::load`] never writes. It accepts every state a crash can leave
//! (a leftover or half-written `identity.pem.new`) and the layout of older
//! releases (separate `key.pem` and `cert.pem`, with their `.new` and `.tmp`
//! leftovers): of every key/certificate pair it finds that belong together
//! and to this agent, the newest certificate wins. [`StateDir::repair`]
//! (at `run` start) then writes that pair as `identity.pem` and removes
//! the rest, saying so in the log. No usable pair is
//! [`StateError::NoUsableIdentity`], whose message says how to re-join.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use autogit_certs::CertInfo;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const AGENT_FILE: &str = "agent.json";
pub const CA_FILE: &str = "ca.pem";
/// Key and certificate, together.
pub const IDENTITY_FILE: &str = "identity.pem";
/// The next `identity.pem` while it is written.
pub const IDENTITY_NEW: &str = "identity.pem.new";
/// Older releases: the certificate alone.
pub const LEGACY_CERT_FILE: &str = "cert.pem";
/// Older releases: the key alone.
pub const LEGACY_KEY_FILE: &str = "key.pem";
/// Files older releases could leave in a crash (their `write_atomic` went
/// through `<name>.tmp`, their renewal through `<name>.pem.new`), newest first.
const LEGACY_KEYS: [&str; 4] = ["key.pem.new", "key.pem.tmp", LEGACY_KEY_FILE, "key.tmp"];
const LEGACY_CERTS: [&str; 4] = ["cert.pem.new", "cert.pem.tmp", LEGACY_CERT_FILE, "cert.tmp"];
/// The line of `identity.pem` that records when it was received.
const RECEIVED_AT: &str = "received-at-unix-ms:";

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
    /// When this host received the certificate, on this host's clock.
    /// Renewal is timed from it (never from the certificate's dates, which
    /// are on the coordinator's clock).
    pub received_at: OffsetDateTime,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("agent", &self.agent)
            .field("received_at", &self.received_at)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "agent is not enrolled: {0} has no {AGENT_FILE}; run `autogit-agent join --coordinator HOST:PORT --token TOKEN --state-dir {0}` first"
    )]
    NotEnrolled(PathBuf),
    #[error("agent is already enrolled in {0}; pass --force to enroll again with a new identity")]
    AlreadyEnrolled(PathBuf),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "no usable key and certificate for agent {agent_id} in {dir} ({problems}); this host cannot authenticate \
         any more and must enroll again: create a token with `autogit-coordinator token create`, run \
         `autogit-agent join --force --coordinator {coordinator} --token TOKEN --state-dir {dir}`, restart the agent, \
         and remove the old identity with `autogit-coordinator agent revoke {agent_id}`",
        dir = .dir.display()
    )]
    NoUsableIdentity {
        dir: PathBuf,
        agent_id: String,
        coordinator: String,
        problems: String,
    },
}

/// Write `contents` to `path` durably: a temporary file with `mode`,
/// fsynced, renamed over `path`, and the directory fsynced.
pub(crate) fn write_durable(dir: &Path, name: &str, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.new"));
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
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The text of `identity.pem`.
fn render_identity(key_pem: &str, cert_pem: &str, received_at: OffsetDateTime) -> String {
    let ms = received_at.unix_timestamp_nanos() / 1_000_000;
    format!(
        "autogit-agent identity: private key and certificate, replaced together\n{RECEIVED_AT} {ms}\n{}\n{}\n",
        key_pem.trim(),
        cert_pem.trim()
    )
}

/// The PEM block labelled `label` (e.g. `CERTIFICATE`), with its armour.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

/// A private key in `text`: PKCS#8 (`PRIVATE KEY`), the only kind we write.
fn key_block(text: &str) -> Option<String> {
    pem_block(text, "PRIVATE KEY").map(|b| format!("{b}\n"))
}

fn cert_block(text: &str) -> Option<String> {
    pem_block(text, "CERTIFICATE").map(|b| format!("{b}\n"))
}

/// Parse `identity.pem` (or its `.new`): (key, cert, received_at).
fn parse_identity(text: &str) -> Result<(String, String, OffsetDateTime), String> {
    let ms: i128 = text
        .lines()
        .find_map(|l| l.strip_prefix(RECEIVED_AT))
        .ok_or("no received-at line")?
        .trim()
        .parse()
        .map_err(|_| "bad received-at line")?;
    let received_at = OffsetDateTime::from_unix_timestamp_nanos(ms.saturating_mul(1_000_000))
        .map_err(|_| "received-at out of range")?;
    let key = key_block(text).ok_or("no complete private key")?;
    let cert = cert_block(text).ok_or("no complete certificate")?;
    Ok((key, cert, received_at))
}

/// One key/certificate pair found on disk.
#[derive(Clone)]
struct Candidate {
    key_pem: String,
    cert_pem: String,
    received_at: OffsetDateTime,
    not_after: OffsetDateTime,
    /// Where it came from, for the log ("identity.pem", "key.pem + cert.pem.new").
    source: String,
}

/// What [`StateDir::load`] found.
struct Found {
    identity: Identity,
    source: String,
    /// Identity files present other than a good `identity.pem` in use.
    leftovers: Vec<&'static str>,
}

/// The state dir.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
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
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    }

    /// Write a fresh identity (after `join`). The key is in a 0600 file; the
    /// agent file is written last so a crash never leaves a half-enrolled
    /// state that looks complete. Files of an older identity are removed.
    pub fn save(&self, id: &Identity) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(self.io("create", ""))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(self.io("set permissions on", ""))?;
        self.write_identity(&id.cert_pem, &id.key_pem, id.received_at)?;
        self.remove_leftovers(&self.identity_leftovers())?;
        write_durable(&self.dir, CA_FILE, id.ca_pem.as_bytes(), 0o644)
            .map_err(self.io("write", CA_FILE))?;
        let json = serde_json::to_vec_pretty(&id.agent).map_err(|e| StateError::Corrupt {
            path: self.dir.join(AGENT_FILE),
            detail: e.to_string(),
        })?;
        write_durable(&self.dir, AGENT_FILE, &json, 0o644).map_err(self.io("write", AGENT_FILE))?;
        Ok(())
    }

    /// Replace key and certificate after a renewal, received now: one
    /// durable rename, so a crash keeps the old pair or the new one.
    pub fn save_renewed(&self, cert_pem: &str, key_pem: &str) -> Result<(), StateError> {
        self.write_identity(cert_pem, key_pem, OffsetDateTime::now_utc())?;
        self.remove_leftovers(&self.identity_leftovers())
    }

    fn write_identity(
        &self,
        cert_pem: &str,
        key_pem: &str,
        received_at: OffsetDateTime,
    ) -> Result<(), StateError> {
        let text = render_identity(key_pem, cert_pem, received_at);
        write_durable(&self.dir, IDENTITY_FILE, text.as_bytes(), 0o600)
            .map_err(self.io("write", IDENTITY_FILE))
    }

    /// Identity files other than `identity.pem` that are present.
    fn identity_leftovers(&self) -> Vec<&'static str> {
        std::iter::once(IDENTITY_NEW)
            .chain(LEGACY_KEYS)
            .chain(LEGACY_CERTS)
            .filter(|f| self.dir.join(f).exists())
            .collect()
    }

    fn remove_leftovers(&self, files: &[&'static str]) -> Result<(), StateError> {
        if files.is_empty() {
            return Ok(());
        }
        for f in files {
            match fs::remove_file(self.dir.join(f)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("remove", f)(e)),
            }
        }
        sync_dir(&self.dir).map_err(self.io("sync", ""))
    }

    /// Load the identity, read-only. See the module docs for which pair wins.
    pub fn load(&self) -> Result<Identity, StateError> {
        self.find().map(|f| f.identity)
    }

    /// Make the state dir 0700 and every file that may hold a private key
    /// 0600, whatever an older release, a copy or a umask left; returns
    /// each change as (path, old mode). Missing files are skipped.
    pub fn make_private(&self) -> Result<Vec<(PathBuf, u32)>, StateError> {
        let mut changed = Vec::new();
        let files = [IDENTITY_FILE, IDENTITY_NEW].into_iter().chain(LEGACY_KEYS);
        for (name, mode) in std::iter::once(("", 0o700)).chain(files.map(|f| (f, 0o600))) {
            let path = if name.is_empty() {
                self.dir.clone()
            } else {
                self.dir.join(name)
            };
            let old = match fs::metadata(&path) {
                Ok(m) => m.permissions().mode() & 0o7777,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("read permissions of", name)(e)),
            };
            if old != mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(self.io("set permissions on", name))?;
                changed.push((path, old));
            }
        }
        Ok(changed)
    }

    /// Load the identity and make the state dir clean: private modes
    /// ([`Self::make_private`]), the winning pair as `identity.pem`, nothing
    /// else. Logs what it tightened, recovered or migrated.
    pub fn repair(&self) -> Result<Identity, StateError> {
        for (path, old) in self.make_private()? {
            tracing::warn!(path = %path.display(), from = %format!("{old:04o}"), "tightened permissions in the state dir (0700 for the dir, 0600 for key files)");
        }
        let found = self.find()?;
        if found.source == IDENTITY_FILE && found.leftovers.is_empty() {
            return Ok(found.identity);
        }
        let id = &found.identity;
        if found.source != IDENTITY_FILE {
            self.write_identity(&id.cert_pem, &id.key_pem, id.received_at)?;
        }
        let stale: Vec<&'static str> = found
            .leftovers
            .iter()
            .copied()
            .filter(|f| *f != IDENTITY_FILE)
            .collect();
        self.remove_leftovers(&stale)?;
        let legacy_only = stale
            .iter()
            .all(|f| *f == LEGACY_KEY_FILE || *f == LEGACY_CERT_FILE);
        if legacy_only && found.source == format!("{LEGACY_KEY_FILE} + {LEGACY_CERT_FILE}") {
            tracing::info!(dir = %self.dir.display(), "moved key.pem and cert.pem into identity.pem (state dir of an older release)");
        } else {
            tracing::warn!(
                dir = %self.dir.display(),
                using = %found.source,
                removed = %stale.join(", "),
                "recovered the agent identity after an interrupted write (a crash during certificate renewal): kept the newest key and certificate that belong together"
            );
        }
        Ok(found.identity)
    }

    fn read_agent(&self) -> Result<AgentFile, StateError> {
        if !self.is_enrolled() {
            return Err(StateError::NotEnrolled(self.dir.clone()));
        }
        let json =
            fs::read_to_string(self.dir.join(AGENT_FILE)).map_err(self.io("read", AGENT_FILE))?;
        serde_json::from_str(&json).map_err(|e| StateError::Corrupt {
            path: self.dir.join(AGENT_FILE),
            detail: e.to_string(),
        })
    }

    /// Every pair on disk, checked, and the best one.
    fn find(&self) -> Result<Found, StateError> {
        let agent = self.read_agent()?;
        let ca_pem =
            fs::read_to_string(self.dir.join(CA_FILE)).map_err(self.io("read", CA_FILE))?;
        let mut problems = Vec::new();
        let mut candidates = Vec::new();
        let read = |f: &str| match fs::read_to_string(self.dir.join(f)) {
            Ok(t) => Some(Ok(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(format!("{f}: cannot read: {e}"))),
        };
        for file in [IDENTITY_FILE, IDENTITY_NEW] {
            match read(file) {
                None => {}
                Some(Err(p)) => problems.push(p),
                Some(Ok(text)) => match parse_identity(&text) {
                    Ok((key_pem, cert_pem, received_at)) => {
                        candidates.push((key_pem, cert_pem, Some(received_at), file.to_string()))
                    }
                    Err(p) => problems.push(format!("{file}: {p}")),
                },
            }
        }
        let mut keys = Vec::new();
        for file in LEGACY_KEYS {
            match read(file) {
                None => {}
                Some(Err(p)) => problems.push(p),
                Some(Ok(text)) => match key_block(&text) {
                    Some(k) => keys.push((file, k)),
                    None => problems.push(format!("{file}: no complete private key")),
                },
            }
        }
        for file in LEGACY_CERTS {
            match read(file) {
                None => {}
                Some(Err(p)) => problems.push(p),
                Some(Ok(text)) => match cert_block(&text) {
                    Some(c) => {
                        // Older releases kept no receipt time: the file's
                        // write time is the same thing, on the local clock.
                        let written = fs::metadata(self.dir.join(file))
                            .and_then(|m| m.modified())
                            .ok()
                            .map(OffsetDateTime::from);
                        for (kf, k) in &keys {
                            candidates.push((
                                k.clone(),
                                c.clone(),
                                written,
                                format!("{kf} + {file}"),
                            ));
                        }
                        if keys.is_empty() {
                            problems.push(format!("{file}: no private key next to it"));
                        }
                    }
                    None => problems.push(format!("{file}: no complete certificate")),
                },
            }
        }
        let mut good: Vec<Candidate> = Vec::new();
        for (key_pem, cert_pem, received_at, source) in candidates {
            match check_pair(&agent.agent_id, &cert_pem, &key_pem) {
                Ok(info) => good.push(Candidate {
                    received_at: received_at.unwrap_or_else(OffsetDateTime::now_utc),
                    not_after: info.not_after,
                    key_pem,
                    cert_pem,
                    source,
                }),
                Err(p) => problems.push(format!("{source}: {p}")),
            }
        }
        // Newest certificate first; on a tie the earlier source (identity.pem first).
        let best = good
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (c.not_after, std::cmp::Reverse(*i)))
            .map(|(_, c)| c.clone());
        let Some(best) = best else {
            if problems.is_empty() {
                problems.push(format!(
                    "neither {IDENTITY_FILE} nor {LEGACY_KEY_FILE}/{LEGACY_CERT_FILE} exists"
                ));
            }
            return Err(StateError::NoUsableIdentity {
                dir: self.dir.clone(),
                agent_id: agent.agent_id,
                coordinator: agent.coordinator,
                problems: problems.join("; "),
            });
        };
        let mut leftovers = self.identity_leftovers();
        if best.source != IDENTITY_FILE && self.dir.join(IDENTITY_FILE).exists() {
            leftovers.push(IDENTITY_FILE);
        }
        Ok(Found {
            source: best.source,
            leftovers,
            identity: Identity {
                agent,
                ca_pem,
                cert_pem: best.cert_pem,
                key_pem: best.key_pem,
                received_at: best.received_at,
            },
        })
    }
}

/// A key and certificate usable by `agent_id`: they belong together, the
/// certificate parses and names this agent.
fn check_pair(agent_id: &str, cert_pem: &str, key_pem: &str) -> Result<CertInfo, String> {
    let info = CertInfo::from_pem(cert_pem).map_err(|e| e.to_string())?;
    match info.agent_id() {
        Some(id) if id.to_string() == agent_id => {}
        Some(id) => return Err(format!("the certificate belongs to agent {id}")),
        None => return Err("the certificate is not an agent certificate".into()),
    }
    match autogit_certs::identity::key_matches_cert(cert_pem, key_pem) {
        Ok(true) => Ok(info),
        Ok(false) => Err("the private key does not belong to the certificate".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
