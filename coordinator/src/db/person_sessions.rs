//! Dashboard sessions of people signed in through single sign-on.

use super::{Db, DbError, on_pool};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PersonSessionRow {
    pub id_hash: Vec<u8>,
    /// The provider (`iss`) and the person's id there (`sub`).
    pub issuer: String,
    pub subject: String,
    /// The display name the provider gave.
    pub name: String,
    /// `viewer`, `operator` or `admin`, mapped from groups at sign-in.
    pub role: String,
    pub created_at: i64,
    pub expires_at: i64,
}

const COLUMNS: &str = "id_hash, issuer, subject, name, role, created_at, expires_at";

impl Db {
    pub async fn insert_person_session(&self, s: &PersonSessionRow) -> Result<(), DbError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO person_sessions \
                 (id_hash, issuer, subject, name, role, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&s.id_hash)
            .bind(&s.issuer)
            .bind(&s.subject)
            .bind(&s.name)
            .bind(&s.role)
            .bind(s.created_at)
            .bind(s.expires_at)
            .execute(p)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    /// The session with this id hash unless it expired at `now`.
    pub async fn live_person_session(
        &self,
        id_hash: &[u8],
        now: i64,
    ) -> Result<Option<PersonSessionRow>, DbError> {
        let q =
            format!("SELECT {COLUMNS} FROM person_sessions WHERE id_hash = $1 AND expires_at > $2");
        Ok(on_pool!(self, p => sqlx::query_as(&q).bind(id_hash).bind(now).fetch_optional(p).await)?)
    }

    /// Every session not expired at `now`, oldest first.
    pub async fn list_person_sessions(&self, now: i64) -> Result<Vec<PersonSessionRow>, DbError> {
        let q = format!(
            "SELECT {COLUMNS} FROM person_sessions WHERE expires_at > $1 ORDER BY created_at, id_hash"
        );
        Ok(on_pool!(self, p => sqlx::query_as(&q).bind(now).fetch_all(p).await)?)
    }

    /// End one session; true if it existed.
    pub async fn delete_person_session(&self, id_hash: &[u8]) -> Result<bool, DbError> {
        let q = "DELETE FROM person_sessions WHERE id_hash = $1";
        let n = on_pool!(self, p => sqlx::query(q).bind(id_hash).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// Delete sessions expired at `now`; the number deleted.
    pub async fn purge_person_sessions(&self, now: i64) -> Result<u64, DbError> {
        let q = "DELETE FROM person_sessions WHERE expires_at <= $1";
        Ok(on_pool!(self, p => sqlx::query(q).bind(now).execute(p).await?.rows_affected()))
    }
}
