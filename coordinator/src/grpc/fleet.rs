//! `Fleet.Session`, `Fleet.Renew` and `Fleet.ConfirmCertificate`: thin
//! adapters over the fleet and enrollment domains. Every call names the
//! certificate it came with, and only the agent's current (or just renewed)
//! one is accepted ([`Enroller::check_cert`]).
//! Refusals are logged once per agent per `limits.refusal_log_interval`,
//! their messages (which may quote what the agent sent) escaped and capped.

use autogit_proto::v1 as pb;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use super::auth::peer_agent_cert;
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
        let (agent, serial) = peer_agent_cert(&req)?;
        let checked = self
            .enroller
            .check_cert(agent, &serial)
            .await
            .map_err(Status::from);
        let opened = match checked {
            Ok(()) => session::open(&self.sessions, agent, req.into_inner()).await,
            Err(s) => Err(s),
        };
        let stream = opened.inspect_err(|s| {
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
        let (agent, serial) = peer_agent_cert(&req)?;
        let cert = self.enroller.renew(agent, &serial, &req.get_ref().csr_pem).await.inspect_err(|e| {
            if let Some(suppressed) = self.refusals.admit(&agent.to_string(), Instant::now()) {
                tracing::warn!(%agent, reason = %wire(&e.to_string()), suppressed, "renewal refused");
            }
        })?;
        Ok(Response::new(pb::RenewResponse {
            certificate_pem: cert,
        }))
    }

    async fn confirm_certificate(
        &self,
        req: Request<pb::ConfirmCertificateRequest>,
    ) -> Result<Response<pb::ConfirmCertificateResponse>, Status> {
        let (agent, serial) = peer_agent_cert(&req)?;
        self.enroller.check_cert(agent, &serial).await.inspect_err(|e| {
            if let Some(suppressed) = self.refusals.admit(&agent.to_string(), Instant::now()) {
                tracing::warn!(%agent, reason = %wire(&e.to_string()), suppressed, "certificate confirmation refused");
            }
        })?;
        Ok(Response::new(pb::ConfirmCertificateResponse {}))
    }
}
