//! Admin API bearer tokens.

use super::{Db, DbError, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
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

const TOKEN_COLUMNS: &str =
    "id, name, secret_hash, created_at, expires_at, revoked_at, last_used_at, role";

impl Db {
    pub async fn insert_admin_token(&self, t: &AdminTokenRow) -> Result<(), DbError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO admin_tokens (id, name, secret_hash, created_at, expires_at, role) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.secret_hash)
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(&t.role)
            .execute(p)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    pub async fn get_admin_token(&self, id: &str) -> Result<Option<AdminTokenRow>, DbError> {
        let q = format!("SELECT {TOKEN_COLUMNS} FROM admin_tokens WHERE id = $1");
        Ok(on_pool!(self, p => sqlx::query_as(&q).bind(id).fetch_optional(p).await)?)
    }

    pub async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRow>, DbError> {
        let q = format!("SELECT {TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, id");
        Ok(on_pool!(self, p => sqlx::query_as(&q).fetch_all(p).await)?)
    }

    /// Revoke a token and end its dashboard sessions, in one transaction.
    pub async fn revoke_admin_token(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let n = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let r = sqlx::query(
                "UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM admin_sessions WHERE token_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            r.rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn touch_admin_token(&self, id: &str, now: i64) -> Result<(), DbError> {
        let q = "UPDATE admin_tokens SET last_used_at = $1 WHERE id = $2";
        on_pool!(self, p => sqlx::query(q).bind(now).bind(id).execute(p).await.map(drop))?;
        Ok(())
    }
}

/// A dashboard session as stored: the hash of its id, never the id. Read
/// only joined with its token, so its columns come prefixed `s_`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminSessionRow {
    #[sqlx(rename = "s_id_hash")]
    pub id_hash: Vec<u8>,
    #[sqlx(rename = "s_token_id")]
    pub token_id: String,
    #[sqlx(rename = "s_created_at")]
    pub created_at: i64,
    #[sqlx(rename = "s_expires_at")]
    pub expires_at: i64,
}

/// A session and its token, read from one joined row.
#[derive(sqlx::FromRow)]
struct SessionWithToken {
    #[sqlx(flatten)]
    session: AdminSessionRow,
    #[sqlx(flatten)]
    token: AdminTokenRow,
}

/// Live sessions joined with their tokens; `$1` is now.
const LIVE_SESSIONS: &str = "SELECT s.id_hash AS s_id_hash, s.token_id AS s_token_id, \
       s.created_at AS s_created_at, s.expires_at AS s_expires_at, \
       t.id, t.name, t.secret_hash, t.created_at, t.expires_at, t.revoked_at, t.last_used_at, t.role \
     FROM admin_sessions s JOIN admin_tokens t ON t.id = s.token_id \
     WHERE s.expires_at > $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $1)";

impl Db {
    pub async fn insert_admin_session(&self, s: &AdminSessionRow) -> Result<(), DbError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO admin_sessions (id_hash, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&s.id_hash)
            .bind(&s.token_id)
            .bind(s.created_at)
            .bind(s.expires_at)
            .execute(p)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    /// The live session with this id hash, with its admin token: `None`
    /// when unknown, expired, or its token is revoked or expired.
    pub async fn live_admin_session(
        &self,
        id_hash: &[u8],
        now: i64,
    ) -> Result<Option<(AdminSessionRow, AdminTokenRow)>, DbError> {
        let q = format!("{LIVE_SESSIONS} AND s.id_hash = $2");
        Ok(on_pool!(self, p => {
            let r: Option<SessionWithToken> =
                sqlx::query_as(&q).bind(now).bind(id_hash).fetch_optional(p).await?;
            r.map(|r| (r.session, r.token))
        }))
    }

    /// End one session; true if it existed.
    pub async fn delete_admin_session(&self, id_hash: &[u8]) -> Result<bool, DbError> {
        let q = "DELETE FROM admin_sessions WHERE id_hash = $1";
        let n = on_pool!(self, p => sqlx::query(q).bind(id_hash).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// End every session of one admin token; the number ended.
    pub async fn delete_admin_sessions_of(&self, token_id: &str) -> Result<u64, DbError> {
        let q = "DELETE FROM admin_sessions WHERE token_id = $1";
        Ok(on_pool!(self, p => sqlx::query(q).bind(token_id).execute(p).await?.rows_affected()))
    }

    /// Delete sessions expired at `now`, or whose token is revoked or
    /// expired; the number deleted.
    pub async fn purge_admin_sessions(&self, now: i64) -> Result<u64, DbError> {
        let q = "DELETE FROM admin_sessions WHERE expires_at <= $1 OR token_id IN \
                 (SELECT id FROM admin_tokens WHERE revoked_at IS NOT NULL \
                  OR (expires_at IS NOT NULL AND expires_at <= $1))";
        Ok(on_pool!(self, p => sqlx::query(q).bind(now).execute(p).await?.rows_affected()))
    }

    /// Every live session (not expired at `now`, its token neither revoked
    /// nor expired), oldest first, with its token.
    pub async fn list_admin_sessions(
        &self,
        now: i64,
    ) -> Result<Vec<(AdminSessionRow, AdminTokenRow)>, DbError> {
        let q = format!("{LIVE_SESSIONS} ORDER BY s.created_at, s.id_hash");
        Ok(on_pool!(self, p => {
            let rows: Vec<SessionWithToken> = sqlx::query_as(&q).bind(now).fetch_all(p).await?;
            rows.into_iter().map(|r| (r.session, r.token)).collect()
        }))
    }

    pub async fn count_admin_sessions(&self) -> Result<i64, DbError> {
        let q = "SELECT COUNT(*) FROM admin_sessions";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).fetch_one(p).await)?)
    }
}
