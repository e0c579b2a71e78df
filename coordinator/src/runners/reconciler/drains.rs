//! Draining an agent: no new runners there (the scheduler sees it
//! cordoned), every runner asked to finish its job and stop by the
//! deadline, a forceful stop at the deadline (see [`super::stops`]), and
//! `agent.drained` once the agent has no runner left, that is when every
//! container is confirmed gone.

use autogit_certs::AgentId;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Reconciler;
use crate::db;
use crate::fleet::{Drain, rfc3339};
use crate::runners::Phase;

impl Reconciler {
    /// Start draining `agent` until `deadline`; returns how many runners
    /// are being stopped.
    pub(super) async fn drain(
        &mut self,
        agent: AgentId,
        deadline: OffsetDateTime,
    ) -> Result<u32, String> {
        let now = self.clock.now_utc();
        let drain = Drain {
            started_at: rfc3339(db::to_ms(now)),
            deadline: rfc3339(db::to_ms(deadline)),
            drained_at: None,
            deadline_ms: db::to_ms(deadline),
        };
        if !self.fleet.set_drain(&agent, Some(drain)) {
            return Err(format!("no agent with id {agent}"));
        }
        let until = self.clock.instant_at(deadline);
        let mine: Vec<(Uuid, Phase, bool)> = self
            .active
            .values()
            .filter(|a| a.rec.agent == agent)
            .map(|a| (a.rec.id, a.rec.phase, a.start.is_some()))
            .collect();
        for &(id, phase, start_sent) in &mine {
            if phase == Phase::Provisioning && !start_sent {
                // Its GitLab runner is still being created: no container
                // can exist yet.
                self.finish(
                    id,
                    Phase::Failed,
                    None,
                    Some("agent drained before the runner started".into()),
                    None,
                )
                .await;
            } else {
                self.stop_runner(id, "agent draining", until, Phase::Exited)
                    .await;
            }
        }
        tracing::info!(%agent, runners = mine.len(), deadline = %rfc3339(db::to_ms(deadline)), "draining agent");
        Ok(mine.len() as u32)
    }

    /// Report `agent.drained` for draining agents with no runner left.
    pub(super) async fn check_drains(&mut self) {
        for (agent, drain) in self.fleet.unfinished_drains() {
            if self.active.values().any(|a| a.rec.agent == agent) {
                continue;
            }
            if self.fleet.drain_done(&agent) {
                tracing::info!(%agent, "agent drained");
                self.audit_event(
                    "agent.drained",
                    &agent.to_string(),
                    None,
                    json!({"deadline": drain.deadline}),
                );
            }
        }
    }
}
