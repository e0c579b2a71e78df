//! Demand: which GitLab jobs are waiting for a runner, and which pool each
//! one is counted for.
//!
//! Two sources feed one table, because GitLab's webhooks are fast but can be
//! lost or disabled, and polling is reliable but slow and rate-limited:
//!
//! - **Webhooks** ([`webhook`]): `POST /webhooks/gitlab` receives Job Hooks
//!   (project hooks; group hooks on paid tiers). The handler authenticates
//!   (`X-Gitlab-Token`, constant time), de-duplicates (`Idempotency-Key`,
//!   else `X-Gitlab-Webhook-UUID`), parses, and queues the event; it never
//!   calls GitLab. Without a configured secret every delivery is refused
//!   with 401 (logged once): webhooks are then disabled and polling alone
//!   finds demand.
//! - **Polling** ([`poller`]): always on, every `poll_interval`, lists
//!   pending and running jobs of the watched projects (or, with an admin
//!   token and `instance_jobs`, GraphQL's instance-wide pending jobs),
//!   within a request budget documented there.
//! - **The tracker** ([`tracker`]) is the actor that owns the table
//!   ([`state`], pure rules). A hook is only a **hint**, even with a valid
//!   secret (a replay with a new `Idempotency-Key` passes de-duplication):
//!   it makes the tracker fetch the job, once per distinct (job, status,
//!   runner), and only GitLab's answer changes the table. Pending jobs get
//!   a pool with [`pool_for_job`](crate::scheduler::pool_for_job) (hooks
//!   carry no tags); confirmed running and finished jobs leave the table
//!   and become [`RunnerActivity`]; polls add what hooks missed and remove
//!   what left the queue, never dropping a job that a newer observation
//!   confirmed, and a job a later poll lists as pending is counted again
//!   whatever came before.
//!
//! # Interface
//! ```text
//! let (demand, activity) = demand::spawn(gitlab, pools, cfg, shutdown.clone());
//! let http = http_router.merge(demand::webhook_router(demand.clone()));
//! let mut ticks = demand.subscribe();        // watch::Receiver<u64>
//! while ticks.changed().await.is_ok() {
//!     let snap = demand.snapshot();          // DemandSnapshot { jobs, per_pool, unmatched, generation }
//!     // plan runners from snap.per_pool ...
//! }
//! // activity: mpsc::UnboundedReceiver<RunnerActivity> (Busy / Finished)
//! ```
//!
//! - [`spawn`] starts the tracker and the poller as tasks; both stop when
//!   `shutdown` is cancelled (the tick channel then closes).
//! - [`DemandHandle`] is cheap to clone: [`DemandHandle::snapshot`],
//!   [`DemandHandle::subscribe`] (ticks to the new generation on every
//!   change of pending demand), [`DemandHandle::stats`] (webhook outcomes,
//!   polls, fetches).
//! - [`RunnerActivity::Busy`] is sent once per `(runner, job)`, when GitLab
//!   reports the job running on that runner (hook or poll);
//!   [`RunnerActivity::Finished`] once per job, when it ends and its runner
//!   is known. Finishes are detected by hooks, or by polling in project mode
//!   (a busy job no longer listed as running is fetched); in instance mode
//!   only by hooks.
//!
//! # Which jobs count
//! Only `pending` jobs: `created`, `manual`, `scheduled`,
//! `waiting_for_resource` and `preparing` jobs do not need a runner yet
//! (hooks in those states are ignored; the `pending` hook follows). Jobs
//! created more than `stale_after` ago (default one day, when GitLab itself
//! drops them) are dropped. Hooks are accepted from any project; a project
//! with tracked jobs is polled too, so its jobs are confirmed or removed by
//! polling as well.
//!
//! # Bounds
//! Webhook queue (`webhook_queue`, 503 when full), de-duplication LRU
//! (`dedup_capacity`), job fetches (`fetch_concurrency` at once,
//! `max_queued_fetches` queued), tables (`max_jobs`), request budget
//! (`poll_requests_per_minute`). Every wait is cancelled by `shutdown`.

pub mod config;
pub mod dedup;
pub mod model;
pub mod poller;
pub mod state;
pub mod stats;
pub mod tracker;
pub mod webhook;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use secrecy::SecretString;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use config::{DemandConfig, DemandConfigError, GITLAB_PENDING_TIMEOUT};
pub use model::{DemandSnapshot, PendingJob, RunnerActivity, Source, unmatched_reason};
pub use state::{Coverage, JobEvent, PollResult};
pub use stats::{DemandStats, WebhookOutcome, WebhookStats};
pub use webhook::{MAX_WEBHOOK_BODY, WEBHOOK_PATH, WebhookHeaders, WebhookReply, webhook_router};

use crate::gitlab::SharedGitLab;
use crate::pools::LivePools;
use dedup::LruSet;
use state::DemandState;
use stats::Counters;
use tracker::{Publisher, Tracker, TrackerParts};

/// How often a full webhook queue is logged at most.
const OVERLOAD_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Commands from the poller waiting for the tracker.
const COMMAND_QUEUE: usize = 16;

/// A cheap, cloneable handle to the demand module.
#[derive(Clone)]
pub struct DemandHandle {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: watch::Receiver<Arc<DemandSnapshot>>,
    ticks: watch::Receiver<u64>,
    hooks: mpsc::Sender<JobEvent>,
    webhook_secret: Option<SecretString>,
    dedup: Mutex<LruSet<String>>,
    counters: Arc<Counters>,
    disabled_logged: AtomicBool,
    /// "Queue full" is logged once per interval, with a suppressed count.
    overload_log: crate::edge::RefusalLog<()>,
}

impl std::fmt::Debug for DemandHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemandHandle")
            .field("generation", &*self.inner.ticks.borrow())
            .field("webhooks_enabled", &self.inner.webhook_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl DemandHandle {
    /// The current pending demand.
    pub fn snapshot(&self) -> DemandSnapshot {
        self.inner.snapshot.borrow().as_ref().clone()
    }

    /// The current pending demand, shared rather than copied.
    pub fn snapshot_arc(&self) -> Arc<DemandSnapshot> {
        self.inner.snapshot.borrow().clone()
    }

    /// A receiver that wakes on every change of pending demand after this
    /// call; its value is the snapshot generation. `changed()` fails once
    /// the tracker has stopped.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.inner.ticks.clone();
        rx.mark_unchanged();
        rx
    }

    /// Counters: webhook deliveries by outcome, polls, fetches.
    pub fn stats(&self) -> DemandStats {
        self.inner.counters.read()
    }

    /// Whether webhooks are accepted (a secret is configured).
    pub fn webhooks_enabled(&self) -> bool {
        self.inner.webhook_secret.is_some()
    }
}

/// Starts the tracker and the poller. They run until `shutdown` is
/// cancelled. `cfg` should have passed [`DemandConfig::validate`]; zero
/// sizes are raised to 1 here rather than failing.
pub fn spawn(
    gitlab: SharedGitLab,
    pools: LivePools,
    cfg: DemandConfig,
    shutdown: CancellationToken,
) -> (DemandHandle, mpsc::UnboundedReceiver<RunnerActivity>) {
    let cfg = Arc::new(cfg);
    let counters = Arc::new(Counters::default());
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(DemandSnapshot::default()));
    let (ticks_tx, ticks_rx) = watch::channel(0u64);
    let (hooks_tx, hooks_rx) = mpsc::channel(cfg.webhook_queue.max(1));
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (activity_tx, activity_rx) = mpsc::unbounded_channel();

    let tracker = Tracker::new(TrackerParts {
        gitlab: gitlab.clone(),
        pools: pools.subscribe(),
        state: DemandState::new(pools, cfg.stale_after, cfg.max_jobs),
        hooks: hooks_rx,
        commands: commands_rx,
        activity: activity_tx,
        publisher: Publisher {
            snapshot: snapshot_tx,
            ticks: ticks_tx,
        },
        counters: counters.clone(),
        fetch_concurrency: cfg.fetch_concurrency,
        max_queued_fetches: cfg.max_queued_fetches,
        shutdown: shutdown.clone(),
    });
    tokio::spawn(tracker.run());
    let poller = poller::Poller::new(gitlab, cfg.clone(), commands_tx, counters.clone(), shutdown);
    tokio::spawn(poller.run());

    let handle = DemandHandle {
        inner: Arc::new(Inner {
            snapshot: snapshot_rx,
            ticks: ticks_rx,
            hooks: hooks_tx,
            webhook_secret: cfg.webhook_secret.clone(),
            dedup: Mutex::new(LruSet::new(cfg.dedup_capacity.max(1))),
            counters,
            disabled_logged: AtomicBool::new(false),
            overload_log: crate::edge::RefusalLog::new(OVERLOAD_LOG_INTERVAL, 1),
        }),
    };
    if !handle.webhooks_enabled() {
        tracing::info!(
            "no demand.webhook_secret configured: GitLab webhooks are refused; polling finds demand"
        );
    }
    (handle, activity_rx)
}

/// A handle whose tracker is the test itself: it reads (or does not read)
/// the returned receiver.
#[cfg(test)]
pub(crate) fn test_handle(
    secret: Option<&str>,
    queue: usize,
) -> (DemandHandle, mpsc::Receiver<JobEvent>) {
    let (_snapshot_tx, snapshot) = watch::channel(Arc::new(DemandSnapshot::default()));
    let (_ticks_tx, ticks) = watch::channel(0);
    let (hooks, rx) = mpsc::channel(queue);
    let handle = DemandHandle {
        inner: Arc::new(Inner {
            snapshot,
            ticks,
            hooks,
            webhook_secret: secret.map(SecretString::from),
            dedup: Mutex::new(LruSet::new(16)),
            counters: Arc::new(Counters::default()),
            disabled_logged: AtomicBool::new(false),
            overload_log: crate::edge::RefusalLog::new(OVERLOAD_LOG_INTERVAL, 1),
        }),
    };
    (handle, rx)
}
