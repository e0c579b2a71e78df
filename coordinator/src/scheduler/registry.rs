//! A pool's registry credentials, as plain data that travels with the
//! [`Pool`](super::Pool) to the runner's `StartRunner`. Nothing in the
//! scheduler reads them.
//!
//! The password is a secret: it is read from a file or an environment
//! variable when the config is loaded (`config/registry.rs`), kept in a
//! [`SecretString`], shown by `Debug` as `<redacted>` with where it came
//! from, and leaves the coordinator only inside the mutual-TLS `StartRunner`
//! to the agent that pulls the pool's image.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

/// Where a registry password was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `password_file`: the file's contents, one trailing newline removed.
    File(PathBuf),
    /// `password_env`: the variable's value.
    Env(String),
}

/// Credentials for pulling a pool's image from its registry.
#[derive(Clone)]
pub struct RegistryAuth {
    pub username: String,
    pub password: SecretString,
    /// Where `password` came from (shown in place of it).
    pub password_from: PasswordSource,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("password_from", &self.password_from)
            .finish()
    }
}

/// Equal when user, source and password are: a pool whose password file
/// changed is a changed pool.
impl PartialEq for RegistryAuth {
    fn eq(&self, other: &Self) -> bool {
        self.username == other.username
            && self.password_from == other.password_from
            && self.password.expose_secret() == other.password.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_source_and_hides_the_password() {
        let auth = RegistryAuth {
            username: "puller".into(),
            password: SecretString::from("pw-SECRET-1"),
            password_from: PasswordSource::File("/etc/autogit/registry.pass".into()),
        };
        for s in [format!("{auth:?}"), format!("{auth:#?}")] {
            assert!(!s.contains("pw-SECRET-1"), "{s}");
            assert!(
                s.contains("puller") && s.contains("/etc/autogit/registry.pass"),
                "{s}"
            );
        }
        let mut other = auth.clone();
        assert_eq!(auth, other);
        other.password = SecretString::from("pw-SECRET-2");
        assert_ne!(auth, other, "a changed password is a changed pool");
    }
}
