//! The short tokens of the runners this agent started, kept in the state dir
//! so that the leftover garbage collector (see [`super::leftovers`]) can tell
//! the docker executor's leftovers of *our* runners from a host owner's own
//! gitlab-runner work, also after an agent restart.
//!
//! ```text
//! <state_dir>/issued-short-tokens   one short token per line, newest last
//! ```
//!
//! The set is bounded: the newest `capacity` tokens are kept. Appends are
//! cheap (one line, fsynced); the file is rewritten (atomically) once it holds
//! twice the capacity. Short tokens are not secrets (GitLab shows them in its
//! UI); the full runner token is never written.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::leftovers::is_short_token;

/// The file name in the state dir.
pub const ISSUED_FILE: &str = "issued-short-tokens";
/// How many short tokens are remembered by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A bounded, persisted set of short tokens.
#[derive(Debug)]
pub struct IssuedTokens {
    path: Option<PathBuf>,
    capacity: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
    lines_in_file: usize,
}

impl IssuedTokens {
    /// An empty set kept in memory only (tests, or no state dir).
    pub fn in_memory(capacity: usize) -> Self {
        Self {
            path: None,
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
            lines_in_file: 0,
        }
    }

    /// Load the set from `path` (missing file = empty). Lines that are not
    /// short tokens are skipped with a warning, never fatal.
    pub fn load(path: &Path, capacity: usize) -> std::io::Result<Self> {
        let mut me = Self::in_memory(capacity);
        me.path = Some(path.to_owned());
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(me),
            Err(e) => return Err(e),
        };
        for line in text.lines() {
            me.lines_in_file += 1;
            let t = line.trim();
            if is_short_token(t) {
                me.remember(t);
            } else if !t.is_empty() {
                tracing::warn!(file = %path.display(), "skipping a malformed line in the issued short tokens");
            }
        }
        Ok(me)
    }

    fn remember(&mut self, t: &str) {
        if self.set.insert(t.to_owned()) {
            self.order.push_back(t.to_owned());
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Add tokens and persist them before returning (so a container created
    /// afterwards is always covered, even if the agent dies right then).
    pub fn insert_all(&mut self, tokens: &[String]) -> std::io::Result<()> {
        let new: Vec<&String> = tokens
            .iter()
            .filter(|t| is_short_token(t) && !self.set.contains(*t))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let new: Vec<String> = new.into_iter().cloned().collect();
        for t in &new {
            self.remember(t);
        }
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if self.lines_in_file + new.len() > 2 * self.capacity {
            self.rewrite(&path)
        } else {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            let mut buf = String::new();
            for t in &new {
                buf.push_str(t);
                buf.push('\n');
            }
            f.write_all(buf.as_bytes())?;
            f.sync_data()?;
            self.lines_in_file += new.len();
            Ok(())
        }
    }

    fn rewrite(&mut self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut buf = String::new();
        for t in &self.order {
            buf.push_str(t);
            buf.push('\n');
        }
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(buf.as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        self.lines_in_file = self.order.len();
        Ok(())
    }

    /// Was this short token issued by this agent?
    pub fn contains(&self, t: &str) -> bool {
        self.set.contains(t)
    }

    /// A copy of the set (for the garbage collector).
    pub fn snapshot(&self) -> HashSet<String> {
        self.set.clone()
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when no token is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_across_loads_and_stays_bounded() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join(ISSUED_FILE);
        let mut s = IssuedTokens::load(&path, 3).expect("load missing file");
        assert!(s.is_empty());
        for i in 0..10 {
            s.insert_all(&[format!("tok{i}")]).expect("insert");
        }
        assert_eq!(s.len(), 3);
        assert!(s.contains("tok9") && !s.contains("tok6"));
        let again = IssuedTokens::load(&path, 3).expect("reload");
        assert_eq!(again.snapshot(), s.snapshot());
        let lines = fs::read_to_string(&path).expect("read").lines().count();
        assert!(lines <= 6, "file is compacted: {lines} lines");
    }

    #[test]
    fn malformed_lines_and_bad_tokens_are_skipped() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join(ISSUED_FILE);
        fs::write(&path, "good1\nnot a token!\n\nglrt-waytoolongtoken\n").expect("write");
        let mut s = IssuedTokens::load(&path, 10).expect("load");
        assert_eq!(s.len(), 1);
        s.insert_all(&["".into(), "has space".into()])
            .expect("insert");
        assert_eq!(s.len(), 1);
    }
}
