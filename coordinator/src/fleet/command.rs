//! What the coordinator tells one agent, as domain values. The gRPC adapter
//! (`grpc/session.rs`) turns them into wire messages and statuses; nothing
//! here knows the wire.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

/// A command down one agent's session.
#[derive(Debug)]
pub enum AgentCommand {
    /// Run a runner container (idempotent on the agent).
    StartRunner(Box<StartRunner>),
    /// Stop a runner's container; `runner_id` is a string because a
    /// container with a label that is not one of our ids must be named too.
    StopRunner {
        runner_id: String,
        /// Graceful: the stop signal, then `grace` to finish the job.
        graceful: bool,
        /// `None`: the agent's default.
        grace: Option<Duration>,
    },
    /// The whole set of images this agent should hold (replaces the last
    /// set; `fleet/warm.rs`).
    WarmImages(Vec<WarmImage>),
    /// End the session.
    Close(CloseReason),
}

/// One image to hold, with the credentials to pull it (`Debug` hides the
/// password).
#[derive(Debug, Clone, PartialEq)]
pub struct WarmImage {
    pub reference: String,
    pub registry_auth: Option<crate::scheduler::RegistryAuth>,
}

/// Why the coordinator ends a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A newer session of the same agent took over.
    Replaced,
    /// The agent was revoked.
    Revoked,
    /// No heartbeat within the grace period.
    Silent,
    /// The coordinator is shutting down; the agent reconnects.
    ShuttingDown,
    /// The agent broke the protocol.
    Protocol(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Replaced => f.write_str("replaced by a newer session of the same agent"),
            CloseReason::Revoked => f.write_str("agent revoked"),
            CloseReason::Silent => f.write_str("no heartbeat within the grace period"),
            CloseReason::ShuttingDown => f.write_str("coordinator shutting down"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// Start one runner container.
#[derive(Debug, Clone)]
pub struct StartRunner {
    pub runner_id: Uuid,
    pub pool: String,
    pub spec: ContainerSpec,
}

/// A runner container. The runner token is in `command` or `env`, so
/// `Debug` shows neither the command's arguments nor env values.
#[derive(Clone)]
pub struct ContainerSpec {
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, SecretString)>,
    /// CPUs (fractional), 0 = unlimited.
    pub cpu_limit: f64,
    /// Bytes, 0 = unlimited.
    pub memory_limit_bytes: u64,
    /// NVIDIA GPUs, by uuid (a Docker device request).
    pub nvidia_uuids: Vec<String>,
    /// AMD and Intel GPUs: device nodes.
    pub device_paths: Vec<String>,
    /// Empty: Docker's default.
    pub network_mode: String,
    pub mounts: Vec<Mount>,
    /// The signal for a graceful stop.
    pub stop_signal: String,
    /// Credentials for pulling `image` (the pool's `registry`); `Debug`
    /// hides the password.
    pub registry_auth: Option<crate::scheduler::RegistryAuth>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl ContainerSpec {
    /// Env values, for the wire only.
    pub fn env_values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
    }
}

impl fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<String> = self
            .env
            .iter()
            .map(|(k, _)| format!("{k}=<redacted>"))
            .collect();
        f.debug_struct("ContainerSpec")
            .field("image", &self.image)
            .field(
                "command",
                &format_args!("<{} arguments, redacted>", self.command.len()),
            )
            .field("env", &env)
            .field("cpu_limit", &self.cpu_limit)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("nvidia_uuids", &self.nvidia_uuids)
            .field("device_paths", &self.device_paths)
            .field("network_mode", &self.network_mode)
            .field("mounts", &self.mounts)
            .field("stop_signal", &self.stop_signal)
            .field("registry_auth", &self.registry_auth)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token_in_command_and_env() {
        let spec = ContainerSpec {
            image: "gitlab/gitlab-runner".into(),
            command: vec!["run-single".into(), "--token".into(), "glrt-SECRET1".into()],
            env: vec![("CI_SERVER_TOKEN".into(), SecretString::from("glrt-SECRET2"))],
            cpu_limit: 1.0,
            memory_limit_bytes: 1,
            nvidia_uuids: vec![],
            device_paths: vec![],
            network_mode: String::new(),
            mounts: vec![],
            stop_signal: "SIGQUIT".into(),
            registry_auth: Some(crate::scheduler::RegistryAuth {
                username: "puller".into(),
                password: SecretString::from("REGISTRY-SECRET3"),
                password_from: crate::scheduler::PasswordSource::Env("REG".into()),
            }),
        };
        let cmd = AgentCommand::StartRunner(Box::new(StartRunner {
            runner_id: Uuid::nil(),
            pool: "p".into(),
            spec,
        }));
        let s = format!("{cmd:?}");
        assert!(
            !s.contains("SECRET1") && !s.contains("SECRET2") && !s.contains("SECRET3"),
            "{s}"
        );
        assert!(s.contains("puller"), "{s}");
        assert!(s.contains("CI_SERVER_TOKEN=<redacted>"), "{s}");
    }
}
