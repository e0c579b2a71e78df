//! Disk-pressure image collection: when the free space of Docker's root dir
//! is below `images.gc_below_free`, remove images that AutoGit pulled
//! ([`super::pulled`]), that no wanted reference names, that no container
//! uses and that no runner pulled or used in the last [`RECENTLY_USED_S`]
//! seconds (its container may be about to be created), least recently used
//! first, until free space is back at the threshold or nothing is left to
//! remove.
//!
//! Removal is never forced: Docker refuses (conflict) an image a container
//! uses, and that image is skipped. An image that also carries a tag AutoGit
//! did not pull (an operator tagged it) is left alone. The free-space
//! reading is the [`FreeSpace`] trait, so tests can force pressure.

use std::collections::HashSet;
use std::path::Path;

use async_trait::async_trait;

use super::engine::DockerEngine;
use super::images::{ImageStore, LocalImage};
use super::mapping::pull_reference;
use super::pulled::PulledImages;

/// Reads how much space is free where Docker keeps its images.
#[async_trait]
pub trait FreeSpace: Send + Sync + 'static {
    /// Free bytes, `None` when unknown (then nothing is collected).
    async fn free_bytes(&self) -> Option<u64>;
}

/// The free space of the file system holding Docker's root dir.
#[derive(Debug, Clone)]
pub struct DockerRootFree(pub DockerEngine);

#[async_trait]
impl FreeSpace for DockerRootFree {
    async fn free_bytes(&self) -> Option<u64> {
        let root = self.0.info().await.ok()?.root_dir;
        if root.is_empty() {
            return None;
        }
        tokio::task::spawn_blocking(move || crate::inventory::free_bytes(Path::new(&root)).ok())
            .await
            .ok()
            .flatten()
    }
}

/// One image the collector removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Its id.
    pub id: String,
    /// Its tags when it was removed.
    pub tags: Vec<String>,
    /// Its size as Docker reported it.
    pub size_bytes: u64,
}

/// A reference as Docker lists it: `:latest` added, Docker Hub's
/// `docker.io/library/` and `docker.io/` prefixes dropped.
pub fn canonical_reference(reference: &str) -> String {
    let r = pull_reference(reference);
    for prefix in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ] {
        if let Some(rest) = r.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    r
}

/// How long an image pulled or used by a runner is spared: a runner that
/// pulled an image no pool wants (yet) must get to create its container.
pub const RECENTLY_USED_S: u64 = 600;

/// The images that may be removed, least recently used first: pulled by
/// AutoGit (every tag one AutoGit pulled), not wanted (by id), not used by a
/// container, and last used before `used_before` (Unix seconds).
pub fn candidates<'a>(
    images: &'a [LocalImage],
    pulled: &PulledImages,
    wanted_ids: &HashSet<String>,
    in_use: &HashSet<String>,
    used_before: u64,
) -> Vec<&'a LocalImage> {
    let mut out: Vec<(&LocalImage, u64)> = images
        .iter()
        .filter(|i| !wanted_ids.contains(&i.id) && !in_use.contains(&i.id))
        .filter_map(|i| {
            let p = pulled.get(&i.id).filter(|p| p.last_used_unix < used_before)?;
            let ours = i
                .tags
                .iter()
                .all(|t| p.references.contains(&canonical_reference(t)));
            ours.then_some((i, p.last_used_unix))
        })
        .collect();
    out.sort_by(|(a, at), (b, bt)| at.cmp(bt).then_with(|| a.id.cmp(&b.id)));
    out.into_iter().map(|(i, _)| i).collect()
}

/// Collect once (see the module docs). `threshold` 0 disables it. Returns
/// what was removed; each removal is logged.
pub async fn collect(
    store: &dyn ImageStore,
    free: &dyn FreeSpace,
    pulled: &mut PulledImages,
    wanted: &[String],
    threshold: u64,
) -> Vec<Removed> {
    let mut removed = Vec::new();
    if threshold == 0 {
        return removed;
    }
    let Some(mut free_now) = free.free_bytes().await else {
        return removed;
    };
    if free_now >= threshold {
        return removed;
    }
    let images = match store.list_images().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "image collection: cannot list images");
            return removed;
        }
    };
    pulled.retain_present(&images.iter().map(|i| i.id.clone()).collect());
    let in_use = match store.images_in_use().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "image collection: cannot list containers");
            return removed;
        }
    };
    let mut wanted_ids = HashSet::new();
    for w in wanted {
        match store.image_id(w).await {
            Ok(Some(id)) => {
                wanted_ids.insert(id);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(image = %w, error = %e, "image collection: cannot inspect a wanted image; not collecting");
                return removed;
            }
        }
    }
    let used_before = super::pulled::now_unix().saturating_sub(RECENTLY_USED_S);
    for image in candidates(&images, pulled, &wanted_ids, &in_use, used_before) {
        if free_now >= threshold {
            break;
        }
        // One tag (or none): remove by id. Several (all AutoGit's): untag
        // each; the last removal deletes the image.
        let names = if image.tags.len() <= 1 {
            vec![image.id.clone()]
        } else {
            image.tags.clone()
        };
        let mut gone = true;
        for name in &names {
            match store.remove_image(name).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) if e.is_conflict() => {
                    tracing::debug!(image = %image.id, error = %e, "image collection: image in use; skipped");
                    gone = false;
                    break;
                }
                Err(e) => {
                    tracing::warn!(image = %image.id, error = %e, "image collection: remove image");
                    gone = false;
                    break;
                }
            }
        }
        if !gone {
            continue;
        }
        tracing::info!(
            image = %image.id,
            tags = ?image.tags,
            bytes = image.size_bytes,
            free_bytes = free_now,
            gc_below_free = threshold,
            "removed image: disk pressure, pulled by AutoGit, not wanted, unused, least recently used"
        );
        pulled.forget(&image.id);
        removed.push(Removed {
            id: image.id.clone(),
            tags: image.tags.clone(),
            size_bytes: image.size_bytes,
        });
        match free.free_bytes().await {
            Some(f) => free_now = f,
            None => break,
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_compared_as_docker_lists_them() {
        assert_eq!(canonical_reference("alpine"), "alpine:latest");
        assert_eq!(
            canonical_reference("docker.io/library/alpine:3"),
            "alpine:3"
        );
        assert_eq!(
            canonical_reference("docker.io/gitlab/gitlab-runner"),
            "gitlab/gitlab-runner:latest"
        );
        assert_eq!(
            canonical_reference("127.0.0.1:5000/r:1"),
            "127.0.0.1:5000/r:1"
        );
    }

    fn image(id: &str, tags: &[&str]) -> LocalImage {
        LocalImage {
            id: id.into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            digests: Vec::new(),
            size_bytes: 1,
        }
    }

    #[test]
    fn only_autogit_pulled_unwanted_unused_images_lru_first() {
        let mut pulled = PulledImages::in_memory();
        pulled.record_pull("new", "r/new:1", 300);
        pulled.record_pull("old", "r/old:1", 100);
        pulled.record_pull("wanted", "r/wanted:1", 50);
        pulled.record_pull("busy", "r/busy:1", 60);
        pulled.record_pull("mixed", "r/mixed:1", 70);
        let images = [
            image("new", &["r/new:1"]),
            image("old", &["r/old:1"]),
            image("wanted", &["r/wanted:1"]),
            image("busy", &["r/busy:1"]),
            image("mixed", &["r/mixed:1", "operator/own:1"]),
            image("operator", &["operator/x:1"]),
        ];
        let wanted = HashSet::from(["wanted".to_owned()]);
        let in_use = HashSet::from(["busy".to_owned()]);
        let got: Vec<_> = candidates(&images, &pulled, &wanted, &in_use, u64::MAX)
            .into_iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(got, ["old", "new"]);
        let spared: Vec<_> = candidates(&images, &pulled, &wanted, &in_use, 300)
            .into_iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(spared, ["old"], "an image used at or after the cutoff is spared");
    }
}
