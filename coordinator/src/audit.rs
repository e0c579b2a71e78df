//! The audit log: every enrolment, revocation, state change and operator
//! action, with who did it. Backed by the `events` table.

use serde_json::Value;
use time::OffsetDateTime;

use crate::db::{self, Db, DbError, EventFilter};

/// Who caused an event.
pub const SYSTEM: &str = "system";

/// An agent reported different hardware (arch, CPU threads, memory total,
/// GPU set) than before: within a session, or at a reconnect compared with
/// the last stored inventory (`fleet/session.rs`).
pub const AGENT_HARDWARE_CHANGED: &str = "agent.hardware_changed";

/// Writes audit events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    db: Db,
}

impl Audit {
    pub fn new(db: Db) -> Self {
        Audit { db }
    }

    /// Record an event. A failure to write is logged, never fatal to the
    /// action being recorded (the action already happened).
    pub async fn record(
        &self,
        kind: &str,
        actor: &str,
        agent: Option<&str>,
        runner: Option<&str>,
        detail: Value,
    ) {
        let at = db::to_ms(OffsetDateTime::now_utc());
        if let Err(e) = self
            .db
            .insert_event(at, kind, actor, agent, runner, &detail)
            .await
        {
            tracing::warn!(error = %e, kind, "write audit event");
        }
    }
}

/// One page of the audit log as served by the API and printed by the CLI:
/// `{"events": [...], "next_before": <id to pass as before> | null}`.
pub async fn page(db: &Db, filter: &EventFilter) -> Result<Value, DbError> {
    let limit = filter.limit.clamp(1, 1000);
    let events = db
        .list_events(&EventFilter {
            limit,
            ..filter.clone()
        })
        .await?;
    let next_before = (events.len() as u32 == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            serde_json::json!({"id": e.id, "at": crate::fleet::rfc3339(e.at), "kind": e.kind, "actor": e.actor,
                   "agent_id": e.agent_id, "runner_id": e.runner_id, "detail": e.detail})
        })
        .collect();
    Ok(serde_json::json!({"events": events, "next_before": next_before}))
}
