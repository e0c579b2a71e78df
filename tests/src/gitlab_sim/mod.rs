//! A GitLab simulator for end-to-end tests, written from GitLab's documented API.
//!
//! It serves, under `/api/v4`, the parts of GitLab AutoGit talks to, with GitLab's field
//! names, status codes, error bodies, pagination and headers:
//! - users and instance: `GET /user`, `GET /version`;
//! - projects and jobs: `GET /projects` (membership, search, order, pagination),
//!   `GET /projects/:id`, `GET /projects/:id/jobs` (`scope` / `scope[]`),
//!   `GET /projects/:id/jobs/:job_id` (+ `/trace`, `POST .../cancel`),
//!   `GET|POST /projects/:id/hooks`, `DELETE /projects/:id/hooks/:hook_id`;
//! - runners: `POST /user/runners`, `GET /runners`, `GET /runners/all`,
//!   `GET|DELETE /runners/:id`, `GET /runners/:id/managers`, `DELETE /runners` (token);
//! - the runner protocol: `POST /runners/verify`, `POST /jobs/request`,
//!   `PUT /jobs/:id`, `PATCH /jobs/:id/trace`;
//! - `POST /api/graphql` for the admin `jobs(statuses: ...)` query only.
//!
//! Job status changes send Job Hook webhooks with GitLab's headers and body (see
//! `webhooks.rs` for delivery and auto-disabling). Tests drive and inspect it through
//! `/sim/*` (loopback only, no auth) or the same operations on [`SimHandle`].
//!
//! Simplifications, each chosen so tests stay faithful where AutoGit depends on GitLab:
//! one group (`autogit-sim`, id 1) holds every project; all projects are private and
//! owned by `root`; users made with `/sim/users` are Maintainers of the projects named;
//! webhooks only go to loopback URLs (as if "Allow requests to the local network" were
//! on); runners never become `stale`; there is no long polling on `/jobs/request`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use autogit_tests::gitlab_sim::{self, NewJob, SimConfig};
//! let sim = gitlab_sim::spawn(SimConfig::default()).await?;
//! let job = sim.handle().create_job(NewJob { project_id: 7, tags: vec!["gpu".into()], ..Default::default() });
//! assert_eq!(job.status, "pending");
//! sim.shutdown().await
//! # }
//! ```

mod api;
mod entities;
mod faults;
mod matching;
pub mod model;
mod pagination;
mod params;
mod server;
mod state;
mod timefmt;
mod webhooks;

pub use model::{
    AttemptOutcome, CreatedUser, FaultSpec, NewHook, NewJob, NewUser, SimAttempt, SimDelivery,
    SimFaults, SimHook, SimJob, SimManager, SimProject, SimRunner, SimSnapshot, SimUser,
};
pub use server::{SIM_GITLAB_VERSION, SimConfig, SimHandle, SimServer, serve, spawn, spawn_on};
