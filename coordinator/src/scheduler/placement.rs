//! Placement: which agent, and which of its GPUs, a new runner of a pool
//! gets.
//!
//! [`place`] filters the agents step by step and, when none is left, reports
//! the step that removed the last candidates ([`Unplaceable`]):
//!
//! 1. the pool's `agent_selector`: trust labels holding every pair (set on
//!    the coordinator, never reported by the agent; see [`super::labels`]),
//!    checked before anything the agent claims about itself;
//! 2. the pool's architecture;
//! 3. state `Ready` (not unreachable, lost or revoked);
//! 4. not cordoned (a cordoned or draining agent takes no new runners);
//! 5. for GPU pools: at least `gpu.count` GPUs of the vendor, of which enough
//!    have `gpu.min_memory` (and, for AMD/Intel, a render node to pass in),
//!    of which enough are not assigned to another runner;
//! 6. free CPU and memory for the pool's `cpu_limit` and `mem_limit`
//!    (free = capacity - sum of the limits of the runners already there).
//!
//! Among the agents that remain, those that already hold the pool's runner
//! image (for their architecture; `images.rs`) come first: a runner there
//! starts in about a second, one that must pull its image first may take
//! minutes. Among those equally warm, [`Strategy::Spread`] picks the one with the
//! fewest runners, then the most free resources; [`Strategy::BinPack`] picks
//! the one left with the least free resources after placing (so others stay
//! empty), then the most runners. "Free resources" is the scarcer of CPU and
//! memory as a fraction of capacity. Ties go to the lowest agent id, so the
//! result depends only on the input, never on its order.
//!
//! Within an agent the smallest fitting free GPUs are chosen (then by uuid),
//! keeping large GPUs for pools that need them. GPU uuids identify a GPU
//! within its agent: AMD and Intel ids derive from the PCI address and may
//! repeat across hosts.
//!
//! CPU is accounted in thousandths of a CPU, so sums of fractional limits
//! never drift.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use super::bytesize::ByteSize;
use super::hardware::{Arch, Archs, GpuVendor};
use super::images::normalise;
use super::labels::{self, Labels};
use super::pool::Pool;

/// How to choose among agents that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Fewest runners first, then most free resources: spreads load and
    /// limits the blast radius of losing a host.
    #[default]
    Spread,
    /// The fullest agent that still fits: keeps whole hosts free for big
    /// runners and lets idle hosts be powered down.
    BinPack,
}

/// An agent's lifecycle state as the coordinator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgentState {
    /// Connected and heartbeating.
    Ready,
    /// Missed heartbeats recently.
    Unreachable,
    /// Gone long enough that its runners are considered lost.
    Lost,
    /// Its certificate was revoked by an operator.
    Revoked,
}

/// One GPU on an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuView {
    pub vendor: GpuVendor,
    /// NVIDIA: `GPU-<uuid>`; others: an id stable on this host.
    pub uuid: String,
    /// Bytes of GPU memory (0 when unknown).
    pub memory: u64,
    /// DRM render node, e.g. `/dev/dri/renderD128` (needed for AMD/Intel).
    pub render_node: Option<String>,
}

/// A snapshot of one agent: its capacity and what is already placed on it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    pub id: Uuid,
    pub hostname: String,
    /// Labels an operator set (join token, `agent label set`); never the
    /// agent's own `inventory.labels`.
    pub trust_labels: Labels,
    pub arch: Arch,
    pub state: AgentState,
    /// Cordoned or draining: keeps its runners, takes no new ones.
    pub cordoned: bool,
    pub cpu_threads: u32,
    /// Bytes.
    pub memory_total: u64,
    /// Sum of the `cpu_limit`s of the runners placed here.
    pub allocated_cpu: f64,
    /// Sum of the `mem_limit`s of the runners placed here, in bytes.
    pub allocated_memory: u64,
    pub runner_count: u32,
    pub gpus: Vec<GpuView>,
    /// Uuids of this agent's GPUs that runners hold.
    pub assigned_gpus: BTreeSet<String>,
    /// The images it holds, as normalised references ([`normalise`]);
    /// shared, as the fleet keeps it between inventories.
    pub images: Arc<BTreeSet<String>>,
}

/// Thousandths of a CPU, rounded; negative or non-finite counts as zero.
pub(crate) fn milli_cpu(cpus: f64) -> u64 {
    if cpus.is_finite() && cpus > 0.0 {
        // `as` saturates on overflow.
        (cpus * 1000.0).round() as u64
    } else {
        0
    }
}

fn cpus(milli: u64) -> f64 {
    milli as f64 / 1000.0
}

impl AgentView {
    /// A ready, empty, uncordoned agent without GPUs.
    pub fn new(id: Uuid, hostname: &str, arch: Arch, cpu_threads: u32, memory_total: u64) -> Self {
        AgentView {
            id,
            hostname: hostname.to_owned(),
            trust_labels: Labels::new(),
            arch,
            state: AgentState::Ready,
            cordoned: false,
            cpu_threads,
            memory_total,
            allocated_cpu: 0.0,
            allocated_memory: 0,
            runner_count: 0,
            gpus: Vec::new(),
            assigned_gpus: BTreeSet::new(),
            images: Arc::default(),
        }
    }

    /// Whether it holds `image` (any spelling of the reference).
    pub fn holds(&self, image: &str) -> bool {
        !self.images.is_empty() && self.images.contains(&normalise(image))
    }

    fn cpu_capacity_milli(&self) -> u64 {
        u64::from(self.cpu_threads) * 1000
    }

    /// Unallocated CPU in thousandths.
    pub fn free_cpu_milli(&self) -> u64 {
        self.cpu_capacity_milli()
            .saturating_sub(milli_cpu(self.allocated_cpu))
    }

    /// Unallocated memory in bytes.
    pub fn free_memory(&self) -> u64 {
        self.memory_total.saturating_sub(self.allocated_memory)
    }

    /// Records a runner of `pool` placed here: its limits, and its GPUs.
    pub fn reserve(&mut self, pool: &Pool, placement: &Placement) {
        self.allocated_cpu = cpus(milli_cpu(self.allocated_cpu) + milli_cpu(pool.cpu_limit));
        self.allocated_memory = self.allocated_memory.saturating_add(pool.mem_limit.bytes());
        self.runner_count = self.runner_count.saturating_add(1);
        self.assigned_gpus.extend(placement.gpus.iter().cloned());
    }

    /// The free resources left after taking `cpu`/`mem`, as the scarcer of
    /// the two in parts per million of capacity.
    fn free_ppm_after(&self, cpu_milli: u64, mem: u64) -> u64 {
        let ratio = |free: u64, total: u64| {
            if total == 0 {
                0
            } else {
                (u128::from(free) * 1_000_000 / u128::from(total)) as u64
            }
        };
        let cpu = ratio(
            self.free_cpu_milli().saturating_sub(cpu_milli),
            self.cpu_capacity_milli(),
        );
        let mem = ratio(self.free_memory().saturating_sub(mem), self.memory_total);
        cpu.min(mem)
    }
}

/// Where a new runner goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub agent_id: Uuid,
    /// The chosen agent's architecture (it picks the pool's image).
    pub arch: Arch,
    /// Uuids of the GPUs the runner gets (all vendors), in the chosen order.
    pub gpus: Vec<String>,
    /// The render nodes of the chosen GPUs, in the same order, for vendors
    /// whose GPUs are passed in as device nodes (AMD, Intel); empty for
    /// NVIDIA. Which device nodes the container gets is decided in
    /// `runners/devices.rs`.
    pub render_nodes: Vec<String>,
}

/// Why no agent can take a runner of a pool now: the filter step that
/// removed the last candidates. `Display` is meant for operators.
#[derive(Debug, Clone, PartialEq)]
pub enum Unplaceable {
    /// No agent holds the pool's `agent_selector`: `missing` lists the
    /// pairs no agent has at all, or the whole selector when each pair is
    /// held by some agent but none holds all.
    MissingLabels { missing: Labels },
    /// Agents hold the selector, none of them of the architecture.
    NoLabelledAgentOfArch {
        arch: Archs,
        selector: Labels,
        /// Agents of the architecture that lack the labels.
        unlabelled: usize,
    },
    /// No agent of the architecture at all.
    NoAgentOfArch { arch: Archs },
    /// Agents of the architecture exist, none is `Ready`.
    NoneReady {
        arch: Archs,
        unreachable: usize,
        lost: usize,
        revoked: usize,
    },
    /// Every ready agent of the architecture is cordoned.
    AllCordoned { arch: Archs, ready: usize },
    /// No open agent has `count` GPUs of the vendor.
    NoGpuOfVendor {
        arch: Archs,
        vendor: GpuVendor,
        count: u32,
    },
    /// GPUs of the vendor exist but too few fit (memory, render node).
    NoSuitableGpu {
        vendor: GpuVendor,
        count: u32,
        min_memory: Option<ByteSize>,
        /// The largest GPU of the vendor on an open agent.
        largest: ByteSize,
    },
    /// Enough fitting GPUs exist, but not enough unassigned on one agent.
    GpusBusy {
        vendor: GpuVendor,
        count: u32,
        min_memory: Option<ByteSize>,
        /// Fitting GPUs assigned to runners / fitting GPUs in total.
        assigned: usize,
        total: usize,
    },
    /// No remaining agent has the CPU and memory free.
    NoResources {
        /// Set when the candidates were the agents with free GPUs.
        gpu: Option<(GpuVendor, u32)>,
        needed_cpu: f64,
        needed_memory: ByteSize,
        candidates: usize,
        short_of_cpu: usize,
        short_of_memory: usize,
        most_free_cpu: f64,
        most_free_memory: ByteSize,
    },
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// "an NVIDIA GPU" or "2 NVIDIA GPUs".
fn gpus_phrase(vendor: GpuVendor, count: u32, free: bool) -> String {
    // "an" reads right before AMD, Intel and NVIDIA alike.
    match (count, free) {
        (1, false) => format!("an {vendor} GPU"),
        (1, true) => format!("a free {vendor} GPU"),
        (n, false) => format!("{n} {vendor} GPUs"),
        (n, true) => format!("{n} free {vendor} GPUs"),
    }
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaceable::MissingLabels { missing } => {
                let label = if missing.len() == 1 {
                    "label"
                } else {
                    "labels"
                };
                write!(f, "no agent with {label} {}", labels::pairs(missing))
            }
            Unplaceable::NoLabelledAgentOfArch {
                arch,
                selector,
                unlabelled,
            } => {
                let label = if selector.len() == 1 {
                    "label"
                } else {
                    "labels"
                };
                write!(
                    f,
                    "no {arch} agent with {label} {}",
                    labels::pairs(selector)
                )?;
                if *unlabelled > 0 {
                    write!(
                        f,
                        " ({} without)",
                        plural(
                            *unlabelled,
                            &format!("{arch} agent"),
                            &format!("{arch} agents")
                        )
                    )?;
                }
                Ok(())
            }
            Unplaceable::NoAgentOfArch { arch } => {
                write!(f, "no {arch} agent ready (none enrolled)")
            }
            Unplaceable::NoneReady {
                arch,
                unreachable,
                lost,
                revoked,
            } => {
                let parts: Vec<String> = [
                    (unreachable, "unreachable"),
                    (lost, "lost"),
                    (revoked, "revoked"),
                ]
                .into_iter()
                .filter(|(n, _)| **n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect();
                write!(f, "no {arch} agent ready ({})", parts.join(", "))
            }
            Unplaceable::AllCordoned { arch, ready } => {
                if *ready == 1 {
                    write!(f, "1 {arch} agent ready but cordoned")
                } else {
                    write!(f, "{ready} {arch} agents ready but all cordoned")
                }
            }
            Unplaceable::NoGpuOfVendor {
                arch,
                vendor,
                count,
            } => write!(
                f,
                "no ready, uncordoned {arch} agent has {}",
                gpus_phrase(*vendor, *count, false)
            ),
            Unplaceable::NoSuitableGpu {
                vendor,
                count,
                min_memory,
                largest,
            } => match min_memory {
                // Memory is the blocker only when even the largest is small;
                // otherwise AMD/Intel GPUs lack a render node to pass in.
                Some(min) if largest < min => write!(
                    f,
                    "no agent has {} with at least {min} memory (largest: {largest})",
                    gpus_phrase(*vendor, *count, false)
                ),
                _ => write!(
                    f,
                    "no agent has {} with a render node{}",
                    gpus_phrase(*vendor, *count, false),
                    min_memory
                        .map(|m| format!(" and at least {m} memory"))
                        .unwrap_or_default()
                ),
            },
            Unplaceable::GpusBusy {
                vendor,
                count,
                min_memory,
                assigned,
                total,
            } => {
                let with = min_memory
                    .map(|m| format!(" with at least {m}"))
                    .unwrap_or_default();
                if assigned == total {
                    write!(
                        f,
                        "all {vendor} GPUs{with} busy ({assigned} of {total} assigned)"
                    )
                } else {
                    write!(
                        f,
                        "no agent has {}{with} ({assigned} of {total} assigned)",
                        gpus_phrase(*vendor, *count, true)
                    )
                }
            }
            Unplaceable::NoResources {
                gpu,
                needed_cpu,
                needed_memory,
                candidates,
                short_of_cpu,
                short_of_memory,
                most_free_cpu,
                most_free_memory,
            } => {
                let who = match gpu {
                    Some((vendor, count)) => {
                        format!("no agent with {}", gpus_phrase(*vendor, *count, true))
                    }
                    None => "no agent".to_owned(),
                };
                let cpu = if *needed_cpu == 1.0 {
                    "1 free CPU".to_owned()
                } else {
                    format!("{needed_cpu} free CPUs")
                };
                if short_of_memory == candidates && *short_of_cpu == 0 {
                    write!(
                        f,
                        "{who} has {needed_memory} free memory (most free: {most_free_memory})"
                    )
                } else if short_of_cpu == candidates && *short_of_memory == 0 {
                    write!(f, "{who} has {cpu} (most free: {most_free_cpu})")
                } else {
                    write!(
                        f,
                        "{who} has both {cpu} and {needed_memory} free memory ({} short of CPU, {} short of memory)",
                        plural(*short_of_cpu, "agent", "agents"),
                        plural(*short_of_memory, "agent", "agents"),
                    )
                }
            }
        }
    }
}

impl std::error::Error for Unplaceable {}

/// Whether `pool`'s runners may ever go to `a`: its trust labels hold the
/// pool's `agent_selector` and its architecture is one of the pool's.
pub fn admits(pool: &Pool, a: &AgentView) -> bool {
    labels::satisfies(&a.trust_labels, &pool.agent_selector) && pool.arch.contains(a.arch)
}

/// The trust labels, state and flags that let `a` take a new runner of
/// `pool` at all, before GPUs and free resources are looked at.
pub(crate) fn is_open_for(pool: &Pool, a: &AgentView) -> bool {
    admits(pool, a) && a.state == AgentState::Ready && !a.cordoned
}

/// A pool's runner image per architecture, normalised once per pool, to
/// tell warm agents from cold ones.
pub(crate) struct RunnerImages(Vec<(Arch, String)>);

impl RunnerImages {
    pub(crate) fn of(pool: &Pool) -> Self {
        RunnerImages(
            pool.arch
                .iter()
                .map(|arch| (arch, normalise(pool.image_for(arch))))
                .collect(),
        )
    }

    /// Whether `a` must pull the runner image first.
    pub(crate) fn cold_on(&self, a: &AgentView) -> bool {
        !self
            .0
            .iter()
            .any(|(arch, image)| *arch == a.arch && a.images.contains(image))
    }
}

/// The order among agents that fit: the smallest key is chosen. Warm agents
/// (`cold` false) first, then the strategy's order; ends in the agent id,
/// so it is total.
pub(crate) fn strategy_key(
    a: &AgentView,
    strategy: Strategy,
    need_cpu: u64,
    need_mem: u64,
    cold: bool,
) -> (bool, u64, u64, Uuid) {
    let free = a.free_ppm_after(need_cpu, need_mem);
    match strategy {
        Strategy::Spread => (cold, u64::from(a.runner_count), u64::MAX - free, a.id),
        Strategy::BinPack => (cold, free, u64::from(u32::MAX - a.runner_count), a.id),
    }
}

/// Chooses the agent (and GPUs) for one new runner of `pool`. Pure.
pub fn place(
    pool: &Pool,
    agents: &[AgentView],
    strategy: Strategy,
) -> Result<Placement, Unplaceable> {
    let selector = &pool.agent_selector;
    let trusted: Vec<&AgentView> = agents
        .iter()
        .filter(|a| labels::satisfies(&a.trust_labels, selector))
        .collect();
    if trusted.is_empty() && !selector.is_empty() {
        let mut missing: Labels = selector
            .iter()
            .filter(|(k, v)| !agents.iter().any(|a| a.trust_labels.get(*k) == Some(*v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if missing.is_empty() {
            missing = selector.clone();
        }
        return Err(Unplaceable::MissingLabels { missing });
    }
    let arch = pool.arch;
    let of_arch: Vec<&AgentView> = trusted
        .into_iter()
        .filter(|a| arch.contains(a.arch))
        .collect();
    if of_arch.is_empty() {
        if !selector.is_empty() {
            return Err(Unplaceable::NoLabelledAgentOfArch {
                arch,
                selector: selector.clone(),
                unlabelled: agents.iter().filter(|a| arch.contains(a.arch)).count(),
            });
        }
        return Err(Unplaceable::NoAgentOfArch { arch });
    }
    let ready: Vec<&AgentView> = of_arch
        .iter()
        .copied()
        .filter(|a| a.state == AgentState::Ready)
        .collect();
    if ready.is_empty() {
        let count = |s| of_arch.iter().filter(|a| a.state == s).count();
        return Err(Unplaceable::NoneReady {
            arch,
            unreachable: count(AgentState::Unreachable),
            lost: count(AgentState::Lost),
            revoked: count(AgentState::Revoked),
        });
    }
    let open: Vec<&AgentView> = ready.iter().copied().filter(|a| !a.cordoned).collect();
    if open.is_empty() {
        return Err(Unplaceable::AllCordoned {
            arch,
            ready: ready.len(),
        });
    }

    let candidates: Vec<(&AgentView, Vec<&GpuView>)> = match &pool.gpu {
        None => open.into_iter().map(|a| (a, Vec::new())).collect(),
        Some(req) => {
            let count = req.count as usize;
            let vendor = req.vendor;
            let of_vendor = |a: &'_ AgentView| a.gpus.iter().filter(|g| g.vendor == vendor).count();
            let with_vendor: Vec<&AgentView> =
                open.into_iter().filter(|a| of_vendor(a) >= count).collect();
            if with_vendor.is_empty() {
                return Err(Unplaceable::NoGpuOfVendor {
                    arch,
                    vendor,
                    count: req.count,
                });
            }
            let min = req.min_memory.map_or(0, ByteSize::bytes);
            let fits = |g: &GpuView| {
                g.vendor == vendor
                    && g.memory >= min
                    && (!vendor.uses_device_nodes() || g.render_node.is_some())
            };
            let fitting = |a: &'_ AgentView| a.gpus.iter().filter(|g| fits(g)).count();
            let suitable: Vec<&AgentView> = with_vendor
                .iter()
                .copied()
                .filter(|a| fitting(a) >= count)
                .collect();
            if suitable.is_empty() {
                let largest = with_vendor
                    .iter()
                    .flat_map(|a| &a.gpus)
                    .filter(|g| g.vendor == vendor)
                    .map(|g| g.memory)
                    .max()
                    .unwrap_or(0);
                return Err(Unplaceable::NoSuitableGpu {
                    vendor,
                    count: req.count,
                    min_memory: req.min_memory,
                    largest: ByteSize(largest),
                });
            }
            let free: Vec<(&AgentView, Vec<&GpuView>)> = suitable
                .iter()
                .filter_map(|a| free_gpus(pool, a).map(|gpus| (*a, gpus)))
                .collect();
            if free.is_empty() {
                let (mut assigned, mut total) = (0, 0);
                for a in &suitable {
                    for g in a.gpus.iter().filter(|g| fits(g)) {
                        total += 1;
                        assigned += usize::from(a.assigned_gpus.contains(&g.uuid));
                    }
                }
                return Err(Unplaceable::GpusBusy {
                    vendor,
                    count: req.count,
                    min_memory: req.min_memory,
                    assigned,
                    total,
                });
            }
            free
        }
    };

    let need_cpu = milli_cpu(pool.cpu_limit);
    let need_mem = pool.mem_limit.bytes();
    let images = RunnerImages::of(pool);
    let chosen = candidates
        .iter()
        .filter(|(a, _)| a.free_cpu_milli() >= need_cpu && a.free_memory() >= need_mem)
        .min_by_key(|(a, _)| strategy_key(a, strategy, need_cpu, need_mem, images.cold_on(a)));
    let Some((agent, gpus)) = chosen else {
        return Err(Unplaceable::NoResources {
            gpu: pool.gpu.as_ref().map(|g| (g.vendor, g.count)),
            needed_cpu: cpus(need_cpu),
            needed_memory: pool.mem_limit,
            candidates: candidates.len(),
            short_of_cpu: candidates
                .iter()
                .filter(|(a, _)| a.free_cpu_milli() < need_cpu)
                .count(),
            short_of_memory: candidates
                .iter()
                .filter(|(a, _)| a.free_memory() < need_mem)
                .count(),
            most_free_cpu: cpus(
                candidates
                    .iter()
                    .map(|(a, _)| a.free_cpu_milli())
                    .max()
                    .unwrap_or(0),
            ),
            most_free_memory: ByteSize(
                candidates
                    .iter()
                    .map(|(a, _)| a.free_memory())
                    .max()
                    .unwrap_or(0),
            ),
        });
    };

    Ok(placement_on(pool, agent, gpus))
}

/// The GPUs a runner of `pool` gets on `a`: fitting ones (vendor, memory,
/// a render node where the vendor needs one) not yet assigned, smallest
/// memory first, each uuid once; `None` when fewer than the pool asks for
/// are free. No GPU requirement: none.
pub(crate) fn free_gpus<'a>(pool: &Pool, a: &'a AgentView) -> Option<Vec<&'a GpuView>> {
    let Some(req) = &pool.gpu else {
        return Some(Vec::new());
    };
    let min = req.min_memory.map_or(0, ByteSize::bytes);
    let mut gpus: Vec<&GpuView> = a
        .gpus
        .iter()
        .filter(|g| {
            g.vendor == req.vendor
                && g.memory >= min
                && (!req.vendor.uses_device_nodes() || g.render_node.is_some())
                && !a.assigned_gpus.contains(&g.uuid)
        })
        .collect();
    // A uuid listed twice is still one GPU.
    gpus.sort_by(|x, y| (x.memory, &x.uuid).cmp(&(y.memory, &y.uuid)));
    gpus.dedup_by(|x, y| x.uuid == y.uuid);
    let count = req.count as usize;
    (gpus.len() >= count).then(|| {
        gpus.truncate(count);
        gpus
    })
}

/// A runner of `pool` on `agent` with `gpus`: their uuids, and their render
/// nodes for vendors passed in as device nodes.
pub(crate) fn placement_on(pool: &Pool, agent: &AgentView, gpus: &[&GpuView]) -> Placement {
    let render_nodes = if pool
        .gpu
        .as_ref()
        .is_some_and(|g| g.vendor.uses_device_nodes())
    {
        gpus.iter().filter_map(|g| g.render_node.clone()).collect()
    } else {
        Vec::new()
    };
    Placement {
        agent_id: agent.id,
        arch: agent.arch,
        gpus: gpus.iter().map(|g| g.uuid.clone()).collect(),
        render_nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_cpu_rounds_and_clamps() {
        assert_eq!(milli_cpu(1.5), 1500);
        assert_eq!(milli_cpu(0.1 + 0.2), 300);
        assert_eq!(milli_cpu(-1.0), 0);
        assert_eq!(milli_cpu(f64::NAN), 0);
        assert_eq!(milli_cpu(f64::INFINITY), 0);
    }

    #[test]
    fn reserve_accumulates_without_float_drift() {
        let mut a = AgentView::new(Uuid::nil(), "h", Arch::X86_64, 1, 1 << 30);
        let mut pool = Pool::new("p", &["p"], Arch::X86_64);
        pool.cpu_limit = 0.1;
        pool.mem_limit = ByteSize::mib(16);
        let p = Placement {
            agent_id: a.id,
            arch: Arch::X86_64,
            gpus: vec![],
            render_nodes: vec![],
        };
        for _ in 0..10 {
            a.reserve(&pool, &p);
        }
        assert_eq!(a.free_cpu_milli(), 0);
        assert_eq!(a.runner_count, 10);
        assert_eq!(a.free_memory(), (1 << 30) - 160 * (1 << 20));
    }

    #[test]
    fn gpu_phrases_read_well() {
        assert_eq!(gpus_phrase(GpuVendor::Nvidia, 1, false), "an NVIDIA GPU");
        assert_eq!(gpus_phrase(GpuVendor::Amd, 1, true), "a free AMD GPU");
        assert_eq!(gpus_phrase(GpuVendor::Intel, 2, true), "2 free Intel GPUs");
    }
}
