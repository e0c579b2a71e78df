//! The audit log: who did what to which agent or runner, and when.

use sqlx::Row;

use super::{Db, DbError};

#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub agent_id: Option<String>,
    pub runner_id: Option<String>,
    pub detail: serde_json::Value,
}

/// Which events to list: newest first, at most `limit`, older than `before`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub agent_id: Option<String>,
    pub runner_id: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// An audit event to insert.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub agent_id: Option<String>,
    pub runner_id: Option<String>,
    /// JSON text.
    pub detail: String,
}

pub(super) fn insert_event_query(
    e: &NewEvent,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    sqlx::query(
        "INSERT INTO events (at, kind, actor, agent_id, runner_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(e.at)
    .bind(&e.kind)
    .bind(&e.actor)
    .bind(&e.agent_id)
    .bind(&e.runner_id)
    .bind(&e.detail)
}

impl Db {
    pub async fn insert_event(
        &self,
        at: i64,
        kind: &str,
        actor: &str,
        agent_id: Option<&str>,
        runner_id: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), DbError> {
        let e = NewEvent {
            at,
            kind: kind.to_string(),
            actor: actor.to_string(),
            agent_id: agent_id.map(str::to_string),
            runner_id: runner_id.map(str::to_string),
            detail: detail.to_string(),
        };
        insert_event_query(&e).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn list_events(&self, f: &EventFilter) -> Result<Vec<EventRow>, DbError> {
        let limit = if f.limit == 0 { 100 } else { f.limit.min(1000) };
        let rows = sqlx::query(
            "SELECT * FROM events
             WHERE (?1 IS NULL OR agent_id = ?1) AND (?2 IS NULL OR runner_id = ?2) AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(&f.agent_id)
        .bind(&f.runner_id)
        .bind(f.before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(EventRow {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    actor: r.try_get("actor")?,
                    agent_id: r.try_get("agent_id")?,
                    runner_id: r.try_get("runner_id")?,
                    detail: serde_json::from_str(&detail)
                        .unwrap_or(serde_json::Value::String(detail)),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}
