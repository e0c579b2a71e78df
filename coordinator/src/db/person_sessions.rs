//! Dashboard sessions of people signed in through single sign-on.

use sqlx::Row;

use super::{Db, DbError};

#[derive(Debug, Clone, PartialEq, Eq)]
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

fn row(r: sqlx::sqlite::SqliteRow) -> Result<PersonSessionRow, sqlx::Error> {
    Ok(PersonSessionRow {
        id_hash: r.try_get("id_hash")?,
        issuer: r.try_get("issuer")?,
        subject: r.try_get("subject")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

impl Db {
    pub async fn insert_person_session(&self, s: &PersonSessionRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO person_sessions \
             (id_hash, issuer, subject, name, role, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id_hash)
        .bind(&s.issuer)
        .bind(&s.subject)
        .bind(&s.name)
        .bind(&s.role)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this id hash unless it expired at `now`.
    pub async fn live_person_session(
        &self,
        id_hash: &[u8],
        now: i64,
    ) -> Result<Option<PersonSessionRow>, DbError> {
        let r = sqlx::query("SELECT * FROM person_sessions WHERE id_hash = ? AND expires_at > ?")
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(row).transpose()?)
    }

    /// Every session not expired at `now`, oldest first.
    pub async fn list_person_sessions(&self, now: i64) -> Result<Vec<PersonSessionRow>, DbError> {
        let rows = sqlx::query(
            "SELECT * FROM person_sessions WHERE expires_at > ? ORDER BY created_at, id_hash",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// End one session; true if it existed.
    pub async fn delete_person_session(&self, id_hash: &[u8]) -> Result<bool, DbError> {
        let r = sqlx::query("DELETE FROM person_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Delete sessions expired at `now`; the number deleted.
    pub async fn purge_person_sessions(&self, now: i64) -> Result<u64, DbError> {
        let r = sqlx::query("DELETE FROM person_sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
