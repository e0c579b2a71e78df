//! Runner lifecycle records.

use super::{Db, DbError, on_pool};

/// A runner as stored.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct RunnerRow {
    pub id: String,
    pub pool: String,
    pub agent_id: String,
    pub gitlab_runner_id: Option<i64>,
    pub state: String,
    pub container_id: Option<String>,
    pub gpus: String,
    pub cpu: f64,
    pub memory_bytes: i64,
    pub project_id: Option<i64>,
    pub job_id: Option<i64>,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub log_tail: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub busy_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub gitlab_deleted_at: Option<i64>,
    /// NULL until the container runs; 0: the image was on the host.
    pub image_pull_ms: Option<i64>,
}

const RUNNER_COLUMNS: &str = "id, pool, agent_id, gitlab_runner_id, state, container_id, gpus, cpu, \
     memory_bytes, project_id, job_id, exit_code, reason, log_tail, created_at, started_at, busy_at, \
     finished_at, gitlab_deleted_at, image_pull_ms";

/// States in which a runner still holds resources.
pub const ACTIVE_STATES: &str = "('provisioning','starting','idle','busy','stopping')";

/// One write of a batch ([`Db::write_runners`]).
#[derive(Debug, Clone)]
pub enum RunnerWrite {
    Runner(Box<RunnerRow>),
    Event(super::events::NewEvent),
}

/// Insert a runner record, or replace every column of the one with its id.
macro_rules! upsert_runner_query {
    ($r:expr) => {{
        let r: &RunnerRow = $r;
        sqlx::query(
            "INSERT INTO runners (id, pool, agent_id, gitlab_runner_id, state, container_id, gpus, cpu, \
                 memory_bytes, project_id, job_id, exit_code, reason, log_tail, created_at, started_at, \
                 busy_at, finished_at, gitlab_deleted_at, image_pull_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
             ON CONFLICT (id) DO UPDATE SET pool = excluded.pool, agent_id = excluded.agent_id, \
                 gitlab_runner_id = excluded.gitlab_runner_id, state = excluded.state, \
                 container_id = excluded.container_id, gpus = excluded.gpus, cpu = excluded.cpu, \
                 memory_bytes = excluded.memory_bytes, project_id = excluded.project_id, \
                 job_id = excluded.job_id, exit_code = excluded.exit_code, reason = excluded.reason, \
                 log_tail = excluded.log_tail, created_at = excluded.created_at, \
                 started_at = excluded.started_at, busy_at = excluded.busy_at, \
                 finished_at = excluded.finished_at, gitlab_deleted_at = excluded.gitlab_deleted_at, \
                 image_pull_ms = excluded.image_pull_ms",
        )
        .bind(&r.id)
        .bind(&r.pool)
        .bind(&r.agent_id)
        .bind(r.gitlab_runner_id)
        .bind(&r.state)
        .bind(&r.container_id)
        .bind(&r.gpus)
        .bind(r.cpu)
        .bind(r.memory_bytes)
        .bind(r.project_id)
        .bind(r.job_id)
        .bind(r.exit_code)
        .bind(&r.reason)
        .bind(&r.log_tail)
        .bind(r.created_at)
        .bind(r.started_at)
        .bind(r.busy_at)
        .bind(r.finished_at)
        .bind(r.gitlab_deleted_at)
        .bind(r.image_pull_ms)
    }};
}

impl Db {
    /// Insert or fully replace a runner record.
    pub async fn upsert_runner(&self, r: &RunnerRow) -> Result<(), DbError> {
        self.write_runners(&[RunnerWrite::Runner(Box::new(r.clone()))])
            .await
    }

    /// Runner records and audit events in one transaction, in order: the
    /// reconciler's writes of one pass. A burst of 64 starts is then one
    /// commit, not 128.
    pub async fn write_runners(&self, writes: &[RunnerWrite]) -> Result<(), DbError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            super::cluster::check_fence!(self, tx);
            for w in writes {
                match w {
                    RunnerWrite::Runner(r) => {
                        upsert_runner_query!(r).execute(&mut *tx).await?;
                    }
                    RunnerWrite::Event(e) => {
                        super::events::insert_event_query!(e).execute(&mut *tx).await?;
                    }
                }
            }
            tx.commit().await
        })?;
        Ok(())
    }

    pub async fn get_runner(&self, id: &str) -> Result<Option<RunnerRow>, DbError> {
        let q = format!("SELECT {RUNNER_COLUMNS} FROM runners WHERE id = $1");
        Ok(on_pool!(self, p => sqlx::query_as(&q).bind(id).fetch_optional(p).await)?)
    }

    /// Runners that still hold resources (not finished).
    pub async fn active_runners(&self) -> Result<Vec<RunnerRow>, DbError> {
        let q = format!(
            "SELECT {RUNNER_COLUMNS} FROM runners WHERE state IN {ACTIVE_STATES} ORDER BY created_at"
        );
        Ok(on_pool!(self, p => sqlx::query_as(&q).fetch_all(p).await)?)
    }

    /// Finished runners whose GitLab runner still has to be deleted.
    pub async fn undeleted_runners(&self) -> Result<Vec<RunnerRow>, DbError> {
        let q = format!(
            "SELECT {RUNNER_COLUMNS} FROM runners WHERE state NOT IN {ACTIVE_STATES} \
             AND gitlab_runner_id IS NOT NULL AND gitlab_deleted_at IS NULL ORDER BY created_at"
        );
        Ok(on_pool!(self, p => sqlx::query_as(&q).fetch_all(p).await)?)
    }

    /// Newest first: every active runner plus the most recent finished ones.
    pub async fn list_runners(&self, limit: u32) -> Result<Vec<RunnerRow>, DbError> {
        let q = format!(
            "SELECT {RUNNER_COLUMNS} FROM runners WHERE state IN {ACTIVE_STATES}
             UNION ALL
             SELECT {RUNNER_COLUMNS} FROM (SELECT {RUNNER_COLUMNS} FROM runners \
                 WHERE state NOT IN {ACTIVE_STATES} ORDER BY created_at DESC LIMIT $1) AS finished
             ORDER BY created_at DESC"
        );
        let limit = i64::from(limit);
        Ok(on_pool!(self, p => sqlx::query_as(&q).bind(limit).fetch_all(p).await)?)
    }
}
