//! Admin client certificates: which ones were issued, and which are revoked.

use super::{Db, DbError, on_pool};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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

const CERT_COLUMNS: &str = "serial, name, created_at, not_after, revoked_at, role";

impl Db {
    pub async fn insert_admin_cert(&self, c: &AdminCertRow) -> Result<(), DbError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO admin_certs (serial, name, created_at, not_after, revoked_at, role) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&c.serial)
            .bind(&c.name)
            .bind(c.created_at)
            .bind(c.not_after)
            .bind(c.revoked_at)
            .bind(&c.role)
            .execute(p)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    pub async fn get_admin_cert(&self, serial: &str) -> Result<Option<AdminCertRow>, DbError> {
        let q = format!("SELECT {CERT_COLUMNS} FROM admin_certs WHERE serial = $1");
        Ok(on_pool!(self, p => sqlx::query_as(&q).bind(serial).fetch_optional(p).await)?)
    }

    pub async fn list_admin_certs(&self) -> Result<Vec<AdminCertRow>, DbError> {
        let q = format!("SELECT {CERT_COLUMNS} FROM admin_certs ORDER BY created_at, serial");
        Ok(on_pool!(self, p => sqlx::query_as(&q).fetch_all(p).await)?)
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
        let update = format!(
            "UPDATE admin_certs SET revoked_at = COALESCE(revoked_at, $1) WHERE {column} = $2"
        );
        let select = format!(
            "SELECT {CERT_COLUMNS} FROM admin_certs WHERE {column} = $1 ORDER BY created_at, serial"
        );
        Ok(on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(&update).bind(now).bind(key).execute(&mut *tx).await?;
            let rows = sqlx::query_as(&select).bind(key).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            rows
        }))
    }
}
