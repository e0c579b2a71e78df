//! `Fleet.Session` and `Fleet.Renew`: thin adapters over the fleet domain.

use autogit_proto::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use super::auth::peer_agent;
use super::session::{self, CommandStream};
use crate::enroll::Enroller;
use crate::fleet::session::Sessions;

pub struct FleetService {
    pub sessions: Sessions,
    pub enroller: Enroller,
}

#[tonic::async_trait]
impl pb::fleet_server::Fleet for FleetService {
    type SessionStream = CommandStream;

    async fn session(&self, req: Request<Streaming<pb::AgentMessage>>) -> Result<Response<Self::SessionStream>, Status> {
        let agent = peer_agent(&req)?;
        let stream = session::open(&self.sessions, agent, req.into_inner()).await.inspect_err(|s| {
            tracing::warn!(%agent, code = ?s.code(), message = s.message(), "session refused");
        })?;
        Ok(Response::new(stream))
    }

    async fn renew(&self, req: Request<pb::RenewRequest>) -> Result<Response<pb::RenewResponse>, Status> {
        let agent = peer_agent(&req)?;
        let cert = self.enroller.renew(agent, &req.get_ref().csr_pem).await.inspect_err(|e| {
            tracing::warn!(%agent, reason = %e, "renewal refused");
        })?;
        Ok(Response::new(pb::RenewResponse { certificate_pem: cert }))
    }
}
