//! Agents, their GPUs and revocations.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Db, DbError};

/// An agent as stored.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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

fn row_to_agent(r: SqliteRow) -> Result<AgentRow, sqlx::Error> {
    Ok(AgentRow {
        id: r.try_get("id")?,
        hostname: r.try_get("hostname")?,
        arch: r.try_get("arch")?,
        state: r.try_get("state")?,
        cordoned: r.try_get::<i64, _>("cordoned")? != 0,
        labels: r.try_get("labels")?,
        inventory: r.try_get("inventory")?,
        load: r.try_get("load")?,
        cert_serial: r.try_get("cert_serial")?,
        cert_not_after: r.try_get("cert_not_after")?,
        token_id: r.try_get("token_id")?,
        enrolled_at: r.try_get("enrolled_at")?,
        last_seen: r.try_get("last_seen")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Db {
    pub async fn insert_agent(
        conn: &mut sqlx::SqliteConnection,
        a: &AgentRow,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO agents (id, hostname, arch, state, cordoned, labels, inventory, load, cert_serial,
                                 cert_not_after, token_id, enrolled_at, last_seen, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.id)
        .bind(&a.hostname)
        .bind(&a.arch)
        .bind(&a.state)
        .bind(a.cordoned as i64)
        .bind(&a.labels)
        .bind(&a.inventory)
        .bind(&a.load)
        .bind(&a.cert_serial)
        .bind(a.cert_not_after)
        .bind(&a.token_id)
        .bind(a.enrolled_at)
        .bind(a.last_seen)
        .bind(a.revoked_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    pub async fn get_agent(&self, id: &str) -> Result<Option<AgentRow>, DbError> {
        let r = sqlx::query("SELECT * FROM agents WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(row_to_agent).transpose()?)
    }

    pub async fn list_agents(&self) -> Result<Vec<AgentRow>, DbError> {
        let rows = sqlx::query("SELECT * FROM agents ORDER BY hostname, id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(row_to_agent)
            .collect::<Result<_, _>>()?)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE agents SET hostname = ?, arch = ?, inventory = ? WHERE id = ?")
            .bind(hostname)
            .bind(arch)
            .bind(inventory_json)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM gpus WHERE agent_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for g in gpus {
            sqlx::query("INSERT INTO gpus (agent_id, uuid, idx, vendor, name, memory_bytes) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(id)
                .bind(&g.uuid)
                .bind(g.idx)
                .bind(&g.vendor)
                .bind(&g.name)
                .bind(g.memory_bytes)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_gpus(&self, agent_id: &str) -> Result<Vec<GpuRow>, DbError> {
        let rows = sqlx::query("SELECT * FROM gpus WHERE agent_id = ? ORDER BY idx")
            .bind(agent_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(GpuRow {
                    uuid: r.try_get("uuid")?,
                    idx: r.try_get("idx")?,
                    vendor: r.try_get("vendor")?,
                    name: r.try_get("name")?,
                    memory_bytes: r.try_get("memory_bytes")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    pub async fn update_agent_cert(
        &self,
        id: &str,
        serial: &str,
        not_after: i64,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE agents SET cert_serial = ?, cert_not_after = ? WHERE id = ?")
            .bind(serial)
            .bind(not_after)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_agent_state(
        &self,
        id: &str,
        state: &str,
        last_seen: Option<i64>,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE agents SET state = ?, last_seen = COALESCE(?, last_seen) WHERE id = ? AND state != 'revoked'")
            .bind(state)
            .bind(last_seen)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replace an agent's trust labels (a JSON object). Returns false if the
    /// agent is unknown.
    pub async fn set_agent_labels(&self, id: &str, labels_json: &str) -> Result<bool, DbError> {
        let r = sqlx::query("UPDATE agents SET labels = ? WHERE id = ?")
            .bind(labels_json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn set_cordoned(&self, id: &str, cordoned: bool) -> Result<bool, DbError> {
        let r = sqlx::query("UPDATE agents SET cordoned = ? WHERE id = ?")
            .bind(cordoned as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Write many agents' liveness in one transaction (heartbeats are held in
    /// memory and flushed coarsely; see `fleet::registry`).
    pub async fn flush_liveness(&self, batch: &[Liveness]) -> Result<(), DbError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for l in batch {
            sqlx::query(
                "UPDATE agents SET state = ?, last_seen = ?, load = COALESCE(?, load) WHERE id = ? AND state != 'revoked'",
            )
            .bind(&l.state)
            .bind(l.last_seen)
            .bind(&l.load)
            .bind(&l.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
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
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE agents SET state = 'revoked', revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("INSERT OR IGNORE INTO revocations (agent_id, revoked_at, actor, reason) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(now)
            .bind(actor)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn revoked_agent_ids(&self) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT agent_id FROM revocations")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| r.try_get("agent_id"))
            .collect::<Result<_, _>>()?)
    }
}
