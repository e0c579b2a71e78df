//! The audit log: who did what to which agent or runner, and when.

use super::{Db, DbError, on_pool};

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

/// The INSERT of one [`NewEvent`]; the database assigns its id.
macro_rules! insert_event_query {
    ($e:expr) => {{
        let e: &$crate::db::NewEvent = $e;
        sqlx::query(
            "INSERT INTO events (at, kind, actor, agent_id, runner_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.at)
        .bind(&e.kind)
        .bind(&e.actor)
        .bind(&e.agent_id)
        .bind(&e.runner_id)
        .bind(&e.detail)
    }};
}
pub(super) use insert_event_query;

/// An event as stored, before its detail is parsed.
#[derive(sqlx::FromRow)]
struct StoredEvent {
    id: i64,
    at: i64,
    kind: String,
    actor: String,
    agent_id: Option<String>,
    runner_id: Option<String>,
    detail: String,
}

impl From<StoredEvent> for EventRow {
    fn from(e: StoredEvent) -> Self {
        EventRow {
            id: e.id,
            at: e.at,
            kind: e.kind,
            actor: e.actor,
            agent_id: e.agent_id,
            runner_id: e.runner_id,
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail)),
        }
    }
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
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            super::cluster::check_fence!(self, tx);
            insert_event_query!(&e).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    pub async fn list_events(&self, f: &EventFilter) -> Result<Vec<EventRow>, DbError> {
        let limit = if f.limit == 0 { 100 } else { f.limit.min(1000) };
        let q = "SELECT id, at, kind, actor, agent_id, runner_id, detail FROM events \
                 WHERE ($1 IS NULL OR agent_id = $1) AND ($2 IS NULL OR runner_id = $2) \
                   AND ($3 IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4";
        let rows: Vec<StoredEvent> = on_pool!(self, p => {
            sqlx::query_as(q)
                .bind(&f.agent_id)
                .bind(&f.runner_id)
                .bind(f.before)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await
        })?;
        Ok(rows.into_iter().map(EventRow::from).collect())
    }
}
