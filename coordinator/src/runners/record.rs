//! A runner's lifecycle record as one typed value. The reconciler changes
//! only this value and stores it in one step ([`RunnerRecord::to_row`]); the
//! state string in SQLite is derived from [`Phase`], never kept beside it.

use autogit_certs::AgentId;
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::Phase;
use crate::db::{self, RunnerRow};

/// One runner: where it runs, where it is in its life, and when each step
/// happened.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerRecord {
    pub id: Uuid,
    pub pool: String,
    pub agent: AgentId,
    pub gitlab_runner_id: Option<u64>,
    pub phase: Phase,
    pub container_id: Option<String>,
    /// GPU uuids held.
    pub gpus: Vec<String>,
    pub cpu: f64,
    pub memory_bytes: u64,
    pub project_id: Option<u64>,
    pub job_id: Option<u64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The container's last log lines, on failure.
    pub log_tail: Vec<String>,
    pub created_at: OffsetDateTime,
    /// The container runs.
    pub started_at: Option<OffsetDateTime>,
    /// It took a job.
    pub busy_at: Option<OffsetDateTime>,
    /// It reached a final phase.
    pub finished_at: Option<OffsetDateTime>,
    pub gitlab_deleted_at: Option<OffsetDateTime>,
    /// How long it waited for its image, once its container runs: zero
    /// when the image was on the host.
    pub image_pull: Option<std::time::Duration>,
}

/// A stored runner that does not parse back (a field names the problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored runner {id}: invalid {field}: {problem}")]
pub struct CorruptRecord {
    pub id: String,
    pub field: &'static str,
    pub problem: String,
}

impl RunnerRecord {
    /// A runner about to be provisioned.
    pub fn provisioning(
        id: Uuid,
        pool: &str,
        agent: AgentId,
        gpus: Vec<String>,
        cpu: f64,
        memory_bytes: u64,
        now: OffsetDateTime,
    ) -> Self {
        RunnerRecord {
            id,
            pool: pool.to_string(),
            agent,
            gitlab_runner_id: None,
            phase: Phase::Provisioning,
            container_id: None,
            gpus,
            cpu,
            memory_bytes,
            project_id: None,
            job_id: None,
            exit_code: None,
            reason: None,
            log_tail: Vec::new(),
            created_at: now,
            started_at: None,
            busy_at: None,
            finished_at: None,
            image_pull: None,
            gitlab_deleted_at: None,
        }
    }

    /// The storage form.
    pub fn to_row(&self) -> RunnerRow {
        let ms = |t: &Option<OffsetDateTime>| t.map(db::to_ms);
        RunnerRow {
            id: self.id.to_string(),
            pool: self.pool.clone(),
            agent_id: self.agent.to_string(),
            gitlab_runner_id: self.gitlab_runner_id.map(|g| g as i64),
            state: self.phase.as_str().to_string(),
            container_id: self.container_id.clone(),
            gpus: serde_json::to_string(&self.gpus).unwrap_or_else(|_| "[]".into()),
            cpu: self.cpu,
            memory_bytes: i64::try_from(self.memory_bytes).unwrap_or(i64::MAX),
            project_id: self.project_id.map(|p| p as i64),
            job_id: self.job_id.map(|j| j as i64),
            exit_code: self.exit_code.map(i64::from),
            reason: self.reason.clone(),
            log_tail: (!self.log_tail.is_empty())
                .then(|| serde_json::to_string(&self.log_tail).ok())
                .flatten(),
            created_at: db::to_ms(self.created_at),
            started_at: ms(&self.started_at),
            busy_at: ms(&self.busy_at),
            finished_at: ms(&self.finished_at),
            gitlab_deleted_at: ms(&self.gitlab_deleted_at),
            image_pull_ms: self
                .image_pull
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Parse a stored row back; every field is checked.
    pub fn from_row(row: &RunnerRow) -> Result<Self, CorruptRecord> {
        let bad = |field: &'static str, problem: String| CorruptRecord {
            id: row.id.clone(),
            field,
            problem,
        };
        let nonneg = |field: &'static str, v: Option<i64>| -> Result<Option<u64>, CorruptRecord> {
            v.map(|x| u64::try_from(x).map_err(|_| bad(field, format!("negative: {x}"))))
                .transpose()
        };
        Ok(RunnerRecord {
            id: row.id.parse().map_err(|e| bad("id", format!("{e}")))?,
            pool: row.pool.clone(),
            agent: row
                .agent_id
                .parse()
                .map_err(|e| bad("agent_id", format!("{e}")))?,
            gitlab_runner_id: nonneg("gitlab_runner_id", row.gitlab_runner_id)?,
            phase: row.state.parse().map_err(|e| bad("state", e))?,
            container_id: row.container_id.clone(),
            gpus: serde_json::from_str(&row.gpus).map_err(|e| bad("gpus", e.to_string()))?,
            cpu: row.cpu,
            memory_bytes: nonneg("memory_bytes", Some(row.memory_bytes))?.unwrap_or(0),
            project_id: nonneg("project_id", row.project_id)?,
            job_id: nonneg("job_id", row.job_id)?,
            exit_code: row
                .exit_code
                .map(|c| {
                    i32::try_from(c).map_err(|_| bad("exit_code", format!("out of range: {c}")))
                })
                .transpose()?,
            reason: row.reason.clone(),
            log_tail: match &row.log_tail {
                Some(s) => serde_json::from_str(s).map_err(|e| bad("log_tail", e.to_string()))?,
                None => Vec::new(),
            },
            created_at: db::from_ms(row.created_at),
            started_at: row.started_at.map(db::from_ms),
            busy_at: row.busy_at.map(db::from_ms),
            finished_at: row.finished_at.map(db::from_ms),
            gitlab_deleted_at: row.gitlab_deleted_at.map(db::from_ms),
            image_pull: nonneg("image_pull_ms", row.image_pull_ms)?
                .map(std::time::Duration::from_millis),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> OffsetDateTime {
        db::from_ms(ms)
    }

    #[test]
    fn round_trips_through_the_row_and_derives_the_state_from_the_phase() {
        let mut r = RunnerRecord::provisioning(
            Uuid::new_v4(),
            "gpu",
            AgentId::new_random(),
            vec!["GPU-1".into()],
            2.0,
            4 << 30,
            at(1_000),
        );
        r.phase = Phase::Busy;
        r.gitlab_runner_id = Some(42);
        r.job_id = Some(7);
        r.project_id = Some(3);
        r.exit_code = Some(-1);
        r.log_tail = vec!["a".into(), "b".into()];
        r.started_at = Some(at(2_000));
        r.image_pull = Some(std::time::Duration::from_millis(12_300));
        let row = r.to_row();
        assert_eq!(row.image_pull_ms, Some(12_300));
        assert_eq!(row.state, "busy");
        assert_eq!(RunnerRecord::from_row(&row).unwrap(), r);
    }

    #[test]
    fn a_corrupt_row_names_the_field() {
        let mut row = RunnerRecord::provisioning(
            Uuid::new_v4(),
            "p",
            AgentId::new_random(),
            vec![],
            1.0,
            1,
            at(0),
        )
        .to_row();
        row.state = "sleeping".into();
        let e = RunnerRecord::from_row(&row).unwrap_err();
        assert_eq!(e.field, "state");
        assert!(e.to_string().contains("sleeping"), "{e}");
        row.state = "idle".into();
        row.gpus = "not json".into();
        assert_eq!(RunnerRecord::from_row(&row).unwrap_err().field, "gpus");
    }

    /// `db::ACTIVE_STATES` (SQL) and `Phase::is_active` name the same phases.
    #[tokio::test]
    async fn the_database_and_the_phase_agree_on_which_runners_are_active() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::Db::open(dir.path()).await.unwrap();
        let agent = AgentId::new_random();
        let mut ids = Vec::new();
        for (i, phase) in Phase::ALL.into_iter().enumerate() {
            let mut r = RunnerRecord::provisioning(
                Uuid::new_v4(),
                "p",
                agent,
                vec![],
                1.0,
                1,
                at(i as i64),
            );
            r.phase = phase;
            r.gitlab_runner_id = Some(i as u64 + 1);
            db.upsert_runner(&r.to_row()).await.unwrap();
            ids.push((phase, r.id.to_string()));
        }
        let active: Vec<String> = db
            .active_runners()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let undeleted: Vec<String> = db
            .undeleted_runners()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        for (phase, id) in &ids {
            assert_eq!(active.contains(id), phase.is_active(), "{phase}");
            assert_eq!(undeleted.contains(id), !phase.is_active(), "{phase}");
        }
    }
}
