//! Join tokens as a domain concept: create (print once, store the hash),
//! list and revoke.

use std::collections::BTreeMap;
use std::time::Duration;

use autogit_certs::{Fingerprint, JoinToken};
use serde::Serialize;
use time::OffsetDateTime;

use crate::db::{self, Db, DbError, TokenRow};

/// What operators see of a token (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub id: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: String,
    pub expires_at: String,
    pub max_uses: i64,
    pub uses: i64,
    pub revoked: bool,
    /// active | expired | used-up | revoked
    pub status: String,
}

/// Parameters of a new token.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub ttl: Duration,
    pub uses: u32,
    pub labels: BTreeMap<String, String>,
    pub description: String,
}

/// Create a token for the cluster with CA fingerprint `ca`. The returned
/// token is the only copy of the secret.
pub async fn create(db: &Db, ca: Fingerprint, req: &NewToken) -> Result<JoinToken, DbError> {
    let token = JoinToken::generate(ca);
    let now = OffsetDateTime::now_utc();
    db.insert_token(&TokenRow {
        id: token.id().to_string(),
        secret_hash: token.secret_hash().to_vec(),
        description: req.description.clone(),
        labels: serde_json::to_string(&req.labels).unwrap_or_else(|_| "{}".into()),
        created_at: db::to_ms(now),
        expires_at: db::to_ms(now + req.ttl),
        max_uses: i64::from(req.uses),
        uses: 0,
        revoked_at: None,
    })
    .await?;
    Ok(token)
}

pub fn view(row: &TokenRow, now: OffsetDateTime) -> TokenView {
    let now = db::to_ms(now);
    let status = if row.revoked_at.is_some() {
        "revoked"
    } else if row.expires_at <= now {
        "expired"
    } else if row.uses >= row.max_uses {
        "used-up"
    } else {
        "active"
    };
    TokenView {
        id: row.id.clone(),
        description: row.description.clone(),
        labels: serde_json::from_str(&row.labels).unwrap_or_default(),
        created_at: crate::fleet::rfc3339(row.created_at),
        expires_at: crate::fleet::rfc3339(row.expires_at),
        max_uses: row.max_uses,
        uses: row.uses,
        revoked: row.revoked_at.is_some(),
        status: status.into(),
    }
}

pub async fn list(db: &Db) -> Result<Vec<TokenView>, DbError> {
    let now = OffsetDateTime::now_utc();
    Ok(db.list_tokens().await?.iter().map(|r| view(r, now)).collect())
}
