//! SHA-256 fingerprints of DER certificates, printed as lowercase hex.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The SHA-256 digest of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison (the pin check runs on attacker-supplied data).
    pub fn matches(&self, other: &Fingerprint) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a fingerprint string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CA fingerprint must be 64 hex characters (SHA-256), got {0}")]
pub struct FingerprintError(String);

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let describe = || {
            if s.len() != 64 {
                format!("{} characters", s.len())
            } else {
                "non-hex characters".to_string()
            }
        };
        let bytes = hex::decode(s).map_err(|_| FingerprintError(describe()))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| FingerprintError(describe()))?;
        Ok(Fingerprint(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let fp = Fingerprint::of_der(b"hello");
        let parsed: Fingerprint = fp.to_string().parse().unwrap();
        assert_eq!(fp, parsed);
        assert!(fp.matches(&parsed));
    }

    #[test]
    fn rejects_short_and_non_hex() {
        assert!("abcd".parse::<Fingerprint>().unwrap_err().to_string().contains("4 characters"));
        let bad = "z".repeat(64);
        assert!(bad.parse::<Fingerprint>().unwrap_err().to_string().contains("non-hex"));
    }
}
