//! A runner's phases and how operators see a runner.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::db::RunnerRow;
use crate::fleet::rfc3339;

/// Where a runner is in its life.
///
/// `provisioning` (GitLab runner being created, StartRunner sent) →
/// `starting` (container being created) → `idle` (container running, waiting
/// for a job) → `busy` (took a job) → `exited` | `failed`. `stopping` is a
/// runner asked to stop (idle too long, an operator, a drain, never ran in
/// time); it stays `stopping` until its agent confirms the container gone.
/// `lost` is a runner whose agent was lost or revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Provisioning,
    Starting,
    Idle,
    Busy,
    Stopping,
    Exited,
    Failed,
    Lost,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Provisioning,
        Phase::Starting,
        Phase::Idle,
        Phase::Busy,
        Phase::Stopping,
        Phase::Exited,
        Phase::Failed,
        Phase::Lost,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Provisioning => "provisioning",
            Phase::Starting => "starting",
            Phase::Idle => "idle",
            Phase::Busy => "busy",
            Phase::Stopping => "stopping",
            Phase::Exited => "exited",
            Phase::Failed => "failed",
            Phase::Lost => "lost",
        }
    }

    /// Still holds resources on its agent. `db::ACTIVE_STATES` lists the
    /// same phases in SQL (a test checks they agree).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Phase::Provisioning | Phase::Starting | Phase::Idle | Phase::Busy | Phase::Stopping
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "provisioning" => Phase::Provisioning,
            "starting" => Phase::Starting,
            "idle" => Phase::Idle,
            "busy" => Phase::Busy,
            "stopping" => Phase::Stopping,
            "exited" => Phase::Exited,
            "failed" => Phase::Failed,
            "lost" => Phase::Lost,
            other => return Err(format!("unknown runner state {other:?}")),
        })
    }
}

/// A runner as operators see it (`runners list`, the admin API).
#[derive(Debug, Clone, Serialize)]
pub struct RunnerView {
    pub id: String,
    pub pool: String,
    pub agent_id: String,
    pub gitlab_runner_id: Option<i64>,
    pub state: String,
    pub container_id: Option<String>,
    pub gpus: Vec<String>,
    pub project_id: Option<i64>,
    pub job_id: Option<i64>,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub log_tail: Vec<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub busy_at: Option<String>,
    pub finished_at: Option<String>,
    pub gitlab_deleted_at: Option<String>,
    /// Milliseconds it waited for its image; 0: the image was on the host.
    pub image_pull_ms: Option<i64>,
    /// The same for people: "warm image" or "cold pull 12.3 s".
    pub image: Option<String>,
}

/// "warm image" for no pull, "cold pull 12.3 s" for one.
pub fn image_note(pull_ms: i64) -> String {
    if pull_ms <= 0 {
        "warm image".to_owned()
    } else {
        format!("cold pull {:.1} s", pull_ms as f64 / 1000.0)
    }
}

impl From<&RunnerRow> for RunnerView {
    fn from(r: &RunnerRow) -> Self {
        RunnerView {
            id: r.id.clone(),
            pool: r.pool.clone(),
            agent_id: r.agent_id.clone(),
            gitlab_runner_id: r.gitlab_runner_id,
            state: r.state.clone(),
            container_id: r.container_id.clone(),
            gpus: serde_json::from_str(&r.gpus).unwrap_or_default(),
            project_id: r.project_id,
            job_id: r.job_id,
            exit_code: r.exit_code,
            reason: r.reason.clone(),
            log_tail: r
                .log_tail
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            created_at: rfc3339(r.created_at),
            started_at: r.started_at.map(rfc3339),
            busy_at: r.busy_at.map(rfc3339),
            finished_at: r.finished_at.map(rfc3339),
            gitlab_deleted_at: r.gitlab_deleted_at.map(rfc3339),
            image_pull_ms: r.image_pull_ms,
            image: r.image_pull_ms.map(image_note),
        }
    }
}
