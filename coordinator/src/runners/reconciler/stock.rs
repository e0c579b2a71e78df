//! A pool's stock: GitLab runners created ahead of demand (`stock = N` on
//! the pool), so that a start takes one and skips `POST /user/runners` on
//! its critical path. On a real GitLab that call is a Rails request of tens
//! to hundreds of milliseconds, paid once per runner, inside every pickup.
//!
//! * **Bound.** Per pool, stocked plus being created is at most `stock`:
//!   creation is asked only for the difference. A runner that arrives once
//!   it is no longer wanted (a reload lowered `stock`, changed what the pool
//!   registers, or removed the pool) is deleted at once.
//! * **Tokens in memory only.** A stocked runner has no record; its token
//!   lives in this actor until a start takes it. A start records the runner
//!   under the stocked runner's uuid, with its GitLab id, and the agent hears
//!   of it only once that record is committed (the writer sends the
//!   [`Op::Created`] after the commit), as for a runner created on demand.
//! * **Never leaked.** A stocked runner is marked like every AutoGit runner
//!   (`ownership::description`, `agent=stock`). The collector deletes
//!   marked runners that are neither recorded nor stocked here, so the stock
//!   of a coordinator that died (SIGKILL, power loss, lost leadership) is
//!   deleted by the first collection of the coordinator that follows. A
//!   coordinator that shuts down deletes its stock itself; stocked runners
//!   older than [`STOCK_MAX_AGE`] (or half-way to their token's expiry) are
//!   replaced, so a stocked token is never stale.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Op, Reconciler};
use crate::gitlab::{CreateRunner, CreatedRunner, RunnerType as GlRunnerType};
use crate::runners::ownership;
use crate::scheduler::{self, Pool};

/// A stocked GitLab runner is replaced after this long.
pub(super) const STOCK_MAX_AGE: Duration = Duration::from_secs(3600);

/// How long a shutting-down coordinator waits for its stock's deletions
/// (what is left is the next coordinator's collector's).
const SHUTDOWN_DELETE_WAIT: Duration = Duration::from_secs(5);

/// The `agent=` word of a stocked runner's description.
const STOCK_AGENT: &str = "stock";

/// One GitLab runner in stock.
pub(super) struct Stocked {
    /// The uuid in its description; the runner record's id once taken.
    pub id: Uuid,
    pub gitlab_id: u64,
    pub token: SecretString,
    /// The pool as it was when the runner was created: taken only by a pool
    /// that still registers the same runners (see [`registers_same`]).
    spec: Arc<Pool>,
    retire_at: Instant,
}

/// Every pool's stock.
#[derive(Default)]
pub(super) struct Stock {
    ready: BTreeMap<String, VecDeque<Stocked>>,
    /// Being created: stocked runner uuid → pool.
    creating: HashMap<Uuid, String>,
}

impl Stock {
    /// Stocked and being created for `pool`.
    fn len(&self, pool: &str) -> usize {
        self.ready.get(pool).map_or(0, VecDeque::len)
            + self.creating.values().filter(|p| *p == pool).count()
    }

    /// Whether a marked GitLab runner is in stock or being created for it.
    pub fn holds(&self, runner: Option<Uuid>, gitlab_id: u64) -> bool {
        runner.is_some_and(|r| self.creating.contains_key(&r))
            || self
                .ready
                .values()
                .flatten()
                .any(|s| s.gitlab_id == gitlab_id || Some(s.id) == runner)
    }

    /// The oldest stocked runner that `pool` can use.
    pub fn take(&mut self, pool: &Pool) -> Option<Stocked> {
        let q = self.ready.get_mut(&pool.name)?;
        let i = q.iter().position(|s| registers_same(&s.spec, pool))?;
        q.remove(i)
    }

    /// Stocked runners per pool (for the status operators see).
    pub fn counts(&self) -> BTreeMap<String, u32> {
        self.ready
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(p, q)| (p.clone(), q.len() as u32))
            .collect()
    }
}

/// Whether a GitLab runner registered for `made` serves `now`: the same
/// tags, untagged jobs and scope (what `POST /user/runners` was given; the
/// image and the rest are the container's, chosen at start).
fn registers_same(made: &Pool, now: &Pool) -> bool {
    made.tags == now.tags
        && made.run_untagged == now.run_untagged
        && made.runner_type == now.runner_type
}

/// `POST /user/runners` for a runner of `pool` described as `description`.
pub(super) fn create_request(pool: &Pool, description: String) -> CreateRunner {
    let mut req = CreateRunner::new(match pool.runner_type {
        scheduler::RunnerType::Instance => GlRunnerType::InstanceType,
        scheduler::RunnerType::Group { group_id } => GlRunnerType::GroupType { id: group_id },
        scheduler::RunnerType::Project { project_id } => {
            GlRunnerType::ProjectType { id: project_id }
        }
    });
    req.description = Some(description);
    req.tag_list = pool.tags.clone();
    req.run_untagged = Some(pool.run_untagged);
    req.locked = Some(false);
    req.paused = Some(false);
    req
}

impl Reconciler {
    /// Once per pass: delete what no pool wants any more (removed, changed,
    /// shrunk, too old), then create what each pool lacks.
    pub(super) fn tend_stock(&mut self, pools: &[Pool]) {
        let now = Instant::now();
        let mut retire = Vec::new();
        for (name, q) in self.stock.ready.iter_mut() {
            let current = pools.iter().find(|p| &p.name == name);
            q.retain(|s| {
                let keep = now < s.retire_at && current.is_some_and(|p| registers_same(&s.spec, p));
                if !keep {
                    retire.push(s.gitlab_id);
                }
                keep
            });
            let cap = current.map_or(0, |p| p.stock as usize);
            while q.len() > cap {
                retire.extend(q.pop_back().map(|s| s.gitlab_id));
            }
        }
        self.stock.ready.retain(|_, q| !q.is_empty());
        for gitlab_id in retire {
            tracing::info!(
                gitlab_runner = gitlab_id,
                "deleting a stocked GitLab runner no longer wanted"
            );
            self.delete_gitlab_runner(None, gitlab_id);
        }
        for pool in pools.iter().filter(|p| p.stock > 0) {
            if self
                .create_backoff
                .get(&pool.name)
                .is_some_and(|b| now < b.until)
            {
                continue;
            }
            let missing = (pool.stock as usize).saturating_sub(self.stock.len(&pool.name));
            for _ in 0..missing {
                self.create_stocked(pool);
            }
        }
    }

    fn create_stocked(&mut self, pool: &Pool) {
        let id = Uuid::new_v4();
        let req = create_request(
            pool,
            ownership::description(&self.cfg.cluster, &pool.name, STOCK_AGENT, &id),
        );
        self.stock.creating.insert(id, pool.name.clone());
        let spec = Arc::new(pool.clone());
        let gitlab = self.gitlab.clone();
        let ops = self.ops_tx.clone();
        tokio::spawn(async move {
            let result = gitlab.create_runner(&req).await.map_err(|e| e.to_string());
            let _ = ops.send(Op::Stocked {
                runner: id,
                spec,
                result,
            });
        });
    }

    /// A stock creation came back.
    pub(super) fn on_stocked(
        &mut self,
        runner: Uuid,
        spec: Arc<Pool>,
        result: Result<CreatedRunner, String>,
    ) {
        self.stock.creating.remove(&runner);
        let created = match result {
            Ok(c) => c,
            Err(error) => {
                self.back_off(&spec.name, &error);
                return;
            }
        };
        let pools = self.cfg.pools.current();
        let cap = pools
            .iter()
            .find(|p| p.name == spec.name && registers_same(&spec, p))
            .map_or(0, |p| p.stock as usize);
        if self.stock.len(&spec.name) >= cap {
            tracing::info!(pool = %spec.name, gitlab_runner = created.id, "stocked GitLab runner no longer wanted; deleting it");
            self.delete_gitlab_runner(None, created.id);
            return;
        }
        self.create_backoff.remove(&spec.name);
        let mut life = STOCK_MAX_AGE;
        if let Some(expires) = created.token_expires_at {
            let left = (expires - self.clock.now_utc()).max(time::Duration::ZERO);
            life = life.min(Duration::try_from(left / 2).unwrap_or_default());
        }
        tracing::debug!(pool = %spec.name, gitlab_runner = created.id, "GitLab runner stocked");
        self.stock
            .ready
            .entry(spec.name.clone())
            .or_default()
            .push_back(Stocked {
                id: runner,
                gitlab_id: created.id,
                token: created.token,
                spec,
                retire_at: Instant::now() + life,
            });
    }

    /// At shutdown: delete the stock, waiting a few seconds at most. What
    /// is still being created, or not deleted in time, is the collector's
    /// of the next coordinator.
    pub(super) async fn empty_stock(&mut self) {
        let mut deletions = JoinSet::new();
        for s in std::mem::take(&mut self.stock.ready)
            .into_values()
            .flatten()
        {
            let gitlab = self.gitlab.clone();
            deletions.spawn(async move { gitlab.delete_runner(s.gitlab_id).await });
        }
        if deletions.is_empty() {
            return;
        }
        let n = deletions.len();
        let all = async { while deletions.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_DELETE_WAIT, all)
            .await
            .is_err()
        {
            tracing::warn!(
                stocked = n,
                "stocked GitLab runners not all deleted at shutdown; the next coordinator's collector deletes the rest"
            );
        }
    }
}
