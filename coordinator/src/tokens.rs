//! Join tokens as a domain concept: create (print once, store the hash),
//! list and revoke.

use std::collections::BTreeMap;
use std::time::Duration;

use autogit_certs::{Fingerprint, JoinToken};
use serde::Serialize;
use time::OffsetDateTime;

use crate::bounds::{self, MAX_JOIN_TOKEN_TTL, OutOfRange};
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

/// Why a token was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The request asked for something out of bounds (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<OutOfRange> for CreateError {
    fn from(e: OutOfRange) -> Self {
        CreateError::Invalid(e.to_string())
    }
}

/// Create a token for the cluster with CA fingerprint `ca`. The returned
/// token is the only copy of the secret. `ttl` must lie within
/// [`MAX_JOIN_TOKEN_TTL`] and `uses` be at least 1.
pub async fn create(db: &Db, ca: Fingerprint, req: &NewToken) -> Result<JoinToken, CreateError> {
    let ttl = bounds::check("ttl", req.ttl, Duration::from_secs(1), MAX_JOIN_TOKEN_TTL)?;
    if req.uses == 0 {
        return Err(CreateError::Invalid("uses must be at least 1".into()));
    }
    let now = OffsetDateTime::now_utc();
    let expires = bounds::after(now, ttl)
        .ok_or_else(|| CreateError::Invalid("ttl reaches past the year 9999".into()))?;
    let token = JoinToken::generate(ca);
    db.insert_token(&TokenRow {
        id: token.id().to_string(),
        secret_hash: token.secret_hash().to_vec(),
        description: req.description.clone(),
        labels: serde_json::to_string(&req.labels).unwrap_or_else(|_| "{}".into()),
        created_at: db::to_ms(now),
        expires_at: db::to_ms(expires),
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
    Ok(db
        .list_tokens()
        .await?
        .iter()
        .map(|r| view(r, now))
        .collect())
}
