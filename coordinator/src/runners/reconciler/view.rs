//! The pure pieces of a pass: pending demand corrected for runners that may
//! have consumed a job, and the conversion of runners to the scheduler's
//! view (agents come typed from `Fleet::scheduler_view`).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant as StdInstant;

use time::OffsetDateTime;

use super::Active;
use crate::demand::DemandSnapshot;
use crate::runners::Phase;
use crate::scheduler;

/// Pending jobs per pool, less the jobs an active runner is known to hold
/// and the jobs that runners which ended without saying which job they took
/// may have consumed.
///
/// A job in `taken` is not demand even if the snapshot still lists it: the
/// reconciler may hear that a runner took a job before the demand snapshot
/// that drops it, and counting it twice would start a runner nobody needs.
///
/// A runner that ran and ended at time `c` without a known job (its Job Hook
/// `running` was lost and no poll saw it running) probably took one of its
/// pool's pending jobs. Each such credit cancels one pending job that GitLab
/// last confirmed pending *before* `c` (oldest first); jobs confirmed after
/// `c` are real demand. A completed poll that started after `c` re-checked
/// every job, so such credits expire. Without this, polling-only demand would
/// briefly still count finished jobs and start runners nobody needs.
pub fn effective_pending(
    snap: &DemandSnapshot,
    taken: &HashSet<u64>,
    credits: &mut Vec<(String, StdInstant)>,
) -> BTreeMap<String, u32> {
    if let Some(polled) = snap.last_poll_started {
        credits.retain(|(_, c)| *c > polled);
    }
    let mut confirmed: BTreeMap<&str, Vec<StdInstant>> = BTreeMap::new();
    for j in snap.jobs.iter().filter(|j| !taken.contains(&j.job_id)) {
        if let Some(p) = &j.pool {
            confirmed.entry(p.as_str()).or_default().push(j.confirmed);
        }
    }
    let mut out = BTreeMap::new();
    for (pool, mut jobs) in confirmed {
        jobs.sort();
        let mut cs: Vec<StdInstant> = credits
            .iter()
            .filter(|(p, _)| p == pool)
            .map(|(_, c)| *c)
            .collect();
        cs.sort();
        let mut matched = 0;
        for c in cs {
            if matched < jobs.len() && jobs[matched] < c {
                matched += 1;
            }
        }
        out.insert(pool.to_string(), (jobs.len() - matched) as u32);
    }
    out
}

/// The scheduler's view of an active runner.
pub(super) fn to_sched_runner(a: &Active, now: OffsetDateTime) -> scheduler::RunnerView {
    let state = match a.rec.phase {
        Phase::Provisioning | Phase::Starting => scheduler::RunnerState::Provisioning,
        Phase::Idle => scheduler::RunnerState::Idle {
            since: a.idle_since.unwrap_or(now),
        },
        Phase::Busy => scheduler::RunnerState::Busy,
        _ => scheduler::RunnerState::Stopping,
    };
    scheduler::RunnerView {
        id: a.rec.id,
        pool: a.rec.pool.clone(),
        agent_id: a.rec.agent.0,
        gpus: a.placement.gpus.clone(),
        cpu: a.rec.cpu,
        memory: a.rec.memory_bytes,
        state,
        created_at: a.rec.created_at,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::demand::{PendingJob, Source};

    fn job(job_id: u64, pool: &str, confirmed: StdInstant) -> PendingJob {
        PendingJob {
            project_id: 1,
            job_id,
            name: String::new(),
            tags: vec![],
            pool: Some(pool.into()),
            unmatched_reason: None,
            created_at: None,
            seen_at: OffsetDateTime::UNIX_EPOCH,
            via: Source::Poll,
            confirmed,
        }
    }

    #[test]
    fn a_runner_that_ended_cancels_one_older_job_of_its_pool_only() {
        let t0 = StdInstant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let snap = DemandSnapshot::new(
            1,
            vec![job(1, "a", at(0)), job(2, "a", at(10)), job(3, "b", at(0))],
        );
        // Ended at 5 s: job 1 (confirmed at 0) may be the one it took; job 2
        // was confirmed pending after it ended, so it is real demand.
        let mut credits = vec![("a".to_string(), at(5))];
        let p = effective_pending(&snap, &HashSet::new(), &mut credits);
        assert_eq!(p["a"], 1);
        assert_eq!(p["b"], 1, "another pool's demand is untouched");
        // Two credits, but only one job older than either.
        let mut credits = vec![("a".to_string(), at(5)), ("a".to_string(), at(6))];
        assert_eq!(
            effective_pending(&snap, &HashSet::new(), &mut credits)["a"],
            1
        );
    }

    #[test]
    fn a_poll_started_after_the_runner_ended_expires_its_credit() {
        let t0 = StdInstant::now();
        let mut snap = DemandSnapshot::new(1, vec![job(1, "a", t0)]);
        snap.last_poll_started = Some(t0 + Duration::from_secs(10));
        let mut credits = vec![("a".to_string(), t0 + Duration::from_secs(5))];
        assert_eq!(
            effective_pending(&snap, &HashSet::new(), &mut credits)["a"],
            1
        );
        assert!(credits.is_empty(), "the poll re-checked every job");
    }

    #[test]
    fn a_job_a_runner_holds_is_not_demand_even_while_the_snapshot_lists_it() {
        let t0 = StdInstant::now();
        let snap = DemandSnapshot::new(1, vec![job(1, "a", t0), job(2, "a", t0)]);
        let p = effective_pending(&snap, &HashSet::from([1]), &mut Vec::new());
        assert_eq!(p["a"], 1, "only job 2 still needs a runner");
        let p = effective_pending(&snap, &HashSet::from([1, 2]), &mut Vec::new());
        assert_eq!(p.get("a").copied().unwrap_or(0), 0);
    }
}
