//! Agent identities and the facts we read back out of certificates.
//!
//! An agent's identity is a UUID assigned by the coordinator at enrollment and
//! carried in the certificate's URI SAN as `spiffe://autogit/agent/<uuid>`.
//! The coordinator takes identity from the verified certificate only, never
//! from a message body.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use uuid::Uuid;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PkiError;

/// URI SAN prefix for agent certificates.
pub const AGENT_URI_PREFIX: &str = "spiffe://autogit/agent/";
/// URI SAN prefix for operator (admin) client certificates.
pub const ADMIN_URI_PREFIX: &str = "spiffe://autogit/admin/";

/// A coordinator-assigned agent identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub Uuid);

impl AgentId {
    pub fn new_random() -> Self {
        AgentId(Uuid::new_v4())
    }

    pub fn uri(&self) -> String {
        format!("{AGENT_URI_PREFIX}{}", self.0)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.0)
    }
}

impl FromStr for AgentId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(AgentId)
    }
}

/// Who a verified client certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Agent(AgentId),
    Admin(String),
}

/// What we read out of a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub principal: Option<Principal>,
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| PkiError::InvalidCert(format!("cannot parse DER: {e}")))?;
        let mut principal = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name {
                    if let Some(rest) = uri.strip_prefix(AGENT_URI_PREFIX) {
                        if let Ok(id) = rest.parse() {
                            principal = Some(Principal::Agent(id));
                        }
                    } else if let Some(rest) = uri.strip_prefix(ADMIN_URI_PREFIX) {
                        principal = Some(Principal::Admin(rest.to_string()));
                    }
                }
            }
        }
        Ok(CertInfo {
            principal,
            serial_hex: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }

    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let der = first_cert_der(pem)?;
        Self::from_der(&der)
    }

    /// The agent identity, if this is an agent certificate.
    pub fn agent_id(&self) -> Option<AgentId> {
        match self.principal {
            Some(Principal::Agent(id)) => Some(id),
            _ => None,
        }
    }
}

/// DER of the first certificate in a PEM bundle.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let mut reader = pem.as_bytes();
    match rustls_pemfile::certs(&mut reader).next() {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(e)) => Err(PkiError::InvalidCert(format!("bad PEM: {e}"))),
        None => Err(PkiError::InvalidCert("no CERTIFICATE block in PEM".into())),
    }
}
