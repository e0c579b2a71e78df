//! ID token validation (OpenID Connect Core 1.0, §3.1.3.7). The JOSE work,
//! signature and the standard claims (`iss`, `aud`, `exp`, `nbf`), is
//! `jsonwebtoken`'s; this module picks the key, allows only asymmetric
//! algorithms the key is meant for, and checks what OIDC adds: `nonce`,
//! `azp`, and a `sub`.

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

/// Seconds of clock difference allowed for `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;

/// What this sign-in expects of its ID token.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
}

/// A validated ID token's claims.
#[derive(Debug, Clone)]
pub struct IdClaims {
    pub sub: String,
    /// Every claim, for the name and groups.
    pub all: Map<String, Value>,
}

/// Why an ID token was refused; the message names the check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is not a signed JWT: {0}")]
    Malformed(String),
    #[error("the ID token is signed with {0:?}; only RS*, PS*, ES256/384 and EdDSA are accepted")]
    Algorithm(String),
    #[error("the ID token names signing key {0:?}, which the provider's JWKS does not hold")]
    UnknownKey(String),
    #[error("the ID token has no key id and the provider's JWKS holds {0} signing keys")]
    AmbiguousKey(usize),
    #[error("the signing key {0:?} is not meant for {1:?} signatures")]
    KeyMismatch(String, String),
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the ID token's issuer is not {0}")]
    Issuer(String),
    #[error("the ID token is not meant for this client (aud/azp)")]
    Audience,
    #[error("the ID token's nonce does not match this sign-in")]
    Nonce,
    #[error("the ID token lacks the {0:?} claim")]
    Missing(String),
}

const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A JWKS document's keys; keys this library cannot read (an algorithm or
/// curve it lacks) are skipped rather than failing the whole set.
pub fn parse_jwks(doc: &Value) -> Result<JwkSet, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS document has no `keys` array")?;
    Ok(JwkSet {
        keys: keys
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .collect(),
    })
}

/// Keys in `keys` that may verify signatures.
fn signing_keys(keys: &JwkSet) -> impl Iterator<Item = &Jwk> {
    keys.keys.iter().filter(|k| {
        k.common
            .public_key_use
            .as_ref()
            .is_none_or(|u| *u == PublicKeyUse::Signature)
            && k.is_supported()
    })
}

/// The key that signed a token with header `kid`.
fn pick<'a>(keys: &'a JwkSet, kid: Option<&str>) -> Result<&'a Jwk, IdTokenError> {
    match kid {
        Some(kid) => signing_keys(keys)
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .ok_or_else(|| IdTokenError::UnknownKey(kid.to_string())),
        None => {
            let mut it = signing_keys(keys);
            match (it.next(), it.count()) {
                (Some(k), 0) => Ok(k),
                (None, _) => Err(IdTokenError::UnknownKey(String::new())),
                (Some(_), rest) => Err(IdTokenError::AmbiguousKey(rest + 1)),
            }
        }
    }
}

/// Validate `token` against the provider's `keys` and what this sign-in
/// expects. [`IdTokenError::UnknownKey`] means the caller may refetch the
/// JWKS (the provider rotated its key) and try once more.
pub fn validate(token: &str, keys: &JwkSet, expect: Expect<'_>) -> Result<IdClaims, IdTokenError> {
    let header = decode_header(token).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = pick(keys, header.kid.as_deref())?;
    let kid = jwk.common.key_id.clone().unwrap_or_default();
    if let Some(meant) = jwk.common.key_algorithm
        && meant.to_string() != format!("{:?}", header.alg)
    {
        return Err(IdTokenError::KeyMismatch(kid, format!("{:?}", header.alg)));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    let mut v = Validation::new(header.alg);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    v.set_issuer(&[expect.issuer]);
    v.set_audience(&[expect.client_id]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.into_kind() {
            K::InvalidSignature => IdTokenError::Signature,
            K::InvalidAlgorithm => {
                IdTokenError::KeyMismatch(kid.clone(), format!("{:?}", header.alg))
            }
            K::ExpiredSignature => IdTokenError::Expired,
            K::ImmatureSignature => IdTokenError::NotYetValid,
            K::InvalidIssuer => IdTokenError::Issuer(expect.issuer.to_string()),
            K::InvalidAudience => IdTokenError::Audience,
            K::MissingRequiredClaim(c) => IdTokenError::Missing(c),
            other => IdTokenError::Malformed(format!("{other:?}")),
        }
    })?;
    let all = data.claims;
    // Several audiences: the token must say it was issued to us (azp).
    let several = all
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match all.get("azp") {
        Some(Value::String(azp)) if azp != expect.client_id => return Err(IdTokenError::Audience),
        None if several => return Err(IdTokenError::Audience),
        Some(v) if !v.is_string() => return Err(IdTokenError::Audience),
        _ => {}
    }
    let nonce = all.get("nonce").and_then(Value::as_str).unwrap_or_default();
    if !bool::from(nonce.as_bytes().ct_eq(expect.nonce.as_bytes())) || nonce.is_empty() {
        return Err(IdTokenError::Nonce);
    }
    let sub = all
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IdTokenError::Missing("sub".into()))?
        .to_string();
    Ok(IdClaims { sub, all })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    const ISS: &str = "https://id.example/realms/ci";
    const CLIENT: &str = "autogit";
    const NONCE: &str = "n-0S6_WzA2Mj";

    /// An ES256 key: what signs, and its public JWK.
    struct Key {
        signing: EncodingKey,
        jwk: Value,
    }

    fn key(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Key {
            signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    fn set(keys: &[&Key]) -> JwkSet {
        parse_jwks(&json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}))
            .unwrap()
    }

    #[test]
    fn keys_the_library_cannot_read_are_skipped_not_fatal() {
        let k = key("k1");
        let doc = json!({"keys": [
            {"kty": "EC", "crv": "P-521", "alg": "ES512", "kid": "big", "x": "AA", "y": "AA"},
            {"kty": "RSA", "alg": "RSA-OAEP-384", "use": "enc", "kid": "e", "n": "AA", "e": "AQAB"},
            k.jwk,
        ]});
        let keys = parse_jwks(&doc).unwrap();
        assert!(validate(&sign(&k, Some("k1"), &claims()), &keys, expect()).is_ok());
        assert!(parse_jwks(&json!({"nokeys": []})).is_err());
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims() -> Value {
        json!({
            "iss": ISS, "aud": CLIENT, "sub": "u-42", "nonce": NONCE,
            "iat": now(), "exp": now() + 300, "name": "Otto Operator",
        })
    }

    fn sign(k: &Key, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(String::from);
        encode(&h, claims, &k.signing).unwrap()
    }

    fn expect() -> Expect<'static> {
        Expect {
            issuer: ISS,
            client_id: CLIENT,
            nonce: NONCE,
        }
    }

    #[test]
    fn a_good_token_gives_its_subject_and_claims() {
        let k = key("k1");
        let c = validate(&sign(&k, Some("k1"), &claims()), &set(&[&k]), expect()).unwrap();
        assert_eq!(c.sub, "u-42");
        assert_eq!(c.all["name"], "Otto Operator");
        // No kid, one key: that key.
        assert!(validate(&sign(&k, None, &claims()), &set(&[&k]), expect()).is_ok());
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let k = key("k1");
        let token = sign(&k, Some("k1"), &claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims();
        forged["sub"] = json!("admin");
        let payload = URL_SAFE_NO_PAD.encode(forged.to_string());
        parts[1] = &payload;
        let err = validate(&parts.join("."), &set(&[&k]), expect()).unwrap_err();
        assert_eq!(err, IdTokenError::Signature);
    }

    #[test]
    fn a_token_signed_by_another_key_with_a_known_kid_is_refused() {
        let (good, evil) = (key("k1"), key("k1"));
        let err = validate(
            &sign(&evil, Some("k1"), &claims()),
            &set(&[&good]),
            expect(),
        )
        .unwrap_err();
        assert_eq!(err, IdTokenError::Signature);
    }

    #[test]
    fn an_expired_token_is_refused_beyond_the_leeway() {
        let k = key("k1");
        let mut c = claims();
        c["exp"] = json!(now() - LEEWAY_SECS as i64 - 5);
        c["iat"] = json!(now() - 600);
        let err = validate(&sign(&k, Some("k1"), &c), &set(&[&k]), expect()).unwrap_err();
        assert_eq!(err, IdTokenError::Expired);
    }

    #[test]
    fn wrong_audience_issuer_azp_and_nonce_are_refused() {
        let k = key("k1");
        let keys = set(&[&k]);
        let cases: Vec<(Value, IdTokenError)> = vec![
            (json!({"aud": "someone-else"}), IdTokenError::Audience),
            (
                json!({"aud": ["someone-else", "other"]}),
                IdTokenError::Audience,
            ),
            // Several audiences including us, but no azp naming us.
            (json!({"aud": [CLIENT, "other"]}), IdTokenError::Audience),
            (json!({"azp": "other"}), IdTokenError::Audience),
            (
                json!({"iss": "https://evil.example"}),
                IdTokenError::Issuer(ISS.into()),
            ),
            (
                json!({"nonce": "replayed-from-another-sign-in"}),
                IdTokenError::Nonce,
            ),
            (json!({"nonce": null}), IdTokenError::Nonce),
            (json!({"sub": null}), IdTokenError::Missing("sub".into())),
            (json!({"exp": null}), IdTokenError::Missing("exp".into())),
            (json!({"nbf": now() + 3600}), IdTokenError::NotYetValid),
        ];
        for (change, want) in cases {
            let mut c = claims();
            for (k, v) in change.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            let got = validate(&sign(&k, Some("k1"), &c), &keys, expect());
            assert_eq!(got.map(|c| c.sub), Err(want), "{change}");
        }
        // Several audiences with azp = us is fine.
        let mut c = claims();
        c["aud"] = json!([CLIENT, "other"]);
        c["azp"] = json!(CLIENT);
        assert!(validate(&sign(&k, Some("k1"), &c), &keys, expect()).is_ok());
    }

    #[test]
    fn an_unknown_kid_asks_for_a_fresh_jwks() {
        let (old, new) = (key("old"), key("new"));
        let token = sign(&new, Some("new"), &claims());
        assert_eq!(
            validate(&token, &set(&[&old]), expect()).unwrap_err(),
            IdTokenError::UnknownKey("new".into())
        );
        // After the provider rotated: both keys published, the new one verifies.
        assert!(validate(&token, &set(&[&old, &new]), expect()).is_ok());
        // No kid and two keys: refused, not guessed.
        assert_eq!(
            validate(&sign(&new, None, &claims()), &set(&[&old, &new]), expect()).unwrap_err(),
            IdTokenError::AmbiguousKey(2)
        );
    }

    #[test]
    fn unsigned_and_symmetric_tokens_are_refused() {
        let k = key("k1");
        let keys = set(&[&k]);
        // alg "none": the header does not even parse as an accepted algorithm.
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let err = validate(&format!("{none_header}.{body}."), &keys, expect()).unwrap_err();
        assert!(matches!(err, IdTokenError::Malformed(_)), "{err:?}");
        // HS256 keyed with the public key's bytes (the classic confusion).
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let forged = encode(
            &h,
            &claims(),
            &EncodingKey::from_secret(k.jwk["x"].as_str().unwrap().as_bytes()),
        )
        .unwrap();
        assert_eq!(
            validate(&forged, &keys, expect()).unwrap_err(),
            IdTokenError::Algorithm("HS256".into())
        );
        assert!(matches!(
            validate("not-a-jwt", &keys, expect()).unwrap_err(),
            IdTokenError::Malformed(_)
        ));
    }

    #[test]
    fn a_key_published_for_another_algorithm_is_not_used() {
        let k = key("k1");
        let mut jwk = k.jwk.clone();
        jwk["alg"] = json!("ES384");
        let keys: JwkSet = serde_json::from_value(json!({"keys": [jwk]})).unwrap();
        assert!(matches!(
            validate(&sign(&k, Some("k1"), &claims()), &keys, expect()).unwrap_err(),
            IdTokenError::KeyMismatch(..)
        ));
        // An encryption key is never a signing key.
        let mut enc = k.jwk.clone();
        enc["use"] = json!("enc");
        let keys: JwkSet = serde_json::from_value(json!({"keys": [enc]})).unwrap();
        assert_eq!(
            validate(&sign(&k, Some("k1"), &claims()), &keys, expect()).unwrap_err(),
            IdTokenError::UnknownKey("k1".into())
        );
    }
}
