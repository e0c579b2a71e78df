//! What the demand module tells the rest of the coordinator: the pending
//! jobs with the pool each is counted for, the per-pool totals, and what
//! GitLab says runners are doing.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use crate::gitlab::JobStatus;
use crate::scheduler::{Pool, pool_for_job};

/// How a job first became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A Job Hook announced it (its tags were then fetched from GitLab).
    Webhook,
    /// A poll of GitLab's API listed it.
    Poll,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Webhook => "webhook",
            Source::Poll => "poll",
        })
    }
}

/// A job waiting for a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingJob {
    /// The job's project.
    pub project_id: u64,
    /// Job id (unique on the GitLab instance).
    pub job_id: u64,
    /// Job name (empty when GitLab did not say).
    pub name: String,
    /// The job's tags: a runner needs all of them.
    pub tags: Vec<String>,
    /// The one pool this job is counted for
    /// ([`pool_for_job`](crate::scheduler::pool_for_job)); `None` when no
    /// pool can serve it.
    pub pool: Option<String>,
    /// Why no pool fits, when [`Self::pool`] is `None`.
    pub unmatched_reason: Option<String>,
    /// When GitLab created the job, if known.
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// When AutoGit first saw it pending.
    #[serde(with = "time::serde::rfc3339")]
    pub seen_at: OffsetDateTime,
    /// How AutoGit first learned of it.
    pub via: Source,
    /// The latest moment GitLab confirmed the job pending (a poll listing or
    /// a fetch). The reconciler uses it to tell whether a runner that ended
    /// without saying which job it took may have taken this one.
    #[serde(skip)]
    pub confirmed: std::time::Instant,
}

impl PendingJob {
    /// Sets [`Self::pool`] and [`Self::unmatched_reason`] from `pools`;
    /// returns whether either changed.
    pub fn assign_pool(&mut self, pools: &[Pool]) -> bool {
        let (pool, reason) = match pool_for_job(pools, &self.tags) {
            Some(pool) => (Some(pool.name.clone()), None),
            None => (None, Some(unmatched_reason(&self.tags))),
        };
        let changed = pool != self.pool || reason != self.unmatched_reason;
        self.pool = pool;
        self.unmatched_reason = reason;
        changed
    }
}

/// Why no pool serves a job with these tags (assuming none does).
pub fn unmatched_reason<S: AsRef<str>>(tags: &[S]) -> String {
    if tags.is_empty() {
        "untagged job, and no pool has run_untagged = true".to_owned()
    } else {
        let list: Vec<&str> = tags.iter().map(AsRef::as_ref).collect();
        format!("no pool's tags cover [{}]", list.join(", "))
    }
}

/// The pending demand at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DemandSnapshot {
    /// Bumped on every change; equals the value
    /// [`DemandHandle::subscribe`](super::DemandHandle::subscribe) ticks to.
    pub generation: u64,
    /// Every pending job, ordered by project then job id.
    pub jobs: Vec<PendingJob>,
    /// Pending jobs per pool name; pools without pending jobs are absent.
    pub per_pool: BTreeMap<String, u32>,
    /// Pending jobs no pool can serve.
    pub unmatched: u32,
    /// When the latest completed poll started: every job still pending was
    /// re-checked against GitLab after that moment.
    #[serde(skip)]
    pub last_poll_started: Option<std::time::Instant>,
}

impl DemandSnapshot {
    /// Builds a snapshot of `jobs` (sorted here).
    pub fn new(generation: u64, mut jobs: Vec<PendingJob>) -> Self {
        jobs.sort_by_key(|j| (j.project_id, j.job_id));
        let mut per_pool = BTreeMap::new();
        let mut unmatched = 0;
        for job in &jobs {
            match &job.pool {
                Some(pool) => *per_pool.entry(pool.clone()).or_default() += 1,
                None => unmatched += 1,
            }
        }
        DemandSnapshot {
            generation,
            jobs,
            per_pool,
            unmatched,
            last_poll_started: None,
        }
    }

    /// The pending job with this id, if any.
    pub fn job(&self, job_id: u64) -> Option<&PendingJob> {
        self.jobs.iter().find(|j| j.job_id == job_id)
    }

    /// Pending jobs counted for `pool`.
    pub fn pending_for(&self, pool: &str) -> u32 {
        self.per_pool.get(pool).copied().unwrap_or(0)
    }
}

/// What the reconciler learns about runners from GitLab's side. Each
/// `(runner, job)` pair is reported `Busy` at most once and `Finished` at
/// most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerActivity {
    /// A runner took a job: it is no longer idle.
    Busy {
        /// GitLab's runner id.
        gitlab_runner_id: u64,
        /// The job's project.
        project_id: u64,
        /// The job it runs.
        job_id: u64,
    },
    /// A job that a known runner ran reached a final status (success,
    /// failed, canceled, skipped). With `run-single --max-builds 1` the
    /// runner exits after it.
    Finished {
        /// GitLab's runner id.
        gitlab_runner_id: u64,
        /// The job.
        job_id: u64,
        /// Its final status.
        status: JobStatus,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Arch;

    #[test]
    fn unmatched_reasons_name_the_tags_or_the_untagged_rule() {
        let pools = vec![Pool::new("cpu", &["linux"], Arch::X86_64)];
        let now = OffsetDateTime::now_utc();
        let job = |tags: &[&str]| {
            let mut job = PendingJob {
                project_id: 1,
                job_id: 2,
                name: "j".into(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                pool: None,
                unmatched_reason: None,
                created_at: None,
                seen_at: now,
                via: Source::Poll,
                confirmed: std::time::Instant::now(),
            };
            job.assign_pool(&pools);
            job
        };
        let gpu = job(&["gpu", "rocm"]);
        assert_eq!(gpu.pool, None);
        assert_eq!(
            gpu.unmatched_reason.as_deref(),
            Some("no pool's tags cover [gpu, rocm]")
        );
        let untagged = job(&[]);
        assert!(
            untagged
                .unmatched_reason
                .as_deref()
                .is_some_and(|r| r.contains("run_untagged")),
            "{untagged:?}"
        );
        let linux = job(&["linux"]);
        assert_eq!(linux.pool.as_deref(), Some("cpu"));
        assert_eq!(linux.unmatched_reason, None);

        let snap = DemandSnapshot::new(3, vec![linux, gpu, untagged]);
        assert_eq!(snap.pending_for("cpu"), 1);
        assert_eq!(snap.unmatched, 2);
        assert_eq!(snap.generation, 3);
    }
}
