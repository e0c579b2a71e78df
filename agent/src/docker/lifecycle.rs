//! The life of one runner container, as one task: ensure the image, create,
//! start, watch, stop on request, report, remove, and remove what GitLab's
//! docker executor left behind.
//!
//! The supervisor spawns one [`Lifecycle`] per runner and forwards stop
//! commands to it, so every Docker call for one container happens in one
//! place and in order: a stop that arrives while the image is still being
//! pulled, between create and start, or during retention is handled at the
//! next step instead of racing with it.
//!
//! Faults: when Docker cannot be reached (dockerd restarting, socket gone),
//! the lifecycle never gives up. It retries with capped, jittered backoff,
//! looks its container up again by label when Docker answers, and carries on
//! from what it finds (still running: watch; exited: report and remove;
//! gone: report `Removed`). A stop that cannot be delivered meanwhile is
//! kept and delivered once Docker answers. `Removed` is reported only after
//! Docker confirms that no container with this runner's label is left.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until};

use super::engine::{ContainerEngine, EngineError};
use super::events::{ContainerStatus, ManagedContainer, RunnerEvent, RunnerState};
use super::leftovers::LeftoverCount;
use super::spec::{RunnerId, RunnerSpec};
use super::supervisor::{StopOutcome, SupervisorConfig, SupervisorError};
use crate::backoff::Backoff;

/// First delay after a failed Docker call; doubles up to the configured cap.
const ENGINE_RETRY_INITIAL: Duration = Duration::from_millis(500);
/// How often removing the executor's leftovers is tried before they are
/// left to the periodic garbage collector.
const MAX_LEFTOVER_ATTEMPTS: u32 = 5;
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
    /// The container is not started before `issued` (the fsync of its
    /// short tokens as issued by this agent) is done.
    New {
        spec: Box<RunnerSpec>,
        issued: tokio::task::JoinHandle<()>,
    },
    /// A container found at supervisor start-up.
    Adopt(ManagedContainer),
    /// A stop for a runner the supervisor does not track: find its container
    /// by label (waiting for Docker if need be) and stop and remove it, or
    /// confirm that there is none.
    Lookup,
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
    /// A stop signal (and its grace) not yet delivered because Docker failed.
    pending_signal: Option<(String, Duration)>,
    container_id: Option<String>,
    stop_signal: Option<String>,
    short_tokens: Vec<String>,
    backoff: Backoff,
    /// The image of a runner started here (not adopted), for `Running`.
    image: Option<String>,
    /// Time spent waiting for the image to be pulled, for `Running`.
    image_pull: Duration,
}

impl Lifecycle {
    pub(super) fn new(
        engine: Arc<dyn ContainerEngine>,
        config: Arc<SupervisorConfig>,
        runner_id: RunnerId,
        events: mpsc::UnboundedSender<RunnerEvent>,
        stops: mpsc::UnboundedReceiver<StopCommand>,
    ) -> Self {
        let backoff = Backoff::new(
            ENGINE_RETRY_INITIAL.min(config.engine_retry_max),
            config.engine_retry_max,
        );
        Self {
            engine,
            config,
            runner_id,
            events,
            stops,
            stops_open: true,
            stop_requested: false,
            kill_deadline: None,
            pending_signal: None,
            container_id: None,
            stop_signal: None,
            short_tokens: Vec::new(),
            backoff,
            image: None,
            image_pull: Duration::ZERO,
        }
    }

    /// Run to the end; returns the runner id for the supervisor's bookkeeping.
    pub(super) async fn run(mut self, entry: Entry) -> RunnerId {
        match entry {
            Entry::New { spec, issued } => self.run_new(&spec, issued).await,
            Entry::Adopt(c) => self.adopt(c, None).await,
            Entry::Lookup => {
                self.stop_requested = true;
                match self.find_container().await {
                    Some(c) => self.adopt(c, None).await,
                    None => self.remove_and_report().await,
                }
            }
        }
        // Stops that arrive from here on find nothing to stop.
        self.stops.close();
        while let Ok(cmd) = self.stops.try_recv() {
            let _ = cmd.reply.send(Ok(StopOutcome::NotRunning));
        }
        self.runner_id
    }

    fn emit(&self, state: RunnerState) {
        self.emit_with(state, None);
    }

    fn emit_with(&self, state: RunnerState, detail: Option<String>) {
        let ev =
            RunnerEvent::now(self.runner_id, self.container_id.clone(), state).with_detail(detail);
        // The supervisor only goes away on shutdown, which aborts this task.
        let _ = self.events.send(ev);
    }

    fn fail(&self, reason: String, log_tail: Vec<String>) {
        tracing::warn!(runner = %self.runner_id, %reason, "runner failed");
        self.emit(RunnerState::Failed { reason, log_tail });
    }

    /// Wait out a Docker failure (capped, jittered backoff), queueing any
    /// stop that arrives meanwhile.
    async fn pause(&mut self, err: &EngineError, what: &str) {
        let delay = self.backoff.next_delay();
        tracing::warn!(runner = %self.runner_id, error = %err, retry_in = ?delay, "{what} failed; retrying (is Docker restarting?)");
        let until = sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => return,
                cmd = self.stops.recv(), if self.stops_open => match cmd {
                    Some(cmd) => self.queue_stop(cmd),
                    None => self.stops_open = false,
                },
            }
        }
    }

    /// The signal and the time to wait before SIGKILL for a stop command.
    /// Graceful: the runner's stop signal (SIGQUIT for gitlab-runner: finish
    /// the job) and the grace period. Abort: SIGTERM and the abort timeout.
    fn signal_of(&self, cmd: &StopCommand) -> (String, Duration) {
        if cmd.graceful {
            (
                self.stop_signal
                    .as_deref()
                    .unwrap_or(ABORT_SIGNAL)
                    .to_owned(),
                cmd.grace,
            )
        } else {
            (ABORT_SIGNAL.to_owned(), self.config.abort_timeout)
        }
    }

    /// Remember a stop to deliver once Docker answers.
    fn queue_stop(&mut self, cmd: StopCommand) {
        self.stop_requested = true;
        let (signal, wait) = self.signal_of(&cmd);
        self.pending_signal = Some(match self.pending_signal.take() {
            // An abort wins over a graceful stop; the earlier deadline wins.
            Some((old, old_wait)) if !cmd.graceful || old == ABORT_SIGNAL => {
                let signal = if cmd.graceful { old } else { signal };
                (signal, wait.min(old_wait))
            }
            _ => (signal, wait),
        });
        tracing::info!(runner = %self.runner_id, "stop queued until Docker answers");
        let _ = cmd.reply.send(Ok(StopOutcome::Queued));
    }

    /// This runner's container as Docker lists it by label, retrying while
    /// Docker cannot be reached. `None` means Docker confirmed there is none.
    async fn find_container(&mut self) -> Option<ManagedContainer> {
        loop {
            match self.engine.list_managed(None, Some(self.runner_id)).await {
                Ok(found) => {
                    self.backoff.reset();
                    return found.into_iter().next();
                }
                Err(e) => self.pause(&e, "look up the runner's container").await,
            }
        }
    }

    async fn run_new(&mut self, spec: &RunnerSpec, issued: tokio::task::JoinHandle<()>) {
        self.short_tokens = spec.short_tokens.clone();
        self.image = Some(spec.image.clone());
        if self.stop_requested {
            tracing::info!(runner = %self.runner_id, "stopped before its container was created");
            return self.remove_and_report().await;
        }
        // Create first, and ask Docker nothing before: in a burst of starts
        // every extra call waits in dockerd's queue. Idempotency across agent
        // restarts comes from the container's name, which is the runner's:
        // Docker refuses a second one (conflict), and the existing container
        // is adopted. A missing image answers 404: pull it, then create once
        // more (what `docker run` does).
        let mut pulled = false;
        let id = loop {
            tracing::debug!(runner = %self.runner_id, "creating container");
            let err = match self
                .engine
                .create_container(spec, self.config.scope.as_deref())
                .await
            {
                Ok(id) => break id,
                Err(e) => e,
            };
            if err.is_not_found() && !pulled {
                if !self.pull_image(spec).await {
                    return;
                }
                pulled = true;
                continue;
            }
            // The name may be taken (this runner's container exists: an
            // earlier agent created it) or the answer lost (Docker went away
            // mid-request): adopt what exists, if anything.
            if let Some(c) = self.find_container().await {
                tracing::info!(runner = %self.runner_id, container = %c.container_id, "runner already has a container; adopting it");
                let _ = issued.await;
                return self.adopt(c, Some(spec)).await;
            }
            let what = if err.is_conflict() {
                format!(
                    "create container {}: {err}",
                    spec.runner_id.container_name()
                )
            } else {
                format!("create container for image {}: {err}", spec.image)
            };
            self.fail(what, Vec::new());
            return self.remove_and_report().await;
        };
        self.container_id = Some(id);
        self.stop_signal = spec.stop_signal.clone();
        // Before anything runs: an image for another architecture would
        // start only through emulation (binfmt), if at all.
        if let Some(reason) = self.engine.platform_mismatch(&spec.image).await {
            tracing::warn!(runner = %self.runner_id, reason = %reason, "refusing an image for another architecture");
            self.fail(reason, Vec::new());
            let _ = issued.await;
            return self.remove_and_report().await;
        }
        self.emit(RunnerState::Creating);
        // Leftovers of its jobs can only appear once it runs; by then the
        // collector must know its short tokens as ours, crash or not.
        let _ = issued.await;
        self.start_and_watch().await;
    }

    /// Pull a missing image. On failure (or a stop meanwhile) the runner is
    /// reported `Failed` + `Removed` and false is returned.
    async fn pull_image(&mut self, spec: &RunnerSpec) -> bool {
        let image = spec.image.as_str();
        let engine = Arc::clone(&self.engine);
        let pull = engine.pull_image(image, spec.registry_auth.as_ref());
        tokio::pin!(pull);
        // Includes waiting on another runner's pull of the same image.
        let started = Instant::now();
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
            Some(Ok(())) => {
                self.image_pull = started.elapsed();
                true
            }
            Some(Err(e)) => {
                let reason = match super::engine::pull_failure_cause(&e) {
                    Some(cause) => format!("pull image {image}: {cause}: {e}"),
                    None => format!("pull image {image}: {e}"),
                };
                self.fail(reason, Vec::new());
                self.remove_and_report().await;
                false
            }
            None => {
                tracing::info!(runner = %self.runner_id, "stopped while pulling its image");
                self.remove_and_report().await;
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
        if !c.short_tokens.is_empty() {
            self.short_tokens = c.short_tokens;
        }
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
                if !self.stop_requested {
                    self.fail(
                        "container was created but never started before the agent restarted".into(),
                        Vec::new(),
                    );
                }
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
            return self.remove_and_report().await;
        };
        if let Err(e) = self.engine.start_container(&id).await {
            let tail = self.log_tail(&id).await;
            self.fail(format!("start container: {e}"), tail);
            self.retain_failed().await;
            return self.remove_and_report().await;
        }
        let pull_ms = u64::try_from(self.image_pull.as_millis()).unwrap_or(u64::MAX);
        // A pull that took under a millisecond still was one.
        let pull_ms = if self.image_pull.is_zero() { 0 } else { pull_ms.max(1) };
        let ev = RunnerEvent::now(self.runner_id, self.container_id.clone(), RunnerState::Running)
            .with_image(self.image.clone(), pull_ms);
        let _ = self.events.send(ev);
        self.watch().await;
    }

    /// Wait for the container to exit (handling stop commands meanwhile),
    /// then report and clean up. Docker failures are waited out: the
    /// container is looked up again by label and watching goes on from
    /// what Docker says.
    async fn watch(&mut self) {
        loop {
            let Some(id) = self.container_id.clone() else {
                return self.remove_and_report().await;
            };
            let result = match self.deliver_pending_signal(&id).await {
                Ok(()) => self.wait_handling_stops(&id).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(code) => {
                    self.backoff.reset();
                    return self.after_exit(code).await;
                }
                Err(e) if e.is_not_found() => {
                    tracing::warn!(runner = %self.runner_id, "container vanished while being watched");
                    return self.remove_and_report().await;
                }
                Err(e) => {
                    self.pause(&e, "watch the container").await;
                    match self.find_container().await {
                        None => {
                            tracing::warn!(runner = %self.runner_id, "container is gone after a Docker outage");
                            return self.remove_and_report().await;
                        }
                        Some(c) => {
                            tracing::info!(runner = %self.runner_id, container = %c.container_id, status = ?c.status, "Docker answers again; re-adopted the container");
                            self.container_id = Some(c.container_id);
                            match c.status {
                                ContainerStatus::Running => {}
                                ContainerStatus::Exited { code } => {
                                    return self.after_exit(code).await;
                                }
                                ContainerStatus::Created => {
                                    if !self.stop_requested {
                                        self.fail(
                                            "container is no longer started after a Docker outage"
                                                .into(),
                                            Vec::new(),
                                        );
                                    }
                                    return self.remove_and_report().await;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Deliver a stop signal that Docker could not take earlier.
    async fn deliver_pending_signal(&mut self, id: &str) -> Result<(), EngineError> {
        let Some((signal, wait)) = self.pending_signal.clone() else {
            return Ok(());
        };
        match self.engine.kill_container(id, &signal).await {
            Ok(()) => {
                tracing::info!(runner = %self.runner_id, %signal, "delivered a queued stop");
                self.pending_signal = None;
                if signal != "SIGKILL" {
                    self.arm_kill_deadline(wait);
                }
                Ok(())
            }
            Err(e) if e.is_conflict() || e.is_not_found() => {
                self.pending_signal = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn arm_kill_deadline(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        self.kill_deadline = Some(self.kill_deadline.map_or(deadline, |d| d.min(deadline)));
    }

    async fn wait_handling_stops(&mut self, id: &str) -> Result<i64, EngineError> {
        let engine = Arc::clone(&self.engine);
        let wait = engine.wait_container(id);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                res = &mut wait => return res,
                cmd = self.stops.recv(), if self.stops_open => match cmd {
                    Some(cmd) => self.signal_for_stop(id, cmd).await?,
                    None => self.stops_open = false,
                },
                () = sleep_until(self.kill_deadline.unwrap_or_else(Instant::now)), if self.kill_deadline.is_some() => {
                    self.kill_deadline = None;
                    tracing::info!(runner = %self.runner_id, "stop deadline passed; killing");
                    match self.engine.kill_container(id, "SIGKILL").await {
                        Ok(()) => {}
                        Err(e) if e.is_conflict() || e.is_not_found() => {}
                        Err(e) => {
                            self.pending_signal = Some(("SIGKILL".into(), Duration::ZERO));
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Deliver a stop; if Docker fails, keep it for later and hand the error
    /// to the watch loop.
    async fn signal_for_stop(&mut self, id: &str, cmd: StopCommand) -> Result<(), EngineError> {
        self.stop_requested = true;
        let (signal, wait) = self.signal_of(&cmd);
        tracing::info!(runner = %self.runner_id, %signal, graceful = cmd.graceful, ?wait, "stopping runner");
        match self.engine.kill_container(id, &signal).await {
            Ok(()) => {
                self.arm_kill_deadline(wait);
                let _ = cmd.reply.send(Ok(StopOutcome::Signalled));
                Ok(())
            }
            // Not running (any more): its exit is about to be reported.
            Err(e) if e.is_conflict() || e.is_not_found() => {
                let _ = cmd.reply.send(Ok(StopOutcome::NotRunning));
                Ok(())
            }
            Err(e) => {
                self.queue_stop(cmd);
                Err(e)
            }
        }
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

    /// Remove the runner's container until Docker lists none with its label
    /// (waiting out Docker failures), remove what the docker executor left,
    /// and only then report `Removed`.
    async fn remove_and_report(&mut self) {
        let mut target = self.container_id.clone();
        loop {
            if let Some(id) = target.take() {
                match self.engine.remove_container(&id).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        self.pause(&e, "remove the container").await;
                        target = Some(id);
                        continue;
                    }
                }
            }
            match self.engine.list_managed(None, Some(self.runner_id)).await {
                Ok(found) => match found.into_iter().next() {
                    None => break,
                    Some(c) => {
                        if !c.short_tokens.is_empty() && self.short_tokens.is_empty() {
                            self.short_tokens = c.short_tokens;
                        }
                        target = Some(c.container_id);
                    }
                },
                Err(e) => self.pause(&e, "confirm the container is gone").await,
            }
        }
        self.backoff.reset();
        let removed = self.remove_leftovers().await;
        let detail = (!removed.is_empty())
            .then(|| format!("removed what the docker executor left: {removed}"));
        self.emit_with(RunnerState::Removed, detail);
    }

    /// Remove every container, volume and network the docker executor
    /// labelled with this runner's short token. Bounded retries: what stays
    /// is the periodic garbage collector's.
    async fn remove_leftovers(&mut self) -> LeftoverCount {
        let mut total = LeftoverCount::default();
        for token in self.short_tokens.clone() {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.engine.remove_executor_leftovers(&token).await {
                    Ok(n) => {
                        total += n;
                        break;
                    }
                    Err(e) if attempt >= MAX_LEFTOVER_ATTEMPTS => {
                        tracing::warn!(runner = %self.runner_id, short_token = %token, error = %e, "could not remove the docker executor's leftovers; the periodic collector will");
                        break;
                    }
                    Err(e) => {
                        self.pause(&e, "remove the docker executor's leftovers")
                            .await
                    }
                }
            }
        }
        if !total.is_empty() {
            tracing::info!(runner = %self.runner_id, removed = %total, "removed what the docker executor left behind");
        }
        total
    }
}
