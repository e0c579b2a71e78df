//! PEM parsing on `rustls-pki-types`' [`PemObject`] (`rustls-pemfile` is
//! unmaintained, RUSTSEC-2025-0134, and banned in `deny.toml`).
//!
//! Errors say what is wrong in words (`missing the line -----END
//! CERTIFICATE-----`), never in byte lists, and never quote base64 content,
//! so a broken key file cannot leak into a log. Callers that read files add
//! the file name.

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::PkiError;

/// The longest piece of a PEM line quoted in an error.
const MAX_QUOTE: usize = 80;

fn quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut q: String = s.trim().chars().take(MAX_QUOTE).collect();
    if s.trim().chars().count() > MAX_QUOTE {
        q.push('…');
    }
    q.escape_debug().to_string()
}

/// What is wrong with a PEM text, in words.
fn problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing the line -----END {}-----", quote(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", quote(line))
        }
        pem::Error::Base64Decode(detail) => format!("invalid base64 inside a PEM block ({detail})"),
        pem::Error::NoItemsFound => "no PEM block found".into(),
        other => other.to_string(),
    }
}

/// Every certificate in a PEM bundle, in order; at least one.
pub fn certs(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::InvalidCert(format!("bad PEM: {}", problem(&e))))?;
    if certs.is_empty() {
        return Err(PkiError::InvalidCert("no CERTIFICATE block in PEM".into()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM text.
pub fn private_key(pem_text: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    match PrivateKeyDer::from_pem_slice(pem_text.as_bytes()) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            Err(PkiError::InvalidKey("no PRIVATE KEY block in PEM".into()))
        }
        Err(e) => Err(PkiError::InvalidKey(format!("bad PEM: {}", problem(&e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentId, ClusterCa, csr};

    fn issued() -> (String, String) {
        let ca = ClusterCa::generate("t").unwrap();
        let keys = csr::generate("h").unwrap();
        let cert = ca
            .sign_agent_csr(
                &keys.csr_pem,
                AgentId::new_random(),
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        (format!("{}{}", cert.cert_pem, ca.cert_pem()), keys.key_pem)
    }

    #[test]
    fn reads_a_bundle_and_a_key() {
        let (bundle, key) = issued();
        assert_eq!(certs(&bundle).unwrap().len(), 2);
        assert!(matches!(
            private_key(&key).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
        // A key and its certificate in one file (the agent's identity.pem).
        let both = format!("{key}{bundle}");
        assert_eq!(certs(&both).unwrap().len(), 2);
        assert!(private_key(&both).is_ok());
    }

    #[test]
    fn errors_name_the_problem_in_words() {
        let (bundle, key) = issued();
        let none = certs("garbage").unwrap_err().to_string();
        assert!(none.contains("no CERTIFICATE block"), "{none}");
        let no_key = private_key(&bundle).unwrap_err().to_string();
        assert!(no_key.contains("no PRIVATE KEY block"), "{no_key}");

        let cut = &bundle[..bundle.find("-----END").unwrap()];
        let e = certs(cut).unwrap_err().to_string();
        assert!(
            e.contains("missing the line -----END CERTIFICATE-----"),
            "{e}"
        );

        let body = bundle.lines().nth(3).unwrap();
        let broken = bundle.replacen(body, &"*".repeat(body.len()), 1);
        let e = certs(&broken).unwrap_err().to_string();
        assert!(e.contains("invalid base64"), "{e}");

        // A damaged key is named without quoting any of its content.
        let secret_line = key.lines().nth(1).unwrap();
        let damaged = key.replacen(secret_line, &format!("{}!", &secret_line[..20]), 1);
        let e = private_key(&damaged).unwrap_err().to_string();
        assert!(e.contains("invalid base64"), "{e}");
        assert!(!e.contains(&secret_line[..20]), "key content leaked: {e}");
        let e = private_key(&key[..key.len() / 2]).unwrap_err().to_string();
        assert!(
            e.contains("missing the line -----END PRIVATE KEY-----"),
            "{e}"
        );
    }
}
