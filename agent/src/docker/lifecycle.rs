//! The life of one runner container, as one task: ensure the image, create,
//! start, watch, stop on request, report, and remove.
//!
//! The supervisor spawns one [`Lifecycle`] per runner and forwards stop
//! commands to it, so every Docker call for one container happens in one
//! place and in order: a stop that arrives while the image is still being
//! pulled, between create and start, or during retention is handled at the
//! next step instead of racing with it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until};

use super::engine::{ContainerEngine, EngineError};
use super::events::{ContainerStatus, ManagedContainer, RunnerEvent, RunnerState};
use super::spec::{RunnerId, RunnerSpec};
use super::supervisor::{StopOutcome, SupervisorConfig, SupervisorError};

/// How often a failed `wait` is retried before the runner is given up on.
const MAX_WAIT_ATTEMPTS: u32 = 8;
/// How often a failed removal is retried.
const MAX_REMOVE_ATTEMPTS: u32 = 3;
/// Signal for an abort, and for a graceful stop when the spec names none.
const ABORT_SIGNAL: &str = "SIGTERM";

/// A stop request forwarded by the supervisor.
pub(super) struct StopCommand {
    pub graceful: bool,
    pub grace: Duration,
    pub reply: oneshot::Sender<Result<StopOutcome, SupervisorError>>,
}

/// How a lifecycle begins.
pub(super) enum Entry {
    /// A `StartRunner`: create the container unless one exists already.
    New(Box<RunnerSpec>),
    /// A container found at supervisor start-up.
    Adopt(ManagedContainer),
}

/// One runner's task. See the module docs.
pub(super) struct Lifecycle {
    engine: Arc<dyn ContainerEngine>,
    config: Arc<SupervisorConfig>,
    runner_id: RunnerId,
    events: mpsc::UnboundedSender<RunnerEvent>,
    stops: mpsc::UnboundedReceiver<StopCommand>,
    stops_open: bool,
    stop_requested: bool,
    kill_deadline: Option<Instant>,
    container_id: Option<String>,
    stop_signal: Option<String>,
}

impl Lifecycle {
    pub(super) fn new(
        engine: Arc<dyn ContainerEngine>,
        config: Arc<SupervisorConfig>,
        runner_id: RunnerId,
        events: mpsc::UnboundedSender<RunnerEvent>,
        stops: mpsc::UnboundedReceiver<StopCommand>,
    ) -> Self {
        Self {
            engine,
            config,
            runner_id,
            events,
            stops,
            stops_open: true,
            stop_requested: false,
            kill_deadline: None,
            container_id: None,
            stop_signal: None,
        }
    }

    /// Run to the end; returns the runner id for the supervisor's bookkeeping.
    pub(super) async fn run(mut self, entry: Entry) -> RunnerId {
        match entry {
            Entry::New(spec) => self.run_new(&spec).await,
            Entry::Adopt(c) => self.adopt(c, None).await,
        }
        // Stops that arrive from here on find nothing to stop.
        self.stops.close();
        while let Ok(cmd) = self.stops.try_recv() {
            let _ = cmd.reply.send(Ok(StopOutcome::NotRunning));
        }
        self.runner_id
    }

    fn emit(&self, state: RunnerState) {
        let ev = RunnerEvent::now(self.runner_id, self.container_id.clone(), state);
        // The supervisor only goes away on shutdown, which aborts this task.
        let _ = self.events.send(ev);
    }

    fn fail(&self, reason: String, log_tail: Vec<String>) {
        tracing::warn!(runner = %self.runner_id, %reason, "runner failed");
        self.emit(RunnerState::Failed { reason, log_tail });
    }

    async fn run_new(&mut self, spec: &RunnerSpec) {
        // Idempotency across agent restarts: a container for this runner may
        // already exist (running or not). Never create a second one.
        match self.engine.list_managed(None, Some(self.runner_id)).await {
            Ok(found) => {
                if let Some(c) = found.into_iter().next() {
                    tracing::info!(runner = %self.runner_id, container = %c.container_id, "runner already has a container; adopting it");
                    return self.adopt(c, Some(spec)).await;
                }
            }
            Err(e) => return self.fail(format!("look up existing container: {e}"), Vec::new()),
        }

        if !self.ensure_image(&spec.image).await {
            return;
        }

        let scope = self.config.scope.as_deref();
        let id = match self.engine.create_container(spec, scope).await {
            Ok(id) => id,
            Err(e) if e.is_conflict() => {
                // The name is taken: someone created this runner's container
                // in the meantime. Adopt it if it is ours.
                let existing = self.engine.list_managed(None, Some(self.runner_id)).await;
                if let Some(c) = existing.ok().and_then(|found| found.into_iter().next()) {
                    return self.adopt(c, Some(spec)).await;
                }
                self.fail(
                    format!("create container {}: {e}", spec.runner_id.container_name()),
                    Vec::new(),
                );
                return self.emit(RunnerState::Removed);
            }
            Err(e) => {
                self.fail(
                    format!("create container for image {}: {e}", spec.image),
                    Vec::new(),
                );
                return self.emit(RunnerState::Removed);
            }
        };
        self.container_id = Some(id);
        self.stop_signal = spec.stop_signal.clone();
        self.emit(RunnerState::Creating);
        self.start_and_watch().await;
    }

    /// Make sure the image is present, pulling it if not. On failure the
    /// runner is reported `Failed` + `Removed` and false is returned.
    async fn ensure_image(&mut self, image: &str) -> bool {
        match self.engine.image_present(image).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => {
                self.fail(format!("inspect image {image}: {e}"), Vec::new());
                self.emit(RunnerState::Removed);
                return false;
            }
        }
        let engine = Arc::clone(&self.engine);
        let pull = engine.pull_image(image);
        tokio::pin!(pull);
        let result = loop {
            tokio::select! {
                res = &mut pull => break Some(res),
                cmd = self.stops.recv(), if self.stops_open => match cmd {
                    Some(cmd) => {
                        self.stop_requested = true;
                        let _ = cmd.reply.send(Ok(StopOutcome::NotRunning));
                        break None;
                    }
                    None => self.stops_open = false,
                },
            }
        };
        match result {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                self.fail(
                    format!("image {image} not present and pull failed: {e}"),
                    Vec::new(),
                );
                self.emit(RunnerState::Removed);
                false
            }
            None => {
                tracing::info!(runner = %self.runner_id, "stopped while pulling its image");
                self.emit(RunnerState::Removed);
                false
            }
        }
    }

    /// Take over an existing container. `spec` is set when a `StartRunner`
    /// found it (a created container is then started, not discarded).
    async fn adopt(&mut self, c: ManagedContainer, spec: Option<&RunnerSpec>) {
        self.container_id = Some(c.container_id);
        self.stop_signal = c
            .stop_signal
            .or_else(|| spec.and_then(|s| s.stop_signal.clone()));
        match c.status {
            ContainerStatus::Running => {
                self.emit(RunnerState::Running);
                self.watch().await;
            }
            ContainerStatus::Created if spec.is_some() => {
                self.emit(RunnerState::Creating);
                self.start_and_watch().await;
            }
            ContainerStatus::Created => {
                self.fail(
                    "container was created but never started before the agent restarted".into(),
                    Vec::new(),
                );
                self.remove_and_report().await;
            }
            ContainerStatus::Exited { code } => self.after_exit(code).await,
        }
    }

    async fn start_and_watch(&mut self) {
        self.take_pending_stops();
        if self.stop_requested {
            tracing::info!(runner = %self.runner_id, "stopped before it started");
            return self.remove_and_report().await;
        }
        let Some(id) = self.container_id.clone() else {
            return;
        };
        if let Err(e) = self.engine.start_container(&id).await {
            let tail = self.log_tail(&id).await;
            self.fail(format!("start container: {e}"), tail);
            self.retain_failed().await;
            return self.remove_and_report().await;
        }
        self.emit(RunnerState::Running);
        self.watch().await;
    }

    /// Wait for the container to exit (handling stop commands meanwhile),
    /// then report and clean up.
    async fn watch(&mut self) {
        let Some(id) = self.container_id.clone() else {
            return;
        };
        let mut attempts = 0;
        let code = loop {
            match self.wait_handling_stops(&id).await {
                Ok(code) => break code,
                Err(e) if e.is_not_found() => {
                    tracing::warn!(runner = %self.runner_id, "container vanished while being watched");
                    return self.emit(RunnerState::Removed);
                }
                Err(e) => {
                    attempts += 1;
                    if attempts >= MAX_WAIT_ATTEMPTS {
                        return self.fail(format!("lost track of container: {e}"), Vec::new());
                    }
                    let backoff = Duration::from_millis(500 << attempts.min(6));
                    tracing::warn!(runner = %self.runner_id, error = %e, ?backoff, "waiting for container failed; retrying");
                    sleep(backoff).await;
                }
            }
        };
        self.after_exit(code).await;
    }

    async fn wait_handling_stops(&mut self, id: &str) -> Result<i64, EngineError> {
        let engine = Arc::clone(&self.engine);
        let wait = engine.wait_container(id);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                res = &mut wait => return res,
                cmd = self.stops.recv(), if self.stops_open => match cmd {
                    Some(cmd) => self.signal_for_stop(id, cmd).await,
                    None => self.stops_open = false,
                },
                () = sleep_until(self.kill_deadline.unwrap_or_else(Instant::now)), if self.kill_deadline.is_some() => {
                    self.kill_deadline = None;
                    tracing::info!(runner = %self.runner_id, "stop deadline passed; killing");
                    match self.engine.kill_container(id, "SIGKILL").await {
                        Err(e) if !(e.is_conflict() || e.is_not_found()) => {
                            tracing::warn!(runner = %self.runner_id, error = %e, "kill failed");
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Graceful: the runner's stop signal (SIGQUIT for gitlab-runner: finish
    /// the job), SIGKILL after the grace period. Abort: SIGTERM, SIGKILL after
    /// the short abort timeout.
    async fn signal_for_stop(&mut self, id: &str, cmd: StopCommand) {
        self.stop_requested = true;
        let (signal, wait) = if cmd.graceful {
            (
                self.stop_signal
                    .as_deref()
                    .unwrap_or(ABORT_SIGNAL)
                    .to_owned(),
                cmd.grace,
            )
        } else {
            (ABORT_SIGNAL.to_owned(), self.config.abort_timeout)
        };
        tracing::info!(runner = %self.runner_id, %signal, graceful = cmd.graceful, ?wait, "stopping runner");
        let reply = match self.engine.kill_container(id, &signal).await {
            Ok(()) => {
                let deadline = Instant::now() + wait;
                self.kill_deadline = Some(self.kill_deadline.map_or(deadline, |d| d.min(deadline)));
                Ok(StopOutcome::Signalled)
            }
            // Not running (any more): its exit is about to be reported.
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(StopOutcome::NotRunning),
            Err(e) => Err(SupervisorError::Engine(e)),
        };
        let _ = cmd.reply.send(reply);
    }

    async fn after_exit(&mut self, code: i64) {
        self.emit(RunnerState::Exited { code });
        // A non-zero exit we asked for (SIGKILL after a stop) is no failure.
        if code != 0 && !self.stop_requested {
            let tail = match self.container_id.clone() {
                Some(id) => self.log_tail(&id).await,
                None => Vec::new(),
            };
            self.fail(format!("runner container exited with code {code}"), tail);
            self.retain_failed().await;
        }
        self.remove_and_report().await;
    }

    async fn log_tail(&self, id: &str) -> Vec<String> {
        match self.engine.log_tail(id, self.config.log_tail_lines).await {
            Ok(lines) => lines,
            Err(e) => vec![format!("<could not read the container log: {e}>")],
        }
    }

    /// Keep a failed container for inspection for the configured retention,
    /// or until a stop arrives.
    async fn retain_failed(&mut self) {
        let retention = self.config.failed_retention;
        if retention.is_zero() || self.stop_requested {
            return;
        }
        tracing::info!(runner = %self.runner_id, ?retention, "keeping failed container for inspection");
        let until = sleep(retention);
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => return,
                cmd = self.stops.recv(), if self.stops_open => match cmd {
                    Some(cmd) => {
                        self.stop_requested = true;
                        let _ = cmd.reply.send(Ok(StopOutcome::NotRunning));
                        return;
                    }
                    None => self.stops_open = false,
                },
            }
        }
    }

    fn take_pending_stops(&mut self) {
        while let Ok(cmd) = self.stops.try_recv() {
            self.stop_requested = true;
            let _ = cmd.reply.send(Ok(StopOutcome::NotRunning));
        }
    }

    async fn remove_and_report(&mut self) {
        if let Some(id) = self.container_id.clone() {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.engine.remove_container(&id).await {
                    Ok(()) => break,
                    Err(e) if e.is_not_found() => break,
                    Err(e) if attempt >= MAX_REMOVE_ATTEMPTS => {
                        return self.fail(format!("remove container: {e}"), Vec::new());
                    }
                    Err(e) => {
                        tracing::warn!(runner = %self.runner_id, error = %e, "remove failed; retrying");
                        sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        self.emit(RunnerState::Removed);
    }
}
