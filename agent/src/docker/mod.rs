//! Runner containers through the Docker Engine API.
//!
//! The coordinator's `StartRunner` becomes a validated [`RunnerSpec`]
//! ([`spec`]), which [`mapping`] turns into a container (labels, limits,
//! mounts, GPUs). [`engine`] is the Docker side behind the
//! [`ContainerEngine`] trait, and [`supervisor`] is the actor that runs each
//! runner's `lifecycle` and reports [`RunnerEvent`]s ([`events`]).
//!
//! Images apart from runners: [`warm`] pulls what the coordinator's
//! `WarmImages` names ahead of need, [`pulled`] remembers what AutoGit
//! pulled, [`image_gc`] removes those images under disk pressure, and
//! [`images`] is the Docker surface they share (and the inventory's list of
//! held images).
//!
//! ```text
//! StartRunner ─TryFrom─▶ RunnerSpec ─▶ SupervisorHandle::start ─▶ Lifecycle task
//!                                                               │ pull? create start wait remove
//!                                                               ▼
//!             RunnerStatus ◀─From─ RunnerEvent ◀── mpsc ── Supervisor actor
//! ```

pub mod engine;
pub mod events;
pub mod image_gc;
pub mod images;
pub mod issued;
pub mod leftovers;
mod lifecycle;
pub mod mapping;
pub mod pulled;
pub mod spec;
pub mod supervisor;
pub mod warm;

pub use engine::{
    ContainerEngine, DockerEngine, EngineError, EngineInfo, normalise_arch, unavailable_info,
};
pub use events::{ContainerStatus, ManagedContainer, RunnerEvent, RunnerState};
pub use leftovers::{GcPolicy, Leftover, LeftoverCount, LeftoverKind};
pub use spec::{
    BindMount, EnvVar, GpuAccess, RegistryAuth, RunnerId, RunnerSpec, SpecError, StopRequest,
};
pub use supervisor::{
    StartOutcome, StopOutcome, SupervisorConfig, SupervisorError, SupervisorHandle, spawn,
};
