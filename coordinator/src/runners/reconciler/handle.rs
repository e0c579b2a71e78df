//! The reconciler's cheap handle: the last pass's status for the API and
//! metrics, how each pool met its `wait_objective`, and operator commands,
//! each with a oneshot reply.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use autogit_certs::AgentId;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::runners::Clock;
use crate::runners::wait_objective::{WaitObjectives, WaitShares};
use crate::scheduler::Pool;

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
    /// Per pool: a runner still starting on an agent that must pull the
    /// runner image first, said for "why pending".
    pub cold_starts: BTreeMap<String, String>,
    /// Per pool: GitLab runners in stock, created ahead of demand.
    pub stock: BTreeMap<String, u32>,
}

impl ReconcilerStatus {
    /// What the database holds of it (a follower's view, `cluster/follower.rs`):
    /// active runners by pool and phase, and per agent. Why demand is unmet,
    /// creation errors and cold starts live in the leader's memory only.
    pub fn stored(active: &[crate::db::RunnerRow]) -> Self {
        let mut st = ReconcilerStatus::default();
        for r in active {
            *st.per_agent.entry(r.agent_id.clone()).or_default() += 1;
            *st.runners
                .entry(r.pool.clone())
                .or_default()
                .entry(r.state.clone())
                .or_default() += 1;
        }
        st
    }
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
    /// Answered at the end of the pass that handles it: every agent report
    /// and GitLab result queued before it has been applied by then.
    Settle { reply: oneshot::Sender<()> },
}

/// Handle for the API and metrics: the last pass's status, and commands.
#[derive(Debug, Clone, Default)]
pub struct ReconcilerHandle {
    pub(super) status: Arc<RwLock<ReconcilerStatus>>,
    pub(super) commands: Option<mpsc::UnboundedSender<Command>>,
    /// Job waits against each pool's objective, recorded by the reconciler
    /// as runners take jobs.
    pub(super) waits: Arc<Mutex<WaitObjectives>>,
    /// The reconciler's wall clock: windows end at its now.
    pub(super) clock: Clock,
}

const NOT_MANAGED: &str = "no GitLab is configured: runners are not managed";
const STOPPED: &str = "reconciler stopped";

impl ReconcilerHandle {
    pub fn status(&self) -> ReconcilerStatus {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn publish(&self, status: ReconcilerStatus) {
        *self.status.write().unwrap_or_else(|e| e.into_inner()) = status;
    }

    /// How `pool` met its `wait_objective` over the last hour and day;
    /// `None` when the pool has no objective.
    pub fn wait_shares(&self, pool: &Pool) -> Option<WaitShares> {
        let objective = pool.wait_objective?;
        let now = self.clock.now_utc();
        Some(self.lock_waits().shares(&pool.name, objective, now))
    }

    /// Count one job of the pool named `pool` (among `pools`, those in
    /// force) that waited `wait` until a runner took it at `at`. Nothing
    /// happens for a pool without an objective; pools no longer in `pools`
    /// are forgotten.
    pub(crate) fn record_wait(
        &self,
        pools: &[Pool],
        pool: &str,
        wait: Duration,
        at: OffsetDateTime,
    ) {
        let Some(objective) = pools
            .iter()
            .find(|p| p.name == pool)
            .and_then(|p| p.wait_objective)
        else {
            return;
        };
        let mut waits = self.lock_waits();
        waits.retain(|name| pools.iter().any(|p| p.name == name));
        waits.record(pool, objective, wait, at);
    }

    fn lock_waits(&self) -> std::sync::MutexGuard<'_, WaitObjectives> {
        self.waits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, cmd: Command) -> Result<(), String> {
        let tx = self
            .commands
            .as_ref()
            .ok_or_else(|| NOT_MANAGED.to_string())?;
        tx.send(cmd).map_err(|_| STOPPED.to_string())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, String> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await.map_err(|_| STOPPED.to_string())?
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

    /// Wait until the reconciler has applied everything queued before this
    /// call (see [`Command::Settle`]).
    pub async fn settle(&self) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Settle { reply })?;
        rx.await.map_err(|_| STOPPED.to_string())
    }
}
