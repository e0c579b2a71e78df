//! A fake [`ContainerEngine`] that behaves like Docker where the supervisor
//! can tell: 404 for unknown containers, 409 for a taken name or a signal to
//! a stopped container, `wait` that blocks until the container stops, and an
//! engine that can go away (every call fails, running waits break) and come
//! back. Time is never read: tests drive it with tokio's paused clock.
//!
//! It also keeps what GitLab's docker executor would leave (containers,
//! volumes, networks labelled `com.gitlab.gitlab-runner.*`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use autogit_agent::docker::leftovers::{
    GITLAB_LABEL_MANAGED, GITLAB_LABEL_RUNNER_ID, Leftover, LeftoverCount, LeftoverKind,
};
use autogit_agent::docker::mapping::{
    self, LABEL_MANAGED, LABEL_POOL, LABEL_RUNNER_ID, LABEL_SCOPE,
};
use autogit_agent::docker::{
    ContainerEngine, ContainerStatus, EngineError, ManagedContainer, RegistryAuth, RunnerId,
    RunnerSpec,
};
use tokio::sync::watch;

/// One fake container.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub status: ContainerStatus,
    pub stop_signal: Option<String>,
}

#[derive(Default)]
struct Inner {
    down: bool,
    next_id: u64,
    containers: BTreeMap<String, FakeContainer>,
    volumes: BTreeMap<String, HashMap<String, String>>,
    networks: BTreeMap<String, HashMap<String, String>>,
    signals: Vec<(String, String)>,
    ignore_graceful: bool,
    /// Images not on the host: create answers 404 until they are pulled.
    missing_images: HashSet<String>,
    /// Pulls of these fail (the registry does not have them).
    unpullable: HashSet<String>,
    /// Every call, by name, in order (`create`, `pull`, ...).
    calls: Vec<&'static str>,
    /// Each pull's image and the user name of its credentials, if any.
    pulls: Vec<(String, Option<String>)>,
    /// How long each pull takes.
    pull_delay: std::time::Duration,
}

/// See the module docs.
pub struct FakeEngine {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Default for FakeEngine {
    fn default() -> Self {
        Self::new()
    }
}

fn down(op: &'static str) -> EngineError {
    EngineError::Api {
        op,
        source: bollard::errors::Error::DockerStreamError {
            error: "connection refused: the fake dockerd is down".into(),
        },
    }
}

fn not_found(op: &'static str, id: &str) -> EngineError {
    EngineError::NotFound {
        op,
        message: format!("No such container: {id}"),
    }
}

impl FakeEngine {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn new_id(inner: &mut Inner, prefix: &str) -> String {
        inner.next_id += 1;
        format!("{prefix}{:012x}", inner.next_id)
    }

    /// Docker stops answering (`false`) or answers again (`true`).
    pub fn set_up(&self, up: bool) {
        self.lock().down = !up;
        self.notify();
    }

    /// Each pull takes this long (tokio's clock, paused or not).
    pub fn set_pull_delay(&self, delay: std::time::Duration) {
        self.lock().pull_delay = delay;
    }

    /// The image is not on the host; `pullable` says whether a pull gets it.
    pub fn remove_image(&self, image: &str, pullable: bool) {
        let mut inner = self.lock();
        inner.missing_images.insert(image.to_string());
        if !pullable {
            inner.unpullable.insert(image.to_string());
        }
    }

    /// The engine calls made so far, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.lock().calls.clone()
    }

    /// Each pull's image and the user name of the credentials it got.
    pub fn pulls(&self) -> Vec<(String, Option<String>)> {
        self.lock().pulls.clone()
    }

    /// SIGQUIT is recorded but the container keeps running (a job that
    /// does not finish within the grace period).
    pub fn ignore_graceful(&self, ignore: bool) {
        self.lock().ignore_graceful = ignore;
    }

    /// The container's main process exits with `code` (works while down too,
    /// like a dockerd restart killing its containers).
    pub fn exit(&self, id: &str, code: i64) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.status = ContainerStatus::Exited { code };
        }
        self.notify();
    }

    /// A runner container as a previous agent process would have left it.
    pub fn insert_runner_container(
        &self,
        spec: &RunnerSpec,
        scope: Option<&str>,
        status: ContainerStatus,
    ) -> String {
        let mut inner = self.lock();
        let id = Self::new_id(&mut inner, "c");
        inner.containers.insert(
            id.clone(),
            FakeContainer {
                name: spec.runner_id.container_name(),
                labels: mapping::container_labels(spec, scope),
                status,
                stop_signal: spec.stop_signal.clone(),
            },
        );
        drop(inner);
        self.notify();
        id
    }

    fn executor_labels(short: &str, kind: &str) -> HashMap<String, String> {
        HashMap::from([
            (GITLAB_LABEL_MANAGED.to_owned(), "true".to_owned()),
            (GITLAB_LABEL_RUNNER_ID.to_owned(), short.to_owned()),
            ("com.gitlab.gitlab-runner.type".to_owned(), kind.to_owned()),
        ])
    }

    /// What the docker executor of runner `short` leaves: a running build
    /// container, a cache volume and a per-build network.
    pub fn add_executor_leftovers(&self, short: &str) {
        let mut inner = self.lock();
        let id = Self::new_id(&mut inner, "job");
        inner.containers.insert(
            id,
            FakeContainer {
                name: format!("runner-{short}-project-1-concurrent-0-build"),
                labels: Self::executor_labels(short, "build"),
                status: ContainerStatus::Running,
                stop_signal: None,
            },
        );
        let vol = format!("runner-{short}-project-1-concurrent-0-cache");
        inner
            .volumes
            .insert(vol, Self::executor_labels(short, "cache"));
        let net = Self::new_id(&mut inner, "net");
        inner
            .networks
            .insert(net, Self::executor_labels(short, "network"));
    }

    /// How many containers, volumes and networks carry `runner.id=<short>`.
    pub fn leftovers_of(&self, short: &str) -> usize {
        let inner = self.lock();
        let has = |l: &HashMap<String, String>| {
            l.get(GITLAB_LABEL_RUNNER_ID).map(String::as_str) == Some(short)
        };
        inner.containers.values().filter(|c| has(&c.labels)).count()
            + inner.volumes.values().filter(|l| has(l)).count()
            + inner.networks.values().filter(|l| has(l)).count()
    }

    /// Containers labelled with this runner id.
    pub fn containers_of(&self, runner: RunnerId) -> Vec<(String, ContainerStatus)> {
        let want = runner.to_string();
        self.lock()
            .containers
            .iter()
            .filter(|(_, c)| c.labels.get(LABEL_RUNNER_ID) == Some(&want))
            .map(|(id, c)| (id.clone(), c.status))
            .collect()
    }

    /// Signals delivered so far, as (container id, signal).
    pub fn signals(&self) -> Vec<(String, String)> {
        self.lock().signals.clone()
    }

    fn check_up(&self, op: &'static str) -> Result<(), EngineError> {
        if self.lock().down {
            Err(down(op))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ContainerEngine for FakeEngine {
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), EngineError> {
        self.check_up("pull image")?;
        let delay = self.lock().pull_delay;
        tokio::time::sleep(delay).await;
        let mut inner = self.lock();
        inner.calls.push("pull");
        inner
            .pulls
            .push((image.to_owned(), auth.map(|a| a.username.clone())));
        if inner.unpullable.contains(image) {
            return Err(EngineError::NotFound {
                op: "pull image",
                message: format!("manifest for {image} not found: manifest unknown"),
            });
        }
        inner.missing_images.remove(image);
        Ok(())
    }

    async fn create_container(
        &self,
        spec: &RunnerSpec,
        scope: Option<&str>,
    ) -> Result<String, EngineError> {
        self.check_up("create container")?;
        let name = spec.runner_id.container_name();
        let mut inner = self.lock();
        inner.calls.push("create");
        let missing = inner.missing_images.contains(&spec.image);
        drop(inner);
        if missing {
            return Err(EngineError::NotFound {
                op: "create container",
                message: format!("No such image: {}", spec.image),
            });
        }
        if self.lock().containers.values().any(|c| c.name == name) {
            return Err(EngineError::Conflict {
                op: "create container",
                message: format!("name {name} is already in use"),
            });
        }
        Ok(self.insert_runner_container(spec, scope, ContainerStatus::Created))
    }

    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        self.check_up("start container")?;
        let mut inner = self.lock();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("start container", id))?;
        c.status = ContainerStatus::Running;
        drop(inner);
        self.notify();
        Ok(())
    }

    async fn wait_container(&self, id: &str) -> Result<i64, EngineError> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let inner = self.lock();
                if inner.down {
                    return Err(down("wait for container"));
                }
                match inner.containers.get(id) {
                    None => return Err(not_found("wait for container", id)),
                    Some(c) => match c.status {
                        ContainerStatus::Exited { code } => return Ok(code),
                        ContainerStatus::Created => return Ok(0),
                        ContainerStatus::Running => {}
                    },
                }
            }
            if rx.changed().await.is_err() {
                return Err(down("wait for container"));
            }
        }
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        self.check_up("signal container")?;
        let mut inner = self.lock();
        let ignore_graceful = inner.ignore_graceful;
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("signal container", id))?;
        if c.status != ContainerStatus::Running {
            return Err(EngineError::Conflict {
                op: "signal container",
                message: format!("Container {id} is not running"),
            });
        }
        let code = match signal {
            "SIGKILL" => Some(137),
            "SIGTERM" => Some(143),
            "SIGQUIT" if ignore_graceful => None,
            _ => Some(0),
        };
        if let Some(code) = code {
            c.status = ContainerStatus::Exited { code };
        }
        inner.signals.push((id.to_owned(), signal.to_owned()));
        drop(inner);
        self.notify();
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.check_up("remove container")?;
        let removed = self.lock().containers.remove(id);
        self.notify();
        removed
            .map(|_| ())
            .ok_or_else(|| not_found("remove container", id))
    }

    async fn log_tail(&self, id: &str, _lines: usize) -> Result<Vec<String>, EngineError> {
        self.check_up("read container log")?;
        Ok(vec![format!("log of {id}")])
    }

    async fn list_managed(
        &self,
        scope: Option<&str>,
        runner: Option<RunnerId>,
    ) -> Result<Vec<ManagedContainer>, EngineError> {
        self.check_up("list managed containers")?;
        let mut inner = self.lock();
        inner.calls.push(if runner.is_some() {
            "list runner's container"
        } else {
            "list managed"
        });
        let runner = runner.map(|r| r.to_string());
        Ok(inner
            .containers
            .iter()
            .filter(|(_, c)| c.labels.get(LABEL_MANAGED).map(String::as_str) == Some("true"))
            .filter(|(_, c)| {
                scope.is_none_or(|s| c.labels.get(LABEL_SCOPE).map(String::as_str) == Some(s))
            })
            .filter(|(_, c)| {
                runner
                    .as_ref()
                    .is_none_or(|r| c.labels.get(LABEL_RUNNER_ID) == Some(r))
            })
            .filter_map(|(id, c)| {
                Some(ManagedContainer {
                    runner_id: c.labels.get(LABEL_RUNNER_ID)?.parse().ok()?,
                    container_id: id.clone(),
                    pool: c.labels.get(LABEL_POOL).cloned().unwrap_or_default(),
                    status: c.status,
                    stop_signal: c.stop_signal.clone(),
                    short_tokens: mapping::short_tokens_from_labels(&c.labels),
                })
            })
            .collect())
    }

    async fn list_executor_leftovers(&self) -> Result<Vec<Leftover>, EngineError> {
        self.check_up("list executor leftovers")?;
        let inner = self.lock();
        let managed = |l: &HashMap<String, String>| {
            l.get(GITLAB_LABEL_MANAGED).map(String::as_str) == Some("true")
        };
        let short = |l: &HashMap<String, String>| {
            l.get(GITLAB_LABEL_RUNNER_ID).cloned().unwrap_or_default()
        };
        let mut out = Vec::new();
        for (id, c) in inner.containers.iter().filter(|(_, c)| managed(&c.labels)) {
            out.push(Leftover {
                kind: LeftoverKind::Container,
                id: id.clone(),
                short_token: short(&c.labels),
            });
        }
        for (id, l) in inner.volumes.iter().filter(|(_, l)| managed(l)) {
            out.push(Leftover {
                kind: LeftoverKind::Volume,
                id: id.clone(),
                short_token: short(l),
            });
        }
        for (id, l) in inner.networks.iter().filter(|(_, l)| managed(l)) {
            out.push(Leftover {
                kind: LeftoverKind::Network,
                id: id.clone(),
                short_token: short(l),
            });
        }
        Ok(out)
    }

    async fn remove_executor_leftovers(
        &self,
        short_token: &str,
    ) -> Result<LeftoverCount, EngineError> {
        self.check_up("remove executor leftovers")?;
        let mut inner = self.lock();
        let has = |l: &HashMap<String, String>| {
            l.get(GITLAB_LABEL_RUNNER_ID).map(String::as_str) == Some(short_token)
        };
        let before = (
            inner.containers.len(),
            inner.volumes.len(),
            inner.networks.len(),
        );
        inner.containers.retain(|_, c| !has(&c.labels));
        inner.volumes.retain(|_, l| !has(l));
        inner.networks.retain(|_, l| !has(l));
        let count = LeftoverCount {
            containers: before.0 - inner.containers.len(),
            volumes: before.1 - inner.volumes.len(),
            networks: before.2 - inner.networks.len(),
        };
        drop(inner);
        self.notify();
        Ok(count)
    }
}
