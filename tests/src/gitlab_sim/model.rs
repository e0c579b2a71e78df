//! Public types for driving and inspecting the simulator.
//!
//! These are the simulator's own test-control shapes (the `/sim/*` endpoints and the
//! [`SimHandle`](super::SimHandle) methods), not GitLab entities: GitLab's JSON is built
//! in `entities.rs`. Every type here is `Serialize + Deserialize` so a test talking to a
//! separate simulator process over HTTP can parse exactly what an in-process test gets.
//! No type here carries a token except [`CreatedUser`], which exists to hand one out.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A pending job to enqueue (`POST /sim/jobs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewJob {
    /// Project the job belongs to; the project is created if it does not exist.
    pub project_id: u64,
    /// The job's `tags:` from `.gitlab-ci.yml`; empty means an untagged job.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Job name (default `build`).
    #[serde(default)]
    pub name: Option<String>,
    /// Stage name (default `test`).
    #[serde(default)]
    pub stage: Option<String>,
    /// How long the test runner should "run" the job; sent to runners as the job
    /// variable `AUTOGIT_SIM_DURATION_MS`.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Whether the job runs for a protected ref (default true: `main` is protected by
    /// default in GitLab). `ref_protected` runners only take protected jobs.
    #[serde(default)]
    pub protected: Option<bool>,
}

/// A job as the simulator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimJob {
    pub id: u64,
    pub project_id: u64,
    pub pipeline_id: u64,
    pub name: String,
    pub stage: String,
    pub tags: Vec<String>,
    /// GitLab status string: `created`, `pending`, `running`, `success`, `failed`, `canceled`.
    pub status: String,
    /// How many times `POST /jobs/request` handed this job out. GitLab hands a job to
    /// exactly one runner, so anything above 1 is a simulator bug that tests can catch.
    pub assignment_count: u32,
    pub runner_id: Option<u64>,
    /// `system_id` of the runner manager (machine) that took the job.
    pub runner_system_id: Option<String>,
    pub duration_ms: u64,
    pub protected: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub failure_reason: Option<String>,
    /// Bytes of job log received through `PATCH /jobs/:id/trace`.
    pub trace_bytes: usize,
}

/// A webhook target to register (`POST /sim/hooks`).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct NewHook {
    pub url: String,
    /// Secret sent as `X-Gitlab-Token`.
    #[serde(default)]
    pub token: Option<String>,
    /// Only this project's job events; `None` means every project (like a group hook).
    #[serde(default)]
    pub project_id: Option<u64>,
}

impl fmt::Debug for NewHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewHook")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("project_id", &self.project_id)
            .finish()
    }
}

/// A registered webhook and its auto-disabling state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimHook {
    pub id: u64,
    pub url: String,
    pub project_id: Option<u64>,
    /// Consecutive failed deliveries (GitLab's `recent_failures`).
    pub recent_failures: u32,
    pub disabled_until: Option<String>,
    /// GitLab's `alert_status`: `executable`, `temporarily_disabled` or `disabled`.
    pub alert_status: String,
    pub deleted: bool,
}

/// What happened to one delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The receiver answered 2xx or 3xx.
    Delivered { status: u16 },
    /// The receiver answered another status, timed out, or could not be reached.
    Failed { status: Option<u16>, error: String },
    /// Not sent because the `drop_webhooks` fault was on.
    Dropped,
    /// Not sent because the hook was (temporarily or permanently) disabled.
    SkippedDisabled,
}

/// One try at delivering an event to a hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimAttempt {
    /// `X-Gitlab-Webhook-UUID`: new for every attempt.
    pub webhook_uuid: String,
    pub at: String,
    pub outcome: AttemptOutcome,
}

/// One job event routed to one hook, with every attempt at delivering it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimDelivery {
    pub id: u64,
    pub hook_id: u64,
    pub job_id: u64,
    pub build_status: String,
    /// `X-Gitlab-Event-UUID`: one per event, shared by all hooks and attempts.
    pub event_uuid: String,
    /// `Idempotency-Key`: one per (event, hook), the same on every retry.
    pub idempotency_key: String,
    pub attempts: Vec<SimAttempt>,
}

/// Fault injection settings (`POST /sim/faults`). Fields left out keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultSpec {
    /// Clear every fault before applying the other fields.
    #[serde(default)]
    pub reset: bool,
    /// Delay added to every matching API request.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Delay added to every matching API answer *after* GitLab did the work
    /// (a slow network on the way back): the runner exists, the caller does not know yet.
    #[serde(default)]
    pub hold_response_ms: Option<u64>,
    /// Answer the next N matching API requests with `fail_status`.
    #[serde(default)]
    pub fail_next: Option<u32>,
    /// Status for `fail_next` (default 500; 502 and 503 also make sense).
    #[serde(default)]
    pub fail_status: Option<u16>,
    /// Answer the next N matching API requests with 429 and `Retry-After`.
    #[serde(default)]
    pub rate_limit_next: Option<u32>,
    /// `Retry-After` seconds for 429 answers (default 60, GitLab's throttle period).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// Lose every webhook delivery while on (recorded as `dropped`).
    #[serde(default)]
    pub drop_webhooks: Option<bool>,
    /// Only requests whose path starts with this are affected (default: all of `/api`).
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// The faults in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimFaults {
    pub latency_ms: u64,
    pub hold_response_ms: u64,
    pub fail_next: u32,
    pub fail_status: u16,
    pub rate_limit_next: u32,
    pub retry_after_secs: u64,
    pub drop_webhooks: bool,
    pub path_prefix: Option<String>,
}

impl Default for SimFaults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            hold_response_ms: 0,
            fail_next: 0,
            fail_status: 500,
            rate_limit_next: 0,
            retry_after_secs: 60,
            drop_webhooks: false,
            path_prefix: None,
        }
    }
}

/// One machine that used a runner's token (GitLab's "runner manager").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimManager {
    pub id: u64,
    pub system_id: String,
    pub version: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub created_at: String,
    pub contacted_at: String,
}

/// A runner, including deleted ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimRunner {
    pub id: u64,
    pub runner_type: String,
    pub description: String,
    pub paused: bool,
    pub locked: bool,
    pub run_untagged: bool,
    pub tags: Vec<String>,
    pub access_level: String,
    pub maximum_timeout: Option<u64>,
    pub project_ids: Vec<u64>,
    pub group_id: Option<u64>,
    pub created_at: String,
    pub contacted_at: Option<String>,
    pub deleted: bool,
    pub deleted_at: Option<String>,
    pub managers: Vec<SimManager>,
    /// Jobs handed to this runner, in order.
    pub jobs: Vec<u64>,
}

/// A user to create (`POST /sim/users`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewUser {
    pub username: String,
    #[serde(default)]
    pub admin: bool,
    /// Projects the user is a member (Maintainer) of; created if missing.
    #[serde(default)]
    pub project_ids: Vec<u64>,
}

/// A created user with its personal access token (shown once, like GitLab).
#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedUser {
    pub id: u64,
    pub username: String,
    pub is_admin: bool,
    pub token: String,
}

impl fmt::Debug for CreatedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("is_admin", &self.is_admin)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

/// A user as shown in the state dump (no token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimUser {
    pub id: u64,
    pub username: String,
    pub is_admin: bool,
    pub project_ids: Vec<u64>,
}

/// A project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimProject {
    pub id: u64,
    pub path_with_namespace: String,
    pub group_id: u64,
}

/// Everything the simulator knows (`GET /sim/state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimSnapshot {
    pub users: Vec<SimUser>,
    pub projects: Vec<SimProject>,
    pub jobs: Vec<SimJob>,
    pub runners: Vec<SimRunner>,
    pub hooks: Vec<SimHook>,
    pub deliveries: Vec<SimDelivery>,
    pub faults: SimFaults,
    /// Requests served per route, keyed `"METHOD /matched/path"`.
    pub requests: BTreeMap<String, u64>,
}
