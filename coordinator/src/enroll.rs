//! Enrolment and renewal: trading a join token (or a live identity) and a
//! CSR for a short-lived client certificate.
//!
//! The token's use is consumed and the agent inserted in one transaction, so
//! a single-use token can never enroll two agents, even concurrently.
//!
//! Renewal is bound to the agent's certificates in the database
//! ([`crate::db::AgentCerts`]): the *current* one, and the *pending* one the
//! last renewal issued. Only these renew or open sessions. Using the pending
//! one (`ConfirmCertificate` right after the agent stored it, a session, or
//! the next renewal) makes it current, and from then on the certificate it
//! replaced is refused ([`EnrollError::CertReplaced`], audited as
//! `agent.cert_refused`): a stolen old key is useless once the agent has
//! renewed. Until the agent confirms, its old certificate still works, so an
//! answer lost in transit, or an agent killed before it stored the new
//! certificate, never locks the agent out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use autogit_certs::{AgentId, ClusterCa, JoinToken, TokenError};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{Audit, SYSTEM};
use crate::db::{self, AgentCerts, AgentRow, Db, DbError, TokenUse};
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
    #[error(
        "certificate {serial} of agent {agent} has been replaced by a newer one and is refused; \
         if this host never received the newer one, it must re-join (`autogit-agent join --force`)"
    )]
    CertReplaced { agent: AgentId, serial: String },
    #[error("the agent's certificate changed during this request; try again")]
    Contended,
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
        match self
            .db
            .enroll_with_token(&stored.id, db::to_ms(now), &row)
            .await?
        {
            TokenUse::Consumed => {}
            TokenUse::Unknown => return Err(EnrollError::InvalidToken),
            TokenUse::Revoked => return Err(EnrollError::Revoked),
            TokenUse::Expired => return Err(EnrollError::Expired),
            TokenUse::UsedUp => return Err(EnrollError::UsedUp),
        }
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

    /// The agent's certificates, or why it may not use any.
    async fn certs_of(&self, agent: AgentId) -> Result<AgentCerts, EnrollError> {
        self.fleet.admit(&agent)?;
        self.db
            .agent_certs(&agent.to_string())
            .await?
            .ok_or(EnrollError::Refused(Refusal::Unknown(agent)))
    }

    async fn refuse_replaced(
        &self,
        agent: AgentId,
        certs: &AgentCerts,
        serial: &str,
    ) -> EnrollError {
        self.audit
            .record(
                "agent.cert_refused",
                SYSTEM,
                Some(&agent.to_string()),
                None,
                json!({"cert_serial": serial, "current_serial": certs.current, "reason": "replaced"}),
            )
            .await;
        EnrollError::CertReplaced {
            agent,
            serial: serial.to_string(),
        }
    }

    /// Check that the certificate `serial` may act for `agent` (a session,
    /// `ConfirmCertificate`): its current or pending one. The pending one
    /// becomes current, which retires the certificate it replaced.
    pub async fn check_cert(&self, agent: AgentId, serial: &str) -> Result<(), EnrollError> {
        let serial = serial.to_ascii_lowercase();
        // Bounded: each lost race means another request changed the row.
        for _ in 0..3 {
            let certs = self.certs_of(agent).await?;
            match Held::of(&certs, &serial) {
                Held::Current => return Ok(()),
                Held::Replaced => return Err(self.refuse_replaced(agent, &certs, &serial).await),
                Held::Pending => {
                    let to = AgentCerts {
                        current: serial.clone(),
                        pending: None,
                    };
                    if self
                        .db
                        .swap_agent_certs(&agent.to_string(), &certs, &to, None)
                        .await?
                    {
                        self.confirmed(agent, &certs, &serial).await;
                        return Ok(());
                    }
                }
            }
        }
        Err(EnrollError::Contended)
    }

    async fn confirmed(&self, agent: AgentId, before: &AgentCerts, serial: &str) {
        self.audit
            .record(
                "agent.cert_confirmed",
                SYSTEM,
                Some(&agent.to_string()),
                None,
                json!({"cert_serial": serial, "replaced_serial": before.current}),
            )
            .await;
        tracing::info!(%agent, serial, replaced = %before.current, "agent confirmed its renewed certificate; the replaced one is refused from now on");
    }

    /// Issue a fresh certificate to a live, non-revoked agent that called
    /// with its current or pending certificate `serial`.
    pub async fn renew(
        &self,
        agent_id: AgentId,
        serial: &str,
        csr_pem: &str,
    ) -> Result<String, EnrollError> {
        let serial = serial.to_ascii_lowercase();
        let certs = self.certs_of(agent_id).await?;
        let held = Held::of(&certs, &serial);
        if held == Held::Replaced {
            return Err(self.refuse_replaced(agent_id, &certs, &serial).await);
        }
        let issued = self
            .ca
            .sign_agent_csr(csr_pem, agent_id, self.cert_ttl)
            .map_err(|e| EnrollError::BadCsr(e.to_string()))?;
        let not_after = db::to_ms(issued.info.not_after);
        // Renewing with the pending certificate confirms it; renewing with
        // the current one replaces a pending one the agent evidently never
        // stored (a lost answer, a crash before the write).
        let to = AgentCerts {
            current: serial.clone(),
            pending: Some(issued.info.serial_hex.to_ascii_lowercase()),
        };
        if !self
            .db
            .swap_agent_certs(&agent_id.to_string(), &certs, &to, Some(not_after))
            .await?
        {
            return Err(EnrollError::Contended);
        }
        if held == Held::Pending {
            self.confirmed(agent_id, &certs, &serial).await;
        }
        self.fleet.record_cert(&agent_id, not_after);
        self.audit
            .record(
                "agent.cert_renewed",
                SYSTEM,
                Some(&agent_id.to_string()),
                None,
                json!({"cert_serial": issued.info.serial_hex, "renewed_with": serial, "not_after": crate::fleet::rfc3339(not_after)}),
            )
            .await;
        tracing::info!(agent = %agent_id, "agent certificate renewed");
        Ok(issued.cert_pem)
    }
}

/// Which of an agent's certificates a caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Current,
    Pending,
    Replaced,
}

impl Held {
    fn of(certs: &AgentCerts, serial: &str) -> Held {
        if certs.current.eq_ignore_ascii_case(serial) {
            Held::Current
        } else if certs
            .pending
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case(serial))
        {
            Held::Pending
        } else {
            Held::Replaced
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use autogit_certs::{CertInfo, csr};

    use super::*;
    use crate::fleet::Timings;
    use crate::tokens::{self, NewToken};

    struct Fx {
        enroller: Enroller,
        db: Db,
        fleet: Fleet,
        _dir: tempfile::TempDir,
    }

    async fn fx() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).await.unwrap();
        let ca = Arc::new(ClusterCa::generate("t").unwrap());
        let fleet = Fleet::new(
            &[],
            &[],
            Timings {
                heartbeat_interval: Duration::from_secs(1),
                unreachable_after: Duration::from_secs(3),
                lost_after: Duration::from_secs(10),
            },
        );
        let enroller = Enroller::new(
            db.clone(),
            ca,
            fleet.clone(),
            Audit::new(db.clone()),
            Duration::from_secs(600),
        );
        Fx {
            enroller,
            db,
            fleet,
            _dir: dir,
        }
    }

    impl Fx {
        /// A newly enrolled agent and the serial of its first certificate.
        async fn agent(&self) -> (AgentId, String) {
            let token = tokens::create(
                &self.db,
                self.enroller.ca.fingerprint(),
                &NewToken {
                    ttl: Duration::from_secs(60),
                    uses: 1,
                    labels: BTreeMap::new(),
                    description: String::new(),
                },
            )
            .await
            .unwrap();
            let keys = csr::generate("h").unwrap();
            let e = self
                .enroller
                .enroll(&token.expose(), &keys.csr_pem, "h")
                .await
                .unwrap();
            (e.agent_id, serial(&e.cert_pem))
        }

        async fn renew(&self, agent: AgentId, with: &str) -> Result<String, EnrollError> {
            let keys = csr::generate("h").unwrap();
            let pem = self.enroller.renew(agent, with, &keys.csr_pem).await?;
            Ok(serial(&pem))
        }

        async fn kinds(&self) -> Vec<String> {
            self.db
                .list_events(&crate::db::EventFilter {
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.kind)
                .collect()
        }
    }

    fn serial(pem: &str) -> String {
        CertInfo::from_pem(pem).unwrap().serial_hex
    }

    fn replaced(r: Result<impl std::fmt::Debug, EnrollError>) -> bool {
        matches!(r, Err(EnrollError::CertReplaced { .. }))
    }

    #[tokio::test]
    async fn a_confirmed_renewal_retires_the_old_certificate() {
        let fx = fx().await;
        let (agent, a) = fx.agent().await;
        let b = fx.renew(agent, &a).await.unwrap();
        fx.enroller.check_cert(agent, &b).await.unwrap();
        assert!(
            replaced(fx.renew(agent, &a).await),
            "renewal with the replaced one"
        );
        assert!(
            replaced(fx.enroller.check_cert(agent, &a).await),
            "session with the replaced one"
        );
        assert!(fx.kinds().await.contains(&"agent.cert_refused".to_string()));
        // The current one renews; renewing with the pending one confirms it.
        let c = fx.renew(agent, &b).await.unwrap();
        let d = fx.renew(agent, &c).await.unwrap();
        assert!(replaced(fx.renew(agent, &b).await));
        fx.enroller.check_cert(agent, &d).await.unwrap();
        // Case does not matter (serials are hex).
        fx.enroller
            .check_cert(agent, &d.to_uppercase())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn until_it_is_confirmed_the_old_certificate_still_works() {
        let fx = fx().await;
        let (agent, a) = fx.agent().await;
        let lost = fx.renew(agent, &a).await.unwrap();
        // The answer never arrived: the agent renews again with what it has.
        let got = fx.renew(agent, &a).await.unwrap();
        fx.enroller.check_cert(agent, &a).await.unwrap();
        assert!(
            replaced(fx.enroller.check_cert(agent, &lost).await),
            "only the last one issued is pending"
        );
        fx.enroller.check_cert(agent, &got).await.unwrap();
        assert!(replaced(fx.enroller.check_cert(agent, &a).await));
    }

    #[tokio::test]
    async fn a_revoked_agent_cannot_renew_even_with_its_current_certificate() {
        let fx = fx().await;
        let (agent, a) = fx.agent().await;
        fx.fleet.revoke(&agent);
        assert!(matches!(
            fx.renew(agent, &a).await,
            Err(EnrollError::Refused(Refusal::Revoked(_)))
        ));
        assert!(matches!(
            fx.enroller.check_cert(AgentId::new_random(), &a).await,
            Err(EnrollError::Refused(Refusal::Unknown(_)))
        ));
    }
}
