//! Join tokens.
//!
//! Format (modelled on k3s's `K10<ca-hash>::<user>:<password>`):
//!
//! ```text
//! AGT1<64 hex: SHA-256 of the cluster CA cert>::<16 hex: token id>.<43 chars: base64url secret>
//! ```
//!
//! The CA fingerprint lets an agent pin the coordinator's CA *before* it sends
//! the secret. The id names the token in listings and revocations; only the
//! SHA-256 hash of the 256-bit secret is stored by the coordinator (a fast
//! hash is enough for a uniformly random secret of that size).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Fingerprint;

const PREFIX: &str = "AGT1";
const SECRET_BYTES: usize = 32;
const ID_BYTES: usize = 8;

/// The public half of a token: safe to log, list and store.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(String);

impl TokenId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({})", self.0)
    }
}

impl FromStr for TokenId {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        if s.len() == ID_BYTES * 2 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(TokenId(s.to_ascii_lowercase()))
        } else {
            Err(TokenError::BadId)
        }
    }
}

/// A parsed join token. `Debug` never shows the secret; use [`JoinToken::expose`]
/// to get the full string exactly once, for printing to the operator.
#[derive(Clone)]
pub struct JoinToken {
    ca: Fingerprint,
    id: TokenId,
    secret: [u8; SECRET_BYTES],
}

/// Why a string is not a valid join token. Messages never echo the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed join token: it must start with \"{PREFIX}\"")]
    BadPrefix,
    #[error("malformed join token: the CA fingerprint must be 64 hex characters")]
    BadFingerprint,
    #[error("malformed join token: missing \"::\" after the CA fingerprint")]
    MissingSeparator,
    #[error("malformed join token: the token id must be 16 hex characters followed by '.'")]
    BadId,
    #[error("malformed join token: the secret must be 43 base64url characters")]
    BadSecret,
}

impl JoinToken {
    /// A fresh random token for the cluster whose CA has fingerprint `ca`.
    pub fn generate(ca: Fingerprint) -> Self {
        let mut rng = rand::rng();
        let mut id = [0u8; ID_BYTES];
        rng.fill_bytes(&mut id);
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut secret);
        JoinToken { ca, id: TokenId(hex::encode(id)), secret }
    }

    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        let rest = s.strip_prefix(PREFIX).ok_or(TokenError::BadPrefix)?;
        let (fp, rest) = rest.split_once("::").ok_or_else(|| {
            if rest.len() < 64 || !rest.is_char_boundary(64) || rest[..64].parse::<Fingerprint>().is_err() {
                TokenError::BadFingerprint
            } else {
                TokenError::MissingSeparator
            }
        })?;
        let ca: Fingerprint = fp.parse().map_err(|_| TokenError::BadFingerprint)?;
        let (id, secret) = rest.split_once('.').ok_or(TokenError::BadId)?;
        let id: TokenId = id.parse()?;
        let secret = URL_SAFE_NO_PAD.decode(secret).map_err(|_| TokenError::BadSecret)?;
        let secret: [u8; SECRET_BYTES] = secret.try_into().map_err(|_| TokenError::BadSecret)?;
        Ok(JoinToken { ca, id, secret })
    }

    pub fn ca_fingerprint(&self) -> Fingerprint {
        self.ca
    }

    pub fn id(&self) -> &TokenId {
        &self.id
    }

    /// SHA-256 of the secret: the only form the coordinator stores.
    pub fn secret_hash(&self) -> [u8; 32] {
        Sha256::digest(self.secret).into()
    }

    /// Constant-time check of this token's secret against a stored hash.
    pub fn matches_hash(&self, stored: &[u8]) -> bool {
        let h = self.secret_hash();
        stored.len() == h.len() && bool::from(h.as_slice().ct_eq(stored))
    }

    /// The full token string. Call only to hand the token to the operator.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}::{}.{}", self.ca, self.id, URL_SAFE_NO_PAD.encode(self.secret))
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca", &self.ca)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fp() -> Fingerprint {
        Fingerprint::of_der(b"ca")
    }

    #[test]
    fn round_trip_and_hash() {
        let t = JoinToken::generate(fp());
        let s = t.expose();
        assert!(s.starts_with("AGT1"));
        let p = JoinToken::parse(&s).unwrap();
        assert_eq!(p.ca_fingerprint(), fp());
        assert_eq!(p.id(), t.id());
        assert!(p.matches_hash(&t.secret_hash()));
        let other = JoinToken::generate(fp());
        assert!(!p.matches_hash(&other.secret_hash()));
        assert!(!p.matches_hash(&[0u8; 3]));
    }

    #[test]
    fn debug_and_errors_hide_secret() {
        let t = JoinToken::generate(fp());
        let s = t.expose();
        let secret = s.rsplit('.').next().unwrap();
        assert!(!format!("{t:?}").contains(secret));
        let broken = s.replace("::", ":");
        let err = JoinToken::parse(&broken).unwrap_err();
        assert_eq!(err, TokenError::MissingSeparator);
        assert!(!err.to_string().contains(secret));
    }

    #[test]
    fn names_the_problem() {
        let t = JoinToken::generate(fp()).expose();
        assert_eq!(JoinToken::parse("K10abc").unwrap_err(), TokenError::BadPrefix);
        assert_eq!(JoinToken::parse("AGT1abc::x.y").unwrap_err(), TokenError::BadFingerprint);
        let no_dot = t.replacen('.', "", 1);
        assert_eq!(JoinToken::parse(&no_dot).unwrap_err(), TokenError::BadId);
        let short = &t[..t.len() - 2];
        assert_eq!(JoinToken::parse(short).unwrap_err(), TokenError::BadSecret);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = JoinToken::parse(&s);
        }
    }
}
