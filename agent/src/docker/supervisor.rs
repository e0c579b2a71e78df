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
//! * A stop for a runner the supervisor does not track (finished, or never
//!   seen by this agent process) looks its container up by label and stops
//!   and removes it; `Removed` is reported only once Docker confirms that
//!   nothing with the runner's label is left.
//! * What GitLab's docker executor leaves (job, helper and service
//!   containers, cache volumes, networks) is removed when a runner ends, and
//!   a periodic collector (also once at start) removes leftovers of runners
//!   that are not live here: by default only those whose short token this
//!   agent issued (see [`super::issued`] and [`super::leftovers`]).
//! * Shutting down (or dropping every handle) stops the watching but leaves
//!   containers alone, for the next agent to adopt.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::engine::{ContainerEngine, EngineError};
use super::events::{ManagedContainer, RunnerEvent, RunnerState};
use super::issued::{self, IssuedTokens};
use super::leftovers::{self, GcPolicy, LeftoverCount};
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
    /// Where the short tokens of the runners this agent started are kept
    /// (`<state_dir>/issued-short-tokens`); `None` = in memory only.
    pub issued_tokens_file: Option<PathBuf>,
    /// Whose docker-executor leftovers the collector removes.
    pub gc_policy: GcPolicy,
    /// How often the leftover collector runs (and once at start); zero
    /// disables it (runners still clean up after themselves).
    pub leftover_gc_interval: Duration,
    /// Longest pause between retries while Docker cannot be reached.
    pub engine_retry_max: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            scope: None,
            failed_retention: Duration::ZERO,
            abort_timeout: Duration::from_secs(10),
            default_grace_period: Duration::from_secs(3600),
            log_tail_lines: 20,
            issued_tokens_file: None,
            gc_policy: GcPolicy::IssuedOnly,
            leftover_gc_interval: Duration::from_secs(600),
            engine_retry_max: Duration::from_secs(30),
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
    /// The supervisor does not track the runner (it finished, or this agent
    /// process never saw it): its container is looked up by label, stopped
    /// and removed if it exists, and `Removed` follows once Docker confirms
    /// none is left.
    NotFound,
    /// Docker cannot be reached right now: the stop is kept and delivered as
    /// soon as Docker answers.
    Queued,
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
    /// The issued short tokens could not be read.
    #[error("read issued short tokens from {}: {source}", path.display())]
    Issued {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
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
    let issued = match &config.issued_tokens_file {
        Some(path) => IssuedTokens::load(path, issued::DEFAULT_CAPACITY).map_err(|source| {
            SupervisorError::Issued {
                path: path.clone(),
                source,
            }
        })?,
        None => IssuedTokens::in_memory(issued::DEFAULT_CAPACITY),
    };
    let issued = Arc::new(Mutex::new(issued));
    let (live_tx, live_rx) = watch::channel(HashSet::new());
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
        issued: Arc::clone(&issued),
        live: live_tx,
        gc: None,
    };
    for c in existing {
        if actor.runners.contains_key(&c.runner_id) {
            tracing::warn!(runner = %c.runner_id, container = %c.container_id, "two containers claim one runner id; adopting only the first");
            continue;
        }
        tracing::info!(runner = %c.runner_id, container = %c.container_id, status = ?c.status, "adopting managed container");
        actor.remember_issued(&c.short_tokens);
        let tokens = c.short_tokens.clone();
        actor.launch(c.runner_id, Entry::Adopt(c), tokens);
    }
    let interval = actor.config.leftover_gc_interval;
    if !interval.is_zero() {
        let collector = LeftoverCollector {
            engine: Arc::clone(&engine),
            live: live_rx,
            issued,
            policy: actor.config.gc_policy,
            scope: actor.config.scope.clone(),
        };
        actor.gc = Some(tokio::spawn(collector.run(interval)));
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
    /// Its GitLab short-token candidates (none known for a `Lookup`).
    short_tokens: Vec<String>,
    /// Its lifecycle task.
    task: tokio::task::Id,
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
    issued: Arc<Mutex<IssuedTokens>>,
    /// Short tokens of the live runners, for the leftover collector.
    live: watch::Sender<HashSet<String>>,
    gc: Option<tokio::task::JoinHandle<()>>,
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
                        // Ended without `Removed` (panicked): forget it, so a
                        // later start or stop looks at Docker again. A newer
                        // lifecycle for the same runner stays.
                        if self.runners.get(&runner).is_some_and(|r| r.task == task_id) {
                            self.runners.remove(&runner);
                            self.publish_live();
                        }
                    }
                }
            }
        }
        if let Some(gc) = self.gc.take() {
            gc.abort();
        }
        tracing::info!(
            runners = self.runners.len(),
            "runner supervisor stopped; containers are left for the next agent to adopt"
        );
        // Dropping `tasks` aborts the lifecycles; the containers stay.
    }

    /// Persist short tokens as issued by this agent (before any container
    /// that could leave something behind exists).
    fn remember_issued(&self, tokens: &[String]) {
        remember_issued(&self.issued, tokens);
    }

    /// [`Self::remember_issued`] off the actor (each is an fsync): a burst
    /// of starts must not queue behind one another's disk writes. The
    /// lifecycle creates the container meanwhile and starts it only after.
    fn persist_issued(&self, tokens: Vec<String>) -> tokio::task::JoinHandle<()> {
        let issued = Arc::clone(&self.issued);
        tokio::task::spawn_blocking(move || remember_issued(&issued, &tokens))
    }

    fn publish_live(&self) {
        let live: HashSet<String> = self
            .runners
            .values()
            .flat_map(|r| r.short_tokens.iter().cloned())
            .collect();
        self.live.send_replace(live);
    }

    fn launch(&mut self, runner_id: RunnerId, entry: Entry, short_tokens: Vec<String>) {
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
                short_tokens,
                task: handle.id(),
            },
        );
        self.publish_live();
    }

    fn emit(&self, ev: RunnerEvent) {
        let _ = self.out.send(ev);
    }

    fn on_event(&mut self, ev: RunnerEvent) {
        if ev.state == RunnerState::Removed {
            self.runners.remove(&ev.runner_id);
            self.finished.insert(ev.clone());
            self.publish_live();
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
        let issued = self.persist_issued(spec.short_tokens.clone());
        let tokens = spec.short_tokens.clone();
        self.launch(id, Entry::New { spec, issued }, tokens);
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
        // Not tracked (any more): ask Docker. A lifecycle looks the container
        // up by label, stops and removes it if it exists, and reports
        // `Removed` once Docker confirms none is left.
        tracing::info!(runner = %req.runner_id, "stop for a runner not tracked here; looking its container up");
        self.launch(req.runner_id, Entry::Lookup, Vec::new());
        let (reply, _ignored) = oneshot::channel();
        if let Some(r) = self.runners.get(&req.runner_id) {
            let _ = r.stops.send(StopCommand {
                graceful: cmd.graceful,
                grace: cmd.grace,
                reply,
            });
        }
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

/// The periodic collector of the docker executor's leftovers.
struct LeftoverCollector {
    engine: Arc<dyn ContainerEngine>,
    live: watch::Receiver<HashSet<String>>,
    issued: Arc<Mutex<IssuedTokens>>,
    policy: GcPolicy,
    scope: Option<String>,
}

impl LeftoverCollector {
    async fn run(self, interval: Duration) {
        loop {
            match self.collect().await {
                Ok(n) if !n.is_empty() => {
                    tracing::info!(removed = %n, policy = ?self.policy, "removed docker executor leftovers of runners that are not live here");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "collecting docker executor leftovers failed; trying again later")
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One pass. A runner is live if the supervisor ran it before *or*
    /// after the listing (so one that starts meanwhile is never collected),
    /// or if its runner container still exists (even one the supervisor does
    /// not track, e.g. being looked up for a stop).
    async fn collect(&self) -> Result<LeftoverCount, EngineError> {
        let mut live = self.live.borrow().clone();
        let found = self.engine.list_executor_leftovers().await?;
        live.extend(self.live.borrow().iter().cloned());
        for c in self
            .engine
            .list_managed(self.scope.as_deref(), None)
            .await?
        {
            live.extend(c.short_tokens);
        }
        let issued = self
            .issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot();
        let chosen = leftovers::select_for_gc(&found, &live, &issued, self.policy);
        let mut total = LeftoverCount::default();
        for token in chosen.keys() {
            if self.live.borrow().contains(token) {
                continue;
            }
            total += self.engine.remove_executor_leftovers(token).await?;
        }
        Ok(total)
    }
}

fn remember_issued(issued: &Mutex<IssuedTokens>, tokens: &[String]) {
    let mut issued = issued.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = issued.insert_all(tokens) {
        tracing::warn!(error = %e, "could not persist the runner's short token; the leftover collector may not recognise its leftovers after a restart");
    }
}
