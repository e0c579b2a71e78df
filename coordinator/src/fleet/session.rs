//! One agent's gRPC session, from `Hello` to disconnect.
//!
//! Identity comes from the verified client certificate (the caller passes
//! the [`AgentId`]); nothing in a message body can change it.

use std::time::Duration;

use autogit_certs::AgentId;
use autogit_proto::v1 as pb;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{Fleet, Inventory, Load, SessionId};
use crate::audit::{Audit, SYSTEM};
use crate::db::{Db, GpuRow};
use crate::grpc::ProtocolError;

/// How long an agent has to send `Hello` after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);
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
}

fn container_state(field: &'static str, v: i32) -> Result<ContainerState, ProtocolError> {
    Ok(match pb::RunnerState::try_from(v) {
        Ok(pb::RunnerState::Creating) => ContainerState::Creating,
        Ok(pb::RunnerState::Running) => ContainerState::Running,
        Ok(pb::RunnerState::Exited) => ContainerState::Exited,
        Ok(pb::RunnerState::Failed) => ContainerState::Failed,
        Ok(pb::RunnerState::Removed) => ContainerState::Removed,
        _ => {
            return Err(ProtocolError::invalid(
                field,
                format!("unknown runner state {v}"),
            ));
        }
    })
}

const MAX_LOG_TAIL: usize = 200;

impl TryFrom<pb::RunnerStatus> for RunnerReport {
    type Error = ProtocolError;
    fn try_from(s: pb::RunnerStatus) -> Result<Self, ProtocolError> {
        if s.runner_id.is_empty() || s.runner_id.len() > 128 {
            return Err(ProtocolError::invalid(
                "runner_status.runner_id",
                "must be 1-128 characters",
            ));
        }
        Ok(RunnerReport {
            state: container_state("runner_status.state", s.state)?,
            runner_id: s.runner_id,
            container_id: (!s.container_id.is_empty()).then_some(s.container_id),
            exit_code: s.exit_code,
            reason: (!s.reason.is_empty()).then(|| s.reason.chars().take(4096).collect()),
            log_tail: s
                .log_tail
                .into_iter()
                .take(MAX_LOG_TAIL)
                .map(|l| l.chars().take(4096).collect())
                .collect(),
        })
    }
}

impl TryFrom<pb::ManagedContainer> for RunnerReport {
    type Error = ProtocolError;
    fn try_from(c: pb::ManagedContainer) -> Result<Self, ProtocolError> {
        if c.runner_id.is_empty() || c.runner_id.len() > 128 {
            return Err(ProtocolError::invalid(
                "hello.containers.runner_id",
                "must be 1-128 characters",
            ));
        }
        Ok(RunnerReport {
            state: container_state("hello.containers.state", c.state)?,
            runner_id: c.runner_id,
            container_id: (!c.container_id.is_empty()).then_some(c.container_id),
            exit_code: c.exit_code,
            reason: None,
            log_tail: Vec::new(),
        })
    }
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
    /// Validate `Hello`, register the session and start reading the agent's
    /// messages. Returns the stream of commands to the agent.
    pub async fn open(
        &self,
        agent: AgentId,
        mut inbound: Streaming<pb::AgentMessage>,
    ) -> Result<ReceiverStream<Result<pb::CoordinatorMessage, Status>>, Status> {
        self.fleet
            .admit(&agent)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 15 s"))??
            .ok_or_else(|| Status::cancelled("stream closed before Hello"))?;
        let hello = match first.msg {
            Some(pb::agent_message::Msg::Hello(h)) => h,
            _ => {
                return Err(ProtocolError::invalid("msg", "the first message must be Hello").into());
            }
        };
        let inventory = Inventory::try_from(
            hello
                .inventory
                .ok_or(ProtocolError::missing("hello.inventory"))?,
        )?;
        let containers = hello
            .containers
            .into_iter()
            .map(RunnerReport::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(OUTBOUND);
        tx.send(Ok(pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Welcome(pb::Welcome {
                agent_id: agent.to_string(),
                heartbeat_interval_ms: self.fleet.timings().heartbeat_interval.as_millis() as u32,
            })),
        }))
        .await
        .map_err(|_| Status::internal("session closed"))?;
        self.persist_inventory(&agent, &inventory).await;
        let hostname = inventory.hostname.clone();
        let arch = inventory.arch.clone();
        let (sid, prev) = self
            .fleet
            .connect(agent, inventory, tx)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        tracing::info!(%agent, %hostname, %arch, version = %hello.agent_version, "agent session opened");
        self.audit
            .record(
                "agent.connected",
                SYSTEM,
                Some(&agent.to_string()),
                None,
                json!({"hostname": hostname, "arch": arch, "previous_state": prev, "agent_version": hello.agent_version}),
            )
            .await;
        let _ = self
            .events
            .send(AgentEvent::Connected { agent, containers });
        let this = self.clone();
        tokio::spawn(async move { this.read_loop(agent, sid, inbound).await });
        Ok(ReceiverStream::new(rx))
    }

    async fn read_loop(
        self,
        agent: AgentId,
        sid: SessionId,
        mut inbound: Streaming<pb::AgentMessage>,
    ) {
        let reason = loop {
            match inbound.next().await {
                None => break "closed by agent".to_string(),
                Some(Err(status)) => break format!("stream error: {}", status.message()),
                Some(Ok(m)) => {
                    if let Err(e) = self.handle(agent, sid, m).await {
                        tracing::warn!(%agent, error = %e, "bad message from agent; closing session");
                        let _ = self.fleet.send_status(&agent, Status::from(e.clone()));
                        break e.to_string();
                    }
                }
            }
        };
        if let Some(t) = self.fleet.disconnect(&agent, sid) {
            tracing::warn!(%agent, %reason, "agent session closed");
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

    async fn handle(
        &self,
        agent: AgentId,
        sid: SessionId,
        m: pb::AgentMessage,
    ) -> Result<(), ProtocolError> {
        match m.msg {
            Some(pb::agent_message::Msg::Heartbeat(h)) => {
                self.fleet.heartbeat(
                    &agent,
                    sid,
                    Load {
                        cpu_percent: h.cpu_percent.clamp(0.0, 100.0),
                        mem_used_bytes: h.mem_used_bytes,
                        mem_total_bytes: h.mem_total_bytes,
                        runner_containers: h.runner_containers,
                    },
                );
            }
            Some(pb::agent_message::Msg::Inventory(inv)) => {
                let inv = Inventory::try_from(inv)?;
                if self.fleet.update_inventory(&agent, inv.clone()) {
                    tracing::info!(%agent, "agent inventory changed");
                    self.persist_inventory(&agent, &inv).await;
                }
            }
            Some(pb::agent_message::Msg::RunnerStatus(s)) => {
                let report = RunnerReport::try_from(s)?;
                let _ = self.events.send(AgentEvent::RunnerStatus { agent, report });
            }
            Some(pb::agent_message::Msg::Hello(_)) => {
                return Err(ProtocolError::invalid("msg", "Hello sent twice"));
            }
            None => return Err(ProtocolError::missing("msg")),
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_reports_are_validated_at_the_edge() {
        let ok = RunnerReport::try_from(pb::RunnerStatus {
            runner_id: "r".into(),
            state: pb::RunnerState::Failed as i32,
            reason: "boom".into(),
            log_tail: vec!["x".into(); 1000],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.state, ContainerState::Failed);
        assert_eq!(ok.container_id, None);
        assert_eq!(ok.log_tail.len(), MAX_LOG_TAIL, "bounded");
        let unknown = RunnerReport::try_from(pb::RunnerStatus {
            runner_id: "r".into(),
            state: 42,
            ..Default::default()
        });
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("runner_status.state")
        );
        let unnamed = RunnerReport::try_from(pb::ManagedContainer {
            state: pb::RunnerState::Running as i32,
            ..Default::default()
        });
        assert!(
            unnamed
                .unwrap_err()
                .to_string()
                .contains("hello.containers.runner_id")
        );
    }
}
