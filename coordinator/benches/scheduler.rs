//! How fast the pure scheduler plans a large fleet: `plan()` for N agents
//! and N/2 pending jobs across 20 pools (x86_64, arm64, riscv64, NVIDIA),
//! with a runner already busy on every fourth agent.
//!
//! `cargo bench -p autogit-coordinator --bench scheduler` (release build).
//! Criterion prints the time per plan and the placements per second
//! (`thrpt`, one element = one placed runner), for `plan` (`indexed`) and,
//! side by side, for `plan_by_scan` (`scan`: `place` over every agent for
//! every start, the specification the index must match). The goal of issue 10 is
//! 10,000 agents and 5,000 jobs in at most 50 ms, growing linearly; the
//! sizes 1k, 10k and 20k show the growth. Figures: `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use autogit_coordinator::scheduler::{
    AgentView, Arch, ByteSize, GpuVendor, GpuView, PlanInput, Pool, RunnerState, RunnerView,
    Strategy, plan, plan_by_scan,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use time::OffsetDateTime;
use uuid::Uuid;

const GIB: u64 = 1 << 30;
const POOLS: usize = 20;

/// Pool `i` of 20: 12 x86_64, 4 arm64, 2 riscv64, 2 x86_64 with one NVIDIA GPU.
fn pool(i: usize) -> Pool {
    let name = format!("pool-{i:02}");
    let arch = match i {
        0..=11 | 18 | 19 => Arch::X86_64,
        12..=15 => Arch::Aarch64,
        _ => Arch::Riscv64,
    };
    let mut p = Pool::new(&name, &[name.as_str()], arch);
    if i >= 18 {
        p = p.with_gpu(GpuVendor::Nvidia, 1);
    }
    p.cpu_limit = 1.0 + (i % 2) as f64;
    p.mem_limit = ByteSize::gib(2 + (i % 3) as u64);
    p.max_runners = 100_000;
    p.idle_min = 0;
    p
}

/// Agent `i`: 70 % x86_64 (one in ten with 4 NVIDIA GPUs), 20 % arm64,
/// 10 % riscv64; 16 to 64 threads, 64 to 256 GiB.
fn agent(i: usize) -> AgentView {
    let arch = match i % 10 {
        0..=6 => Arch::X86_64,
        7 | 8 => Arch::Aarch64,
        _ => Arch::Riscv64,
    };
    let id = Uuid::from_u128(0xA6E7_0000_0000_0000_0000_0000_0000_0000 | i as u128);
    let mut a = AgentView::new(
        id,
        &format!("host-{i}"),
        arch,
        16 << (i % 3),
        (64 * GIB) << (i % 3),
    );
    if arch == Arch::X86_64 && i % 7 == 3 {
        a.gpus = (0..4)
            .map(|g| GpuView {
                vendor: GpuVendor::Nvidia,
                uuid: format!("GPU-{i:08x}-{g}"),
                memory: 80 * GIB,
                render_node: None,
            })
            .collect();
    }
    a
}

/// `agents` agents, `jobs` pending jobs spread over the pools in
/// proportion to their architecture's share, a busy runner on every
/// fourth agent.
fn input(agents: usize, jobs: usize) -> PlanInput {
    let pools: Vec<Pool> = (0..POOLS).map(pool).collect();
    let agents: Vec<AgentView> = (0..agents).map(agent).collect();
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let runners: Vec<RunnerView> = agents
        .iter()
        .step_by(4)
        .enumerate()
        .map(|(n, a)| {
            let p = pools
                .iter()
                .find(|p| p.arch.contains(a.arch) && p.gpu.is_none())
                .unwrap();
            RunnerView {
                id: Uuid::from_u128(0xB0_0000_0000 | n as u128),
                pool: p.name.clone(),
                agent_id: a.id,
                gpus: Vec::new(),
                cpu: p.cpu_limit,
                memory: p.mem_limit.bytes(),
                state: RunnerState::Busy,
                created_at: now,
            }
        })
        .collect();
    let mut pending = BTreeMap::new();
    for j in 0..jobs {
        // 70 % x86 (of it one in ten on GPU pools), 20 % arm64, 10 % riscv64.
        let p = match j % 10 {
            0..=6 if j % 70 == 0 => 18 + (j / 70) % 2,
            0..=6 => (j / 10) % 12,
            7 | 8 => 12 + (j / 10) % 4,
            _ => 16 + (j / 10) % 2,
        };
        *pending.entry(pools[p].name.clone()).or_insert(0u32) += 1;
    }
    PlanInput {
        pools,
        pending,
        runners,
        agents,
        strategy: Strategy::Spread,
        now,
    }
}

fn bench_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for agents in [1_000usize, 10_000, 20_000] {
        let jobs = agents / 2;
        let input = input(agents, jobs);
        let placed = plan(&input).starts.len();
        assert_eq!(placed, jobs, "every pending job gets a runner");
        group.throughput(Throughput::Elements(placed as u64));
        let size = format!("{agents}x{jobs}");
        group.bench_with_input(BenchmarkId::new("indexed", &size), &input, |b, input| {
            b.iter(|| black_box(plan(black_box(input))))
        });
        // The specification it replaced, side by side (too slow beyond 10k).
        if agents <= 10_000 {
            group.bench_with_input(BenchmarkId::new("scan", &size), &input, |b, input| {
                b.iter(|| black_box(plan_by_scan(black_box(input))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
