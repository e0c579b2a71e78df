//! Who is calling: the agent identity from the verified client certificate.

use autogit_certs::{AgentId, CertInfo};
use tonic::{Request, Status};

/// The agent behind a request, from its TLS client certificate (already
/// verified against the cluster CA by the listener). Never from the body.
pub fn peer_agent<T>(req: &Request<T>) -> Result<AgentId, Status> {
    peer_agent_cert(req).map(|(agent, _)| agent)
}

/// [`peer_agent`] and the serial of the certificate it presented.
pub fn peer_agent_cert<T>(req: &Request<T>) -> Result<(AgentId, String), Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated("a client certificate from the cluster CA is required")
    })?;
    let leaf = certs.first().ok_or_else(|| {
        Status::unauthenticated("a client certificate from the cluster CA is required")
    })?;
    let info = CertInfo::from_der(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let agent = info.agent_id().ok_or_else(|| {
        Status::permission_denied("client certificate is not an agent certificate")
    })?;
    Ok((agent, info.serial_hex))
}
