//! Which pools can serve a pending job, and which one pool a job is counted
//! for.
//!
//! GitLab gives a job to a runner when the job's tags are a subset of the
//! runner's tags; a job without tags only goes to runners with
//! `run_untagged = true`. Tags are compared exactly (case and all).
//!
//! Several pools may fit one job, but demand must be counted once: a job is
//! counted for the most specific fitting pool (fewest tags beyond the job's),
//! and among equally specific pools the one listed first in the config.
//! Counting decides how many runners to start, not which runner takes which
//! job: any fitting runner may take it.

use std::collections::BTreeMap;

use super::pool::Pool;

/// Whether runners of `pool` can take a job with these tags.
pub fn pool_accepts<S: AsRef<str>>(pool: &Pool, job_tags: &[S]) -> bool {
    if job_tags.is_empty() {
        pool.run_untagged
    } else {
        job_tags.iter().all(|t| pool.has_tag(t.as_ref()))
    }
}

/// Every pool whose runners can take a job with these tags, in config order.
pub fn pools_for_job<'p, S: AsRef<str>>(
    pools: &'p [Pool],
    job_tags: &[S],
) -> impl Iterator<Item = &'p Pool> {
    pools.iter().filter(move |p| pool_accepts(p, job_tags))
}

/// The one pool a job is counted for: the fitting pool with the fewest tags
/// beyond the job's, the first in config order on a tie. `None` when no pool
/// fits.
pub fn pool_for_job<'p, S: AsRef<str>>(pools: &'p [Pool], job_tags: &[S]) -> Option<&'p Pool> {
    pools
        .iter()
        .filter(|p| pool_accepts(p, job_tags))
        // Pool tags are unique (validated), so this counts extra tags.
        .min_by_key(|p| {
            p.tags
                .iter()
                .filter(|t| !job_tags.iter().any(|j| j.as_ref() == t.as_str()))
                .count()
        })
}

/// Pending demand counted per pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    /// Pending jobs per pool name; pools without jobs are absent.
    pub per_pool: BTreeMap<String, u32>,
    /// Pending jobs no pool can serve (GitLab drops them after an hour).
    pub unmatched: u32,
}

/// Counts each pending job (given by its tags) for exactly one pool.
pub fn count_demand<'j, I, S>(pools: &[Pool], jobs: I) -> Demand
where
    I: IntoIterator<Item = &'j [S]>,
    S: AsRef<str> + 'j,
{
    let mut demand = Demand::default();
    for tags in jobs {
        match pool_for_job(pools, tags) {
            Some(pool) => *demand.per_pool.entry(pool.name.clone()).or_default() += 1,
            None => demand.unmatched += 1,
        }
    }
    demand
}
