//! `Debug` for the messages that carry secrets: the join token in
//! [`EnrollRequest`], the runner token inside [`ContainerSpec`]'s env and
//! the registry password in [`RegistryAuth`].
//! Values are replaced by `<redacted>`; names stay visible for debugging.

use std::fmt;

use crate::v1::{ContainerSpec, EnrollRequest, RegistryAuth};

const REDACTED: &str = "<redacted>";

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token", &REDACTED)
            .field("csr_pem", &format_args!("<{} bytes>", self.csr_pem.len()))
            .field("hostname", &self.hostname)
            .finish()
    }
}

/// Command arguments with secrets masked: the value after a `--token`-like
/// flag, `--token=...` forms, and anything that looks like a GitLab token.
fn redact_command(command: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(command.len());
    let mut mask_next = false;
    for arg in command {
        let lower = arg.to_ascii_lowercase();
        let secretish = lower.starts_with("glrt-")
            || lower.starts_with("glpat-")
            || lower.starts_with("glrtr-");
        if mask_next || secretish {
            out.push(REDACTED.to_string());
        } else if let Some((flag, _)) = arg
            .split_once('=')
            .filter(|(f, _)| f.to_ascii_lowercase().contains("token"))
        {
            out.push(format!("{flag}={REDACTED}"));
        } else {
            out.push(arg.clone());
        }
        mask_next = lower.starts_with('-') && lower.contains("token") && !lower.contains('=');
    }
    out
}

impl fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<String> = self
            .env
            .iter()
            .map(|e| format!("{}={REDACTED}", e.name))
            .collect();
        f.debug_struct("ContainerSpec")
            .field("image", &self.image)
            .field("command", &redact_command(&self.command))
            .field("env", &env)
            .field("cpu_limit", &self.cpu_limit)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("gpus", &self.gpus)
            .field("labels", &self.labels)
            .field("network_mode", &self.network_mode)
            .field("mounts", &self.mounts)
            .field("stop_signal", &self.stop_signal)
            .field("registry_auth", &self.registry_auth)
            .finish()
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &REDACTED)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::EnvVar;

    #[test]
    fn enroll_request_debug_hides_token() {
        let req = EnrollRequest {
            token: "AG10abc::id.supersecret".into(),
            csr_pem: "-----BEGIN".into(),
            hostname: "h1".into(),
        };
        let s = format!("{req:?}");
        assert!(!s.contains("supersecret"), "{s}");
        assert!(s.contains("h1"));
    }

    #[test]
    fn container_spec_debug_hides_token_arguments() {
        let spec = ContainerSpec {
            command: vec![
                "run-single".into(),
                "--token".into(),
                "abc123".into(),
                "--url=x".into(),
                "--token=def456".into(),
                "glrt-zzz".into(),
            ],
            ..Default::default()
        };
        let s = format!("{spec:?}");
        for secret in ["abc123", "def456", "glrt-zzz"] {
            assert!(!s.contains(secret), "{s}");
        }
        assert!(s.contains("run-single") && s.contains("--url=x"), "{s}");
    }

    #[test]
    fn container_spec_debug_hides_env_values() {
        let spec = ContainerSpec {
            image: "img".into(),
            env: vec![EnvVar {
                name: "CI_SERVER_TOKEN".into(),
                value: "glrt-secret".into(),
            }],
            ..Default::default()
        };
        let s = format!("{spec:?}");
        assert!(!s.contains("glrt-secret"), "{s}");
        assert!(s.contains("CI_SERVER_TOKEN"));
    }

    #[test]
    fn registry_auth_debug_hides_the_password_alone_and_inside_a_spec() {
        let auth = RegistryAuth {
            username: "ci-puller".into(),
            password: "hunter2-registry".into(),
        };
        let spec = ContainerSpec {
            image: "img".into(),
            registry_auth: Some(auth.clone()),
            ..Default::default()
        };
        for s in [
            format!("{auth:?}"),
            format!("{spec:?}"),
            format!("{auth:#?}"),
        ] {
            assert!(!s.contains("hunter2-registry"), "{s}");
            assert!(s.contains("ci-puller"), "{s}");
        }
    }
}
