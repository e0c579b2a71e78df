//! Single sign-on through an OpenID Connect provider: the authorization
//! code flow with PKCE (RFC 7636, S256), found through the provider's
//! discovery document (`<issuer>/.well-known/openid-configuration`).
//!
//! 1. [`Oidc::begin`] makes a `state`, a `nonce` and a PKCE verifier,
//!    remembers them ([`pending`]) and gives the provider URL to send the
//!    browser to. `http/oidc.rs` also binds `state` to the browser with a
//!    short-lived cookie.
//! 2. [`Oidc::finish`] takes the callback's `code` and `state` (once: a
//!    replay finds nothing), trades the code for tokens at the token
//!    endpoint (client secret plus PKCE verifier), and validates the ID
//!    token ([`id_token`]): signature against the provider's JWKS,
//!    refetched once when a token names a key it lacks (key rotation),
//!    `iss`, `aud`/`azp`, `exp`, `nbf`, `nonce`.
//! 3. Name and groups come from the ID token, or the userinfo endpoint when
//!    the ID token lacks them (same `sub` required). The groups map to a
//!    role through `[roles]`; no role, no session.
//!
//! The provider is trusted to say who a person is and which groups they
//! are in, nothing more (`docs/security.md`). The client secret lives in a
//! [`SecretString`] and is never logged; codes and tokens are never logged.

pub mod id_token;
mod pending;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use rand::RngCore;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::sessions::Person;
use crate::config::oidc::{OidcConfig, secure_or_loopback};
use crate::config::proxy::RolesConfig;
use id_token::{Expect, IdTokenError};
use pending::{Pending, PendingLogin};

/// A provider answer larger than this is refused.
const MAX_BODY: usize = 1024 * 1024;
/// The JWKS is refetched for an unknown key at most this often (sign-ins
/// are few; this only stops a provider that keeps naming a key it does not
/// publish from making every callback two fetches).
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(1);
/// Longest name and group kept; most groups kept.
const MAX_TEXT: usize = 256;
const MAX_GROUPS: usize = 256;

/// Why a sign-in failed. Messages name the step and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the identity provider's {0}")]
    BadProvider(String),
    #[error(
        "this sign-in was not started in this browser (its state cookie is missing or differs); start again"
    )]
    StateMismatch,
    #[error("this sign-in expired or was already used; start again")]
    UnknownState,
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    #[error("{actor} has no AutoGit role: {groups}")]
    NoRole { actor: String, groups: String },
}

impl SignInError {
    /// The HTTP status for the person's browser.
    pub fn status(&self) -> u16 {
        match self {
            SignInError::Unreachable(_) => 503,
            SignInError::BadProvider(_) => 502,
            SignInError::StateMismatch | SignInError::UnknownState => 400,
            SignInError::Refused(_) | SignInError::IdToken(_) => 401,
            SignInError::NoRole { .. } => 403,
        }
    }
}

/// What the provider's discovery document says we need.
#[derive(Debug)]
struct Provider {
    authorization_endpoint: Url,
    token_endpoint: Url,
    userinfo_endpoint: Option<Url>,
    jwks_uri: Url,
    /// `client_secret_post` instead of HTTP Basic at the token endpoint.
    secret_in_body: bool,
}

/// A sign-in to send the browser off with.
#[derive(Debug)]
pub struct Begin {
    /// The provider's authorization URL with every parameter.
    pub url: String,
    /// Bind it to the browser (cookie) and expect it back.
    pub state: String,
}

/// The OIDC relying party. One per coordinator, shared by the handlers.
pub struct Oidc {
    cfg: OidcConfig,
    secret: SecretString,
    roles: RolesConfig,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
    jwks: tokio::sync::Mutex<Option<(Arc<JwkSet>, Instant)>>,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.cfg.issuer)
            .field("client_id", &self.cfg.client_id)
            .field("client_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn random() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 6749 §2.3.1: id and secret are form-encoded before HTTP Basic.
fn form(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Printable, bounded text from a claim.
fn text(v: &str) -> String {
    v.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The display name: `name`, else `preferred_username`, `email`, `sub`.
pub fn person_name(claims: &Map<String, Value>, sub: &str) -> String {
    ["name", "preferred_username", "email"]
        .iter()
        .filter_map(|k| claims.get(*k).and_then(Value::as_str).map(text))
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| text(sub))
}

/// The groups in claim `claim`: an array of strings, or one string with
/// commas. Anything else: none.
pub fn groups(claims: &Map<String, Value>, claim: &str) -> Vec<String> {
    let raw: Vec<String> = match claims.get(claim) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(text).collect(),
        Some(Value::String(s)) => s.split(',').map(text).collect(),
        _ => Vec::new(),
    };
    raw.into_iter()
        .filter(|g| !g.is_empty())
        .take(MAX_GROUPS)
        .collect()
}

impl Oidc {
    /// Build from `[oidc]` (validated) and the client secret; the provider
    /// is not contacted until the first sign-in.
    pub fn new(cfg: OidcConfig, secret: SecretString, roles: RolesConfig) -> Result<Oidc, String> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("autogit/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("oidc.ca_file: cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("oidc.ca_file: {}: {e}", path.display()))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| format!("cannot build the HTTP client for the provider: {e}"))?;
        Ok(Oidc {
            cfg,
            secret,
            roles,
            http,
            provider: tokio::sync::Mutex::new(None),
            jwks: tokio::sync::Mutex::new(None),
            pending: Mutex::new(Pending::default()),
        })
    }

    /// What the sign-in button says.
    pub fn display_name(&self) -> &str {
        &self.cfg.display_name
    }

    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    pub fn redirect_url(&self) -> &str {
        &self.cfg.redirect_url
    }

    /// Start a sign-in.
    pub async fn begin(&self) -> Result<Begin, SignInError> {
        let p = self.provider().await?;
        let (state, nonce, verifier) = (random(), random(), random());
        let mut url = p.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", &self.cfg.redirect_url)
            .append_pair("scope", &self.cfg.scope_param())
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        let now = Instant::now();
        self.pending.lock().expect("pending sign-ins").insert(
            state.clone(),
            PendingLogin {
                nonce,
                verifier,
                started: now,
            },
            now,
        );
        Ok(Begin {
            url: url.into(),
            state,
        })
    }

    /// Finish the sign-in started with `state`, which the browser's cookie
    /// (`cookie_state`) must repeat; `code` is the provider's.
    pub async fn finish(
        &self,
        state: &str,
        cookie_state: Option<&str>,
        code: &str,
    ) -> Result<Person, SignInError> {
        use subtle::ConstantTimeEq;
        match cookie_state {
            Some(c) if bool::from(c.as_bytes().ct_eq(state.as_bytes())) => {}
            _ => return Err(SignInError::StateMismatch),
        }
        let login = self
            .pending
            .lock()
            .expect("pending sign-ins")
            .take(state, Instant::now())
            .ok_or(SignInError::UnknownState)?;
        let p = self.provider().await?;
        let tokens = self.exchange(&p, code, &login.verifier).await?;
        let id_token = tokens
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| SignInError::BadProvider("token response has no id_token".into()))?;
        let expect = Expect {
            issuer: &self.cfg.issuer,
            client_id: &self.cfg.client_id,
            nonce: &login.nonce,
        };
        let claims = match id_token::validate(id_token, &*self.keys(&p, false).await?, expect) {
            Err(IdTokenError::UnknownKey(kid)) => {
                tracing::info!(kid = %crate::edge::wire(&kid), "ID token names a key not in the cached JWKS; refetching (key rotation)");
                id_token::validate(id_token, &*self.keys(&p, true).await?, expect)?
            }
            other => other?,
        };
        let mut all = claims.all;
        let needs_more = !all.contains_key(&self.cfg.groups_claim) || !all.contains_key("name");
        if needs_more
            && let (Some(userinfo), Some(access)) = (
                &p.userinfo_endpoint,
                tokens.get("access_token").and_then(Value::as_str),
            )
        {
            let info = self.userinfo(userinfo, access).await?;
            if info.get("sub").and_then(Value::as_str) != Some(claims.sub.as_str()) {
                return Err(SignInError::BadProvider(
                    "userinfo answered for another subject than the ID token".into(),
                ));
            }
            for (k, v) in info {
                all.entry(k).or_insert(v);
            }
        }
        let name = person_name(&all, &claims.sub);
        let subject = text(&claims.sub);
        let groups = groups(&all, &self.cfg.groups_claim);
        let actor = Person::actor_name(&name, &subject);
        let Some(role) = self.roles.role_for(groups.iter().map(String::as_str)) else {
            return Err(SignInError::NoRole {
                actor,
                groups: if groups.is_empty() {
                    format!(
                        "the provider sent no groups in claim {:?}",
                        self.cfg.groups_claim
                    )
                } else {
                    format!(
                        "none of the groups {} is listed in [roles]",
                        groups.join(", ")
                    )
                },
            });
        };
        Ok(Person {
            issuer: self.cfg.issuer.clone(),
            subject,
            name,
            role,
        })
    }

    /// The discovery document, fetched once and kept; a failed fetch is
    /// retried at the next sign-in.
    async fn provider(&self) -> Result<Arc<Provider>, SignInError> {
        let mut cached = self.provider.lock().await;
        if let Some(p) = &*cached {
            return Ok(p.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&url, None).await?;
        let p = Arc::new(parse_discovery(&doc, &self.cfg.issuer)?);
        *cached = Some(p.clone());
        Ok(p)
    }

    /// The provider's keys; `refetch` asks for a fresh copy (at most every
    /// [`JWKS_REFETCH_EVERY`]).
    async fn keys(&self, p: &Provider, refetch: bool) -> Result<Arc<JwkSet>, SignInError> {
        let mut cached = self.jwks.lock().await;
        if let Some((keys, at)) = &*cached
            && (!refetch || at.elapsed() < JWKS_REFETCH_EVERY)
        {
            return Ok(keys.clone());
        }
        let doc = self.get_json(p.jwks_uri.as_str(), None).await?;
        let keys =
            Arc::new(id_token::parse_jwks(&Value::Object(doc)).map_err(SignInError::BadProvider)?);
        *cached = Some((keys.clone(), Instant::now()));
        Ok(keys)
    }

    async fn exchange(
        &self,
        p: &Provider,
        code: &str,
        verifier: &str,
    ) -> Result<Map<String, Value>, SignInError> {
        let mut body = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.cfg.redirect_url.as_str()),
            ("code_verifier", verifier),
        ];
        let mut req = self.http.post(p.token_endpoint.clone());
        if p.secret_in_body {
            body.push(("client_id", &self.cfg.client_id));
            body.push(("client_secret", self.secret.expose_secret()));
        } else {
            req = req.basic_auth(
                form(&self.cfg.client_id),
                Some(form(self.secret.expose_secret())),
            );
        }
        let resp = req
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&body)
            .send()
            .await
            .map_err(|e| SignInError::Unreachable(format!("token endpoint: {}", transport(e))))?;
        let status = resp.status();
        let json = read_json(resp)
            .await
            .map_err(|e| SignInError::BadProvider(format!("token endpoint {e}")))?;
        if !status.is_success() {
            // RFC 6749 §5.2: {"error": "...", "error_description": "..."}.
            return Err(SignInError::Refused(oauth_error(&json, status.as_u16())));
        }
        Ok(json)
    }

    async fn userinfo(&self, url: &Url, access: &str) -> Result<Map<String, Value>, SignInError> {
        self.get_json(url.as_str(), Some(access)).await
    }

    async fn get_json(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<Map<String, Value>, SignInError> {
        let mut req = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SignInError::Unreachable(format!("{url}: {}", transport(e))))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(SignInError::BadProvider(format!("{url} answered {status}")));
        }
        read_json(resp)
            .await
            .map_err(|e| SignInError::BadProvider(format!("{url} {e}")))
    }
}

/// A transport error with its causes (reqwest's own message is only the
/// outermost: "error sending request"), without the URL's query.
fn transport(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A JSON object body of at most [`MAX_BODY`] bytes.
async fn read_json(mut resp: reqwest::Response) -> Result<Map<String, Value>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("answer broke off: {}", transport(e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("answer is larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err("answer is not a JSON object".into()),
    }
}

fn oauth_error(json: &Map<String, Value>, status: u16) -> String {
    let error = json.get("error").and_then(Value::as_str).map(text);
    let desc = json
        .get("error_description")
        .and_then(Value::as_str)
        .map(text);
    match (error, desc) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e,
        _ => format!("token endpoint answered {status}"),
    }
}

/// The parts of a discovery document we use, checked: its `issuer` must be
/// exactly ours (OIDC Discovery §4.3), endpoints https (or loopback http),
/// `code` among the response types and a client-secret method we speak.
fn parse_discovery(doc: &Map<String, Value>, issuer: &str) -> Result<Provider, SignInError> {
    let bad = |m: String| SignInError::BadProvider(format!("discovery document {m}"));
    let got = doc
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if got != issuer {
        return Err(bad(format!(
            "names issuer {got:?}, not {issuer:?} (oidc.issuer must match it exactly)"
        )));
    }
    let url = |key: &str| -> Result<Option<Url>, SignInError> {
        let Some(v) = doc.get(key).and_then(Value::as_str) else {
            return Ok(None);
        };
        if !secure_or_loopback(v) {
            return Err(bad(format!(
                "has {key} {v:?}, which is neither https nor loopback"
            )));
        }
        Url::parse(v)
            .map(Some)
            .map_err(|e| bad(format!("has an invalid {key}: {e}")))
    };
    let need = |key: &str| url(key)?.ok_or_else(|| bad(format!("lacks {key}")));
    let strings = |key: &str| -> Option<Vec<String>> {
        doc.get(key).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
    };
    if let Some(types) = strings("response_types_supported")
        && !types.iter().any(|t| t == "code")
    {
        return Err(bad(
            "does not offer the authorization code flow (response type `code`)".into(),
        ));
    }
    // RFC 8414 default when absent: client_secret_basic.
    let methods = strings("token_endpoint_auth_methods_supported")
        .unwrap_or_else(|| vec!["client_secret_basic".into()]);
    let secret_in_body = if methods.iter().any(|m| m == "client_secret_basic") {
        false
    } else if methods.iter().any(|m| m == "client_secret_post") {
        true
    } else {
        return Err(bad(format!(
            "offers no client-secret authentication at the token endpoint ({})",
            methods.join(", ")
        )));
    };
    Ok(Provider {
        authorization_endpoint: need("authorization_endpoint")?,
        token_endpoint: need("token_endpoint")?,
        userinfo_endpoint: url("userinfo_endpoint")?,
        jwks_uri: need("jwks_uri")?,
        secret_in_body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://id.example/realms/ci";

    fn doc(change: Value) -> Map<String, Value> {
        let mut d = json!({
            "issuer": ISS,
            "authorization_endpoint": "https://id.example/auth",
            "token_endpoint": "https://id.example/token",
            "userinfo_endpoint": "https://id.example/userinfo",
            "jwks_uri": "https://id.example/jwks",
            "response_types_supported": ["code", "id_token"],
        });
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                d.as_object_mut().unwrap().remove(k);
            } else {
                d[k] = v.clone();
            }
        }
        d.as_object().unwrap().clone()
    }

    #[test]
    fn pkce_matches_the_rfc_7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn discovery_is_checked() {
        let p = parse_discovery(&doc(json!({})), ISS).unwrap();
        assert_eq!(p.token_endpoint.as_str(), "https://id.example/token");
        assert!(!p.secret_in_body);
        let p = parse_discovery(
            &doc(json!({"token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_post"]})),
            ISS,
        )
        .unwrap();
        assert!(p.secret_in_body);
        for (change, says) in [
            (
                json!({"issuer": "https://id.example/realms/ci/"}),
                "names issuer",
            ),
            (json!({"issuer": "https://evil.example"}), "names issuer"),
            (
                json!({"token_endpoint": "http://id.example/token"}),
                "neither https nor loopback",
            ),
            (json!({"jwks_uri": null}), "lacks jwks_uri"),
            (
                json!({"response_types_supported": ["id_token"]}),
                "authorization code flow",
            ),
            (
                json!({"token_endpoint_auth_methods_supported": ["private_key_jwt"]}),
                "no client-secret",
            ),
        ] {
            let e = parse_discovery(&doc(change.clone()), ISS)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{change}: {e}");
        }
    }

    #[test]
    fn names_and_groups_come_from_the_usual_claims() {
        let c = json!({"preferred_username": "otto", "email": "o@x", "groups": ["ci-ops", "", "dev\u{7}"]});
        let c = c.as_object().unwrap();
        assert_eq!(person_name(c, "u-1"), "otto");
        assert_eq!(groups(c, "groups"), vec!["ci-ops", "dev"]);
        let c = json!({"roles": "a, b"});
        assert_eq!(groups(c.as_object().unwrap(), "roles"), vec!["a", "b"]);
        assert_eq!(person_name(c.as_object().unwrap(), "u-1"), "u-1");
        assert!(groups(json!({"groups": 7}).as_object().unwrap(), "groups").is_empty());
    }

    fn oidc() -> Oidc {
        let cfg = OidcConfig {
            issuer: ISS.into(),
            client_id: "autogit".into(),
            client_secret_file: None,
            client_secret_env: Some("X".into()),
            redirect_url: "https://ci.example/oidc/callback".into(),
            scopes: vec!["profile".into()],
            groups_claim: "groups".into(),
            display_name: "Keycloak".into(),
            ca_file: None,
        };
        Oidc::new(
            cfg,
            SecretString::from("client-s3cret"),
            RolesConfig::default(),
        )
        .unwrap()
    }

    #[test]
    fn debug_never_shows_the_client_secret() {
        assert!(!format!("{:?}", oidc()).contains("client-s3cret"));
    }

    #[tokio::test]
    async fn a_callback_needs_the_browsers_state_cookie_and_works_once() {
        let o = oidc();
        // Pretend discovery happened, so begin() needs no network.
        *o.provider.lock().await = Some(Arc::new(parse_discovery(&doc(json!({})), ISS).unwrap()));
        let b = o.begin().await.unwrap();
        let url = Url::parse(&b.url).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["scope"], "openid profile");
        assert_eq!(q["state"], b.state);
        assert!(!b.url.contains("client-s3cret"));
        let verifier = {
            let mut p = o.pending.lock().unwrap();
            let l = p.take(&b.state, Instant::now()).unwrap();
            let v = l.verifier.clone();
            p.insert(b.state.clone(), l, Instant::now());
            v
        };
        assert_eq!(q["code_challenge"], pkce_challenge(&verifier));
        // Another browser's (or no) state cookie: refused, and the sign-in stays.
        assert!(matches!(
            o.finish(&b.state, Some("other"), "code").await,
            Err(SignInError::StateMismatch)
        ));
        assert!(matches!(
            o.finish(&b.state, None, "code").await,
            Err(SignInError::StateMismatch)
        ));
        // An unknown state, even with a matching cookie: refused.
        assert!(matches!(
            o.finish("forged", Some("forged"), "code").await,
            Err(SignInError::UnknownState)
        ));
        assert_eq!(o.pending.lock().unwrap().len(), 1);
    }
}
