//! Pure scheduling logic: runner pools, job-to-pool matching, placement of
//! runners on agents, and the per-tick demand plan.
//!
//! Nothing here does I/O, reads the clock, awaits, or touches the database or
//! GitLab: every decision is a function of its arguments (time included), so
//! it is tested with fixtures and property tests, and the reconciler that
//! executes the decisions stays thin.
//!
//! - [`pool`]: pool configuration (`[[pools]]`), built-in defaults,
//!   validation, and rendering a pool's command/env templates
//!   ([`template`]).
//! - [`matching`]: GitLab's rule (a job's tags must be a subset of the
//!   runner's; untagged jobs only go to `run_untagged` runners) and counting
//!   each pending job once, for its most specific pool.
//! - [`placement`]: choosing an agent and GPUs for one runner, or saying why
//!   none fits.
//! - [`plan`]: per pool, start runners up to pending + `idle_min` available
//!   ones within `max_runners`, stop idle runners past `idle_timeout` that
//!   are not needed, never stop busy ones, never give a GPU twice.
//!
//! Each runner container runs `gitlab-runner run-single --max-builds 1`: it
//! serves one job and exits. Demand is counted per pool, not per job:
//! AutoGit does not promise which runner takes which job.

pub mod bytesize;
pub mod hardware;
pub mod matching;
pub mod placement;
pub mod plan;
pub mod pool;
pub mod template;

pub use bytesize::ByteSize;
pub use hardware::{Arch, GpuVendor, UnknownArch};
pub use matching::{Demand, count_demand, pool_accepts, pool_for_job, pools_for_job};
pub use placement::{AgentState, AgentView, GpuView, Placement, Strategy, Unplaceable, place};
pub use plan::{
    Plan, PlanInput, RunnerState, RunnerView, Start, Stop, StopReason, Unmet, UnmetReason, plan,
};
pub use pool::{
    GpuRequirement, Mount, Pool, PoolError, RunnerType, default_command, pools_or_defaults,
    validate_pools,
};
pub use template::{RenderedRunner, TemplateError, TemplateVars, render_template};
