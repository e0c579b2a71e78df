//! The tracker: the actor that owns the pending-job table
//! ([`DemandState`]) and is the only writer of the published snapshot.
//!
//! It receives webhook events (bounded queue, filled by the HTTP handler),
//! poll results and questions from the poller (bounded command queue), and
//! the results of its own job fetches. A fetch runs as a task of a
//! [`JoinSet`] owned by the actor, at most `fetch_concurrency` at once
//! (semaphore) and at most `max_queued_fetches` queued, one per job: the
//! actor never awaits GitLab, so one slow call delays no other event.
//! Listings of pending jobs have a semaphore of their own of the same size:
//! a finished burst's running/success confirmations, each holding a permit
//! while it waits for the single-job rate budget, must not keep the next
//! burst's pending listing waiting (measured: 0.6 to 4 s before).
//!
//! A pipeline starts many jobs at once, and each sends a `pending` hook.
//! Rather than fetching those jobs one by one, the tracker lists the
//! project's pending jobs once (`GET /projects/:id/jobs?scope[]=pending`)
//! for every `pending` hint that arrives while no listing of that project
//! is out; hints arriving while one is out wait for the next listing, since
//! the one out may predate them. A hinted job the listing does not show
//! (already running, or beyond the pages followed) and every hint of a
//! failed listing fall back to fetching that job.
//!
//! After every change of pending demand it publishes a new
//! [`DemandSnapshot`] and then ticks the generation counter, so a
//! subscriber woken by the tick always reads a snapshot at least that new.
//! Runner activity goes to the reconciler over an unbounded channel; the
//! table's rules report each `(runner, job)` once, so its volume is bounded
//! by the jobs GitLab runs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::{self, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::model::{DemandSnapshot, RunnerActivity, Source};
use super::state::{DemandState, Effects, JobEvent, PollResult};
use super::stats::Counters;
use crate::gitlab::{GitLabError, Job, JobScope, JobStatus, SharedGitLab};
use crate::scheduler::Pool;

/// How often stale jobs are swept even when no poll completes.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What the poller asks of the tracker.
#[derive(Debug)]
pub(crate) enum Command {
    /// A completed poll to reconcile with.
    Poll(PollResult),
    /// Which projects have tracked jobs (the poller covers them too).
    ProjectsOfInterest(oneshot::Sender<BTreeSet<u64>>),
}

/// One finished job fetch.
struct FetchDone {
    project_id: u64,
    job_id: u64,
    /// When the request went out (after waiting for a permit).
    observed: Instant,
    via: Source,
    result: Result<Job, GitLabError>,
}

/// One finished listing of a project's pending jobs.
struct ListingDone {
    project_id: u64,
    /// The hinted jobs this listing answers for.
    hinted: HashSet<u64>,
    observed: Instant,
    result: Result<Vec<Job>, GitLabError>,
}

/// What a task of the tracker's [`JoinSet`] returns.
enum Done {
    Job(Box<FetchDone>),
    Listing(ListingDone),
}

/// What a task is about, to free its slot should it panic.
#[derive(Debug, Clone, Copy)]
enum TaskKey {
    Job(u64),
    Project(u64),
}

/// Where the tracker publishes.
pub(crate) struct Publisher {
    pub snapshot: watch::Sender<Arc<DemandSnapshot>>,
    pub ticks: watch::Sender<u64>,
}

/// The actor's channels and limits.
pub(crate) struct TrackerParts {
    pub gitlab: SharedGitLab,
    pub state: DemandState,
    pub hooks: mpsc::Receiver<JobEvent>,
    pub commands: mpsc::Receiver<Command>,
    pub activity: mpsc::UnboundedSender<RunnerActivity>,
    pub publisher: Publisher,
    pub counters: Arc<Counters>,
    /// Wakes when a reload replaces the pools: pending jobs are matched again.
    pub pools: watch::Receiver<Arc<Vec<Pool>>>,
    pub fetch_concurrency: usize,
    pub max_queued_fetches: usize,
    pub shutdown: CancellationToken,
}

pub(crate) struct Tracker {
    gitlab: SharedGitLab,
    state: DemandState,
    hooks: mpsc::Receiver<JobEvent>,
    commands: mpsc::Receiver<Command>,
    activity: mpsc::UnboundedSender<RunnerActivity>,
    publisher: Publisher,
    generation: u64,
    counters: Arc<Counters>,
    pools: watch::Receiver<Arc<Vec<Pool>>>,
    fetches: JoinSet<Done>,
    in_flight: HashSet<u64>,
    /// Projects with a pending-jobs listing out -> the jobs hinted since it
    /// went out (listed again when it returns).
    listings: HashMap<u64, HashSet<u64>>,
    /// Hinted jobs waiting for or answered by a listing (for the queue bound).
    listed_jobs: usize,
    /// Jobs to fetch once more when their fetch in flight returns: a hint
    /// arrived after that fetch went out, so its answer may predate it.
    refetch: HashSet<u64>,
    /// Task -> what it is about, to free its slot should a task panic.
    tasks: HashMap<task::Id, TaskKey>,
    permits: Arc<Semaphore>,
    /// Listings' own permits (see the module docs).
    listing_permits: Arc<Semaphore>,
    max_queued_fetches: usize,
    shutdown: CancellationToken,
    reconciler_gone_logged: bool,
}

impl Tracker {
    pub fn new(parts: TrackerParts) -> Self {
        Tracker {
            gitlab: parts.gitlab,
            state: parts.state,
            hooks: parts.hooks,
            commands: parts.commands,
            activity: parts.activity,
            publisher: parts.publisher,
            generation: 0,
            counters: parts.counters,
            pools: parts.pools,
            fetches: JoinSet::new(),
            in_flight: HashSet::new(),
            listings: HashMap::new(),
            listed_jobs: 0,
            refetch: HashSet::new(),
            tasks: HashMap::new(),
            permits: Arc::new(Semaphore::new(parts.fetch_concurrency.max(1))),
            listing_permits: Arc::new(Semaphore::new(parts.fetch_concurrency.max(1))),
            max_queued_fetches: parts.max_queued_fetches.max(1),
            shutdown: parts.shutdown,
            reconciler_gone_logged: false,
        }
    }

    /// Runs until the shutdown token fires. Fetches in flight are aborted
    /// when it returns.
    pub async fn run(mut self) {
        let mut sweep = tokio::time::interval_at(Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let fx = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(done) = self.fetches.join_next_with_id(), if !self.fetches.is_empty() => match done {
                    Ok((id, done)) => {
                        self.tasks.remove(&id);
                        match done {
                            Done::Job(done) => self.on_fetch_done(*done),
                            Done::Listing(done) => self.on_listing_done(done),
                        }
                    }
                    Err(e) => {
                        // Only a panic gets here (the set is not aborted while
                        // the actor runs): free the task's slot.
                        match self.tasks.remove(&e.id()) {
                            Some(TaskKey::Job(job_id)) => {
                                self.in_flight.remove(&job_id);
                                self.refetch.remove(&job_id);
                            }
                            Some(TaskKey::Project(project_id)) => {
                                let waiting = self.listings.remove(&project_id).unwrap_or_default();
                                self.listed_jobs = self.listed_jobs.saturating_sub(waiting.len());
                            }
                            None => {}
                        }
                        tracing::error!(error = %e, "GitLab fetch task failed");
                        Effects::default()
                    }
                },
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                Some(ev) = self.hooks.recv() => self.on_hook(&ev),
                Ok(()) = self.pools.changed() => Effects {
                    changed: self.state.repool(),
                    ..Effects::default()
                },
                _ = sweep.tick() => Effects {
                    changed: self.state.sweep(Instant::now(), OffsetDateTime::now_utc()),
                    ..Effects::default()
                },
            };
            self.apply(fx);
        }
        self.fetches.abort_all();
        tracing::debug!("demand tracker stopped");
    }

    fn on_hook(&mut self, ev: &JobEvent) -> Effects {
        tracing::debug!(
            project_id = ev.project_id,
            job_id = ev.job_id,
            status = %crate::edge::wire(ev.status.as_str()),
            runner_id = ev.runner_id,
            "job hook (a hint, confirmed by fetching the job)"
        );
        let mut fx = self.state.on_hook(ev);
        for (project_id, job_id) in std::mem::take(&mut fx.fetch) {
            if ev.status == JobStatus::Pending && !self.in_flight.contains(&job_id) {
                self.list_pending(project_id, job_id);
            } else if self.in_flight.contains(&job_id) {
                self.refetch.insert(job_id);
            } else {
                self.fetch(project_id, job_id, Source::Webhook);
            }
        }
        fx
    }

    fn on_command(&mut self, cmd: Command) -> Effects {
        match cmd {
            Command::Poll(poll) => {
                let mut fx = self
                    .state
                    .on_poll(&poll, Instant::now(), OffsetDateTime::now_utc());
                // A poll re-confirms every pending job (and moves
                // `last_poll_started`): publish even when the set is unchanged.
                fx.changed = true;
                for (project_id, job_id) in std::mem::take(&mut fx.fetch) {
                    self.fetch(project_id, job_id, Source::Poll);
                }
                fx
            }
            Command::ProjectsOfInterest(reply) => {
                // The poller may have given up waiting; nothing to do then.
                let _ = reply.send(self.state.projects_of_interest());
                Effects::default()
            }
        }
    }

    fn on_fetch_done(&mut self, done: FetchDone) -> Effects {
        self.in_flight.remove(&done.job_id);
        if self.refetch.remove(&done.job_id) {
            self.fetch(done.project_id, done.job_id, Source::Webhook);
        }
        Counters::bump(&self.counters.fetches);
        let mut fx = match done.result {
            Ok(job) => {
                self.state
                    .on_fetched(&job, done.observed, OffsetDateTime::now_utc(), done.via)
            }
            Err(GitLabError::NotFound { .. }) => {
                tracing::debug!(
                    project_id = done.project_id,
                    job_id = done.job_id,
                    "job not found in GitLab; forgetting it"
                );
                self.state.on_fetch_not_found(done.job_id, Instant::now())
            }
            Err(e) => {
                Counters::bump(&self.counters.fetch_errors);
                tracing::warn!(
                    project_id = done.project_id,
                    job_id = done.job_id,
                    error = %crate::edge::wire(&e.to_string()),
                    status = e.http_status(),
                    transient = e.is_transient(),
                    "fetch job from GitLab failed; polling will catch up"
                );
                Effects::default()
            }
        };
        // A fetched job never asks for another fetch, but stay general.
        for (project_id, job_id) in std::mem::take(&mut fx.fetch) {
            self.fetch(project_id, job_id, done.via);
        }
        fx
    }

    /// Confirms a `pending` hint through a listing of the project's pending
    /// jobs: a new listing when none is out, else the next one.
    fn list_pending(&mut self, project_id: u64, job_id: u64) {
        if self.queue_full(project_id, job_id) {
            return;
        }
        match self.listings.get_mut(&project_id) {
            Some(waiting) => {
                if waiting.insert(job_id) {
                    self.listed_jobs += 1;
                }
            }
            None => {
                self.listings.insert(project_id, HashSet::new());
                self.listed_jobs += 1;
                self.spawn_listing(project_id, HashSet::from([job_id]));
            }
        }
    }

    fn spawn_listing(&mut self, project_id: u64, hinted: HashSet<u64>) {
        let gitlab = self.gitlab.clone();
        let permits = self.listing_permits.clone();
        let task = self.fetches.spawn(async move {
            // The semaphore is never closed; without a permit, go anyway.
            let _permit = permits.acquire_owned().await.ok();
            let observed = Instant::now();
            let result = gitlab.jobs(project_id, &[JobScope::Pending]).await;
            Done::Listing(ListingDone {
                project_id,
                hinted,
                observed,
                result,
            })
        });
        self.tasks.insert(task.id(), TaskKey::Project(project_id));
    }

    fn on_listing_done(&mut self, done: ListingDone) -> Effects {
        self.listed_jobs = self.listed_jobs.saturating_sub(done.hinted.len());
        Counters::bump(&self.counters.listings);
        let mut fx = Effects::default();
        let mut unconfirmed = done.hinted;
        match done.result {
            Ok(jobs) => {
                let wall = OffsetDateTime::now_utc();
                for job in &jobs {
                    let via = if unconfirmed.remove(&job.id) {
                        Source::Webhook
                    } else {
                        Source::Poll
                    };
                    fx.merge(self.state.on_fetched(job, done.observed, wall, via));
                }
                // A job hinted since this listing went out and listed as
                // pending by it is confirmed too: the hint said no more.
                if let Some(waiting) = self.listings.get_mut(&done.project_id) {
                    let before = waiting.len();
                    for job in &jobs {
                        if job.status == JobStatus::Pending {
                            waiting.remove(&job.id);
                        }
                    }
                    self.listed_jobs = self.listed_jobs.saturating_sub(before - waiting.len());
                }
            }
            Err(e) => {
                Counters::bump(&self.counters.fetch_errors);
                tracing::warn!(
                    project_id = done.project_id,
                    error = %crate::edge::wire(&e.to_string()),
                    status = e.http_status(),
                    "listing a project's pending jobs failed; fetching the hinted jobs one by one"
                );
            }
        }
        // Not listed as pending (running already, or beyond the pages
        // followed), or the listing failed: ask for each job itself.
        for job_id in unconfirmed {
            self.fetch(done.project_id, job_id, Source::Webhook);
        }
        match self.listings.remove(&done.project_id) {
            Some(waiting) if !waiting.is_empty() => {
                self.listings.insert(done.project_id, HashSet::new());
                self.spawn_listing(done.project_id, waiting);
            }
            _ => {}
        }
        for (project_id, job_id) in std::mem::take(&mut fx.fetch) {
            self.fetch(project_id, job_id, Source::Webhook);
        }
        fx
    }

    /// Whether `max_queued_fetches` hinted jobs already wait for a fetch or
    /// a listing; if so, counts and logs that this one is left to polling.
    fn queue_full(&self, project_id: u64, job_id: u64) -> bool {
        let queued = self.in_flight.len() + self.listed_jobs;
        if queued < self.max_queued_fetches {
            return false;
        }
        Counters::bump(&self.counters.fetches_dropped);
        tracing::warn!(
            project_id,
            job_id,
            queued,
            "job fetch queue full; leaving this job to polling"
        );
        true
    }

    /// Starts fetching a job unless it is already being fetched or the
    /// queue is full.
    fn fetch(&mut self, project_id: u64, job_id: u64, via: Source) {
        if self.in_flight.contains(&job_id) {
            return;
        }
        if self.queue_full(project_id, job_id) {
            return;
        }
        self.in_flight.insert(job_id);
        let gitlab = self.gitlab.clone();
        let permits = self.permits.clone();
        let task = self.fetches.spawn(async move {
            // The semaphore is never closed; without a permit, go anyway.
            let _permit = permits.acquire_owned().await.ok();
            let observed = Instant::now();
            let result = gitlab.job(project_id, job_id).await;
            Done::Job(Box::new(FetchDone {
                project_id,
                job_id,
                observed,
                via,
                result,
            }))
        });
        self.tasks.insert(task.id(), TaskKey::Job(job_id));
    }

    /// Publishes the new snapshot first, then the runner activity, so a
    /// reconciler that hears a runner took a job already sees the job gone
    /// (it also discounts jobs its runners hold; see
    /// `runners/reconciler/view.rs::effective_pending`).
    fn apply(&mut self, fx: Effects) {
        if fx.changed {
            self.generation += 1;
            let snap = Arc::new(self.state.snapshot(self.generation));
            tracing::debug!(
                generation = self.generation,
                pending = snap.jobs.len(),
                per_pool = ?snap.per_pool,
                unmatched = snap.unmatched,
                "pending demand changed"
            );
            self.publisher.snapshot.send_replace(snap);
            self.publisher.ticks.send_replace(self.generation);
        }
        for activity in fx.activity {
            tracing::debug!(?activity, "runner activity");
            if self.activity.send(activity).is_err() && !self.reconciler_gone_logged {
                self.reconciler_gone_logged = true;
                tracing::warn!("runner activity receiver dropped; activity is discarded");
            }
        }
    }
}
