//! The Docker Engine behind a small trait: [`ContainerEngine`] is what the
//! supervisor needs from a container runtime, [`DockerEngine`] implements it
//! over the Engine API with bollard.
//!
//! The connection goes to a unix socket: the configured path, else
//! `DOCKER_HOST` (`unix://...`), else `/var/run/docker.sock`. bollard speaks
//! a newer API version than many daemons (Debian's Docker 20.10 speaks 1.41),
//! so [`DockerEngine::connect`] negotiates the version with the daemon before
//! anything else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StartContainerOptions, WaitContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures::StreamExt;
use secrecy::ExposeSecret;

use super::events::{ContainerStatus, ManagedContainer};
use super::leftovers::{
    GITLAB_LABEL_MANAGED, GITLAB_LABEL_RUNNER_ID, Leftover, LeftoverCount, LeftoverKind,
};
use super::mapping::{self, LABEL_MANAGED, LABEL_POOL, LABEL_RUNNER_ID, LABEL_SCOPE};
use super::spec::{RegistryAuth, RunnerId, RunnerSpec};
use crate::inventory::DockerInfo;

/// Where Docker listens when nothing else is configured.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Per-request timeout (time to the response headers; streams such as
/// `wait` and `pull` may run longer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Progress lines (layer status changes) logged per pull, at most.
const MAX_PULL_PROGRESS_LINES: usize = 200;

/// The longest log line kept in a log tail; longer lines are cut.
const MAX_LOG_LINE: usize = 1024;

/// Why a Docker operation failed. Callers branch on `NotFound` / `Conflict`.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `DOCKER_HOST` names something other than a unix socket.
    #[error("DOCKER_HOST={0:?} is not supported (only unix:// sockets are)")]
    UnsupportedHost(String),
    /// The daemon could not be reached or its API version not negotiated.
    #[error("connect to Docker at {}: {source}", path.display())]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// What bollard said.
        #[source]
        source: BollardError,
    },
    /// The object does not exist (HTTP 404).
    #[error("{op}: not found: {message}")]
    NotFound {
        /// What was being done ("inspect image", ...).
        op: &'static str,
        /// Docker's message.
        message: String,
    },
    /// The object is in the wrong state or the name is taken (HTTP 409).
    #[error("{op}: conflict: {message}")]
    Conflict {
        /// What was being done.
        op: &'static str,
        /// Docker's message.
        message: String,
    },
    /// Any other failure.
    #[error("{op}: {source}")]
    Api {
        /// What was being done.
        op: &'static str,
        /// What bollard said.
        #[source]
        source: BollardError,
    },
}

impl EngineError {
    pub(crate) fn from_bollard(op: &'static str, err: BollardError) -> Self {
        match err {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => Self::NotFound { op, message },
            BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            } => Self::Conflict { op, message },
            source => Self::Api { op, source },
        }
    }

    /// True for HTTP 404 from the daemon.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True for HTTP 409 from the daemon.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

/// Why a pull failed, in words, from what Docker said (its messages are the
/// only signal: the Engine API answers 404 for a missing tag and 500 for
/// everything else). `None` when the message fits no known cause.
pub fn pull_failure_cause(err: &EngineError) -> Option<&'static str> {
    let text = err.to_string().to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if has(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "network is unreachable",
        "no route to host",
        "connection reset",
    ]) {
        Some("the registry cannot be reached")
    } else if has(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
    ]) {
        Some("the registry refused the pull: missing or wrong credentials (the pool's `registry`)")
    } else if has(&["manifest unknown", "not found"]) || err.is_not_found() {
        Some("the registry has no such image or tag")
    } else if has(&["unexpected http status: 5", "internal server error"]) {
        Some("the registry answered with a server error")
    } else {
        None
    }
}

/// What the inventory reports about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version, e.g. `20.10.24+dfsg1`.
    pub version: String,
    /// The daemon's API version, e.g. `1.41`.
    pub api_version: String,
    /// Docker's root directory, e.g. `/var/lib/docker`.
    pub root_dir: String,
}

/// What the runner supervisor needs from a container runtime.
#[async_trait]
pub trait ContainerEngine: Send + Sync + 'static {
    /// Pull the image (progress is logged at debug), with `auth` for its
    /// registry when given; fails if the pull fails.
    async fn pull_image(&self, image: &str, auth: Option<&RegistryAuth>)
    -> Result<(), EngineError>;
    /// Why `image` must not run here, if its platform differs from the
    /// Docker daemon's (an amd64-only image on a riscv64 host would run
    /// only through emulation, if at all); `None` when it matches or cannot
    /// be told. The default knows nothing and says `None`.
    async fn platform_mismatch(&self, _image: &str) -> Option<String> {
        None
    }
    /// Create (not start) the runner's container; returns its id.
    async fn create_container(
        &self,
        spec: &RunnerSpec,
        scope: Option<&str>,
    ) -> Result<String, EngineError>;
    /// Start a created container.
    async fn start_container(&self, id: &str) -> Result<(), EngineError>;
    /// Wait until the container is not running; returns its exit code.
    async fn wait_container(&self, id: &str) -> Result<i64, EngineError>;
    /// Send a signal (`SIGQUIT`, `SIGKILL`, ...) to the container's main process.
    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), EngineError>;
    /// Remove the container (and its anonymous volumes), forcing if needed.
    async fn remove_container(&self, id: &str) -> Result<(), EngineError>;
    /// The last `lines` lines of the container's stdout and stderr.
    async fn log_tail(&self, id: &str, lines: usize) -> Result<Vec<String>, EngineError>;
    /// Containers labelled `autogit.managed=true` (running or not), limited
    /// to one scope and/or one runner when given.
    async fn list_managed(
        &self,
        scope: Option<&str>,
        runner: Option<RunnerId>,
    ) -> Result<Vec<ManagedContainer>, EngineError>;
    /// Every container, volume and network labelled
    /// `com.gitlab.gitlab-runner.managed=true` (what GitLab's docker
    /// executor creates), with its `runner.id` short token.
    async fn list_executor_leftovers(&self) -> Result<Vec<Leftover>, EngineError>;
    /// Remove every container (forced, running or not, with its anonymous
    /// volumes), then every volume and network, labelled
    /// `com.gitlab.gitlab-runner.runner.id=<short_token>`. Objects that
    /// vanish meanwhile are not errors. Returns what was removed.
    async fn remove_executor_leftovers(
        &self,
        short_token: &str,
    ) -> Result<LeftoverCount, EngineError>;
}

/// The Docker Engine API over a unix socket.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    socket: PathBuf,
    /// The daemon's architecture (`Info.Architecture`, normalised), once read.
    daemon_arch: Arc<tokio::sync::OnceCell<String>>,
    /// Image reference → its architecture (normalised), for images already
    /// checked; a pull forgets the reference (the tag may move).
    image_arch: Arc<std::sync::Mutex<HashMap<String, String>>>,
    /// One pull per image reference at a time: runners of a burst that all
    /// miss the same image wait for the first one's pull instead of asking
    /// dockerd for the same image N times (which it resolves one after
    /// another; `docs/benchmarks.md`, "Cold images").
    pulls: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl DockerEngine {
    /// Resolve the socket: the configured path wins, then `DOCKER_HOST`
    /// (`unix://` only), then [`DEFAULT_SOCKET`]. Pure, for tests.
    pub fn resolve_socket(
        configured: Option<&Path>,
        docker_host: Option<&str>,
    ) -> Result<PathBuf, EngineError> {
        if let Some(path) = configured {
            return Ok(path.to_owned());
        }
        match docker_host.filter(|h| !h.is_empty()) {
            Some(host) => match host.strip_prefix("unix://") {
                Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
                _ => Err(EngineError::UnsupportedHost(host.to_owned())),
            },
            None => Ok(PathBuf::from(DEFAULT_SOCKET)),
        }
    }

    /// Connect to the configured socket (or `DOCKER_HOST`, or the default)
    /// and negotiate the API version.
    pub async fn connect(configured: Option<&Path>) -> Result<Self, EngineError> {
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let socket = Self::resolve_socket(configured, docker_host.as_deref())?;
        Self::connect_socket(&socket).await
    }

    /// Connect to this socket and negotiate the API version.
    pub async fn connect_socket(socket: &Path) -> Result<Self, EngineError> {
        let connect_err = |source| EngineError::Connect {
            path: socket.to_owned(),
            source,
        };
        let addr = socket.to_string_lossy();
        let docker =
            Docker::connect_with_unix(&addr, REQUEST_TIMEOUT.as_secs(), API_DEFAULT_VERSION)
                .map_err(connect_err)?
                .negotiate_version()
                .await
                .map_err(connect_err)?;
        let v = docker.client_version();
        tracing::debug!(socket = %socket.display(), api = %format!("{}.{}", v.major_version, v.minor_version), "connected to Docker");
        Ok(Self {
            docker,
            socket: socket.to_owned(),
            daemon_arch: Arc::default(),
            image_arch: Arc::default(),
            pulls: Arc::default(),
        })
    }

    /// Change the per-request timeout (time to the response headers; a
    /// container `wait` or an image pull may stream for longer).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.docker = self.docker.with_timeout(timeout);
        self
    }

    /// The socket this engine talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The API version in use after negotiation, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// The bollard client (for tests and tools that inspect containers).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Engine version, API version and root directory, for the inventory.
    pub async fn info(&self) -> Result<EngineInfo, EngineError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| EngineError::from_bollard("read Docker version", e))?;
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| EngineError::from_bollard("read Docker info", e))?;
        Ok(EngineInfo {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            root_dir: info.docker_root_dir.unwrap_or_default(),
        })
    }

    /// This engine as the inventory reports it: versions, root directory and
    /// its free space, or `available: false` with the reason.
    pub async fn inventory_info(&self) -> DockerInfo {
        match self.info().await {
            Ok(info) => {
                let root_free_bytes = match crate::inventory::free_bytes(Path::new(&info.root_dir))
                {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::debug!(root = %info.root_dir, error = %e, "free space of Docker's root unknown");
                        None
                    }
                };
                let images = match super::images::ImageStore::list_images(self).await {
                    Ok(list) => super::images::held_images(&list),
                    Err(e) => {
                        tracing::debug!(error = %e, "images on the host unknown");
                        Vec::new()
                    }
                };
                DockerInfo {
                    available: true,
                    images,
                    version: Some(info.version).filter(|v| !v.is_empty()),
                    api_version: Some(info.api_version).filter(|v| !v.is_empty()),
                    root_dir: Some(info.root_dir).filter(|v| !v.is_empty()),
                    root_free_bytes,
                    error: None,
                }
            }
            Err(e) => unavailable_info(&e),
        }
    }

    async fn inspect_managed(&self, id: &str) -> Result<Option<ManagedContainer>, EngineError> {
        let c = match self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let e = EngineError::from_bollard("inspect container", e);
                return if e.is_not_found() { Ok(None) } else { Err(e) };
            }
        };
        let config = c.config.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        let Some(runner_id) = runner_id_label(&labels, id) else {
            return Ok(None);
        };
        let state = c.state.unwrap_or_default();
        let status = match state.status {
            Some(ContainerStateStatusEnum::CREATED) => ContainerStatus::Created,
            Some(
                ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::RESTARTING,
            ) => ContainerStatus::Running,
            _ => ContainerStatus::Exited {
                code: state.exit_code.unwrap_or_default(),
            },
        };
        Ok(Some(ManagedContainer {
            runner_id,
            container_id: c.id.unwrap_or_else(|| id.to_owned()),
            pool: labels.get(LABEL_POOL).cloned().unwrap_or_default(),
            status,
            stop_signal: config.stop_signal.filter(|s| !s.is_empty()),
            short_tokens: mapping::short_tokens_from_labels(&labels),
        }))
    }
}

/// `label=<k>=<v>` filters for the list endpoints.
/// One spelling per architecture: Docker's image platforms say `amd64` and
/// `arm64`, its daemon info says `x86_64` and `aarch64`.
pub fn normalise_arch(arch: &str) -> String {
    match arch.to_ascii_lowercase().as_str() {
        "amd64" | "x86_64" | "x86-64" => "x86_64".into(),
        "arm64" | "aarch64" => "aarch64".into(),
        other => other.to_owned(),
    }
}

fn label_filter(labels: Vec<String>) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), labels)])
}

/// Ok for success and for 404 (already gone); counts the removal.
fn count_removal(
    res: Result<(), BollardError>,
    op: &'static str,
    n: &mut usize,
) -> Result<(), EngineError> {
    match res.map_err(|e| EngineError::from_bollard(op, e)) {
        Ok(()) => {
            *n += 1;
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The inventory's view of an engine that could not be reached.
pub fn unavailable_info(err: &EngineError) -> DockerInfo {
    DockerInfo {
        available: false,
        error: Some(err.to_string()),
        ..Default::default()
    }
}

fn runner_id_label(labels: &HashMap<String, String>, container: &str) -> Option<RunnerId> {
    let raw = labels.get(LABEL_RUNNER_ID)?;
    match raw.parse() {
        Ok(id) => Some(id),
        Err(_) => {
            tracing::warn!(container, label = %raw, "managed container with a malformed runner id; leaving it alone");
            None
        }
    }
}

/// Keep the last `n` lines of a log, each cut to [`MAX_LOG_LINE`] bytes.
fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| {
            let l = l.trim_end_matches('\r');
            if l.len() <= MAX_LOG_LINE {
                l.to_owned()
            } else {
                let mut end = MAX_LOG_LINE;
                while !l.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…", &l[..end])
            }
        })
        .collect()
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), EngineError> {
        let reference = mapping::pull_reference(image);
        let gate = {
            let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: forget gates nobody holds.
            if pulls.len() >= 64 {
                pulls.retain(|_, g| Arc::strong_count(g) > 1);
            }
            pulls.entry(reference.clone()).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        // Another runner's pull of this image may have finished meanwhile.
        if self.docker.inspect_image(&reference).await.is_ok() {
            tracing::debug!(image = %reference, "image arrived with another runner's pull");
            return Ok(());
        }
        tracing::info!(image = %reference, authenticated = auth.is_some(), "pulling image");
        let opts = CreateImageOptionsBuilder::new()
            .from_image(&reference)
            .build();
        // bollard sends these in the X-Registry-Auth header to the local
        // engine only; they are never logged (DockerCredentials' Debug would
        // show them, so nothing here prints it).
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.expose_secret().to_owned()),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(opts), None, credentials);
        let mut last_status = String::new();
        let mut logged = 0usize;
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| EngineError::from_bollard("pull image", e))?;
            // Log each layer's status change, not every progress tick, and
            // at most MAX_PULL_PROGRESS_LINES per pull.
            if let Some(status) = info.status {
                let line = format!("{} {status}", info.id.as_deref().unwrap_or(""));
                if line != last_status {
                    if logged < MAX_PULL_PROGRESS_LINES {
                        tracing::debug!(image = %reference, progress = %line.trim(), "pull");
                    } else if logged == MAX_PULL_PROGRESS_LINES {
                        tracing::debug!(image = %reference, "pull: further progress not logged");
                    }
                    logged += 1;
                    last_status = line;
                }
            }
        }
        tracing::info!(image = %reference, "image pulled");
        if let Ok(mut known) = self.image_arch.lock() {
            known.remove(image);
        }
        Ok(())
    }

    async fn platform_mismatch(&self, image: &str) -> Option<String> {
        let daemon = match self
            .daemon_arch
            .get_or_try_init(|| async {
                let info = self.docker.info().await?;
                Ok::<_, BollardError>(normalise_arch(&info.architecture.unwrap_or_default()))
            })
            .await
        {
            Ok(a) if !a.is_empty() => a.clone(),
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "Docker's architecture unknown; image platform not checked");
                return None;
            }
        };
        let known = self
            .image_arch
            .lock()
            .ok()
            .and_then(|k| k.get(image).cloned());
        let (image_arch, os) = match known {
            Some(a) => (a, String::new()),
            None => match self.docker.inspect_image(image).await {
                Ok(i) => {
                    let a = normalise_arch(&i.architecture.unwrap_or_default());
                    if let Ok(mut k) = self.image_arch.lock() {
                        // Bounded: a host sees few distinct runner images.
                        if k.len() >= 256 {
                            k.clear();
                        }
                        k.insert(image.to_owned(), a.clone());
                    }
                    (a, i.os.unwrap_or_default())
                }
                Err(e) => {
                    tracing::debug!(%image, error = %e, "image platform not checked");
                    return None;
                }
            },
        };
        if image_arch.is_empty() || image_arch == daemon {
            return None;
        }
        let os = if os.is_empty() {
            "linux".to_owned()
        } else {
            os
        };
        Some(format!(
            "image {image} is for {os}/{image_arch}, but this host's Docker runs {daemon}: it would run only under emulation, if at all; give the pool an image for {daemon} (image = {{ {daemon} = \"…\" }})"
        ))
    }

    async fn create_container(
        &self,
        spec: &RunnerSpec,
        scope: Option<&str>,
    ) -> Result<String, EngineError> {
        let name = spec.runner_id.container_name();
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let body = mapping::container_config(spec, scope);
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| EngineError::from_bollard("create container", e))?;
        for w in &created.warnings {
            tracing::warn!(container = %name, warning = %w, "Docker warning on create");
        }
        Ok(created.id)
    }

    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| EngineError::from_bollard("start container", e))
    }

    async fn wait_container(&self, id: &str) -> Result<i64, EngineError> {
        let opts = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut stream = self.docker.wait_container(id, Some(opts));
        match stream.next().await {
            Some(Ok(resp)) => Ok(resp.status_code),
            // bollard turns a non-zero exit into an error; it is a result here.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(EngineError::from_bollard("wait for container", e)),
            None => Err(EngineError::Api {
                op: "wait for container",
                source: BollardError::DockerStreamError {
                    error: "wait ended without a status".into(),
                },
            }),
        }
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        let opts = KillContainerOptionsBuilder::new().signal(signal).build();
        self.docker
            .kill_container(id, Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("signal container", e))
    }

    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        self.docker
            .remove_container(id, Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("remove container", e))
    }

    async fn log_tail(&self, id: &str, lines: usize) -> Result<Vec<String>, EngineError> {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(opts));
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| EngineError::from_bollard("read container log", e))?;
            text.extend_from_slice(chunk.as_ref());
        }
        Ok(last_lines(&String::from_utf8_lossy(&text), lines))
    }

    async fn list_managed(
        &self,
        scope: Option<&str>,
        runner: Option<RunnerId>,
    ) -> Result<Vec<ManagedContainer>, EngineError> {
        let mut label_filters = vec![format!("{LABEL_MANAGED}=true")];
        if let Some(scope) = scope {
            label_filters.push(format!("{LABEL_SCOPE}={scope}"));
        }
        if let Some(runner) = runner {
            label_filters.push(format!("{LABEL_RUNNER_ID}={runner}"));
        }
        let filters = HashMap::from([("label".to_owned(), label_filters)]);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("list managed containers", e))?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let Some(id) = s.id else { continue };
            // A container being removed is as good as gone.
            if s.state == Some(ContainerSummaryStateEnum::REMOVING) {
                continue;
            }
            // Inspect for the exit code and stop signal the list lacks; a
            // container removed in between is simply skipped.
            if let Some(c) = self.inspect_managed(&id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn list_executor_leftovers(&self) -> Result<Vec<Leftover>, EngineError> {
        let filters = label_filter(vec![format!("{GITLAB_LABEL_MANAGED}=true")]);
        let short = |labels: Option<&HashMap<String, String>>| {
            labels
                .and_then(|l| l.get(GITLAB_LABEL_RUNNER_ID))
                .cloned()
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        for c in self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("list executor containers", e))?
        {
            if let Some(id) = c.id.clone() {
                out.push(Leftover {
                    kind: LeftoverKind::Container,
                    id,
                    short_token: short(c.labels.as_ref()),
                });
            }
        }
        let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let volumes = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("list executor volumes", e))?;
        for v in volumes.volumes.unwrap_or_default() {
            out.push(Leftover {
                kind: LeftoverKind::Volume,
                short_token: short(Some(&v.labels)),
                id: v.name,
            });
        }
        let opts = ListNetworksOptionsBuilder::new().filters(&filters).build();
        for n in self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("list executor networks", e))?
        {
            if let Some(id) = n.id.clone() {
                out.push(Leftover {
                    kind: LeftoverKind::Network,
                    id,
                    short_token: short(n.labels.as_ref()),
                });
            }
        }
        Ok(out)
    }

    async fn remove_executor_leftovers(
        &self,
        short_token: &str,
    ) -> Result<LeftoverCount, EngineError> {
        let filters = label_filter(vec![format!("{GITLAB_LABEL_RUNNER_ID}={short_token}")]);
        let mut count = LeftoverCount::default();
        // Containers first: a volume or network in use cannot be removed.
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("list executor containers", e))?;
        for id in containers.into_iter().filter_map(|c| c.id) {
            let opts = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            let res = self.docker.remove_container(&id, Some(opts)).await;
            count_removal(res, "remove executor container", &mut count.containers)?;
        }
        let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let volumes = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("list executor volumes", e))?;
        for v in volumes.volumes.unwrap_or_default() {
            let opts = RemoveVolumeOptionsBuilder::new().force(true).build();
            let res = self.docker.remove_volume(&v.name, Some(opts)).await;
            count_removal(res, "remove executor volume", &mut count.volumes)?;
        }
        let opts = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard("list executor networks", e))?;
        for id in networks.into_iter().filter_map(|n| n.id) {
            let res = self.docker.remove_network(&id).await;
            count_removal(res, "remove executor network", &mut count.networks)?;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_resolution_prefers_config_then_docker_host_then_default() {
        let cfg = Path::new("/run/custom.sock");
        assert_eq!(
            DockerEngine::resolve_socket(Some(cfg), Some("unix:///x.sock")).expect("ok"),
            PathBuf::from("/run/custom.sock")
        );
        assert_eq!(
            DockerEngine::resolve_socket(None, Some("unix:///run/user/1000/docker.sock"))
                .expect("ok"),
            PathBuf::from("/run/user/1000/docker.sock")
        );
        assert_eq!(
            DockerEngine::resolve_socket(None, None).expect("ok"),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            DockerEngine::resolve_socket(None, Some("")).expect("ok"),
            PathBuf::from(DEFAULT_SOCKET)
        );
        let err = DockerEngine::resolve_socket(None, Some("tcp://127.0.0.1:2375"))
            .expect_err("tcp is not supported");
        assert!(matches!(err, EngineError::UnsupportedHost(_)), "{err}");
        assert!(DockerEngine::resolve_socket(None, Some("unix://")).is_err());
    }

    #[test]
    fn log_tail_keeps_last_lines_and_cuts_long_ones() {
        let text = "a\nb\r\nc\nd\n";
        assert_eq!(last_lines(text, 2), vec!["c".to_owned(), "d".to_owned()]);
        assert_eq!(last_lines(text, 10).len(), 4);
        assert_eq!(last_lines("", 5), Vec::<String>::new());
        let long = "é".repeat(MAX_LOG_LINE);
        let cut = &last_lines(&long, 1)[0];
        assert!(cut.len() <= MAX_LOG_LINE + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn pull_failures_are_named_from_what_docker_says() {
        let api = |status_code: u16, message: &str| {
            EngineError::from_bollard(
                "pull image",
                BollardError::DockerResponseServerError {
                    status_code,
                    message: message.into(),
                },
            )
        };
        let cases = [
            (
                api(
                    404,
                    "manifest for 127.0.0.1:5000/r:missing not found: manifest unknown: manifest unknown",
                ),
                "no such image or tag",
            ),
            (
                api(
                    500,
                    "Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
                ),
                "cannot be reached",
            ),
            (
                api(
                    500,
                    "received unexpected HTTP status: 500 Internal Server Error",
                ),
                "server error",
            ),
            (
                api(
                    500,
                    "Head \"http://127.0.0.1:5000/v2/r/manifests/dev\": no basic auth credentials",
                ),
                "credentials",
            ),
            (api(500, "something else entirely"), ""),
            (
                api(500, "unauthorized: authentication required"),
                "credentials",
            ),
        ];
        for (err, want) in cases {
            let got = pull_failure_cause(&err);
            if want.is_empty() {
                assert_eq!(got, None, "{err}");
            } else {
                assert!(got.is_some_and(|g| g.contains(want)), "{err}: {got:?}");
            }
        }
    }

    #[tokio::test]
    async fn connect_to_missing_socket_is_a_clear_error() {
        let err = DockerEngine::connect_socket(Path::new("/nonexistent/docker.sock"))
            .await
            .expect_err("no socket there");
        assert!(
            err.to_string().contains("/nonexistent/docker.sock"),
            "{err}"
        );
    }
}
