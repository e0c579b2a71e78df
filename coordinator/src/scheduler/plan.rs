//! The demand plan: each reconciler tick turns pools, pending demand, the
//! current runners and the agents into runners to start and runners to stop.
//!
//! Per pool, with *available* = provisioning + idle runners, *active* = all
//! runners but stopping ones, and *wanted* = pending jobs + `idle_min`:
//!
//! 1. **Over capacity** (`max_runners` was lowered): stop idle runners
//!    (longest idle first), then provisioning ones (newest first), until
//!    active <= `max_runners`. Busy runners are never stopped: each exits
//!    after its one job.
//! 2. **Idle timeout**: while available > wanted, stop runners idle for at
//!    least `idle_timeout`, longest idle first. Warm runners (`idle_min`)
//!    and runners that pending jobs are about to take are kept.
//! 3. **Starts**: start wanted - available runners, but never more than
//!    `max_runners` - active. What the cap holds back is reported as
//!    [`UnmetReason::MaxRunners`].
//!
//! Idle and provisioning runners of pools no longer in the config are
//! stopped ([`StopReason::PoolRemoved`]).
//!
//! Starts are placed round-robin across pools in config order (one start per
//! pool per round), so a pool with a long queue does not take every free
//! slot. Each placement reserves its CPU, memory and GPUs in the plan's own
//! copy of the agents before the next one is placed, so one plan never gives
//! a GPU twice or overfills an agent. A pool whose start cannot be placed
//! stops there, and the rest of its starts are reported as
//! [`UnmetReason::Unplaceable`] with the reason.
//!
//! Resources held by stopping runners are not reused in the same plan; they
//! become free in the tick after the runner is gone. Runners on agents that
//! are unreachable still count: their containers may still serve GitLab.
//!
//! The agents' allocations are taken as the larger of what the agent view
//! says and the sum over the runners listed on it (and the union of assigned
//! GPUs), so a stale snapshot on either side errs toward not overfilling.
//!
//! The plan depends only on its input: not on the clock (`now` is an input),
//! nor on the order of runners or agents (ties are broken by id). Pool order
//! matters, as it does for job matching.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::index::{Place, Placer, Scan};
use super::placement::{AgentView, Placement, Strategy, Unplaceable, milli_cpu};
use super::pool::Pool;

/// A runner's state as the coordinator knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerState {
    /// Created in GitLab and/or its container starting; not yet polling.
    Provisioning,
    /// Polling GitLab for a job since the given time.
    Idle { since: OffsetDateTime },
    /// Running its one job.
    Busy,
    /// Asked to stop; still holds its resources until gone.
    Stopping,
}

/// One existing runner.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerView {
    pub id: Uuid,
    pub pool: String,
    pub agent_id: Uuid,
    /// GPU uuids it holds on its agent.
    pub gpus: Vec<String>,
    /// Its CPU limit.
    pub cpu: f64,
    /// Its memory limit in bytes.
    pub memory: u64,
    pub state: RunnerState,
    pub created_at: OffsetDateTime,
}

/// Everything one planning round looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// Validated pools, in config order.
    pub pools: Vec<Pool>,
    /// Pending jobs per pool name, each counted once (see
    /// [`super::matching::pool_for_job`]).
    pub pending: BTreeMap<String, u32>,
    pub runners: Vec<RunnerView>,
    pub agents: Vec<AgentView>,
    pub strategy: Strategy,
    pub now: OffsetDateTime,
}

/// Why the plan stops a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Idle for at least the pool's `idle_timeout`, and not needed.
    IdleTimeout,
    /// The pool has more runners than `max_runners`.
    OverCapacity,
    /// Its pool is no longer configured.
    PoolRemoved,
}

/// A runner to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub pool: String,
    pub placement: Placement,
}

/// A runner to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub runner_id: Uuid,
    pub pool: String,
    pub reason: StopReason,
}

/// Why wanted runners are not started.
#[derive(Debug, Clone, PartialEq)]
pub enum UnmetReason {
    /// The pool is at its `max_runners`.
    MaxRunners { max_runners: u32 },
    /// No agent can take one now.
    Unplaceable(Unplaceable),
}

impl std::fmt::Display for UnmetReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnmetReason::MaxRunners { max_runners } => {
                write!(f, "pool is at max_runners ({max_runners})")
            }
            UnmetReason::Unplaceable(u) => u.fmt(f),
        }
    }
}

/// Runners a pool wants but does not get in this plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmet {
    pub pool: String,
    pub needed: u32,
    pub reason: UnmetReason,
}

/// What the reconciler should do this tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub starts: Vec<Start>,
    pub stops: Vec<Stop>,
    pub unmet: Vec<Unmet>,
}

/// How long a runner idle since `since` has been idle at `now` (zero if the
/// clocks disagree).
fn idle_for(since: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(now - since).unwrap_or(Duration::ZERO)
}

/// Decides this tick's starts and stops. Pure and deterministic.
pub fn plan(input: &PlanInput) -> Plan {
    plan_with(input, |agents| {
        Placer::new(agents, input.strategy, input.pools.len())
    })
}

/// [`plan`] placing every start by scanning all agents with
/// [`placement::place`], the specification the indexed placer must match.
/// For tests and benchmarks.
#[doc(hidden)]
pub fn plan_by_scan(input: &PlanInput) -> Plan {
    plan_with(input, |agents| Scan {
        agents,
        strategy: input.strategy,
    })
}

fn plan_with<P: Place>(input: &PlanInput, placer: impl FnOnce(Vec<AgentView>) -> P) -> Plan {
    let mut out = Plan::default();

    // Runners in a stable order, independent of the input's.
    let mut runners: Vec<&RunnerView> = input.runners.iter().collect();
    runners.sort_by_key(|r| r.id);

    let known: BTreeSet<&str> = input.pools.iter().map(|p| p.name.as_str()).collect();
    for r in &runners {
        let removable = matches!(
            r.state,
            RunnerState::Idle { .. } | RunnerState::Provisioning
        );
        if removable && !known.contains(r.pool.as_str()) {
            out.stops.push(Stop {
                runner_id: r.id,
                pool: r.pool.clone(),
                reason: StopReason::PoolRemoved,
            });
        }
    }

    // Starts each pool wants, decided from its own runners.
    let mut to_start: Vec<u32> = Vec::with_capacity(input.pools.len());
    for pool in &input.pools {
        let mine: Vec<&RunnerView> = runners
            .iter()
            .copied()
            .filter(|r| r.pool == pool.name)
            .collect();
        let mut idle: Vec<(&RunnerView, OffsetDateTime)> = mine
            .iter()
            .filter_map(|r| match r.state {
                RunnerState::Idle { since } => Some((*r, since)),
                _ => None,
            })
            .collect();
        idle.sort_by_key(|(r, since)| (*since, r.id));
        let mut provisioning: Vec<&RunnerView> = mine
            .iter()
            .copied()
            .filter(|r| r.state == RunnerState::Provisioning)
            .collect();
        provisioning.sort_by_key(|r| (std::cmp::Reverse(r.created_at), r.id));

        let mut active = mine
            .iter()
            .filter(|r| r.state != RunnerState::Stopping)
            .count() as u64;
        let mut available = (idle.len() + provisioning.len()) as u64;
        let pending = u64::from(input.pending.get(&pool.name).copied().unwrap_or(0));
        let wanted = pending + u64::from(pool.idle_min);
        let max = u64::from(pool.max_runners);
        let mut stop = |r: &RunnerView, reason, active: &mut u64, available: &mut u64| {
            out.stops.push(Stop {
                runner_id: r.id,
                pool: pool.name.clone(),
                reason,
            });
            *active -= 1;
            *available -= 1;
        };

        // 1. Over capacity: idle first, then provisioning.
        let mut idle_left = idle.as_slice();
        let mut provisioning_left = provisioning.as_slice();
        while active > max {
            if let Some(((r, _), rest)) = idle_left.split_first() {
                stop(r, StopReason::OverCapacity, &mut active, &mut available);
                idle_left = rest;
            } else if let Some((r, rest)) = provisioning_left.split_first() {
                stop(r, StopReason::OverCapacity, &mut active, &mut available);
                provisioning_left = rest;
            } else {
                break;
            }
        }

        // 2. Idle timeout, only down to what is wanted.
        for (r, since) in idle_left {
            if available <= wanted || idle_for(*since, input.now) < pool.idle_timeout {
                // Sorted longest idle first: the rest are idle for less.
                break;
            }
            stop(r, StopReason::IdleTimeout, &mut active, &mut available);
        }

        // 3. Starts, capped by max_runners.
        let deficit = wanted.saturating_sub(available);
        let room = max.saturating_sub(active);
        if deficit > room {
            out.unmet.push(Unmet {
                pool: pool.name.clone(),
                needed: clamp_u32(deficit - room),
                reason: UnmetReason::MaxRunners {
                    max_runners: pool.max_runners,
                },
            });
        }
        to_start.push(clamp_u32(deficit.min(room)));
    }

    // Place round-robin on the plan's own copy of the agents.
    let mut placer = placer(merged_agents(&input.agents, &runners));
    let mut remaining = to_start;
    loop {
        let mut progressed = false;
        for (i, pool) in input.pools.iter().enumerate() {
            if remaining[i] == 0 {
                continue;
            }
            match placer.place(&input.pools, i) {
                Ok(placement) => {
                    out.starts.push(Start {
                        pool: pool.name.clone(),
                        placement,
                    });
                    remaining[i] -= 1;
                    progressed = true;
                }
                Err(reason) => {
                    out.unmet.push(Unmet {
                        pool: pool.name.clone(),
                        needed: remaining[i],
                        reason: UnmetReason::Unplaceable(reason),
                    });
                    remaining[i] = 0;
                }
            }
        }
        if !progressed {
            break;
        }
    }

    // Report unmet demand in pool order (stable: cap before placement).
    let order: BTreeMap<&str, usize> = input
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    out.unmet
        .sort_by_key(|u| order.get(u.pool.as_str()).copied());
    out
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The agents as the plan sees them: allocations are the larger of the
/// agent's own figures and the sum over the runners on it, GPUs the union.
/// Sorted by id.
fn merged_agents(agents: &[AgentView], runners: &[&RunnerView]) -> Vec<AgentView> {
    let mut merged: Vec<AgentView> = agents.to_vec();
    merged.sort_by_key(|a| a.id);
    let mut by_agent: BTreeMap<Uuid, Vec<&RunnerView>> = BTreeMap::new();
    for r in runners {
        by_agent.entry(r.agent_id).or_default().push(r);
    }
    for agent in &mut merged {
        let on_it: &[&RunnerView] = by_agent.get(&agent.id).map_or(&[], Vec::as_slice);
        let cpu: u64 = on_it.iter().map(|r| milli_cpu(r.cpu)).sum();
        let memory: u64 = on_it
            .iter()
            .fold(0u64, |acc, r| acc.saturating_add(r.memory));
        let count = u32::try_from(on_it.len()).unwrap_or(u32::MAX);
        if cpu > milli_cpu(agent.allocated_cpu) {
            agent.allocated_cpu = cpu as f64 / 1000.0;
        }
        agent.allocated_memory = agent.allocated_memory.max(memory);
        agent.runner_count = agent.runner_count.max(count);
        agent
            .assigned_gpus
            .extend(on_it.iter().flat_map(|r| r.gpus.iter().cloned()));
    }
    merged
}
