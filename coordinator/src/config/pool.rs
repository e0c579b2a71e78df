//! The `[[pools]]` config schema: how a [`Pool`] (the scheduler's plain
//! type) is read from and written to TOML, its defaults, the default
//! command, and validation ([`PoolError`]).
//!
//! ```toml
//! [[pools]]
//! name = "arm64"
//! tags = ["arm64"]
//! arch = "arm64"            # normalised to aarch64
//! cpu_limit = 2.0
//! mem_limit = "4GiB"
//! max_runners = 4
//! idle_min = 1
//! idle_timeout = "5m"
//!
//! [[pools]]
//! name = "cuda"
//! tags = ["gpu", "nvidia"]
//! arch = "x86_64"
//! gpu = { vendor = "nvidia", count = 1, min_memory = "16GiB" }
//! runner_type = "group"
//! group_id = 42
//!
//! [[pools]]
//! name = "deploy"
//! tags = ["deploy"]
//! arch = "x86_64"
//! agent_selector = { trust = "deploy" }   # only agents an operator labelled so
//! wait_objective = "30s"    # track the share of jobs whose runner took them within 30 s
//! stock = 2                 # two GitLab runners created ahead: a start skips POST /user/runners
//! image = "registry.example:5000/ci/runner:v18"
//! registry = { username = "ci", password_file = "/etc/autogit/registry-password" }
//! ```
//!
//! `agent_selector` pairs are trust labels (`scheduler/labels.rs`): only
//! labels set on the coordinator (join token, `agent label set`) meet them,
//! never labels an agent reports.
//!
//! Unknown keys are errors. Defaults for omitted keys are listed on [`Pool`].
//! The config holds no pools? [`pools_or_defaults`] supplies
//! [`Pool::builtin_defaults`]. Deserialising checks only what serde must
//! (types, `runner_type` ids); call [`validate_pools`] once after loading: its
//! errors name the pool and the key.
//!
//! `command` is the container's command (Docker `Cmd`), i.e. the arguments to
//! the image's entrypoint; the official `gitlab/gitlab-runner` image's
//! entrypoint runs `gitlab-runner "$@"`. `command` and `env` values are
//! templates (see [`crate::runners::template`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::runners::spec::DOCKER_SOCKET;
use crate::runners::template;
use crate::scheduler::bytesize::{ByteSize, GIB, MIB};
use crate::scheduler::labels::{self, Labels};
use crate::scheduler::schedule::{MAX_WINDOWS, WindowError};
use crate::scheduler::{Arch, Archs, GpuRequirement, GpuVendor, Mount, Pool, RunnerType, Window};

/// The runner image used when a pool names none. Pin a version with `image`
/// in production.
pub const DEFAULT_RUNNER_IMAGE: &str = "gitlab/gitlab-runner:latest";
/// The image for jobs that name none (`--docker-image`). Alpine publishes
/// x86_64, aarch64 and riscv64 images.
pub const DEFAULT_JOB_IMAGE: &str = "alpine:3.20";
/// `--wait-timeout` of the default command: a runner that got no job for an
/// hour exits by itself, so runners orphaned by a dead coordinator do not
/// live forever. The coordinator replaces warm (`idle_min`) runners that exit.
pub const DEFAULT_WAIT_TIMEOUT_S: u64 = 3600;
/// The default command's flag that makes the docker executor's builds volume
/// temporary, so a one-job runner leaves no cache volume behind; left out
/// when the pool sets `docker_cache = true`.
pub const DISABLE_CACHE_FLAG: &str = "--docker-disable-cache";

/// The helper image flavour the default command asks for when a pool may
/// run on riscv64: runners before 18.8 default to a riscv64 helper tag that
/// was never published (`../shared/docs/gitlab-facts.md`, "Helper images");
/// `alpine-latest` exists for every architecture. A pool's `helper_image`
/// takes precedence over it.
pub const RISCV64_HELPER_FLAVOR: &str = "alpine-latest";

/// Why `{runner_token}` may not be part of a command, and what to do instead.
const TOKEN_IN_ARGV: &str = "uses {runner_token}, which would put the runner's secret token on \
     the container's command line, readable by every local user of the build host \
     (/proc/*/cmdline) and in `docker inspect`; remove it: every runner container gets the token \
     in the CI_SERVER_TOKEN environment variable (and the URL in CI_SERVER_URL), which \
     `gitlab-runner run-single` reads in place of --token and --url (or pass it under another \
     name with env = { NAME = \"{runner_token}\" })";

const DEFAULT_CPU_LIMIT: f64 = 2.0;
const DEFAULT_MEM_LIMIT: ByteSize = ByteSize(4 * GIB);
const DEFAULT_MAX_RUNNERS: u32 = 4;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Docker refuses memory limits below 6 MB.
const MIN_MEM_LIMIT: ByteSize = ByteSize(6 * MIB);
/// The most GitLab runners a pool may keep in stock (`stock`).
pub const MAX_STOCK: u32 = 64;

/// The longest `wait_objective`: it is measured over at most 24 hours.
pub const MAX_WAIT_OBJECTIVE: Duration = Duration::from_secs(24 * 3600);

/// A pool definition that is not acceptable. Displays as
/// `pool 'arm64': max_runners must be >= idle_min (1 < 2)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pool '{pool}': {key} {problem}")]
pub struct PoolError {
    pub pool: String,
    /// The config key at fault, e.g. `max_runners`, `env.HOME`, `command[3]`.
    pub key: String,
    pub problem: String,
}

impl PoolError {
    pub(super) fn new(pool: &str, key: impl Into<String>, problem: impl Into<String>) -> Self {
        PoolError {
            pool: pool.to_owned(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The command a pool runs when its config sets none: the official runner
/// image's `run-single` for exactly one job with the docker executor, plus
/// the flags that hand the pool's GPUs to the job container. The GitLab URL
/// and the runner token are not in it: every runner container gets them as
/// `CI_SERVER_URL` and `CI_SERVER_TOKEN` (`runners/spec.rs`), which
/// `run-single` reads like `--url` and `--token`. It disables the
/// docker executor's cache ([`DISABLE_CACHE_FLAG`]); see [`Pool::docker_cache`].
/// A pool that may run on riscv64 also asks for the `alpine-latest` helper
/// flavour ([`RISCV64_HELPER_FLAVOR`]).
pub fn default_command(gpu: Option<&GpuRequirement>, archs: Archs) -> Vec<String> {
    let wait = DEFAULT_WAIT_TIMEOUT_S.to_string();
    let mut cmd: Vec<&str> = vec![
        "run-single",
        "--executor",
        "docker",
        "--docker-image",
        DEFAULT_JOB_IMAGE,
        "--max-builds",
        "1",
        "--wait-timeout",
        &wait,
        DISABLE_CACHE_FLAG,
    ];
    match gpu.map(|g| g.vendor) {
        Some(GpuVendor::Nvidia) => cmd.extend(["--docker-gpus", "{docker_gpus}"]),
        Some(GpuVendor::Amd) => cmd.extend([
            "--docker-devices",
            "/dev/kfd",
            "--docker-devices",
            "{render_node}",
        ]),
        Some(GpuVendor::Intel) => cmd.extend(["--docker-devices", "{render_node}"]),
        None => {}
    }
    if archs.contains(Arch::Riscv64) {
        cmd.extend(["--docker-helper-image-flavor", RISCV64_HELPER_FLAVOR]);
    }
    cmd.into_iter().map(str::to_owned).collect()
}

impl Pool {
    /// A pool with every optional key at its default.
    pub fn new(name: &str, tags: &[&str], arch: Arch) -> Pool {
        Pool {
            name: name.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            run_untagged: false,
            arch: Archs::one(arch),
            agent_selector: Labels::new(),
            gpu: None,
            image: DEFAULT_RUNNER_IMAGE.to_owned(),
            images: BTreeMap::new(),
            helper_image: BTreeMap::new(),
            command: default_command(None, Archs::one(arch)),
            env: BTreeMap::new(),
            cpu_limit: DEFAULT_CPU_LIMIT,
            mem_limit: DEFAULT_MEM_LIMIT,
            max_runners: DEFAULT_MAX_RUNNERS,
            idle_min: 0,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            runner_type: RunnerType::Instance,
            network_mode: None,
            mounts: Vec::new(),
            docker_socket: true,
            docker_cache: false,
            schedule: Vec::new(),
            wait_objective: None,
            stock: 0,
            registry: None,
        }
    }

    /// Sets the GPU requirement and the matching default command.
    pub fn with_gpu(mut self, vendor: GpuVendor, count: u32) -> Pool {
        let gpu = GpuRequirement {
            vendor,
            count,
            min_memory: None,
        };
        self.command = default_command(Some(&gpu), self.arch);
        self.gpu = Some(gpu);
        self
    }

    /// The pools used when the config defines none:
    ///
    /// | name      | tags               | arch    | GPU        | cpu | memory |
    /// |-----------|--------------------|---------|------------|-----|--------|
    /// | `amd64`   | `amd64`            | x86_64  | -          | 2   | 4 GiB  |
    /// | `arm64`   | `arm64`            | aarch64 | -          | 2   | 4 GiB  |
    /// | `riscv64` | `riscv64`          | riscv64 | -          | 1   | 2 GiB  |
    /// | `nvidia`  | `gpu`, `nvidia`    | x86_64  | 1 x NVIDIA | 4   | 16 GiB |
    /// | `amd`     | `gpu`, `amd`       | x86_64  | 1 x AMD    | 4   | 16 GiB |
    ///
    /// The GPU pools are x86_64 because a job tagged only `gpu, nvidia`
    /// says nothing about the architecture and most CUDA/ROCm images are
    /// x86_64; define e.g. `nvidia-arm64` with tags `gpu, nvidia, arm64` for
    /// aarch64 GPU hosts. None takes untagged jobs. All: `max_runners = 4`,
    /// `idle_min = 0`, `idle_timeout = 5m`, instance runners, docker executor.
    pub fn builtin_defaults() -> Vec<Pool> {
        let mut riscv = Pool::new("riscv64", &["riscv64"], Arch::Riscv64);
        riscv.cpu_limit = 1.0;
        riscv.mem_limit = ByteSize::gib(2);
        let gpu_pool = |name: &str, vendor| {
            let mut p = Pool::new(name, &["gpu", name], Arch::X86_64).with_gpu(vendor, 1);
            p.cpu_limit = 4.0;
            p.mem_limit = ByteSize::gib(16);
            p
        };
        vec![
            Pool::new("amd64", &["amd64"], Arch::X86_64),
            Pool::new("arm64", &["arm64"], Arch::Aarch64),
            riscv,
            gpu_pool("nvidia", GpuVendor::Nvidia),
            gpu_pool("amd", GpuVendor::Amd),
        ]
    }

    /// Checks one pool on its own. Every error names the pool and the key.
    pub fn validate(&self) -> Result<(), PoolError> {
        let err = |key: &str, problem: String| Err(PoolError::new(&self.name, key, problem));
        if let Some(problem) = name_problem(&self.name) {
            return err("name", problem);
        }
        let mut seen = BTreeSet::new();
        for tag in &self.tags {
            if tag.trim().is_empty() {
                return err("tags", "must not contain an empty tag".into());
            }
            if tag.trim() != tag || tag.contains(',') {
                return err(
                    "tags",
                    format!("tag {tag:?} must not contain commas or surrounding spaces"),
                );
            }
            if !seen.insert(tag.as_str()) {
                return err("tags", format!("lists {tag:?} twice"));
            }
        }
        if self.tags.is_empty() && !self.run_untagged {
            return err(
                "tags",
                "is empty and run_untagged = false, so no job could ever match this pool".into(),
            );
        }
        if self.agent_selector.len() > labels::MAX_LABELS {
            return err(
                "agent_selector",
                format!("has more than {} labels", labels::MAX_LABELS),
            );
        }
        for (k, v) in &self.agent_selector {
            let bad = labels::check_key(k).and_then(|()| labels::check_value(k, v));
            if let Err(e) = bad {
                return err(&format!("agent_selector.{k}"), e.to_string());
            }
        }
        if self.gpu.as_ref().is_some_and(|g| g.count == 0) {
            return err("gpu.count", "must be >= 1 (omit `gpu` for no GPU)".into());
        }
        let not_a_reference = |i: &str| i.trim().is_empty() || i.contains(char::is_whitespace);
        if not_a_reference(&self.image) {
            return err(
                "image",
                format!("{:?} is not an image reference", self.image),
            );
        }
        for (key, map) in [
            ("image", &self.images),
            ("helper_image", &self.helper_image),
        ] {
            for (arch, image) in map {
                if !self.arch.contains(*arch) {
                    return err(
                        &format!("{key}.{arch}"),
                        format!(
                            "names {arch}, which is not one of the pool's arch ({})",
                            self.arch
                        ),
                    );
                }
                if not_a_reference(image) {
                    return err(
                        &format!("{key}.{arch}"),
                        format!("{image:?} is not an image reference"),
                    );
                }
            }
        }
        if !self.images.is_empty()
            && let Some(missing) = self.arch.iter().find(|a| !self.images.contains_key(a))
        {
            return err(
                "image",
                format!(
                    "has no entry for {missing}, one of the pool's arch: give one image per architecture, or one image for all"
                ),
            );
        }
        for (i, arg) in self.command.iter().enumerate() {
            let key = format!("command[{i}]");
            self.check_template(&key, arg)?;
            if template::placeholders_in(arg).is_ok_and(|names| names.contains(&"runner_token")) {
                return err(&key, TOKEN_IN_ARGV.into());
            }
        }
        for (name, value) in &self.env {
            let valid_name = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return err(
                    &format!("env.{name}"),
                    "is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)".into(),
                );
            }
            self.check_template(&format!("env.{name}"), value)?;
        }
        if !(self.cpu_limit.is_finite() && self.cpu_limit >= 0.001) {
            return err(
                "cpu_limit",
                format!("must be a number of CPUs >= 0.001, got {}", self.cpu_limit),
            );
        }
        if self.mem_limit < MIN_MEM_LIMIT {
            return err(
                "mem_limit",
                format!(
                    "must be at least {MIN_MEM_LIMIT} (Docker's minimum), got {}",
                    self.mem_limit
                ),
            );
        }
        if self.max_runners == 0 {
            return err("max_runners", "must be >= 1".into());
        }
        if self.max_runners < self.idle_min {
            return err(
                "max_runners",
                format!(
                    "must be >= idle_min ({} < {})",
                    self.max_runners, self.idle_min
                ),
            );
        }
        if self.idle_timeout.is_zero() {
            return err("idle_timeout", "must be longer than zero".into());
        }
        if self.stock > MAX_STOCK {
            return err(
                "stock",
                format!(
                    "must be at most {MAX_STOCK} (each is a GitLab runner kept unused), got {}",
                    self.stock
                ),
            );
        }
        for (i, w) in self.schedule.iter().enumerate() {
            if w.idle_min.is_none() && w.max_runners.is_none() {
                return err(
                    &format!("schedule[{i}]"),
                    "sets neither idle_min nor max_runners, so it would change nothing".into(),
                );
            }
            if w.max_runners == Some(0) {
                return err(&format!("schedule[{i}].max_runners"), "must be >= 1".into());
            }
            let cap = w.max_runners.unwrap_or(self.max_runners);
            if let Some(idle_min) = w.idle_min
                && idle_min > cap
            {
                return err(
                    &format!("schedule[{i}].idle_min"),
                    format!(
                        "must be <= max_runners while the window is active ({idle_min} > {cap})"
                    ),
                );
            }
        }
        if let Some(objective) = self.wait_objective {
            if objective.is_zero() {
                return err("wait_objective", "must be longer than zero".into());
            }
            if objective > MAX_WAIT_OBJECTIVE {
                return err(
                    "wait_objective",
                    format!(
                        "must be at most {} (the longest window it is measured over), got {}",
                        humantime::format_duration(MAX_WAIT_OBJECTIVE),
                        humantime::format_duration(objective)
                    ),
                );
            }
        }
        match self.runner_type {
            RunnerType::Group { group_id: 0 } => return err("group_id", "must be >= 1".into()),
            RunnerType::Project { project_id: 0 } => {
                return err("project_id", "must be >= 1".into());
            }
            _ => {}
        }
        let bad_mode = self
            .network_mode
            .as_ref()
            .filter(|m| m.is_empty() || m.contains(char::is_whitespace));
        if let Some(mode) = bad_mode {
            return err("network_mode", format!("{mode:?} is not a network mode"));
        }
        let mut targets = BTreeSet::new();
        for (i, m) in self.mounts.iter().enumerate() {
            let key = format!("mounts[{i}]");
            if m.source.is_empty() {
                return err(&key, "needs a source".into());
            }
            if !m.target.starts_with('/') {
                return err(
                    &key,
                    format!("target {:?} must be an absolute path", m.target),
                );
            }
            if self.docker_socket && m.target == DOCKER_SOCKET {
                return err(
                    &key,
                    format!("mounts {DOCKER_SOCKET}, which docker_socket = true already does"),
                );
            }
            if !targets.insert(m.target.as_str()) {
                return err(&key, format!("target {:?} is mounted twice", m.target));
            }
        }
        Ok(())
    }

    /// Template syntax and names, and placeholders that need a GPU kind.
    fn check_template(&self, key: &str, value: &str) -> Result<(), PoolError> {
        let names = template::placeholders_in(value)
            .map_err(|e| PoolError::new(&self.name, key, e.to_string()))?;
        let vendor = self.gpu.as_ref().map(|g| g.vendor);
        let count = self.gpu.as_ref().map_or(0, |g| g.count);
        for name in names {
            let problem = match name {
                "gpu_uuids" if vendor.is_none() => Some("uses {gpu_uuids} but the pool has no gpu"),
                "docker_gpus" if vendor != Some(GpuVendor::Nvidia) => {
                    Some("uses {docker_gpus}, which needs gpu.vendor = \"nvidia\"")
                }
                "render_node"
                    if !vendor.is_some_and(GpuVendor::uses_device_nodes) || count != 1 =>
                {
                    Some(
                        "uses {render_node}, which needs gpu.vendor = \"amd\" or \"intel\" and gpu.count = 1",
                    )
                }
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(PoolError::new(&self.name, key, problem));
            }
        }
        Ok(())
    }
}

fn name_problem(name: &str) -> Option<String> {
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok_start || !ok_rest || name.len() > 63 {
        Some(format!(
            "{name:?} must be 1-63 characters of [a-z0-9_-], starting with a letter or digit"
        ))
    } else {
        None
    }
}

/// Checks every pool and the pools together: names are unique, and no pool
/// is shadowed by an earlier one with the same tags (every job would be
/// counted for the earlier pool, so the later one would never start a
/// runner). Returns the first problem.
pub fn validate_pools(pools: &[Pool]) -> Result<(), PoolError> {
    let mut names = BTreeSet::new();
    for (i, pool) in pools.iter().enumerate() {
        pool.validate()?;
        if !names.insert(pool.name.as_str()) {
            return Err(PoolError::new(
                &pool.name,
                "name",
                "is used by more than one pool",
            ));
        }
        let tags: BTreeSet<&str> = pool.tags.iter().map(String::as_str).collect();
        let shadowed_by = pools[..i].iter().find(|earlier| {
            let same = earlier
                .tags
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<_>>()
                == tags;
            // A later pool that takes untagged jobs when the earlier one
            // does not still receives the untagged demand.
            let adds_untagged = pool.run_untagged && !earlier.run_untagged;
            same && !adds_untagged
        });
        if let Some(earlier) = shadowed_by {
            return Err(PoolError::new(
                &pool.name,
                "tags",
                format!(
                    "are the same as pool '{}''s, which comes first: every matching job would be \
                     counted for '{}' and this pool would never start a runner",
                    earlier.name, earlier.name
                ),
            ));
        }
    }
    Ok(())
}

/// The configured pools, or [`Pool::builtin_defaults`] when there are none.
pub fn pools_or_defaults(configured: Vec<Pool>) -> Vec<Pool> {
    if configured.is_empty() {
        Pool::builtin_defaults()
    } else {
        configured
    }
}

// ------------------------------------------------------------ serde form

/// The TOML shape of a pool: `runner_type` with flat `group_id` /
/// `project_id`, and an optional `command` whose default depends on `gpu`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolToml {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    run_untagged: bool,
    arch: OneOrMany<Arch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    agent_selector: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gpu: Option<GpuRequirement>,
    #[serde(default = "default_image")]
    image: ImageToml,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    helper_image: Option<ImageToml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default = "default_cpu_limit")]
    cpu_limit: f64,
    #[serde(default = "default_mem_limit")]
    mem_limit: ByteSize,
    #[serde(default = "default_max_runners")]
    max_runners: u32,
    #[serde(default)]
    idle_min: u32,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(default)]
    runner_type: RunnerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    project_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network_mode: Option<String>,
    #[serde(default)]
    mounts: Vec<Mount>,
    #[serde(default = "default_true")]
    docker_socket: bool,
    #[serde(default)]
    docker_cache: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    schedule: Vec<WindowToml>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    wait_objective: Option<Duration>,
    #[serde(default, skip_serializing_if = "is_zero")]
    stock: u32,
    /// `registry = { username, password_file | password_env }` (`config/registry.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<super::registry::RegistryToml>,
}

/// The TOML shape of one `[[pools.schedule]]` window.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowToml {
    cron: String,
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_runners: Option<u32>,
}

fn utc() -> String {
    "UTC".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RunnerKind {
    #[default]
    #[serde(alias = "instance_type")]
    Instance,
    #[serde(alias = "group_type")]
    Group,
    #[serde(alias = "project_type")]
    Project,
}

/// `arch = "x86_64"` or `arch = ["x86_64", "aarch64"]`.
#[derive(Serialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// `image = "…"` for every architecture, or `image = { x86_64 = "…", … }`.
#[derive(Serialize)]
#[serde(untagged)]
enum ImageToml {
    One(String),
    PerArch(BTreeMap<Arch, String>),
}

// Hand-written rather than `#[serde(untagged)]`, which would replace the
// reason (an unknown architecture's name) with "did not match any variant".
impl<'de> Deserialize<'de> for OneOrMany<Arch> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany<Arch>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an architecture or a list of architectures")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map(OneOrMany::One).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(a) = seq.next_element::<Arch>()? {
                    all.push(a);
                }
                Ok(OneOrMany::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ImageToml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ImageToml;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an image reference, or a table of one per architecture")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ImageToml::One(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut per_arch = BTreeMap::new();
                while let Some((arch, image)) = map.next_entry::<Arch, String>()? {
                    per_arch.insert(arch, image);
                }
                Ok(ImageToml::PerArch(per_arch))
            }
        }
        d.deserialize_any(V)
    }
}

fn default_image() -> ImageToml {
    ImageToml::One(DEFAULT_RUNNER_IMAGE.to_owned())
}
fn default_cpu_limit() -> f64 {
    DEFAULT_CPU_LIMIT
}
fn default_mem_limit() -> ByteSize {
    DEFAULT_MEM_LIMIT
}
fn default_max_runners() -> u32 {
    DEFAULT_MAX_RUNNERS
}
fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}
fn default_true() -> bool {
    true
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TryFrom<PoolToml> for Pool {
    type Error = PoolError;

    fn try_from(t: PoolToml) -> Result<Pool, PoolError> {
        let err = |key: &str, problem: &str| Err(PoolError::new(&t.name, key, problem));
        let runner_type = match (t.runner_type, t.group_id, t.project_id) {
            (RunnerKind::Instance, None, None) => RunnerType::Instance,
            (RunnerKind::Group, Some(group_id), None) => RunnerType::Group { group_id },
            (RunnerKind::Project, None, Some(project_id)) => RunnerType::Project { project_id },
            (RunnerKind::Group, None, _) => {
                return err("group_id", "is required when runner_type = \"group\"");
            }
            (RunnerKind::Project, _, None) => {
                return err("project_id", "is required when runner_type = \"project\"");
            }
            (_, Some(_), _) => {
                return err("group_id", "is only allowed with runner_type = \"group\"");
            }
            (_, _, Some(_)) => {
                return err(
                    "project_id",
                    "is only allowed with runner_type = \"project\"",
                );
            }
        };
        let archs = match &t.arch {
            OneOrMany::One(a) => Archs::one(*a),
            OneOrMany::Many(list) => match Archs::of(list.iter().copied()) {
                Some(a) => a,
                None => return err("arch", "must name at least one architecture"),
            },
        };
        let (image, images) = match t.image {
            ImageToml::One(image) => (image, BTreeMap::new()),
            ImageToml::PerArch(images) => {
                let first = archs
                    .iter()
                    .find_map(|a| images.get(&a).cloned())
                    .or_else(|| images.values().next().cloned())
                    .unwrap_or_default();
                (first, images)
            }
        };
        let helper_image = match t.helper_image {
            None => BTreeMap::new(),
            Some(ImageToml::One(h)) => archs.iter().map(|a| (a, h.clone())).collect(),
            Some(ImageToml::PerArch(map)) => map,
        };
        let command = match t.command {
            Some(command) => command,
            None => {
                if let Some(gpu) = t
                    .gpu
                    .as_ref()
                    .filter(|g| g.vendor.uses_device_nodes() && g.count > 1)
                {
                    return err(
                        "command",
                        &format!(
                            "must be set for a pool with {} {} GPUs: the default command passes one render node",
                            gpu.count, gpu.vendor
                        ),
                    );
                }
                let mut cmd = default_command(t.gpu.as_ref(), archs);
                if t.docker_cache {
                    cmd.retain(|a| a != DISABLE_CACHE_FLAG);
                }
                cmd
            }
        };
        if t.schedule.len() > MAX_WINDOWS {
            return err(
                "schedule",
                &format!(
                    "has {} windows; at most {MAX_WINDOWS} are allowed",
                    t.schedule.len()
                ),
            );
        }
        let mut schedule = Vec::with_capacity(t.schedule.len());
        for (i, w) in t.schedule.iter().enumerate() {
            let window = Window::new(&w.cron, &w.timezone, w.idle_min, w.max_runners);
            match window {
                Ok(window) => schedule.push(window),
                Err(e @ WindowError::Cron(_)) => {
                    return err(&format!("schedule[{i}].cron"), &e.to_string());
                }
                Err(e @ WindowError::TimeZone(_)) => {
                    return err(&format!("schedule[{i}].timezone"), &e.to_string());
                }
            }
        }
        let registry = t.registry.map(|r| r.load(&t.name)).transpose()?;
        Ok(Pool {
            name: t.name,
            tags: t.tags,
            run_untagged: t.run_untagged,
            arch: archs,
            agent_selector: t.agent_selector,
            gpu: t.gpu,
            image,
            images,
            helper_image,
            command,
            env: t.env,
            cpu_limit: t.cpu_limit,
            mem_limit: t.mem_limit,
            max_runners: t.max_runners,
            idle_min: t.idle_min,
            idle_timeout: t.idle_timeout,
            runner_type,
            network_mode: t.network_mode,
            mounts: t.mounts,
            docker_socket: t.docker_socket,
            docker_cache: t.docker_cache,
            schedule,
            wait_objective: t.wait_objective,
            stock: t.stock,
            registry,
        })
    }
}

impl From<Pool> for PoolToml {
    fn from(p: Pool) -> PoolToml {
        let (runner_type, group_id, project_id) = match p.runner_type {
            RunnerType::Instance => (RunnerKind::Instance, None, None),
            RunnerType::Group { group_id } => (RunnerKind::Group, Some(group_id), None),
            RunnerType::Project { project_id } => (RunnerKind::Project, None, Some(project_id)),
        };
        PoolToml {
            name: p.name,
            tags: p.tags,
            run_untagged: p.run_untagged,
            arch: if p.arch.len() == 1 {
                OneOrMany::One(p.arch.iter().next().unwrap_or(Arch::X86_64))
            } else {
                OneOrMany::Many(p.arch.iter().collect())
            },
            agent_selector: p.agent_selector,
            gpu: p.gpu,
            image: if p.images.is_empty() {
                ImageToml::One(p.image)
            } else {
                ImageToml::PerArch(p.images)
            },
            helper_image: (!p.helper_image.is_empty())
                .then_some(ImageToml::PerArch(p.helper_image)),
            command: Some(p.command),
            env: p.env,
            cpu_limit: p.cpu_limit,
            mem_limit: p.mem_limit,
            max_runners: p.max_runners,
            idle_min: p.idle_min,
            idle_timeout: p.idle_timeout,
            runner_type,
            group_id,
            project_id,
            network_mode: p.network_mode,
            mounts: p.mounts,
            docker_socket: p.docker_socket,
            docker_cache: p.docker_cache,
            schedule: p
                .schedule
                .into_iter()
                .map(|w| WindowToml {
                    cron: w.cron_text,
                    timezone: w.timezone.name().to_owned(),
                    idle_min: w.idle_min,
                    max_runners: w.max_runners,
                })
                .collect(),
            wait_objective: p.wait_objective,
            stock: p.stock,
            registry: p.registry.map(Into::into),
        }
    }
}

impl Serialize for Pool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PoolToml::from(self.clone()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pool, D::Error> {
        Pool::try_from(PoolToml::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The TOML shape of `gpu = { vendor, count, min_memory }`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuToml {
    vendor: GpuVendor,
    #[serde(default = "one")]
    count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_memory: Option<ByteSize>,
}

fn one() -> u32 {
    1
}

impl Serialize for GpuRequirement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        GpuToml {
            vendor: self.vendor,
            count: self.count,
            min_memory: self.min_memory,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for GpuRequirement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GpuRequirement, D::Error> {
        let t = GpuToml::deserialize(d)?;
        Ok(GpuRequirement {
            vendor: t.vendor,
            count: t.count,
            min_memory: t.min_memory,
        })
    }
}

/// The TOML shape of one `mounts` entry.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MountToml {
    source: String,
    target: String,
    #[serde(default)]
    read_only: bool,
}

impl Serialize for Mount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MountToml {
            source: self.source.clone(),
            target: self.target.clone(),
            read_only: self.read_only,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Mount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mount, D::Error> {
        let t = MountToml::deserialize(d)?;
        Ok(Mount {
            source: t.source,
            target: t.target,
            read_only: t.read_only,
        })
    }
}
