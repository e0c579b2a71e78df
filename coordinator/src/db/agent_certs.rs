//! Which certificates of an agent are good: the current one
//! (`agents.cert_serial`) and the one its last renewal issued until it is
//! confirmed (`agents.pending_cert_serial`). Every change is a compare and
//! swap on both, so concurrent renewals cannot both win.

use super::{Db, DbError, on_pool};

/// An agent's certificate serials (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentCerts {
    #[sqlx(rename = "cert_serial")]
    pub current: String,
    #[sqlx(rename = "pending_cert_serial")]
    pub pending: Option<String>,
}

impl Db {
    /// `None` for an unknown agent.
    pub async fn agent_certs(&self, id: &str) -> Result<Option<AgentCerts>, DbError> {
        let q = "SELECT cert_serial, pending_cert_serial FROM agents WHERE id = $1";
        Ok(on_pool!(self, p => sqlx::query_as(q).bind(id).fetch_optional(p).await)?)
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
        let q = "UPDATE agents SET cert_serial = $1, pending_cert_serial = $2, \
                     cert_not_after = COALESCE($3, cert_not_after) \
                 WHERE id = $4 AND cert_serial = $5 AND pending_cert_serial IS NOT DISTINCT FROM $6";
        let n = on_pool!(self, p => {
            sqlx::query(q)
                .bind(&to.current)
                .bind(&to.pending)
                .bind(not_after)
                .bind(id)
                .bind(&from.current)
                .bind(&from.pending)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }
}
