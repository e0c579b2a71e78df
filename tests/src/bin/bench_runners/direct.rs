//! The baseline for `--compare-docker`: the same number of containers of
//! the same image, with the same limits, started straight through the
//! Docker Engine API, all at once, on the same dockerd. That is what
//! `docker run -d` does (create, then start) without the CLI's own process
//! start, so the baseline is, if anything, faster than `docker run`.
//!
//! `T0` is the bench's clock right before the create call, `T1` Docker's own
//! `start` event: the same clocks as the AutoGit side's T1.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, StartContainerOptions};

use crate::clock::{self, Nanos};

/// One container of a baseline burst.
#[derive(Debug, Clone)]
pub struct Sample {
    pub batch: usize,
    /// A warm-up batch's: left out of the statistics.
    pub warmup: bool,
    /// The `autogit.runner-id` label (matches the Docker events).
    pub id: String,
    /// Right before the create call.
    pub called: Nanos,
    /// Docker `create` and `start` events, filled in from the event stream.
    pub created: Option<Nanos>,
    pub started: Option<Nanos>,
}

/// A Docker client that honours `DOCKER_HOST` (`unix://` only, as the agent).
pub fn connect() -> anyhow::Result<Docker> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => {
            let path = h
                .strip_prefix("unix://")
                .ok_or_else(|| anyhow!("DOCKER_HOST={h}: only unix:// sockets are supported"))?;
            Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
                .context("connect to Docker")
        }
        _ => Docker::connect_with_unix_defaults().context("connect to Docker"),
    }
}

/// The create body: what the agent sends for a bench runner (image, host
/// network, 0.1 CPU, 128 MiB, AutoGit's labels), but the command only
/// sleeps, since there is no GitLab runner behind it.
fn body(image: &str, scope: &str, id: &str, sleep: Duration) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["/bin/sleep".into()]),
        cmd: Some(vec![format!("{:.3}", sleep.as_secs_f64())]),
        labels: Some(HashMap::from([
            ("autogit.managed".to_string(), "true".to_string()),
            ("autogit.scope".to_string(), scope.to_string()),
            ("autogit.runner-id".to_string(), id.to_string()),
        ])),
        host_config: Some(HostConfig {
            nano_cpus: Some(100_000_000),
            memory: Some(128 * 1024 * 1024),
            network_mode: Some("host".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates and starts `n` containers at once; returns one sample per
/// container (events not yet filled in) and the errors of those that failed.
pub fn burst(
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    image: &str,
    scope: &str,
    batch: usize,
    n: usize,
    sleep: Duration,
) -> (Vec<Sample>, Vec<String>) {
    rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let docker = docker.clone();
                let id = format!("direct-{batch}-{i}-{}", uuid::Uuid::new_v4());
                let body = body(image, scope, &id, sleep);
                tokio::spawn(async move {
                    let called = clock::now();
                    let opts = CreateContainerOptionsBuilder::new()
                        .name(&format!("autogit-bench-{id}"))
                        .build();
                    let result = async {
                        let c = docker.create_container(Some(opts), body).await?;
                        docker
                            .start_container(&c.id, None::<StartContainerOptions>)
                            .await
                    }
                    .await;
                    let sample = Sample {
                        batch,
                        warmup: false,
                        id,
                        called,
                        created: None,
                        started: None,
                    };
                    (sample, result.map_err(|e| e.to_string()))
                })
            })
            .collect();
        let mut samples = Vec::new();
        let mut errors = Vec::new();
        for t in tasks {
            match t.await {
                Ok((s, Ok(()))) => samples.push(s),
                Ok((s, Err(e))) => errors.push(format!("direct container {}: {e}", s.id)),
                Err(e) => errors.push(format!("direct container task: {e}")),
            }
        }
        (samples, errors)
    })
}
