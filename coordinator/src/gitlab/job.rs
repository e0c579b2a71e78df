//! CI jobs as GitLab reports them: status, scopes and the job record.
//!
//! [`JobStatus`] is shared by the REST job (`status`), the GraphQL job
//! (`status`, upper case) and the Job Hook (`build_status`), and keeps any
//! status a newer GitLab invents as [`JobStatus::Unknown`] instead of
//! rejecting the payload.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::wire;

/// Status of a CI job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum JobStatus {
    /// Created, waiting for earlier stages.
    Created,
    /// Waiting for a `resource_group` lock.
    WaitingForResource,
    /// Preparing (for example waiting for an environment).
    Preparing,
    /// Waiting for an external callback.
    WaitingForCallback,
    /// Queued: waiting for a runner. This is the demand AutoGit serves.
    Pending,
    /// A runner picked it up.
    Running,
    /// Finished successfully.
    Success,
    /// Finished with a failure.
    Failed,
    /// Being canceled.
    Canceling,
    /// Canceled.
    Canceled,
    /// Skipped.
    Skipped,
    /// Waiting for someone to start it.
    Manual,
    /// Delayed job waiting for its time.
    Scheduled,
    /// A status this code does not know (kept verbatim, lower case).
    Unknown(String),
}

impl JobStatus {
    /// GitLab's lower-case spelling.
    pub fn as_str(&self) -> &str {
        match self {
            JobStatus::Created => "created",
            JobStatus::WaitingForResource => "waiting_for_resource",
            JobStatus::Preparing => "preparing",
            JobStatus::WaitingForCallback => "waiting_for_callback",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceling => "canceling",
            JobStatus::Canceled => "canceled",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Unknown(s) => s,
        }
    }

    /// True once the job can no longer change (success, failed, canceled,
    /// skipped).
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped
        )
    }
}

impl From<&str> for JobStatus {
    /// Case-insensitive, so GraphQL's `PENDING` and REST's `pending` agree.
    fn from(s: &str) -> Self {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "created" => JobStatus::Created,
            "waiting_for_resource" => JobStatus::WaitingForResource,
            "preparing" => JobStatus::Preparing,
            "waiting_for_callback" => JobStatus::WaitingForCallback,
            "pending" => JobStatus::Pending,
            "running" => JobStatus::Running,
            "success" => JobStatus::Success,
            "failed" => JobStatus::Failed,
            "canceling" => JobStatus::Canceling,
            "canceled" => JobStatus::Canceled,
            "skipped" => JobStatus::Skipped,
            "manual" => JobStatus::Manual,
            "scheduled" => JobStatus::Scheduled,
            _ => JobStatus::Unknown(lower),
        }
    }
}

impl From<String> for JobStatus {
    fn from(s: String) -> Self {
        JobStatus::from(s.as_str())
    }
}

impl From<JobStatus> for String {
    fn from(s: JobStatus) -> Self {
        s.as_str().to_owned()
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `scope[]` value of `GET /projects/:id/jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobScope {
    /// `created`
    Created,
    /// `pending`
    Pending,
    /// `running`
    Running,
    /// `failed`
    Failed,
    /// `success`
    Success,
    /// `canceled`
    Canceled,
    /// `skipped`
    Skipped,
    /// `waiting_for_resource`
    WaitingForResource,
    /// `manual`
    Manual,
}

impl JobScope {
    /// The query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobScope::Created => "created",
            JobScope::Pending => "pending",
            JobScope::Running => "running",
            JobScope::Failed => "failed",
            JobScope::Success => "success",
            JobScope::Canceled => "canceled",
            JobScope::Skipped => "skipped",
            JobScope::WaitingForResource => "waiting_for_resource",
            JobScope::Manual => "manual",
        }
    }
}

/// The pipeline a job belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPipeline {
    /// Pipeline id.
    pub id: u64,
    /// Project of the pipeline (absent in some GitLab answers).
    #[serde(default)]
    pub project_id: Option<u64>,
    /// Branch or tag.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// Commit SHA.
    #[serde(default)]
    pub sha: Option<String>,
}

/// The runner a job was assigned to (`null` while the job is pending).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRunnerRef {
    /// Runner id.
    pub id: u64,
    /// Runner description (AutoGit writes its own marker here).
    #[serde(default)]
    pub description: Option<String>,
    /// `instance_type`, `group_type` or `project_type`.
    #[serde(default)]
    pub runner_type: Option<String>,
    /// Whether the runner is shared.
    #[serde(default)]
    pub is_shared: Option<bool>,
}

/// A CI job, from `GET /projects/:id/jobs`, `GET /projects/:id/jobs/:job_id`
/// or the instance-wide GraphQL query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Job id (unique on the instance).
    pub id: u64,
    /// Project the job belongs to. REST job records do not carry it
    /// directly; the client fills it from the request or the pipeline.
    #[serde(default)]
    pub project_id: u64,
    /// Current status.
    pub status: JobStatus,
    /// The job's tags: a runner must have all of them.
    #[serde(default, deserialize_with = "wire::null_default")]
    pub tag_list: Vec<String>,
    /// Stage name.
    #[serde(default)]
    pub stage: Option<String>,
    /// Job name.
    #[serde(default)]
    pub name: Option<String>,
    /// Branch or tag the job runs for.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// When GitLab created the job.
    #[serde(
        default,
        deserialize_with = "wire::opt_time",
        serialize_with = "time::serde::rfc3339::option::serialize"
    )]
    pub created_at: Option<OffsetDateTime>,
    /// When a runner started it.
    #[serde(
        default,
        deserialize_with = "wire::opt_time",
        serialize_with = "time::serde::rfc3339::option::serialize"
    )]
    pub started_at: Option<OffsetDateTime>,
    /// When it finished.
    #[serde(
        default,
        deserialize_with = "wire::opt_time",
        serialize_with = "time::serde::rfc3339::option::serialize"
    )]
    pub finished_at: Option<OffsetDateTime>,
    /// Seconds spent queued (pending) before a runner took it.
    #[serde(default)]
    pub queued_duration: Option<f64>,
    /// Whether a failure is allowed.
    #[serde(default)]
    pub allow_failure: Option<bool>,
    /// The runner that took it, `None` while pending.
    #[serde(default)]
    pub runner: Option<JobRunnerRef>,
    /// The job's pipeline.
    #[serde(default)]
    pub pipeline: Option<JobPipeline>,
    /// Link to the job page.
    #[serde(default)]
    pub web_url: Option<String>,
}

impl Job {
    /// Fills `project_id` when GitLab left it out: from the request's
    /// project, else from the pipeline.
    pub(crate) fn with_project_fallback(mut self, project_id: Option<u64>) -> Self {
        if self.project_id == 0 {
            self.project_id = project_id
                .or_else(|| self.pipeline.as_ref().and_then(|p| p.project_id))
                .unwrap_or(0);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parses_rest_graphql_and_unknown_spellings() {
        assert_eq!(JobStatus::from("pending"), JobStatus::Pending);
        assert_eq!(JobStatus::from("PENDING"), JobStatus::Pending);
        assert_eq!(
            JobStatus::from("waiting_for_resource"),
            JobStatus::WaitingForResource
        );
        assert_eq!(
            JobStatus::from("teleporting"),
            JobStatus::Unknown("teleporting".into())
        );
        let json = serde_json::to_string(&JobStatus::Running).expect("serialize");
        assert_eq!(json, "\"running\"");
    }

    #[test]
    fn documented_rest_job_parses_with_nulls_and_unknown_fields() {
        // Trimmed from the "List project jobs" example in doc/api/jobs.md.
        let body = r#"{
            "commit": {"id": "0ff3ae198f8601a285adcf5c0fff204ee6fba5fd"},
            "coverage": null, "allow_failure": false,
            "created_at": "2015-12-24T15:51:21.802Z",
            "started_at": null, "finished_at": null,
            "duration": null, "queued_duration": 0.010,
            "artifacts_expire_at": null,
            "tag_list": ["docker runner", "ubuntu18"],
            "id": 7, "name": "teaspoon",
            "pipeline": {"id": 6, "project_id": 1, "ref": "main",
                         "sha": "0ff3ae198f8601a285adcf5c0fff204ee6fba5fd", "status": "pending"},
            "ref": "main", "artifacts": [], "runner": null, "stage": "test",
            "status": "pending", "failure_reason": null, "tag": false,
            "web_url": "https://example.com/foo/bar/-/jobs/7",
            "project": {"ci_job_token_scope_enabled": false},
            "user": {"id": 1, "name": "Administrator"}
        }"#;
        let job: Job = serde_json::from_str(body).expect("documented job parses");
        let job = job.with_project_fallback(None);
        assert_eq!(job.id, 7);
        assert_eq!(job.project_id, 1, "derived from the pipeline");
        assert_eq!(job.status, JobStatus::Pending);
        assert_eq!(job.tag_list, vec!["docker runner", "ubuntu18"]);
        assert!(job.runner.is_none());
        assert_eq!(job.pipeline.as_ref().map(|p| p.id), Some(6));
    }

    #[test]
    fn null_tag_list_is_empty() {
        let job: Job = serde_json::from_str(r#"{"id": 1, "status": "pending", "tag_list": null}"#)
            .expect("parses");
        assert!(job.tag_list.is_empty());
        assert_eq!(job.with_project_fallback(Some(9)).project_id, 9);
    }
}
