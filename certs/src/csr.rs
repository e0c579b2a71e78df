//! Agent-side key generation. The private key is created on the agent host
//! and only its CSR (public key + proof of possession) leaves it.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::PkiError;

/// A freshly generated ECDSA P-256 key and a CSR for it. `Debug` hides the key.
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// Generate a key pair and a CSR whose subject CN is `common_name` (a hint
/// only: the coordinator sets the identity it signs).
pub fn generate(common_name: &str) -> Result<KeyAndCsr, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}
