//! `Fleet.Session` on the wire: waits for `Hello`, validates every agent
//! message into a domain report (`convert.rs`), feeds the domain session
//! (`fleet/session.rs::Sessions`), and streams the domain's commands back as
//! wire messages; a `Close` command ends the stream with its status.

use crate::edge::wire;
use std::pin::Pin;
use std::time::Duration;

use autogit_certs::AgentId;
use autogit_proto::v1 as pb;
use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::ProtocolError;
use super::convert::{agent_report, coordinator_message};
use crate::fleet::session::{Hello, Sessions};
use crate::fleet::{CloseReason, SessionId};

/// How long an agent has to send `Hello` after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

/// The messages to one agent.
pub type CommandStream =
    Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send + 'static>>;

/// Validate `Hello`, open the domain session and start reading the agent's
/// messages. Returns the stream of messages to the agent (`Welcome` first).
pub async fn open(
    sessions: &Sessions,
    agent: AgentId,
    mut inbound: Streaming<pb::AgentMessage>,
) -> Result<CommandStream, Status> {
    sessions
        .admit(&agent)
        .map_err(|e| Status::permission_denied(e.to_string()))?;
    let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no Hello within 15 s"))??
        .ok_or_else(|| Status::cancelled("stream closed before Hello"))?;
    let hello = match first.msg {
        Some(pb::agent_message::Msg::Hello(h)) => Hello::try_from(h)?,
        _ => {
            return Err(ProtocolError::invalid("msg", "the first message must be Hello").into());
        }
    };
    // Every message carries the leader's epoch; agents refuse lower ones.
    let epoch = sessions.db.epoch().unwrap_or(0).max(0) as u64;
    let welcome = pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::Welcome(pb::Welcome {
            agent_id: agent.to_string(),
            heartbeat_interval_ms: sessions.heartbeat_interval().as_millis() as u32,
        })),
        epoch,
    };
    let (sid, commands) = sessions
        .open(agent, hello)
        .await
        .map_err(|e| Status::permission_denied(e.to_string()))?;
    tokio::spawn(read_loop(sessions.clone(), agent, sid, inbound));
    let out = tokio_stream::once(Ok(welcome)).chain(
        ReceiverStream::new(commands)
            .map(move |c| coordinator_message(c).map(|m| pb::CoordinatorMessage { epoch, ..m })),
    );
    Ok(Box::pin(out))
}

async fn read_loop(
    sessions: Sessions,
    agent: AgentId,
    sid: SessionId,
    mut inbound: Streaming<pb::AgentMessage>,
) {
    let reason = loop {
        match inbound.next().await {
            None => break "closed by agent".to_string(),
            Some(Err(status)) => break format!("stream error: {}", status.message()),
            Some(Ok(m)) => match agent_report(m) {
                Ok(report) => sessions.report(agent, sid, report).await,
                Err(e) => {
                    tracing::warn!(%agent, error = %wire(&e.to_string()), "bad message from agent; closing session");
                    let _ = sessions
                        .fleet
                        .close(&agent, CloseReason::Protocol(e.to_string()));
                    break e.to_string();
                }
            },
        }
    };
    sessions.closed(agent, sid, &reason).await;
}
