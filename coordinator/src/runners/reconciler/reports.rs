//! What agents and GitLab report about runners: the containers present when
//! an agent (re)connects, container state changes, and which runner took a
//! job.

use std::collections::HashSet;

use autogit_certs::AgentId;
use serde_json::json;
use uuid::Uuid;

use super::Reconciler;
use crate::demand::RunnerActivity;
use crate::fleet::session::{AgentEvent, ContainerState, RunnerReport};
use crate::runners::Phase;

impl Reconciler {
    pub(super) async fn on_agent_event(&mut self, ev: AgentEvent) {
        match ev {
            AgentEvent::Connected { agent, containers } => {
                self.on_connected(agent, containers).await
            }
            AgentEvent::RunnerStatus { agent, report } => self.on_status(agent, report).await,
            AgentEvent::Disconnected { agent } => self.on_disconnected(agent),
        }
    }

    /// An agent (re)connected with the containers really present on its
    /// host. Adopt wanted ones, stop unwanted ones, send every wanted stop
    /// again, re-send starts that may have been lost, finish stopping
    /// runners whose container is gone, and write off runners whose
    /// container vanished.
    pub(super) async fn on_connected(&mut self, agent: AgentId, containers: Vec<RunnerReport>) {
        let mut present = HashSet::new();
        for c in containers {
            let Ok(id) = c.runner_id.parse::<Uuid>() else {
                self.stop_unwanted(&agent, &c.runner_id);
                continue;
            };
            match self.active.get(&id) {
                Some(a) if a.rec.agent == agent => {
                    present.insert(id);
                    tracing::info!(runner = %id, %agent, "adopting reported container");
                    self.on_status(agent, c).await;
                }
                _ => self.stop_unwanted(&agent, &c.runner_id),
            }
        }
        let mine: Vec<Uuid> = self
            .active
            .values()
            .filter(|a| a.rec.agent == agent)
            .map(|a| a.rec.id)
            .collect();
        for id in mine {
            let Some(a) = self.active.get(&id) else {
                continue;
            };
            if present.contains(&id) {
                if a.stop.is_some() {
                    self.send_stop(id);
                }
                continue;
            }
            match (&a.stop, a.rec.phase, a.start.is_some()) {
                (Some(s), _, _) => {
                    let (outcome, reason) = (s.outcome, s.reason.clone());
                    self.finish(
                        id,
                        outcome,
                        None,
                        Some(format!("{reason}; the container is gone")),
                        None,
                    )
                    .await;
                }
                // StartRunner is idempotent on the agent; send it again.
                (None, Phase::Provisioning | Phase::Starting, true) => self.resend_start(id),
                (None, Phase::Provisioning, false) => {} // GitLab runner still being created
                (None, _, _) => {
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

    pub(super) async fn on_status(&mut self, agent: AgentId, s: RunnerReport) {
        let Ok(id) = s.runner_id.parse::<Uuid>() else {
            return;
        };
        let state = s.state;
        let now = self.clock.now_utc();
        let Some(a) = self.active.get_mut(&id) else {
            if matches!(state, ContainerState::Creating | ContainerState::Running) {
                self.stop_unwanted(&agent, &s.runner_id);
            }
            return;
        };
        if a.rec.agent != agent {
            tracing::warn!(runner = %id, %agent, owner = %a.rec.agent, "runner status from the wrong agent ignored");
            return;
        }
        if let Some(c) = &s.container_id {
            a.rec.container_id = Some(c.clone());
        }
        match state {
            ContainerState::Creating if a.rec.phase == Phase::Provisioning => {
                a.set_phase(Phase::Starting);
                self.persist_active(id);
            }
            // The container runs. A fast runner may already be known busy
            // (GitLab's `running` hook can beat the agent's report): record
            // the start either way, change the phase only from before.
            ContainerState::Running if a.rec.started_at.is_none() => {
                if matches!(a.rec.phase, Phase::Provisioning | Phase::Starting) {
                    a.set_phase(Phase::Idle);
                    a.idle_since = Some(now);
                }
                a.start = None; // the token is no longer needed here
                a.rec.started_at = Some(now);
                a.rec.image_pull = s.image_pull;
                let rec = a.rec.clone();
                if let Some(m) = &self.cfg.metrics {
                    m.provisioned(&rec.pool, (now - rec.created_at).as_seconds_f64().max(0.0));
                }
                let image = rec.image_pull.map(|d| {
                    crate::runners::model::image_note(
                        i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                    )
                });
                tracing::info!(runner = %id, image = image.as_deref().unwrap_or("-"), "runner container running");
                self.persist(&rec);
                self.event(
                    "runner.running",
                    &rec,
                    json!({
                        "container_id": rec.container_id,
                        "image_pull_ms": rec.image_pull.map(|d| d.as_millis() as u64),
                        "image": image,
                    }),
                );
            }
            ContainerState::Exited => {
                let phase = if s.exit_code == 0 {
                    a.stop.as_ref().map_or(Phase::Exited, |w| w.outcome)
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
                let (phase, reason) = match &a.stop {
                    Some(w) => (w.outcome, format!("{}; container removed", w.reason)),
                    None => (Phase::Exited, "container removed".to_string()),
                };
                self.finish(id, phase, None, Some(reason), None).await;
            }
            _ => {}
        }
    }

    pub(super) async fn on_activity(&mut self, activity: RunnerActivity) {
        match activity {
            RunnerActivity::Busy {
                gitlab_runner_id,
                project_id,
                job_id,
            } => {
                let Some(id) = self.by_gitlab.get(&gitlab_runner_id).copied() else {
                    return;
                };
                let now = self.clock.now_utc();
                let Some(r) = self.active.get_mut(&id) else {
                    return;
                };
                if r.rec.busy_at.is_some() && r.rec.job_id == Some(job_id) {
                    return;
                }
                // A runner asked to stop stays stopping: the stop is wanted
                // until the agent confirms the container gone.
                if r.stop.is_none() {
                    r.set_phase(Phase::Busy);
                }
                r.rec.busy_at = Some(now);
                r.rec.project_id = Some(project_id);
                r.rec.job_id = Some(job_id);
                let rec = r.rec.clone();
                tracing::info!(runner = %id, job = job_id, "runner took a job");
                if let Some(seen) = self.job_seen.remove(&job_id) {
                    let wait = std::time::Duration::try_from(now - seen).unwrap_or_default();
                    if let Some(m) = &self.cfg.metrics {
                        m.job_wait(&rec.pool, wait.as_secs_f64());
                    }
                    self.handle
                        .record_wait(&self.cfg.pools.current(), &rec.pool, wait, now);
                }
                self.persist(&rec);
                self.event(
                    "runner.busy",
                    &rec,
                    json!({"project_id": project_id, "job_id": job_id}),
                );
            }
            RunnerActivity::Finished { .. } => {
                // The container exits after its one job; its exit finishes the runner.
            }
        }
    }
}
