//! `Debug` for the messages that carry secrets: the join token in
//! [`EnrollRequest`] and the runner token inside [`ContainerSpec`]'s env.
//! Values are replaced by `<redacted>`; names stay visible for debugging.

use std::fmt;

use crate::v1::{ContainerSpec, EnrollRequest};

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

impl fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<String> = self
            .env
            .iter()
            .map(|e| format!("{}={REDACTED}", e.name))
            .collect();
        f.debug_struct("ContainerSpec")
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env", &env)
            .field("cpu_limit", &self.cpu_limit)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("gpus", &self.gpus)
            .field("labels", &self.labels)
            .field("network_mode", &self.network_mode)
            .field("mounts", &self.mounts)
            .field("stop_signal", &self.stop_signal)
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
    fn container_spec_debug_hides_env_values() {
        let spec = ContainerSpec {
            image: "img".into(),
            env: vec![EnvVar { name: "CI_SERVER_TOKEN".into(), value: "glrt-secret".into() }],
            ..Default::default()
        };
        let s = format!("{spec:?}");
        assert!(!s.contains("glrt-secret"), "{s}");
        assert!(s.contains("CI_SERVER_TOKEN"));
    }
}
