//! The config spelling of a pool's registry credentials:
//!
//! ```toml
//! [[pools]]
//! name = "amd64"
//! image = "registry.example:5000/ci/gitlab-runner:v18.2.0"
//! registry = { username = "ci-puller", password_file = "/etc/autogit/registry-password" }
//! # or: registry = { username = "ci-puller", password_env = "AUTOGIT_REGISTRY_PASSWORD" }
//! ```
//!
//! Exactly one of `password_file` and `password_env`; an inline `password`
//! is refused, so the secret is never in the config file (which ends up in
//! backups, tickets and `git`). The password is read when the config is
//! loaded: a file's single trailing newline is dropped (what `echo >` and
//! `docker login --password-stdin` do). Errors name the pool and the key,
//! and the file or variable, never the password.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::pool::PoolError;
use crate::scheduler::{PasswordSource, RegistryAuth};

/// The TOML shape of `registry = { ... }`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegistryToml {
    username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_env: Option<String>,
    /// Refused with a clear error; never serialised.
    #[serde(default, skip_serializing)]
    password: Option<serde::de::IgnoredAny>,
}

impl RegistryToml {
    /// Read the password and check the user name, for pool `pool`.
    pub(super) fn load(self, pool: &str) -> Result<RegistryAuth, PoolError> {
        self.load_with(pool, |name| std::env::var(name).ok())
    }

    /// [`load`](Self::load) with the environment given (tests).
    pub(super) fn load_with(
        self,
        pool: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<RegistryAuth, PoolError> {
        let err =
            |key: &str, problem: String| PoolError::new(pool, format!("registry.{key}"), problem);
        if self.password.is_some() {
            return Err(err(
                "password",
                "is not accepted inline (the config file would hold the secret); put it in a file \
                 and set password_file, or in an environment variable and set password_env"
                    .into(),
            ));
        }
        if self.username.is_empty() || self.username.chars().any(|c| c == ':' || c.is_control()) {
            return Err(err(
                "username",
                format!(
                    "{:?} must be non-empty, without ':' or control characters",
                    self.username
                ),
            ));
        }
        let (password, password_from) = match (self.password_file, self.password_env) {
            (Some(path), None) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    err(
                        "password_file",
                        format!("{} cannot be read: {e}", path.display()),
                    )
                })?;
                let text = text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text)
                    .to_owned();
                if text.is_empty() {
                    return Err(err("password_file", format!("{} is empty", path.display())));
                }
                (text, PasswordSource::File(path))
            }
            (None, Some(name)) => {
                let Some(value) = env(&name).filter(|v| !v.is_empty()) else {
                    return Err(err(
                        "password_env",
                        format!("names ${name}, which is not set or empty"),
                    ));
                };
                (value, PasswordSource::Env(name))
            }
            (None, None) => {
                return Err(err(
                    "password_file",
                    "or password_env is required with a username".into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "password_env",
                    "and password_file are both set; keep one".into(),
                ));
            }
        };
        if password.contains('\0') || password.contains('\n') {
            return Err(err(
                match password_from {
                    PasswordSource::File(_) => "password_file",
                    PasswordSource::Env(_) => "password_env",
                },
                "holds a password with a NUL byte or more than one line".into(),
            ));
        }
        Ok(RegistryAuth {
            username: self.username,
            password: SecretString::from(password),
            password_from,
        })
    }
}

impl From<RegistryAuth> for RegistryToml {
    /// Where the password comes from, never the password.
    fn from(a: RegistryAuth) -> Self {
        let (password_file, password_env) = match a.password_from {
            PasswordSource::File(p) => (Some(p), None),
            PasswordSource::Env(n) => (None, Some(n)),
        };
        RegistryToml {
            username: a.username,
            password_file,
            password_env,
            password: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use crate::config::{Config, Overrides};
    use crate::scheduler::{PasswordSource, Pool};

    const SECRET: &str = "reg-pw-SECRET-42";

    fn parse(dir: &std::path::Path, registry: &str) -> Result<Vec<Pool>, String> {
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            format!(
                "[[pools]]\nname = \"p1\"\ntags = [\"t\"]\narch = \"x86_64\"\nregistry = {registry}\n"
            ),
        )
        .unwrap();
        Config::load(Some(&f), &[], &Overrides::default())
            .map(|c| c.pools)
            .map_err(|e| e.to_string())
    }

    fn path(p: &std::path::Path) -> String {
        format!("{:?}", p.display().to_string())
    }

    #[test]
    fn password_file_is_read_with_its_trailing_newline_dropped_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, format!("{SECRET}\n")).unwrap();
        let pools = parse(
            dir.path(),
            &format!(
                "{{ username = \"puller\", password_file = {} }}",
                path(&file)
            ),
        )
        .unwrap();
        let auth = pools[0].registry.as_ref().expect("registry kept");
        assert_eq!(auth.username, "puller");
        assert_eq!(auth.password.expose_secret(), SECRET);
        assert_eq!(auth.password_from, PasswordSource::File(file.clone()));
        assert!(!format!("{:?}", pools[0]).contains(SECRET));
        // Written back (API, `pools` CLI): the file, not the password.
        let out = serde_json::to_string(&pools[0]).unwrap();
        assert!(!out.contains(SECRET), "{out}");
        assert!(out.contains("password_file"), "{out}");
        let back: Pool = serde_json::from_str(&out).unwrap();
        assert_eq!(back, pools[0]);
    }

    #[test]
    fn bad_registry_settings_name_pool_and_key_and_never_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let missing = dir.path().join("missing");
        let two_lines = dir.path().join("two");
        std::fs::write(&two_lines, format!("{SECRET}\nsecond\n")).unwrap();
        let cases = [
            (
                format!("{{ username = \"u\", password = \"{SECRET}\" }}"),
                "registry.password is not accepted inline",
            ),
            (
                "{ username = \"u\" }".to_string(),
                "registry.password_file or password_env is required",
            ),
            (
                format!("{{ username = \"\", password_file = {} }}", path(&empty)),
                "registry.username",
            ),
            (
                format!("{{ username = \"a:b\", password_file = {} }}", path(&empty)),
                "registry.username",
            ),
            (
                format!("{{ username = \"u\", password_file = {} }}", path(&empty)),
                "registry.password_file",
            ),
            (
                format!("{{ username = \"u\", password_file = {} }}", path(&missing)),
                "cannot be read",
            ),
            (
                format!(
                    "{{ username = \"u\", password_file = {} }}",
                    path(&two_lines)
                ),
                "more than one line",
            ),
            (
                "{ username = \"u\", password_env = \"AUTOGIT_TEST_SURELY_UNSET_9F2C\" }"
                    .to_string(),
                "registry.password_env names $AUTOGIT_TEST_SURELY_UNSET_9F2C, which is not set",
            ),
            (
                format!(
                    "{{ username = \"u\", password_env = \"X\", password_file = {} }}",
                    path(&empty)
                ),
                "both set",
            ),
            ("{ username = \"u\", server = \"x\" }".to_string(), "server"),
        ];
        for (registry, want) in cases {
            let e = parse(dir.path(), &registry).expect_err(&registry);
            assert!(e.contains(want), "{registry}: {e}");
            assert!(!e.contains(SECRET), "{registry}: {e}");
            if want != "server" {
                assert!(e.contains("pool 'p1'"), "{registry}: {e}");
            }
        }
    }

    #[test]
    fn password_env_is_read_from_the_given_environment() {
        let t: super::RegistryToml =
            serde_json::from_str(r#"{"username": "u", "password_env": "REG_PW"}"#).unwrap();
        let auth = t
            .load_with("p1", |n| (n == "REG_PW").then(|| SECRET.to_owned()))
            .unwrap();
        assert_eq!(auth.password.expose_secret(), SECRET);
        assert_eq!(auth.password_from, PasswordSource::Env("REG_PW".into()));
    }
}
