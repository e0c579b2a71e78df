//! Acknowledged stops, and the timeouts that lead to stops or write-offs.
//!
//! A stop stays wanted until the agent confirms the container gone (an
//! `Exited`/`Failed`/`Removed` report, or the container missing from its
//! list at reconnect) or the agent is lost or revoked. Until then the runner
//! keeps its record, its resources and its GitLab runner. The stop is
//! graceful (the runner may finish its job) until its deadline and forceful
//! after; it is sent again whenever it did not reach a live session, and on
//! every reconnect.

use std::collections::HashMap;

use std::time::Duration;

use autogit_certs::AgentId;
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use super::Reconciler;
use crate::fleet::{AgentCommand, AgentState};
use crate::runners::Phase;

/// A stop the agent has not confirmed yet.
#[derive(Debug, Clone)]
pub(super) struct WantedStop {
    pub reason: String,
    /// Graceful (the runner may finish its job) until then, forceful after.
    pub graceful_until: Instant,
    /// The forceful stop has been asked for.
    pub forced: bool,
    /// The last sent form reached a live session. Cleared when the session
    /// ends, so the stop goes out again.
    pub delivered: bool,
    /// The final phase once the agent confirms the container gone, unless
    /// its report says more (a non-zero exit is a failure).
    pub outcome: Phase,
}

impl WantedStop {
    /// A stop recorded before a coordinator restart.
    pub fn after_restart(reason: String, graceful_until: Instant) -> Self {
        WantedStop {
            reason,
            graceful_until,
            forced: false,
            delivered: false,
            outcome: Phase::Exited,
        }
    }
}

/// A graceful stop with `grace` to finish the job, or a forceful one.
fn stop_message(runner_id: String, grace: Option<Duration>) -> AgentCommand {
    AgentCommand::StopRunner {
        runner_id,
        graceful: grace.is_some(),
        grace,
    }
}

impl Reconciler {
    /// Want runner `id` stopped: gracefully until `graceful_until`, then
    /// forcefully. A runner already stopping keeps its stop; an earlier
    /// deadline replaces a later one.
    pub(super) async fn stop_runner(
        &mut self,
        id: Uuid,
        reason: &str,
        graceful_until: Instant,
        outcome: Phase,
    ) {
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        if let Some(s) = &mut a.stop {
            if graceful_until < s.graceful_until {
                s.graceful_until = graceful_until;
                s.delivered = false;
                self.send_stop(id);
            }
            return;
        }
        a.stop = Some(WantedStop {
            reason: reason.to_string(),
            graceful_until,
            forced: false,
            delivered: false,
            outcome,
        });
        a.set_phase(Phase::Stopping);
        a.rec.reason = Some(reason.to_string());
        let rec = a.rec.clone();
        tracing::info!(runner = %id, %reason, "stopping runner");
        self.send_stop(id);
        if self
            .active
            .get(&id)
            .and_then(|a| a.stop.as_ref())
            .is_some_and(|s| !s.delivered)
        {
            tracing::warn!(runner = %id, agent = %rec.agent, "agent not connected; the stop goes out when it reconnects");
        }
        self.persist(&rec);
        self.event("runner.stopping", &rec, json!({"reason": reason}));
    }

    /// Send runner `id`'s wanted stop in its current form (graceful with the
    /// time left, or forceful past the deadline). Not connected: it stays
    /// pending and goes out at the next reconnect.
    pub(super) fn send_stop(&mut self, id: Uuid) {
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        let Some(s) = &mut a.stop else { return };
        let now = Instant::now();
        if now >= s.graceful_until {
            s.forced = true;
        }
        let grace = (!s.forced).then(|| s.graceful_until - now);
        let msg = stop_message(id.to_string(), grace);
        match self.fleet.send(&a.rec.agent, msg) {
            Ok(()) => s.delivered = true,
            Err(_) => s.delivered = false,
        }
    }

    /// An agent's session ended: whatever it was sent may be lost.
    pub(super) fn on_disconnected(&mut self, agent: AgentId) {
        for a in self.active.values_mut() {
            if a.rec.agent == agent
                && let Some(s) = &mut a.stop
            {
                s.delivered = false;
            }
        }
    }

    /// Make stops past their deadline forceful, and retry stops that did
    /// not reach a live session.
    pub(super) fn check_stops(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for a in self.active.values_mut() {
            let Some(s) = &mut a.stop else { continue };
            if !s.forced && now >= s.graceful_until {
                tracing::warn!(runner = %a.rec.id, reason = %s.reason, "stop deadline passed; stopping the runner forcefully");
                s.forced = true;
                s.delivered = false;
            }
            if !s.delivered {
                due.push(a.rec.id);
            }
        }
        for id in due {
            self.send_stop(id);
        }
    }

    /// Tell an agent to remove a container no runner record wants. Sent
    /// again each time the agent lists it at a reconnect.
    pub(super) fn stop_unwanted(&self, agent: &AgentId, runner_id: &str) {
        tracing::warn!(%agent, runner = %runner_id, "stopping a container no runner record wants");
        let _ = self
            .fleet
            .send(agent, stop_message(runner_id.to_string(), None));
    }

    /// Runners of lost or revoked agents are written off; runners not
    /// running within `provision_timeout` are stopped (or failed at once
    /// when no `StartRunner` went out, so no container can exist).
    pub(super) async fn check_timeouts(&mut self) {
        let agents: HashMap<AgentId, AgentState> = self.fleet.states();
        let timeout = self.cfg.provision_timeout;
        let too_slow = format!("not running within {}", humantime::format_duration(timeout));
        let mut write_off = Vec::new();
        let mut stop = Vec::new();
        for a in self.active.values() {
            match agents.get(&a.rec.agent) {
                Some(AgentState::Lost) => {
                    write_off.push((a.rec.id, Phase::Lost, "agent lost".to_string()));
                    continue;
                }
                Some(AgentState::Revoked) | None => {
                    write_off.push((
                        a.rec.id,
                        Phase::Lost,
                        "agent revoked or removed".to_string(),
                    ));
                    continue;
                }
                _ => {}
            }
            let starting = matches!(a.rec.phase, Phase::Provisioning | Phase::Starting);
            if starting && a.phase_since.elapsed() > timeout {
                if a.rec.phase == Phase::Provisioning && a.start.is_none() {
                    write_off.push((a.rec.id, Phase::Failed, too_slow.clone()));
                } else {
                    stop.push(a.rec.id);
                }
            }
        }
        let now = Instant::now();
        for id in stop {
            self.stop_runner(id, &too_slow, now, Phase::Failed).await;
        }
        for (id, phase, reason) in write_off {
            self.finish(id, phase, None, Some(reason), None).await;
        }
    }
}
