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

    /// The lifetime the CA gave this certificate: notAfter - notBefore, less
    /// the CA's [`CLIENT_BACKDATE`](crate::ca::CLIENT_BACKDATE). Both dates
    /// come from the issuer's clock, so this never depends on the local one.
    pub fn issued_lifetime(&self) -> std::time::Duration {
        let span = (self.not_after - self.not_before).max(time::Duration::ZERO);
        let span = std::time::Duration::try_from(span).unwrap_or_default();
        match span.checked_sub(crate::ca::CLIENT_BACKDATE) {
            Some(life) if !life.is_zero() => life,
            // Not one of ours (or back-dated differently): the whole span.
            _ => span,
        }
    }

    /// The agent identity, if this is an agent certificate.
    pub fn agent_id(&self) -> Option<AgentId> {
        match self.principal {
            Some(Principal::Agent(id)) => Some(id),
            _ => None,
        }
    }
}

/// Whether the PEM private key `key_pem` belongs to the first certificate
/// in `cert_pem` (their public keys are the same). Errors name the file
/// content that cannot be parsed; the key itself is never shown.
pub fn key_matches_cert(cert_pem: &str, key_pem: &str) -> Result<bool, PkiError> {
    let der = first_cert_der(cert_pem)?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| PkiError::InvalidCert(format!("cannot parse DER: {e}")))?;
    let key = rcgen::KeyPair::from_pem(key_pem)
        .map_err(|_| PkiError::InvalidKey("not a PEM PKCS#8 private key".into()))?;
    Ok(rcgen::PublicKeyData::subject_public_key_info(&key) == cert.tbs_certificate.subject_pki.raw)
}

/// DER of the first certificate in a PEM bundle.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    crate::pem::certs(pem).map(|mut certs| certs.swap_remove(0).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterCa, csr};

    #[test]
    fn key_matches_only_its_own_certificate() {
        let ca = ClusterCa::generate("t").unwrap();
        let mine = csr::generate("h").unwrap();
        let other = csr::generate("h").unwrap();
        let cert = ca
            .sign_agent_csr(
                &mine.csr_pem,
                AgentId::new_random(),
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        assert!(key_matches_cert(&cert.cert_pem, &mine.key_pem).unwrap());
        assert!(!key_matches_cert(&cert.cert_pem, &other.key_pem).unwrap());
        let err =
            key_matches_cert(&cert.cert_pem, "-----BEGIN PRIVATE KEY-----\nAAAA").unwrap_err();
        assert!(matches!(err, PkiError::InvalidKey(_)), "{err}");
        assert!(matches!(
            key_matches_cert("garbage", &mine.key_pem),
            Err(PkiError::InvalidCert(_))
        ));
    }
}
