//! GitLab runners: creation (then `StartRunner` to the agent), deletion
//! after a runner finished, retries of failed deletions, and the collector
//! that deletes AutoGit-marked runners without a live record. The calls run
//! in spawned tasks and come back as [`Op`]s.

use crate::edge::wire;
use std::sync::Arc;
use std::time::Duration;

use autogit_certs::AgentId;
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Active, CreateBackoff, Reconciler, stock};
use crate::fleet::command::{AgentCommand, StartRunner};
use crate::gitlab::{CreateRunner, CreatedRunner, SharedGitLab};
use crate::runners::record::RunnerRecord;
use crate::runners::{Phase, ownership, spec};
use crate::scheduler::{self, Placement};

/// Longest pause of a pool's runner creation after failures.
const MAX_CREATE_BACKOFF: Duration = Duration::from_secs(60);

/// Results of GitLab calls made off the loop.
#[derive(Debug)]
pub enum Op {
    Created {
        runner: Uuid,
        gitlab_id: u64,
        token: SecretString,
    },
    CreateFailed {
        runner: Uuid,
        error: String,
    },
    Deleted {
        runner: Option<Uuid>,
        gitlab_id: u64,
    },
    DeleteFailed {
        gitlab_id: u64,
        error: String,
    },
    /// AutoGit-marked GitLab runners found by the collector: (GitLab id, our runner id).
    GcCandidates(Vec<(u64, Option<Uuid>)>),
    /// A GitLab runner created for a pool's stock (`stock.rs`), or why not.
    Stocked {
        runner: Uuid,
        spec: Arc<scheduler::Pool>,
        result: Result<CreatedRunner, String>,
    },
}

/// `POST /user/runners` off the loop; the answer comes back as an [`Op`].
/// Called by the writer once the runner's record is committed.
pub(super) fn spawn_create(
    gitlab: &SharedGitLab,
    ops: &mpsc::UnboundedSender<Op>,
    id: Uuid,
    req: CreateRunner,
) {
    let gitlab = gitlab.clone();
    let ops = ops.clone();
    tokio::spawn(async move {
        let op = match gitlab.create_runner(&req).await {
            Ok(c) => Op::Created {
                runner: id,
                gitlab_id: c.id,
                token: c.token,
            },
            Err(e) => Op::CreateFailed {
                runner: id,
                error: e.to_string(),
            },
        };
        let _ = ops.send(op);
    });
}

fn start_message(cmd: StartRunner) -> AgentCommand {
    AgentCommand::StartRunner(Box::new(cmd))
}

impl Reconciler {
    fn pool(&self, name: &str) -> Option<scheduler::Pool> {
        self.cfg
            .pools
            .current()
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    /// Record a new runner and create its GitLab runner off the loop, or
    /// take one from the pool's stock (`stock.rs`).
    pub(super) async fn start_runner(
        &mut self,
        pool_name: &str,
        placement: Placement,
        hostname: &str,
        cold_image: Option<String>,
    ) {
        let Some(pool) = self.pool(pool_name) else {
            return;
        };
        let stocked = self.stock.take(&pool);
        let id = stocked.as_ref().map_or_else(Uuid::new_v4, |s| s.id);
        let agent = AgentId(placement.agent_id);
        let mut rec = RunnerRecord::provisioning(
            id,
            &pool.name,
            agent,
            placement.gpus.clone(),
            pool.cpu_limit,
            pool.mem_limit.bytes(),
            self.clock.now_utc(),
        );
        rec.gitlab_runner_id = stocked.as_ref().map(|s| s.gitlab_id);
        self.persist(&rec);
        self.event(
            "runner.created",
            &rec,
            json!({
                "pool": pool.name,
                "agent": hostname,
                "gpus": placement.gpus,
                "image": pool.image_for(placement.arch),
                "image_warm": cold_image.is_none(),
                "from_stock": stocked.is_some(),
            }),
        );
        tracing::info!(runner = %id, pool = %pool.name, agent = %wire(hostname), from_stock = stocked.is_some(), "provisioning runner");
        self.active.insert(
            id,
            Active {
                rec,
                phase_since: Instant::now(),
                idle_since: None,
                placement,
                spec: Some(Arc::new(pool.clone())),
                start: None,
                stop: None,
                cold: cold_image.map(|image| super::ColdStart {
                    image,
                    hostname: hostname.to_owned(),
                }),
            },
        );
        // Either way the agent hears of the runner once its record is
        // committed (see `flush`).
        match stocked {
            Some(s) => {
                self.by_gitlab.insert(s.gitlab_id, id);
                self.taken.push(Op::Created {
                    runner: id,
                    gitlab_id: s.gitlab_id,
                    token: s.token,
                });
            }
            None => {
                let description =
                    ownership::description(&self.cfg.cluster, &pool.name, hostname, &id);
                self.creates
                    .push((id, stock::create_request(&pool, description)));
            }
        }
    }

    /// Pause `pool`'s runner creation after a failed `POST /user/runners`,
    /// twice as long as the last time (at most [`MAX_CREATE_BACKOFF`]).
    pub(super) fn back_off(&mut self, pool: &str, error: &str) {
        let b = self
            .create_backoff
            .entry(pool.to_owned())
            .or_insert(CreateBackoff {
                until: Instant::now(),
                delay: Duration::from_secs(1),
                error: String::new(),
            });
        b.delay = (b.delay * 2).min(MAX_CREATE_BACKOFF);
        b.until = Instant::now() + b.delay;
        b.error = error.to_owned();
        tracing::warn!(%pool, %error, retry_in = ?b.delay, "create GitLab runner failed");
    }

    pub(super) fn delete_gitlab_runner(&self, runner: Option<Uuid>, gitlab_id: u64) {
        let gitlab = self.gitlab.clone();
        let ops = self.ops_tx.clone();
        tokio::spawn(async move {
            let op = match gitlab.delete_runner(gitlab_id).await {
                Ok(()) => Op::Deleted { runner, gitlab_id },
                Err(e) if e.is_not_found() => Op::Deleted { runner, gitlab_id },
                Err(e) => Op::DeleteFailed {
                    gitlab_id,
                    error: e.to_string(),
                },
            };
            let _ = ops.send(op);
        });
    }

    /// Retry failed deletions, then list GitLab's runners for marked ones
    /// without a record.
    pub(super) async fn collect_garbage(&mut self) {
        let gitlab = self.gitlab.clone();
        let cluster = self.cfg.cluster.clone();
        let ops = self.ops_tx.clone();
        tokio::spawn(async move {
            if let Some(found) = ownership::list_ours(gitlab.as_ref(), &cluster).await {
                let _ = ops.send(Op::GcCandidates(found));
            }
        });
        self.retry_deletes().await;
    }

    /// Finished runners whose GitLab deletion has not succeeded yet.
    async fn retry_deletes(&mut self) {
        self.flush_and_wait().await;
        match self.db.undeleted_runners().await {
            Ok(rows) => {
                for r in rows {
                    if let (Some(g), Ok(id)) = (r.gitlab_runner_id, r.id.parse::<Uuid>()) {
                        self.delete_gitlab_runner(Some(id), g as u64);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "list runners awaiting GitLab deletion"),
        }
    }

    pub(super) async fn on_op(&mut self, op: Op) {
        match op {
            Op::Created {
                runner,
                gitlab_id,
                token,
            } => self.on_created(runner, gitlab_id, token).await,
            Op::CreateFailed { runner, error } => {
                let pool = self
                    .active
                    .get(&runner)
                    .map(|a| a.rec.pool.clone())
                    .unwrap_or_default();
                self.back_off(&pool, &error);
                self.finish(
                    runner,
                    Phase::Failed,
                    None,
                    Some(format!("create GitLab runner: {error}")),
                    None,
                )
                .await;
            }
            Op::Stocked {
                runner,
                spec,
                result,
            } => self.on_stocked(runner, spec, result),
            Op::Deleted { runner, gitlab_id } => {
                self.by_gitlab.remove(&gitlab_id);
                let Some(id) = runner else { return };
                // Read what this pass wrote, too (its finish, say).
                self.flush_and_wait().await;
                let row = match self.db.get_runner(&id.to_string()).await {
                    Ok(Some(row)) if row.gitlab_deleted_at.is_none() => row,
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(runner = %id, error = %e, "read runner");
                        return;
                    }
                };
                match RunnerRecord::from_row(&row) {
                    Ok(mut rec) => {
                        rec.gitlab_deleted_at = Some(self.clock.now_utc());
                        self.persist(&rec);
                        self.event(
                            "runner.gitlab_deleted",
                            &rec,
                            json!({"gitlab_runner_id": gitlab_id}),
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "record GitLab deletion"),
                }
            }
            Op::DeleteFailed { gitlab_id, error } => {
                tracing::warn!(gitlab_runner = gitlab_id, %error, "delete GitLab runner failed; will retry");
            }
            Op::GcCandidates(found) => {
                for (gitlab_id, runner) in found {
                    let wanted = runner.is_some_and(|r| self.active.contains_key(&r))
                        || self.by_gitlab.contains_key(&gitlab_id)
                        || self.stock.holds(runner, gitlab_id);
                    if !wanted {
                        tracing::warn!(
                            gitlab_runner = gitlab_id,
                            ?runner,
                            "deleting GitLab runner without a live record"
                        );
                        self.delete_gitlab_runner(runner, gitlab_id);
                    }
                }
            }
        }
    }

    async fn on_created(&mut self, id: Uuid, gitlab_id: u64, token: SecretString) {
        self.by_gitlab.insert(gitlab_id, id);
        let runner_url = self.cfg.runner_url.clone();
        let Some(a) = self.active.get_mut(&id) else {
            // Written off while GitLab was creating it.
            self.delete_gitlab_runner(Some(id), gitlab_id);
            return;
        };
        self.create_backoff.remove(&a.rec.pool);
        a.rec.gitlab_runner_id = Some(gitlab_id);
        if a.stop.is_some() {
            // Asked to stop before it could start: no container exists.
            self.finish(
                id,
                Phase::Failed,
                None,
                Some("stopped before the runner started".into()),
                None,
            )
            .await;
            return;
        }
        let Some(pool) = a.spec.clone() else {
            return;
        };
        match spec::start_runner(&pool, id, &runner_url, &token, &a.placement) {
            Ok(cmd) => {
                if self
                    .fleet
                    .send(&a.rec.agent, start_message(cmd.clone()))
                    .is_err()
                {
                    tracing::warn!(runner = %id, agent = %a.rec.agent, "agent not connected; StartRunner will be sent when it reconnects");
                }
                a.start = Some(cmd);
                let rec = a.rec.clone();
                self.persist(&rec);
                self.event(
                    "runner.gitlab_created",
                    &rec,
                    json!({"gitlab_runner_id": gitlab_id}),
                );
            }
            Err(e) => {
                self.finish(
                    id,
                    Phase::Failed,
                    None,
                    Some(format!("render pool template: {e}")),
                    None,
                )
                .await;
            }
        }
    }

    /// Send a runner's `StartRunner` again (idempotent on the agent).
    pub(super) fn resend_start(&self, id: Uuid) {
        if let Some(a) = self.active.get(&id)
            && let Some(cmd) = &a.start
        {
            let _ = self.fleet.send(&a.rec.agent, start_message(cmd.clone()));
        }
    }
}
