//! From a pool, a placement and a runner token to the container an agent
//! runs. The token ends up in the spec (command/env); `ContainerSpec`'s
//! `Debug` hides both and nothing here logs the spec.

use secrecy::SecretString;
use uuid::Uuid;

use super::devices;
use super::template::{TemplateError, render_runner};
use crate::fleet::command::{ContainerSpec, Mount, StartRunner};
use crate::scheduler::{self, Placement, Pool};

/// Where the host's Docker socket is mounted when `docker_socket = true`.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The stop signal gitlab-runner treats as "finish the current job, then exit".
pub const GRACEFUL_STOP_SIGNAL: &str = "SIGQUIT";

/// Build the `StartRunner` for runner `runner_id` of `pool` on `placement`.
/// The GPUs were chosen by the scheduler (`scheduler/placement.rs::place`);
/// [`devices`] turns them into an NVIDIA device request or device nodes.
pub fn start_runner(
    pool: &Pool,
    runner_id: Uuid,
    gitlab_url: &str,
    token: &SecretString,
    placement: &Placement,
) -> Result<StartRunner, TemplateError> {
    let rendered = render_runner(pool, gitlab_url, token, &runner_id.to_string(), placement)?;
    let vendor = pool.gpu.as_ref().map(|g| g.vendor);
    let spec = ContainerSpec {
        image: rendered.image.clone(),
        command: rendered.command.clone(),
        env: rendered
            .env
            .iter()
            .map(|(name, value)| (name.clone(), SecretString::from(value.clone())))
            .collect(),
        cpu_limit: pool.cpu_limit,
        memory_limit_bytes: pool.mem_limit.bytes(),
        nvidia_uuids: devices::nvidia_uuids(vendor, placement),
        device_paths: devices::device_nodes(vendor, placement),
        network_mode: pool.network_mode.clone().unwrap_or_default(),
        mounts: effective_mounts(pool)
            .into_iter()
            .map(|m| Mount {
                source: m.source,
                target: m.target,
                read_only: m.read_only,
            })
            .collect(),
        stop_signal: GRACEFUL_STOP_SIGNAL.into(),
    };
    Ok(StartRunner {
        runner_id,
        pool: pool.name.clone(),
        spec,
    })
}

/// The mounts of a runner container, the Docker socket included when
/// `docker_socket` is set.
pub fn effective_mounts(pool: &Pool) -> Vec<scheduler::Mount> {
    let mut mounts = pool.mounts.clone();
    if pool.docker_socket {
        mounts.push(scheduler::Mount {
            source: DOCKER_SOCKET.to_owned(),
            target: DOCKER_SOCKET.to_owned(),
            read_only: false,
        });
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Arch, GpuVendor, Pool};

    #[test]
    fn nvidia_pool_gets_device_request_uuids_and_token_stays_out_of_debug() {
        let pool = Pool::new("gpu", &["gpu"], Arch::X86_64).with_gpu(GpuVendor::Nvidia, 1);
        let placement = Placement {
            agent_id: uuid::Uuid::new_v4(),
            gpus: vec!["GPU-1".into()],
            render_nodes: vec![],
        };
        let token = SecretString::from("glrt-SECRET");
        let s = start_runner(&pool, Uuid::new_v4(), "http://gitlab", &token, &placement).unwrap();
        assert_eq!(s.spec.nvidia_uuids, vec!["GPU-1".to_string()]);
        assert_eq!(s.spec.stop_signal, "SIGQUIT");
        assert!(
            s.spec.command.iter().any(|a| a.contains("glrt-SECRET")),
            "the default command carries the token"
        );
        assert!(
            !format!("{s:?}").contains("glrt-SECRET"),
            "Debug never shows it"
        );
    }
}
