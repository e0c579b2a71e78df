//! Warm images: which images a pool's runners need on an agent, and whether
//! an agent already holds one.
//!
//! An agent reports the references of the images it holds (Docker's repo
//! tags and repo digests, `fleet/inventory.rs`); a pool names its images as
//! an operator wrote them. [`normalise`] brings both to one spelling, so
//! `alpine`, `alpine:latest` and `docker.io/library/alpine:latest` are the
//! same image. Placement prefers an agent that holds the runner image
//! (`placement.rs`), and the coordinator asks every agent that could serve a
//! pool to pull [`Pool::warm_images`] ahead of demand (`fleet/warm.rs`).

use super::hardware::Arch;
use super::pool::Pool;

/// The flag of the runner's command that names the default job image.
const JOB_IMAGE_FLAG: &str = "--docker-image";

/// One spelling per image reference: Docker Hub's `docker.io/` and
/// `docker.io/library/` prefixes dropped (and `index.docker.io/`), and
/// `:latest` added to a reference with neither tag nor digest. Other
/// registries are kept as written (`localhost:5000/x` and `127.0.0.1:5000/x`
/// stay different, as they are to Docker).
pub fn normalise(reference: &str) -> String {
    let r = reference.trim();
    let r = [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ]
    .iter()
    .find_map(|p| r.strip_prefix(p))
    .unwrap_or(r);
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') || r.contains('@') {
        r.to_owned()
    } else {
        format!("{r}:latest")
    }
}

/// The registry host of a reference (`registry.example:5000`), or
/// `docker.io` for Docker Hub's short names.
pub fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

impl Pool {
    /// The images a runner of this pool pulls on an agent of `arch`, each
    /// once, as written in the config: the runner image, the helper image
    /// (`helper_image`, when set for `arch`) and the default job image
    /// (`--docker-image` in the command, when it names a literal image).
    pub fn warm_images(&self, arch: Arch) -> Vec<String> {
        let mut out = vec![self.image_for(arch).to_owned()];
        if let Some(helper) = self.helper_image.get(&arch) {
            out.push(helper.clone());
        }
        let mut args = self.command.iter();
        while let Some(arg) = args.next() {
            let job = match arg.strip_prefix(JOB_IMAGE_FLAG) {
                Some("") => args.next().map(String::as_str),
                Some(rest) => rest.strip_prefix('='),
                None => None,
            };
            // A template (`{...}`) is filled per runner: nothing to pull ahead.
            if let Some(job) = job.filter(|j| !j.is_empty() && !j.contains('{')) {
                out.push(job.to_owned());
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|i| seen.insert(normalise(i)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_spellings_are_one_image() {
        for r in [
            "alpine",
            "alpine:latest",
            "docker.io/library/alpine",
            "docker.io/library/alpine:latest",
            "index.docker.io/library/alpine",
        ] {
            assert_eq!(normalise(r), "alpine:latest", "{r}");
        }
        assert_eq!(
            normalise("docker.io/gitlab/gitlab-runner"),
            "gitlab/gitlab-runner:latest"
        );
        assert_eq!(
            normalise("localhost:5000/ci/runner"),
            "localhost:5000/ci/runner:latest"
        );
        assert_eq!(
            normalise("127.0.0.1:5000/ci/runner:v1"),
            "127.0.0.1:5000/ci/runner:v1"
        );
        let pinned =
            "alpine@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
        assert_eq!(normalise(pinned), pinned, "a digest needs no tag");
        assert_ne!(normalise("alpine:3.20"), normalise("alpine"));
    }

    #[test]
    fn registry_host_tells_a_registry_from_a_namespace() {
        assert_eq!(
            registry_host("127.0.0.1:5000/ci/runner:v1"),
            "127.0.0.1:5000"
        );
        assert_eq!(
            registry_host("registry.example/ci/runner"),
            "registry.example"
        );
        assert_eq!(registry_host("localhost/x"), "localhost");
        assert_eq!(registry_host("gitlab/gitlab-runner:latest"), "docker.io");
        assert_eq!(registry_host("alpine"), "docker.io");
    }

    #[test]
    fn a_pool_warms_its_runner_helper_and_job_images_once_each() {
        let mut pool = Pool::new("p", &["p"], Arch::X86_64);
        pool.image = "reg:5000/runner:v1".into();
        pool.images
            .insert(Arch::Aarch64, "reg:5000/runner:v1-arm".into());
        pool.helper_image
            .insert(Arch::X86_64, "reg:5000/helper:x86".into());
        pool.command = vec![
            "run-single".into(),
            "--docker-image".into(),
            "reg:5000/job:1".into(),
            "--docker-gpus".into(),
            "{docker_gpus}".into(),
        ];
        assert_eq!(
            pool.warm_images(Arch::X86_64),
            [
                "reg:5000/runner:v1",
                "reg:5000/helper:x86",
                "reg:5000/job:1"
            ]
        );
        assert_eq!(
            pool.warm_images(Arch::Aarch64),
            ["reg:5000/runner:v1-arm", "reg:5000/job:1"]
        );
        pool.command = vec![
            "--docker-image={image}".into(),
            "--docker-image=reg:5000/runner:v1".into(),
        ];
        assert_eq!(
            pool.warm_images(Arch::X86_64),
            ["reg:5000/runner:v1", "reg:5000/helper:x86"]
        );
    }
}
