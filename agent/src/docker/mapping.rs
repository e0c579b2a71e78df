//! How a [`RunnerSpec`] becomes a Docker container: the create body, the
//! labels that mark a container as ours, and the GPU plumbing (an NVIDIA
//! `DeviceRequest`, or device nodes for AMD/Intel).
//!
//! Pure functions, so the mapping is unit-tested without a daemon.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, Mount, MountTypeEnum,
};

use super::spec::{GpuAccess, RunnerSpec};

/// Every container the agent creates carries `autogit.managed=true`.
pub const LABEL_MANAGED: &str = "autogit.managed";
/// The runner id of the container.
pub const LABEL_RUNNER_ID: &str = "autogit.runner-id";
/// The pool of the container.
pub const LABEL_POOL: &str = "autogit.pool";
/// Optional: which supervisor instance owns the container (see
/// `SupervisorConfig::scope`).
pub const LABEL_SCOPE: &str = "autogit.scope";
/// The runner's GitLab short token candidates, comma-separated (see
/// [`super::leftovers`]): how the docker executor's leftovers are found again
/// after an agent restart. Not a secret; the full token is never a label.
pub const LABEL_SHORT_TOKENS: &str = "autogit.gitlab-short-tokens";

/// Docker's cgroup permissions for device nodes: read, write, mknod.
const DEVICE_PERMISSIONS: &str = "rwm";

/// The labels AutoGit puts on a runner's container, spec labels included.
pub fn container_labels(spec: &RunnerSpec, scope: Option<&str>) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_RUNNER_ID.into(), spec.runner_id.to_string());
    labels.insert(LABEL_POOL.into(), spec.pool.clone());
    if let Some(scope) = scope {
        labels.insert(LABEL_SCOPE.into(), scope.into());
    }
    if !spec.short_tokens.is_empty() {
        labels.insert(LABEL_SHORT_TOKENS.into(), spec.short_tokens.join(","));
    }
    labels
}

/// The short tokens recorded in a runner container's labels.
pub fn short_tokens_from_labels(labels: &HashMap<String, String>) -> Vec<String> {
    labels
        .get(LABEL_SHORT_TOKENS)
        .map(|v| {
            v.split(',')
                .filter(|t| super::leftovers::is_short_token(t))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The NVIDIA part of GPU access: one request for the `nvidia` driver with
/// exactly these device UUIDs and the `gpu` capability (what
/// `docker run --gpus device=GPU-...` sends). `None` when no NVIDIA GPU is asked for.
pub fn nvidia_device_requests(gpus: &GpuAccess) -> Option<Vec<DeviceRequest>> {
    if gpus.nvidia_uuids.is_empty() {
        return None;
    }
    Some(vec![DeviceRequest {
        driver: Some("nvidia".into()),
        device_ids: Some(gpus.nvidia_uuids.clone()),
        capabilities: Some(vec![vec!["gpu".into()]]),
        ..Default::default()
    }])
}

/// The AMD/Intel part of GPU access: each device node (or directory of nodes,
/// like `/dev/dri`) at the same path inside, with `rwm` cgroup permissions.
/// `None` when no device is asked for.
pub fn device_mappings(gpus: &GpuAccess) -> Option<Vec<DeviceMapping>> {
    if gpus.device_paths.is_empty() {
        return None;
    }
    Some(
        gpus.device_paths
            .iter()
            .map(|p| {
                let p = p.to_string_lossy().into_owned();
                DeviceMapping {
                    path_on_host: Some(p.clone()),
                    path_in_container: Some(p),
                    cgroup_permissions: Some(DEVICE_PERMISSIONS.into()),
                }
            })
            .collect(),
    )
}

/// The body of `POST /containers/create` for a runner.
pub fn container_config(spec: &RunnerSpec, scope: Option<&str>) -> ContainerCreateBody {
    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            source: Some(m.source.to_string_lossy().into_owned()),
            target: Some(m.target.to_string_lossy().into_owned()),
            typ: Some(MountTypeEnum::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let host_config = HostConfig {
        // The spec validation bounds cpus to 4096, so this cannot overflow.
        nano_cpus: spec.cpu_limit.map(|cpus| (cpus * 1e9).round() as i64),
        memory: spec.memory_limit_bytes.and_then(|b| i64::try_from(b).ok()),
        network_mode: spec.network_mode.clone(),
        mounts: (!mounts.is_empty()).then_some(mounts),
        device_requests: nvidia_device_requests(&spec.gpus),
        devices: device_mappings(&spec.gpus),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: (!spec.env.is_empty()).then(|| spec.env.iter().map(|e| e.to_docker()).collect()),
        labels: Some(container_labels(spec, scope)),
        stop_signal: spec.stop_signal.clone(),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The reference to pull: Docker pulls *every* tag when none is given, so
/// add `:latest` the way the docker CLI does (digests are left alone).
pub fn pull_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use secrecy::SecretString;

    use super::*;
    use crate::docker::spec::{BindMount, EnvVar, RunnerId};

    fn spec() -> RunnerSpec {
        let mut spec = RunnerSpec::new(RunnerId::new_v4(), "gpu-pool", "runner:1");
        spec.command = vec!["run".into()];
        spec.env = vec![EnvVar {
            name: "TOKEN".into(),
            value: SecretString::from("glrt-x"),
        }];
        spec.cpu_limit = Some(0.5);
        spec.memory_limit_bytes = Some(64 * 1024 * 1024);
        spec.network_mode = Some("host".into());
        spec.stop_signal = Some("SIGQUIT".into());
        spec.labels.insert("team".into(), "infra".into());
        spec.short_tokens = vec!["abcdefghi".into(), "t1_abcdef".into()];
        spec.mounts = vec![BindMount {
            source: "/var/run/docker.sock".into(),
            target: "/var/run/docker.sock".into(),
            read_only: true,
        }];
        spec
    }

    #[test]
    fn nvidia_request_names_driver_uuids_and_gpu_capability() {
        let gpus = GpuAccess {
            nvidia_uuids: vec!["GPU-aaaa".into(), "MIG-bbbb".into()],
            device_paths: vec![],
        };
        let reqs = nvidia_device_requests(&gpus).expect("one request");
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(
            reqs[0].device_ids,
            Some(vec!["GPU-aaaa".to_owned(), "MIG-bbbb".to_owned()])
        );
        assert_eq!(reqs[0].capabilities, Some(vec![vec!["gpu".to_owned()]]));
        // Count must stay unset: with DeviceIDs, a Count of -1 would mean "all GPUs".
        assert_eq!(reqs[0].count, None);
        assert!(device_mappings(&gpus).is_none());
    }

    #[test]
    fn amd_intel_devices_map_one_to_one_with_rwm() {
        let gpus = GpuAccess {
            nvidia_uuids: vec![],
            device_paths: vec![
                PathBuf::from("/dev/kfd"),
                "/dev/dri/renderD128".into(),
                "/dev/dri".into(),
            ],
        };
        let devs = device_mappings(&gpus).expect("devices");
        let got: Vec<_> = devs
            .iter()
            .map(|d| {
                (
                    d.path_on_host.as_deref().unwrap_or(""),
                    d.path_in_container.as_deref().unwrap_or(""),
                    d.cgroup_permissions.as_deref().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/dev/kfd", "/dev/kfd", "rwm"),
                ("/dev/dri/renderD128", "/dev/dri/renderD128", "rwm"),
                ("/dev/dri", "/dev/dri", "rwm"),
            ]
        );
        assert!(nvidia_device_requests(&gpus).is_none());
    }

    #[test]
    fn config_carries_spec_and_ownership_labels() {
        let s = spec();
        let c = container_config(&s, Some("test-scope"));
        assert_eq!(c.image.as_deref(), Some("runner:1"));
        assert_eq!(c.cmd, Some(vec!["run".to_owned()]));
        assert_eq!(c.env, Some(vec!["TOKEN=glrt-x".to_owned()]));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        let labels = c.labels.expect("labels");
        assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(labels.get(LABEL_RUNNER_ID), Some(&s.runner_id.to_string()));
        assert_eq!(labels.get(LABEL_POOL).map(String::as_str), Some("gpu-pool"));
        assert_eq!(
            labels.get(LABEL_SCOPE).map(String::as_str),
            Some("test-scope")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("infra"));
        assert_eq!(
            labels.get(LABEL_SHORT_TOKENS).map(String::as_str),
            Some("abcdefghi,t1_abcdef")
        );
        assert_eq!(
            short_tokens_from_labels(&labels),
            vec!["abcdefghi".to_owned(), "t1_abcdef".to_owned()]
        );
        assert!(
            labels.values().all(|v| !v.contains("glrt-")),
            "the runner token is never a label: {labels:?}"
        );
        let hc = c.host_config.expect("host config");
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.memory, Some(64 * 1024 * 1024));
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        let mounts = hc.mounts.expect("mounts");
        assert_eq!(mounts[0].typ, Some(MountTypeEnum::BIND));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[0].target.as_deref(), Some("/var/run/docker.sock"));
        assert!(hc.device_requests.is_none());
        assert!(hc.devices.is_none());
    }

    #[test]
    fn unlimited_spec_sets_no_limits() {
        let s = RunnerSpec::new(RunnerId::new_v4(), "p", "img");
        let c = container_config(&s, None);
        assert!(c.cmd.is_none());
        assert!(c.env.is_none());
        assert!(c.stop_signal.is_none());
        assert!(!c.labels.expect("labels").contains_key(LABEL_SCOPE));
        let hc = c.host_config.expect("host config");
        assert_eq!(hc.nano_cpus, None);
        assert_eq!(hc.memory, None);
        assert!(hc.mounts.is_none());
    }

    #[test]
    fn pull_reference_adds_latest_only_when_untagged() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(
            pull_reference("gitlab/gitlab-runner"),
            "gitlab/gitlab-runner:latest"
        );
        assert_eq!(
            pull_reference("gitlab/gitlab-runner:v18"),
            "gitlab/gitlab-runner:v18"
        );
        assert_eq!(pull_reference("reg:5000/a/b"), "reg:5000/a/b:latest");
        assert_eq!(pull_reference("reg:5000/a/b:1"), "reg:5000/a/b:1");
        assert_eq!(pull_reference("a/b@sha256:abc"), "a/b@sha256:abc");
    }
}
