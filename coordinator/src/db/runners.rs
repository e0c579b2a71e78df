//! Runner lifecycle records.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Db, DbError};

/// A runner as stored.
#[derive(Debug, Clone, Default, PartialEq)]
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

fn row_to_runner(r: SqliteRow) -> Result<RunnerRow, sqlx::Error> {
    Ok(RunnerRow {
        id: r.try_get("id")?,
        pool: r.try_get("pool")?,
        agent_id: r.try_get("agent_id")?,
        gitlab_runner_id: r.try_get("gitlab_runner_id")?,
        state: r.try_get("state")?,
        container_id: r.try_get("container_id")?,
        gpus: r.try_get("gpus")?,
        cpu: r.try_get("cpu")?,
        memory_bytes: r.try_get("memory_bytes")?,
        project_id: r.try_get("project_id")?,
        job_id: r.try_get("job_id")?,
        exit_code: r.try_get("exit_code")?,
        reason: r.try_get("reason")?,
        log_tail: r.try_get("log_tail")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        busy_at: r.try_get("busy_at")?,
        finished_at: r.try_get("finished_at")?,
        gitlab_deleted_at: r.try_get("gitlab_deleted_at")?,
        image_pull_ms: r.try_get("image_pull_ms")?,
    })
}

/// States in which a runner still holds resources.
pub const ACTIVE_STATES: &str = "('provisioning','starting','idle','busy','stopping')";

/// One write of a batch ([`Db::write_runners`]).
#[derive(Debug, Clone)]
pub enum RunnerWrite {
    Runner(Box<RunnerRow>),
    Event(super::events::NewEvent),
}

fn upsert_runner_query(
    r: &RunnerRow,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    sqlx::query(
        "INSERT OR REPLACE INTO runners (id, pool, agent_id, gitlab_runner_id, state, container_id, gpus, cpu,
             memory_bytes, project_id, job_id, exit_code, reason, log_tail, created_at, started_at, busy_at,
             finished_at, gitlab_deleted_at, image_pull_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
}

impl Db {
    /// Insert or fully replace a runner record.
    pub async fn upsert_runner(&self, r: &RunnerRow) -> Result<(), DbError> {
        upsert_runner_query(r).execute(&self.pool).await?;
        Ok(())
    }

    /// Runner records and audit events in one transaction, in order: the
    /// reconciler's writes of one pass. A burst of 64 starts is then one
    /// commit, not 128.
    pub async fn write_runners(&self, writes: &[RunnerWrite]) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        for w in writes {
            match w {
                RunnerWrite::Runner(r) => {
                    upsert_runner_query(r).execute(&mut *tx).await?;
                }
                RunnerWrite::Event(e) => {
                    super::events::insert_event_query(e)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_runner(&self, id: &str) -> Result<Option<RunnerRow>, DbError> {
        let r = sqlx::query("SELECT * FROM runners WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(row_to_runner).transpose()?)
    }

    /// Runners that still hold resources (not finished).
    pub async fn active_runners(&self) -> Result<Vec<RunnerRow>, DbError> {
        let q = format!("SELECT * FROM runners WHERE state IN {ACTIVE_STATES} ORDER BY created_at");
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(row_to_runner)
            .collect::<Result<_, _>>()?)
    }

    /// Finished runners whose GitLab runner still has to be deleted.
    pub async fn undeleted_runners(&self) -> Result<Vec<RunnerRow>, DbError> {
        let q = format!(
            "SELECT * FROM runners WHERE state NOT IN {ACTIVE_STATES} AND gitlab_runner_id IS NOT NULL AND gitlab_deleted_at IS NULL"
        );
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(row_to_runner)
            .collect::<Result<_, _>>()?)
    }

    /// Newest first: every active runner plus the most recent finished ones.
    pub async fn list_runners(&self, limit: u32) -> Result<Vec<RunnerRow>, DbError> {
        let q = format!(
            "SELECT * FROM runners WHERE state IN {ACTIVE_STATES}
             UNION ALL
             SELECT * FROM (SELECT * FROM runners WHERE state NOT IN {ACTIVE_STATES} ORDER BY created_at DESC LIMIT ?)
             ORDER BY created_at DESC"
        );
        let rows = sqlx::query(&q).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(row_to_runner)
            .collect::<Result<_, _>>()?)
    }
}
