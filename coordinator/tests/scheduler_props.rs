//! Property tests for the scheduler over random fleets, pools and runners:
//! the invariants hold for every input, not just the fixtures.
//!
//! (a) a GPU is never held by two runners at once (existing runners and all
//!     starts of a plan), and starts get GPUs that fit the pool;
//! (b) nothing is placed on an agent of the wrong arch, or on one that is not
//!     ready or is cordoned;
//! (c) a plan never takes a pool above `max_runners`, never stops busy
//!     runners, and never stops below what is wanted;
//! (d) CPU and memory allocations never exceed an agent's capacity;
//! (e) the plan depends only on the input, not on its order;
//! (f) a runner of a pool with an `agent_selector` is never placed on an
//!     agent whose trust labels lack a pair of it, whatever it claims;
//! and `place` fails only when no agent fits (checked by brute force).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use autogit_coordinator::scheduler::bytesize::{GIB, MIB};
use autogit_coordinator::scheduler::labels::satisfies;
use autogit_coordinator::scheduler::{
    AgentState, AgentView, Arch, Archs, ByteSize, GpuRequirement, GpuVendor, GpuView, Labels, Plan,
    PlanInput, Pool, RunnerState, RunnerView, StopReason, Strategy as PlaceStrategy, UnmetReason,
    Unplaceable, place, plan, plan_by_scan,
};
use proptest::prelude::*;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);
const VENDORS: [GpuVendor; 3] = [GpuVendor::Nvidia, GpuVendor::Amd, GpuVendor::Intel];
const STATES: [AgentState; 4] = [
    AgentState::Ready,
    AgentState::Unreachable,
    AgentState::Lost,
    AgentState::Revoked,
];
const GPU_MEM_GIB: [u64; 4] = [0, 8, 16, 48];
/// Trust label sets agents hold and pools select (index 0: none).
const LABEL_SETS: [&[(&str, &str)]; 4] = [
    &[],
    &[("trust", "deploy")],
    &[("trust", "build")],
    &[("trust", "deploy"), ("zone", "eu")],
];

fn label_set(i: usize) -> Labels {
    LABEL_SETS[i]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// ------------------------------------------------------------ generators

#[derive(Debug, Clone)]
struct GpuSpec {
    vendor: usize,
    mem: usize,
    has_node: bool,
}

#[derive(Debug, Clone)]
struct AgentSpec {
    id_hi: u64,
    arch: usize,
    state: usize,
    cordoned: bool,
    cpus: u32,
    mem_gib: u64,
    gpus: Vec<GpuSpec>,
    /// The agent's own view lags behind (misses some runners).
    stale: bool,
    /// Index into [`LABEL_SETS`].
    trust: usize,
}

#[derive(Debug, Clone)]
struct PoolSpec {
    /// Bit i: `Arch::ALL[i]` (one or more architectures).
    archs: u8,
    gpu: Option<(usize, u32, Option<usize>)>,
    cpu_milli: u64,
    mem_mib: u64,
    max_runners: u32,
    idle_min: u32,
    idle_timeout_s: u64,
    pending: u32,
    /// Index into [`LABEL_SETS`] for the pool's `agent_selector`.
    selector: usize,
}

#[derive(Debug, Clone)]
struct RunnerSpec {
    id: u128,
    pool: usize,
    agent: usize,
    state: usize,
    idle_s: i64,
    age_s: i64,
}

fn gpu_spec() -> impl Strategy<Value = GpuSpec> {
    (0..3usize, 0..4usize, prop::bool::weighted(0.9)).prop_map(|(vendor, mem, has_node)| GpuSpec {
        vendor,
        mem,
        has_node,
    })
}

fn agent_spec() -> impl Strategy<Value = AgentSpec> {
    (
        any::<u64>(),
        0..3usize,
        prop_oneof![4 => Just(0usize), 1 => 1..4usize],
        prop::bool::weighted(0.15),
        // Often the same sizes, so ties (broken by id) are common.
        prop_oneof![Just(8u32), 1..=16u32],
        prop_oneof![Just(16u64), 1..=32u64],
        prop::collection::vec(gpu_spec(), 0..4),
        prop::bool::weighted(0.2),
        0..LABEL_SETS.len(),
    )
        .prop_map(
            |(id_hi, arch, state, cordoned, cpus, mem_gib, gpus, stale, trust)| AgentSpec {
                id_hi,
                arch,
                state,
                cordoned,
                cpus,
                mem_gib,
                gpus,
                stale,
                trust,
            },
        )
}

fn pool_spec() -> impl Strategy<Value = PoolSpec> {
    (
        prop_oneof![3 => (0..3u32).prop_map(|i| 1u8 << i), 1 => 1..8u8],
        prop::option::weighted(0.4, (0..3usize, 1..=2u32, prop::option::of(1..4usize))),
        prop::sample::select(vec![250u64, 500, 1000, 1500, 2000, 4000]),
        prop::sample::select(vec![256u64, 512, 1024, 2048, 8192]),
        1..=6u32,
        0..=6u32,
        1..=900u64,
        0..=12u32,
        prop_oneof![2 => Just(0usize), 1 => 1..LABEL_SETS.len()],
    )
        .prop_map(
            |(
                archs,
                gpu,
                cpu_milli,
                mem_mib,
                max_runners,
                idle_min,
                idle_timeout_s,
                pending,
                selector,
            )| {
                PoolSpec {
                    archs,
                    gpu,
                    cpu_milli,
                    mem_mib,
                    max_runners,
                    idle_min: idle_min.min(max_runners),
                    idle_timeout_s,
                    pending,
                    selector,
                }
            },
        )
}

fn runner_spec() -> impl Strategy<Value = RunnerSpec> {
    (
        any::<u128>(),
        0..5usize,
        0..8usize,
        0..4usize,
        -60..2000i64,
        0..4000i64,
    )
        .prop_map(|(id, pool, agent, state, idle_s, age_s)| RunnerSpec {
            id,
            pool,
            agent,
            state,
            idle_s,
            age_s,
        })
}

fn build_pool(i: usize, s: &PoolSpec) -> Pool {
    let name = format!("p{i}");
    let archs = Arch::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| s.archs & (1 << i) != 0)
        .map(|(_, a)| a);
    let mut pool = Pool::new(&name, &[name.as_str()], Arch::X86_64);
    pool.arch = Archs::of(archs).expect("at least one arch");
    pool.image = format!("reg:5000/{name}:v1");
    if let Some((vendor, count, min)) = s.gpu {
        let vendor = VENDORS[vendor];
        // Device-node vendors get one GPU in the default command.
        let count = if vendor == GpuVendor::Nvidia {
            count
        } else {
            1
        };
        pool = pool.with_gpu(vendor, count);
        if let Some(g) = pool.gpu.as_mut() {
            g.min_memory = min.map(|m| ByteSize::gib(GPU_MEM_GIB[m]));
        }
    }
    pool.cpu_limit = s.cpu_milli as f64 / 1000.0;
    pool.mem_limit = ByteSize::mib(s.mem_mib);
    pool.max_runners = s.max_runners;
    pool.idle_min = s.idle_min;
    pool.idle_timeout = Duration::from_secs(s.idle_timeout_s);
    pool.agent_selector = label_set(s.selector);
    pool
}

fn build_agent(i: usize, s: &AgentSpec) -> AgentView {
    let id = Uuid::from_u128((u128::from(s.id_hi) << 32) | i as u128);
    let mut a = AgentView::new(
        id,
        &format!("h{i}"),
        Arch::ALL[s.arch],
        s.cpus,
        s.mem_gib * GIB,
    );
    a.state = STATES[s.state];
    a.cordoned = s.cordoned;
    a.trust_labels = label_set(s.trust);
    // Some hold some pools' runner images (placement prefers those).
    a.images = std::sync::Arc::new(
        (0..8)
            .filter(|k| (s.id_hi >> (8 + k)) & 1 == 1)
            .map(|k| format!("reg:5000/p{k}:v1"))
            .collect(),
    );
    // The same GPU ids on every host, as PCI-derived ids can be.
    a.gpus = s
        .gpus
        .iter()
        .enumerate()
        .map(|(k, g)| GpuView {
            vendor: VENDORS[g.vendor],
            uuid: format!("gpu-{k}"),
            memory: GPU_MEM_GIB[g.mem] * GIB,
            render_node: g.has_node.then(|| format!("/dev/dri/renderD{}", 128 + k)),
        })
        .collect();
    a
}

/// A consistent fleet: runners fit their agents and hold distinct GPUs.
fn build_input(
    agent_specs: &[AgentSpec],
    pool_specs: &[PoolSpec],
    runner_specs: &[RunnerSpec],
    binpack: bool,
) -> PlanInput {
    let pools: Vec<Pool> = pool_specs
        .iter()
        .enumerate()
        .map(|(i, s)| build_pool(i, s))
        .collect();
    let mut agents: Vec<AgentView> = agent_specs
        .iter()
        .enumerate()
        .map(|(i, s)| build_agent(i, s))
        .collect();
    let mut runners = Vec::new();
    let mut seen_ids = BTreeSet::new();
    for r in runner_specs {
        if agents.is_empty() || !seen_ids.insert(r.id) {
            continue;
        }
        let ai = r.agent % agents.len();
        // Index past the pools: a runner of a pool removed from the config.
        let pool = pools.get(r.pool);
        let (cpu, mem) = pool.map_or((1.0, GIB), |p| (p.cpu_limit, p.mem_limit.bytes()));
        let agent = &mut agents[ai];
        if agent.free_cpu_milli() < (cpu * 1000.0).round() as u64 || agent.free_memory() < mem {
            continue;
        }
        let mut gpus = Vec::new();
        if let Some(req) = pool.and_then(|p| p.gpu.as_ref()) {
            gpus = agent
                .gpus
                .iter()
                .filter(|g| g.vendor == req.vendor && !agent.assigned_gpus.contains(&g.uuid))
                .take(req.count as usize)
                .map(|g| g.uuid.clone())
                .collect();
            if gpus.len() < req.count as usize {
                continue;
            }
        }
        agent.allocated_cpu = (agent.allocated_cpu * 1000.0 + cpu * 1000.0).round() / 1000.0;
        agent.allocated_memory += mem;
        agent.runner_count += 1;
        agent.assigned_gpus.extend(gpus.iter().cloned());
        let state = match r.state {
            0 => RunnerState::Provisioning,
            1 => RunnerState::Idle {
                since: NOW - time::Duration::seconds(r.idle_s),
            },
            2 => RunnerState::Busy,
            _ => RunnerState::Stopping,
        };
        runners.push(RunnerView {
            id: Uuid::from_u128(r.id),
            pool: pool.map_or_else(|| "removed".to_owned(), |p| p.name.clone()),
            agent_id: agent.id,
            gpus,
            cpu,
            memory: mem,
            state,
            created_at: NOW - time::Duration::seconds(r.age_s),
        });
    }
    // Stale agent views forget their runners; the plan must still count them.
    for (a, s) in agents.iter_mut().zip(agent_specs) {
        if s.stale {
            a.allocated_cpu = 0.0;
            a.allocated_memory = 0;
            a.runner_count = 0;
            a.assigned_gpus.clear();
        }
    }
    PlanInput {
        pending: pools
            .iter()
            .zip(pool_specs)
            .map(|(p, s)| (p.name.clone(), s.pending))
            .collect(),
        pools,
        runners,
        agents,
        strategy: if binpack {
            PlaceStrategy::BinPack
        } else {
            PlaceStrategy::Spread
        },
        now: NOW,
    }
}

fn fleet() -> impl Strategy<Value = PlanInput> {
    (
        prop::collection::vec(agent_spec(), 0..8),
        prop::collection::vec(pool_spec(), 1..5),
        prop::collection::vec(runner_spec(), 0..24),
        any::<bool>(),
    )
        .prop_map(|(a, p, r, binpack)| build_input(&a, &p, &r, binpack))
}

/// A deterministic shuffle (xorshift) so the test can reorder an input.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    seed |= 1;
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

// ------------------------------------------------------------- checkers

fn milli(cpu: f64) -> u64 {
    (cpu * 1000.0).round() as u64
}

fn gpu_fits(req: &GpuRequirement, g: &GpuView) -> bool {
    g.vendor == req.vendor
        && g.memory >= req.min_memory.map_or(0, ByteSize::bytes)
        && (g.vendor == GpuVendor::Nvidia || g.render_node.is_some())
}

/// Written independently of `place`: can this agent take a runner of `pool`?
fn brute_fits(pool: &Pool, a: &AgentView) -> bool {
    let gpus_ok = match &pool.gpu {
        None => true,
        Some(req) => {
            let free: BTreeSet<&str> = a
                .gpus
                .iter()
                .filter(|g| gpu_fits(req, g) && !a.assigned_gpus.contains(&g.uuid))
                .map(|g| g.uuid.as_str())
                .collect();
            free.len() >= req.count as usize
        }
    };
    a.trust_labels
        .iter()
        .filter(|(k, v)| pool.agent_selector.get(*k) == Some(*v))
        .count()
        == pool.agent_selector.len()
        && pool.arch.contains(a.arch)
        && a.state == AgentState::Ready
        && !a.cordoned
        && gpus_ok
        && milli(a.allocated_cpu) + milli(pool.cpu_limit) <= u64::from(a.cpu_threads) * 1000
        && a.allocated_memory + pool.mem_limit.bytes() <= a.memory_total
}

fn check_plan(input: &PlanInput, plan: &Plan) -> Result<(), TestCaseError> {
    let pools: BTreeMap<&str, &Pool> = input.pools.iter().map(|p| (p.name.as_str(), p)).collect();
    let agents: BTreeMap<Uuid, &AgentView> = input.agents.iter().map(|a| (a.id, a)).collect();
    let runners: BTreeMap<Uuid, &RunnerView> = input.runners.iter().map(|r| (r.id, r)).collect();

    // (a) GPUs: one holder per (agent, uuid); starts get fitting GPUs.
    let mut held: BTreeSet<(Uuid, &str)> = BTreeSet::new();
    for r in &input.runners {
        for g in &r.gpus {
            prop_assert!(
                held.insert((r.agent_id, g.as_str())),
                "fixture gave {g} twice"
            );
        }
    }
    for a in &input.agents {
        for g in &a.assigned_gpus {
            held.insert((a.id, g.as_str()));
        }
    }
    for s in &plan.starts {
        let pool = pools[s.pool.as_str()];
        let agent = agents
            .get(&s.placement.agent_id)
            .ok_or_else(|| TestCaseError::fail("start on an unknown agent"))?;
        for g in &s.placement.gpus {
            prop_assert!(
                held.insert((agent.id, g.as_str())),
                "GPU {g} on {} given twice",
                agent.hostname
            );
        }
        match &pool.gpu {
            None => prop_assert!(s.placement.gpus.is_empty()),
            Some(req) => {
                prop_assert_eq!(s.placement.gpus.len(), req.count as usize);
                for uuid in &s.placement.gpus {
                    let g = agent.gpus.iter().find(|g| &g.uuid == uuid);
                    prop_assert!(g.is_some_and(|g| gpu_fits(req, g)), "unfit GPU {uuid}");
                }
                if req.vendor.uses_device_nodes() {
                    prop_assert_eq!(s.placement.render_nodes.len(), req.count as usize);
                } else {
                    prop_assert!(s.placement.render_nodes.is_empty());
                }
            }
        }
        // (f) every selector pair among the agent's trust labels.
        for (k, v) in &pool.agent_selector {
            prop_assert_eq!(
                agent.trust_labels.get(k),
                Some(v),
                "pool {} placed on {} without {}={}",
                &pool.name,
                &agent.hostname,
                k,
                v
            );
        }
        // (b) right arch, ready, not cordoned.
        prop_assert!(pool.arch.contains(agent.arch));
        prop_assert_eq!(agent.state, AgentState::Ready);
        prop_assert!(!agent.cordoned);
    }

    // Stops: known runners, once each, never busy or stopping, and idle
    // timeouts only after the timeout.
    let mut stopped = BTreeSet::new();
    for stop in &plan.stops {
        prop_assert!(stopped.insert(stop.runner_id), "runner stopped twice");
        let r = runners
            .get(&stop.runner_id)
            .ok_or_else(|| TestCaseError::fail("stop of an unknown runner"))?;
        prop_assert!(
            matches!(
                r.state,
                RunnerState::Idle { .. } | RunnerState::Provisioning
            ),
            "stopped a {:?} runner",
            r.state
        );
        if stop.reason == StopReason::IdleTimeout {
            let RunnerState::Idle { since } = r.state else {
                return Err(TestCaseError::fail("idle timeout of a non-idle runner"));
            };
            let idle = Duration::try_from(input.now - since).unwrap_or_default();
            prop_assert!(idle >= pools[r.pool.as_str()].idle_timeout);
        }
        prop_assert_eq!(
            stop.reason == StopReason::PoolRemoved,
            !pools.contains_key(r.pool.as_str())
        );
    }

    // (c) max_runners, and stops never cut below what is wanted.
    for pool in &input.pools {
        let mine = || input.runners.iter().filter(|r| r.pool == pool.name);
        let active_before = mine().filter(|r| r.state != RunnerState::Stopping).count();
        let active_after = mine()
            .filter(|r| r.state != RunnerState::Stopping && !stopped.contains(&r.id))
            .count();
        let is_available = |r: &&RunnerView| {
            matches!(
                r.state,
                RunnerState::Idle { .. } | RunnerState::Provisioning
            )
        };
        let available_before = mine().filter(is_available).count();
        let available_after = mine()
            .filter(is_available)
            .filter(|r| !stopped.contains(&r.id))
            .count();
        let starts = plan.starts.iter().filter(|s| s.pool == pool.name).count();
        let max = pool.max_runners as usize;
        let wanted =
            input.pending.get(&pool.name).copied().unwrap_or(0) as usize + pool.idle_min as usize;
        if starts > 0 {
            prop_assert!(
                active_after + starts <= max,
                "pool {} would have {} runners, max {}",
                pool.name,
                active_after + starts,
                max
            );
        }
        prop_assert!(
            available_after + starts <= wanted.max(available_after),
            "over-started {}",
            pool.name
        );
        if active_before <= max {
            prop_assert!(
                available_after >= wanted.min(available_before),
                "pool {} stopped below wanted",
                pool.name
            );
        }
    }

    // (d) capacity: what was there (as the plan must see it) plus starts.
    for a in &input.agents {
        let on_it: Vec<&RunnerView> = input
            .runners
            .iter()
            .filter(|r| r.agent_id == a.id)
            .collect();
        let mut cpu = milli(a.allocated_cpu).max(on_it.iter().map(|r| milli(r.cpu)).sum());
        let mut mem = a.allocated_memory.max(on_it.iter().map(|r| r.memory).sum());
        let mut placed = false;
        for s in plan.starts.iter().filter(|s| s.placement.agent_id == a.id) {
            let pool = pools[s.pool.as_str()];
            cpu += milli(pool.cpu_limit);
            mem += pool.mem_limit.bytes();
            placed = true;
        }
        if placed {
            prop_assert!(
                cpu <= u64::from(a.cpu_threads) * 1000,
                "{} CPU overcommitted",
                a.hostname
            );
            prop_assert!(mem <= a.memory_total, "{} memory overcommitted", a.hostname);
        }
    }
    Ok(())
}

// ------------------------------------------------------------ properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// (a)-(d) on every plan.
    #[test]
    fn plans_keep_the_invariants(input in fleet()) {
        let p = plan(&input);
        check_plan(&input, &p)?;
    }

    /// The indexed placer that `plan` uses gives exactly the plan of the
    /// specification, `place` scanning every agent for every start: the same
    /// starts on the same agents with the same GPUs, and the same reasons.
    #[test]
    fn indexed_placement_plans_exactly_like_scanning(input in fleet()) {
        prop_assert_eq!(plan(&input), plan_by_scan(&input));
    }

    /// (e) same input, same plan, whatever the order of agents and runners.
    #[test]
    fn plans_are_deterministic(input in fleet(), seed in any::<u64>()) {
        let first = plan(&input);
        prop_assert_eq!(&first, &plan(&input));
        let mut shuffled = input.clone();
        shuffle(&mut shuffled.agents, seed);
        shuffle(&mut shuffled.runners, seed.rotate_left(17));
        prop_assert_eq!(&first, &plan(&shuffled));
    }

    /// Running the plan's starts and stops and planning again converges: the
    /// second plan neither starts nor stops anything while the first one's
    /// starts are still provisioning.
    #[test]
    fn replanning_after_applying_a_plan_adds_nothing(input in fleet()) {
        let first = plan(&input);
        let mut next = input.clone();
        for stop in &first.stops {
            if let Some(r) = next.runners.iter_mut().find(|r| r.id == stop.runner_id) {
                r.state = RunnerState::Stopping;
            }
        }
        for (i, s) in first.starts.iter().enumerate() {
            let pool = next.pools.iter().find(|p| p.name == s.pool).unwrap();
            next.runners.push(RunnerView {
                id: Uuid::from_u128(u128::MAX - i as u128),
                pool: s.pool.clone(),
                agent_id: s.placement.agent_id,
                gpus: s.placement.gpus.clone(),
                cpu: pool.cpu_limit,
                memory: pool.mem_limit.bytes(),
                state: RunnerState::Provisioning,
                created_at: next.now,
            });
        }
        let second = plan(&next);
        check_plan(&next, &second)?;
        prop_assert!(second.starts.is_empty(), "second plan started {:?}", second.starts);
        prop_assert!(second.stops.is_empty(), "second plan stopped {:?}", second.stops);
    }

    /// (f) on its own: however much hardware agents without the selector's
    /// labels claim, a selector pool gets nothing from them, and its unmet
    /// reason names a missing label.
    #[test]
    fn claimed_hardware_never_substitutes_for_trust_labels(
        agent_specs in prop::collection::vec(agent_spec(), 1..8),
        pool_specs in prop::collection::vec(pool_spec(), 1..5),
    ) {
        let pools: Vec<Pool> = pool_specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut p = build_pool(i, s);
                // `trust=deploy`, or `trust=deploy` and `zone=eu`.
                p.agent_selector = label_set([1, 3][s.selector % 2]);
                p
            })
            .collect();
        // Every agent ready, open, huge and GPU-laden, and labelled with a
        // set that misses something of every selector: `trust=build`.
        let agents: Vec<AgentView> = agent_specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut a = build_agent(i, s);
                a.state = AgentState::Ready;
                a.cordoned = false;
                a.cpu_threads = 1024;
                a.memory_total = 2048 * GIB;
                a.trust_labels = label_set(2);
                a
            })
            .collect();
        let input = PlanInput {
            pending: pools.iter().map(|p| (p.name.clone(), 3)).collect(),
            pools,
            runners: vec![],
            agents,
            strategy: PlaceStrategy::Spread,
            now: NOW,
        };
        let p = plan(&input);
        prop_assert!(p.starts.is_empty(), "started {:?}", p.starts);
        for pool in &input.pools {
            let reasons: Vec<String> = p
                .unmet
                .iter()
                .filter(|u| u.pool == pool.name && !matches!(u.reason, UnmetReason::MaxRunners { .. }))
                .map(|u| u.reason.to_string())
                .collect();
            prop_assert_eq!(reasons.len(), 1, "{:?}", &p.unmet);
            prop_assert!(reasons[0].starts_with("no agent with label"), "{}", reasons[0]);
        }
    }

    /// `place` finds an agent exactly when one fits, what it picks fits, and
    /// the order of the agents does not matter.
    #[test]
    fn place_fails_only_when_nothing_fits(
        agents in prop::collection::vec(agent_spec(), 0..8),
        pool in pool_spec(),
        used in prop::collection::vec((0..8usize, 0..4usize, 0..16u32, 0..32u64), 0..8),
        binpack in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let pool = build_pool(0, &pool);
        let mut agents: Vec<AgentView> = agents.iter().enumerate().map(|(i, s)| build_agent(i, s)).collect();
        if !agents.is_empty() {
            for (ai, gi, cpu, mem) in used {
                let n = agents.len();
                let a = &mut agents[ai % n];
                a.allocated_cpu = f64::from(cpu.min(a.cpu_threads));
                a.allocated_memory = (mem * GIB).min(a.memory_total) + MIB;
                if let Some(g) = a.gpus.get(gi) {
                    let uuid = g.uuid.clone();
                    a.assigned_gpus.insert(uuid);
                }
            }
        }
        let strategy = if binpack { PlaceStrategy::BinPack } else { PlaceStrategy::Spread };
        let any_fits = agents.iter().any(|a| brute_fits(&pool, a));
        let result = place(&pool, &agents, strategy);
        let mut shuffled = agents.clone();
        shuffle(&mut shuffled, seed);
        prop_assert_eq!(&result, &place(&pool, &shuffled, strategy), "depends on agent order");
        match result {
            Ok(p) => {
                let a = agents.iter().find(|a| a.id == p.agent_id).unwrap();
                prop_assert!(brute_fits(&pool, a), "placed on an agent that does not fit");
                let distinct: BTreeSet<&String> = p.gpus.iter().collect();
                prop_assert_eq!(distinct.len(), p.gpus.len());
                prop_assert!(p.gpus.iter().all(|g| !a.assigned_gpus.contains(g)));
            }
            Err(reason) => {
                prop_assert!(!any_fits, "unplaceable ({reason}) although an agent fits");
                let trusted = || agents.iter().filter(|a| satisfies(&a.trust_labels, &pool.agent_selector));
                let of_arch = || trusted().filter(|a| pool.arch.contains(a.arch));
                let ready = || of_arch().filter(|a| a.state == AgentState::Ready);
                match reason {
                    Unplaceable::MissingLabels { missing } => {
                        prop_assert!(!pool.agent_selector.is_empty());
                        prop_assert_eq!(trusted().count(), 0);
                        prop_assert!(!missing.is_empty());
                        prop_assert!(missing.iter().all(|(k, v)| pool.agent_selector.get(k) == Some(v)));
                    }
                    Unplaceable::NoLabelledAgentOfArch { unlabelled, .. } => {
                        prop_assert!(trusted().count() > 0);
                        prop_assert_eq!(of_arch().count(), 0);
                        prop_assert_eq!(unlabelled, agents.iter().filter(|a| pool.arch.contains(a.arch)).count());
                    }
                    Unplaceable::NoAgentOfArch { .. } => {
                        prop_assert!(pool.agent_selector.is_empty());
                        prop_assert_eq!(of_arch().count(), 0);
                    }
                    Unplaceable::NoneReady { unreachable, lost, revoked, .. } => {
                        prop_assert_eq!(ready().count(), 0);
                        prop_assert_eq!(unreachable + lost + revoked, of_arch().count());
                    }
                    Unplaceable::AllCordoned { ready: n, .. } => {
                        prop_assert!(n > 0 && ready().all(|a| a.cordoned));
                        prop_assert_eq!(n, ready().count());
                    }
                    Unplaceable::GpusBusy { assigned, total, .. } => prop_assert!(assigned <= total),
                    _ => {}
                }
            }
        }
    }
}
