//! One agent's session as the domain sees it: a validated [`Hello`] opens
//! it, [`AgentReport`]s arrive, it closes. The gRPC adapter
//! (`grpc/session.rs`) reads the wire, validates into these types
//! (`grpc/convert.rs`) and drives them; nothing here knows tonic.
//!
//! Identity comes from the verified client certificate (the caller passes
//! the [`AgentId`]); nothing in a message body can change it.

use crate::edge::logsafe::clean;
use crate::edge::wire;
use std::time::Duration;

use autogit_certs::AgentId;
use serde_json::json;
use tokio::sync::mpsc;

use super::command::AgentCommand;
use super::inventory::{HardwareChange, hardware_change};
use super::{Fleet, Inventory, Load, Refusal, SessionId};
use crate::audit::{AGENT_HARDWARE_CHANGED, Audit, SYSTEM};
use crate::db::{Db, GpuRow};

/// Outbound command buffer per agent.
const OUTBOUND: usize = 256;

/// What sessions tell the runner lifecycle.
#[derive(Debug)]
pub enum AgentEvent {
    /// A session opened; `containers` are all AutoGit-managed containers on the host.
    Connected {
        agent: AgentId,
        containers: Vec<RunnerReport>,
    },
    RunnerStatus {
        agent: AgentId,
        report: RunnerReport,
    },
    Disconnected {
        agent: AgentId,
    },
}

/// A runner container's state as an agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Creating,
    Running,
    Exited,
    Failed,
    Removed,
}

/// One runner container, from a `RunnerStatus` or a `Hello`'s container
/// list, validated at the gRPC edge. `runner_id` stays a string: a container
/// with a label that is not one of our ids must still be named to stop it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerReport {
    pub runner_id: String,
    pub container_id: Option<String>,
    pub state: ContainerState,
    pub exit_code: i32,
    pub reason: Option<String>,
    pub log_tail: Vec<String>,
    /// How long the container waited for its image (0: it was on the host);
    /// `None` where the message does not say.
    pub image_pull: Option<std::time::Duration>,
}

/// The first message of a session, validated.
#[derive(Debug, Clone)]
pub struct Hello {
    pub agent_version: String,
    pub inventory: Inventory,
    /// Every AutoGit-managed container on the host.
    pub containers: Vec<RunnerReport>,
}

/// A message after `Hello`, validated.
#[derive(Debug, Clone)]
pub enum AgentReport {
    Heartbeat(Load),
    Inventory(Box<Inventory>),
    RunnerStatus(RunnerReport),
}

/// Everything a session needs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sessions {
    pub fleet: Fleet,
    pub db: Db,
    pub audit: Audit,
    pub events: mpsc::UnboundedSender<AgentEvent>,
}

impl Sessions {
    /// Whether `agent` may open a session at all (before its `Hello`).
    pub fn admit(&self, agent: &AgentId) -> Result<(), Refusal> {
        self.fleet.admit(agent)
    }

    /// How often agents heartbeat.
    pub fn heartbeat_interval(&self) -> Duration {
        self.fleet.timings().heartbeat_interval
    }

    /// Register a session after a valid `Hello`: the agent becomes ready and
    /// the runner lifecycle learns its containers. Returns the session's id
    /// and the commands to send to the agent.
    pub async fn open(
        &self,
        agent: AgentId,
        hello: Hello,
    ) -> Result<(SessionId, mpsc::Receiver<AgentCommand>), Refusal> {
        let Hello {
            agent_version,
            inventory,
            containers,
        } = hello;
        let stored = self.stored_inventory(&agent).await;
        self.persist_inventory(&agent, &inventory).await;
        let hostname = inventory.hostname.clone();
        let arch = inventory.arch.clone();
        let change = stored.and_then(|before| hardware_change(&before, &inventory));
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let (sid, prev) = self.fleet.connect(agent, inventory, tx)?;
        tracing::info!(%agent, hostname = %wire(&hostname), arch = %wire(&arch), version = %wire(&agent_version), "agent session opened");
        // Before `agent.connected`, so a reader who sees the connection sees
        // the change its Hello brought too.
        if let Some(change) = change {
            self.audit_hardware(&agent, &hostname, &change, "hello")
                .await;
        }
        self.audit
            .record(
                "agent.connected",
                SYSTEM,
                Some(&agent.to_string()),
                None,
                json!({"hostname": hostname, "arch": arch, "previous_state": prev, "agent_version": agent_version}),
            )
            .await;
        let _ = self
            .events
            .send(AgentEvent::Connected { agent, containers });
        Ok((sid, rx))
    }

    /// A report on session `sid`.
    pub async fn report(&self, agent: AgentId, sid: SessionId, report: AgentReport) {
        match report {
            AgentReport::Heartbeat(load) => self.fleet.heartbeat(&agent, sid, load),
            AgentReport::Inventory(inv) => {
                if self.fleet.update_inventory(&agent, (*inv).clone()) {
                    tracing::info!(%agent, "agent inventory changed");
                    let stored = self.stored_inventory(&agent).await;
                    self.persist_inventory(&agent, &inv).await;
                    if let Some(change) = stored.and_then(|before| hardware_change(&before, &inv)) {
                        self.audit_hardware(&agent, &inv.hostname, &change, "inventory")
                            .await;
                    }
                }
            }
            AgentReport::RunnerStatus(report) => {
                let _ = self.events.send(AgentEvent::RunnerStatus { agent, report });
            }
        }
    }

    /// Session `sid` ended for `reason`.
    pub async fn closed(&self, agent: AgentId, sid: SessionId, reason: &str) {
        if let Some(t) = self.fleet.disconnect(&agent, sid) {
            tracing::warn!(%agent, reason = %wire(reason), "agent session closed");
            self.audit
                .record(
                    "agent.state",
                    SYSTEM,
                    Some(&agent.to_string()),
                    None,
                    json!({"from": t.from, "to": t.to, "reason": reason}),
                )
                .await;
            let _ = self.events.send(AgentEvent::Disconnected { agent });
        }
    }

    /// The inventory last stored for `agent` (what placement used before
    /// this report), if any and readable.
    async fn stored_inventory(&self, agent: &AgentId) -> Option<Inventory> {
        let row = match self.db.get_agent(&agent.to_string()).await {
            Ok(row) => row?,
            Err(e) => {
                tracing::warn!(%agent, error = %e, "read stored agent inventory");
                return None;
            }
        };
        serde_json::from_str(row.inventory.as_deref()?).ok()
    }

    /// Self-reported hardware is a claim: placement uses it, but a change
    /// (`fleet::inventory::hardware_change`, reported in a `Hello` or an
    /// `Inventory` message, named by `seen_in`) is audited and logged as a
    /// warning. Load and free memory are not part of it.
    async fn audit_hardware(
        &self,
        agent: &AgentId,
        hostname: &str,
        change: &HardwareChange,
        seen_in: &str,
    ) {
        tracing::warn!(
            %agent,
            hostname = %wire(hostname),
            change = %change.describe(),
            seen_in,
            "agent reports different hardware than before; placement uses the new claim"
        );
        let mut detail = change.summary();
        detail["hostname"] = clean(hostname).into();
        detail["seen_in"] = seen_in.into();
        self.audit
            .record(
                AGENT_HARDWARE_CHANGED,
                SYSTEM,
                Some(&agent.to_string()),
                None,
                detail,
            )
            .await;
    }

    async fn persist_inventory(&self, agent: &AgentId, inv: &Inventory) {
        let gpus: Vec<GpuRow> = inv
            .gpus
            .iter()
            .map(|g| GpuRow {
                uuid: g.uuid.clone(),
                idx: i64::from(g.index),
                vendor: g.vendor.as_str().into(),
                name: g.name.clone(),
                memory_bytes: g.memory_bytes.map(|m| m as i64),
            })
            .collect();
        let json = serde_json::to_string(inv).unwrap_or_else(|_| "{}".into());
        if let Err(e) = self
            .db
            .update_inventory(&agent.to_string(), &inv.hostname, &inv.arch, &json, &gpus)
            .await
        {
            tracing::warn!(%agent, error = %e, "persist agent inventory");
        }
    }
}
