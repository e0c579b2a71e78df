//! The poller: the safety net that finds demand without webhooks.
//!
//! Every `poll_interval` it lists, for each watched project,
//! `GET /projects/:id/jobs?scope[]=pending&scope[]=running` (or, in instance
//! mode, the GraphQL listing of every pending job) and hands the result to
//! the tracker, which reconciles (see [`super::state`]). Watched projects
//! are the configured list, or the token's member projects (re-listed every
//! `project_refresh_polls` polls), plus every project the tracker holds a
//! job for.
//!
//! Errors never stop the loop: a failed listing leaves that project out of
//! the poll's coverage (its jobs keep their previous state), is logged with
//! the typed [`GitLabError`] (once per change of error, not on every poll),
//! and the other projects are polled as usual. A 429 with `Retry-After`
//! pauses the poller for that long.
//!
//! # Request budget
//! GitLab allows 600 job-listing requests per minute per user by default.
//! The poller spaces its requests `60 s / poll_requests_per_minute` apart
//! (default 300 per minute, so 200 ms), sequentially, counting a listing of
//! `n` jobs as `max(1, ceil(n / 100))` requests (the client's pages of 100).
//! Per minute it makes about
//!
//! ```text
//! projects × pages × polls_per_minute  +  ceil(projects / 100) / project_refresh_polls × polls_per_minute
//! ```
//!
//! with `polls_per_minute = 60 / poll_interval` (6 at 10 s). At the
//! defaults, up to 50 single-page projects fit in one 10 s poll (300 / 6);
//! beyond that a poll simply takes longer (200 projects: one poll every
//! 40 s), so the budget holds whatever the number of projects. Webhook job
//! fetches and runner management use the rest of GitLab's 600, and the
//! GitLab client's own limiter (600/min for all calls together) is the hard
//! cap.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::DemandConfig;
use super::state::{Coverage, PollResult};
use super::stats::Counters;
use super::tracker::Command;
use crate::gitlab::{GitLabError, Job, JobScope, JobStatus, SharedGitLab};

/// Items per page of GitLab listings (the client asks for 100).
const PAGE_SIZE: usize = 100;

/// How pending jobs are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `GET /projects/:id/jobs` per watched project.
    Projects,
    /// GraphQL `jobs(statuses: [PENDING])` (administrators only).
    Instance,
}

/// Which listing failed, for logging each failure once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    User,
    Members,
    Instance,
    Project(u64),
}

pub(crate) struct Poller {
    gitlab: SharedGitLab,
    cfg: Arc<DemandConfig>,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    /// Earliest moment the next request may go out.
    next_request: Instant,
    /// The error last logged per failing target.
    failing: HashMap<Target, String>,
}

impl Poller {
    pub fn new(
        gitlab: SharedGitLab,
        cfg: Arc<DemandConfig>,
        commands: mpsc::Sender<Command>,
        counters: Arc<Counters>,
        shutdown: CancellationToken,
    ) -> Self {
        Poller {
            gitlab,
            cfg,
            commands,
            counters,
            shutdown,
            next_request: Instant::now(),
            failing: HashMap::new(),
        }
    }

    /// Polls until the shutdown token fires.
    pub async fn run(mut self) {
        let interval = self.cfg.poll_interval.max(Duration::from_millis(100));
        let refresh_every = u64::from(self.cfg.project_refresh_polls.max(1));
        let mut mode = Mode::Projects;
        let mut mode_known = !self.cfg.instance_jobs;
        let mut members: Option<Vec<u64>> = None;
        let mut polls: u64 = 0;
        loop {
            let cycle = Instant::now();
            let refresh_due = polls.checked_rem(refresh_every) == Some(0);
            if !mode_known || (self.cfg.instance_jobs && refresh_due) {
                match self.check_admin().await {
                    Some(Some(new_mode)) => {
                        if new_mode != mode || !mode_known {
                            log_mode(new_mode);
                        }
                        mode = new_mode;
                        mode_known = true;
                    }
                    Some(None) => {} // unknown yet: project polling, ask again next poll
                    None => return,
                }
            }
            let result = match mode {
                Mode::Instance => match self.poll_instance().await {
                    Some(Ok(result)) => Some(result),
                    Some(Err(())) => {
                        // No longer allowed: fall back until the next check.
                        mode = Mode::Projects;
                        mode_known = false;
                        None
                    }
                    None => return,
                },
                Mode::Projects => {
                    if self.cfg.projects.is_none() && (members.is_none() || refresh_due) {
                        match self.member_projects().await {
                            Some(Some(ids)) => members = Some(ids),
                            Some(None) => {}
                            None => return,
                        }
                    }
                    let configured = self.cfg.projects.clone().or_else(|| members.clone());
                    match self.poll_projects(configured.unwrap_or_default()).await {
                        Some(result) => Some(result),
                        None => return,
                    }
                    // (each project's jobs were already handed over as listed)
                }
            };
            if let Some(result) = result
                && self.hand_over(result).await.is_none()
            {
                return;
            }
            polls += 1;
            Counters::bump(&self.counters.polls);
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(cycle + interval) => {}
            }
        }
    }

    /// `Some(Some(mode))` once `GET /user` answered, `Some(None)` if it
    /// failed, `None` on shutdown.
    async fn check_admin(&mut self) -> Option<Option<Mode>> {
        let gitlab = self.gitlab.clone();
        let user = self.call(Target::User, 1, gitlab.current_user()).await?;
        Some(
            user.map(|u| {
                if u.is_admin {
                    Mode::Instance
                } else {
                    tracing::warn!(
                        username = %crate::edge::wire(&u.username),
                        "demand.instance_jobs needs an administrator's token (GitLab lists \
                         instance jobs only for admins); polling the token's projects instead"
                    );
                    Mode::Projects
                }
            })
            .ok(),
        )
    }

    /// `Some(Ok)` with the poll, `Some(Err)` when GitLab refuses the query
    /// (not an admin any more), `None` on shutdown. Other errors yield an
    /// empty-coverage poll (nothing is removed).
    async fn poll_instance(&mut self) -> Option<Result<PollResult, ()>> {
        let started = Instant::now();
        let gitlab = self.gitlab.clone();
        let result = self
            .call_paged(Target::Instance, gitlab.instance_pending_jobs())
            .await?;
        Some(match result {
            Ok(jobs) => Ok(PollResult {
                started,
                coverage: Coverage::Instance,
                jobs: jobs
                    .into_iter()
                    .filter(|j| j.status == JobStatus::Pending)
                    .collect(),
                running_listed: false,
                cycle_done: true,
            }),
            Err(GitLabError::Forbidden { .. } | GitLabError::Unauthorized { .. }) => Err(()),
            Err(_) => Ok(PollResult {
                started,
                coverage: Coverage::Projects(BTreeSet::new()),
                jobs: Vec::new(),
                running_listed: false,
                cycle_done: true,
            }),
        })
    }

    /// Member project ids, `Some(None)` on failure, `None` on shutdown.
    async fn member_projects(&mut self) -> Option<Option<Vec<u64>>> {
        let gitlab = self.gitlab.clone();
        let projects = self
            .call_paged(Target::Members, gitlab.member_projects())
            .await?;
        Some(projects.ok().map(|ps| {
            tracing::debug!(projects = ps.len(), "member projects listed");
            ps.into_iter().map(|p| p.id).collect()
        }))
    }

    /// Give a poll result to the tracker; `None` on shutdown or when the
    /// tracker is gone.
    async fn hand_over(&self, result: PollResult) -> Option<()> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            sent = self.commands.send(Command::Poll(result)) => {
                if sent.is_err() {
                    tracing::debug!("demand tracker gone; poller stops");
                    return None;
                }
                Some(())
            }
        }
    }

    /// Lists pending and running jobs of every watched project, handing each
    /// project's jobs to the tracker as soon as they are listed (so a job in
    /// the last of many projects does not wait for the whole cycle); returns
    /// the closing result of the cycle. `None` on shutdown.
    async fn poll_projects(&mut self, configured: Vec<u64>) -> Option<PollResult> {
        let started = Instant::now();
        let mut watched: BTreeSet<u64> = configured.into_iter().collect();
        watched.extend(self.projects_of_interest().await?);
        for project_id in watched {
            let mut covered = BTreeSet::new();
            let mut jobs = Vec::new();
            let gitlab = self.gitlab.clone();
            let listed = self
                .call_paged(
                    Target::Project(project_id),
                    gitlab.jobs(project_id, &[JobScope::Pending, JobScope::Running]),
                )
                .await?;
            match listed {
                Ok(list) => {
                    covered.insert(project_id);
                    jobs.extend(list.into_iter().filter(|j: &Job| {
                        matches!(j.status, JobStatus::Pending | JobStatus::Running)
                    }));
                }
                // The project is gone or invisible: so are its jobs.
                Err(GitLabError::NotFound { .. }) => {
                    covered.insert(project_id);
                }
                Err(_) => {}
            }
            self.hand_over(PollResult {
                started,
                coverage: Coverage::Projects(covered),
                jobs,
                running_listed: true,
                cycle_done: false,
            })
            .await?;
        }
        Some(PollResult {
            started,
            coverage: Coverage::Projects(BTreeSet::new()),
            jobs: Vec::new(),
            running_listed: true,
            cycle_done: true,
        })
    }

    /// Asks the tracker which projects it holds jobs for; `None` on
    /// shutdown (or when the tracker is gone).
    async fn projects_of_interest(&self) -> Option<BTreeSet<u64>> {
        let (tx, rx) = oneshot::channel();
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            asked = async {
                self.commands.send(Command::ProjectsOfInterest(tx)).await.ok()?;
                rx.await.ok()
            } => asked,
        }
    }

    /// A listing call: paced, cancellable, logged; counts its pages by the
    /// number of items it returned.
    async fn call_paged<T>(
        &mut self,
        target: Target,
        call: impl Future<Output = Result<Vec<T>, GitLabError>>,
    ) -> Option<Result<Vec<T>, GitLabError>> {
        self.pace().await?;
        let result = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return None,
            r = call => r,
        };
        let pages = match &result {
            Ok(items) => items.len().div_ceil(PAGE_SIZE).max(1),
            Err(_) => 1,
        };
        self.spend(pages as u32, result.as_ref().err());
        self.outcome(target, result.as_ref().err());
        Some(result)
    }

    /// A single-request call: paced, cancellable, logged.
    async fn call<T>(
        &mut self,
        target: Target,
        requests: u32,
        call: impl Future<Output = Result<T, GitLabError>>,
    ) -> Option<Result<T, GitLabError>> {
        self.pace().await?;
        let result = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return None,
            r = call => r,
        };
        self.spend(requests, result.as_ref().err());
        self.outcome(target, result.as_ref().err());
        Some(result)
    }

    /// Waits until the next request may go out; `None` on shutdown.
    async fn pace(&self) -> Option<()> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            _ = tokio::time::sleep_until(self.next_request) => Some(()),
        }
    }

    /// Books `requests` against the budget; honours a 429's `Retry-After`.
    fn spend(&mut self, requests: u32, error: Option<&GitLabError>) {
        let mut next = Instant::now() + self.cfg.request_gap() * requests;
        if let Some(GitLabError::RateLimited {
            retry_after: Some(wait),
            ..
        }) = error
        {
            // Never sleep longer than a poll interval's worth of minutes on
            // the word of one header.
            let wait = (*wait).min(Duration::from_secs(600));
            next = next.max(Instant::now() + wait);
        }
        self.next_request = next;
    }

    /// Logs a failure once per change of error, and a recovery once.
    fn outcome(&mut self, target: Target, error: Option<&GitLabError>) {
        match error {
            None => {
                if let Some(previous) = self.failing.remove(&target) {
                    tracing::info!(?target, %previous, "GitLab listing works again");
                }
            }
            Some(e) => {
                Counters::bump(&self.counters.poll_errors);
                let text = e.to_string();
                let repeated = self.failing.get(&target) == Some(&text);
                if repeated {
                    tracing::debug!(?target, error = %crate::edge::wire(&text), "GitLab listing still failing");
                } else {
                    tracing::warn!(
                        ?target,
                        error = %crate::edge::wire(&text),
                        status = e.http_status(),
                        transient = e.is_transient(),
                        "GitLab listing failed; keeping the previous state for it"
                    );
                    self.failing.insert(target, text);
                }
            }
        }
    }
}

fn log_mode(mode: Mode) {
    match mode {
        Mode::Instance => {
            tracing::info!("polling every pending job of the instance (GraphQL, admin token)")
        }
        Mode::Projects => tracing::info!("polling pending jobs per project"),
    }
}
