//! GitLab's Job Hook: the webhook a project (or group) sends on every status
//! change of a job, and how to authenticate and parse it.
//!
//! Documented in GitLab's `doc/user/project/integrations/webhook_events.md`
//! ("Job events", header `X-Gitlab-Event: Job Hook`, `object_kind: "build"`).
//! Many fields are `null` (a pending job has no `runner`, no start time), and
//! unknown fields are ignored so a newer GitLab does not break parsing. The
//! payload does **not** carry the job's own tags: fetch the job for those.
//!
//! The shared secret arrives in plain text in `X-Gitlab-Token`; compare it
//! with [`token_matches`], which runs in constant time.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::job::JobStatus;
use super::runner::RunnerKind;
use super::wire;

/// Header naming the event (`Job Hook` for job events).
pub const HEADER_EVENT: &str = "X-Gitlab-Event";
/// Header carrying the hook's secret token in plain text.
pub const HEADER_TOKEN: &str = "X-Gitlab-Token";
/// Header identifying the webhook configuration that sent this delivery.
pub const HEADER_WEBHOOK_UUID: &str = "X-Gitlab-Webhook-UUID";
/// Header identifying the event (shared by all hooks that receive it).
pub const HEADER_EVENT_UUID: &str = "X-Gitlab-Event-UUID";
/// Header that stays the same across GitLab's retries of one event
/// (GitLab 17.4 and later): the de-duplication key.
pub const HEADER_IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Header with the sending GitLab instance's URL.
pub const HEADER_INSTANCE: &str = "X-Gitlab-Instance";
/// `X-Gitlab-Event` value of job events.
pub const JOB_HOOK_EVENT: &str = "Job Hook";

/// Why a webhook body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The body is not JSON, or a field has the wrong type.
    #[error("webhook body is not a valid Job Hook JSON document: {0}")]
    Malformed(String),
    /// Valid JSON, but another kind of event (push, pipeline, ...).
    #[error("webhook is a {object_kind:?} event, not a job event (object_kind \"build\")")]
    NotAJobEvent {
        /// The `object_kind` the body carried (empty if none).
        object_kind: String,
    },
}

/// The runner a job was assigned to, as the hook reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRunner {
    /// Runner id.
    pub id: u64,
    /// Runner description.
    #[serde(default)]
    pub description: Option<String>,
    /// Runner scope (`None` if absent or a value this code does not know).
    #[serde(default, deserialize_with = "wire::lenient")]
    pub runner_type: Option<RunnerKind>,
    /// Whether the runner is active.
    #[serde(default)]
    pub active: Option<bool>,
    /// Whether it is an instance runner.
    #[serde(default)]
    pub is_shared: Option<bool>,
    /// The runner's tags (not the job's).
    #[serde(default, deserialize_with = "wire::null_default")]
    pub tags: Vec<String>,
}

/// The user who triggered the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookUser {
    /// User id.
    #[serde(default)]
    pub id: Option<u64>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Login name.
    #[serde(default)]
    pub username: Option<String>,
}

/// The project block of the hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookProject {
    /// Project id.
    #[serde(default)]
    pub id: Option<u64>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// `group/project`.
    #[serde(default)]
    pub path_with_namespace: Option<String>,
    /// Project page.
    #[serde(default)]
    pub web_url: Option<String>,
}

/// The `commit` block. Its `id` is the **pipeline** id, not a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCommit {
    /// Pipeline id (sic).
    #[serde(default)]
    pub id: Option<u64>,
    /// Commit SHA.
    #[serde(default)]
    pub sha: Option<String>,
    /// Pipeline name (`workflow:name`), if any.
    #[serde(default)]
    pub name: Option<String>,
    /// Pipeline status.
    #[serde(default)]
    pub status: Option<String>,
}

/// A Job Hook payload (`object_kind: "build"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobHook {
    /// Always `build`.
    pub object_kind: String,
    /// Job id.
    pub build_id: u64,
    /// Job name.
    #[serde(default)]
    pub build_name: Option<String>,
    /// Stage name.
    #[serde(default)]
    pub build_stage: Option<String>,
    /// New status of the job.
    pub build_status: JobStatus,
    /// When the job was created.
    #[serde(
        default,
        deserialize_with = "wire::opt_time",
        serialize_with = "time::serde::rfc3339::option::serialize"
    )]
    pub build_created_at: Option<OffsetDateTime>,
    /// When a runner started it (`null` until then).
    #[serde(
        default,
        deserialize_with = "wire::opt_time",
        serialize_with = "time::serde::rfc3339::option::serialize"
    )]
    pub build_started_at: Option<OffsetDateTime>,
    /// When it finished (`null` until then).
    #[serde(
        default,
        deserialize_with = "wire::opt_time",
        serialize_with = "time::serde::rfc3339::option::serialize"
    )]
    pub build_finished_at: Option<OffsetDateTime>,
    /// Seconds it ran.
    #[serde(default)]
    pub build_duration: Option<f64>,
    /// Seconds it waited for a runner.
    #[serde(default)]
    pub build_queued_duration: Option<f64>,
    /// Whether a failure is allowed.
    #[serde(default)]
    pub build_allow_failure: Option<bool>,
    /// Why it failed (GitLab sends a value even for jobs that did not fail).
    #[serde(default)]
    pub build_failure_reason: Option<String>,
    /// 0 for the first run, 1 for the first retry, ...
    #[serde(default)]
    pub retries_count: Option<u32>,
    /// Pipeline id.
    #[serde(default)]
    pub pipeline_id: Option<u64>,
    /// Project id.
    pub project_id: u64,
    /// `group / project` display name.
    #[serde(default)]
    pub project_name: Option<String>,
    /// Branch or tag.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// Whether `ref` is a tag.
    #[serde(default)]
    pub tag: Option<bool>,
    /// Commit SHA.
    #[serde(default)]
    pub sha: Option<String>,
    /// Previous SHA of the ref.
    #[serde(default)]
    pub before_sha: Option<String>,
    /// Who triggered the job.
    #[serde(default)]
    pub user: Option<HookUser>,
    /// The pipeline/commit block (its `id` is the pipeline id).
    #[serde(default)]
    pub commit: Option<HookCommit>,
    /// The project block.
    #[serde(default)]
    pub project: Option<HookProject>,
    /// The assigned runner; `null` until a runner takes the job.
    #[serde(default)]
    pub runner: Option<HookRunner>,
    /// Environment block, kept as raw JSON.
    #[serde(default)]
    pub environment: Option<serde_json::Value>,
    /// Upstream pipeline of a downstream pipeline, kept as raw JSON.
    #[serde(default)]
    pub source_pipeline: Option<serde_json::Value>,
}

/// Parses a Job Hook body. Distinguishes a body that is not JSON (or has
/// wrong field types) from a well-formed hook of another event kind.
pub fn parse_job_hook(body: &[u8]) -> Result<JobHook, WebhookError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let kind = value
        .get("object_kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    if kind != "build" {
        return Err(WebhookError::NotAJobEvent {
            object_kind: kind.to_owned(),
        });
    }
    serde_json::from_value(value).map_err(|e| WebhookError::Malformed(e.to_string()))
}

/// Constant-time check of the `X-Gitlab-Token` header against the configured
/// secret. A missing header or an empty secret never matches. (The length of
/// the secret is not hidden; its content is.)
pub fn token_matches(expected: &SecretString, presented: Option<&[u8]>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let expected = expected.expose_secret().as_bytes();
    if expected.is_empty() {
        return false;
    }
    expected.ct_eq(presented).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_event_kinds_are_named_in_the_error() {
        let err = parse_job_hook(br#"{"object_kind": "push", "ref": "refs/heads/main"}"#)
            .expect_err("push is not a job event");
        assert_eq!(
            err,
            WebhookError::NotAJobEvent {
                object_kind: "push".into()
            }
        );
        assert!(err.to_string().contains("push"));
    }

    #[test]
    fn wrong_field_type_is_malformed() {
        let err = parse_job_hook(
            br#"{"object_kind": "build", "build_id": "not-a-number", "build_status": "pending", "project_id": 1}"#,
        )
        .expect_err("bad id");
        assert!(matches!(err, WebhookError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn empty_secret_never_matches() {
        let empty = SecretString::from(String::new());
        assert!(!token_matches(&empty, Some(b"")));
    }
}
