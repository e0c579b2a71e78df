//! `Fleet.Session` and `Fleet.Renew`: thin adapters over the fleet domain.
//! Refusals are logged once per agent per `limits.refusal_log_interval`,
//! their messages (which may quote what the agent sent) escaped and capped.

use autogit_proto::v1 as pb;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use super::auth::peer_agent;
use super::session::{self, CommandStream};
use crate::config::LimitsConfig;
use crate::edge::{RefusalLog, wire};
use crate::enroll::Enroller;
use crate::fleet::session::Sessions;

/// Agents tracked by the refusal log at most.
const MAX_AGENTS: usize = 65_536;

pub struct FleetService {
    sessions: Sessions,
    enroller: Enroller,
    refusals: RefusalLog<String>,
}

impl FleetService {
    pub fn new(sessions: Sessions, enroller: Enroller, limits: &LimitsConfig) -> Self {
        FleetService {
            sessions,
            enroller,
            refusals: RefusalLog::new(limits.refusal_log_interval, MAX_AGENTS),
        }
    }
}

#[tonic::async_trait]
impl pb::fleet_server::Fleet for FleetService {
    type SessionStream = CommandStream;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let agent = peer_agent(&req)?;
        let stream = session::open(&self.sessions, agent, req.into_inner()).await.inspect_err(|s| {
            if let Some(suppressed) = self.refusals.admit(&agent.to_string(), Instant::now()) {
                tracing::warn!(%agent, code = ?s.code(), message = %wire(s.message()), suppressed, "session refused");
            }
        })?;
        Ok(Response::new(stream))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let agent = peer_agent(&req)?;
        let cert = self.enroller.renew(agent, &req.get_ref().csr_pem).await.inspect_err(|e| {
            if let Some(suppressed) = self.refusals.admit(&agent.to_string(), Instant::now()) {
                tracing::warn!(%agent, reason = %wire(&e.to_string()), suppressed, "renewal refused");
            }
        })?;
        Ok(Response::new(pb::RenewResponse {
            certificate_pem: cert,
        }))
    }
}
