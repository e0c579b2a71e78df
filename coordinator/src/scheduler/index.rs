//! Placement for a whole plan without rescanning the fleet for every start.
//!
//! [`place`](super::placement::place) is the specification: it filters all
//! agents and takes the best by the strategy's key, which costs O(agents)
//! per runner, so a plan of J starts over A agents costs O(J × A) (1.7 s
//! for 5,000 jobs on 10,000 agents). [`Placer`] keeps, per pool, the agents
//! that can take one more runner of it in a `BTreeSet` ordered by that same
//! key. A start takes the first entry, and reserving it re-keys only that
//! agent in each pool's set, so a plan costs O((A + J) × pools × log A).
//!
//! It returns exactly what `place` returns for the same agents: a pool's
//! set holds precisely the candidates `place` would accept, keyed by the
//! same total order (ties end at the unique agent id). When a set is empty,
//! `place` itself is called once to name the reason. `plan_by_scan` and a
//! property test (`tests/scheduler_props.rs`) hold the two to the same plan.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::placement::{
    self, AgentView, Placement, RunnerImages, Strategy, Unplaceable, free_gpus, milli_cpu,
    placement_on,
};
use super::pool::Pool;

/// The strategy's order among candidates: smallest first.
type Key = (bool, u64, u64, Uuid);

/// One pool's candidates in order, and each agent's key among them.
type Candidates = (BTreeSet<(Key, usize)>, Vec<Option<Key>>);

/// How a plan places its starts.
pub(crate) trait Place {
    /// One runner of `pools[pool]`, reserved on the chosen agent.
    fn place(&mut self, pools: &[Pool], pool: usize) -> Result<Placement, Unplaceable>;
}

/// The specification: scan every agent for every start.
pub(crate) struct Scan {
    pub agents: Vec<AgentView>,
    pub strategy: Strategy,
}

impl Place for Scan {
    fn place(&mut self, pools: &[Pool], pool: usize) -> Result<Placement, Unplaceable> {
        let pool = &pools[pool];
        let placement = placement::place(pool, &self.agents, self.strategy)?;
        if let Some(agent) = self.agents.iter_mut().find(|a| a.id == placement.agent_id) {
            agent.reserve(pool, &placement);
        }
        Ok(placement)
    }
}

/// Per-pool ordered candidate sets, built on a pool's first start.
pub(crate) struct Placer {
    agents: Vec<AgentView>,
    strategy: Strategy,
    /// Per pool: its candidates, and each agent's key in that set.
    sets: Vec<Option<Candidates>>,
    /// Per pool: its runner images, once its set is built.
    images: Vec<Option<RunnerImages>>,
}

impl Placer {
    pub fn new(agents: Vec<AgentView>, strategy: Strategy, pools: usize) -> Self {
        Placer {
            agents,
            strategy,
            sets: (0..pools).map(|_| None).collect(),
            images: (0..pools).map(|_| None).collect(),
        }
    }

    fn build(&mut self, pools: &[Pool], pool: usize) {
        if self.sets[pool].is_some() {
            return;
        }
        let p = &pools[pool];
        let images = RunnerImages::of(p);
        let keys: Vec<Option<Key>> = self
            .agents
            .iter()
            .map(|a| key(p, &images, a, self.strategy))
            .collect();
        self.images[pool] = Some(images);
        let set = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.map(|k| (k, i)))
            .collect();
        self.sets[pool] = Some((set, keys));
    }

    /// Re-key agent `i` in every set built so far.
    fn rekey(&mut self, pools: &[Pool], i: usize) {
        for (p, entry) in self.sets.iter_mut().enumerate() {
            let (Some((set, keys)), Some(images)) = (entry, &self.images[p]) else {
                continue;
            };
            if let Some(old) = keys[i].take() {
                set.remove(&(old, i));
            }
            keys[i] = key(&pools[p], images, &self.agents[i], self.strategy);
            if let Some(k) = keys[i] {
                set.insert((k, i));
            }
        }
    }
}

impl Place for Placer {
    fn place(&mut self, pools: &[Pool], pool: usize) -> Result<Placement, Unplaceable> {
        self.build(pools, pool);
        let first = self.sets[pool]
            .as_ref()
            .and_then(|(set, _)| set.first().map(|&(_, i)| i));
        let Some(i) = first else {
            // Nothing fits: the specification names why.
            return placement::place(&pools[pool], &self.agents, self.strategy);
        };
        let p = &pools[pool];
        let a = &self.agents[i];
        let placement = placement_on(p, a, &free_gpus(p, a).unwrap_or_default());
        self.agents[i].reserve(p, &placement);
        self.rekey(pools, i);
        Ok(placement)
    }
}

/// `a`'s key among the candidates for one more runner of `pool`, or `None`
/// when `place` would not consider it (the same filters, in one pass).
fn key(pool: &Pool, images: &RunnerImages, a: &AgentView, strategy: Strategy) -> Option<Key> {
    if !placement::is_open_for(pool, a) {
        return None;
    }
    // Enough free fitting GPUs implies enough fitting ones, and of the vendor.
    free_gpus(pool, a)?;
    let need_cpu = milli_cpu(pool.cpu_limit);
    let need_mem = pool.mem_limit.bytes();
    if a.free_cpu_milli() < need_cpu || a.free_memory() < need_mem {
        return None;
    }
    Some(placement::strategy_key(
        a,
        strategy,
        need_cpu,
        need_mem,
        images.cold_on(a),
    ))
}
