//! What the coordinator asks for: [`RunnerSpec`] (from `StartRunner`) and
//! [`StopRequest`] (from `StopRunner`), validated on receipt.
//!
//! Prost types stop here. Everything after this module works with strict
//! domain types: a runner id is a UUID, paths are absolute, env names are
//! valid, and env values are secrets (the runner token travels in the env),
//! so no `Debug` or error message in this module ever prints one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use autogit_proto::v1 as pb;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

/// Label keys under this prefix belong to AutoGit; a spec may not set them.
pub const RESERVED_LABEL_PREFIX: &str = "autogit.";

/// Docker refuses memory limits below 6 MiB; say so before Docker does.
pub const MIN_MEMORY_LIMIT_BYTES: u64 = 6 * 1024 * 1024;

/// The most CPUs a spec may ask for (keeps `NanoCpus` far from overflow).
pub const MAX_CPU_LIMIT: f64 = 4096.0;

/// Signals a spec may name as its stop signal.
const KNOWN_SIGNALS: &[&str] = &[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGCONT",
    "SIGSTOP", "SIGWINCH",
];

/// A field of `StartRunner` / `StopRunner` that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct SpecError {
    /// Path of the bad field, e.g. `spec.env[2].name`.
    pub field: String,
    /// What is wrong with it (never contains a secret value).
    pub reason: String,
}

impl SpecError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The id of one runner (and of the command that started it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunnerId(Uuid);

impl RunnerId {
    /// A fresh random id (tests, tools).
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The Docker container name used for this runner.
    pub fn container_name(&self) -> String {
        format!("autogit-runner-{}", self.0)
    }
}

impl From<Uuid> for RunnerId {
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

impl fmt::Display for RunnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for RunnerId {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_runner_id("runner_id", s)
    }
}

/// One environment variable; the value is a secret.
#[derive(Clone)]
pub struct EnvVar {
    /// Variable name (`[A-Za-z_][A-Za-z0-9_]*`).
    pub name: String,
    /// Variable value (may be the runner token).
    pub value: SecretString,
}

impl EnvVar {
    /// `NAME=value` as Docker wants it. Only for the Docker request body.
    pub(crate) fn to_docker(&self) -> String {
        format!("{}={}", self.name, self.value.expose_secret())
    }
}

impl fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=<redacted>", self.name)
    }
}

/// Credentials for pulling a runner's image (the pool's `registry` on the
/// coordinator). The password is a secret: `Debug` hides it, no error
/// message names it, and it only leaves the agent in the pull request's
/// `X-Registry-Auth` header to the local Docker engine.
#[derive(Clone)]
pub struct RegistryAuth {
    /// Registry user name.
    pub username: String,
    /// Registry password or token.
    pub password: SecretString,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

/// Which GPUs the container may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuAccess {
    /// NVIDIA GPUs (or MIG instances) by UUID, handed to the `nvidia` driver.
    pub nvidia_uuids: Vec<String>,
    /// AMD/Intel device nodes (`/dev/kfd`, `/dev/dri/renderD128`, `/dev/dri`).
    pub device_paths: Vec<PathBuf>,
}

impl GpuAccess {
    /// True when no GPU access is requested.
    pub fn is_empty(&self) -> bool {
        self.nvidia_uuids.is_empty() && self.device_paths.is_empty()
    }
}

/// A validated request to run one runner container.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    /// The runner (and command) id.
    pub runner_id: RunnerId,
    /// The pool the runner belongs to.
    pub pool: String,
    /// Image reference, e.g. `gitlab/gitlab-runner:v18.2.0`.
    pub image: String,
    /// Command; empty means the image's default.
    pub command: Vec<String>,
    /// Environment (values redacted in `Debug`).
    pub env: Vec<EnvVar>,
    /// CPU limit in CPUs; `None` = unlimited.
    pub cpu_limit: Option<f64>,
    /// Memory limit in bytes; `None` = unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// GPU access.
    pub gpus: GpuAccess,
    /// Extra labels (never under `autogit.`).
    pub labels: BTreeMap<String, String>,
    /// Docker network mode (`host`, `bridge`, a network name); `None` = Docker's default.
    pub network_mode: Option<String>,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// Signal for a graceful stop, normalised to `SIGxxx`; `None` = Docker's default.
    pub stop_signal: Option<String>,
    /// The GitLab short-token candidates of the runner's `glrt-` token, if
    /// the command or env carries one (see `leftovers::short_tokens`).
    /// Not secret; used to find the docker executor's leftovers.
    pub short_tokens: Vec<String>,
    /// Credentials for pulling `image`; `None` pulls anonymously.
    pub registry_auth: Option<RegistryAuth>,
}

impl RunnerSpec {
    /// A minimal spec (tests, tools): an image and nothing else.
    pub fn new(runner_id: RunnerId, pool: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            runner_id,
            pool: pool.into(),
            image: image.into(),
            command: Vec::new(),
            env: Vec::new(),
            cpu_limit: None,
            memory_limit_bytes: None,
            gpus: GpuAccess::default(),
            labels: BTreeMap::new(),
            network_mode: None,
            mounts: Vec::new(),
            stop_signal: None,
            short_tokens: Vec::new(),
            registry_auth: None,
        }
    }
}

impl TryFrom<pb::StartRunner> for RunnerSpec {
    type Error = SpecError;

    fn try_from(msg: pb::StartRunner) -> Result<Self, Self::Error> {
        let runner_id = parse_runner_id("runner_id", &msg.runner_id)?;
        let pool = parse_pool(&msg.pool)?;
        let spec = msg.spec.ok_or_else(|| SpecError::new("spec", "missing"))?;

        let image = parse_image(&spec.image)?;
        let command = spec.command;
        if let Some(i) = command.iter().position(|a| a.contains('\0')) {
            return Err(SpecError::new(
                format!("spec.command[{i}]"),
                "contains a NUL byte",
            ));
        }

        let mut env = Vec::with_capacity(spec.env.len());
        let mut seen = BTreeSet::new();
        for (i, var) in spec.env.into_iter().enumerate() {
            let field = format!("spec.env[{i}].name");
            if !is_env_name(&var.name) {
                return Err(SpecError::new(
                    field,
                    format!(
                        "{:?} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
                        var.name
                    ),
                ));
            }
            if !seen.insert(var.name.clone()) {
                return Err(SpecError::new(
                    field,
                    format!("{:?} is set twice", var.name),
                ));
            }
            if var.value.contains('\0') {
                return Err(SpecError::new(
                    format!("spec.env[{i}].value"),
                    "contains a NUL byte",
                ));
            }
            env.push(EnvVar {
                name: var.name,
                value: SecretString::from(var.value),
            });
        }

        let cpu_limit = parse_cpu_limit(spec.cpu_limit)?;
        let memory_limit_bytes = parse_memory_limit(spec.memory_limit_bytes)?;
        let gpus = parse_gpus(spec.gpus.unwrap_or_default())?;

        let mut labels = BTreeMap::new();
        for (key, value) in spec.labels {
            let field = format!("spec.labels[{key:?}]");
            if key.is_empty() || key.chars().any(|c| c.is_control() || c == '=') {
                return Err(SpecError::new(
                    field,
                    "label key is empty or has '=' / control characters",
                ));
            }
            if key.starts_with(RESERVED_LABEL_PREFIX) {
                return Err(SpecError::new(
                    field,
                    format!("keys under {RESERVED_LABEL_PREFIX:?} are reserved for AutoGit"),
                ));
            }
            if value.contains('\0') {
                return Err(SpecError::new(field, "value contains a NUL byte"));
            }
            labels.insert(key, value);
        }

        let network_mode = parse_network_mode(&spec.network_mode)?;

        let mut mounts = Vec::with_capacity(spec.mounts.len());
        let mut targets = BTreeSet::new();
        for (i, m) in spec.mounts.into_iter().enumerate() {
            let source = parse_abs_path(&format!("spec.mounts[{i}].source"), &m.source)?;
            let target = parse_abs_path(&format!("spec.mounts[{i}].target"), &m.target)?;
            if target == Path::new("/") {
                return Err(SpecError::new(
                    format!("spec.mounts[{i}].target"),
                    "must not be /",
                ));
            }
            if !targets.insert(target.clone()) {
                return Err(SpecError::new(
                    format!("spec.mounts[{i}].target"),
                    format!("{} is mounted twice", target.display()),
                ));
            }
            mounts.push(BindMount {
                source,
                target,
                read_only: m.read_only,
            });
        }

        let stop_signal = parse_stop_signal(&spec.stop_signal)?;
        let registry_auth = spec.registry_auth.map(parse_registry_auth).transpose()?;
        let short_tokens = super::leftovers::find_runner_token(
            command.iter().map(String::as_str),
            env.iter().map(|e| e.value.expose_secret()),
        )
        .map(super::leftovers::short_tokens)
        .unwrap_or_default();

        Ok(Self {
            runner_id,
            pool,
            image,
            command,
            env,
            cpu_limit,
            memory_limit_bytes,
            gpus,
            labels,
            network_mode,
            mounts,
            stop_signal,
            short_tokens,
            registry_auth,
        })
    }
}

/// Registry credentials as the wire carries them. Docker sends them as
/// HTTP basic auth, so the user name may not hold a `:`; errors never
/// print the password.
pub(crate) fn parse_registry_auth(auth: pb::RegistryAuth) -> Result<RegistryAuth, SpecError> {
    let field = "spec.registry_auth.username";
    if auth.username.is_empty() {
        return Err(SpecError::new(field, "is empty"));
    }
    if auth.username.chars().any(|c| c == ':' || c.is_control()) {
        return Err(SpecError::new(field, "contains ':' or a control character"));
    }
    if auth.password.is_empty() {
        return Err(SpecError::new("spec.registry_auth.password", "is empty"));
    }
    if auth.password.contains('\0') {
        return Err(SpecError::new(
            "spec.registry_auth.password",
            "contains a NUL byte",
        ));
    }
    Ok(RegistryAuth {
        username: auth.username,
        password: SecretString::from(auth.password),
    })
}

/// A validated request to stop a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    /// Which runner.
    pub runner_id: RunnerId,
    /// Let the runner finish its job first (send its stop signal).
    pub graceful: bool,
    /// How long a graceful stop may take before the container is killed;
    /// `None` (0 on the wire) = the supervisor's configured default.
    pub grace_period: Option<Duration>,
}

impl TryFrom<pb::StopRunner> for StopRequest {
    type Error = SpecError;

    fn try_from(msg: pb::StopRunner) -> Result<Self, Self::Error> {
        Ok(Self {
            runner_id: parse_runner_id("runner_id", &msg.runner_id)?,
            graceful: msg.graceful,
            grace_period: (msg.grace_period_ms > 0)
                .then(|| Duration::from_millis(msg.grace_period_ms)),
        })
    }
}

fn parse_runner_id(field: &str, s: &str) -> Result<RunnerId, SpecError> {
    Uuid::parse_str(s)
        .map(RunnerId)
        .map_err(|_| SpecError::new(field, format!("{s:?} is not a UUID")))
}

fn parse_pool(s: &str) -> Result<String, SpecError> {
    if s.is_empty() {
        return Err(SpecError::new("pool", "must not be empty"));
    }
    if s.len() > 128 || s.chars().any(char::is_control) {
        return Err(SpecError::new(
            "pool",
            "longer than 128 bytes or has control characters",
        ));
    }
    Ok(s.to_owned())
}

fn parse_image(s: &str) -> Result<String, SpecError> {
    if s.is_empty() {
        return Err(SpecError::new("spec.image", "must not be empty"));
    }
    if s.len() > 512 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SpecError::new(
            "spec.image",
            format!("{s:?} is not an image reference (whitespace, control characters or too long)"),
        ));
    }
    Ok(s.to_owned())
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn parse_cpu_limit(cpus: f64) -> Result<Option<f64>, SpecError> {
    if !cpus.is_finite() || cpus < 0.0 {
        return Err(SpecError::new(
            "spec.cpu_limit",
            format!("{cpus} is not a CPU count >= 0"),
        ));
    }
    if cpus > MAX_CPU_LIMIT {
        return Err(SpecError::new(
            "spec.cpu_limit",
            format!("{cpus} exceeds {MAX_CPU_LIMIT}"),
        ));
    }
    // Docker's NanoCpus granularity: anything below one nano-CPU is "unlimited".
    Ok((cpus * 1e9 >= 1.0).then_some(cpus))
}

fn parse_memory_limit(bytes: u64) -> Result<Option<u64>, SpecError> {
    match bytes {
        0 => Ok(None),
        b if b < MIN_MEMORY_LIMIT_BYTES => Err(SpecError::new(
            "spec.memory_limit_bytes",
            format!("{b} is below Docker's minimum of {MIN_MEMORY_LIMIT_BYTES} bytes"),
        )),
        b if i64::try_from(b).is_err() => Err(SpecError::new(
            "spec.memory_limit_bytes",
            format!("{b} is too large"),
        )),
        b => Ok(Some(b)),
    }
}

fn parse_gpus(gpus: pb::GpuAccess) -> Result<GpuAccess, SpecError> {
    let mut nvidia_uuids = Vec::with_capacity(gpus.nvidia_uuids.len());
    for (i, id) in gpus.nvidia_uuids.into_iter().enumerate() {
        let field = format!("spec.gpus.nvidia_uuids[{i}]");
        let well_formed = (id.starts_with("GPU-") || id.starts_with("MIG-"))
            && id.len() > 4
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/');
        if !well_formed {
            return Err(SpecError::new(
                field,
                format!("{id:?} is not a GPU-/MIG- UUID"),
            ));
        }
        if nvidia_uuids.contains(&id) {
            return Err(SpecError::new(field, format!("{id:?} is listed twice")));
        }
        nvidia_uuids.push(id);
    }
    let mut device_paths = Vec::with_capacity(gpus.device_paths.len());
    for (i, p) in gpus.device_paths.iter().enumerate() {
        let field = format!("spec.gpus.device_paths[{i}]");
        let path = parse_abs_path(&field, p)?;
        if !path.starts_with("/dev") || path == Path::new("/dev") {
            return Err(SpecError::new(
                field,
                format!("{p:?} is not a device under /dev"),
            ));
        }
        if device_paths.contains(&path) {
            return Err(SpecError::new(field, format!("{p:?} is listed twice")));
        }
        device_paths.push(path);
    }
    Ok(GpuAccess {
        nvidia_uuids,
        device_paths,
    })
}

fn parse_network_mode(s: &str) -> Result<Option<String>, SpecError> {
    if s.is_empty() {
        return Ok(None);
    }
    let ok = s.len() <= 256
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if !ok {
        return Err(SpecError::new(
            "spec.network_mode",
            format!(
                "{s:?} is not a network mode (host, bridge, none, container:<id> or a network name)"
            ),
        ));
    }
    Ok(Some(s.to_owned()))
}

/// An absolute, normalised path without `..`, `.` or NUL.
fn parse_abs_path(field: &str, s: &str) -> Result<PathBuf, SpecError> {
    if s.is_empty() {
        return Err(SpecError::new(field, "must not be empty"));
    }
    if s.contains('\0') {
        return Err(SpecError::new(field, "contains a NUL byte"));
    }
    let path = Path::new(s);
    if !path.is_absolute() {
        return Err(SpecError::new(
            field,
            format!("{s:?} is not an absolute path"),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(SpecError::new(field, format!("{s:?} contains '.' or '..'")));
    }
    // Re-collecting the components drops duplicate and trailing slashes.
    Ok(path.components().collect())
}

fn parse_stop_signal(s: &str) -> Result<Option<String>, SpecError> {
    if s.is_empty() {
        return Ok(None);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if KNOWN_SIGNALS.contains(&name.as_str()) {
        Ok(Some(name))
    } else {
        Err(SpecError::new(
            "spec.stop_signal",
            format!("{s:?} is not one of {}", KNOWN_SIGNALS.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::StartRunner {
        pb::StartRunner {
            runner_id: "5a0e8c9e-2f43-4d6f-9a51-3c1b7f0d2e11".into(),
            pool: "linux-amd64".into(),
            spec: Some(pb::ContainerSpec {
                image: "gitlab/gitlab-runner:v18.2.0".into(),
                command: vec!["run-single".into()],
                env: vec![pb::EnvVar {
                    name: "CI_SERVER_TOKEN".into(),
                    value: "glrt-supersecret".into(),
                }],
                cpu_limit: 1.5,
                memory_limit_bytes: 512 * 1024 * 1024,
                gpus: Some(pb::GpuAccess {
                    nvidia_uuids: vec!["GPU-8f6c1d2a-0000-1111-2222-333344445555".into()],
                    device_paths: vec!["/dev/dri/renderD128".into(), "/dev/kfd".into()],
                }),
                labels: [("team".to_owned(), "infra".to_owned())].into(),
                network_mode: "host".into(),
                mounts: vec![pb::Mount {
                    source: "/var/run/docker.sock".into(),
                    target: "/var/run/docker.sock".into(),
                    read_only: false,
                }],
                stop_signal: "quit".into(),
                registry_auth: None,
            }),
        }
    }

    #[test]
    fn registry_auth_is_validated_and_its_password_never_printed() {
        let mut msg = valid();
        spec_mut(&mut msg).registry_auth = Some(pb::RegistryAuth {
            username: "puller".into(),
            password: "reg-pass-SECRET".into(),
        });
        let spec = RunnerSpec::try_from(msg).expect("valid");
        let auth = spec.registry_auth.as_ref().expect("auth kept");
        assert_eq!(auth.username, "puller");
        assert_eq!(auth.password.expose_secret(), "reg-pass-SECRET");
        let debug = format!("{spec:?}");
        assert!(!debug.contains("reg-pass-SECRET"), "{debug}");
        assert!(debug.contains("puller"), "{debug}");

        let bad = |user: &str, pass: &str| {
            err_of(|m| {
                spec_mut(m).registry_auth = Some(pb::RegistryAuth {
                    username: user.into(),
                    password: pass.into(),
                })
            })
        };
        assert_eq!(
            bad("", "reg-pass-SECRET").field,
            "spec.registry_auth.username"
        );
        assert_eq!(
            bad("a:b", "reg-pass-SECRET").field,
            "spec.registry_auth.username"
        );
        assert_eq!(bad("u", "").field, "spec.registry_auth.password");
        let e = bad("u", "reg-pass-SECRET\0");
        assert_eq!(e.field, "spec.registry_auth.password");
        assert!(!e.to_string().contains("reg-pass-SECRET"), "{e}");
    }

    fn err_of(f: impl FnOnce(&mut pb::StartRunner)) -> SpecError {
        let mut msg = valid();
        f(&mut msg);
        RunnerSpec::try_from(msg).expect_err("must be rejected")
    }

    fn spec_mut(m: &mut pb::StartRunner) -> &mut pb::ContainerSpec {
        m.spec.as_mut().expect("spec")
    }

    #[test]
    fn valid_message_converts() {
        let spec = RunnerSpec::try_from(valid()).expect("valid");
        assert_eq!(
            spec.runner_id.to_string(),
            "5a0e8c9e-2f43-4d6f-9a51-3c1b7f0d2e11"
        );
        assert_eq!(spec.pool, "linux-amd64");
        assert_eq!(spec.cpu_limit, Some(1.5));
        assert_eq!(spec.memory_limit_bytes, Some(512 * 1024 * 1024));
        assert_eq!(spec.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(spec.network_mode.as_deref(), Some("host"));
        assert_eq!(
            spec.gpus.device_paths,
            vec![PathBuf::from("/dev/dri/renderD128"), "/dev/kfd".into()]
        );
        assert_eq!(spec.env[0].to_docker(), "CI_SERVER_TOKEN=glrt-supersecret");
        // The short token (GitLab's 9-character runner.id label), never the token.
        assert_eq!(spec.short_tokens, vec!["supersecr".to_owned()]);
        assert_eq!(
            spec.runner_id.container_name(),
            "autogit-runner-5a0e8c9e-2f43-4d6f-9a51-3c1b7f0d2e11"
        );
    }

    #[test]
    fn zero_limits_mean_unlimited() {
        let mut msg = valid();
        spec_mut(&mut msg).cpu_limit = 0.0;
        spec_mut(&mut msg).memory_limit_bytes = 0;
        spec_mut(&mut msg).stop_signal.clear();
        spec_mut(&mut msg).network_mode.clear();
        let spec = RunnerSpec::try_from(msg).expect("valid");
        assert_eq!(spec.cpu_limit, None);
        assert_eq!(spec.memory_limit_bytes, None);
        assert_eq!(spec.stop_signal, None);
        assert_eq!(spec.network_mode, None);
    }

    #[test]
    fn debug_never_prints_env_values() {
        let spec = RunnerSpec::try_from(valid()).expect("valid");
        let s = format!("{spec:?}");
        assert!(!s.contains("supersecret"), "{s}");
        assert!(s.contains("CI_SERVER_TOKEN=<redacted>"), "{s}");
    }

    #[test]
    fn errors_name_the_bad_field() {
        let cases: Vec<(SpecError, &str)> = vec![
            (err_of(|m| m.runner_id = "runner-1".into()), "runner_id"),
            (err_of(|m| m.pool.clear()), "pool"),
            (err_of(|m| m.spec = None), "spec"),
            (err_of(|m| spec_mut(m).image.clear()), "spec.image"),
            (
                err_of(|m| spec_mut(m).image = "bad image".into()),
                "spec.image",
            ),
            (
                err_of(|m| spec_mut(m).command.push("a\0b".into())),
                "spec.command[1]",
            ),
            (
                err_of(|m| {
                    spec_mut(m).env.push(pb::EnvVar {
                        name: "1BAD".into(),
                        value: "x".into(),
                    })
                }),
                "spec.env[1].name",
            ),
            (
                err_of(|m| {
                    spec_mut(m).env.push(pb::EnvVar {
                        name: "A=B".into(),
                        value: "x".into(),
                    })
                }),
                "spec.env[1].name",
            ),
            (
                err_of(|m| {
                    spec_mut(m).env.push(pb::EnvVar {
                        name: "CI_SERVER_TOKEN".into(),
                        value: "x".into(),
                    })
                }),
                "spec.env[1].name",
            ),
            (err_of(|m| spec_mut(m).cpu_limit = -1.0), "spec.cpu_limit"),
            (
                err_of(|m| spec_mut(m).cpu_limit = f64::NAN),
                "spec.cpu_limit",
            ),
            (
                err_of(|m| spec_mut(m).memory_limit_bytes = 1024),
                "spec.memory_limit_bytes",
            ),
            (
                err_of(|m| spec_mut(m).memory_limit_bytes = u64::MAX),
                "spec.memory_limit_bytes",
            ),
            (
                err_of(|m| {
                    spec_mut(m)
                        .labels
                        .insert("autogit.runner-id".into(), "x".into());
                }),
                "spec.labels[\"autogit.runner-id\"]",
            ),
            (
                err_of(|m| spec_mut(m).network_mode = "host; rm".into()),
                "spec.network_mode",
            ),
            (
                err_of(|m| spec_mut(m).mounts[0].target = "relative/path".into()),
                "spec.mounts[0].target",
            ),
            (
                err_of(|m| spec_mut(m).mounts[0].source = "/a/../etc".into()),
                "spec.mounts[0].source",
            ),
            (
                err_of(|m| spec_mut(m).mounts[0].target = "/".into()),
                "spec.mounts[0].target",
            ),
            (
                err_of(|m| {
                    let dup = spec_mut(m).mounts[0].clone();
                    spec_mut(m).mounts.push(dup);
                }),
                "spec.mounts[1].target",
            ),
            (
                err_of(|m| spec_mut(m).stop_signal = "SIGFOO".into()),
                "spec.stop_signal",
            ),
            (
                err_of(|m| {
                    spec_mut(m).gpus.as_mut().expect("gpus").nvidia_uuids = vec!["0".into()]
                }),
                "spec.gpus.nvidia_uuids[0]",
            ),
            (
                err_of(|m| {
                    spec_mut(m).gpus.as_mut().expect("gpus").device_paths =
                        vec!["/etc/passwd".into()]
                }),
                "spec.gpus.device_paths[0]",
            ),
            (
                err_of(|m| {
                    spec_mut(m).gpus.as_mut().expect("gpus").device_paths =
                        vec!["/dev/../etc/shadow".into()]
                }),
                "spec.gpus.device_paths[0]",
            ),
            (
                err_of(|m| {
                    spec_mut(m).gpus.as_mut().expect("gpus").device_paths = vec!["dev/kfd".into()]
                }),
                "spec.gpus.device_paths[0]",
            ),
        ];
        for (err, field) in cases {
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn bad_env_value_error_does_not_leak_secret() {
        let err = err_of(|m| {
            spec_mut(m).env.push(pb::EnvVar {
                name: "TOKEN".into(),
                value: "glrt-leak\0".into(),
            })
        });
        assert_eq!(err.field, "spec.env[1].value");
        assert!(!err.to_string().contains("glrt-leak"), "{err}");
    }

    #[test]
    fn stop_request_converts() {
        let req = StopRequest::try_from(pb::StopRunner {
            runner_id: "5a0e8c9e-2f43-4d6f-9a51-3c1b7f0d2e11".into(),
            graceful: true,
            grace_period_ms: 1500,
        })
        .expect("valid");
        assert!(req.graceful);
        assert_eq!(req.grace_period, Some(Duration::from_millis(1500)));

        let req = StopRequest::try_from(pb::StopRunner {
            runner_id: "5a0e8c9e-2f43-4d6f-9a51-3c1b7f0d2e11".into(),
            graceful: false,
            grace_period_ms: 0,
        })
        .expect("valid");
        assert_eq!(req.grace_period, None);

        let err = StopRequest::try_from(pb::StopRunner::default()).expect_err("empty id");
        assert_eq!(err.field, "runner_id");
    }
}
