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
    })
}

impl Db {
    pub async fn insert_admin_token(&self, t: &AdminTokenRow) -> Result<(), DbError> {
        sqlx::query("INSERT INTO admin_tokens (id, name, secret_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.secret_hash)
            .bind(t.created_at)
            .bind(t.expires_at)
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

    pub async fn revoke_admin_token(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let r = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
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
