//! The runner reconciler: one actor that owns every active runner.
//!
//! Wanted state comes from the pure scheduler ([`crate::scheduler::plan`])
//! given pending demand, pools and the fleet. Observed state comes from
//! agents (container status, the containers present at each reconnect) and
//! from GitLab (which runner took which job). Each pass moves observed toward
//! wanted:
//!
//! * start: record → `POST /user/runners` → `StartRunner` to the agent
//!   (the runner token stays in memory only, until the container runs);
//! * stop: `StopRunner` (graceful: the runner finishes its job first);
//! * a container that exited or failed → `DELETE /runners/:id`;
//! * a reconnecting agent's containers are adopted when wanted, stopped when
//!   not; wanted containers that are missing are failed and cleaned up;
//! * runners of lost or revoked agents are written off and cleaned up.
//!
//! GitLab calls run in spawned tasks and report back as [`Op`]s, so a slow
//! GitLab never stalls the loop. Every transition is written to SQLite and
//! the audit log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use autogit_certs::AgentId;
use autogit_proto::v1 as pb;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::gc;
use super::model::Phase;
use super::spec;
use crate::audit::{Audit, SYSTEM};
use crate::db::{self, Db, RunnerRow};
use crate::demand::{DemandHandle, RunnerActivity};
use crate::fleet::session::{AgentEvent, ContainerState, RunnerReport};
use crate::fleet::{AgentState, AgentView, Fleet};
use crate::gitlab::{CreateRunner, RunnerType as GlRunnerType, SharedGitLab};
use crate::scheduler::{self, Arch, GpuVendor, GpuView, Placement, PlanInput, Pool, Strategy};

/// How often the loop re-plans and checks timeouts without other triggers.
const TICK: Duration = Duration::from_millis(500);
/// How long a stopping runner may take before it is written off.
const STOP_GRACE: Duration = Duration::from_secs(120);

/// Settings of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub pools: Arc<Vec<Pool>>,
    pub strategy: Strategy,
    /// The URL runners use to reach GitLab.
    pub runner_url: String,
    /// Marks GitLab runners as created by this coordinator (CA fingerprint prefix).
    pub cluster: String,
    /// A runner not running within this long is failed and cleaned up.
    pub provision_timeout: Duration,
    /// How often GitLab is searched for AutoGit runners without a record.
    pub gc_interval: Duration,
    /// Idle runners asked to stop get this long to finish a job they took.
    pub stop_grace: Duration,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// What operators can see of the reconciler's last pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcilerStatus {
    /// Per pool: why wanted runners could not be started, if any.
    pub unmet: BTreeMap<String, String>,
    /// Per pool: runners by phase.
    pub runners: BTreeMap<String, BTreeMap<String, u32>>,
    /// Pools whose runner creation in GitLab is failing, with the error.
    pub create_errors: BTreeMap<String, String>,
    /// Per agent id: runners still holding resources there.
    pub per_agent: BTreeMap<String, u32>,
    /// GPUs held by active runners, as `<agent id>/<gpu uuid>`.
    pub gpus_in_use: Vec<String>,
}

/// Requests from operators.
#[derive(Debug)]
pub enum Command {
    /// Stop new placements on the agent, ask its runners to finish their
    /// current job, stop what is left at the deadline.
    Drain {
        agent: AgentId,
        deadline: OffsetDateTime,
        reply: oneshot::Sender<Result<u32, String>>,
    },
    /// Stop one runner (gracefully: it finishes a job it took).
    StopRunner {
        runner: Uuid,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Handle for the API and metrics: the last pass's status, and commands.
#[derive(Debug, Clone, Default)]
pub struct ReconcilerHandle {
    status: Arc<RwLock<ReconcilerStatus>>,
    commands: Option<mpsc::UnboundedSender<Command>>,
}

impl ReconcilerHandle {
    pub fn status(&self) -> ReconcilerStatus {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, String> {
        let tx = self
            .commands
            .as_ref()
            .ok_or_else(|| "no GitLab is configured: runners are not managed".to_string())?;
        let (reply, rx) = oneshot::channel();
        tx.send(make(reply))
            .map_err(|_| "reconciler stopped".to_string())?;
        rx.await.map_err(|_| "reconciler stopped".to_string())?
    }

    /// Drain `agent` until `deadline`; returns how many runners are being stopped.
    pub async fn drain(&self, agent: AgentId, deadline: OffsetDateTime) -> Result<u32, String> {
        self.ask(|reply| Command::Drain {
            agent,
            deadline,
            reply,
        })
        .await
    }

    pub async fn stop_runner(&self, runner: Uuid) -> Result<(), String> {
        self.ask(|reply| Command::StopRunner { runner, reply })
            .await
    }
}

/// Results of GitLab calls made off the loop.
#[derive(Debug)]
pub enum Op {
    Created {
        runner: Uuid,
        gitlab_id: u64,
        token: SecretString,
    },
    CreateFailed {
        runner: Uuid,
        error: String,
    },
    Deleted {
        runner: Option<Uuid>,
        gitlab_id: u64,
    },
    DeleteFailed {
        gitlab_id: u64,
        error: String,
    },
    /// AutoGit-marked GitLab runners found by the collector: (GitLab id, our runner id).
    GcCandidates(Vec<(u64, Option<Uuid>)>),
}

/// One runner that still holds resources.
struct Active {
    row: RunnerRow,
    id: Uuid,
    agent: AgentId,
    phase: Phase,
    phase_since: Instant,
    idle_since: Option<OffsetDateTime>,
    placement: Placement,
    /// The StartRunner (with the token) until the container runs, for
    /// re-sending after an agent reconnects.
    start: Option<pb::StartRunner>,
}

/// The reconciler actor.
pub struct Reconciler {
    cfg: ReconcilerConfig,
    db: Db,
    audit: Audit,
    fleet: Fleet,
    gitlab: SharedGitLab,
    demand: DemandHandle,
    active: BTreeMap<Uuid, Active>,
    by_gitlab: HashMap<u64, Uuid>,
    ops_tx: mpsc::UnboundedSender<Op>,
    ops_rx: mpsc::UnboundedReceiver<Op>,
    /// Pools whose GitLab runner creation failed: no new starts until then.
    create_backoff: HashMap<String, (Instant, Duration, String)>,
    /// Runners that ran and ended without us learning which job they took
    /// (pool, when): each may have consumed one pending job that GitLab has
    /// not re-confirmed since. See [`effective_pending`].
    credits: Vec<(String, Instant)>,
    /// The last unmet reasons logged, to log only changes.
    logged_unmet: BTreeMap<String, String>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// When each pending job was first seen, for the job-wait histogram.
    job_seen: HashMap<u64, OffsetDateTime>,
    /// Draining agents whose deadline passed and whose runners were aborted.
    aborted_drains: std::collections::HashSet<AgentId>,
    handle: ReconcilerHandle,
}

fn now_ms() -> i64 {
    db::to_ms(OffsetDateTime::now_utc())
}

impl Reconciler {
    pub fn new(
        cfg: ReconcilerConfig,
        db: Db,
        audit: Audit,
        fleet: Fleet,
        gitlab: SharedGitLab,
        demand: DemandHandle,
    ) -> Self {
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let (cmd_tx, commands) = mpsc::unbounded_channel();
        Reconciler {
            cfg,
            db,
            audit,
            fleet,
            gitlab,
            demand,
            active: BTreeMap::new(),
            by_gitlab: HashMap::new(),
            ops_tx,
            ops_rx,
            create_backoff: HashMap::new(),
            credits: Vec::new(),
            logged_unmet: BTreeMap::new(),
            commands,
            job_seen: HashMap::new(),
            aborted_drains: Default::default(),
            handle: ReconcilerHandle {
                status: Default::default(),
                commands: Some(cmd_tx),
            },
        }
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
        self.load().await;
        let mut demand_rx = self.demand.subscribe();
        let mut fleet_rx = self.fleet.subscribe();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // First GC soon after start (agents get a moment to reconnect first).
        let mut next_gc = Instant::now() + Duration::from_secs(5).min(self.cfg.gc_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(ev) = events.recv() => self.on_agent_event(ev).await,
                Some(a) = activity.recv() => self.on_activity(a).await,
                Some(op) = self.ops_rx.recv() => self.on_op(op).await,
                Some(cmd) = self.commands.recv() => self.on_command(cmd).await,
                Ok(()) = demand_rx.changed() => {}
                Ok(()) = fleet_rx.changed() => {}
                _ = tick.tick() => {
                    self.check_timeouts().await;
                    if Instant::now() >= next_gc {
                        next_gc = Instant::now() + self.cfg.gc_interval;
                        gc::spawn(self.gitlab.clone(), self.cfg.cluster.clone(), self.ops_tx.clone());
                        self.retry_deletes().await;
                    }
                }
            }
            // Drain whatever else is queued before planning once.
            while let Ok(ev) = events.try_recv() {
                self.on_agent_event(ev).await;
            }
            while let Ok(op) = self.ops_rx.try_recv() {
                self.on_op(op).await;
            }
            self.reconcile().await;
        }
    }

    // ------------------------------------------------------------ persistence

    async fn persist(&self, row: &RunnerRow) {
        if let Err(e) = self.db.upsert_runner(row).await {
            tracing::error!(runner = %row.id, error = %e, "persist runner");
        }
    }

    async fn event(&self, kind: &str, row: &RunnerRow, detail: serde_json::Value) {
        self.audit
            .record(kind, SYSTEM, Some(&row.agent_id), Some(&row.id), detail)
            .await;
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
        for row in rows {
            let (Ok(id), Ok(agent)) = (row.id.parse::<Uuid>(), row.agent_id.parse::<AgentId>())
            else {
                continue;
            };
            let phase: Phase = row.state.parse().unwrap_or(Phase::Failed);
            let placement = Placement {
                agent_id: agent.0,
                gpus: serde_json::from_str(&row.gpus).unwrap_or_default(),
                device_paths: Vec::new(),
            };
            let a = Active {
                id,
                agent,
                phase,
                phase_since: Instant::now(),
                idle_since: (phase == Phase::Idle).then(OffsetDateTime::now_utc),
                placement,
                start: None,
                row,
            };
            if let Some(g) = a.row.gitlab_runner_id {
                self.by_gitlab.insert(g as u64, id);
            }
            self.active.insert(id, a);
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

    // --------------------------------------------------------------- planning

    fn agent_views(&self) -> Vec<scheduler::AgentView> {
        self.fleet
            .snapshot()
            .iter()
            .filter_map(to_sched_agent)
            .collect()
    }

    async fn reconcile(&mut self) {
        let now = OffsetDateTime::now_utc();
        let demand = self.demand.snapshot();
        let runners: Vec<scheduler::RunnerView> =
            self.active.values().map(to_sched_runner).collect();
        let pending = effective_pending(&demand, &mut self.credits);
        for j in &demand.jobs {
            if let Some(pool) = &j.pool {
                let _ = pool;
                self.job_seen.entry(j.job_id).or_insert(j.seen_at);
            }
        }
        if self.job_seen.len() > 100_000 {
            let cutoff = now - Duration::from_secs(24 * 3600);
            self.job_seen.retain(|_, t| *t > cutoff);
        }
        let input = PlanInput {
            pools: self.cfg.pools.to_vec(),
            pending,
            runners,
            agents: self.agent_views(),
            strategy: self.cfg.strategy,
            now,
        };
        let plan = scheduler::plan(&input);
        let mut unmet: BTreeMap<String, String> = plan
            .unmet
            .iter()
            .map(|u| (u.pool.clone(), u.reason.to_string()))
            .collect();
        for start in plan.starts {
            if let Some((until, _, err)) = self.create_backoff.get(&start.pool)
                && Instant::now() < *until
            {
                unmet
                    .entry(start.pool.clone())
                    .or_insert_with(|| format!("GitLab refused to create a runner: {err}"));
                continue;
            }
            self.start_runner(&start.pool, start.placement).await;
        }
        for stop in plan.stops {
            let grace = self.cfg.stop_grace;
            self.stop_runner(stop.runner_id, &format!("{:?}", stop.reason), grace)
                .await;
        }
        if unmet != self.logged_unmet {
            for (pool, reason) in &unmet {
                if self.logged_unmet.get(pool) != Some(reason) {
                    tracing::warn!(%pool, %reason, "pending jobs cannot get a runner");
                }
            }
            self.logged_unmet = unmet.clone();
        }
        let mut by_pool: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
        let mut per_agent: BTreeMap<String, u32> = BTreeMap::new();
        let mut gpus_in_use = Vec::new();
        for a in self.active.values() {
            *per_agent.entry(a.row.agent_id.clone()).or_default() += 1;
            gpus_in_use.extend(
                a.placement
                    .gpus
                    .iter()
                    .map(|g| format!("{}/{g}", a.row.agent_id)),
            );
            *by_pool
                .entry(a.row.pool.clone())
                .or_default()
                .entry(a.phase.to_string())
                .or_default() += 1;
        }
        let mut st = self
            .handle
            .status
            .write()
            .unwrap_or_else(|e| e.into_inner());
        st.unmet = unmet;
        st.runners = by_pool;
        st.per_agent = per_agent;
        st.gpus_in_use = gpus_in_use;
        st.create_errors = self
            .create_backoff
            .iter()
            .map(|(p, (_, _, e))| (p.clone(), e.clone()))
            .collect();
    }

    fn pool(&self, name: &str) -> Option<&Pool> {
        self.cfg.pools.iter().find(|p| p.name == name)
    }

    async fn start_runner(&mut self, pool_name: &str, placement: Placement) {
        let Some(pool) = self.pool(pool_name).cloned() else {
            return;
        };
        let id = Uuid::new_v4();
        let agent = AgentId(placement.agent_id);
        let hostname = self
            .fleet
            .snapshot()
            .into_iter()
            .find(|a| a.id == agent.to_string())
            .map(|a| a.hostname)
            .unwrap_or_default();
        let row = RunnerRow {
            id: id.to_string(),
            pool: pool.name.clone(),
            agent_id: agent.to_string(),
            state: Phase::Provisioning.as_str().into(),
            gpus: serde_json::to_string(&placement.gpus).unwrap_or_else(|_| "[]".into()),
            cpu: pool.cpu_limit,
            memory_bytes: pool.mem_limit.bytes() as i64,
            created_at: now_ms(),
            ..Default::default()
        };
        self.persist(&row).await;
        self.event(
            "runner.created",
            &row,
            json!({"pool": pool.name, "agent": hostname, "gpus": placement.gpus}),
        )
        .await;
        tracing::info!(runner = %id, pool = %pool.name, agent = %hostname, "provisioning runner");
        self.active.insert(
            id,
            Active {
                row,
                id,
                agent,
                phase: Phase::Provisioning,
                phase_since: Instant::now(),
                idle_since: None,
                placement,
                start: None,
            },
        );
        let mut req = CreateRunner::new(match pool.runner_type {
            scheduler::RunnerType::Instance => GlRunnerType::InstanceType,
            scheduler::RunnerType::Group { group_id } => GlRunnerType::GroupType { id: group_id },
            scheduler::RunnerType::Project { project_id } => {
                GlRunnerType::ProjectType { id: project_id }
            }
        });
        req.description = Some(gc::description(
            &self.cfg.cluster,
            &pool.name,
            &hostname,
            &id,
        ));
        req.tag_list = pool.tags.clone();
        req.run_untagged = Some(pool.run_untagged);
        req.locked = Some(false);
        req.paused = Some(false);
        let gitlab = self.gitlab.clone();
        let ops = self.ops_tx.clone();
        tokio::spawn(async move {
            let op = match gitlab.create_runner(&req).await {
                Ok(c) => Op::Created {
                    runner: id,
                    gitlab_id: c.id,
                    token: c.token,
                },
                Err(e) => Op::CreateFailed {
                    runner: id,
                    error: e.to_string(),
                },
            };
            let _ = ops.send(op);
        });
    }

    async fn stop_runner(&mut self, id: Uuid, reason: &str, grace: Duration) {
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        if a.phase == Phase::Stopping {
            return;
        }
        a.phase = Phase::Stopping;
        a.phase_since = Instant::now();
        a.row.state = Phase::Stopping.as_str().into();
        a.row.reason = Some(reason.to_string());
        let row = a.row.clone();
        let agent = a.agent;
        let _ = self.fleet.send(
            &agent,
            pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::StopRunner(pb::StopRunner {
                    runner_id: id.to_string(),
                    graceful: true,
                    grace_period_ms: grace.as_millis() as u64,
                })),
            },
        );
        tracing::info!(runner = %id, %reason, "stopping runner");
        self.persist(&row).await;
        self.event("runner.stopping", &row, json!({"reason": reason}))
            .await;
    }

    /// Tell an agent to remove a container nobody wants.
    fn stop_unwanted(&self, agent: &AgentId, runner_id: &str) {
        tracing::warn!(%agent, runner = %runner_id, "stopping a container no runner record wants");
        let _ = self.fleet.send(
            agent,
            pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::StopRunner(pb::StopRunner {
                    runner_id: runner_id.to_string(),
                    graceful: false,
                    grace_period_ms: 0,
                })),
            },
        );
    }

    // ----------------------------------------------------------- transitions

    /// A runner reached a final phase: record it, free its resources, and
    /// delete its GitLab runner.
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
        if a.row.started_at.is_some() && a.row.busy_at.is_none() {
            self.credits.push((a.row.pool.clone(), Instant::now()));
        }
        a.row.state = phase.as_str().into();
        a.row.finished_at = Some(now_ms());
        a.row.exit_code = exit_code.map(i64::from);
        if reason.is_some() {
            a.row.reason = reason.clone();
        }
        if let Some(t) = log_tail.filter(|t| !t.is_empty()) {
            a.row.log_tail = serde_json::to_string(&t).ok();
        }
        tracing::info!(runner = %id, state = %phase, ?exit_code, reason = reason.as_deref().unwrap_or(""), "runner finished");
        self.persist(&a.row).await;
        self.event(
            &format!("runner.{phase}"),
            &a.row,
            json!({"exit_code": exit_code, "reason": reason}),
        )
        .await;
        if let Some(g) = a.row.gitlab_runner_id {
            self.delete_gitlab_runner(Some(id), g as u64);
        }
    }

    fn delete_gitlab_runner(&self, runner: Option<Uuid>, gitlab_id: u64) {
        let gitlab = self.gitlab.clone();
        let ops = self.ops_tx.clone();
        tokio::spawn(async move {
            let op = match gitlab.delete_runner(gitlab_id).await {
                Ok(()) => Op::Deleted { runner, gitlab_id },
                Err(e) if e.is_not_found() => Op::Deleted { runner, gitlab_id },
                Err(e) => Op::DeleteFailed {
                    gitlab_id,
                    error: e.to_string(),
                },
            };
            let _ = ops.send(op);
        });
    }

    /// Finished runners whose GitLab deletion has not succeeded yet.
    async fn retry_deletes(&mut self) {
        match self.db.undeleted_runners().await {
            Ok(rows) => {
                for r in rows {
                    if let (Some(g), Ok(id)) = (r.gitlab_runner_id, r.id.parse::<Uuid>()) {
                        self.delete_gitlab_runner(Some(id), g as u64);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "list runners awaiting GitLab deletion"),
        }
    }

    async fn on_op(&mut self, op: Op) {
        match op {
            Op::Created {
                runner,
                gitlab_id,
                token,
            } => self.on_created(runner, gitlab_id, token).await,
            Op::CreateFailed { runner, error } => {
                let pool = self
                    .active
                    .get(&runner)
                    .map(|a| a.row.pool.clone())
                    .unwrap_or_default();
                let entry = self.create_backoff.entry(pool.clone()).or_insert((
                    Instant::now(),
                    Duration::from_secs(1),
                    String::new(),
                ));
                entry.1 = (entry.1 * 2).min(Duration::from_secs(60));
                entry.0 = Instant::now() + entry.1;
                entry.2 = error.clone();
                tracing::warn!(%pool, %error, retry_in = ?entry.1, "create GitLab runner failed");
                self.finish(
                    runner,
                    Phase::Failed,
                    None,
                    Some(format!("create GitLab runner: {error}")),
                    None,
                )
                .await;
            }
            Op::Deleted { runner, gitlab_id } => {
                self.by_gitlab.remove(&gitlab_id);
                if let Some(id) = runner
                    && let Ok(Some(mut row)) = self.db.get_runner(&id.to_string()).await
                    && row.gitlab_deleted_at.is_none()
                {
                    row.gitlab_deleted_at = Some(now_ms());
                    self.persist(&row).await;
                    self.event(
                        "runner.gitlab_deleted",
                        &row,
                        json!({"gitlab_runner_id": gitlab_id}),
                    )
                    .await;
                }
            }
            Op::DeleteFailed { gitlab_id, error } => {
                tracing::warn!(gitlab_runner = gitlab_id, %error, "delete GitLab runner failed; will retry");
            }
            Op::GcCandidates(found) => {
                for (gitlab_id, runner) in found {
                    let wanted = runner.is_some_and(|r| self.active.contains_key(&r))
                        || self.by_gitlab.contains_key(&gitlab_id);
                    if !wanted {
                        tracing::warn!(
                            gitlab_runner = gitlab_id,
                            ?runner,
                            "deleting GitLab runner without a live record"
                        );
                        self.delete_gitlab_runner(runner, gitlab_id);
                    }
                }
            }
        }
    }

    async fn on_created(&mut self, id: Uuid, gitlab_id: u64, token: SecretString) {
        self.by_gitlab.insert(gitlab_id, id);
        let runner_url = self.cfg.runner_url.clone();
        let pools = self.cfg.pools.clone();
        let Some(a) = self.active.get_mut(&id) else {
            // Written off while GitLab was creating it.
            self.delete_gitlab_runner(Some(id), gitlab_id);
            return;
        };
        self.create_backoff.remove(&a.row.pool);
        a.row.gitlab_runner_id = Some(gitlab_id as i64);
        let Some(pool) = pools.iter().find(|p| p.name == a.row.pool) else {
            return;
        };
        match spec::start_runner(pool, &id.to_string(), &runner_url, &token, &a.placement) {
            Ok(cmd) => {
                let sent = self.fleet.send(
                    &a.agent,
                    pb::CoordinatorMessage {
                        msg: Some(pb::coordinator_message::Msg::StartRunner(cmd.clone())),
                    },
                );
                if sent.is_err() {
                    tracing::warn!(runner = %id, agent = %a.agent, "agent not connected; StartRunner will be sent when it reconnects");
                }
                a.start = Some(cmd);
                let row = a.row.clone();
                self.persist(&row).await;
                self.event(
                    "runner.gitlab_created",
                    &row,
                    json!({"gitlab_runner_id": gitlab_id}),
                )
                .await;
            }
            Err(e) => {
                self.finish(
                    id,
                    Phase::Failed,
                    None,
                    Some(format!("render pool template: {e}")),
                    None,
                )
                .await;
            }
        }
    }

    async fn on_activity(&mut self, a: RunnerActivity) {
        match a {
            RunnerActivity::Busy {
                gitlab_runner_id,
                project_id,
                job_id,
            } => {
                let Some(id) = self.by_gitlab.get(&gitlab_runner_id).copied() else {
                    return;
                };
                let Some(r) = self.active.get_mut(&id) else {
                    return;
                };
                if matches!(r.phase, Phase::Busy) {
                    return;
                }
                r.phase = Phase::Busy;
                r.phase_since = Instant::now();
                r.row.state = Phase::Busy.as_str().into();
                r.row.busy_at = Some(now_ms());
                r.row.project_id = Some(project_id as i64);
                r.row.job_id = Some(job_id as i64);
                let row = r.row.clone();
                tracing::info!(runner = %id, job = job_id, "runner took a job");
                if let (Some(m), Some(seen)) = (&self.cfg.metrics, self.job_seen.remove(&job_id)) {
                    m.job_wait(
                        &row.pool,
                        (OffsetDateTime::now_utc() - seen).as_seconds_f64().max(0.0),
                    );
                }
                self.persist(&row).await;
                self.event(
                    "runner.busy",
                    &row,
                    json!({"project_id": project_id, "job_id": job_id}),
                )
                .await;
            }
            RunnerActivity::Finished { .. } => {
                // The container exits after its one job; its exit finishes the runner.
            }
        }
    }

    async fn on_agent_event(&mut self, ev: AgentEvent) {
        match ev {
            AgentEvent::Connected { agent, containers } => {
                self.on_connected(agent, containers).await
            }
            AgentEvent::RunnerStatus { agent, report } => self.on_status(agent, report).await,
            AgentEvent::Disconnected { .. } => {}
        }
    }

    /// Adopt wanted containers, stop unwanted ones, re-send starts that may
    /// have been lost, and write off runners whose container vanished.
    async fn on_connected(&mut self, agent: AgentId, containers: Vec<RunnerReport>) {
        let mut seen = Vec::new();
        for c in containers {
            let Ok(id) = c.runner_id.parse::<Uuid>() else {
                self.stop_unwanted(&agent, &c.runner_id);
                continue;
            };
            match self.active.get(&id) {
                Some(a) if a.agent == agent => {
                    seen.push(id);
                    tracing::info!(runner = %id, %agent, "adopting reported container");
                    self.on_status(agent, c).await;
                }
                _ => self.stop_unwanted(&agent, &c.runner_id),
            }
        }
        let mine: Vec<Uuid> = self
            .active
            .values()
            .filter(|a| a.agent == agent && !seen.contains(&a.id))
            .map(|a| a.id)
            .collect();
        for id in mine {
            let Some(a) = self.active.get(&id) else {
                continue;
            };
            match (&a.phase, &a.start) {
                (Phase::Provisioning | Phase::Starting, Some(cmd)) => {
                    // StartRunner is idempotent on the agent; send it again.
                    let msg = pb::CoordinatorMessage {
                        msg: Some(pb::coordinator_message::Msg::StartRunner(cmd.clone())),
                    };
                    let _ = self.fleet.send(&agent, msg);
                }
                (Phase::Provisioning, None) => {} // GitLab runner still being created
                _ => {
                    self.finish(
                        id,
                        Phase::Failed,
                        None,
                        Some("container vanished from its agent".into()),
                        None,
                    )
                    .await;
                }
            }
        }
    }

    async fn on_status(&mut self, agent: AgentId, s: RunnerReport) {
        let Ok(id) = s.runner_id.parse::<Uuid>() else {
            return;
        };
        let state = s.state;
        let Some(a) = self.active.get_mut(&id) else {
            if matches!(state, ContainerState::Creating | ContainerState::Running) {
                self.stop_unwanted(&agent, &s.runner_id);
            }
            return;
        };
        if a.agent != agent {
            tracing::warn!(runner = %id, %agent, owner = %a.agent, "runner status from the wrong agent ignored");
            return;
        }
        if let Some(c) = &s.container_id {
            a.row.container_id = Some(c.clone());
        }
        match state {
            ContainerState::Creating if a.phase == Phase::Provisioning => {
                a.phase = Phase::Starting;
                a.phase_since = Instant::now();
                a.row.state = Phase::Starting.as_str().into();
                let row = a.row.clone();
                self.persist(&row).await;
            }
            // The container runs. A fast runner may already be known busy
            // (GitLab's `running` hook can beat the agent's report): record
            // the start either way, change the phase only from before.
            ContainerState::Running if a.row.started_at.is_none() => {
                if matches!(a.phase, Phase::Provisioning | Phase::Starting) {
                    a.phase = Phase::Idle;
                    a.phase_since = Instant::now();
                    a.idle_since = Some(OffsetDateTime::now_utc());
                    a.row.state = Phase::Idle.as_str().into();
                }
                a.start = None; // the token is no longer needed here
                a.row.started_at = Some(now_ms());
                let row = a.row.clone();
                if let Some(m) = &self.cfg.metrics {
                    m.provisioned(
                        &row.pool,
                        (now_ms() - row.created_at).max(0) as f64 / 1000.0,
                    );
                }
                tracing::info!(runner = %id, "runner container running");
                self.persist(&row).await;
                self.event(
                    "runner.running",
                    &row,
                    json!({"container_id": row.container_id}),
                )
                .await;
            }
            ContainerState::Exited => {
                let phase = if s.exit_code == 0 {
                    Phase::Exited
                } else {
                    Phase::Failed
                };
                self.finish(id, phase, Some(s.exit_code), s.reason, Some(s.log_tail))
                    .await;
            }
            ContainerState::Failed => {
                self.finish(id, Phase::Failed, None, s.reason, Some(s.log_tail))
                    .await;
            }
            ContainerState::Removed => {
                self.finish(
                    id,
                    Phase::Exited,
                    None,
                    Some("container removed".into()),
                    None,
                )
                .await;
            }
            _ => {}
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Drain {
                agent,
                deadline,
                reply,
            } => {
                let now = OffsetDateTime::now_utc();
                let drain = crate::fleet::Drain {
                    started_at: crate::fleet::rfc3339(db::to_ms(now)),
                    deadline: crate::fleet::rfc3339(db::to_ms(deadline)),
                    drained_at: None,
                    deadline_ms: db::to_ms(deadline),
                };
                if !self.fleet.set_drain(&agent, Some(drain)) {
                    let _ = reply.send(Err(format!("no agent with id {agent}")));
                    return;
                }
                self.aborted_drains.remove(&agent);
                let grace = Duration::try_from(deadline - now)
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_secs(1));
                let mine: Vec<(Uuid, Phase)> = self
                    .active
                    .values()
                    .filter(|a| a.agent == agent)
                    .map(|a| (a.id, a.phase))
                    .collect();
                for (id, phase) in &mine {
                    if *phase == Phase::Provisioning {
                        self.stop_unwanted(&agent, &id.to_string());
                        self.finish(
                            *id,
                            Phase::Failed,
                            None,
                            Some("agent drained before the runner started".into()),
                            None,
                        )
                        .await;
                    } else {
                        self.stop_runner(*id, "agent draining", grace).await;
                    }
                }
                tracing::info!(%agent, runners = mine.len(), deadline = %crate::fleet::rfc3339(db::to_ms(deadline)), "draining agent");
                let _ = reply.send(Ok(mine.len() as u32));
            }
            Command::StopRunner { runner, reply } => {
                if !self.active.contains_key(&runner) {
                    let _ = reply.send(Err(format!("no active runner with id {runner}")));
                    return;
                }
                let grace = self.cfg.stop_grace;
                self.stop_runner(runner, "stopped by an operator", grace)
                    .await;
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Finish drains whose agent has no runner left; abort runners still
    /// running past a drain's deadline.
    async fn check_drains(&mut self) {
        let now = db::to_ms(OffsetDateTime::now_utc());
        for view in self.fleet.snapshot() {
            let Some(drain) = &view.drain else { continue };
            let Ok(agent) = view.id.parse::<AgentId>() else {
                continue;
            };
            let left: Vec<Uuid> = self
                .active
                .values()
                .filter(|a| a.agent == agent)
                .map(|a| a.id)
                .collect();
            if left.is_empty() {
                if self.fleet.drain_done(&agent) {
                    tracing::info!(%agent, "agent drained");
                    self.audit
                        .record(
                            "agent.drained",
                            SYSTEM,
                            Some(&view.id),
                            None,
                            json!({"deadline": drain.deadline}),
                        )
                        .await;
                }
            } else if now > drain.deadline_ms + 5_000 && self.aborted_drains.insert(agent) {
                tracing::warn!(%agent, runners = left.len(), "drain deadline passed; stopping the remaining runners");
                for id in left {
                    self.stop_unwanted(&agent, &id.to_string());
                }
            }
        }
    }

    async fn check_timeouts(&mut self) {
        self.check_drains().await;
        let agents: HashMap<String, AgentState> = self
            .fleet
            .snapshot()
            .into_iter()
            .map(|a| (a.id, a.state))
            .collect();
        let mut write_off = Vec::new();
        for a in self.active.values() {
            let age = a.phase_since.elapsed();
            match agents.get(&a.agent.to_string()) {
                Some(AgentState::Lost) => {
                    write_off.push((a.id, Phase::Lost, "agent lost".to_string()))
                }
                Some(AgentState::Revoked) | None => {
                    write_off.push((a.id, Phase::Lost, "agent revoked or removed".to_string()))
                }
                _ => {}
            }
            if matches!(a.phase, Phase::Provisioning | Phase::Starting)
                && age > self.cfg.provision_timeout
            {
                self.stop_unwanted(&a.agent, &a.id.to_string());
                write_off.push((
                    a.id,
                    Phase::Failed,
                    format!(
                        "not running within {}",
                        humantime::format_duration(self.cfg.provision_timeout)
                    ),
                ));
            }
            if a.phase == Phase::Stopping && age > self.cfg.stop_grace + STOP_GRACE {
                write_off.push((a.id, Phase::Lost, "did not stop in time".to_string()));
            }
        }
        for (id, phase, reason) in write_off {
            self.finish(id, phase, None, Some(reason), None).await;
        }
    }
}

/// Pending jobs per pool, less the jobs that runners which ended without
/// saying which job they took may have consumed.
///
/// A runner that ran and ended at time `c` without a known job (its Job Hook
/// `running` was lost and no poll saw it running) probably took one of its
/// pool's pending jobs. Each such credit cancels one pending job that GitLab
/// last confirmed pending *before* `c` (oldest first); jobs confirmed after
/// `c` are real demand. A completed poll that started after `c` re-checked
/// every job, so such credits expire. Without this, polling-only demand would
/// briefly still count finished jobs and start runners nobody needs.
pub fn effective_pending(
    snap: &crate::demand::DemandSnapshot,
    credits: &mut Vec<(String, Instant)>,
) -> BTreeMap<String, u32> {
    if let Some(polled) = snap.last_poll_started {
        credits.retain(|(_, c)| *c > polled);
    }
    let mut confirmed: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
    for j in &snap.jobs {
        if let Some(p) = &j.pool {
            confirmed.entry(p.as_str()).or_default().push(j.confirmed);
        }
    }
    let mut out = BTreeMap::new();
    for (pool, mut jobs) in confirmed {
        jobs.sort();
        let mut cs: Vec<Instant> = credits
            .iter()
            .filter(|(p, _)| p == pool)
            .map(|(_, c)| *c)
            .collect();
        cs.sort();
        let mut matched = 0;
        for c in cs {
            if matched < jobs.len() && jobs[matched] < c {
                matched += 1;
            }
        }
        out.insert(pool.to_string(), (jobs.len() - matched) as u32);
    }
    out
}

fn to_sched_runner(a: &Active) -> scheduler::RunnerView {
    let state = match a.phase {
        Phase::Provisioning | Phase::Starting => scheduler::RunnerState::Provisioning,
        Phase::Idle => scheduler::RunnerState::Idle {
            since: a.idle_since.unwrap_or_else(OffsetDateTime::now_utc),
        },
        Phase::Busy => scheduler::RunnerState::Busy,
        _ => scheduler::RunnerState::Stopping,
    };
    scheduler::RunnerView {
        id: a.id,
        pool: a.row.pool.clone(),
        agent_id: a.agent.0,
        gpus: a.placement.gpus.clone(),
        cpu: a.row.cpu,
        memory: a.row.memory_bytes.max(0) as u64,
        state,
        created_at: db::from_ms(a.row.created_at),
    }
}

/// The scheduler's view of an agent. Only agents with a live session count
/// as ready: commands can reach no one else.
pub fn to_sched_agent(a: &AgentView) -> Option<scheduler::AgentView> {
    let arch: Arch = a.arch.parse().ok()?;
    let id = a.id.parse::<Uuid>().ok()?;
    let inv = a.inventory.as_ref()?;
    let state = match (a.state, a.connected) {
        (AgentState::Ready, true) => scheduler::AgentState::Ready,
        (AgentState::Lost, _) => scheduler::AgentState::Lost,
        (AgentState::Revoked, _) => scheduler::AgentState::Revoked,
        _ => scheduler::AgentState::Unreachable,
    };
    let mut v =
        scheduler::AgentView::new(id, &a.hostname, arch, inv.cpu_threads, inv.mem_total_bytes);
    v.state = state;
    v.cordoned = a.cordoned || a.drain.is_some();
    v.gpus = inv
        .gpus
        .iter()
        .map(|g| GpuView {
            vendor: match g.vendor {
                crate::fleet::inventory::GpuVendor::Nvidia => GpuVendor::Nvidia,
                crate::fleet::inventory::GpuVendor::Amd => GpuVendor::Amd,
                crate::fleet::inventory::GpuVendor::Intel => GpuVendor::Intel,
            },
            uuid: g.uuid.clone(),
            memory: g.memory_bytes.unwrap_or(0),
            render_node: g.render_node.clone(),
        })
        .collect();
    Some(v)
}
