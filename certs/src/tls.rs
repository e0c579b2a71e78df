//! rustls configurations, all on the ring provider.
//!
//! * [`server_config`]: the coordinator's single gRPC listener. Client
//!   certificates are *optional* at the TLS layer so that enrolling agents
//!   (no certificate yet) can reach the Enrollment service; any certificate
//!   that *is* presented must chain to the cluster CA, or the handshake fails.
//!   The Fleet service then requires a certificate and checks revocation.
//! * [`enrollment_client_config`]: an agent that only knows the CA fingerprint
//!   from its join token. The server must present the pinned CA in its chain
//!   and a leaf signed by it, before the token secret is sent.
//! * [`agent_client_config`]: the mTLS session with the agent's own certificate.
//!
//! Agents verify the coordinator under the fixed name [`COORDINATOR_NAME`]
//! (always in the server certificate's SANs), so the address agents dial may
//! be any IP or DNS name; trust comes from the pinned private CA, whose
//! client certificates cannot act as servers (EKU).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::{Fingerprint, PkiError};

/// The DNS name every coordinator certificate carries and agents verify.
pub const COORDINATOR_NAME: &str = "autogit-coordinator";

/// The ring crypto provider used everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parse every certificate in a PEM bundle.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    crate::pem::certs(pem)
}

/// Parse a PEM private key.
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    crate::pem::private_key(pem)
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, PkiError> {
    let mut store = RootCertStore::empty();
    for c in certs_from_pem(ca_pem)? {
        store.add(c).map_err(|e| PkiError::InvalidCert(format!("CA not usable as trust anchor: {e}")))?;
    }
    Ok(Arc::new(store))
}

fn tls_err(e: rustls::Error) -> PkiError {
    PkiError::Tls(e.to_string())
}

/// The coordinator's listener config: server chain + key, optional client
/// certificates that must chain to `ca_pem`, ALPN h2 for gRPC.
pub fn server_config(ca_pem: &str, chain_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, PkiError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs_from_pem(chain_pem)?, key_from_pem(key_pem)?)
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client config for the mTLS session: trusts only the cluster CA and presents
/// the agent's (or operator's) certificate.
pub fn agent_client_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<ClientConfig>, PkiError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs_from_pem(cert_pem)?, key_from_pem(key_pem)?)
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client config for enrollment: no client certificate, and the server is
/// trusted only if its chain contains the CA with fingerprint `pin` and the
/// leaf verifies against that CA.
pub fn enrollment_client_config(pin: Fingerprint) -> Result<Arc<ClientConfig>, PkiError> {
    let verifier = Arc::new(PinnedCaVerifier { pin, provider: provider() });
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Verifies a server against a CA identified only by its SHA-256 fingerprint.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

/// The message an agent shows when the pin does not match.
pub const PIN_MISMATCH: &str = "coordinator CA does not match the fingerprint in the join token";

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| Fingerprint::of_der(c).matches(&self.pin))
            .ok_or_else(|| rustls::Error::General(PIN_MISMATCH.into()))?;
        let mut store = RootCertStore::empty();
        store.add(ca.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
