//! Pure scheduling logic: runner pools, job-to-pool matching, placement of
//! runners on agents, and the per-tick demand plan.
//!
//! Nothing here does I/O, reads the clock, awaits, or touches the database or
//! GitLab: every decision is a function of its arguments (time included), so
//! it is tested with fixtures and property tests (`tests/scheduler*.rs`),
//! and the reconciler that executes the decisions stays thin.
//!
//! It depends on nothing but its own types, `std`, `time`, `uuid` and
//! `secrecy` (a pool's registry password, [`registry`]): the
//! config spelling of its types (serde) is in `config/pool.rs` and
//! `config/values.rs`, and what a placement becomes as a container is in
//! `runners/`.
//!
//! Each runner container runs `gitlab-runner run-single --max-builds 1`: it
//! serves one job and exits. Demand is counted per pool, not per job:
//! AutoGit does not promise which runner takes which job.
//!
//! # Pools ([`pool`])
//! A pool is one kind of runner: the GitLab tags it carries, the hardware it
//! needs (`arch`, optional `gpu`), its limits and its sizing (`max_runners`,
//! `idle_min`, `idle_timeout`). [`Pool`] is plain data: the `[[pools]]`
//! schema, defaults and validation are in `config/pool.rs`, and the runner
//! container (templates, device nodes, mounts) is built in `runners/`
//! (`runners/spec.rs`, `runners/template.rs`, `runners/devices.rs`).
//!
//! # Matching ([`matching`])
//! A job fits a pool when the job's tags are a subset of the pool's tags; an
//! untagged job fits only pools with `run_untagged`. Each pending job is
//! counted for exactly one pool: the fitting pool with the fewest tags beyond
//! the job's, then the first in config order.
//!
//! # Trust labels ([`labels`])
//! Agents carry trust labels set by operators (from the join token at
//! enrollment, or `agent label set`), never by the agent itself. A pool with
//! an `agent_selector` is placed only on agents whose trust labels hold
//! every pair of it, whatever hardware they claim.
//!
//! # Placement ([`placement`])
//! A new runner goes to an agent whose trust labels meet the pool's
//! `agent_selector`, of the pool's arch, that is `Ready`, not
//! cordoned, has enough unassigned GPUs of the vendor (with `min_memory`),
//! and enough free CPU and memory for the pool's limits. Agents that hold
//! the pool's runner image come first ([`images`]); then `Spread` prefers
//! the fewest runners then the most free resources, `BinPack` the fullest
//! agent that fits; ties go to the lowest agent id. When nothing fits, the
//! error names the most relevant blocker ("all NVIDIA GPUs busy (4 of 4
//! assigned)"). [`place`] is the specification; a plan places its starts
//! through an index that keeps each pool's candidates ordered (`index.rs`),
//! so a plan grows with agents + jobs, not agents × jobs, and a property
//! test holds it to the same plan as [`plan_by_scan`].
//!
//! # The plan ([`plan`](mod@plan))
//! Per pool: *available* = provisioning + idle runners, *wanted* = pending +
//! `idle_min`. Start wanted - available runners, never taking the pool above
//! `max_runners` (counting every runner that is not stopping); each start
//! reserves its CPU, memory and GPUs before the next is placed, so no GPU is
//! given twice. Stop idle runners past `idle_timeout` only while available >
//! wanted; stop idle, then provisioning, runners when a pool is above
//! `max_runners`; never stop busy runners. The same input always yields the
//! same plan.

pub mod bytesize;
pub mod hardware;
pub mod images;
mod index;
pub mod labels;
pub mod matching;
pub mod placement;
pub mod plan;
pub mod pool;
pub mod registry;
pub mod schedule;

pub use bytesize::ByteSize;
pub use hardware::{Arch, Archs, GpuVendor, UnknownArch};
pub use labels::{LabelError, Labels};
pub use matching::{Demand, count_demand, pool_accepts, pool_for_job, pools_for_job};
pub use placement::{AgentState, AgentView, GpuView, Placement, Strategy, Unplaceable, place};
pub use plan::{
    Plan, PlanInput, RunnerState, RunnerView, Start, Stop, StopReason, Unmet, UnmetReason, plan,
    plan_by_scan,
};
pub use pool::{GpuRequirement, Mount, Pool, RunnerType};
pub use registry::{PasswordSource, RegistryAuth};
pub use schedule::{Sizing, Window};
