//! Join tokens: stored hashed; consumed atomically.

use super::{Db, DbError, on_pool};

/// A join token as stored (never the secret).
#[derive(Debug, Clone, sqlx::FromRow)]
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

const TOKEN_COLUMNS: &str =
    "id, secret_hash, description, labels, created_at, expires_at, max_uses, uses, revoked_at";

impl Db {
    pub async fn insert_token(&self, t: &TokenRow) -> Result<(), DbError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO join_tokens (id, secret_hash, description, labels, created_at, expires_at, max_uses, uses) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
            )
            .bind(&t.id)
            .bind(&t.secret_hash)
            .bind(&t.description)
            .bind(&t.labels)
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(t.max_uses)
            .execute(p)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    pub async fn get_token(&self, id: &str) -> Result<Option<TokenRow>, DbError> {
        let q = format!("SELECT {TOKEN_COLUMNS} FROM join_tokens WHERE id = $1");
        Ok(on_pool!(self, p => sqlx::query_as(&q).bind(id).fetch_optional(p).await)?)
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        let q = format!("SELECT {TOKEN_COLUMNS} FROM join_tokens ORDER BY created_at, id");
        Ok(on_pool!(self, p => sqlx::query_as(&q).fetch_all(p).await)?)
    }

    /// Mark a token revoked. Returns false if no such token exists.
    pub async fn revoke_token(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let q = "UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2";
        let n = on_pool!(self, p => sqlx::query(q).bind(now).bind(id).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// Enrol an agent with one use of token `token_id`, if it is usable at
    /// `now`: the use and the agent row commit together, or neither does.
    pub async fn enroll_with_token(
        &self,
        token_id: &str,
        now: i64,
        agent: &super::AgentRow,
    ) -> Result<TokenUse, DbError> {
        let used = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let r = sqlx::query(
                "UPDATE join_tokens SET uses = uses + 1 \
                 WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2 AND uses < max_uses",
            )
            .bind(token_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 1 {
                super::agents::insert_agent_query!(agent).execute(&mut *tx).await?;
                tx.commit().await?;
                return Ok(TokenUse::Consumed);
            }
            let q = format!("SELECT {TOKEN_COLUMNS} FROM join_tokens WHERE id = $1");
            sqlx::query_as::<_, TokenRow>(&q).bind(token_id).fetch_optional(&mut *tx).await?
        });
        Ok(match used {
            None => TokenUse::Unknown,
            Some(t) if t.revoked_at.is_some() => TokenUse::Revoked,
            Some(t) if t.expires_at <= now => TokenUse::Expired,
            Some(_) => TokenUse::UsedUp,
        })
    }
}
