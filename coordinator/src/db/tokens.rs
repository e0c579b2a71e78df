//! Join tokens: stored hashed; consumed atomically.

use sqlx::Row;

use super::{Db, DbError};

/// A join token as stored (never the secret).
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub description: String,
    pub labels: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: i64,
    pub uses: i64,
    pub revoked_at: Option<i64>,
}

/// Outcome of trying to consume one use of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenUse {
    Consumed,
    Unknown,
    Revoked,
    Expired,
    UsedUp,
}

fn row_to_token(r: sqlx::sqlite::SqliteRow) -> Result<TokenRow, sqlx::Error> {
    Ok(TokenRow {
        id: r.try_get("id")?,
        secret_hash: r.try_get("secret_hash")?,
        description: r.try_get("description")?,
        labels: r.try_get("labels")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        max_uses: r.try_get("max_uses")?,
        uses: r.try_get("uses")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Db {
    pub async fn insert_token(&self, t: &TokenRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO join_tokens (id, secret_hash, description, labels, created_at, expires_at, max_uses, uses)
             VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
        )
        .bind(&t.id)
        .bind(&t.secret_hash)
        .bind(&t.description)
        .bind(&t.labels)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.max_uses)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_token(&self, id: &str) -> Result<Option<TokenRow>, DbError> {
        let row = sqlx::query("SELECT * FROM join_tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(row_to_token).transpose()?)
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        let rows = sqlx::query("SELECT * FROM join_tokens ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(row_to_token)
            .collect::<Result<_, _>>()?)
    }

    /// Mark a token revoked. Returns false if no such token exists.
    pub async fn revoke_token(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let r =
            sqlx::query("UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Consume one use of token `id` if it is usable at `now`, inside the
    /// caller's transaction so the use and the enrolment commit together.
    pub async fn consume_token(
        tx: &mut sqlx::SqliteConnection,
        id: &str,
        now: i64,
    ) -> Result<TokenUse, DbError> {
        let r = sqlx::query(
            "UPDATE join_tokens SET uses = uses + 1
             WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND uses < max_uses",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(TokenUse::Consumed);
        }
        let row = sqlx::query("SELECT * FROM join_tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        Ok(match row.map(row_to_token).transpose()? {
            None => TokenUse::Unknown,
            Some(t) if t.revoked_at.is_some() => TokenUse::Revoked,
            Some(t) if t.expires_at <= now => TokenUse::Expired,
            Some(_) => TokenUse::UsedUp,
        })
    }
}
