//! The cluster CA: created once by `autogit-coordinator init`, it signs agent
//! client certificates (from CSRs), the coordinator's server certificate and
//! operator client certificates.

use std::time::Duration;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::identity::{ADMIN_URI_PREFIX, first_cert_der};
use crate::{AgentId, CertInfo, Fingerprint, PkiError};

/// How long the cluster CA itself is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far in the past the CA and the coordinator's server certificate
/// start to be valid. Agents verify both with their own clock, which may be
/// wrong: an agent up to this far behind still accepts a coordinator that
/// was initialised (or restarted) a moment ago. See `docs/security.md`.
pub const TRUST_BACKDATE: Duration = Duration::from_secs(48 * 3600);
/// How far in the past client (agent, operator) certificates start to be
/// valid. Only the coordinator verifies them, with the clock that issued
/// them, so this only absorbs a small step back of that clock. Agents
/// subtract it to learn the lifetime they were given
/// ([`CertInfo::issued_lifetime`](crate::CertInfo::issued_lifetime)).
pub const CLIENT_BACKDATE: Duration = Duration::from_secs(60);

/// The CA certificate and its signing key. `Debug` shows only the fingerprint.
pub struct ClusterCa {
    cert_pem: String,
    fingerprint: Fingerprint,
    key: KeyPair,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate just issued by the CA.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub info: CertInfo,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[0] &= 0x7f; // keep it positive
    SerialNumber::from_slice(&b)
}

/// (notBefore, notAfter) for a certificate issued now: valid from `backdate`
/// ago for `ttl` from now.
fn validity(ttl: Duration, backdate: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - backdate, now + ttl)
}

impl ClusterCa {
    /// Create a new self-signed cluster CA (ECDSA P-256).
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "AutoGit");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        (params.not_before, params.not_after) = validity(CA_VALIDITY, TRUST_BACKDATE);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        Self::load(&cert_pem, &key.serialize_pem())
    }

    /// Load a CA from its PEM certificate and PEM PKCS#8 key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let der = first_cert_der(cert_pem)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
        let issuer_key =
            KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), issuer_key)
            .map_err(|e| PkiError::InvalidCert(e.to_string()))?;
        // The key must belong to the certificate.
        let info = x509_spki(&der)?;
        if info != rcgen::PublicKeyData::subject_public_key_info(&key) {
            return Err(PkiError::InvalidKey(
                "CA key does not match the CA certificate".into(),
            ));
        }
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            fingerprint: Fingerprint::of_der(&der),
            key,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key as PEM, for writing to disk with mode 0600.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Sign an agent's CSR. Only the CSR's public key is used (after its
    /// self-signature is verified); subject, SANs and usages are ours.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        agent: AgentId,
        ttl: Duration,
    ) -> Result<IssuedCert, PkiError> {
        self.sign_client_csr(
            csr_pem,
            &agent.to_string(),
            "AutoGit agents",
            agent.uri(),
            ttl,
        )
    }

    /// Sign an operator's CSR as an admin client certificate for `name`.
    pub fn sign_admin_csr(
        &self,
        csr_pem: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<IssuedCert, PkiError> {
        self.sign_client_csr(
            csr_pem,
            name,
            "AutoGit operators",
            format!("{ADMIN_URI_PREFIX}{name}"),
            ttl,
        )
    }

    /// A client-auth certificate for the CSR's key with our subject and URI SAN.
    fn sign_client_csr(
        &self,
        csr_pem: &str,
        cn: &str,
        org: &str,
        uri: String,
        ttl: Duration,
    ) -> Result<IssuedCert, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, org);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into()
                .map_err(|e: rcgen::Error| PkiError::Generate(e.to_string()))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        (params.not_before, params.not_after) = validity(ttl, CLIENT_BACKDATE);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let cert_pem = cert.pem();
        Ok(IssuedCert {
            info: CertInfo::from_der(cert.der())?,
            cert_pem,
        })
    }

    /// Issue the coordinator's TLS server certificate for `names` (DNS names
    /// or IP addresses). Returns (chain PEM: leaf then CA, key PEM).
    pub fn issue_server_cert(
        &self,
        names: &[String],
        ttl: Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "autogit-coordinator");
        dn.push(DnType::OrganizationName, "AutoGit");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        (params.not_before, params.not_after) = validity(ttl, TRUST_BACKDATE);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }
}

/// The SubjectPublicKeyInfo DER of a certificate.
fn x509_spki(der: &[u8]) -> Result<Vec<u8>, PkiError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::InvalidCert(e.to_string()))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr;

    #[test]
    fn signs_agent_csr_with_identity_and_ttl() {
        let ca = ClusterCa::generate("test").unwrap();
        let kc = csr::generate("host1").unwrap();
        let id = AgentId::new_random();
        let issued = ca
            .sign_agent_csr(&kc.csr_pem, id, Duration::from_secs(3600))
            .unwrap();
        assert_eq!(issued.info.agent_id(), Some(id));
        let life = issued.info.not_after - OffsetDateTime::now_utc();
        assert!(
            life.whole_seconds() > 3500 && life.whole_seconds() <= 3600,
            "{life}"
        );
    }

    #[test]
    fn reload_keeps_fingerprint_and_rejects_foreign_key() {
        let ca = ClusterCa::generate("test").unwrap();
        let again = ClusterCa::load(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        let other = ClusterCa::generate("other").unwrap();
        let err = ClusterCa::load(ca.cert_pem(), &other.key_pem()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn rejects_garbage_csr() {
        let ca = ClusterCa::generate("test").unwrap();
        let err = ca
            .sign_agent_csr("not a csr", AgentId::new_random(), Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, PkiError::InvalidCsr(_)));
    }

    /// Verify the coordinator's server certificate the way an agent does,
    /// with the agent's clock at `skew` from the true time.
    fn agent_accepts_server_at(ca: &ClusterCa, skew: time::Duration) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
        let (chain, _key) = ca
            .issue_server_cert(
                &[crate::tls::COORDINATOR_NAME.to_string()],
                Duration::from_secs(90 * 86400),
            )
            .unwrap();
        let certs = crate::tls::certs_from_pem(&chain).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(first_cert_der(ca.cert_pem()).unwrap()))
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::tls::provider(),
        )
        .build()
        .unwrap();
        let at = (OffsetDateTime::now_utc() + skew).unix_timestamp() as u64;
        verifier
            .verify_server_cert(
                &certs[0],
                &certs[1..],
                &ServerName::try_from(crate::tls::COORDINATOR_NAME).unwrap(),
                &[],
                UnixTime::since_unix_epoch(Duration::from_secs(at)),
            )
            .map(|_| ())
    }

    #[test]
    fn a_fresh_ca_and_server_certificate_are_accepted_by_a_clock_25h_behind_or_ahead() {
        let ca = ClusterCa::generate("test").unwrap();
        for hours in [-25, -8, 0, 8, 25] {
            agent_accepts_server_at(&ca, time::Duration::hours(hours))
                .unwrap_or_else(|e| panic!("{hours} h: {e}"));
        }
    }

    #[test]
    fn the_skew_margin_is_bounded() {
        // Negative: a clock further behind than the documented margin is refused.
        let ca = ClusterCa::generate("test").unwrap();
        let beyond = time::Duration::try_from(TRUST_BACKDATE).unwrap() + time::Duration::hours(1);
        let err = agent_accepts_server_at(&ca, -beyond).unwrap_err();
        assert!(err.to_string().contains("not valid yet"), "{err}");
    }

    #[test]
    fn client_certificates_keep_their_lifetime() {
        // Agents measure renewal from the lifetime they were given; a large
        // back-date would make it look longer than it is.
        let ca = ClusterCa::generate("test").unwrap();
        let kc = csr::generate("host1").unwrap();
        let issued = ca
            .sign_agent_csr(&kc.csr_pem, AgentId::new_random(), Duration::from_secs(9))
            .unwrap();
        assert_eq!(issued.info.issued_lifetime(), Duration::from_secs(9));
        let lead = OffsetDateTime::now_utc() - issued.info.not_before;
        assert!(
            lead <= time::Duration::seconds(70),
            "client certs are back-dated only {CLIENT_BACKDATE:?}: {lead}"
        );
    }
}
