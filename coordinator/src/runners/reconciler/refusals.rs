//! Host-policy refusals: an agent refused a pool's `StartRunner` because its
//! owner's `[policy]` forbids part of the spec (the reason starts with
//! [`REFUSAL_PREFIX`]). Asking again cannot help until the pool or the
//! policy changes, so the pass plans that pool as if the agent were
//! cordoned, and "why pending" names the rule.
//!
//! A refusal is keyed by (pool, agent) and remembers a digest of the pool's
//! config: a changed pool is tried again at once. A changed policy shows
//! only when the agent is asked again, which happens once per
//! [`RETRY_AFTER`] (or after a coordinator restart).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::scheduler::{self, AgentView, Plan, PlanInput, Pool};

/// How the agent's refusal reason starts (`agent/src/policy.rs`).
pub const REFUSAL_PREFIX: &str = "refused by host policy: ";

/// How long a refusal holds before the agent is asked once more.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct Refusal {
    pool_digest: u64,
    hostname: String,
    rule: String,
    until: Instant,
}

/// The refusals in force, per (pool, agent).
#[derive(Debug, Default)]
pub(super) struct Refusals(HashMap<(String, Uuid), Refusal>);

/// A digest of what the pool's runners are made of: a schedule window or a
/// reload that only resizes the pool keeps the refusal.
fn digest(pool: &Pool) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(&pool.runner_spec())
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

impl Refusals {
    /// Record `reason` if it is a host-policy refusal; true when it was.
    pub(super) fn record(
        &mut self,
        pool: Option<&Pool>,
        agent: Uuid,
        hostname: &str,
        reason: &str,
        now: Instant,
    ) -> bool {
        let (Some(pool), Some(rule)) = (pool, reason.strip_prefix(REFUSAL_PREFIX)) else {
            return false;
        };
        let r = Refusal {
            pool_digest: digest(pool),
            hostname: hostname.to_owned(),
            rule: rule.to_owned(),
            until: now + RETRY_AFTER,
        };
        self.0.insert((pool.name.clone(), agent), r);
        true
    }

    /// Drop refusals that expired or whose pool changed or went away; the
    /// rest, per pool: agent → "refused by host policy on <host>: <rule>".
    pub(super) fn live(
        &mut self,
        pools: &[Pool],
        now: Instant,
    ) -> BTreeMap<String, BTreeMap<Uuid, String>> {
        self.0.retain(|(name, _), r| {
            now < r.until
                && pools
                    .iter()
                    .any(|p| &p.name == name && digest(p) == r.pool_digest)
        });
        let mut out: BTreeMap<String, BTreeMap<Uuid, String>> = BTreeMap::new();
        for ((pool, agent), r) in &self.0 {
            out.entry(pool.clone()).or_default().insert(
                *agent,
                format!("refused by host policy on {}: {}", r.hostname, r.rule),
            );
        }
        out
    }
}

/// [`scheduler::plan`] with each refused (pool, agent) pair left out: pools
/// without refusals are planned together as usual; each pool with refusals
/// is planned on its own, with its refusing agents cordoned. A pool left
/// unmet there is reported with the refusal as its reason.
pub(super) fn plan_around(
    input: &PlanInput,
    refused: &BTreeMap<String, BTreeMap<Uuid, String>>,
) -> Plan {
    if refused.is_empty() {
        return scheduler::plan(input);
    }
    let is_refused = |pool: &str| refused.contains_key(pool);
    let mut rest = input.clone();
    rest.pools.retain(|p| !is_refused(&p.name));
    rest.runners.retain(|r| !is_refused(&r.pool));
    let mut plan = scheduler::plan(&rest);
    for pool in input.pools.iter().filter(|p| is_refused(&p.name)) {
        let agents = &refused[&pool.name];
        let mut one = input.clone();
        one.pools = vec![pool.clone()];
        one.runners.retain(|r| r.pool == pool.name);
        one.agents = input
            .agents
            .iter()
            .cloned()
            .map(|a| cordon_if(a, agents))
            .collect();
        let p = scheduler::plan(&one);
        plan.starts.extend(p.starts);
        plan.stops.extend(p.stops);
        plan.unmet.extend(p.unmet);
    }
    plan
}

fn cordon_if(mut a: AgentView, refused: &BTreeMap<Uuid, String>) -> AgentView {
    a.cordoned |= refused.contains_key(&a.id);
    a
}

/// The unmet reason for `pool` when it has refusals: the first refusal.
pub(super) fn unmet_reason(
    pool: &str,
    refused: &BTreeMap<String, BTreeMap<Uuid, String>>,
) -> Option<String> {
    refused.get(pool).and_then(|m| m.values().next().cloned())
}

/// Planned starts are never on a refusing agent (a safety net over
/// [`plan_around`]).
pub(super) fn blocked(
    pool: &str,
    agent: Uuid,
    refused: &BTreeMap<String, BTreeMap<Uuid, String>>,
) -> bool {
    refused.get(pool).is_some_and(|m| m.contains_key(&agent))
}
