//! `autogit-agent run`: one outbound mTLS gRPC session to the coordinator,
//! kept alive with capped exponential backoff and jitter.
//!
//! Per session: send `Hello` (inventory + every managed container on the
//! host), then heartbeats (CPU, memory, runner containers), inventory when it
//! changes (also right after an image pull or removal), and runner status
//! events; execute `StartRunner` / `StopRunner`, and hand `WarmImages` to the
//! image keeper ([`crate::docker::warm`]), which pulls in the background.
//! The runner supervisor outlives sessions: containers keep running while the
//! agent reconnects, and events queue until the next session. Docker that
//! does not answer at start is retried in the background ([`docker_link`]);
//! the session takes the link when it comes and reports it in the inventory.

pub mod docker_link;

use std::sync::Arc;
use std::time::{Duration, Instant};

use autogit_proto::v1 as pb;
use sysinfo::System;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::docker::warm::{ImageKeeper, KeeperConfig, WantedImage};
use crate::docker::{self, DockerEngine, RunnerEvent, RunnerState, RunnerSpec, StopRequest, SupervisorConfig};
use crate::inventory::{Collector, DockerInfo, Inventory, InventoryOptions};
use crate::policy::HostPolicy;
use crate::state::StateDir;
use crate::{renew, transport};
use docker_link::{DockerLink, DockerSetup};

/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// Events buffered while disconnected.
const EVENT_BUFFER: usize = 1024;

/// Why `run` stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state dir has no usable identity (exit 1: systemd restarts the
    /// agent, which starts working once it has been re-joined).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The coordinator said this agent is revoked or unknown (exit 78).
    #[error("coordinator refuses this agent: {0}")]
    Refused(String),
}

/// How one session ended.
enum End {
    Shutdown,
    /// Try again after a backoff.
    Retry(String),
    /// Revoked or unknown: retrying cannot help.
    Fatal(String),
    /// No usable key and certificate on disk: only re-joining can help.
    Identity(crate::state::StateError),
}

/// Long-lived parts shared by every session.
struct Agent {
    /// The highest leader epoch any coordinator message carried.
    epochs: EpochGuard,
    cfg: Config,
    state: StateDir,
    collector: Arc<Collector>,
    policy: HostPolicy,
    docker: Option<DockerLink>,
    docker_error: Option<String>,
    /// Where a Docker link reached late (after start) arrives.
    docker_late: mpsc::Receiver<DockerLink>,
    system: System,
    last_inventory: Option<Inventory>,
    /// A runner event taken from the queue whose send failed: sent first in
    /// the next session, so no report is lost to a broken stream.
    unsent: Option<RunnerEvent>,
    /// Warm pulls and image collection, once Docker answers.
    images: Option<ImageKeeper>,
    /// The last `WarmImages` (handed to the keeper when Docker comes late).
    wanted: Vec<WantedImage>,
    /// The keeper pulled or removed an image: resend the inventory.
    images_changed: mpsc::Receiver<()>,
    images_changed_tx: mpsc::Sender<()>,
}

pub fn inventory_options(cfg: &Config) -> InventoryOptions {
    InventoryOptions {
        sysfs_root: cfg.inventory.sysfs_root.clone(),
        proc_root: cfg.inventory.proc_root.clone(),
        labels: cfg.labels.clone(),
        nvidia_fixture: cfg.inventory.nvidia_fixture.clone(),
        ..InventoryOptions::default()
    }
}

/// Collect the inventory, with Docker facts when Docker is reachable.
pub async fn collect_inventory(collector: Arc<Collector>, engine: Option<&DockerEngine>, docker_error: Option<&str>) -> Inventory {
    let docker = match engine {
        Some(e) => e.inventory_info().await,
        None => DockerInfo { available: false, error: docker_error.map(str::to_string), ..Default::default() },
    };
    tokio::task::spawn_blocking(move || collector.collect(docker)).await.unwrap_or_default()
}

/// Inventories equal for change detection: free disk is compared in GiB so
/// that ordinary churn does not resend the inventory every scan; held
/// images (in `docker.images`) are compared exactly.
fn same_inventory(a: &Inventory, b: &Inventory) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a.docker.root_free_bytes = a.docker.root_free_bytes.map(|x| x >> 30);
    b.docker.root_free_bytes = b.docker.root_free_bytes.map(|x| x >> 30);
    a == b
}

/// Run until `shutdown` (Ok) or until the coordinator refuses this agent.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let state = StateDir::new(&cfg.state_dir);
    // Recover from an interrupted renewal, migrate an older layout.
    let identity = state.repair()?;
    tracing::info!(agent = %identity.agent.agent_id, coordinator = %identity.agent.coordinator, "starting agent");
    let (events_tx, mut events_rx) = mpsc::channel::<RunnerEvent>(EVENT_BUFFER);
    let setup = DockerSetup {
        socket: cfg.docker.socket.clone(),
        supervisor: SupervisorConfig {
            scope: Some(identity.agent.agent_id.clone()),
            failed_retention: cfg.docker.keep_failed_for,
            issued_tokens_file: Some(state.path().join(docker::issued::ISSUED_FILE)),
            gc_policy: if cfg.docker.gc_foreign_runner_leftovers { docker::GcPolicy::AllManaged } else { docker::GcPolicy::IssuedOnly },
            leftover_gc_interval: cfg.docker.leftover_gc_interval,
            ..SupervisorConfig::default()
        },
    };
    let (late_tx, docker_late) = mpsc::channel::<DockerLink>(1);
    let (docker, docker_error, docker_retry) = match setup.clone().connect(events_tx.clone()).await {
        Ok(link) => (Some(link), None, None),
        Err(e) => {
            tracing::warn!(error = %e, "Docker is unavailable; runners cannot start on this host until it answers (retrying in the background)");
            let retry = setup.retry_in_background(events_tx.clone(), late_tx, shutdown.clone());
            (None, Some(e), Some(retry))
        }
    };
    let renewals = tokio::spawn(renew::run(state.clone(), cfg.session.connect_timeout, shutdown.clone()));
    let (images_changed_tx, images_changed) = mpsc::channel::<()>(1);
    let mut agent = Agent {
        epochs: EpochGuard::default(),
        collector: Arc::new(Collector::new(inventory_options(&cfg))),
        // The socket this agent really talks to (config, else DOCKER_HOST)
        // is "the Docker socket" for policy.allow_docker_socket.
        policy: HostPolicy::new(
            cfg.policy.clone(),
            docker::DockerEngine::resolve_socket(
                cfg.docker.socket.as_deref(),
                std::env::var("DOCKER_HOST").ok().as_deref(),
            )
            .ok()
            .as_deref(),
        ),
        cfg,
        state,
        docker,
        docker_error,
        docker_late,
        system: System::new(),
        last_inventory: None,
        unsent: None,
        images: None,
        wanted: Vec::new(),
        images_changed,
        images_changed_tx,
    };
    agent.start_image_keeper();
    let mut backoff = Backoff::new(agent.cfg.session.reconnect_initial, agent.cfg.session.reconnect_max);
    let result = loop {
        let started = Instant::now();
        match agent.session(&mut events_rx, &shutdown).await {
            End::Shutdown => break Ok(()),
            End::Fatal(msg) => break Err(RunError::Refused(msg)),
            End::Identity(e) => break Err(RunError::State(e)),
            End::Retry(msg) => {
                if started.elapsed() > STABLE_SESSION {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(reason = %msg, retry_in = ?delay, "session with coordinator ended");
                tokio::select! {
                    _ = shutdown.cancelled() => break Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    if let Some(retry) = docker_retry {
        retry.abort();
    }
    agent.take_late_docker();
    if let Some((_, sup)) = &agent.docker {
        // Containers keep running; the next agent process adopts them.
        sup.shutdown().await;
    }
    renewals.abort();
    result
}

/// The agent's side of leader fencing (ADR 0018): the highest epoch seen,
/// and a refusal for anything lower.
#[derive(Debug, Default, Clone, Copy)]
pub struct EpochGuard {
    highest: u64,
}

/// A message from a leader older than one already heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("leader epoch {got} is older than epoch {highest}, already seen")]
pub struct StaleEpoch {
    pub got: u64,
    pub highest: u64,
}

impl EpochGuard {
    /// Accept `epoch` (remembering it when higher) or refuse it.
    pub fn admit(&mut self, epoch: u64) -> Result<(), StaleEpoch> {
        if epoch < self.highest {
            return Err(StaleEpoch { got: epoch, highest: self.highest });
        }
        self.highest = epoch;
        Ok(())
    }
}

fn end_from_status(s: &tonic::Status) -> End {
    match s.code() {
        Code::PermissionDenied => End::Fatal(s.message().to_string()),
        _ => End::Retry(format!("{:?}: {}", s.code(), s.message())),
    }
}

fn send_now(tx: &mpsc::Sender<pb::AgentMessage>, msg: pb::agent_message::Msg) -> bool {
    tx.try_send(pb::AgentMessage { msg: Some(msg) }).is_ok()
}

impl Agent {
    async fn session(&mut self, events: &mut mpsc::Receiver<RunnerEvent>, shutdown: &CancellationToken) -> End {
        // A broken identity is a local problem, never "refused" (exit 78
        // tells systemd not to restart; that is for revocation only).
        let id = match self.state.load() {
            Ok(id) => id,
            Err(e) => return End::Identity(e),
        };
        let tls = match autogit_certs::tls::agent_client_config(&id.ca_pem, &id.cert_pem, &id.key_pem) {
            Ok(t) => t,
            Err(e) => {
                return End::Identity(crate::state::StateError::NoUsableIdentity {
                    dir: self.state.path().to_path_buf(),
                    agent_id: id.agent.agent_id.clone(),
                    coordinator: id.agent.coordinator.clone(),
                    problems: format!("TLS client configuration: {e}"),
                });
            }
        };
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            r = transport::connect(&id.agent.coordinator, tls, self.cfg.session.connect_timeout) => match r {
                Ok(c) => c,
                Err(e) => return End::Retry(e.to_string()),
            },
        };
        self.take_late_docker();
        let inventory = self.inventory().await;
        let containers = match &self.docker {
            Some((_, sup)) => match sup.list_managed().await {
                Ok(list) => list.into_iter().map(pb::ManagedContainer::from).collect(),
                Err(e) => return End::Retry(format!("list managed containers: {e}")),
            },
            None => Vec::new(),
        };
        let (out, out_rx) = mpsc::channel::<pb::AgentMessage>(256);
        let hello = pb::Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            inventory: Some(pb::Inventory::from(&inventory)),
            containers,
        };
        send_now(&out, pb::agent_message::Msg::Hello(hello));
        self.last_inventory = Some(inventory);
        let mut client = pb::fleet_client::FleetClient::new(channel);
        let mut inbound = match client.session(ReceiverStream::new(out_rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => return end_from_status(&s),
        };
        let heartbeat_every = match inbound.message().await {
            Ok(Some(pb::CoordinatorMessage { msg: Some(pb::coordinator_message::Msg::Welcome(w)), epoch })) => {
                if let Err(stale) = self.epochs.admit(epoch) {
                    // A leader that lost its lease and does not know it yet.
                    transport::forget_last_good();
                    return End::Retry(format!("coordinator is a deposed leader: {stale}"));
                }
                Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(100)))
            }
            Ok(_) => return End::Retry("coordinator did not send Welcome".into()),
            Err(s) => return end_from_status(&s),
        };
        tracing::info!(coordinator = %id.agent.coordinator, "session established");
        if let Some(ev) = self.unsent.take() {
            let status = pb::RunnerStatus::from(ev.clone());
            if out.send(pb::AgentMessage { msg: Some(pb::agent_message::Msg::RunnerStatus(status)) }).await.is_err() {
                self.unsent = Some(ev);
                return End::Retry("session stream closed".into());
            }
        }
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        let mut rescan = tokio::time::interval(self.cfg.inventory.rescan_interval);
        rescan.tick().await; // the first tick is immediate; Hello already carried the inventory
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return End::Shutdown,
                m = inbound.message() => match m {
                    Ok(Some(m)) => self.handle(m, &out).await,
                    Ok(None) => return End::Retry("closed by coordinator".into()),
                    Err(s) => return end_from_status(&s),
                },
                _ = heartbeat.tick() => {
                    let hb = self.heartbeat().await;
                    if out.send(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Heartbeat(hb)) }).await.is_err() {
                        return End::Retry("session stream closed".into());
                    }
                }
                _ = rescan.tick() => {
                    self.report_inventory(&out).await;
                    if let Some(k) = &self.images {
                        k.collect();
                    }
                }
                Some(()) = self.images_changed.recv() => self.report_inventory(&out).await,
                Some(link) = self.docker_late.recv() => {
                    self.docker = Some(link);
                    self.docker_error = None;
                    self.start_image_keeper();
                    // docker.available is part of the inventory: tell the coordinator now.
                    self.report_inventory(&out).await;
                }
                Some(ev) = events.recv() => {
                    let pulled = self.runner_event_images(&ev);
                    let status = pb::RunnerStatus::from(ev.clone());
                    if out.send(pb::AgentMessage { msg: Some(pb::agent_message::Msg::RunnerStatus(status)) }).await.is_err() {
                        self.unsent = Some(ev);
                        return End::Retry("session stream closed".into());
                    }
                    if pulled {
                        self.report_inventory(&out).await;
                    }
                }
            }
        }
    }

    /// Start the image keeper once Docker answers, with the last wanted set.
    fn start_image_keeper(&mut self) {
        let (Some((engine, _)), None) = (&self.docker, &self.images) else { return };
        let keeper = ImageKeeper::spawn(
            Arc::new(engine.clone()),
            Arc::new(docker::image_gc::DockerRootFree(engine.clone())),
            docker::pulled::PulledImages::load(&self.state.path().join(docker::pulled::PULLED_FILE)),
            KeeperConfig {
                prepull: self.cfg.images.prepull,
                pull_concurrency: self.cfg.images.pull_concurrency,
                gc_below_free: self.cfg.images.gc_below_free,
                allowed_images: self.cfg.policy.allowed_images.clone(),
                retry_after: docker::warm::RETRY_AFTER,
            },
            self.images_changed_tx.clone(),
        );
        if !self.wanted.is_empty() {
            keeper.want(self.wanted.clone());
        }
        self.images = Some(keeper);
    }

    /// Tell the keeper a runner started from its image; true when the
    /// image was pulled for it (the inventory changed).
    fn runner_event_images(&self, ev: &RunnerEvent) -> bool {
        let (RunnerState::Running, Some(image)) = (&ev.state, &ev.image) else { return false };
        let pulled = ev.image_pull_ms > 0;
        if let Some(k) = &self.images {
            k.runner_started(image.clone(), pulled);
        }
        pulled
    }

    /// A Docker link reached in the background since the last look, if any.
    fn take_late_docker(&mut self) {
        if let Ok(link) = self.docker_late.try_recv() {
            self.docker = Some(link);
            self.docker_error = None;
            self.start_image_keeper();
        }
    }

    /// Collect the inventory and send it if it changed.
    async fn report_inventory(&mut self, out: &mpsc::Sender<pb::AgentMessage>) {
        let inv = self.inventory().await;
        if !self.last_inventory.as_ref().is_some_and(|old| same_inventory(old, &inv)) {
            tracing::info!("inventory changed; reporting");
            send_now(out, pb::agent_message::Msg::Inventory(pb::Inventory::from(&inv)));
            self.last_inventory = Some(inv);
        }
    }

    async fn inventory(&mut self) -> Inventory {
        collect_inventory(self.collector.clone(), self.docker.as_ref().map(|(e, _)| e), self.docker_error.as_deref()).await
    }

    async fn heartbeat(&mut self) -> pb::Heartbeat {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let running = match &self.docker {
            Some((_, sup)) => sup.running_count().await.unwrap_or(0),
            None => 0,
        };
        pb::Heartbeat {
            cpu_percent: self.system.global_cpu_usage(),
            mem_used_bytes: self.system.used_memory(),
            mem_total_bytes: self.system.total_memory(),
            runner_containers: running as u32,
        }
    }

    async fn handle(&mut self, m: pb::CoordinatorMessage, out: &mpsc::Sender<pb::AgentMessage>) {
        if let Err(stale) = self.epochs.admit(m.epoch) {
            tracing::warn!(%stale, "refusing a command from a deposed leader");
            if let Some(pb::coordinator_message::Msg::StartRunner(cmd)) = &m.msg {
                report_failure(out, &cmd.runner_id, format!("refused: {stale}"));
            }
            return;
        }
        match m.msg {
            Some(pb::coordinator_message::Msg::StartRunner(cmd)) => {
                let runner_id = cmd.runner_id.clone();
                let spec = match RunnerSpec::try_from(cmd) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(runner = %runner_id, error = %e, "rejecting StartRunner");
                        report_failure(out, &runner_id, format!("invalid StartRunner: {e}"));
                        return;
                    }
                };
                // The host owner's veto, before anything touches Docker.
                let inventory = self.last_inventory.clone().unwrap_or_default();
                if let Err(e) = self.policy.check(&spec, &inventory) {
                    tracing::warn!(runner = %runner_id, pool = %spec.pool, refusal = %e, "refusing StartRunner");
                    report_failure(out, &runner_id, e.to_string());
                    return;
                }
                match &self.docker {
                    Some((_, sup)) => {
                        tracing::info!(runner = %runner_id, pool = %spec.pool, image = %spec.image, "starting runner");
                        if let Err(e) = sup.start(spec).await {
                            report_failure(out, &runner_id, e.to_string());
                        }
                    }
                    None => report_failure(
                        out,
                        &runner_id,
                        format!("Docker unavailable on this host: {}", self.docker_error.as_deref().unwrap_or("unknown")),
                    ),
                }
            }
            Some(pb::coordinator_message::Msg::WarmImages(cmd)) => {
                self.wanted = WantedImage::from_proto(cmd);
                if let Some(k) = &self.images {
                    k.want(self.wanted.clone());
                }
            }
            Some(pb::coordinator_message::Msg::StopRunner(cmd)) => {
                let runner_id = cmd.runner_id.clone();
                match (StopRequest::try_from(cmd), &self.docker) {
                    (Ok(req), Some((_, sup))) => {
                        tracing::info!(runner = %runner_id, graceful = req.graceful, "stopping runner");
                        if let Err(e) = sup.stop(req).await {
                            tracing::warn!(runner = %runner_id, error = %e, "stop runner");
                        }
                    }
                    (Err(e), _) => tracing::warn!(runner = %runner_id, error = %e, "rejecting StopRunner"),
                    (Ok(_), None) => {}
                }
            }
            Some(pb::coordinator_message::Msg::Welcome(_)) | None => {}
        }
    }
}

fn report_failure(out: &mpsc::Sender<pb::AgentMessage>, runner_id: &str, reason: String) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    send_now(
        out,
        pb::agent_message::Msg::RunnerStatus(pb::RunnerStatus {
            runner_id: runner_id.to_string(),
            state: pb::RunnerState::Failed as i32,
            reason,
            at_unix_ms: now,
            ..Default::default()
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::HeldImage;

    #[test]
    fn image_changes_resend_the_inventory_free_space_churn_does_not() {
        let mut a = Inventory::default();
        a.docker.root_free_bytes = Some(10 << 30);
        let mut b = a.clone();
        b.docker.root_free_bytes = Some((10 << 30) + 12345);
        assert!(same_inventory(&a, &b), "free bytes within the same GiB");
        b.docker.images.push(HeldImage { reference: "reg/runner:1".into(), id: "sha256:a".into(), size_bytes: 1 });
        assert!(!same_inventory(&a, &b), "a pulled image is a change");
        let mut c = b.clone();
        c.docker.images[0].id = "sha256:b".into();
        assert!(!same_inventory(&b, &c), "a moved tag is a change");
    }

    #[test]
    fn a_deposed_leaders_epoch_is_refused_once_a_newer_one_was_seen() {
        let mut g = EpochGuard::default();
        assert_eq!(g.admit(0), Ok(()), "a coordinator from before epochs");
        assert_eq!(g.admit(3), Ok(()));
        assert_eq!(g.admit(3), Ok(()), "the same leader again");
        assert_eq!(g.admit(2), Err(StaleEpoch { got: 2, highest: 3 }));
        assert_eq!(g.admit(0), Err(StaleEpoch { got: 0, highest: 3 }));
        assert_eq!(g.admit(7), Ok(()), "a newer leader");
        assert_eq!(g.admit(3), Err(StaleEpoch { got: 3, highest: 7 }));
        assert!(StaleEpoch { got: 3, highest: 7 }.to_string().contains("epoch 3 is older than epoch 7"));
    }
}
