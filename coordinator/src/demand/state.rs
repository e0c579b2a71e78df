//! The pending-job table and the rules that change it: pure logic, no I/O,
//! no clock (every function is told the time), so each rule is unit-tested.
//!
//! Three kinds of observation arrive, each stamped with the moment it was
//! made (`observed`, a monotonic [`Instant`] taken just *before* the request
//! to GitLab went out):
//!
//! - a **hook** ([`JobEvent`]): a status change someone with the webhook
//!   secret pushed. It is a **hint**, never acted on directly: a forged or
//!   replayed delivery (a new `Idempotency-Key` defeats delivery
//!   de-duplication) must not take a pending job out of demand or report a
//!   runner busy. A hook only asks for the job to be fetched, and the fetch
//!   decides. The same hint (job, status, runner) is acted on once
//!   (bounded LRU), so a flood of replays costs one fetch.
//! - a **fetched job** (`GET /projects/:id/jobs/:job_id`): authoritative for
//!   that one job at `observed`.
//! - a **poll** ([`PollResult`]): every pending (and, per project, running)
//!   job of the projects it covers, as of some moment after `started`.
//!
//! Ordering rules, so that late or concurrent answers never undo newer
//! knowledge:
//! - A job absent from a poll is removed only if it was last confirmed
//!   pending *before* the poll started: a job a webhook reported during the
//!   poll stays.
//! - A job that finished is not pending or busy again unless an observation
//!   made after the finish says so (tombstone; GitLab retries a job under a
//!   new id, so in practice only a confirmed pending job comes back).
//! - A job that left the pending state at time `t` (canceled, vanished from
//!   a poll) is re-added only by an observation made after `t`.
//! - A job known to run is never counted as pending again.
//!
//! Each `(runner, job)` is reported [`RunnerActivity::Busy`] once; a job's
//! [`RunnerActivity::Finished`] once. All tables are bounded: `max_jobs`
//! pending jobs, the same number of running jobs, and an LRU of tombstones.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use super::dedup::{LruMap, LruSet};
use super::model::{DemandSnapshot, PendingJob, RunnerActivity, Source};
use crate::gitlab::{Job, JobStatus};
use crate::pools::LivePools;

/// Hints remembered per tracked job slot (bounded by `max_jobs`).
const HINTS_PER_JOB: usize = 4;
/// Tombstones kept per tracked job slot (bounded by `max_jobs`).
const TOMBSTONES_PER_JOB: usize = 2;
/// Fewest tombstones kept, whatever `max_jobs` is.
const MIN_TOMBSTONES: usize = 4096;

/// A status change announced by a Job Hook.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// The job's project.
    pub project_id: u64,
    /// The job.
    pub job_id: u64,
    /// Its new status (`build_status`).
    pub status: JobStatus,
    /// The runner the hook names, once one took the job.
    pub runner_id: Option<u64>,
    /// The job's name.
    pub name: Option<String>,
    /// When GitLab created the job.
    pub created_at: Option<OffsetDateTime>,
}

impl From<&crate::gitlab::webhook::JobHook> for JobEvent {
    fn from(h: &crate::gitlab::webhook::JobHook) -> Self {
        JobEvent {
            project_id: h.project_id,
            job_id: h.build_id,
            status: h.build_status.clone(),
            runner_id: h.runner.as_ref().map(|r| r.id),
            name: h.build_name.clone(),
            created_at: h.build_created_at,
        }
    }
}

/// Which pending jobs a poll is authoritative for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// Every pending job of the instance (GraphQL listing).
    Instance,
    /// Every pending (and running) job of these projects; projects whose
    /// listing failed are absent.
    Projects(BTreeSet<u64>),
}

impl Coverage {
    /// Whether a job of `project_id` would have been listed.
    pub fn covers(&self, project_id: u64) -> bool {
        match self {
            Coverage::Instance => true,
            Coverage::Projects(p) => p.contains(&project_id),
        }
    }
}

/// One completed poll.
#[derive(Debug, Clone)]
pub struct PollResult {
    /// Taken before the first listing request went out.
    pub started: Instant,
    /// Whose pending jobs were listed.
    pub coverage: Coverage,
    /// Pending jobs, plus running jobs when [`Self::running_listed`].
    pub jobs: Vec<Job>,
    /// Whether the running jobs of the covered projects were listed too
    /// (project polling: yes; instance GraphQL: no).
    pub running_listed: bool,
    /// The last result of a poll cycle: every watched project has now been
    /// listed since `started` (moves [`DemandSnapshot::last_poll_started`]).
    pub cycle_done: bool,
}

/// What the tracker must do after a change.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Tell the reconciler.
    pub activity: Vec<RunnerActivity>,
    /// Fetch these `(project, job)` to learn their status, tags or runner.
    pub fetch: Vec<(u64, u64)>,
    /// The pending demand changed (publish a new snapshot).
    pub changed: bool,
}

impl Effects {
    pub(crate) fn merge(&mut self, other: Effects) {
        self.activity.extend(other.activity);
        self.fetch.extend(other.fetch);
        self.changed |= other.changed;
    }
}

#[derive(Debug)]
struct PendingEntry {
    job: PendingJob,
    /// Latest moment the job was known to be pending.
    confirmed: Instant,
}

#[derive(Debug)]
struct RunningEntry {
    project_id: u64,
    runner_id: u64,
    /// Latest moment the job was known to run.
    confirmed: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    /// Reached a final status at `at`: ignore everything older about it.
    Finished { at: Instant },
    /// Stopped being pending at `at` (canceling, or absent from a poll).
    Left { at: Instant },
}

/// The pending-job table.
#[derive(Debug)]
pub struct DemandState {
    pools: LivePools,
    stale_after: time::Duration,
    max_jobs: usize,
    pending: HashMap<u64, PendingEntry>,
    running: HashMap<u64, RunningEntry>,
    gone: LruMap<u64, Gone>,
    /// Hints already acted on: (job, status, runner).
    hints: LruSet<(u64, JobStatus, Option<u64>)>,
    last_poll_started: Option<Instant>,
}

impl DemandState {
    /// An empty table. `stale_after` drops pending jobs older than that;
    /// `max_jobs` bounds the pending and the running table each.
    pub fn new(pools: LivePools, stale_after: Duration, max_jobs: usize) -> Self {
        let max_jobs = max_jobs.max(1);
        DemandState {
            pools,
            stale_after: time::Duration::try_from(stale_after).unwrap_or(time::Duration::MAX),
            max_jobs,
            pending: HashMap::new(),
            running: HashMap::new(),
            last_poll_started: None,
            gone: LruMap::new(
                max_jobs
                    .saturating_mul(TOMBSTONES_PER_JOB)
                    .max(MIN_TOMBSTONES),
            ),
            hints: LruSet::new(max_jobs.saturating_mul(HINTS_PER_JOB).max(MIN_TOMBSTONES)),
        }
    }

    /// Match every pending job against the pools in force again (after a
    /// reload); whether any job's pool changed.
    pub fn repool(&mut self) -> bool {
        let pools = self.pools.current();
        let mut changed = false;
        for e in self.pending.values_mut() {
            changed |= e.job.assign_pool(&pools);
        }
        changed
    }

    /// Number of pending jobs.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Number of jobs known to run on a runner.
    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// Whether `job_id` is pending.
    pub fn is_pending(&self, job_id: u64) -> bool {
        self.pending.contains_key(&job_id)
    }

    /// The snapshot of the pending jobs, with this generation.
    pub fn snapshot(&self, generation: u64) -> DemandSnapshot {
        let mut snap = DemandSnapshot::new(
            generation,
            self.pending
                .values()
                .map(|e| PendingJob {
                    confirmed: e.confirmed.into_std(),
                    ..e.job.clone()
                })
                .collect(),
        );
        snap.last_poll_started = self.last_poll_started.map(Instant::into_std);
        snap
    }

    /// Projects with a pending or running job tracked: polling must cover
    /// them so their jobs are confirmed or removed.
    pub fn projects_of_interest(&self) -> BTreeSet<u64> {
        self.pending
            .values()
            .map(|e| e.job.project_id)
            .chain(self.running.values().map(|e| e.project_id))
            .collect()
    }

    /// Applies a Job Hook: a hint. It never changes the table; it asks for
    /// the job to be fetched when the hint would change what is known, once
    /// per (job, status, runner).
    pub fn on_hook(&mut self, ev: &JobEvent) -> Effects {
        let mut fx = Effects::default();
        if self.is_finished(ev.job_id) {
            return fx;
        }
        let worth_checking = match &ev.status {
            // Tracked pending jobs are confirmed by polls, not by hooks.
            JobStatus::Pending => {
                !self.pending.contains_key(&ev.job_id) && !self.running.contains_key(&ev.job_id)
            }
            JobStatus::Running => match self.running.get(&ev.job_id) {
                Some(e) => ev.runner_id.is_some_and(|r| r != e.runner_id),
                None => true,
            },
            s if s.is_finished() => true,
            JobStatus::Canceling => self.pending.contains_key(&ev.job_id),
            // created, waiting_for_resource, preparing, manual, scheduled come
            // before pending; a pending hook follows when the job is queued.
            // Unknown statuses are left to polling.
            _ => false,
        };
        if worth_checking
            && self
                .hints
                .insert((ev.job_id, ev.status.clone(), ev.runner_id))
        {
            fx.fetch.push((ev.project_id, ev.job_id));
        }
        fx
    }

    /// Whether the job reached a final status.
    fn is_finished(&self, job_id: u64) -> bool {
        matches!(self.gone.peek(&job_id), Some(Gone::Finished { .. }))
    }

    /// Applies a job fetched from GitLab; `observed` is when the request
    /// went out, `wall` the current wall-clock time.
    pub fn on_fetched(
        &mut self,
        job: &Job,
        observed: Instant,
        wall: OffsetDateTime,
        via: Source,
    ) -> Effects {
        match &job.status {
            JobStatus::Pending => Effects {
                changed: self.pending_observed(job, via, observed, wall),
                ..Effects::default()
            },
            JobStatus::Running => self.running_observed(
                job.project_id,
                job.id,
                job.runner.as_ref().map(|r| r.id),
                observed,
            ),
            s if s.is_finished() => self.finished_observed(
                job.project_id,
                job.id,
                s.clone(),
                job.runner.as_ref().map(|r| r.id),
                observed,
            ),
            JobStatus::Canceling => Effects {
                changed: self.left(job.id, observed),
                ..Effects::default()
            },
            _ => Effects::default(),
        }
    }

    /// GitLab says the job does not exist (404): forget it without telling
    /// the reconciler anything.
    pub fn on_fetch_not_found(&mut self, job_id: u64, now: Instant) -> Effects {
        self.running.remove(&job_id);
        Effects {
            changed: self.left(job_id, now),
            ..Effects::default()
        }
    }

    /// Reconciles the table with a completed poll (see the module docs).
    pub fn on_poll(&mut self, poll: &PollResult, now: Instant, wall: OffsetDateTime) -> Effects {
        let mut fx = Effects::default();
        if poll.cycle_done {
            self.last_poll_started = Some(
                self.last_poll_started
                    .map_or(poll.started, |t| t.max(poll.started)),
            );
        }
        let mut listed = HashSet::with_capacity(poll.jobs.len());
        for job in &poll.jobs {
            listed.insert(job.id);
            match job.status {
                JobStatus::Pending => {
                    fx.changed |= self.pending_observed(job, Source::Poll, poll.started, wall);
                }
                JobStatus::Running => fx.merge(self.running_observed(
                    job.project_id,
                    job.id,
                    job.runner.as_ref().map(|r| r.id),
                    poll.started,
                )),
                _ => {}
            }
        }
        // Pending jobs the poll should have listed but did not: they left
        // the queue (taken, canceled, finished) unless a newer observation
        // says otherwise. Fetch each to learn which runner took it.
        let vanished: Vec<(u64, u64)> = self
            .pending
            .values()
            .filter(|e| {
                poll.coverage.covers(e.job.project_id)
                    && !listed.contains(&e.job.job_id)
                    && e.confirmed < poll.started
            })
            .map(|e| (e.job.project_id, e.job.job_id))
            .collect();
        for (project_id, job_id) in vanished {
            fx.changed |= self.left(job_id, poll.started);
            fx.fetch.push((project_id, job_id));
        }
        // Busy jobs no longer listed as running: fetch to learn how they
        // ended (their entry, with the runner id, stays until then).
        if poll.running_listed {
            fx.fetch.extend(
                self.running
                    .iter()
                    .filter(|(id, e)| {
                        poll.coverage.covers(e.project_id)
                            && !listed.contains(id)
                            && e.confirmed < poll.started
                    })
                    .map(|(id, e)| (e.project_id, *id)),
            );
        }
        fx.changed |= self.sweep(now, wall);
        fx
    }

    /// Drops pending jobs older than `stale_after` (by GitLab's creation
    /// time, else by when AutoGit first saw them) and running jobs not
    /// confirmed for that long. Returns whether demand changed.
    pub fn sweep(&mut self, now: Instant, wall: OffsetDateTime) -> bool {
        let stale: Vec<u64> = self
            .pending
            .values()
            .filter(|e| self.is_stale(e.job.created_at.unwrap_or(e.job.seen_at), wall))
            .map(|e| e.job.job_id)
            .collect();
        for job_id in &stale {
            tracing::info!(job_id, "dropping pending job older than stale_after");
            self.left(*job_id, now);
        }
        let limit = Duration::try_from(self.stale_after).unwrap_or(Duration::MAX);
        self.running
            .retain(|_, e| now.saturating_duration_since(e.confirmed) <= limit);
        !stale.is_empty()
    }

    fn is_stale(&self, since: OffsetDateTime, wall: OffsetDateTime) -> bool {
        wall - since > self.stale_after
    }

    /// A source says the job is pending as of `observed`. Returns whether
    /// demand changed.
    fn pending_observed(
        &mut self,
        job: &Job,
        via: Source,
        observed: Instant,
        wall: OffsetDateTime,
    ) -> bool {
        match self.gone.peek(&job.id) {
            Some(Gone::Finished { at } | Gone::Left { at }) if *at > observed => return false,
            _ => {}
        }
        if self.running.contains_key(&job.id) {
            return false;
        }
        if let Some(entry) = self.pending.get_mut(&job.id) {
            entry.confirmed = entry.confirmed.max(observed);
            if entry.job.created_at.is_none() {
                entry.job.created_at = job.created_at;
            }
            return false;
        }
        if job.created_at.is_some_and(|c| self.is_stale(c, wall)) {
            tracing::debug!(
                job_id = job.id,
                "ignoring pending job older than stale_after"
            );
            return false;
        }
        if self.pending.len() >= self.max_jobs {
            tracing::warn!(
                job_id = job.id,
                max_jobs = self.max_jobs,
                "pending-job table full; ignoring job"
            );
            return false;
        }
        let mut pending = PendingJob {
            project_id: job.project_id,
            job_id: job.id,
            name: job.name.clone().unwrap_or_default(),
            tags: job.tag_list.clone(),
            pool: None,
            unmatched_reason: None,
            created_at: job.created_at,
            seen_at: wall,
            via,
            confirmed: observed.into_std(),
        };
        pending.assign_pool(&self.pools.current());
        match &pending.pool {
            Some(pool) => {
                tracing::debug!(job_id = job.id, project_id = job.project_id, %pool, %via, "job pending")
            }
            None => tracing::info!(
                job_id = job.id,
                project_id = job.project_id,
                %via,
                reason = %crate::edge::wire(pending.unmatched_reason.as_deref().unwrap_or_default()),
                "pending job matches no pool"
            ),
        }
        self.gone.remove(&job.id);
        self.pending.insert(
            job.id,
            PendingEntry {
                job: pending,
                confirmed: observed,
            },
        );
        true
    }

    /// A source says the job runs (on `runner_id`, if named) as of
    /// `observed`.
    fn running_observed(
        &mut self,
        project_id: u64,
        job_id: u64,
        runner_id: Option<u64>,
        observed: Instant,
    ) -> Effects {
        let mut fx = Effects::default();
        if matches!(self.gone.peek(&job_id), Some(Gone::Finished { at }) if *at > observed) {
            return fx;
        }
        fx.changed = self.pending.remove(&job_id).is_some();
        let Some(runner_id) = runner_id else {
            // Running without a runner named: not pending any more, but no
            // one to report busy.
            self.gone.insert(job_id, Gone::Left { at: observed });
            return fx;
        };
        match self.running.get_mut(&job_id) {
            Some(e) if e.runner_id == runner_id => e.confirmed = e.confirmed.max(observed),
            _ => {
                if self.running.len() >= self.max_jobs && !self.running.contains_key(&job_id) {
                    tracing::warn!(job_id, "running-job table full; not tracking job");
                } else {
                    self.running.insert(
                        job_id,
                        RunningEntry {
                            project_id,
                            runner_id,
                            confirmed: observed,
                        },
                    );
                }
                self.gone.remove(&job_id);
                fx.activity.push(RunnerActivity::Busy {
                    gitlab_runner_id: runner_id,
                    project_id,
                    job_id,
                });
            }
        }
        fx
    }

    /// A source says the job reached a final status.
    fn finished_observed(
        &mut self,
        project_id: u64,
        job_id: u64,
        status: JobStatus,
        runner_id: Option<u64>,
        observed: Instant,
    ) -> Effects {
        let mut fx = Effects::default();
        if self.is_finished(job_id) {
            return fx;
        }
        fx.changed = self.pending.remove(&job_id).is_some();
        let known = self.running.remove(&job_id).map(|e| e.runner_id);
        self.gone.insert(job_id, Gone::Finished { at: observed });
        if let Some(runner_id) = runner_id.or(known) {
            // A job that ran and ended between two observations (shorter
            // than a fetch): nothing saw it running, so say who took it
            // before saying it ended.
            if known.is_none() {
                fx.activity.push(RunnerActivity::Busy {
                    gitlab_runner_id: runner_id,
                    project_id,
                    job_id,
                });
            }
            fx.activity.push(RunnerActivity::Finished {
                gitlab_runner_id: runner_id,
                job_id,
                status,
            });
        }
        fx
    }

    /// The job stopped being pending at `at`; returns whether it was.
    fn left(&mut self, job_id: u64, at: Instant) -> bool {
        let was = self.pending.remove(&job_id).is_some();
        if !self.is_finished(job_id) {
            self.gone.insert(job_id, Gone::Left { at });
        }
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitlab::JobRunnerRef;
    use crate::scheduler::{Arch, Pool};

    fn pools() -> LivePools {
        LivePools::new(vec![
            Pool::new("cpu", &["linux"], Arch::X86_64),
            Pool::new("gpu", &["linux", "gpu"], Arch::X86_64),
        ])
    }

    fn state() -> DemandState {
        DemandState::new(pools(), Duration::from_secs(24 * 3600), 1000)
    }

    fn job(project_id: u64, id: u64, status: &str, tags: &[&str], runner: Option<u64>) -> Job {
        let value = serde_json::json!({
            "id": id,
            "status": status,
            "tag_list": tags,
            "name": format!("job{id}"),
        });
        let mut job: Job = serde_json::from_value(value).expect("job");
        job.project_id = project_id;
        job.runner = runner.map(|id| JobRunnerRef {
            id,
            description: None,
            runner_type: None,
            is_shared: None,
        });
        job.created_at = Some(OffsetDateTime::now_utc());
        job
    }

    fn hook(project_id: u64, job_id: u64, status: JobStatus, runner: Option<u64>) -> JobEvent {
        JobEvent {
            project_id,
            job_id,
            status,
            runner_id: runner,
            name: None,
            created_at: None,
        }
    }

    fn poll(started: Instant, projects: &[u64], jobs: Vec<Job>) -> PollResult {
        PollResult {
            started,
            coverage: Coverage::Projects(projects.iter().copied().collect()),
            jobs,
            running_listed: true,
            cycle_done: true,
        }
    }

    fn wall() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn a_job_arriving_by_webhook_during_a_poll_is_not_dropped() {
        let mut s = state();
        let t0 = Instant::now();
        // Poll starts at t0 and lists project 1: nothing pending yet.
        let poll_started = t0;
        // Meanwhile a pending hook arrives and the fetch (sent at t0+1s)
        // confirms it pending.
        let fx = s.on_hook(&hook(1, 10, JobStatus::Pending, None));
        assert_eq!(fx.fetch, vec![(1, 10)]);
        let fx = s.on_fetched(
            &job(1, 10, "pending", &["linux"], None),
            t0 + Duration::from_secs(1),
            wall(),
            Source::Webhook,
        );
        assert!(fx.changed);
        // The poll's answer (made before the job was queued) arrives now.
        let fx = s.on_poll(
            &poll(poll_started, &[1], vec![]),
            t0 + Duration::from_secs(2),
            wall(),
        );
        assert!(s.is_pending(10), "confirmed after the poll started: kept");
        assert!(!fx.changed);
        // The next poll, started later, does not list it: now it goes.
        let later = t0 + Duration::from_secs(10);
        let fx = s.on_poll(&poll(later, &[1], vec![]), later, wall());
        assert!(!s.is_pending(10));
        assert!(fx.changed);
        assert_eq!(fx.fetch, vec![(1, 10)], "fetch to learn who took it");
    }

    #[test]
    fn poll_adds_with_pools_and_removes_only_covered_projects() {
        let mut s = state();
        let t0 = Instant::now();
        let fx = s.on_poll(
            &poll(
                t0,
                &[1, 2],
                vec![
                    job(1, 1, "pending", &["linux"], None),
                    job(2, 2, "pending", &["linux", "gpu"], None),
                    job(2, 3, "pending", &[], None),
                ],
            ),
            t0,
            wall(),
        );
        assert!(fx.changed);
        let snap = s.snapshot(1);
        assert_eq!(snap.job(1).and_then(|j| j.pool.as_deref()), Some("cpu"));
        assert_eq!(snap.job(2).and_then(|j| j.pool.as_deref()), Some("gpu"));
        assert_eq!(snap.job(3).and_then(|j| j.pool.as_deref()), None);
        assert!(
            snap.job(3)
                .and_then(|j| j.unmatched_reason.as_ref())
                .is_some()
        );
        assert_eq!(snap.per_pool.get("cpu"), Some(&1));
        assert_eq!(snap.unmatched, 1);
        assert_eq!(snap.job(1).map(|j| j.via), Some(Source::Poll));

        // Project 2's listing failed this time: its jobs stay.
        let t1 = t0 + Duration::from_secs(10);
        s.on_poll(&poll(t1, &[1], vec![]), t1, wall());
        assert!(!s.is_pending(1));
        assert!(s.is_pending(2) && s.is_pending(3));
    }

    #[test]
    fn running_jobs_emit_busy_once_and_finished_once() {
        let mut s = state();
        let t0 = Instant::now();
        s.on_poll(
            &poll(t0, &[1], vec![job(1, 5, "pending", &["linux"], None)]),
            t0,
            wall(),
        );
        let t1 = t0 + Duration::from_secs(1);
        let fx = s.on_poll(
            &poll(t1, &[1], vec![job(1, 5, "running", &["linux"], Some(77))]),
            t1,
            wall(),
        );
        assert!(fx.changed, "no longer pending");
        assert_eq!(
            fx.activity,
            vec![RunnerActivity::Busy {
                gitlab_runner_id: 77,
                project_id: 1,
                job_id: 5
            }]
        );
        // The same running job seen again (poll and hook): no second Busy.
        let t2 = t1 + Duration::from_secs(1);
        let fx = s.on_poll(
            &poll(t2, &[1], vec![job(1, 5, "running", &["linux"], Some(77))]),
            t2,
            wall(),
        );
        assert!(fx.activity.is_empty());
        let fx = s.on_hook(&hook(1, 5, JobStatus::Running, Some(77)));
        assert_eq!(fx, Effects::default(), "nothing new: not even a fetch");
        // A late poll answer (started before) listing it pending is ignored.
        s.on_poll(
            &poll(t0, &[1], vec![job(1, 5, "pending", &["linux"], None)]),
            t2,
            wall(),
        );
        assert!(!s.is_pending(5));
        // It ends: the hook asks GitLab; the answer reports Finished with
        // the runner remembered from Busy.
        let fx = s.on_hook(&hook(1, 5, JobStatus::Success, None));
        assert_eq!(fx.fetch, vec![(1, 5)]);
        assert!(fx.activity.is_empty(), "a hook alone reports nothing");
        let fx = s.on_fetched(
            &job(1, 5, "success", &["linux"], None),
            t2,
            wall(),
            Source::Webhook,
        );
        assert_eq!(
            fx.activity,
            vec![RunnerActivity::Finished {
                gitlab_runner_id: 77,
                job_id: 5,
                status: JobStatus::Success
            }]
        );
        assert_eq!(s.running_len(), 0);
        // Redelivered or late events change nothing.
        assert_eq!(
            s.on_hook(&hook(1, 5, JobStatus::Failed, Some(77))),
            Effects::default()
        );
        assert_eq!(
            s.on_hook(&hook(1, 5, JobStatus::Running, Some(77))),
            Effects::default()
        );
        assert_eq!(
            s.on_hook(&hook(1, 5, JobStatus::Pending, None)),
            Effects::default()
        );
    }

    #[test]
    fn a_job_first_seen_finished_names_its_runner_busy_before_finished() {
        // It ran and ended within one fetch: nothing saw it running.
        let mut s = state();
        let fx = s.on_fetched(
            &job(1, 6, "success", &["linux"], Some(78)),
            Instant::now(),
            wall(),
            Source::Webhook,
        );
        assert_eq!(
            fx.activity,
            vec![
                RunnerActivity::Busy {
                    gitlab_runner_id: 78,
                    project_id: 1,
                    job_id: 6
                },
                RunnerActivity::Finished {
                    gitlab_runner_id: 78,
                    job_id: 6,
                    status: JobStatus::Success
                }
            ]
        );
    }

    #[test]
    fn busy_jobs_missing_from_a_poll_are_fetched_not_forgotten() {
        let mut s = state();
        let t0 = Instant::now();
        s.on_fetched(
            &job(1, 9, "running", &[], Some(3)),
            t0,
            wall(),
            Source::Webhook,
        );
        let t1 = t0 + Duration::from_secs(1);
        let fx = s.on_poll(&poll(t1, &[1], vec![]), t1, wall());
        assert_eq!(fx.fetch, vec![(1, 9)]);
        assert_eq!(s.running_len(), 1);
        let fx = s.on_fetched(&job(1, 9, "failed", &[], Some(3)), t1, wall(), Source::Poll);
        assert_eq!(
            fx.activity,
            vec![RunnerActivity::Finished {
                gitlab_runner_id: 3,
                job_id: 9,
                status: JobStatus::Failed
            }]
        );
    }

    #[test]
    fn a_stale_fetch_does_not_resurrect_a_job_that_started() {
        let mut s = state();
        let t0 = Instant::now();
        // Fetch sent at t0 (job still pending then) ...
        // ... but the running hook is processed first, at t0+1.
        s.on_fetched(
            &job(1, 4, "running", &["linux"], Some(8)),
            t0 + Duration::from_secs(1),
            wall(),
            Source::Webhook,
        );
        let fx = s.on_fetched(
            &job(1, 4, "pending", &["linux"], None),
            t0,
            wall(),
            Source::Webhook,
        );
        assert!(!fx.changed);
        assert!(!s.is_pending(4));
    }

    #[test]
    fn canceled_jobs_leave_and_older_observations_do_not_bring_them_back() {
        let mut s = state();
        let t0 = Instant::now();
        s.on_fetched(
            &job(1, 6, "pending", &["linux"], None),
            t0,
            wall(),
            Source::Webhook,
        );
        let t1 = t0 + Duration::from_secs(1);
        let fx = s.on_hook(&hook(1, 6, JobStatus::Canceled, None));
        assert_eq!(fx.fetch, vec![(1, 6)], "a hook is confirmed first");
        assert!(s.is_pending(6));
        let fx = s.on_fetched(
            &job(1, 6, "canceled", &["linux"], None),
            t1,
            wall(),
            Source::Webhook,
        );
        assert!(fx.changed);
        assert!(fx.activity.is_empty(), "no runner: nothing to report");
        s.on_poll(
            &poll(t0, &[1], vec![job(1, 6, "pending", &["linux"], None)]),
            t1,
            wall(),
        );
        assert!(!s.is_pending(6));
        // A created hook delivered late does not remove a pending job.
        s.on_fetched(
            &job(1, 7, "pending", &["linux"], None),
            t1,
            wall(),
            Source::Webhook,
        );
        assert_eq!(
            s.on_hook(&hook(1, 7, JobStatus::Created, None)),
            Effects::default()
        );
        assert!(s.is_pending(7));
    }

    #[test]
    fn stale_jobs_are_dropped_and_not_re_added() {
        let mut s = DemandState::new(pools(), Duration::from_secs(3600), 10);
        let t0 = Instant::now();
        let now = wall();
        let mut old = job(1, 1, "pending", &["linux"], None);
        old.created_at = Some(now - time::Duration::hours(2));
        let fx = s.on_poll(&poll(t0, &[1], vec![old.clone()]), t0, now);
        assert!(!fx.changed);
        assert!(!s.is_pending(1));
        // One that becomes stale while tracked is swept.
        let mut young = job(1, 2, "pending", &["linux"], None);
        young.created_at = Some(now - time::Duration::minutes(59));
        s.on_poll(&poll(t0, &[1], vec![young]), t0, now);
        assert!(s.is_pending(2));
        assert!(s.sweep(t0, now + time::Duration::minutes(2)));
        assert!(!s.is_pending(2));
    }

    #[test]
    fn tables_are_bounded() {
        let mut s = DemandState::new(pools(), Duration::from_secs(3600), 3);
        let t0 = Instant::now();
        let jobs = (1..=10)
            .map(|i| job(1, i, "pending", &["linux"], None))
            .collect();
        s.on_poll(&poll(t0, &[1], jobs), t0, wall());
        assert_eq!(s.pending_len(), 3);
        assert_eq!(s.projects_of_interest(), BTreeSet::from([1]));
    }

    #[test]
    fn instance_coverage_removes_any_project_and_running_is_not_judged() {
        let mut s = state();
        let t0 = Instant::now();
        s.on_fetched(
            &job(5, 1, "pending", &["linux"], None),
            t0,
            wall(),
            Source::Webhook,
        );
        s.on_fetched(
            &job(6, 2, "running", &[], Some(1)),
            t0,
            wall(),
            Source::Webhook,
        );
        let t1 = t0 + Duration::from_secs(1);
        let fx = s.on_poll(
            &PollResult {
                started: t1,
                coverage: Coverage::Instance,
                jobs: vec![],
                running_listed: false,
                cycle_done: true,
            },
            t1,
            wall(),
        );
        assert!(!s.is_pending(1));
        assert_eq!(fx.fetch, vec![(5, 1)], "only the vanished pending job");
        assert_eq!(s.running_len(), 1);
    }

    #[test]
    fn hooks_are_hints_each_checked_once_and_never_acted_on() {
        let mut s = state();
        let t0 = Instant::now();
        s.on_fetched(
            &job(1, 5, "pending", &["linux"], None),
            t0,
            wall(),
            Source::Poll,
        );
        // A forged "success" and "running": fetch, nothing else.
        for (status, runner) in [(JobStatus::Success, None), (JobStatus::Running, Some(9))] {
            let fx = s.on_hook(&hook(1, 5, status.clone(), runner));
            assert_eq!(fx.fetch, vec![(1, 5)], "{status}");
            assert!(fx.activity.is_empty() && !fx.changed, "{status}");
            assert!(s.is_pending(5), "{status}");
            // Replays of the same hint: not even a fetch.
            assert_eq!(s.on_hook(&hook(1, 5, status, runner)), Effects::default());
        }
        // GitLab says it is still pending: it stays.
        let fx = s.on_fetched(
            &job(1, 5, "pending", &["linux"], None),
            t0 + Duration::from_secs(1),
            wall(),
            Source::Webhook,
        );
        assert!(!fx.changed);
        assert!(s.is_pending(5));
        // A pending hint for a job already tracked needs no fetch.
        assert_eq!(
            s.on_hook(&hook(1, 5, JobStatus::Pending, None)),
            Effects::default()
        );
    }

    #[test]
    fn a_poll_after_a_finish_brings_a_pending_job_back() {
        let mut s = state();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let t2 = t0 + Duration::from_secs(2);
        s.on_fetched(
            &job(1, 8, "pending", &["linux"], None),
            t0,
            wall(),
            Source::Poll,
        );
        s.on_fetched(
            &job(1, 8, "success", &["linux"], None),
            t1,
            wall(),
            Source::Webhook,
        );
        assert!(!s.is_pending(8));
        // A poll that started before the finish cannot bring it back ...
        s.on_poll(
            &poll(t0, &[1], vec![job(1, 8, "pending", &["linux"], None)]),
            t2,
            wall(),
        );
        assert!(!s.is_pending(8));
        // ... one that started after it can: GitLab is the authority.
        s.on_poll(
            &poll(t2, &[1], vec![job(1, 8, "pending", &["linux"], None)]),
            t2,
            wall(),
        );
        assert!(s.is_pending(8), "confirmed pending by a later poll");
    }
}
