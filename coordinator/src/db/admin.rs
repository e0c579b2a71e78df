//! Admin API bearer tokens.

use sqlx::Row;

use super::{Db, DbError};

#[derive(Debug, Clone)]
pub struct AdminTokenRow {
    pub id: String,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// `viewer`, `operator` or `admin` (`admin/roles.rs`).
    pub role: String,
}

fn row(r: sqlx::sqlite::SqliteRow) -> Result<AdminTokenRow, sqlx::Error> {
    Ok(AdminTokenRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        secret_hash: r.try_get("secret_hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
        role: r.try_get("role")?,
    })
}

impl Db {
    pub async fn insert_admin_token(&self, t: &AdminTokenRow) -> Result<(), DbError> {
        sqlx::query("INSERT INTO admin_tokens (id, name, secret_hash, created_at, expires_at, role) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.secret_hash)
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(&t.role)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_admin_token(&self, id: &str) -> Result<Option<AdminTokenRow>, DbError> {
        let r = sqlx::query("SELECT * FROM admin_tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(row).transpose()?)
    }

    pub async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRow>, DbError> {
        let rows = sqlx::query("SELECT * FROM admin_tokens ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Revoke a token and end its dashboard sessions, in one transaction.
    pub async fn revoke_admin_token(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM admin_sessions WHERE token_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn touch_admin_token(&self, id: &str, now: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE admin_tokens SET last_used_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A dashboard session as stored: the hash of its id, never the id.
#[derive(Debug, Clone)]
pub struct AdminSessionRow {
    pub id_hash: Vec<u8>,
    pub token_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Db {
    pub async fn insert_admin_session(&self, s: &AdminSessionRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO admin_sessions (id_hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&s.id_hash)
        .bind(&s.token_id)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live session with this id hash, with its admin token: `None`
    /// when unknown, expired, or its token is revoked or expired.
    pub async fn live_admin_session(
        &self,
        id_hash: &[u8],
        now: i64,
    ) -> Result<Option<(AdminSessionRow, AdminTokenRow)>, DbError> {
        let r = sqlx::query(
            "SELECT s.id_hash, s.token_id, s.created_at AS s_created_at, s.expires_at AS s_expires_at, t.* \
             FROM admin_sessions s JOIN admin_tokens t ON t.id = s.token_id \
             WHERE s.id_hash = ? AND s.expires_at > ? AND t.revoked_at IS NULL \
               AND (t.expires_at IS NULL OR t.expires_at > ?)",
        )
        .bind(id_hash)
        .bind(now)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let session = AdminSessionRow {
            id_hash: r.try_get("id_hash")?,
            token_id: r.try_get("token_id")?,
            created_at: r.try_get("s_created_at")?,
            expires_at: r.try_get("s_expires_at")?,
        };
        Ok(Some((session, row(r)?)))
    }

    /// End one session; true if it existed.
    pub async fn delete_admin_session(&self, id_hash: &[u8]) -> Result<bool, DbError> {
        let r = sqlx::query("DELETE FROM admin_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// End every session of one admin token; the number ended.
    pub async fn delete_admin_sessions_of(&self, token_id: &str) -> Result<u64, DbError> {
        let r = sqlx::query("DELETE FROM admin_sessions WHERE token_id = ?")
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Delete sessions expired at `now`, or whose token is revoked or
    /// expired; the number deleted.
    pub async fn purge_admin_sessions(&self, now: i64) -> Result<u64, DbError> {
        let r = sqlx::query(
            "DELETE FROM admin_sessions WHERE expires_at <= ? OR token_id IN \
             (SELECT id FROM admin_tokens WHERE revoked_at IS NOT NULL \
              OR (expires_at IS NOT NULL AND expires_at <= ?))",
        )
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Every live session (not expired at `now`, its token neither revoked
    /// nor expired), oldest first, with its token.
    pub async fn list_admin_sessions(
        &self,
        now: i64,
    ) -> Result<Vec<(AdminSessionRow, AdminTokenRow)>, DbError> {
        let rows = sqlx::query(
            "SELECT s.id_hash, s.token_id, s.created_at AS s_created_at, s.expires_at AS s_expires_at, t.* \
             FROM admin_sessions s JOIN admin_tokens t ON t.id = s.token_id \
             WHERE s.expires_at > ? AND t.revoked_at IS NULL \
               AND (t.expires_at IS NULL OR t.expires_at > ?) \
             ORDER BY s.created_at, s.id_hash",
        )
        .bind(now)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let session = AdminSessionRow {
                    id_hash: r.try_get("id_hash")?,
                    token_id: r.try_get("token_id")?,
                    created_at: r.try_get("s_created_at")?,
                    expires_at: r.try_get("s_expires_at")?,
                };
                Ok((session, row(r)?))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub async fn count_admin_sessions(&self) -> Result<i64, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_sessions")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }
}
