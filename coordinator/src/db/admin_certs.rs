//! Admin client certificates: which ones were issued, and which are revoked.

use sqlx::Row;

use super::{Db, DbError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCertRow {
    /// Lower-case hex, no separators (as `CertInfo::serial_hex`).
    pub serial: String,
    pub name: String,
    pub created_at: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
    /// `viewer`, `operator` or `admin` (`admin/roles.rs`).
    pub role: String,
}

/// Which column [`Db::revoke_admin_certs`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCertKey {
    Serial,
    Name,
}

fn row(r: sqlx::sqlite::SqliteRow) -> Result<AdminCertRow, sqlx::Error> {
    Ok(AdminCertRow {
        serial: r.try_get("serial")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        not_after: r.try_get("not_after")?,
        revoked_at: r.try_get("revoked_at")?,
        role: r.try_get("role")?,
    })
}

impl Db {
    pub async fn insert_admin_cert(&self, c: &AdminCertRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO admin_certs (serial, name, created_at, not_after, revoked_at, role) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.serial)
        .bind(&c.name)
        .bind(c.created_at)
        .bind(c.not_after)
        .bind(c.revoked_at)
        .bind(&c.role)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_admin_cert(&self, serial: &str) -> Result<Option<AdminCertRow>, DbError> {
        let r = sqlx::query("SELECT * FROM admin_certs WHERE serial = ?")
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(row).transpose()?)
    }

    pub async fn list_admin_certs(&self) -> Result<Vec<AdminCertRow>, DbError> {
        let rows = sqlx::query("SELECT * FROM admin_certs ORDER BY created_at, serial")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Revoke the certificates whose `by` column equals `key` (those already
    /// revoked keep their date). Returns every matching row as stored after.
    pub async fn revoke_admin_certs(
        &self,
        by: AdminCertKey,
        key: &str,
        now: i64,
    ) -> Result<Vec<AdminCertRow>, DbError> {
        let column = match by {
            AdminCertKey::Serial => "serial",
            AdminCertKey::Name => "name",
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "UPDATE admin_certs SET revoked_at = COALESCE(revoked_at, ?) WHERE {column} = ?"
        ))
        .bind(now)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM admin_certs WHERE {column} = ? ORDER BY created_at, serial"
        ))
        .bind(key)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(row).collect::<Result<_, _>>()?)
    }
}
