//! AutoGit's PKI.
//!
//! * [`ca`]: the cluster CA that signs every agent and coordinator certificate.
//! * [`token`]: join tokens (`AGT1<ca-sha256>::<id>.<secret>`) that embed the CA
//!   fingerprint so an agent can pin the CA before it sends the secret.
//! * [`csr`]: agent-side key and CSR generation; the private key never leaves
//!   the host.
//! * [`identity`]: agent identities (`spiffe://autogit/agent/<uuid>`) and what
//!   we read back out of certificates.
//! * [`tls`]: rustls configurations (ring provider) for the coordinator's
//!   listener, the enrolling agent (pinned CA) and the mTLS session.
//!
//! Nothing in this crate does I/O beyond what callers hand it; key material is
//! passed as PEM strings and never printed by `Debug`.
#![forbid(unsafe_code)]

pub mod ca;
pub mod csr;
pub mod fingerprint;
#[doc(hidden)]
pub mod fuzz;
pub mod identity;
mod pem;
pub mod tls;
pub mod token;

pub use ca::{ClusterCa, IssuedCert};
pub use fingerprint::Fingerprint;
pub use identity::{AgentId, CertInfo};
pub use token::{JoinToken, TokenError, TokenId};

/// Errors from certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    #[error("invalid certificate: {0}")]
    InvalidCert(String),
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("TLS configuration failed: {0}")]
    Tls(String),
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError::Generate(e.to_string())
    }
}
