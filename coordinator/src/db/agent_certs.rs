//! Which certificates of an agent are good: the current one
//! (`agents.cert_serial`) and the one its last renewal issued until it is
//! confirmed (`agents.pending_cert_serial`). Every change is a compare and
//! swap on both, so concurrent renewals cannot both win.

use sqlx::Row;

use super::{Db, DbError};

/// An agent's certificate serials (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCerts {
    pub current: String,
    pub pending: Option<String>,
}

impl Db {
    /// `None` for an unknown agent.
    pub async fn agent_certs(&self, id: &str) -> Result<Option<AgentCerts>, DbError> {
        let r = sqlx::query("SELECT cert_serial, pending_cert_serial FROM agents WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| -> Result<_, sqlx::Error> {
            Ok(AgentCerts {
                current: r.try_get("cert_serial")?,
                pending: r.try_get("pending_cert_serial")?,
            })
        })
        .transpose()?)
    }

    /// Replace `from` by `to` (and `cert_not_after` when given) if the row
    /// still holds `from`. Returns whether it did.
    pub async fn swap_agent_certs(
        &self,
        id: &str,
        from: &AgentCerts,
        to: &AgentCerts,
        not_after: Option<i64>,
    ) -> Result<bool, DbError> {
        let r = sqlx::query(
            "UPDATE agents SET cert_serial = ?, pending_cert_serial = ?,
                               cert_not_after = COALESCE(?, cert_not_after)
             WHERE id = ? AND cert_serial = ? AND pending_cert_serial IS ?",
        )
        .bind(&to.current)
        .bind(&to.pending)
        .bind(not_after)
        .bind(id)
        .bind(&from.current)
        .bind(&from.pending)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
