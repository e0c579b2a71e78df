//! Everything the coordinator knows about talking to GitLab.
//!
//! - [`GitLab`]: the only way the rest of the coordinator reaches GitLab. The
//!   real implementation is [`GitLabClient`] (REST `/api/v4` plus one GraphQL
//!   query); tests point that same client at the project's GitLab simulator.
//! - Domain records: [`Job`], [`JobStatus`], [`JobScope`], [`Project`],
//!   [`User`], [`Version`], [`RunnerInfo`], [`CreateRunner`],
//!   [`CreatedRunner`], [`RunnerType`].
//! - [`webhook`]: the Job Hook payload, its headers and the constant-time
//!   secret check.
//!
//! Behaviour follows GitLab's documentation (`doc/api/*.md` in
//! `gitlabhq/gitlabhq`): pagination through `Link`/`X-Next-Page`, 429 with
//! `Retry-After`, 401/403/404 as typed errors, `POST /user/runners` for the
//! `glrt-` token workflow.

mod client;
mod config;
mod error;
mod graphql;
mod job;
mod pagination;
mod rate_limit;
mod retry;
mod runner;
mod types;
pub mod webhook;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;

pub use client::GitLabClient;
pub use config::{
    DEFAULT_JOB_REQUESTS_PER_MINUTE, DEFAULT_MAX_BODY_BYTES, DEFAULT_RUNNER_REQUESTS_PER_MINUTE,
    GITLAB_DEFAULT_JOBS_RATE_LIMIT, GitLabClientConfig, RequestObserver, endpoint_template,
};
pub use error::{GitLabError, GitLabResult};
pub use graphql::PENDING_JOBS_QUERY;
pub use job::{Job, JobPipeline, JobRunnerRef, JobScope, JobStatus};
pub use pagination::{DEFAULT_MAX_PAGES, DEFAULT_PER_PAGE};
pub use rate_limit::RateLimiter;
pub use retry::RetryPolicy;
pub use runner::{
    AccessLevel, CreateRunner, CreatedRunner, RunnerFilter, RunnerInfo, RunnerKind, RunnerStatus,
    RunnerType,
};
pub use types::{Project, User, Version};
pub use wire::parse_gitlab_time;

/// A shareable handle to some [`GitLab`] implementation.
pub type SharedGitLab = Arc<dyn GitLab>;

/// The GitLab operations AutoGit needs, and nothing more.
///
/// Every method is one logical call: listings return all pages. Errors are
/// [`GitLabError`]; transient ones have already been retried within the
/// client's bounds when they come back.
#[async_trait]
pub trait GitLab: Send + Sync {
    /// `GET /user`: who the token belongs to (and whether it is an admin).
    async fn current_user(&self) -> GitLabResult<User>;

    /// `GET /version`.
    async fn version(&self) -> GitLabResult<Version>;

    /// `GET /projects?membership=true`: every project the token's user is a
    /// member of (all pages).
    async fn member_projects(&self) -> GitLabResult<Vec<Project>>;

    /// `GET /projects/:id`.
    async fn project(&self, project_id: u64) -> GitLabResult<Project>;

    /// `GET /projects/:id/jobs?scope[]=...`: the project's jobs in any of
    /// `scopes` (all jobs when empty), all pages. `project_id` is filled in
    /// on every returned job.
    async fn jobs(&self, project_id: u64, scopes: &[JobScope]) -> GitLabResult<Vec<Job>>;

    /// `GET /projects/:id/jobs/:job_id`, for example to learn the tags of a
    /// job a webhook announced.
    async fn job(&self, project_id: u64, job_id: u64) -> GitLabResult<Job>;

    /// Every pending job on the instance, through GraphQL
    /// `jobs(statuses: [PENDING])`. Needs an administrator's token (with the
    /// `admin_mode` scope where Admin Mode is on). GitLab answers other
    /// tokens with an **empty list**, so check [`GitLab::current_user`]'s
    /// `is_admin` before trusting an empty result.
    async fn instance_pending_jobs(&self) -> GitLabResult<Vec<Job>>;

    /// `POST /user/runners`: creates a runner and returns its `glrt-` token.
    /// Not retried once GitLab may have processed it (a second try could
    /// create a second runner).
    async fn create_runner(&self, request: &CreateRunner) -> GitLabResult<CreatedRunner>;

    /// `DELETE /runners/:id`. A runner that is already gone is
    /// [`GitLabError::NotFound`]; callers treat that as success.
    async fn delete_runner(&self, runner_id: u64) -> GitLabResult<()>;

    /// `GET /runners` or, with [`RunnerFilter::all`], `GET /runners/all`
    /// (admin), filtered, all pages.
    async fn list_runners(&self, filter: &RunnerFilter) -> GitLabResult<Vec<RunnerInfo>>;
}
