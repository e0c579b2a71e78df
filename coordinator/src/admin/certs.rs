//! Admin client certificates (`http_tls = true`): issued by
//! `admin-cert create`, listed by `admin-cert list`, revoked by
//! `admin-cert revoke <serial|name>` (data dir only, like admin tokens).
//!
//! The TLS layer checks that a certificate chains to the cluster CA and has
//! not expired; [`verify`] then requires its serial to be recorded in
//! `admin_certs`, for the same name, and not revoked. Certificates issued
//! before the table existed have no row and are refused: `admin-cert create`
//! is the only way to a working one. Checked on every request, so a
//! revocation takes effect at the next request, on open connections too.

use std::time::Duration;

use autogit_certs::ClusterCa;
use time::OffsetDateTime;

use super::Actor;
use crate::db::{self, AdminCertKey, AdminCertRow, Db, DbError};

/// What the TLS layer read from a verified admin client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCert {
    pub name: String,
    /// As `CertInfo::serial_hex`.
    pub serial: String,
}

/// Why a verified admin certificate does not authenticate. The messages are
/// shown to the caller: they name the serial, never anything secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRefusal {
    #[error(
        "admin client certificate {serial} is unknown to this coordinator (issued before certificates were recorded, or by another data dir); issue a new one with `autogit-coordinator admin-cert create`"
    )]
    Unknown { serial: String },
    #[error("admin client certificate {serial} ({name}) is revoked")]
    Revoked { serial: String, name: String },
    #[error("admin client certificate {serial} was issued to another name")]
    NameMismatch { serial: String },
    #[error("cannot check the admin client certificate: database unavailable")]
    Unavailable,
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("--name {0:?} must be 1-64 characters of [A-Za-z0-9-_.]")]
    BadName(String),
    #[error("issue admin certificate: {0}")]
    Pki(#[from] autogit_certs::PkiError),
    #[error("record admin certificate: {0}")]
    Db(#[from] DbError),
}

/// A freshly issued certificate with its key (generated here). `Debug`
/// hides the key.
pub struct IssuedAdminCert {
    pub row: AdminCertRow,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedAdminCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedAdminCert")
            .field("row", &self.row)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Issue a certificate for `name` valid for `ttl` (bounded by the caller's
/// flag parser) and record it; only recorded certificates authenticate.
pub async fn issue(
    db: &Db,
    ca: &ClusterCa,
    name: &str,
    role: super::Role,
    ttl: Duration,
) -> Result<IssuedAdminCert, IssueError> {
    if !valid_name(name) {
        return Err(IssueError::BadName(name.to_string()));
    }
    let keys = autogit_certs::csr::generate(name)?;
    let cert = ca.sign_admin_csr(&keys.csr_pem, name, ttl)?;
    let row = AdminCertRow {
        serial: cert.info.serial_hex.clone(),
        name: name.to_string(),
        created_at: db::to_ms(OffsetDateTime::now_utc()),
        not_after: db::to_ms(cert.info.not_after),
        revoked_at: None,
        role: role.to_string(),
    };
    db.insert_admin_cert(&row).await?;
    Ok(IssuedAdminCert {
        row,
        cert_pem: cert.cert_pem,
        key_pem: keys.key_pem,
    })
}

/// A serial as operators may type it (`AB:CD:…`, upper case) in the stored form.
pub fn normalize_serial(s: &str) -> String {
    s.trim().replace(':', "").to_ascii_lowercase()
}

/// The actor a verified, recorded, unrevoked certificate acts as.
pub async fn verify(db: &Db, cert: &PresentedCert) -> Result<Actor, CertRefusal> {
    let serial = normalize_serial(&cert.serial);
    let row = db
        .get_admin_cert(&serial)
        .await
        .map_err(|_| CertRefusal::Unavailable)?
        .ok_or_else(|| CertRefusal::Unknown {
            serial: serial.clone(),
        })?;
    if row.name != cert.name {
        return Err(CertRefusal::NameMismatch { serial });
    }
    if row.revoked_at.is_some() {
        return Err(CertRefusal::Revoked {
            serial,
            name: row.name,
        });
    }
    let role = row.role.parse().map_err(|_| CertRefusal::Unavailable)?;
    Ok(Actor(format!("cert:{}", row.name), role))
}

/// Revoke by serial, or else every certificate of that name. Returns the
/// matching certificates; empty when nothing matched.
pub async fn revoke(db: &Db, serial_or_name: &str) -> Result<Vec<AdminCertRow>, DbError> {
    let now = db::to_ms(OffsetDateTime::now_utc());
    let by_serial = db
        .revoke_admin_certs(AdminCertKey::Serial, &normalize_serial(serial_or_name), now)
        .await?;
    if !by_serial.is_empty() {
        return Ok(by_serial);
    }
    db.revoke_admin_certs(AdminCertKey::Name, serial_or_name.trim(), now)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (Db, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        (Db::open(d.path()).await.unwrap(), d)
    }

    /// A viewer's certificate for `name`, valid for ten minutes.
    async fn issue_viewer(
        db: &Db,
        ca: &ClusterCa,
        name: &str,
    ) -> Result<IssuedAdminCert, IssueError> {
        issue(
            db,
            ca,
            name,
            super::super::Role::Viewer,
            Duration::from_secs(600),
        )
        .await
    }

    fn presented(c: &IssuedAdminCert) -> PresentedCert {
        let info = autogit_certs::CertInfo::from_pem(&c.cert_pem).unwrap();
        let Some(autogit_certs::identity::Principal::Admin(name)) = info.principal else {
            panic!("not an admin certificate")
        };
        PresentedCert {
            name,
            serial: info.serial_hex,
        }
    }

    #[tokio::test]
    async fn an_issued_certificate_works_until_revoked_by_serial() {
        let (db, _d) = db().await;
        let ca = ClusterCa::generate("t").unwrap();
        let alice = issue_viewer(&db, &ca, "alice").await.unwrap();
        let p = presented(&alice);
        assert_eq!(
            verify(&db, &p).await,
            Ok(Actor("cert:alice".into(), super::super::Role::Viewer))
        );
        let typed = p.serial.to_ascii_uppercase();
        let revoked = revoke(&db, &typed).await.unwrap();
        assert_eq!(revoked.len(), 1);
        assert!(revoked[0].revoked_at.is_some());
        assert!(matches!(
            verify(&db, &p).await,
            Err(CertRefusal::Revoked { .. })
        ));
        assert!(
            !format!("{alice:?}").contains("PRIVATE KEY"),
            "Debug hides the key"
        );
    }

    #[tokio::test]
    async fn revoking_a_name_revokes_all_of_its_certificates_and_no_other() {
        let (db, _d) = db().await;
        let ca = ClusterCa::generate("t").unwrap();
        let a1 = issue_viewer(&db, &ca, "alice").await.unwrap();
        let a2 = issue_viewer(&db, &ca, "alice").await.unwrap();
        let bob = issue_viewer(&db, &ca, "bob").await.unwrap();
        assert!(
            revoke(&db, "ALICE").await.unwrap().is_empty(),
            "names are case-sensitive"
        );
        assert_eq!(revoke(&db, "alice").await.unwrap().len(), 2);
        for c in [&a1, &a2] {
            assert!(verify(&db, &presented(c)).await.is_err());
        }
        assert!(verify(&db, &presented(&bob)).await.is_ok());
        assert!(revoke(&db, "nobody").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn unrecorded_or_renamed_certificates_are_refused() {
        let (db, _d) = db().await;
        let ca = ClusterCa::generate("t").unwrap();
        // Signed by the right CA but never recorded (as before this table).
        let keys = autogit_certs::csr::generate("old").unwrap();
        let old = ca
            .sign_admin_csr(&keys.csr_pem, "old", Duration::from_secs(600))
            .unwrap();
        let p = PresentedCert {
            name: "old".into(),
            serial: old.info.serial_hex,
        };
        let e = verify(&db, &p).await.unwrap_err();
        assert!(matches!(e, CertRefusal::Unknown { .. }), "{e}");
        assert!(e.to_string().contains("admin-cert create"), "{e}");
        let alice = issue_viewer(&db, &ca, "alice").await.unwrap();
        let mut p = presented(&alice);
        p.name = "root".into();
        assert!(matches!(
            verify(&db, &p).await,
            Err(CertRefusal::NameMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn bad_names_are_refused_before_anything_is_issued() {
        let (db, _d) = db().await;
        let ca = ClusterCa::generate("t").unwrap();
        for name in ["", "a b", "../x", &"x".repeat(65)] {
            let e = issue(
                &db,
                &ca,
                name,
                super::super::Role::Viewer,
                Duration::from_secs(60),
            )
            .await
            .unwrap_err();
            assert!(matches!(e, IssueError::BadName(_)), "{name}: {e}");
        }
        assert!(db.list_admin_certs().await.unwrap().is_empty());
    }
}
