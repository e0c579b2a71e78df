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
use super::hardware::{Arch, Archs, GpuVendor};
use super::labels::Labels;
use super::schedule::Window;

/// One pool of runners. Field defaults when omitted from config:
/// `run_untagged = false`, no `gpu`, `image` = `gitlab/gitlab-runner:latest`,
/// `command` = the default command for the pool's GPU (`config/pool.rs`), empty `env`,
/// `cpu_limit = 2.0`, `mem_limit = "4GiB"`, `max_runners = 4`,
/// `idle_min = 0`, `idle_timeout = "5m"`, `runner_type = "instance"`, no
/// `network_mode` (Docker's default), no `mounts`, `docker_socket = true`,
/// `docker_cache = false`, no `agent_selector`, no `schedule`, no
/// `wait_objective`, no `registry` credentials.
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
    /// The agent architectures its runners may run on (one or more).
    pub arch: Archs,
    /// Trust labels an agent must hold (every pair) to get this pool's
    /// runners; empty places on any agent. Only labels set on the
    /// coordinator count, never what an agent reports (see
    /// [`labels`](super::labels)).
    pub agent_selector: Labels,
    pub gpu: Option<GpuRequirement>,
    /// The runner image, for every architecture without an entry in
    /// `images`.
    pub image: String,
    /// Runner images per architecture (`image = { x86_64 = "…", … }`).
    pub images: BTreeMap<Arch, String>,
    /// The job helper image per architecture, passed to the runner as
    /// `--docker-helper-image` (after the pool's command); empty: the
    /// runner's default for the host's architecture.
    pub helper_image: BTreeMap<Arch, String>,
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
    /// Windows that override `idle_min` and `max_runners` while active
    /// (`[[pools.schedule]]`, [`super::schedule`]); empty by default.
    pub schedule: Vec<Window>,
    /// How long a job should wait for its runner at most: the coordinator
    /// tracks the share of jobs that met it ([`crate::runners::wait_objective`]).
    /// Like sizing, it changes nothing in the runners.
    pub wait_objective: Option<Duration>,
    /// GitLab runners created ahead of demand and kept, token in memory
    /// only, so a start skips `POST /user/runners` on its critical path
    /// (`runners/reconciler/stock.rs`); 0 (the default) keeps none. Like
    /// sizing, it changes nothing in the runners.
    pub stock: u32,
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
    /// The pool without its sizing (`max_runners`, `idle_min`,
    /// `idle_timeout`, `schedule`), its `wait_objective` and its `registry`
    /// credentials (used to pull, not part of a runner): what each of its
    /// runners is made of.
    pub fn runner_spec(&self) -> Pool {
        Pool {
            max_runners: 0,
            idle_min: 0,
            idle_timeout: Duration::ZERO,
            schedule: Vec::new(),
            wait_objective: None,
            stock: 0,
            registry: None,
            ..self.clone()
        }
    }

    /// Whether `other` makes the same runners (differing at most in sizing
    /// or `wait_objective`).
    /// Field by field without cloning (the reconciler asks for every active
    /// runner on every pass); the exhaustive pattern makes a new field a
    /// compile error here until it is sorted into spec or sizing.
    pub fn makes_same_runners_as(&self, other: &Pool) -> bool {
        let Pool {
            name,
            tags,
            run_untagged,
            arch,
            agent_selector,
            gpu,
            image,
            images,
            helper_image,
            command,
            env,
            cpu_limit,
            mem_limit,
            max_runners: _,
            idle_min: _,
            idle_timeout: _,
            runner_type,
            network_mode,
            mounts,
            docker_socket,
            docker_cache,
            schedule: _,
            wait_objective: _,
            stock: _,
            registry: _,
        } = self;
        *name == other.name
            && *tags == other.tags
            && *run_untagged == other.run_untagged
            && *arch == other.arch
            && *agent_selector == other.agent_selector
            && *gpu == other.gpu
            && *image == other.image
            && *images == other.images
            && *helper_image == other.helper_image
            && *command == other.command
            && *env == other.env
            && *cpu_limit == other.cpu_limit
            && *mem_limit == other.mem_limit
            && *runner_type == other.runner_type
            && *network_mode == other.network_mode
            && *mounts == other.mounts
            && *docker_socket == other.docker_socket
            && *docker_cache == other.docker_cache
    }

    /// The runner image for an agent of architecture `arch`.
    pub fn image_for(&self, arch: Arch) -> &str {
        self.images.get(&arch).unwrap_or(&self.image)
    }

    /// Whether the pool's runners carry `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}
