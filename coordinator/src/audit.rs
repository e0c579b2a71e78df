//! The audit log: every enrolment, revocation, state change and operator
//! action, with who did it. Backed by the `events` table.

use serde_json::Value;
use time::OffsetDateTime;

use crate::db::{self, Db};

/// Who caused an event.
pub const SYSTEM: &str = "system";

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
    pub async fn record(&self, kind: &str, actor: &str, agent: Option<&str>, runner: Option<&str>, detail: Value) {
        let at = db::to_ms(OffsetDateTime::now_utc());
        if let Err(e) = self.db.insert_event(at, kind, actor, agent, runner, &detail).await {
            tracing::warn!(error = %e, kind, "write audit event");
        }
    }
}
