//! The images AutoGit pulled on this host, kept in the state dir so that the
//! disk-pressure collector ([`super::image_gc`]) removes only those, never
//! an operator's own images, also after an agent restart.
//!
//! ```text
//! <state_dir>/images.json
//! {"images": {"sha256:...": {"references": ["reg/runner:1"], "last_used_unix": 1790000000}}}
//! ```
//!
//! An entry is made when AutoGit pulls an image (a warm pull or a runner's
//! pull) and its `last_used_unix` is updated when a runner container of that
//! image starts. Every change is written atomically (temporary file, fsync,
//! rename). Entries of images that are no longer on the host are dropped by
//! the collector.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file name in the state dir.
pub const PULLED_FILE: &str = "images.json";

/// One image AutoGit pulled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledImage {
    /// The references AutoGit pulled it as.
    pub references: BTreeSet<String>,
    /// When a runner last started from it (or it was pulled), Unix seconds.
    pub last_used_unix: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileBody {
    images: BTreeMap<String, PulledImage>,
}

/// The persisted record of AutoGit-pulled images, by image id.
#[derive(Debug, Default)]
pub struct PulledImages {
    path: Option<PathBuf>,
    images: BTreeMap<String, PulledImage>,
}

/// Now, in Unix seconds.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PulledImages {
    /// An empty record kept in memory only (tests, or no state dir).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Load from `path`; a missing file is an empty record, an unreadable
    /// one is logged and starts empty (AutoGit then forgets what it pulled:
    /// those images are kept, never removed by mistake).
    pub fn load(path: &Path) -> Self {
        let images = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<FileBody>(&bytes) {
                Ok(body) => body.images,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable record of pulled images; starting empty");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the record of pulled images; starting empty");
                BTreeMap::new()
            }
        };
        Self {
            path: Some(path.to_owned()),
            images,
        }
    }

    /// AutoGit pulled `id` as `reference` at `now`.
    pub fn record_pull(&mut self, id: &str, reference: &str, now: u64) {
        let e = self.images.entry(id.to_owned()).or_default();
        e.references.insert(reference.to_owned());
        e.last_used_unix = e.last_used_unix.max(now);
        self.save();
    }

    /// A runner started from `id` at `now`; only images AutoGit pulled are
    /// tracked. True when the record changed.
    pub fn record_use(&mut self, id: &str, now: u64) -> bool {
        match self.images.get_mut(id) {
            Some(e) => {
                e.last_used_unix = e.last_used_unix.max(now);
                self.save();
                true
            }
            None => false,
        }
    }

    /// What is known about `id`, if AutoGit pulled it.
    pub fn get(&self, id: &str) -> Option<&PulledImage> {
        self.images.get(id)
    }

    /// Forget `id` (it was removed).
    pub fn forget(&mut self, id: &str) {
        if self.images.remove(id).is_some() {
            self.save();
        }
    }

    /// Keep only the images still on the host.
    pub fn retain_present(&mut self, present: &HashSet<String>) {
        let before = self.images.len();
        self.images.retain(|id, _| present.contains(id));
        if self.images.len() != before {
            self.save();
        }
    }

    /// Ids of every recorded image.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.images.keys()
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let body = FileBody {
            images: self.images.clone(),
        };
        let json = match serde_json::to_vec_pretty(&body) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "serialise the record of pulled images");
                return;
            }
        };
        if let Err(e) = crate::state::write_durable(dir, &name.to_string_lossy(), &json, 0o644) {
            tracing::warn!(file = %path.display(), error = %e, "write the record of pulled images");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reload_and_tracks_only_pulled_images() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PULLED_FILE);
        let mut p = PulledImages::load(&path);
        p.record_pull("sha256:a", "reg/a:1", 100);
        p.record_pull("sha256:a", "reg/a:latest", 90);
        assert!(
            !p.record_use("sha256:operator", 200),
            "not pulled by AutoGit"
        );
        assert!(p.record_use("sha256:a", 150));
        let again = PulledImages::load(&path);
        let a = again.get("sha256:a").expect("recorded");
        assert_eq!(a.last_used_unix, 150);
        assert_eq!(
            a.references.iter().collect::<Vec<_>>(),
            ["reg/a:1", "reg/a:latest"]
        );
        assert!(again.get("sha256:operator").is_none());
        assert!(
            !dir.path().join("images.json.new").exists(),
            "written atomically"
        );
        let mut again = again;
        again.retain_present(&HashSet::new());
        assert!(PulledImages::load(&path).get("sha256:a").is_none());
    }

    #[test]
    fn a_corrupt_file_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PULLED_FILE);
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(PulledImages::load(&path).ids().count(), 0);
    }
}
