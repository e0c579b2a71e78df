//! `[oidc]`: single sign-on for the dashboard and the API through an
//! OpenID Connect provider (Keycloak, Authentik, Dex, GitLab, …). Without
//! the section nothing changes: admin tokens and certificates work as
//! before. People get the role their groups map to in `[roles]`.
//!
//! ```toml
//! [oidc]
//! issuer = "https://id.example.com/realms/ci"
//! client_id = "autogit"
//! client_secret_file = "/etc/autogit/oidc-client-secret"   # or client_secret_env
//! redirect_url = "https://autogit.example.com/oidc/callback"
//! scopes = ["openid", "profile", "email", "groups"]
//! groups_claim = "groups"
//! ```

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The path the provider sends people back to; `redirect_url` must end in it.
pub const CALLBACK_PATH: &str = "/oidc/callback";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL, exactly as its discovery document and
    /// ID tokens name it. `https://`, or `http://` on a loopback address.
    pub issuer: String,
    pub client_id: String,
    /// A file holding the client secret (one of this and `client_secret_env`).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Where the provider sends the browser back: this coordinator's public
    /// URL plus `/oidc/callback`, as registered with the provider.
    pub redirect_url: String,
    /// Scopes asked for; `openid` is always added.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim (ID token, else userinfo) with the person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// What the dashboard's sign-in button says: "Sign in with <this>".
    #[serde(default = "default_display_name")]
    pub display_name: String,
    /// Extra CA certificates (PEM) to trust for the provider, besides the
    /// system's (a provider behind a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_display_name() -> String {
    "single sign-on".into()
}

/// A URL that is `https://`, or `http://` to a loopback host.
pub(crate) fn secure_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl OidcConfig {
    /// Every problem, named with its key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let secure_url = |key, u: &str| {
            if secure_or_loopback(u) && reqwest::Url::parse(u).is_ok() {
                Ok(())
            } else {
                Err((
                    key,
                    format!("{u:?} must be an https:// URL (http:// only on a loopback address)"),
                ))
            }
        };
        secure_url("oidc.issuer", &self.issuer)?;
        if self.client_id.trim().is_empty() {
            return Err(("oidc.client_id", "must not be empty".into()));
        }
        match (&self.client_secret_file, &self.client_secret_env) {
            (Some(_), Some(_)) => {
                return Err((
                    "oidc.client_secret_file",
                    "and oidc.client_secret_env are both set; keep one".into(),
                ));
            }
            (None, None) => {
                return Err((
                    "oidc.client_secret_file",
                    "or oidc.client_secret_env is required (the secret is never inline in the config)"
                        .into(),
                ));
            }
            _ => {}
        }
        secure_url("oidc.redirect_url", &self.redirect_url)?;
        if reqwest::Url::parse(&self.redirect_url)
            .map(|u| u.path() == CALLBACK_PATH && u.query().is_none() && u.fragment().is_none())
            != Ok(true)
        {
            return Err((
                "oidc.redirect_url",
                format!(
                    "{:?} must end in {CALLBACK_PATH} (the coordinator's callback) with no query",
                    self.redirect_url
                ),
            ));
        }
        if self.groups_claim.trim().is_empty() {
            return Err(("oidc.groups_claim", "must not be empty".into()));
        }
        if self
            .scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return Err(("oidc.scopes", "each scope is one non-empty word".into()));
        }
        Ok(())
    }

    /// The scopes to ask for, `openid` first and once.
    pub fn scope_param(&self) -> String {
        let mut scopes = vec!["openid"];
        scopes.extend(
            self.scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid"),
        );
        scopes.join(" ")
    }

    /// Read the client secret from its file or variable. The error names
    /// the key and the place, never the secret.
    pub fn client_secret(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SecretString, (&'static str, String)> {
        if let Some(path) = &self.client_secret_file {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                (
                    "oidc.client_secret_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let secret = raw.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                return Err((
                    "oidc.client_secret_file",
                    format!("{} is empty", path.display()),
                ));
            }
            return Ok(SecretString::from(secret));
        }
        let name = self.client_secret_env.as_deref().unwrap_or_default();
        env(name)
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
            .ok_or_else(|| {
                (
                    "oidc.client_secret_env",
                    format!("the environment variable {name} is unset or empty"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: "https://id.example/realms/ci".into(),
            client_id: "autogit".into(),
            client_secret_file: None,
            client_secret_env: Some("OIDC_SECRET".into()),
            redirect_url: "https://ci.example/oidc/callback".into(),
            scopes: default_scopes(),
            groups_claim: default_groups_claim(),
            display_name: default_display_name(),
            ca_file: None,
        }
    }

    #[test]
    fn a_complete_section_is_accepted() {
        assert_eq!(config().validate(), Ok(()));
        let mut c = config();
        c.issuer = "http://127.0.0.1:9000".into();
        c.redirect_url = "http://[::1]:8080/oidc/callback".into();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn each_problem_names_its_key() {
        type Change = Box<dyn Fn(&mut OidcConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "oidc.issuer",
                Box::new(|c| c.issuer = "http://id.example".into()),
            ),
            ("oidc.issuer", Box::new(|c| c.issuer = "id.example".into())),
            (
                "oidc.issuer",
                Box::new(|c| c.issuer = "http://127.0.0.1.evil.example".into()),
            ),
            ("oidc.client_id", Box::new(|c| c.client_id = " ".into())),
            (
                "oidc.client_secret_file",
                Box::new(|c| c.client_secret_env = None),
            ),
            (
                "oidc.client_secret_file",
                Box::new(|c| c.client_secret_file = Some("/x".into())),
            ),
            (
                "oidc.redirect_url",
                Box::new(|c| c.redirect_url = "https://ci.example/callback".into()),
            ),
            (
                "oidc.redirect_url",
                Box::new(|c| c.redirect_url = "http://ci.example/oidc/callback".into()),
            ),
            (
                "oidc.redirect_url",
                Box::new(|c| c.redirect_url = "https://ci.example/oidc/callback?next=/".into()),
            ),
            ("oidc.scopes", Box::new(|c| c.scopes = vec!["a b".into()])),
            (
                "oidc.groups_claim",
                Box::new(|c| c.groups_claim = "".into()),
            ),
        ];
        for (key, change) in cases {
            let mut c = config();
            change(&mut c);
            assert_eq!(c.validate().map_err(|e| e.0), Err(key), "{c:?}");
        }
    }

    #[test]
    fn openid_is_always_asked_for_once() {
        let mut c = config();
        c.scopes = vec!["profile".into(), "groups".into()];
        assert_eq!(c.scope_param(), "openid profile groups");
        c.scopes = vec!["openid".into(), "email".into()];
        assert_eq!(c.scope_param(), "openid email");
    }

    #[test]
    fn the_secret_comes_from_its_file_or_variable_and_errors_never_show_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cr3t-value\n").expect("write");
        let mut c = config();
        c.client_secret_env = None;
        c.client_secret_file = Some(path.clone());
        let s = c.client_secret(|_| None).expect("from file");
        assert_eq!(s.expose_secret(), "s3cr3t-value");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        std::fs::write(&path, "\n").expect("write");
        let e = c.client_secret(|_| None).expect_err("empty file");
        assert!(e.1.contains("is empty"), "{e:?}");

        let c = config();
        let s = c
            .client_secret(|n| (n == "OIDC_SECRET").then(|| "from-env".to_string()))
            .expect("from env");
        assert_eq!(s.expose_secret(), "from-env");
        let e = c.client_secret(|_| None).expect_err("unset");
        assert_eq!(e.0, "oidc.client_secret_env");
        assert!(e.1.contains("OIDC_SECRET"));
    }
}
