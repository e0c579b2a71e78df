//! A runner pool as the scheduler plans with it: which GitLab tags it
//! serves, the hardware and resources each runner needs, and its sizing.
//!
//! This is plain data. Reading pools from TOML, their defaults and
//! validation live in `config/pool.rs`; turning a pool and a [`Placement`]
//! into a container (templates, device nodes, mounts) lives in `runners/`.
//! The container fields (`image`, `command`, `env`, `mounts`, ...) travel
//! with the pool so that one value describes it, but nothing in the
//! scheduler reads them.
//!
//! [`Placement`]: super::Placement

use std::collections::BTreeMap;
use std::time::Duration;

use super::bytesize::ByteSize;
use super::hardware::{Arch, GpuVendor};
use super::labels::Labels;

/// One pool of runners. Field defaults when omitted from config:
/// `run_untagged = false`, no `gpu`, `image` = `gitlab/gitlab-runner:latest`,
/// `command` = the default command for the pool's GPU (`config/pool.rs`), empty `env`,
/// `cpu_limit = 2.0`, `mem_limit = "4GiB"`, `max_runners = 4`,
/// `idle_min = 0`, `idle_timeout = "5m"`, `runner_type = "instance"`, no
/// `network_mode` (Docker's default), no `mounts`, `docker_socket = true`,
/// `docker_cache = false`, no `agent_selector`, no `registry` credentials.
///
/// `cpu_limit` and `mem_limit` are the runner container's limits and also
/// the unit of capacity accounting on agents. With the docker executor the
/// job containers are siblings of the runner container (through the host's
/// Docker socket) and are not bound by these limits; placement still
/// reserves them per runner.
///
/// `docker_socket = true` mounts the host's Docker socket into the runner,
/// which the docker executor needs and which gives the job root-equivalent
/// access to the host: only run trusted jobs on such pools, or use a pool
/// with `docker_socket = false` and the shell executor.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Unique name, `[a-z0-9][a-z0-9_-]*`, at most 63 characters.
    pub name: String,
    /// The GitLab tags this pool's runners carry.
    pub tags: Vec<String>,
    /// Whether its runners also take jobs without tags.
    pub run_untagged: bool,
    /// The agent architecture its runners need.
    pub arch: Arch,
    /// Trust labels an agent must hold (every pair) to get this pool's
    /// runners; empty places on any agent. Only labels set on the
    /// coordinator count, never what an agent reports (see
    /// [`labels`](super::labels)).
    pub agent_selector: Labels,
    pub gpu: Option<GpuRequirement>,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// CPUs (fractional) per runner.
    pub cpu_limit: f64,
    /// Memory per runner.
    pub mem_limit: ByteSize,
    /// Most runners of this pool at once (all states but stopping).
    pub max_runners: u32,
    /// Runners kept ready (idle) even without pending jobs.
    pub idle_min: u32,
    /// How long a runner may sit idle before it is stopped (only while the
    /// pool has more available runners than pending jobs plus `idle_min`).
    pub idle_timeout: Duration,
    pub runner_type: RunnerType,
    pub network_mode: Option<String>,
    pub mounts: Vec<Mount>,
    pub docker_socket: bool,
    /// Keep the docker executor's cache volumes (the default command then
    /// omits `--docker-disable-cache`). Every runner is fresh, so kept caches
    /// are only reused through a shared cache config; off by default.
    pub docker_cache: bool,
    /// Credentials for pulling `image` (`registry = { username, password_file }`);
    /// `None` pulls anonymously.
    pub registry: Option<super::registry::RegistryAuth>,
}

/// GPUs each runner of a pool needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRequirement {
    pub vendor: GpuVendor,
    /// GPUs per runner (default 1).
    pub count: u32,
    /// Least memory each of those GPUs must have.
    pub min_memory: Option<ByteSize>,
}

/// Which GitLab scope the pool's runners are created in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunnerType {
    /// Instance-wide (needs an admin token).
    #[default]
    Instance,
    /// For one group (needs Owner of the group).
    Group { group_id: u64 },
    /// For one project (needs Owner of the project).
    Project { project_id: u64 },
}

impl RunnerType {
    /// The `runner_type` value of GitLab's `POST /user/runners`.
    pub fn gitlab_runner_type(self) -> &'static str {
        match self {
            RunnerType::Instance => "instance_type",
            RunnerType::Group { .. } => "group_type",
            RunnerType::Project { .. } => "project_type",
        }
    }
}

/// A bind mount into the runner container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl Pool {
    /// Whether the pool's runners carry `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}
