//! Agents, their GPUs and revocations.

use super::{Db, DbError, on_pool};

/// An agent as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentRow {
    pub id: String,
    pub hostname: String,
    pub arch: String,
    pub state: String,
    pub cordoned: bool,
    pub labels: String,
    pub inventory: Option<String>,
    pub load: Option<String>,
    pub cert_serial: String,
    pub cert_not_after: i64,
    pub token_id: Option<String>,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A GPU as stored (the full record is in the inventory JSON).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GpuRow {
    pub uuid: String,
    pub idx: i64,
    pub vendor: String,
    pub name: String,
    pub memory_bytes: Option<i64>,
}

/// One agent's coarse liveness, flushed in batches.
#[derive(Debug, Clone)]
pub struct Liveness {
    pub id: String,
    pub state: String,
    pub last_seen: i64,
    pub load: Option<String>,
}

const AGENT_COLUMNS: &str = "id, hostname, arch, state, cordoned, labels, inventory, load, cert_serial, \
     cert_not_after, token_id, enrolled_at, last_seen, revoked_at";

/// The INSERT of a whole agent row, for [`Db::insert_agent`] and enrolment's
/// transaction.
macro_rules! insert_agent_query {
    ($a:expr) => {{
        let a: &$crate::db::AgentRow = $a;
        sqlx::query(
            "INSERT INTO agents (id, hostname, arch, state, cordoned, labels, inventory, load, cert_serial, \
                                 cert_not_after, token_id, enrolled_at, last_seen, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&a.id)
        .bind(&a.hostname)
        .bind(&a.arch)
        .bind(&a.state)
        .bind(a.cordoned)
        .bind(&a.labels)
        .bind(&a.inventory)
        .bind(&a.load)
        .bind(&a.cert_serial)
        .bind(a.cert_not_after)
        .bind(&a.token_id)
        .bind(a.enrolled_at)
        .bind(a.last_seen)
        .bind(a.revoked_at)
    }};
}
pub(super) use insert_agent_query;

impl Db {
    /// Store a newly enrolled agent.
    pub async fn insert_agent(&self, a: &AgentRow) -> Result<(), DbError> {
        on_pool!(self, p => insert_agent_query!(a).execute(p).await.map(drop))?;
        Ok(())
    }

    pub async fn get_agent(&self, id: &str) -> Result<Option<AgentRow>, DbError> {
        let q = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1");
        Ok(on_pool!(self, p => sqlx::query_as(&q).bind(id).fetch_optional(p).await)?)
    }

    pub async fn list_agents(&self) -> Result<Vec<AgentRow>, DbError> {
        let q = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY hostname, id");
        Ok(on_pool!(self, p => sqlx::query_as(&q).fetch_all(p).await)?)
    }

    /// Replace an agent's inventory and GPU rows in one transaction.
    pub async fn update_inventory(
        &self,
        id: &str,
        hostname: &str,
        arch: &str,
        inventory_json: &str,
        gpus: &[GpuRow],
    ) -> Result<(), DbError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            super::cluster::check_fence!(self, tx);
            sqlx::query("UPDATE agents SET hostname = $1, arch = $2, inventory = $3 WHERE id = $4")
                .bind(hostname)
                .bind(arch)
                .bind(inventory_json)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM gpus WHERE agent_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for g in gpus {
                sqlx::query(
                    "INSERT INTO gpus (agent_id, uuid, idx, vendor, name, memory_bytes) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(&g.uuid)
                .bind(g.idx)
                .bind(&g.vendor)
                .bind(&g.name)
                .bind(g.memory_bytes)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    pub async fn list_gpus(&self, agent_id: &str) -> Result<Vec<GpuRow>, DbError> {
        let q = "SELECT uuid, idx, vendor, name, memory_bytes FROM gpus WHERE agent_id = $1 ORDER BY idx";
        Ok(on_pool!(self, p => sqlx::query_as(q).bind(agent_id).fetch_all(p).await)?)
    }

    pub async fn update_agent_cert(
        &self,
        id: &str,
        serial: &str,
        not_after: i64,
    ) -> Result<(), DbError> {
        let q = "UPDATE agents SET cert_serial = $1, cert_not_after = $2 WHERE id = $3";
        on_pool!(self, p => sqlx::query(q).bind(serial).bind(not_after).bind(id).execute(p).await.map(drop))?;
        Ok(())
    }

    pub async fn set_agent_state(
        &self,
        id: &str,
        state: &str,
        last_seen: Option<i64>,
    ) -> Result<(), DbError> {
        let q = "UPDATE agents SET state = $1, last_seen = COALESCE($2, last_seen) \
                 WHERE id = $3 AND state != 'revoked'";
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            super::cluster::check_fence!(self, tx);
            sqlx::query(q).bind(state).bind(last_seen).bind(id).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Replace an agent's trust labels (a JSON object). Returns false if the
    /// agent is unknown.
    pub async fn set_agent_labels(&self, id: &str, labels_json: &str) -> Result<bool, DbError> {
        let q = "UPDATE agents SET labels = $1 WHERE id = $2";
        let n = on_pool!(self, p => sqlx::query(q).bind(labels_json).bind(id).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    pub async fn set_cordoned(&self, id: &str, cordoned: bool) -> Result<bool, DbError> {
        let q = "UPDATE agents SET cordoned = $1 WHERE id = $2";
        let n = on_pool!(self, p => sqlx::query(q).bind(cordoned).bind(id).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// Write many agents' liveness in one transaction (heartbeats are held in
    /// memory and flushed coarsely; see `fleet::registry`).
    pub async fn flush_liveness(&self, batch: &[Liveness]) -> Result<(), DbError> {
        if batch.is_empty() {
            return Ok(());
        }
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            super::cluster::check_fence!(self, tx);
            for l in batch {
                sqlx::query(
                    "UPDATE agents SET state = $1, last_seen = $2, load = COALESCE($3, load) \
                     WHERE id = $4 AND state != 'revoked'",
                )
                .bind(&l.state)
                .bind(l.last_seen)
                .bind(&l.load)
                .bind(&l.id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Revoke an agent: recorded in `revocations` and on the agent row.
    /// Returns false if the agent is unknown.
    pub async fn revoke_agent(
        &self,
        id: &str,
        now: i64,
        actor: &str,
        reason: &str,
    ) -> Result<bool, DbError> {
        let revoked = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            super::cluster::check_fence!(self, tx);
            let r = sqlx::query(
                "UPDATE agents SET state = 'revoked', revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 1 {
                sqlx::query(
                    "INSERT INTO revocations (agent_id, revoked_at, actor, reason) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (agent_id) DO NOTHING",
                )
                .bind(id)
                .bind(now)
                .bind(actor)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(r.rows_affected() == 1)
        })?;
        Ok(revoked)
    }

    pub async fn revoked_agent_ids(&self) -> Result<Vec<String>, DbError> {
        let q = "SELECT agent_id FROM revocations";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).fetch_all(p).await)?)
    }
}
