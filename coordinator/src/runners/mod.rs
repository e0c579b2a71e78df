//! Runners: wanted state (the scheduler's plan) and observed state (agents'
//! container reports, GitLab's job events) kept apart, with the
//! [`reconciler`] moving one toward the other.
//!
//! * [`model`]: a runner's phases and the operator-facing view.
//! * [`record`]: a runner's lifecycle record, one typed value stored in one step.
//! * [`clock`]: wall time the reconciler reads (tests drive it with tokio's clock).
//! * [`spec`]: pool + placement + runner token → the container spec sent to an agent.
//! * [`template`]: the placeholders in a pool's `command` and `env`.
//! * [`devices`]: which device nodes / NVIDIA device request the placed GPUs become.
//! * [`reconciler`]: the actor that creates GitLab runners, tells agents to
//!   start/stop containers, adopts or stops what agents report, and deletes
//!   GitLab runners when containers are gone.
//! * [`ownership`]: the mark AutoGit puts on the GitLab runners it creates,
//!   and the listing of marked runners (the reconciler decides which to delete).
//! * [`wait_objective`]: per pool, the share of jobs whose wait for a runner
//!   met the pool's `wait_objective`, over 1 h and 24 h.

pub mod clock;
pub mod devices;
pub mod model;
pub mod ownership;
pub mod reconciler;
pub mod record;
pub mod spec;
pub mod template;
pub mod wait_objective;

pub use clock::Clock;
pub use model::{Phase, RunnerView};
pub use reconciler::{
    Command, DemandSource, Reconciler, ReconcilerConfig, ReconcilerHandle, ReconcilerStatus,
};
pub use record::RunnerRecord;
