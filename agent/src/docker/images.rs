//! Images on the host, as the warm-image keeper ([`super::warm`]), the
//! disk-pressure collector ([`super::image_gc`]) and the inventory see them.
//!
//! [`ImageStore`] is the small Docker surface they need (list, inspect,
//! pull, remove without force, which images containers use);
//! [`DockerEngine`] implements it with bollard, and tests use fakes.
//! [`held_images`] maps Docker's image list to the inventory's
//! [`HeldImage`] entries.

use std::collections::{BTreeSet, HashSet};

use async_trait::async_trait;
use bollard::models::ImageSummary;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};

use super::engine::{ContainerEngine, DockerEngine, EngineError};
use super::spec::RegistryAuth;
use crate::inventory::{HeldImage, MAX_HELD_IMAGES};

/// One image on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// Docker's image id (`sha256:...`).
    pub id: String,
    /// Its tags (`RepoTags`, `<none>` left out).
    pub tags: Vec<String>,
    /// Its digest references (`RepoDigests`, `<none>` left out).
    pub digests: Vec<String>,
    /// Its size as Docker reports it.
    pub size_bytes: u64,
}

impl LocalImage {
    fn from_summary(s: &ImageSummary) -> Self {
        let keep = |refs: &[String]| {
            refs.iter()
                .filter(|r| !r.contains("<none>"))
                .cloned()
                .collect::<Vec<_>>()
        };
        Self {
            id: s.id.clone(),
            tags: keep(&s.repo_tags),
            digests: keep(&s.repo_digests),
            size_bytes: u64::try_from(s.size).unwrap_or(0),
        }
    }
}

/// The inventory's view of `images`: one entry per tag or digest
/// reference, sorted by reference, at most [`MAX_HELD_IMAGES`].
pub fn held_images(images: &[LocalImage]) -> Vec<HeldImage> {
    let all: BTreeSet<HeldImage> = images
        .iter()
        .flat_map(|i| {
            i.tags.iter().chain(&i.digests).map(|r| HeldImage {
                reference: r.clone(),
                id: i.id.clone(),
                size_bytes: i.size_bytes,
            })
        })
        .collect();
    all.into_iter().take(MAX_HELD_IMAGES).collect()
}

/// What warm pulls and the image collector need from Docker.
#[async_trait]
pub trait ImageStore: Send + Sync + 'static {
    /// Every image on the host.
    async fn list_images(&self) -> Result<Vec<LocalImage>, EngineError>;
    /// The id of the image `reference` names, `None` when it is not here.
    async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError>;
    /// Pull `reference` with `auth` for its registry (one pull per reference
    /// at a time, shared with runner pulls).
    async fn pull(&self, reference: &str, auth: Option<&RegistryAuth>) -> Result<(), EngineError>;
    /// Remove an image (by id or reference) without force: an image a
    /// container uses answers a conflict.
    async fn remove_image(&self, name: &str) -> Result<(), EngineError>;
    /// Ids of the images that containers (running or not) use.
    async fn images_in_use(&self) -> Result<HashSet<String>, EngineError>;
}

#[async_trait]
impl ImageStore for DockerEngine {
    async fn list_images(&self) -> Result<Vec<LocalImage>, EngineError> {
        let opts = ListImagesOptionsBuilder::new().all(false).build();
        let list = self
            .client()
            .list_images(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("list images", e))?;
        Ok(list.iter().map(LocalImage::from_summary).collect())
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        match self.client().inspect_image(reference).await {
            Ok(i) => Ok(i.id),
            Err(e) => {
                let e = EngineError::from_bollard("inspect image", e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn pull(&self, reference: &str, auth: Option<&RegistryAuth>) -> Result<(), EngineError> {
        self.pull_image(reference, auth).await
    }

    async fn remove_image(&self, name: &str) -> Result<(), EngineError> {
        let opts = RemoveImageOptionsBuilder::new().force(false).build();
        self.client()
            .remove_image(name, Some(opts), None)
            .await
            .map(|_| ())
            .map_err(|e| EngineError::from_bollard("remove image", e))
    }

    async fn images_in_use(&self) -> Result<HashSet<String>, EngineError> {
        let opts = ListContainersOptionsBuilder::new().all(true).build();
        let list = self
            .client()
            .list_containers(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("list containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.image_id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str], digests: &[&str], size: u64) -> LocalImage {
        LocalImage {
            id: id.into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            digests: digests.iter().map(|s| s.to_string()).collect(),
            size_bytes: size,
        }
    }

    #[test]
    fn one_entry_per_reference_sorted_and_capped() {
        let summary = ImageSummary {
            id: "sha256:a".into(),
            repo_tags: vec!["<none>:<none>".into(), "b/x:1".into()],
            repo_digests: vec!["<none>@<none>".into(), "b/x@sha256:d".into()],
            size: 10,
            ..Default::default()
        };
        let a = LocalImage::from_summary(&summary);
        assert_eq!(a, image("sha256:a", &["b/x:1"], &["b/x@sha256:d"], 10));
        let held = held_images(&[a, image("sha256:b", &["a/y:2", "c/z:3"], &[], 5)]);
        let refs: Vec<_> = held
            .iter()
            .map(|h| (h.reference.as_str(), h.id.as_str()))
            .collect();
        assert_eq!(
            refs,
            [
                ("a/y:2", "sha256:b"),
                ("b/x:1", "sha256:a"),
                ("b/x@sha256:d", "sha256:a"),
                ("c/z:3", "sha256:b")
            ]
        );
        let many: Vec<_> = (0..1200)
            .map(|n| image(&format!("sha256:{n}"), &[&format!("r/{n:05}:1")], &[], 1))
            .collect();
        let held = held_images(&many);
        assert_eq!(held.len(), MAX_HELD_IMAGES);
        assert_eq!(held[0].reference, "r/00000:1");
        assert_eq!(held[999].reference, "r/00999:1");
    }
}
