//! Enrolment and renewal: trading a join token (or a live identity) and a
//! CSR for a short-lived client certificate.
//!
//! The token's use is consumed and the agent inserted in one transaction, so
//! a single-use token can never enroll two agents, even concurrently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use autogit_certs::{AgentId, ClusterCa, JoinToken, TokenError};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{Audit, SYSTEM};
use crate::db::{self, AgentRow, Db, DbError, TokenUse};
use crate::fleet::{AgentState, Fleet, Refusal};

/// Why enrolment or renewal was refused. Messages are shown to the agent's
/// operator and never contain the token secret.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    MalformedToken(#[from] TokenError),
    #[error("join token was issued by a different cluster CA")]
    WrongCluster,
    #[error("join token is not valid")]
    InvalidToken,
    #[error("join token expired")]
    Expired,
    #[error("join token has no uses left")]
    UsedUp,
    #[error("join token revoked")]
    Revoked,
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("bad certificate request: {0}")]
    BadCsr(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DbError> for EnrollError {
    fn from(e: DbError) -> Self {
        EnrollError::Internal(e.to_string())
    }
}

/// A successful enrolment.
#[derive(Debug)]
pub struct Enrolled {
    pub agent_id: AgentId,
    pub cert_pem: String,
    pub ca_pem: String,
}

/// Issues agent certificates. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Enroller {
    db: Db,
    ca: Arc<ClusterCa>,
    fleet: Fleet,
    audit: Audit,
    cert_ttl: Duration,
}

impl Enroller {
    pub fn new(db: Db, ca: Arc<ClusterCa>, fleet: Fleet, audit: Audit, cert_ttl: Duration) -> Self {
        Enroller {
            db,
            ca,
            fleet,
            audit,
            cert_ttl,
        }
    }

    pub async fn enroll(
        &self,
        token: &str,
        csr_pem: &str,
        hostname: &str,
    ) -> Result<Enrolled, EnrollError> {
        let token = JoinToken::parse(token)?;
        if !token.ca_fingerprint().matches(&self.ca.fingerprint()) {
            return Err(EnrollError::WrongCluster);
        }
        let stored = self
            .db
            .get_token(token.id().as_str())
            .await?
            .ok_or(EnrollError::InvalidToken)?;
        if !token.matches_hash(&stored.secret_hash) {
            return Err(EnrollError::InvalidToken);
        }
        let hostname: String = hostname
            .chars()
            .filter(|c| !c.is_control())
            .take(253)
            .collect();
        let agent_id = AgentId::new_random();
        let issued = self
            .ca
            .sign_agent_csr(csr_pem, agent_id, self.cert_ttl)
            .map_err(|e| EnrollError::BadCsr(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let labels: BTreeMap<String, String> =
            serde_json::from_str(&stored.labels).unwrap_or_default();
        let row = AgentRow {
            id: agent_id.to_string(),
            hostname: if hostname.is_empty() {
                "unknown".into()
            } else {
                hostname
            },
            arch: String::new(),
            state: AgentState::Enrolled.as_str().into(),
            cordoned: false,
            labels: serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into()),
            inventory: None,
            load: None,
            cert_serial: issued.info.serial_hex.clone(),
            cert_not_after: db::to_ms(issued.info.not_after),
            token_id: Some(stored.id.clone()),
            enrolled_at: db::to_ms(now),
            last_seen: None,
            revoked_at: None,
        };
        let mut tx = self.db.pool().begin().await.map_err(DbError::from)?;
        match Db::consume_token(&mut tx, &stored.id, db::to_ms(now)).await? {
            TokenUse::Consumed => {}
            TokenUse::Unknown => return Err(EnrollError::InvalidToken),
            TokenUse::Revoked => return Err(EnrollError::Revoked),
            TokenUse::Expired => return Err(EnrollError::Expired),
            TokenUse::UsedUp => return Err(EnrollError::UsedUp),
        }
        Db::insert_agent(&mut tx, &row).await?;
        tx.commit().await.map_err(DbError::from)?;
        self.fleet.insert_enrolled(&row);
        self.audit
            .record(
                "agent.enrolled",
                &format!("token:{}", stored.id),
                Some(&row.id),
                None,
                json!({"hostname": row.hostname, "cert_serial": row.cert_serial}),
            )
            .await;
        tracing::info!(agent = %agent_id, hostname = %crate::edge::wire(&row.hostname), token = %stored.id, "agent enrolled");
        Ok(Enrolled {
            agent_id,
            cert_pem: issued.cert_pem,
            ca_pem: self.ca.cert_pem().to_string(),
        })
    }

    /// Issue a fresh certificate to a live, non-revoked agent.
    pub async fn renew(&self, agent_id: AgentId, csr_pem: &str) -> Result<String, EnrollError> {
        self.fleet.admit(&agent_id)?;
        let issued = self
            .ca
            .sign_agent_csr(csr_pem, agent_id, self.cert_ttl)
            .map_err(|e| EnrollError::BadCsr(e.to_string()))?;
        let not_after = db::to_ms(issued.info.not_after);
        self.db
            .update_agent_cert(&agent_id.to_string(), &issued.info.serial_hex, not_after)
            .await?;
        self.fleet.record_cert(&agent_id, not_after);
        self.audit
            .record(
                "agent.cert_renewed",
                SYSTEM,
                Some(&agent_id.to_string()),
                None,
                json!({"cert_serial": issued.info.serial_hex, "not_after": crate::fleet::rfc3339(not_after)}),
            )
            .await;
        tracing::info!(agent = %agent_id, "agent certificate renewed");
        Ok(issued.cert_pem)
    }
}
