//! The gRPC edge: one TLS port serving `Enrollment` (no client certificate
//! needed) and `Fleet` (client certificate from the cluster CA, not revoked).
//!
//! Handlers are thin adapters: convert, call the domain, map the error.
//! Only this module knows tonic and the wire types of `Fleet.Session`:
//! `convert.rs` validates agent messages into domain values and turns domain
//! commands into wire messages; `session.rs` drives a session.
//! [`ProtocolError`] is the one conversion from bad input to
//! `Status::invalid_argument`.

mod auth;
mod convert;
mod enrollment;
mod fleet;
mod listener;
mod session;

pub use auth::peer_agent;
pub use enrollment::EnrollmentService;
pub use fleet::FleetService;
pub use listener::{GrpcIo, GrpcLimits, KEEPALIVE_INTERVAL, TlsIncoming, serve};

/// A message from an agent that breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("missing {0}")]
    Missing(&'static str),
}

impl ProtocolError {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        ProtocolError::Invalid {
            field,
            problem: problem.into(),
        }
    }

    pub fn missing(field: &'static str) -> Self {
        ProtocolError::Missing(field)
    }
}

impl From<ProtocolError> for tonic::Status {
    fn from(e: ProtocolError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}
