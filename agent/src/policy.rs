//! The host owner's veto: what this host lets the coordinator run.
//!
//! The coordinator chooses images, mounts, devices and network modes; the
//! agent executes them with root-equivalent power over the host. The
//! `[policy]` section of `agent.toml` bounds that power, and
//! [`HostPolicy::check`] runs on every `StartRunner` before anything touches
//! Docker. A refusal names the rule, e.g.
//! `mount source "/" is not in policy.allowed_mount_sources`.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::docker::RunnerSpec;
use crate::inventory::{GpuVendor, Inventory};

/// Where the coordinator mounts the host's Docker socket from.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The `[policy]` section of `agent.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Image references a runner may use, as globs (`*` any run of
    /// characters, `?` one character). Default `["*"]`: any image.
    pub allowed_images: Vec<String>,
    /// Host paths (and everything below them) a runner may bind-mount.
    /// Compared after resolving symlinks. Default: none.
    pub allowed_mount_sources: Vec<PathBuf>,
    /// Allow bind-mounting the Docker socket (GitLab's docker executor needs
    /// it). Default true.
    pub allow_docker_socket: bool,
    /// Device nodes a runner may get, as globs; a node must also be one the
    /// inventory found on this host.
    pub allowed_devices: Vec<String>,
    /// Allow `network_mode = "host"`. Default false.
    pub allow_host_network: bool,
    /// Allow `network_mode = "container:<id>"`. Default false.
    pub allow_container_network: bool,
    /// The most CPUs one runner may get; a runner without a CPU limit is
    /// refused when set. Default: no bound.
    pub max_cpu: Option<f64>,
    /// The most memory (bytes) one runner may get; a runner without a memory
    /// limit is refused when set. Default: no bound.
    pub max_memory: Option<u64>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            allowed_images: vec!["*".into()],
            allowed_mount_sources: Vec::new(),
            allow_docker_socket: true,
            allowed_devices: vec![
                "/dev/nvidia*".into(),
                "/dev/dri/renderD*".into(),
                "/dev/kfd".into(),
            ],
            allow_host_network: false,
            allow_container_network: false,
            max_cpu: None,
            max_memory: None,
        }
    }
}

impl PolicyConfig {
    /// Bad values, named by key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(p) = self.allowed_images.iter().find(|p| p.is_empty()) {
            return Err((
                "policy.allowed_images",
                format!("{p:?} is an empty pattern"),
            ));
        }
        for p in &self.allowed_mount_sources {
            if !p.is_absolute() || has_dots(p) {
                return Err((
                    "policy.allowed_mount_sources",
                    format!(
                        "{:?} must be an absolute path without '.' or '..'",
                        p.display().to_string()
                    ),
                ));
            }
        }
        if let Some(p) = self
            .allowed_devices
            .iter()
            .find(|p| !p.starts_with("/dev/"))
        {
            return Err((
                "policy.allowed_devices",
                format!("{p:?} must be a pattern under /dev/"),
            ));
        }
        if let Some(c) = self.max_cpu
            && (!c.is_finite() || c <= 0.0)
        {
            return Err((
                "policy.max_cpu",
                format!("{c} must be a CPU count greater than 0"),
            ));
        }
        if self.max_memory == Some(0) {
            return Err(("policy.max_memory", "must be greater than 0 bytes".into()));
        }
        Ok(())
    }
}

/// A refused `StartRunner`: which rule and why (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by host policy: {0}")]
pub struct PolicyViolation(pub String);

/// The policy in force on this host.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    cfg: PolicyConfig,
    /// Extra Docker socket paths (the configured `docker.socket`).
    sockets: Vec<PathBuf>,
}

impl HostPolicy {
    /// `docker_socket` is `docker.socket` from the config, if set; it is
    /// treated like [`DOCKER_SOCKET`].
    pub fn new(cfg: PolicyConfig, docker_socket: Option<&Path>) -> Self {
        let mut sockets = vec![PathBuf::from(DOCKER_SOCKET)];
        sockets.extend(docker_socket.map(Path::to_path_buf));
        HostPolicy { cfg, sockets }
    }

    /// Refuse `spec` unless every part of it is allowed here. `inventory`
    /// is what this host really has (devices must be among it).
    pub fn check(&self, spec: &RunnerSpec, inventory: &Inventory) -> Result<(), PolicyViolation> {
        let deny = |s: String| Err(PolicyViolation(s));
        let c = &self.cfg;
        if !c.allowed_images.iter().any(|p| glob_match(p, &spec.image)) {
            return deny(format!(
                "image {:?} does not match policy.allowed_images",
                spec.image
            ));
        }
        for m in &spec.mounts {
            self.check_mount(&m.source)?;
        }
        for d in &spec.gpus.device_paths {
            let shown = d.display().to_string();
            if has_dots(d) || !c.allowed_devices.iter().any(|p| glob_match(p, &shown)) {
                return deny(format!("device {shown:?} is not in policy.allowed_devices"));
            }
            if !device_in_inventory(d, inventory) {
                return deny(format!(
                    "device {shown:?} is not a GPU device the inventory found on this host"
                ));
            }
        }
        for id in &spec.gpus.nvidia_uuids {
            let found = inventory
                .gpus
                .iter()
                .any(|g| g.vendor == GpuVendor::Nvidia && &g.uuid == id);
            if !found
                || !c
                    .allowed_devices
                    .iter()
                    .any(|p| glob_match(p, "/dev/nvidia0"))
            {
                return deny(format!(
                    "NVIDIA GPU {id:?} is not allowed (policy.allowed_devices) or not on this host"
                ));
            }
        }
        match spec.network_mode.as_deref() {
            Some("host") if !c.allow_host_network => {
                return deny(
                    "network mode \"host\" is refused (policy.allow_host_network = false)".into(),
                );
            }
            Some(m) if m.starts_with("container:") && !c.allow_container_network => {
                return deny(format!(
                    "network mode {m:?} is refused (policy.allow_container_network = false)"
                ));
            }
            _ => {}
        }
        if let Some(max) = c.max_cpu {
            match spec.cpu_limit {
                Some(cpu) if cpu <= max => {}
                Some(cpu) => {
                    return deny(format!("cpu limit {cpu} exceeds policy.max_cpu = {max}"));
                }
                None => return deny(format!("no cpu limit, but policy.max_cpu = {max}")),
            }
        }
        if let Some(max) = c.max_memory {
            match spec.memory_limit_bytes {
                Some(b) if b <= max => {}
                Some(b) => {
                    return deny(format!(
                        "memory limit {b} bytes exceeds policy.max_memory = {max}"
                    ));
                }
                None => return deny(format!("no memory limit, but policy.max_memory = {max}")),
            }
        }
        Ok(())
    }

    fn check_mount(&self, source: &Path) -> Result<(), PolicyViolation> {
        let shown = source.display().to_string();
        let refused = || {
            PolicyViolation(format!(
                "mount source {shown:?} is not in policy.allowed_mount_sources"
            ))
        };
        // Parsing already refuses `..`; refuse it here too rather than trust it.
        if !source.is_absolute() || has_dots(source) {
            return Err(refused());
        }
        let real = resolve(source);
        if self.cfg.allow_docker_socket && self.sockets.iter().any(|s| resolve(s) == real) {
            return Ok(());
        }
        if self
            .cfg
            .allowed_mount_sources
            .iter()
            .any(|a| real.starts_with(resolve(a)))
        {
            return Ok(());
        }
        Err(refused())
    }
}

/// A `/dev` node the inventory accounts for: a GPU's render node, `/dev/kfd`
/// with an AMD GPU, `/dev/nvidia*` with an NVIDIA GPU.
fn device_in_inventory(dev: &Path, inv: &Inventory) -> bool {
    let has = |v: GpuVendor| inv.gpus.iter().any(|g| g.vendor == v);
    let s = dev.to_string_lossy();
    inv.gpus
        .iter()
        .any(|g| g.render_node.as_deref() == Some(&*s))
        || (s == "/dev/kfd" && has(GpuVendor::Amd))
        || (glob_match("/dev/nvidia*", &s) && !s[11..].contains('/') && has(GpuVendor::Nvidia))
}

fn has_dots(p: &Path) -> bool {
    p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
}

/// The canonical form of an absolute path without `..`: symlinks resolved.
/// A path that does not exist yet is resolved up to its deepest existing
/// ancestor (the rest cannot be a symlink).
fn resolve(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            return rest.iter().rev().fold(real, |acc: PathBuf, c| acc.join(c));
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return p.components().collect(),
        }
    }
}

/// Shell-style glob: `*` any run of characters (including `/`), `?` one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests;
