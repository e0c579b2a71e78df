//! The runner supervisor: an actor that owns the set of runner containers on
//! this host, and a cheap cloneable [`SupervisorHandle`] to talk to it.
//!
//! * `start` is idempotent per runner id: a runner the supervisor knows (or
//!   whose container exists in Docker) is never created twice; its state is
//!   reported again instead.
//! * Each runner lives in its own task (`lifecycle.rs`); the actor keeps
//!   the latest state of each, forwards their events in order, and routes
//!   stop commands to them.
//! * On spawn the supervisor adopts every managed container already on the
//!   host (e.g. after the agent was SIGKILLed and restarted): running ones
//!   are watched until they exit and are removed, exited ones are reported
//!   and removed.
//! * Shutting down (or dropping every handle) stops the watching but leaves
//!   containers alone, for the next agent to adopt.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::engine::{ContainerEngine, EngineError};
use super::events::{ManagedContainer, RunnerEvent, RunnerState};
use super::lifecycle::{Entry, Lifecycle, StopCommand};
use super::spec::{RunnerId, RunnerSpec, StopRequest};

/// How many finished runners are remembered so that a repeated
/// `StartRunner` / `StopRunner` gets their final state instead of a new container.
const FINISHED_MEMORY: usize = 1024;

/// Knobs of the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorConfig {
    /// When set, containers also get `autogit.scope=<scope>` and the
    /// supervisor only lists and adopts containers with that label. Lets
    /// several agents (or tests) share one Docker daemon. `None` = all
    /// `autogit.managed=true` containers are this supervisor's.
    pub scope: Option<String>,
    /// How long a failed container (non-zero exit, failed start) is kept for
    /// inspection before it is removed. Zero = remove at once.
    pub failed_retention: Duration,
    /// Non-graceful stop: SIGTERM, then SIGKILL after this long.
    pub abort_timeout: Duration,
    /// Graceful stop without a grace period (0 on the wire): SIGKILL after this long.
    pub default_grace_period: Duration,
    /// How many log lines come with a failure.
    pub log_tail_lines: usize,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            scope: None,
            failed_retention: Duration::ZERO,
            abort_timeout: Duration::from_secs(10),
            default_grace_period: Duration::from_secs(3600),
            log_tail_lines: 20,
        }
    }
}

/// What `start` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// A new lifecycle began (a container will be created, or an existing
    /// one for this runner adopted).
    Started,
    /// The runner is already being handled; its latest state was reported again.
    AlreadyPresent,
    /// The runner already ran and was removed; its final state was reported again.
    AlreadyFinished,
}

/// What `stop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The stop signal went to the running container; `Exited` and `Removed` follow.
    Signalled,
    /// The runner had no running container (still pulling, not yet started,
    /// or already exited); it is being removed.
    NotRunning,
    /// The runner is not on this host (any more); `Removed` was reported.
    NotFound,
}

/// Why a supervisor request failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The supervisor has shut down.
    #[error("the runner supervisor has shut down")]
    Closed,
    /// Docker failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

enum Request {
    Start {
        spec: Box<RunnerSpec>,
        reply: oneshot::Sender<StartOutcome>,
    },
    Stop {
        req: StopRequest,
        reply: oneshot::Sender<Result<StopOutcome, SupervisorError>>,
    },
    RunningCount {
        reply: oneshot::Sender<usize>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable handle to the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Request>,
    engine: Arc<dyn ContainerEngine>,
    scope: Option<String>,
}

impl std::fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl SupervisorHandle {
    /// Run a runner (idempotent per runner id). Returns once the request is
    /// accepted; progress arrives as events.
    pub async fn start(&self, spec: RunnerSpec) -> Result<StartOutcome, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.request(
            Request::Start {
                spec: Box::new(spec),
                reply,
            },
            rx,
        )
        .await
    }

    /// Stop a runner. Returns once the stop signal was delivered (or there was
    /// nothing to signal); `Exited` and `Removed` follow as events.
    pub async fn stop(&self, req: StopRequest) -> Result<StopOutcome, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::Stop { req, reply }, rx).await?
    }

    /// Every managed container on the host (in this supervisor's scope),
    /// running or not, as Docker sees it now.
    pub async fn list_managed(&self) -> Result<Vec<ManagedContainer>, SupervisorError> {
        Ok(self
            .engine
            .list_managed(self.scope.as_deref(), None)
            .await?)
    }

    /// Runner containers that exist and have not exited (for heartbeats).
    pub async fn running_count(&self) -> Result<usize, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::RunningCount { reply }, rx).await
    }

    /// Stop supervising. Containers keep running, for the next agent to adopt.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        let _ = self.request(Request::Shutdown { reply }, rx).await;
    }

    async fn request<T>(
        &self,
        req: Request,
        rx: oneshot::Receiver<T>,
    ) -> Result<T, SupervisorError> {
        self.tx
            .send(req)
            .await
            .map_err(|_| SupervisorError::Closed)?;
        rx.await.map_err(|_| SupervisorError::Closed)
    }
}

/// Adopt the managed containers already on the host and start the
/// supervisor. Events (in order per runner) go to `events`; a slow or gone
/// receiver never blocks the supervisor.
pub async fn spawn(
    engine: Arc<dyn ContainerEngine>,
    config: SupervisorConfig,
    events: mpsc::Sender<RunnerEvent>,
) -> Result<SupervisorHandle, SupervisorError> {
    let existing = engine.list_managed(config.scope.as_deref(), None).await?;
    let (tx, rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(forward_events(out_rx, events));

    let (lifecycle_tx, lifecycle_rx) = mpsc::unbounded_channel();
    let scope = config.scope.clone();
    let mut actor = Actor {
        engine: Arc::clone(&engine),
        config: Arc::new(config),
        requests: rx,
        lifecycle_tx,
        lifecycle_rx,
        out: out_tx,
        runners: HashMap::new(),
        tasks: JoinSet::new(),
        task_runner: HashMap::new(),
        finished: Finished::default(),
    };
    for c in existing {
        if actor.runners.contains_key(&c.runner_id) {
            tracing::warn!(runner = %c.runner_id, container = %c.container_id, "two containers claim one runner id; adopting only the first");
            continue;
        }
        tracing::info!(runner = %c.runner_id, container = %c.container_id, status = ?c.status, "adopting managed container");
        actor.launch(c.runner_id, Entry::Adopt(c));
    }
    tokio::spawn(actor.run());
    Ok(SupervisorHandle { tx, engine, scope })
}

/// Keeps events in order and lets the actor hand them off without waiting.
async fn forward_events(
    mut rx: mpsc::UnboundedReceiver<RunnerEvent>,
    events: mpsc::Sender<RunnerEvent>,
) {
    while let Some(ev) = rx.recv().await {
        if events.send(ev).await.is_err() {
            tracing::debug!("runner event receiver is gone; dropping events");
        }
    }
}

/// What the actor knows about one live runner.
struct Runner {
    last: Option<RunnerEvent>,
    stops: mpsc::UnboundedSender<StopCommand>,
}

/// Final events of recently finished runners, bounded.
#[derive(Default)]
struct Finished {
    order: VecDeque<RunnerId>,
    last: HashMap<RunnerId, RunnerEvent>,
}

impl Finished {
    fn insert(&mut self, ev: RunnerEvent) {
        if self.last.insert(ev.runner_id, ev.clone()).is_none() {
            self.order.push_back(ev.runner_id);
        }
        while self.order.len() > FINISHED_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.last.remove(&old);
            }
        }
    }
}

struct Actor {
    engine: Arc<dyn ContainerEngine>,
    config: Arc<SupervisorConfig>,
    requests: mpsc::Receiver<Request>,
    lifecycle_tx: mpsc::UnboundedSender<RunnerEvent>,
    lifecycle_rx: mpsc::UnboundedReceiver<RunnerEvent>,
    out: mpsc::UnboundedSender<RunnerEvent>,
    runners: HashMap<RunnerId, Runner>,
    tasks: JoinSet<RunnerId>,
    task_runner: HashMap<tokio::task::Id, RunnerId>,
    finished: Finished,
}

impl Actor {
    async fn run(mut self) {
        loop {
            tokio::select! {
                // Events first: everything a finished task sent is handled
                // before its completion is.
                biased;
                Some(ev) = self.lifecycle_rx.recv() => self.on_event(ev),
                req = self.requests.recv() => match req {
                    Some(Request::Start { spec, reply }) => {
                        let _ = reply.send(self.on_start(spec));
                    }
                    Some(Request::Stop { req, reply }) => self.on_stop(req, reply),
                    Some(Request::RunningCount { reply }) => {
                        let _ = reply.send(self.running_count());
                    }
                    Some(Request::Shutdown { reply }) => {
                        let _ = reply.send(());
                        break;
                    }
                    None => break,
                },
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    let task_id = match &done {
                        Ok((id, _)) => *id,
                        Err(e) => e.id(),
                    };
                    if let Err(e) = &done {
                        tracing::error!(error = %e, "runner lifecycle task failed");
                    }
                    if let Some(runner) = self.task_runner.remove(&task_id) {
                        // Ended without `Removed` (lost track, or panicked): forget it,
                        // so a later start looks at Docker again.
                        self.runners.remove(&runner);
                    }
                }
            }
        }
        tracing::info!(
            runners = self.runners.len(),
            "runner supervisor stopped; containers are left for the next agent to adopt"
        );
        // Dropping `tasks` aborts the lifecycles; the containers stay.
    }

    fn launch(&mut self, runner_id: RunnerId, entry: Entry) {
        let (stops_tx, stops_rx) = mpsc::unbounded_channel();
        let lifecycle = Lifecycle::new(
            Arc::clone(&self.engine),
            Arc::clone(&self.config),
            runner_id,
            self.lifecycle_tx.clone(),
            stops_rx,
        );
        let handle = self.tasks.spawn(lifecycle.run(entry));
        self.task_runner.insert(handle.id(), runner_id);
        self.runners.insert(
            runner_id,
            Runner {
                last: None,
                stops: stops_tx,
            },
        );
    }

    fn emit(&self, ev: RunnerEvent) {
        let _ = self.out.send(ev);
    }

    fn on_event(&mut self, ev: RunnerEvent) {
        if ev.state == RunnerState::Removed {
            self.runners.remove(&ev.runner_id);
            self.finished.insert(ev.clone());
        } else if let Some(r) = self.runners.get_mut(&ev.runner_id) {
            r.last = Some(ev.clone());
        }
        self.emit(ev);
    }

    fn on_start(&mut self, spec: Box<RunnerSpec>) -> StartOutcome {
        let id = spec.runner_id;
        if let Some(r) = self.runners.get(&id) {
            tracing::debug!(runner = %id, "start for a runner already being handled");
            if let Some(ev) = r.last.clone() {
                self.emit(ev);
            }
            return StartOutcome::AlreadyPresent;
        }
        if let Some(ev) = self.finished.last.get(&id).cloned() {
            tracing::debug!(runner = %id, "start for a finished runner; reporting its final state");
            self.emit(ev);
            return StartOutcome::AlreadyFinished;
        }
        tracing::info!(runner = %id, pool = %spec.pool, image = %spec.image, "starting runner");
        self.launch(id, Entry::New(spec));
        StartOutcome::Started
    }

    fn on_stop(
        &mut self,
        req: StopRequest,
        reply: oneshot::Sender<Result<StopOutcome, SupervisorError>>,
    ) {
        let cmd = StopCommand {
            graceful: req.graceful,
            grace: req.grace_period.unwrap_or(self.config.default_grace_period),
            reply,
        };
        let cmd = match self.runners.get(&req.runner_id) {
            // The lifecycle task replies.
            Some(r) => match r.stops.send(cmd) {
                Ok(()) => return,
                Err(mpsc::error::SendError(cmd)) => cmd,
            },
            None => cmd,
        };
        // Not (or no longer) here: say so again, so the coordinator converges.
        let ev = self
            .finished
            .last
            .get(&req.runner_id)
            .cloned()
            .unwrap_or_else(|| RunnerEvent::now(req.runner_id, None, RunnerState::Removed));
        self.emit(ev);
        let _ = cmd.reply.send(Ok(StopOutcome::NotFound));
    }

    fn running_count(&self) -> usize {
        self.runners
            .values()
            .filter(|r| {
                matches!(
                    r.last.as_ref().map(|ev| &ev.state),
                    Some(RunnerState::Creating | RunnerState::Running)
                )
            })
            .count()
    }
}
