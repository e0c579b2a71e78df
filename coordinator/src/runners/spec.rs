//! From a pool, a placement and a runner token to the container an agent
//! runs. The token ends up in the spec's environment (`CI_SERVER_TOKEN`),
//! never its command (config validation refuses `{runner_token}` there);
//! `ContainerSpec`'s `Debug` hides env values and nothing here logs the spec.

use secrecy::SecretString;
use uuid::Uuid;

use super::devices;
use super::template::{TemplateError, render_runner};
use crate::fleet::command::{ContainerSpec, Mount, StartRunner};
use crate::scheduler::{self, Placement, Pool};

/// The environment variable `gitlab-runner run-single` reads the GitLab URL from.
pub const ENV_SERVER_URL: &str = "CI_SERVER_URL";
/// The environment variable `gitlab-runner run-single` reads the runner token from.
pub const ENV_SERVER_TOKEN: &str = "CI_SERVER_TOKEN";

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
        env: container_env(&rendered.env, gitlab_url, token),
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
        registry_auth: pool.registry.clone(),
    };
    Ok(StartRunner {
        runner_id,
        pool: pool.name.clone(),
        spec,
    })
}

/// The container's environment: the pool's rendered `env`, then
/// `CI_SERVER_URL` and `CI_SERVER_TOKEN` unless the pool sets them itself.
/// `gitlab-runner run-single` reads those two in place of `--url` and
/// `--token`, so the token never has to be on the command line (where every
/// local user could read it from `/proc/*/cmdline`).
fn container_env(
    rendered: &[(String, String)],
    gitlab_url: &str,
    token: &SecretString,
) -> Vec<(String, SecretString)> {
    let mut env: Vec<(String, SecretString)> = rendered
        .iter()
        .map(|(name, value)| (name.clone(), SecretString::from(value.clone())))
        .collect();
    let runner_vars = [
        (ENV_SERVER_URL, SecretString::from(gitlab_url)),
        (ENV_SERVER_TOKEN, token.clone()),
    ];
    for (name, value) in runner_vars {
        if !env.iter().any(|(n, _)| n == name) {
            env.push((name.to_owned(), value));
        }
    }
    env
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
    use secrecy::ExposeSecret;

    #[test]
    fn nvidia_pool_gets_device_request_uuids_and_token_stays_out_of_debug() {
        let pool = Pool::new("gpu", &["gpu"], Arch::X86_64).with_gpu(GpuVendor::Nvidia, 1);
        let placement = Placement {
            agent_id: uuid::Uuid::new_v4(),
            arch: crate::scheduler::Arch::X86_64,
            gpus: vec!["GPU-1".into()],
            render_nodes: vec![],
        };
        let token = SecretString::from("glrt-SECRET");
        let s = start_runner(&pool, Uuid::new_v4(), "http://gitlab", &token, &placement).unwrap();
        assert_eq!(s.spec.nvidia_uuids, vec!["GPU-1".to_string()]);
        assert_eq!(s.spec.stop_signal, "SIGQUIT");
        assert!(
            !format!("{s:?}").contains("glrt-SECRET"),
            "Debug never shows it"
        );
    }

    #[test]
    fn token_and_url_reach_the_container_through_env_never_argv() {
        for pool in crate::scheduler::Pool::builtin_defaults() {
            let placement = Placement {
                agent_id: Uuid::nil(),
                arch: crate::scheduler::Arch::X86_64,
                gpus: vec!["g-0".into()],
                render_nodes: vec!["/dev/dri/renderD128".into()],
            };
            let token = SecretString::from("glrt-SECRET");
            let s = start_runner(&pool, Uuid::nil(), "http://gitlab", &token, &placement).unwrap();
            assert!(
                !s.spec.command.iter().any(|a| a.contains("glrt-")),
                "pool {}: token on the command line: {:?}",
                pool.name,
                s.spec.command
            );
            let env = |name: &str| {
                s.spec
                    .env
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.expose_secret().to_owned())
            };
            assert_eq!(env("CI_SERVER_TOKEN").as_deref(), Some("glrt-SECRET"));
            assert_eq!(env("CI_SERVER_URL").as_deref(), Some("http://gitlab"));
        }
    }

    #[test]
    fn a_pool_env_may_set_the_runner_variables_itself() {
        let mut pool = Pool::new("p", &["p"], Arch::X86_64);
        pool.command = vec!["run-single".into()];
        pool.env
            .insert("CI_SERVER_URL".into(), "http://proxy/{pool}".into());
        let placement = Placement {
            agent_id: Uuid::nil(),
            arch: crate::scheduler::Arch::X86_64,
            gpus: vec![],
            render_nodes: vec![],
        };
        let token = SecretString::from("glrt-SECRET");
        let s = start_runner(&pool, Uuid::nil(), "http://gitlab", &token, &placement).unwrap();
        let urls: Vec<_> = s
            .spec
            .env
            .iter()
            .filter(|(n, _)| n == "CI_SERVER_URL")
            .map(|(_, v)| v.expose_secret().to_owned())
            .collect();
        assert_eq!(urls, ["http://proxy/p"], "the pool's value wins, once");
        assert!(s.spec.env.iter().any(|(n, _)| n == "CI_SERVER_TOKEN"));
    }
}
