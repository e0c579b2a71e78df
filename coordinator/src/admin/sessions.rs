//! Dashboard sessions: what the `autogit_session` cookie carries instead of
//! the admin token.
//!
//! `POST /login` trades a valid admin token for a session id: 256 random
//! bits, base64url, shown to the browser once. Only SHA-256 of the id is
//! stored, with an expiry (`session_ttl`) and the id of the admin token it
//! came from. A session is refused once it expires or its admin token is
//! revoked or expires; revoking the token deletes its sessions too, and a
//! background task deletes expired ones ([`purge_loop`]).
//!
//! A person signed in through single sign-on (`admin/oidc/`) gets the same
//! kind of session ([`create_for_person`]), stored with the provider's name
//! for them and the role their groups mapped to; it ends when it expires or
//! is revoked. Both kinds share one cookie, one list and one revoke.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::roles::Role;
use super::tokens::{Actor, actor_of};
use crate::bounds;
use crate::db::{self, AdminSessionRow, Db, DbError, PersonSessionRow};

/// Default session lifetime (`session_ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 3600);
/// How often expired sessions are deleted.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(300);

/// A freshly created session: the only copy of its id.
pub struct NewSession {
    pub id: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("id", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A person as an identity provider named them at sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The provider (`iss`).
    pub issuer: String,
    /// Their stable id there (`sub`).
    pub subject: String,
    /// Their display name (`name`, else `preferred_username`, `email`, `sub`).
    pub name: String,
    pub role: Role,
}

impl Person {
    /// How the audit log and the dashboard name them: `sso:<name> (<sub>)`.
    pub fn actor_name(name: &str, subject: &str) -> String {
        if name == subject {
            format!("sso:{subject}")
        } else {
            format!("sso:{name} ({subject})")
        }
    }
}

fn hash(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

/// Ids are 43 base64url characters; anything else is not looked up.
fn well_formed(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new session id, its creation time and expiry `ttl` later (clamped to
/// [`bounds::MAX_SESSION_TTL`]).
fn new_id(ttl: Duration) -> (String, OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let ttl = ttl.min(bounds::MAX_SESSION_TTL);
    let expires_at = bounds::after(now, ttl).unwrap_or(now);
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    (URL_SAFE_NO_PAD.encode(secret), now, expires_at)
}

/// Open a session for admin token `token_id`, valid for `ttl`.
pub async fn create(db: &Db, token_id: &str, ttl: Duration) -> Result<NewSession, DbError> {
    let (id, now, expires_at) = new_id(ttl);
    db.insert_admin_session(&AdminSessionRow {
        id_hash: hash(&id),
        token_id: token_id.to_string(),
        created_at: db::to_ms(now),
        expires_at: db::to_ms(expires_at),
    })
    .await?;
    Ok(NewSession { id, expires_at })
}

/// Open a session for a person signed in through single sign-on, valid for
/// `ttl`, with the role they were given at sign-in.
pub async fn create_for_person(
    db: &Db,
    person: &Person,
    ttl: Duration,
) -> Result<NewSession, DbError> {
    let (id, now, expires_at) = new_id(ttl);
    db.insert_person_session(&PersonSessionRow {
        id_hash: hash(&id),
        issuer: person.issuer.clone(),
        subject: person.subject.clone(),
        name: person.name.clone(),
        role: person.role.to_string(),
        created_at: db::to_ms(now),
        expires_at: db::to_ms(expires_at),
    })
    .await?;
    Ok(NewSession { id, expires_at })
}

fn person_actor(p: &PersonSessionRow) -> Option<Actor> {
    let role = p.role.parse::<Role>().ok()?;
    Some(Actor(Person::actor_name(&p.name, &p.subject), role))
}

/// The actor behind a presented session id; `None` when malformed, unknown,
/// expired, or its admin token is revoked or expired. The lookup is by
/// hash, so timing says nothing about the id.
pub async fn verify(db: &Db, presented: &str) -> Option<Actor> {
    if !well_formed(presented) {
        return None;
    }
    let now = db::to_ms(OffsetDateTime::now_utc());
    let id_hash = hash(presented);
    if let Some((_, token)) = db.live_admin_session(&id_hash, now).await.ok()? {
        return actor_of(&token);
    }
    person_actor(&db.live_person_session(&id_hash, now).await.ok()??)
}

/// A live session as operators see it. `id` is a handle: the first 16 hex
/// digits of the SHA-256 of the session id, which the database keeps and
/// which reveals nothing of the id itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionView {
    pub id: String,
    /// How it was opened: `token` (an admin token) or `sso`.
    pub via: &'static str,
    /// The admin token it was opened with (`via = token`).
    pub token_id: Option<String>,
    pub actor: String,
    pub role: String,
    pub created_at: String,
    pub expires_at: String,
}

fn handle(id_hash: &[u8]) -> String {
    hex::encode(&id_hash[..id_hash.len().min(8)])
}

/// Every live session of both kinds, oldest first, with its id hash.
async fn live(db: &Db) -> Result<Vec<(Vec<u8>, SessionView)>, DbError> {
    let now = db::to_ms(OffsetDateTime::now_utc());
    let view = |id_hash: &[u8], created_at, expires_at| SessionView {
        id: handle(id_hash),
        via: "token",
        token_id: None,
        actor: String::new(),
        role: String::new(),
        created_at: crate::fleet::rfc3339(created_at),
        expires_at: crate::fleet::rfc3339(expires_at),
    };
    let mut all: Vec<(i64, Vec<u8>, SessionView)> = Vec::new();
    for (s, t) in db.list_admin_sessions(now).await? {
        let v = SessionView {
            token_id: Some(t.id.clone()),
            actor: format!("token:{}", t.name),
            role: t.role.clone(),
            ..view(&s.id_hash, s.created_at, s.expires_at)
        };
        all.push((s.created_at, s.id_hash, v));
    }
    for p in db.list_person_sessions(now).await? {
        let v = SessionView {
            via: "sso",
            actor: Person::actor_name(&p.name, &p.subject),
            role: p.role.clone(),
            ..view(&p.id_hash, p.created_at, p.expires_at)
        };
        all.push((p.created_at, p.id_hash, v));
    }
    all.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(all.into_iter().map(|(_, h, v)| (h, v)).collect())
}

/// Every live session, oldest first.
pub async fn list(db: &Db) -> Result<Vec<SessionView>, DbError> {
    Ok(live(db).await?.into_iter().map(|(_, v)| v).collect())
}

/// End the live session whose handle ([`SessionView::id`]) is `id`; false
/// when there is none. The browser holding it is signed out at its next
/// request.
pub async fn revoke(db: &Db, id: &str) -> Result<bool, DbError> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(false);
    }
    for (id_hash, _) in live(db).await? {
        if handle(&id_hash) == id {
            return delete(db, &id_hash).await;
        }
    }
    Ok(false)
}

async fn delete(db: &Db, id_hash: &[u8]) -> Result<bool, DbError> {
    Ok(db.delete_admin_session(id_hash).await? | db.delete_person_session(id_hash).await?)
}

/// End a session (logout); true if it existed.
pub async fn end(db: &Db, presented: &str) -> Result<bool, DbError> {
    if !well_formed(presented) {
        return Ok(false);
    }
    delete(db, &hash(presented)).await
}

/// Delete expired sessions and those of revoked or expired tokens.
pub async fn purge(db: &Db) -> Result<u64, DbError> {
    let now = db::to_ms(OffsetDateTime::now_utc());
    Ok(db.purge_admin_sessions(now).await? + db.purge_person_sessions(now).await?)
}

/// Run [`purge`] every `every` until `shutdown`.
pub async fn purge_loop(db: Db, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match purge(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired dashboard sessions deleted"),
            Err(e) => tracing::warn!(error = %e, "delete expired dashboard sessions"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tokens;

    async fn fixture() -> (tempfile::TempDir, Db, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).await.expect("open db");
        let t = tokens::create(&db, "alice", crate::admin::Role::Operator, None)
            .await
            .expect("token");
        (dir, db, t.id.clone(), t.token.clone())
    }

    #[tokio::test]
    async fn session_id_is_random_not_the_token_and_stored_hashed() {
        let (_d, db, token_id, token) = fixture().await;
        let a = create(&db, &token_id, DEFAULT_TTL).await.expect("session");
        let b = create(&db, &token_id, DEFAULT_TTL).await.expect("session");
        assert_ne!(a.id, b.id);
        assert_ne!(a.id, token);
        assert!(!a.id.contains(&token_id), "id must not reveal the token id");
        assert_eq!(
            verify(&db, &a.id).await,
            Some(Actor("token:alice".into(), crate::admin::Role::Operator))
        );
        let raw: Vec<Vec<u8>> = sqlx::query_scalar("SELECT id_hash FROM admin_sessions")
            .fetch_all(db.sqlite_pool())
            .await
            .expect("select");
        assert_eq!(raw.len(), 2);
        assert!(raw.iter().all(|h| h.as_slice() != a.id.as_bytes()));
        assert!(raw.contains(&hash(&a.id)));
        assert!(!format!("{a:?}").contains(&a.id), "Debug must hide the id");
    }

    #[tokio::test]
    async fn the_admin_token_itself_is_not_a_session() {
        let (_d, db, _id, token) = fixture().await;
        assert_eq!(verify(&db, &token).await, None);
        assert_eq!(verify(&db, "").await, None);
        assert_eq!(verify(&db, &"A".repeat(43)).await, None);
    }

    #[tokio::test]
    async fn expired_sessions_are_refused_and_purged() {
        let (_d, db, token_id, _) = fixture().await;
        let s = create(&db, &token_id, Duration::ZERO)
            .await
            .expect("session");
        let live = create(&db, &token_id, DEFAULT_TTL).await.expect("session");
        assert_eq!(verify(&db, &s.id).await, None);
        assert_eq!(purge(&db).await.expect("purge"), 1);
        assert_eq!(db.count_admin_sessions().await.expect("count"), 1);
        assert!(verify(&db, &live.id).await.is_some());
    }

    #[tokio::test]
    async fn revoking_the_admin_token_ends_its_sessions_only() {
        let (_d, db, token_id, _) = fixture().await;
        let other = tokens::create(&db, "bob", crate::admin::Role::Admin, None)
            .await
            .expect("token");
        let s = create(&db, &token_id, DEFAULT_TTL).await.expect("session");
        let kept = create(&db, &other.id, DEFAULT_TTL).await.expect("session");
        assert!(db.revoke_admin_token(&token_id, 1).await.expect("revoke"));
        assert_eq!(verify(&db, &s.id).await, None);
        assert_eq!(db.count_admin_sessions().await.expect("count"), 1);
        assert_eq!(
            verify(&db, &kept.id).await,
            Some(Actor("token:bob".into(), crate::admin::Role::Admin))
        );
    }

    #[tokio::test]
    async fn a_session_of_a_token_revoked_behind_its_back_is_refused() {
        // A revocation that did not delete sessions (an older binary, a
        // manual UPDATE) still ends them: the lookup checks the token.
        let (_d, db, token_id, _) = fixture().await;
        let s = create(&db, &token_id, DEFAULT_TTL).await.expect("session");
        sqlx::query("UPDATE admin_tokens SET revoked_at = 1 WHERE id = ?")
            .bind(&token_id)
            .execute(db.sqlite_pool())
            .await
            .expect("update");
        assert_eq!(verify(&db, &s.id).await, None);
        assert_eq!(purge(&db).await.expect("purge"), 1);
    }

    fn otto() -> Person {
        Person {
            issuer: "https://id.example".into(),
            subject: "u-42".into(),
            name: "Otto Operator".into(),
            role: Role::Operator,
        }
    }

    #[tokio::test]
    async fn a_person_session_names_the_person_and_keeps_their_role() {
        let (_d, db, token_id, _) = fixture().await;
        let s = create_for_person(&db, &otto(), DEFAULT_TTL)
            .await
            .expect("session");
        let t = create(&db, &token_id, DEFAULT_TTL).await.expect("session");
        assert_eq!(
            verify(&db, &s.id).await,
            Some(Actor("sso:Otto Operator (u-42)".into(), Role::Operator))
        );
        let listed = list(&db).await.expect("list");
        assert_eq!(listed.len(), 2);
        let p = listed.iter().find(|v| v.via == "sso").expect("sso row");
        assert_eq!(p.actor, "sso:Otto Operator (u-42)");
        assert_eq!(p.role, "operator");
        assert_eq!(p.token_id, None);
        // Revoking it by its handle signs that browser out, and only it.
        assert!(revoke(&db, &p.id).await.expect("revoke"));
        assert_eq!(verify(&db, &s.id).await, None);
        assert!(verify(&db, &t.id).await.is_some());
        assert!(!revoke(&db, &p.id).await.expect("revoke twice"));
    }

    #[tokio::test]
    async fn a_person_session_expires_and_is_purged_and_logout_ends_it() {
        let (_d, db, _, _) = fixture().await;
        let gone = create_for_person(&db, &otto(), Duration::ZERO)
            .await
            .expect("session");
        let live = create_for_person(&db, &otto(), DEFAULT_TTL)
            .await
            .expect("session");
        assert_eq!(verify(&db, &gone.id).await, None);
        assert!(list(&db).await.expect("list").len() == 1);
        assert_eq!(purge(&db).await.expect("purge"), 1);
        assert!(end(&db, &live.id).await.expect("end"));
        assert_eq!(verify(&db, &live.id).await, None);
    }

    #[tokio::test]
    async fn logout_ends_the_session() {
        let (_d, db, token_id, _) = fixture().await;
        let s = create(&db, &token_id, DEFAULT_TTL).await.expect("session");
        assert!(end(&db, &s.id).await.expect("end"));
        assert_eq!(verify(&db, &s.id).await, None);
        assert!(!end(&db, &s.id).await.expect("end twice"));
    }
}
