//! `autogit-agent join`: enrol with a join token.
//!
//! 1. Generate the agent's key locally (it never leaves the host).
//! 2. Connect with TLS that trusts only a CA whose SHA-256 matches the
//!    fingerprint inside the token: the secret is sent only after that.
//! 3. Send the token and a CSR; receive a short-lived certificate.
//! 4. Store key, certificate (in one file, with the local time it arrived),
//!    CA and coordinator address in the state dir.

use std::time::Duration;

use autogit_certs::{csr, CertInfo, Fingerprint, JoinToken};
use autogit_proto::v1 as pb;
use tonic::Code;

use crate::state::{AgentFile, Identity, StateDir};
use crate::transport::{self, ConnectError};

/// Why joining failed. `Display` is one line naming the cause.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] autogit_certs::TokenError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("enrollment refused: {0}")]
    Refused(String),
    #[error("coordinator answered with a CA that does not match the join token")]
    CaMismatch,
    #[error("coordinator sent an invalid certificate: {0}")]
    BadResponse(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("generate key: {0}")]
    Key(#[from] autogit_certs::PkiError),
}

pub struct JoinRequest<'a> {
    pub coordinator: &'a str,
    pub token: &'a str,
    pub hostname: &'a str,
    pub force: bool,
    pub timeout: Duration,
}

/// Enrol and write the state dir. Returns the new agent id.
pub async fn join(state: &StateDir, req: JoinRequest<'_>) -> Result<String, JoinError> {
    if state.is_enrolled() && !req.force {
        return Err(crate::state::StateError::AlreadyEnrolled(state.path().to_path_buf()).into());
    }
    let token = JoinToken::parse(req.token)?;
    let pin = token.ca_fingerprint();
    let keys = csr::generate(req.hostname)?;
    let tls = autogit_certs::tls::enrollment_client_config(pin)?;
    let channel = transport::connect(req.coordinator, tls, req.timeout).await?;
    let mut client = pb::enrollment_client::EnrollmentClient::new(channel);
    let resp = client
        .enroll(pb::EnrollRequest { token: token.expose(), csr_pem: keys.csr_pem.clone(), hostname: req.hostname.to_string() })
        .await
        .map_err(|s| match s.code() {
            Code::Unavailable => JoinError::Connect(ConnectError::Unreachable { addr: req.coordinator.into(), detail: s.message().into() }),
            _ => JoinError::Refused(s.message().to_string()),
        })?
        .into_inner();
    let ca_der = autogit_certs::identity::first_cert_der(&resp.ca_pem).map_err(|e| JoinError::BadResponse(e.to_string()))?;
    if !Fingerprint::of_der(&ca_der).matches(&pin) {
        return Err(JoinError::CaMismatch);
    }
    let info = CertInfo::from_pem(&resp.certificate_pem).map_err(|e| JoinError::BadResponse(e.to_string()))?;
    if info.agent_id().map(|a| a.to_string()) != Some(resp.agent_id.clone()) {
        return Err(JoinError::BadResponse("certificate identity does not match the assigned agent id".into()));
    }
    state.save(&Identity {
        agent: AgentFile { agent_id: resp.agent_id.clone(), coordinator: req.coordinator.to_string() },
        ca_pem: resp.ca_pem,
        cert_pem: resp.certificate_pem,
        key_pem: keys.key_pem,
        received_at: time::OffsetDateTime::now_utc(),
    })?;
    Ok(resp.agent_id)
}
