//! Admin bearer tokens: `AGA1<16 hex id>.<43 chars base64url secret>`.
//! Printed once by `admin-token create`; only SHA-256 of the secret is stored.
//! Verification is constant-time and names no detail of why a token failed.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::roles::Role;
use crate::bounds::{self, MAX_ADMIN_TOKEN_TTL, OutOfRange};
use crate::db::{self, AdminTokenRow, Db, DbError};

const PREFIX: &str = "AGA1";

/// Who made an authenticated admin request (`token:<name>`,
/// `cert:<name>`), and with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String, pub Role);

/// A freshly created token (the only copy of the secret).
pub struct NewAdminToken {
    pub id: String,
    pub token: String,
}

impl std::fmt::Debug for NewAdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAdminToken")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

fn hash(secret: &[u8]) -> Vec<u8> {
    Sha256::digest(secret).to_vec()
}

/// Why an admin token was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Create a token named `name` with `role`, valid for `ttl` (None: until
/// revoked; at most [`MAX_ADMIN_TOKEN_TTL`]).
pub async fn create(
    db: &Db,
    name: &str,
    role: Role,
    ttl: Option<Duration>,
) -> Result<NewAdminToken, CreateError> {
    let now = OffsetDateTime::now_utc();
    let expires_at = match ttl {
        None => None,
        Some(t) => {
            let t = bounds::check("ttl", t, Duration::from_secs(1), MAX_ADMIN_TOKEN_TTL)?;
            // In range, so representable; still never panic.
            Some(db::to_ms(bounds::after(now, t).unwrap_or(now)))
        }
    };
    let mut rng = rand::rng();
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    db.insert_admin_token(&AdminTokenRow {
        id: id.clone(),
        name: name.to_string(),
        secret_hash: hash(&secret),
        created_at: db::to_ms(now),
        expires_at,
        revoked_at: None,
        last_used_at: None,
        role: role.to_string(),
    })
    .await?;
    Ok(NewAdminToken {
        token: format!("{PREFIX}{id}.{}", URL_SAFE_NO_PAD.encode(secret)),
        id,
    })
}

/// Check a presented bearer token. `None` for anything invalid: malformed,
/// unknown, wrong secret, expired or revoked.
pub async fn verify(db: &Db, presented: &str) -> Option<Actor> {
    verify_with_id(db, presented).await.map(|(_, a)| a)
}

/// [`verify`], also returning the token's id (what a session is bound to).
pub async fn verify_with_id(db: &Db, presented: &str) -> Option<(String, Actor)> {
    let rest = presented.trim().strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let secret = URL_SAFE_NO_PAD.decode(secret).ok()?;
    let row = db.get_admin_token(id).await.ok()??;
    if !bool::from(hash(&secret).as_slice().ct_eq(&row.secret_hash)) {
        return None;
    }
    let now = db::to_ms(OffsetDateTime::now_utc());
    if row.revoked_at.is_some() || row.expires_at.is_some_and(|e| e <= now) {
        return None;
    }
    let actor = actor_of(&row)?;
    let _ = db.touch_admin_token(id, now).await;
    Some((row.id, actor))
}

/// The actor an admin token acts as (also for sessions created from it);
/// `None`, logged, when its stored role is not one this version knows.
pub fn actor_of(row: &AdminTokenRow) -> Option<Actor> {
    match row.role.parse::<Role>() {
        Ok(role) => Some(Actor(format!("token:{}", row.name), role)),
        Err(e) => {
            tracing::error!(token = %row.id, error = %e, "admin token refused: stored role unknown");
            None
        }
    }
}
