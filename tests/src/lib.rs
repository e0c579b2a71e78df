//! End-to-end harness and GitLab simulator for AutoGit.
//!
//! * [`harness`]: real coordinator and agent processes over loopback.
//! * [`gitlab_sim`]: GitLab's documented REST, runner API and Job Hooks.
//! * [`runner_image`]: the local test runner image, built without any registry.
//! * [`registry`]: a real local OCI registry (`docker-registry`), one that
//!   answers 500, and one that cannot be reached.
//! * [`faults`]: the fault suite's scenarios and counters.

pub mod faults;
pub mod fleet_sim;
pub mod gitlab_sim;
pub mod harness;
pub mod machine;
pub mod postgres;
pub mod registry;
pub mod runner_image;
