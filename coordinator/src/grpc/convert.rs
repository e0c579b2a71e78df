//! Wire ↔ domain conversions of `Fleet.Session`: every agent message is
//! validated into a domain value here (bounded strings, known enums, no
//! duplicate GPUs), and every domain command becomes a wire message or a
//! status. Bad input is a [`ProtocolError`] naming the field.

use std::collections::BTreeSet;

use autogit_proto::v1 as pb;
use secrecy::ExposeSecret;
use tonic::Status;

use super::ProtocolError;
use crate::fleet::Load;
use crate::fleet::command::{AgentCommand, CloseReason, StartRunner};
use crate::fleet::inventory::{DockerInfo, Gpu, GpuVendor, HeldImage, Inventory, normalize_arch};
use crate::fleet::session::{AgentReport, ContainerState, Hello, RunnerReport};

const MAX_STR: usize = 1024;
const MAX_GPUS: usize = 64;
const MAX_LABELS: usize = 64;
/// As many image references as an agent reports (`fleet.proto`).
const MAX_IMAGES: usize = 1000;

fn opt(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

fn bounded(field: &'static str, s: String) -> Result<String, ProtocolError> {
    if s.len() > MAX_STR {
        return Err(ProtocolError::invalid(
            field,
            format!("longer than {MAX_STR} bytes"),
        ));
    }
    Ok(s)
}

impl TryFrom<pb::Inventory> for Inventory {
    type Error = ProtocolError;

    fn try_from(p: pb::Inventory) -> Result<Self, ProtocolError> {
        let hostname = bounded("inventory.hostname", p.hostname)?;
        if hostname.is_empty() {
            return Err(ProtocolError::invalid(
                "inventory.hostname",
                "must not be empty",
            ));
        }
        let arch = normalize_arch(&bounded("inventory.arch", p.arch)?);
        if arch.is_empty() {
            return Err(ProtocolError::invalid(
                "inventory.arch",
                "must not be empty",
            ));
        }
        if p.labels.len() > MAX_LABELS {
            return Err(ProtocolError::invalid(
                "inventory.labels",
                format!("more than {MAX_LABELS} labels"),
            ));
        }
        if p.gpus.len() > MAX_GPUS {
            return Err(ProtocolError::invalid(
                "inventory.gpus",
                format!("more than {MAX_GPUS} GPUs"),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut gpus = Vec::with_capacity(p.gpus.len());
        for g in p.gpus {
            let vendor = match pb::GpuVendor::try_from(g.vendor) {
                Ok(pb::GpuVendor::Nvidia) => GpuVendor::Nvidia,
                Ok(pb::GpuVendor::Amd) => GpuVendor::Amd,
                Ok(pb::GpuVendor::Intel) => GpuVendor::Intel,
                _ => {
                    return Err(ProtocolError::invalid(
                        "inventory.gpus.vendor",
                        format!("unknown vendor {}", g.vendor),
                    ));
                }
            };
            let uuid = bounded("inventory.gpus.uuid", g.uuid)?;
            if uuid.is_empty() {
                return Err(ProtocolError::invalid(
                    "inventory.gpus.uuid",
                    "must not be empty",
                ));
            }
            if !seen.insert(uuid.clone()) {
                return Err(ProtocolError::invalid(
                    "inventory.gpus.uuid",
                    format!("duplicate GPU {uuid}"),
                ));
            }
            gpus.push(Gpu {
                vendor,
                index: g.index,
                uuid,
                name: bounded("inventory.gpus.name", g.name)?,
                memory_bytes: (g.memory_bytes > 0).then_some(g.memory_bytes),
                driver_version: opt(bounded("inventory.gpus.driver_version", g.driver_version)?),
                cuda_version: opt(bounded("inventory.gpus.cuda_version", g.cuda_version)?),
                mig_enabled: g.mig_enabled,
                pci_id: opt(bounded("inventory.gpus.pci_id", g.pci_id)?),
                pci_bus_id: opt(bounded("inventory.gpus.pci_bus_id", g.pci_bus_id)?),
                render_node: opt(bounded("inventory.gpus.render_node", g.render_node)?),
            });
        }
        if p.images.len() > MAX_IMAGES {
            return Err(ProtocolError::invalid(
                "inventory.images",
                format!("more than {MAX_IMAGES} image references"),
            ));
        }
        let images = p
            .images
            .into_iter()
            .map(|i| {
                let reference = bounded("inventory.images.reference", i.reference)?;
                if reference.is_empty() || reference.chars().any(char::is_whitespace) {
                    return Err(ProtocolError::invalid(
                        "inventory.images.reference",
                        "must be a non-empty reference without whitespace",
                    ));
                }
                Ok(HeldImage {
                    reference,
                    id: bounded("inventory.images.id", i.id)?,
                    size_bytes: i.size_bytes,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let d = p.docker.unwrap_or_default();
        Ok(Inventory {
            hostname,
            os: bounded("inventory.os", p.os)?,
            kernel: bounded("inventory.kernel", p.kernel)?,
            arch,
            cpu_model: bounded("inventory.cpu_model", p.cpu_model)?,
            cpu_cores: p.cpu_cores,
            cpu_threads: p.cpu_threads,
            riscv_isa: opt(bounded("inventory.riscv_isa", p.riscv_isa)?),
            mem_total_bytes: p.mem_total_bytes,
            docker: DockerInfo {
                available: d.available,
                version: opt(d.version),
                api_version: opt(d.api_version),
                root_dir: opt(d.root_dir),
                root_free_bytes: (d.root_free_bytes > 0).then_some(d.root_free_bytes),
                error: opt(d.error),
            },
            labels: p.labels.into_iter().collect(),
            gpus,
            images,
        })
    }
}

fn container_state(field: &'static str, v: i32) -> Result<ContainerState, ProtocolError> {
    Ok(match pb::RunnerState::try_from(v) {
        Ok(pb::RunnerState::Creating) => ContainerState::Creating,
        Ok(pb::RunnerState::Running) => ContainerState::Running,
        Ok(pb::RunnerState::Exited) => ContainerState::Exited,
        Ok(pb::RunnerState::Failed) => ContainerState::Failed,
        Ok(pb::RunnerState::Removed) => ContainerState::Removed,
        _ => {
            return Err(ProtocolError::invalid(
                field,
                format!("unknown runner state {v}"),
            ));
        }
    })
}

const MAX_LOG_TAIL: usize = 200;

impl TryFrom<pb::RunnerStatus> for RunnerReport {
    type Error = ProtocolError;
    fn try_from(s: pb::RunnerStatus) -> Result<Self, ProtocolError> {
        if s.runner_id.is_empty() || s.runner_id.len() > 128 {
            return Err(ProtocolError::invalid(
                "runner_status.runner_id",
                "must be 1-128 characters",
            ));
        }
        Ok(RunnerReport {
            state: container_state("runner_status.state", s.state)?,
            runner_id: s.runner_id,
            container_id: (!s.container_id.is_empty()).then_some(s.container_id),
            exit_code: s.exit_code,
            reason: (!s.reason.is_empty()).then(|| s.reason.chars().take(4096).collect()),
            log_tail: s
                .log_tail
                .into_iter()
                .take(MAX_LOG_TAIL)
                .map(|l| l.chars().take(4096).collect())
                .collect(),
            // A day at most: a larger figure is a broken clock, not a pull.
            image_pull: (s.state == pb::RunnerState::Running as i32)
                .then(|| std::time::Duration::from_millis(s.image_pull_ms.min(24 * 3600 * 1000))),
        })
    }
}

impl TryFrom<pb::ManagedContainer> for RunnerReport {
    type Error = ProtocolError;
    fn try_from(c: pb::ManagedContainer) -> Result<Self, ProtocolError> {
        if c.runner_id.is_empty() || c.runner_id.len() > 128 {
            return Err(ProtocolError::invalid(
                "hello.containers.runner_id",
                "must be 1-128 characters",
            ));
        }
        Ok(RunnerReport {
            state: container_state("hello.containers.state", c.state)?,
            runner_id: c.runner_id,
            container_id: (!c.container_id.is_empty()).then_some(c.container_id),
            exit_code: c.exit_code,
            reason: None,
            log_tail: Vec::new(),
            image_pull: None,
        })
    }
}

impl TryFrom<pb::Hello> for Hello {
    type Error = ProtocolError;
    fn try_from(h: pb::Hello) -> Result<Self, ProtocolError> {
        let inventory = Inventory::try_from(
            h.inventory
                .ok_or(ProtocolError::missing("hello.inventory"))?,
        )?;
        let containers = h
            .containers
            .into_iter()
            .map(RunnerReport::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Hello {
            agent_version: bounded("hello.agent_version", h.agent_version)?,
            inventory,
            containers,
        })
    }
}

/// A message after `Hello`.
pub fn agent_report(m: pb::AgentMessage) -> Result<AgentReport, ProtocolError> {
    match m.msg {
        Some(pb::agent_message::Msg::Heartbeat(h)) => Ok(AgentReport::Heartbeat(Load {
            cpu_percent: if h.cpu_percent.is_finite() {
                h.cpu_percent.clamp(0.0, 100.0)
            } else {
                0.0
            },
            mem_used_bytes: h.mem_used_bytes,
            mem_total_bytes: h.mem_total_bytes,
            runner_containers: h.runner_containers,
        })),
        Some(pb::agent_message::Msg::Inventory(inv)) => {
            Ok(AgentReport::Inventory(Box::new(Inventory::try_from(inv)?)))
        }
        Some(pb::agent_message::Msg::RunnerStatus(s)) => {
            Ok(AgentReport::RunnerStatus(RunnerReport::try_from(s)?))
        }
        Some(pb::agent_message::Msg::Hello(_)) => {
            Err(ProtocolError::invalid("msg", "Hello sent twice"))
        }
        None => Err(ProtocolError::missing("msg")),
    }
}

impl From<CloseReason> for Status {
    fn from(r: CloseReason) -> Self {
        let msg = r.to_string();
        match r {
            CloseReason::Replaced => Status::aborted(msg),
            CloseReason::Revoked => Status::permission_denied(msg),
            CloseReason::Silent => Status::deadline_exceeded(msg),
            CloseReason::ShuttingDown => Status::unavailable(msg),
            CloseReason::Protocol(_) => Status::invalid_argument(msg),
        }
    }
}

fn start_runner(s: StartRunner) -> pb::StartRunner {
    let env = s
        .spec
        .env_values()
        .map(|(name, value)| pb::EnvVar {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect();
    let spec = s.spec;
    pb::StartRunner {
        runner_id: s.runner_id.to_string(),
        pool: s.pool,
        spec: Some(pb::ContainerSpec {
            image: spec.image,
            command: spec.command,
            env,
            cpu_limit: spec.cpu_limit,
            memory_limit_bytes: spec.memory_limit_bytes,
            gpus: Some(pb::GpuAccess {
                nvidia_uuids: spec.nvidia_uuids,
                device_paths: spec.device_paths,
            }),
            labels: Default::default(),
            network_mode: spec.network_mode,
            mounts: spec
                .mounts
                .into_iter()
                .map(|m| pb::Mount {
                    source: m.source,
                    target: m.target,
                    read_only: m.read_only,
                })
                .collect(),
            stop_signal: spec.stop_signal,
            registry_auth: spec.registry_auth.map(|a| pb::RegistryAuth {
                username: a.username,
                password: a.password.expose_secret().to_owned(),
            }),
        }),
    }
}

/// A command as the wire carries it: a message, or the status that ends
/// the session.
pub fn coordinator_message(cmd: AgentCommand) -> Result<pb::CoordinatorMessage, Status> {
    use pb::coordinator_message::Msg;
    let msg = match cmd {
        AgentCommand::StartRunner(s) => Msg::StartRunner(start_runner(*s)),
        AgentCommand::StopRunner {
            runner_id,
            graceful,
            grace,
        } => Msg::StopRunner(pb::StopRunner {
            runner_id,
            graceful,
            // 0 on the wire is the agent's default: a set grace is at least 1 ms.
            grace_period_ms: grace
                .map_or(0, |g| g.as_millis().clamp(1, u128::from(u64::MAX)) as u64),
        }),
        AgentCommand::WarmImages(images) => Msg::WarmImages(pb::WarmImages {
            images: images
                .into_iter()
                .map(|i| pb::WarmImage {
                    reference: i.reference,
                    registry_auth: i.registry_auth.map(|a| pb::RegistryAuth {
                        username: a.username,
                        password: a.password.expose_secret().to_owned(),
                    }),
                })
                .collect(),
        }),
        AgentCommand::Close(reason) => return Err(reason.into()),
    };
    Ok(pb::CoordinatorMessage {
        msg: Some(msg),
        epoch: 0,
    })
}

#[cfg(test)]
mod command_tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::fleet::command::ContainerSpec;

    #[test]
    fn commands_become_wire_messages_and_closes_become_statuses() {
        let spec = ContainerSpec {
            image: "img".into(),
            command: vec!["run".into()],
            env: vec![("TOKEN".into(), SecretString::from("glrt-x"))],
            cpu_limit: 2.0,
            memory_limit_bytes: 5,
            nvidia_uuids: vec!["GPU-1".into()],
            device_paths: vec![],
            network_mode: String::new(),
            mounts: vec![],
            stop_signal: "SIGQUIT".into(),
            registry_auth: Some(crate::scheduler::RegistryAuth {
                username: "puller".into(),
                password: SecretString::from("reg-pw"),
                password_from: crate::scheduler::PasswordSource::Env("REG".into()),
            }),
        };
        let id = uuid::Uuid::new_v4();
        let m = coordinator_message(AgentCommand::StartRunner(Box::new(StartRunner {
            runner_id: id,
            pool: "p".into(),
            spec,
        })))
        .unwrap();
        let Some(pb::coordinator_message::Msg::StartRunner(s)) = m.msg else {
            panic!()
        };
        assert_eq!(s.runner_id, id.to_string());
        let spec = s.spec.unwrap();
        assert_eq!(spec.env[0].value, "glrt-x", "the wire carries the token");
        assert_eq!(spec.gpus.unwrap().nvidia_uuids, vec!["GPU-1".to_string()]);
        let auth = spec.registry_auth.expect("registry credentials travel");
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("puller", "reg-pw")
        );

        let stop = |grace| {
            coordinator_message(AgentCommand::StopRunner {
                runner_id: "r".into(),
                graceful: true,
                grace,
            })
            .unwrap()
        };
        let Some(pb::coordinator_message::Msg::StopRunner(s)) =
            stop(Some(Duration::from_micros(10))).msg
        else {
            panic!()
        };
        assert_eq!(
            s.grace_period_ms, 1,
            "a tiny grace is not the agent's default"
        );
        let Some(pb::coordinator_message::Msg::StopRunner(s)) = stop(None).msg else {
            panic!()
        };
        assert_eq!(s.grace_period_ms, 0);

        let st = coordinator_message(AgentCommand::Close(CloseReason::Revoked)).unwrap_err();
        assert_eq!(st.code(), tonic::Code::PermissionDenied);
        let st = coordinator_message(AgentCommand::Close(CloseReason::Protocol("bad".into())))
            .unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_second_hello_or_an_empty_message_is_a_protocol_error() {
        let twice = agent_report(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Hello(Default::default())),
        });
        assert!(twice.unwrap_err().to_string().contains("Hello sent twice"));
        assert_eq!(
            agent_report(pb::AgentMessage { msg: None }).unwrap_err(),
            ProtocolError::missing("msg")
        );
        let no_inv = Hello::try_from(pb::Hello::default()).unwrap_err();
        assert_eq!(no_inv, ProtocolError::missing("hello.inventory"));
    }
}

#[cfg(test)]
mod inventory_tests {
    use super::*;

    fn sample() -> pb::Inventory {
        pb::Inventory {
            hostname: "h".into(),
            arch: "arm64".into(),
            gpus: vec![pb::Gpu {
                vendor: pb::GpuVendor::Amd as i32,
                uuid: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn normalises_arch_and_accepts_valid() {
        let inv = Inventory::try_from(sample()).unwrap();
        assert_eq!(inv.arch, "aarch64");
        assert_eq!(inv.gpus[0].vendor, GpuVendor::Amd);
    }

    #[test]
    fn rejects_duplicate_gpu_and_empty_hostname() {
        let mut p = sample();
        p.gpus.push(p.gpus[0].clone());
        assert!(
            Inventory::try_from(p)
                .unwrap_err()
                .to_string()
                .contains("duplicate GPU")
        );
        let mut p = sample();
        p.hostname.clear();
        assert!(
            Inventory::try_from(p)
                .unwrap_err()
                .to_string()
                .contains("inventory.hostname")
        );
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn runner_reports_are_validated_at_the_edge() {
        let ok = RunnerReport::try_from(pb::RunnerStatus {
            runner_id: "r".into(),
            state: pb::RunnerState::Failed as i32,
            reason: "boom".into(),
            log_tail: vec!["x".into(); 1000],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.state, ContainerState::Failed);
        assert_eq!(ok.container_id, None);
        assert_eq!(ok.log_tail.len(), MAX_LOG_TAIL, "bounded");
        let unknown = RunnerReport::try_from(pb::RunnerStatus {
            runner_id: "r".into(),
            state: 42,
            ..Default::default()
        });
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("runner_status.state")
        );
        let unnamed = RunnerReport::try_from(pb::ManagedContainer {
            state: pb::RunnerState::Running as i32,
            ..Default::default()
        });
        assert!(
            unnamed
                .unwrap_err()
                .to_string()
                .contains("hello.containers.runner_id")
        );
    }
}
