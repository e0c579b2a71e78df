//! The runner reconciler: one actor that owns every active runner.
//!
//! Wanted state comes from the pure scheduler ([`crate::scheduler::plan`])
//! given pending demand, pools and the fleet. Observed state comes from
//! agents (container status, the containers present at each reconnect) and
//! from GitLab (which runner took which job). Each pass moves observed toward
//! wanted. Where each decision lives:
//!
//! * [`planning`]: one pass: demand + runners + fleet → `scheduler::plan`
//!   (which places runners, GPUs included) → starts and stops; the status
//!   operators see.
//! * [`gitlab_ops`]: GitLab runners: create (`POST /user/runners`, then
//!   `StartRunner` to the agent), delete (`DELETE /runners/:id`, only from
//!   [`Reconciler::finish`]), retries, and the collector of marked runners
//!   without a record.
//! * [`reports`]: what agents report: `on_connected` (the containers present
//!   at each reconnect), `on_status` (container state changes), and GitLab's
//!   job activity.
//! * [`stock`]: GitLab runners created ahead of demand (a pool's `stock`),
//!   taken by starts so they skip `POST /user/runners`; bounded, tokens in
//!   memory only, deleted at shutdown and collected after a crash.
//! * [`stops`]: acknowledged stops. A stop stays wanted until the agent
//!   confirms the container gone; it is resent on every reconnect and made
//!   forceful at its deadline. Timeouts of runners that never ran.
//! * [`drains`]: draining an agent until a deadline; `agent.drained` once it
//!   has no runner left.
//! * [`view`]: the pure pieces (`effective_pending`, runners in the
//!   scheduler's view; agents come typed from `Fleet::scheduler_view`).
//!
//! A runner's GitLab runner (one it took from the stock included) is
//! deleted only when the runner is finished:
//! its container is confirmed gone (an `Exited`/`Failed`/`Removed` report,
//! or absent from the agent's list at reconnect), no container can exist
//! (GitLab creation failed, the template did not render), or its agent is
//! lost or revoked.
//!
//! GitLab calls run in spawned tasks and report back as [`Op`]s, so a slow
//! GitLab never stalls the loop. Every transition is written to SQLite (one
//! typed [`RunnerRecord`] per runner) and the audit log. The writes of one
//! pass of the loop are journalled and handed to [`writer`], a task of its
//! own, at the end of the pass ([`Reconciler::flush`]): it commits them in
//! one transaction (a burst of 64 starts is one commit, not 128) and only
//! then creates their GitLab runners, while the loop goes on (it never
//! waits for SQLite, except to read runners back or to answer an operator
//! or a `Settle`: [`Reconciler::flush_and_wait`]). Every instant is a
//! [`tokio::time::Instant`] and wall time comes from a [`Clock`], so tests
//! drive the actor with tokio's paused clock.

mod drains;
mod gitlab_ops;
mod handle;
mod planning;
mod refusals;
mod reports;
mod stock;
mod stops;
mod view;
mod writer;

#[cfg(test)]
mod fake_gitlab;
#[cfg(test)]
mod tests;

use crate::edge::wire;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use gitlab_ops::Op;
pub use handle::{Command, ReconcilerHandle, ReconcilerStatus};
pub use view::effective_pending;

use super::clock::Clock;
use super::model::Phase;
use super::record::RunnerRecord;
use crate::audit::SYSTEM;
use crate::db::{self, Db, NewEvent, RunnerWrite};
use crate::demand::{DemandHandle, DemandSnapshot, RunnerActivity};
use crate::fleet::Fleet;
use crate::fleet::command::StartRunner;
use crate::fleet::session::AgentEvent;
use crate::gitlab::CreateRunner;
use crate::gitlab::SharedGitLab;
use crate::pools::LivePools;
use crate::scheduler::{Placement, Pool, Strategy};

/// How often the loop re-plans and checks deadlines without other triggers.
const TICK: Duration = Duration::from_millis(500);

/// Settings of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// The pools in force; a reload replaces them between passes.
    pub pools: LivePools,
    pub strategy: Strategy,
    /// The URL runners use to reach GitLab.
    pub runner_url: String,
    /// Marks GitLab runners as created by this coordinator (CA fingerprint prefix).
    pub cluster: String,
    /// A runner not running within this long is stopped and cleaned up.
    pub provision_timeout: Duration,
    /// How often GitLab is searched for AutoGit runners without a record.
    pub gc_interval: Duration,
    /// Idle runners asked to stop get this long to finish a job they took
    /// before the stop becomes forceful.
    pub stop_grace: Duration,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Where the reconciler reads pending demand.
pub trait DemandSource: Send + Sync {
    /// The current pending demand.
    fn snapshot(&self) -> Arc<DemandSnapshot>;
    /// Ticks on every change of pending demand.
    fn subscribe(&self) -> watch::Receiver<u64>;
}

impl DemandSource for DemandHandle {
    fn snapshot(&self) -> Arc<DemandSnapshot> {
        self.snapshot_arc()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        DemandHandle::subscribe(self)
    }
}

/// One runner that still holds resources.
struct Active {
    rec: RunnerRecord,
    /// When `rec.phase` last changed.
    phase_since: Instant,
    idle_since: Option<OffsetDateTime>,
    placement: Placement,
    /// The pool as it was when this runner was planned: its container is
    /// made from this, even if a reload changes the pool meanwhile. `None`
    /// for a runner read back at start whose pool is no longer configured.
    spec: Option<Arc<Pool>>,
    /// The StartRunner (with the token) until the container runs, for
    /// re-sending after an agent reconnects.
    start: Option<StartRunner>,
    /// Set once the runner is asked to stop; cleared only with the runner.
    stop: Option<stops::WantedStop>,
    /// Placed on an agent that did not hold the runner image: the image
    /// and the agent's hostname, for "why pending".
    cold: Option<ColdStart>,
}

/// A runner whose agent must pull its image first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ColdStart {
    pub image: String,
    pub hostname: String,
}

impl Active {
    fn set_phase(&mut self, phase: Phase) {
        self.rec.phase = phase;
        self.phase_since = Instant::now();
    }
}

/// A pool whose GitLab runner creation failed: no new starts until `until`.
struct CreateBackoff {
    until: Instant,
    delay: Duration,
    error: String,
}

/// The reconciler actor.
pub struct Reconciler {
    cfg: ReconcilerConfig,
    clock: Clock,
    db: Db,
    fleet: Fleet,
    gitlab: SharedGitLab,
    demand: Arc<dyn DemandSource>,
    active: BTreeMap<Uuid, Active>,
    by_gitlab: HashMap<u64, Uuid>,
    ops_tx: mpsc::UnboundedSender<Op>,
    ops_rx: mpsc::UnboundedReceiver<Op>,
    create_backoff: HashMap<String, CreateBackoff>,
    /// Runners that ran and ended without us learning which job they took
    /// (pool, when): each may have consumed one pending job that GitLab has
    /// not re-confirmed since. See [`effective_pending`].
    credits: Vec<(String, StdInstant)>,
    /// The last unmet reasons logged, to log only changes.
    logged_unmet: BTreeMap<String, String>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// When each pending job was first seen, for the job-wait histogram and
    /// the pools' wait objectives.
    job_seen: HashMap<u64, OffsetDateTime>,
    /// `Settle` commands to answer at the end of this pass.
    settles: Vec<oneshot::Sender<()>>,
    /// Pools an agent's host policy refused (see `refusals.rs`).
    refusals: refusals::Refusals,
    handle: ReconcilerHandle,
    /// Writes of this pass, handed to the writer by [`Reconciler::flush`].
    /// A mutex only so that recording needs `&self`; the actor is its only
    /// user.
    journal: std::sync::Mutex<Vec<RunnerWrite>>,
    /// GitLab runners to create once their records are committed.
    creates: Vec<(Uuid, CreateRunner)>,
    /// Runners that took a stocked GitLab runner: their `Created`, handed
    /// back to the loop once their records are committed.
    taken: Vec<Op>,
    /// Each pool's GitLab runners created ahead of demand.
    stock: stock::Stock,
    writes_tx: mpsc::UnboundedSender<writer::Batch>,
    /// Taken by `run`, which starts the writer.
    writes_rx: Option<mpsc::UnboundedReceiver<writer::Batch>>,
}

impl Reconciler {
    pub fn new(
        cfg: ReconcilerConfig,
        db: Db,
        fleet: Fleet,
        gitlab: SharedGitLab,
        demand: impl DemandSource + 'static,
    ) -> Self {
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let (cmd_tx, commands) = mpsc::unbounded_channel();
        let (writes_tx, writes_rx) = mpsc::unbounded_channel();
        Reconciler {
            cfg,
            clock: Clock::system(),
            db,
            fleet,
            gitlab,
            demand: Arc::new(demand),
            active: BTreeMap::new(),
            by_gitlab: HashMap::new(),
            ops_tx,
            ops_rx,
            create_backoff: HashMap::new(),
            credits: Vec::new(),
            logged_unmet: BTreeMap::new(),
            commands,
            job_seen: HashMap::new(),
            settles: Vec::new(),
            refusals: refusals::Refusals::default(),
            handle: ReconcilerHandle {
                status: Default::default(),
                commands: Some(cmd_tx),
                waits: Default::default(),
                clock: Clock::system(),
            },
            journal: Default::default(),
            creates: Vec::new(),
            taken: Vec::new(),
            stock: stock::Stock::default(),
            writes_tx,
            writes_rx: Some(writes_rx),
        }
    }

    /// Use `clock` for wall time (records, operators' deadlines).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self.handle.clock = clock;
        self
    }

    pub fn handle(&self) -> ReconcilerHandle {
        self.handle.clone()
    }

    /// Run until `shutdown`.
    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<AgentEvent>,
        mut activity: mpsc::UnboundedReceiver<RunnerActivity>,
        shutdown: CancellationToken,
    ) {
        if let Some(rx) = self.writes_rx.take() {
            tokio::spawn(writer::run(
                self.db.clone(),
                self.gitlab.clone(),
                self.ops_tx.clone(),
                rx,
            ));
        }
        self.load().await;
        self.flush_and_wait().await;
        let mut demand_rx = self.demand.subscribe();
        let mut fleet_rx = self.fleet.subscribe();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // First GC soon after start (agents get a moment to reconnect first).
        let mut next_gc = Instant::now() + Duration::from_secs(5).min(self.cfg.gc_interval);
        loop {
            // Biased: reports before deadlines, deadlines before commands,
            // so a command (a `Settle`) sees every earlier report and tick.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.flush_and_wait().await;
                    self.empty_stock().await;
                    break;
                }
                Some(ev) = events.recv() => self.on_agent_event(ev).await,
                Some(a) = activity.recv() => self.on_activity(a).await,
                Some(op) = self.ops_rx.recv() => self.on_op(op).await,
                _ = tick.tick() => {
                    self.check_deadlines().await;
                    if Instant::now() >= next_gc {
                        next_gc = Instant::now() + self.cfg.gc_interval;
                        self.collect_garbage().await;
                    }
                }
                Some(cmd) = self.commands.recv() => self.on_command(cmd).await,
                Ok(()) = demand_rx.changed() => {}
                Ok(()) = fleet_rx.changed() => {}
            }
            // Drain whatever else is queued before planning once.
            while let Ok(ev) = events.try_recv() {
                self.on_agent_event(ev).await;
            }
            while let Ok(op) = self.ops_rx.try_recv() {
                self.on_op(op).await;
            }
            self.reconcile().await;
            if self.settles.is_empty() {
                self.flush();
            } else {
                self.flush_and_wait().await;
            }
            for s in self.settles.drain(..) {
                let _ = s.send(());
            }
        }
    }

    // ------------------------------------------------------------ persistence

    /// Store a runner's record (at the next [`Reconciler::flush`]): the one
    /// place a record heads for SQLite.
    fn persist(&self, rec: &RunnerRecord) {
        self.journal()
            .push(RunnerWrite::Runner(Box::new(rec.to_row())));
    }

    /// Store an active runner's record as it is now.
    fn persist_active(&self, id: Uuid) {
        if let Some(a) = self.active.get(&id) {
            self.persist(&a.rec);
        }
    }

    /// An audit event about a runner (at the next [`Reconciler::flush`]).
    fn event(&self, kind: &str, rec: &RunnerRecord, detail: serde_json::Value) {
        self.audit_event(kind, &rec.agent.to_string(), Some(rec.id), detail);
    }

    /// An audit event of the reconciler's (at the next [`Reconciler::flush`]):
    /// journalled like the records, so the audit log keeps the order in which
    /// things happened.
    fn audit_event(
        &self,
        kind: &str,
        agent: &str,
        runner: Option<Uuid>,
        detail: serde_json::Value,
    ) {
        self.journal().push(RunnerWrite::Event(NewEvent {
            at: db::to_ms(OffsetDateTime::now_utc()),
            kind: kind.to_string(),
            actor: SYSTEM.to_string(),
            agent_id: Some(agent.to_string()),
            runner_id: runner.map(|r| r.to_string()),
            detail: detail.to_string(),
        }));
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Vec<RunnerWrite>> {
        // Poisoned only if a push panicked; the list is still usable.
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hand the journal to the writer, which commits it in one transaction
    /// and then creates the GitLab runners whose records it held (a record
    /// always exists before its GitLab runner, so the collector can tell
    /// ours from leaks).
    fn flush(&mut self) {
        self.send_batch(None);
    }

    /// [`Self::flush`], and wait until everything journalled so far is
    /// committed.
    async fn flush_and_wait(&mut self) {
        let (done, committed) = oneshot::channel();
        self.send_batch(Some(done));
        // The writer outlives the loop; should it be gone, nothing waits.
        let _ = committed.await;
    }

    fn send_batch(&mut self, done: Option<oneshot::Sender<()>>) {
        let writes = std::mem::take(&mut *self.journal());
        let creates = std::mem::take(&mut self.creates);
        let taken = std::mem::take(&mut self.taken);
        if writes.is_empty() && creates.is_empty() && taken.is_empty() && done.is_none() {
            return;
        }
        let _ = self.writes_tx.send(writer::Batch {
            writes,
            creates,
            taken,
            done,
        });
    }

    /// Load active runners after a restart. Tokens were never stored, so
    /// runners that had not started cannot be started now: they are failed
    /// and cleaned up. The rest wait for their agent's container report.
    async fn load(&mut self) {
        let rows = match self.db.active_runners().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "load active runners");
                return;
            }
        };
        let pools = self.cfg.pools.current();
        let arch_of: HashMap<Uuid, crate::scheduler::Arch> = self
            .fleet
            .scheduler_view()
            .into_iter()
            .map(|a| (a.id, a.arch))
            .collect();
        for row in rows {
            let rec = match RunnerRecord::from_row(&row) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "skip a stored runner that does not parse");
                    continue;
                }
            };
            let id = rec.id;
            let phase = rec.phase;
            let placement = Placement {
                agent_id: rec.agent.0,
                // Only used to make a container, which a runner read back
                // never needs (its token is gone): the agent's, if known.
                arch: arch_of
                    .get(&rec.agent.0)
                    .copied()
                    .unwrap_or(crate::scheduler::Arch::X86_64),
                gpus: rec.gpus.clone(),
                render_nodes: Vec::new(),
            };
            if let Some(g) = rec.gitlab_runner_id {
                self.by_gitlab.insert(g, id);
            }
            self.active.insert(
                id,
                Active {
                    idle_since: (phase == Phase::Idle).then(|| self.clock.now_utc()),
                    phase_since: Instant::now(),
                    placement,
                    spec: pools
                        .iter()
                        .find(|p| p.name == rec.pool)
                        .cloned()
                        .map(Arc::new),
                    start: None,
                    // A stop wanted before the restart is wanted still; the
                    // agent's `Hello` confirms it or gets it again.
                    stop: (phase == Phase::Stopping).then(|| {
                        stops::WantedStop::after_restart(
                            rec.reason.clone().unwrap_or_default(),
                            Instant::now() + self.cfg.stop_grace,
                        )
                    }),
                    cold: None,
                    rec,
                },
            );
            if phase == Phase::Provisioning {
                self.finish(
                    id,
                    Phase::Failed,
                    None,
                    Some("coordinator restarted before the runner started".into()),
                    None,
                )
                .await;
            }
        }
        tracing::info!(runners = self.active.len(), "loaded active runners");
    }

    // ----------------------------------------------------------- transitions

    /// A runner reached a final phase: record it, free its resources, and
    /// delete its GitLab runner. Called only when its container is confirmed
    /// gone, cannot exist, or its agent is lost or revoked.
    async fn finish(
        &mut self,
        id: Uuid,
        phase: Phase,
        exit_code: Option<i32>,
        reason: Option<String>,
        log_tail: Option<Vec<String>>,
    ) {
        let Some(mut a) = self.active.remove(&id) else {
            return;
        };
        if a.rec.started_at.is_some() && a.rec.busy_at.is_none() {
            self.credits
                .push((a.rec.pool.clone(), Instant::now().into_std()));
        }
        a.rec.phase = phase;
        a.rec.finished_at = Some(self.clock.now_utc());
        a.rec.exit_code = exit_code;
        if reason.is_some() {
            a.rec.reason = reason.clone();
        }
        if let Some(t) = log_tail.filter(|t| !t.is_empty()) {
            a.rec.log_tail = t;
        }
        tracing::info!(runner = %id, state = %phase, ?exit_code, reason = %wire(reason.as_deref().unwrap_or("")), "runner finished");
        if phase == Phase::Failed && a.rec.started_at.is_none() {
            let agent = a.rec.agent.0;
            let hostname = self
                .fleet
                .scheduler_view()
                .into_iter()
                .find(|v| v.id == agent)
                .map(|v| v.hostname)
                .unwrap_or_else(|| agent.to_string());
            if self.refusals.record(
                a.spec.as_deref(),
                agent,
                &hostname,
                reason.as_deref().unwrap_or(""),
                Instant::now(),
            ) {
                tracing::warn!(runner = %id, pool = %a.rec.pool, %agent, "host policy refused the pool; not asking this agent again until the pool changes or the refusal expires");
            }
        }
        self.persist(&a.rec);
        self.event(
            &format!("runner.{phase}"),
            &a.rec,
            json!({"exit_code": exit_code, "reason": reason}),
        );
        if let Some(g) = a.rec.gitlab_runner_id {
            self.delete_gitlab_runner(Some(id), g);
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Drain {
                agent,
                deadline,
                reply,
            } => {
                let result = self.drain(agent, deadline).await;
                // The operator reads what the command wrote.
                self.flush_and_wait().await;
                let _ = reply.send(result);
            }
            Command::StopRunner { runner, reply } => {
                if !self.active.contains_key(&runner) {
                    let _ = reply.send(Err(format!("no active runner with id {runner}")));
                    return;
                }
                let until = Instant::now() + self.cfg.stop_grace;
                self.stop_runner(runner, "stopped by an operator", until, Phase::Exited)
                    .await;
                self.flush_and_wait().await;
                let _ = reply.send(Ok(()));
            }
            Command::Settle { reply } => self.settles.push(reply),
        }
    }

    /// The periodic checks: drains, stop deadlines, lost agents, runners
    /// that never ran.
    async fn check_deadlines(&mut self) {
        self.check_drains().await;
        self.check_stops();
        self.check_timeouts().await;
    }
}
