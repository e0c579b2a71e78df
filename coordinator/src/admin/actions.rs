//! Operator actions, written once: cordon, uncordon, drain, agent revoke,
//! runner stop, and join token create and revoke, each with its audit
//! record.
//!
//! The admin API (`http/api.rs`) and the CLI's offline backend
//! (`cli/backend.rs`, reading the data dir) are thin adapters over
//! [`Actions`], so the two surfaces check the same things, write the same
//! audit kinds and details, and cannot drift. The CLI with `--server` calls
//! the API and so lands here too.
//!
//! Offline ([`Actions::offline`]) there is no fleet in memory: changes go to
//! SQLite only, and a running coordinator picks up revocations from the
//! `revocations` table within a second (`fleet/monitor.rs`). Drain needs the
//! reconciler and is refused offline.

use std::time::Duration;

use autogit_certs::{AgentId, Fingerprint, JoinToken};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::Audit;
use crate::bounds;
use crate::db::{self, Db, DbError};
use crate::fleet::Fleet;
use crate::runners::ReconcilerHandle;
use crate::tokens::{self, NewToken};

/// Why an action was refused. Each surface maps it in one place (HTTP
/// status, CLI exit code).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Bad input, naming the field (HTTP 400, CLI usage error).
    #[error("{0}")]
    Invalid(String),
    /// No such agent or token (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The action needs something not available now (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A drain that started.
#[derive(Debug, Clone, Copy)]
pub struct DrainStarted {
    /// Runners asked to finish their job.
    pub runners: u32,
    pub deadline: OffsetDateTime,
}

/// The running coordinator's in-memory parts.
#[derive(Debug, Clone)]
struct Live {
    fleet: Fleet,
    reconciler: ReconcilerHandle,
}

/// Operator actions over the database, and the live fleet when there is one.
#[derive(Debug, Clone)]
pub struct Actions {
    db: Db,
    audit: Audit,
    live: Option<Live>,
}

impl Actions {
    /// Actions inside a running coordinator.
    pub fn live(db: Db, audit: Audit, fleet: Fleet, reconciler: ReconcilerHandle) -> Self {
        Actions {
            db,
            audit,
            live: Some(Live { fleet, reconciler }),
        }
    }

    /// Actions on the data dir alone (the CLI without `--server`).
    pub fn offline(db: Db) -> Self {
        Actions {
            audit: Audit::new(db.clone()),
            db,
            live: None,
        }
    }

    /// Cordon (`true`) or uncordon an agent; uncordon also ends a drain.
    pub async fn set_cordon(
        &self,
        actor: &str,
        id: &str,
        cordoned: bool,
    ) -> Result<AgentId, ActionError> {
        let agent = parse_agent(id)?;
        let id = agent.to_string();
        if !self.db.set_cordoned(&id, cordoned).await? {
            return Err(no_agent(&id));
        }
        if let Some(live) = &self.live {
            live.fleet.set_cordoned(&agent, cordoned);
            if !cordoned {
                live.fleet.set_drain(&agent, None);
            }
        }
        let kind = if cordoned {
            "agent.cordoned"
        } else {
            "agent.uncordoned"
        };
        self.audit
            .record(kind, actor, Some(&id), None, json!({}))
            .await;
        Ok(agent)
    }

    /// Drain an agent: cordon it, ask its runners to finish their job, stop
    /// the rest after `deadline` (at most [`bounds::MAX_DRAIN_DEADLINE`]).
    pub async fn drain(
        &self,
        actor: &str,
        id: &str,
        deadline: Duration,
    ) -> Result<DrainStarted, ActionError> {
        let agent = parse_agent(id)?;
        let id = agent.to_string();
        let wait = bounds::check(
            "deadline_seconds",
            deadline,
            Duration::ZERO,
            bounds::MAX_DRAIN_DEADLINE,
        )
        .map_err(|e| ActionError::Invalid(e.to_string()))?;
        let at = bounds::after(OffsetDateTime::now_utc(), wait)
            .ok_or_else(|| ActionError::Invalid("deadline_seconds is out of range".into()))?;
        let Some(live) = &self.live else {
            return Err(ActionError::Unavailable(
                "drain needs a running coordinator (--server)".into(),
            ));
        };
        if !self.db.set_cordoned(&id, true).await? {
            return Err(no_agent(&id));
        }
        live.fleet.set_cordoned(&agent, true);
        let runners = live
            .reconciler
            .drain(agent, at)
            .await
            .map_err(ActionError::Unavailable)?;
        self.audit
            .record(
                "agent.drain",
                actor,
                Some(&id),
                None,
                json!({"deadline_seconds": wait.as_secs(), "runners": runners}),
            )
            .await;
        Ok(DrainStarted {
            runners,
            deadline: at,
        })
    }

    /// Revoke an agent: its session is cut, reconnects and renewals refused.
    pub async fn revoke_agent(
        &self,
        actor: &str,
        id: &str,
        reason: &str,
    ) -> Result<AgentId, ActionError> {
        let agent = parse_agent(id)?;
        let id = agent.to_string();
        if !self
            .db
            .revoke_agent(&id, db::to_ms(OffsetDateTime::now_utc()), actor, reason)
            .await?
        {
            return Err(no_agent(&id));
        }
        if let Some(live) = &self.live {
            live.fleet.revoke(&agent);
        }
        self.audit
            .record(
                "agent.revoked",
                actor,
                Some(&id),
                None,
                json!({"reason": reason}),
            )
            .await;
        Ok(agent)
    }

    /// Ask a runner to stop gracefully (it finishes a job it took).
    pub async fn stop_runner(&self, actor: &str, id: &str) -> Result<uuid::Uuid, ActionError> {
        let runner: uuid::Uuid = id.parse().map_err(|_| {
            ActionError::Invalid(format!(
                "{:?} is not a runner id (a UUID)",
                crate::edge::wire(id)
            ))
        })?;
        let Some(live) = &self.live else {
            return Err(ActionError::Unavailable(
                "stopping a runner needs a running coordinator (--server)".into(),
            ));
        };
        live.reconciler.stop_runner(runner).await.map_err(|e| {
            if e.starts_with("no active runner") {
                ActionError::NotFound(e)
            } else {
                ActionError::Unavailable(e)
            }
        })?;
        let id = runner.to_string();
        self.audit
            .record("runner.stop_requested", actor, None, Some(&id), json!({}))
            .await;
        Ok(runner)
    }

    /// Create a join token (TTL at most [`bounds::MAX_JOIN_TOKEN_TTL`]).
    /// The returned token is the only copy of its secret.
    pub async fn create_token(
        &self,
        actor: &str,
        ca: Fingerprint,
        req: &NewToken,
    ) -> Result<JoinToken, ActionError> {
        let token = tokens::create(&self.db, ca, req)
            .await
            .map_err(|e| match e {
                tokens::CreateError::Invalid(msg) => ActionError::Invalid(msg),
                tokens::CreateError::Db(e) => ActionError::Db(e),
            })?;
        self.audit
            .record(
                "token.created",
                actor,
                None,
                None,
                json!({"token_id": token.id().as_str(), "uses": req.uses, "ttl_seconds": req.ttl.as_secs()}),
            )
            .await;
        Ok(token)
    }

    /// Revoke a join token: its unused uses die at once.
    pub async fn revoke_token(&self, actor: &str, id: &str) -> Result<(), ActionError> {
        if !self
            .db
            .revoke_token(id, db::to_ms(OffsetDateTime::now_utc()))
            .await?
        {
            return Err(ActionError::NotFound(format!(
                "no join token with id {}",
                crate::edge::wire(id)
            )));
        }
        self.audit
            .record("token.revoked", actor, None, None, json!({"token_id": id}))
            .await;
        Ok(())
    }
}

fn parse_agent(id: &str) -> Result<AgentId, ActionError> {
    id.parse().map_err(|_| {
        ActionError::Invalid(format!(
            "{:?} is not an agent id (a UUID)",
            crate::edge::wire(id)
        ))
    })
}

fn no_agent(id: &str) -> ActionError {
    ActionError::NotFound(format!("no agent with id {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    async fn offline() -> (tempfile::TempDir, Actions, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).await.expect("open db");
        (dir, Actions::offline(db.clone()), db)
    }

    fn new_token(ttl: Duration) -> NewToken {
        NewToken {
            ttl,
            uses: 1,
            labels: BTreeMap::new(),
            description: String::new(),
        }
    }

    async fn kinds(db: &Db) -> Vec<String> {
        let page = crate::audit::page(
            db,
            &db::EventFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("events");
        page["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["kind"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn token_actions_are_checked_and_audited_once() {
        let (_dir, actions, db) = offline().await;
        let ca = autogit_certs::ClusterCa::generate("t")
            .expect("ca")
            .fingerprint();
        let err = actions
            .create_token("cli", ca, &new_token(Duration::from_secs(u64::MAX)))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::Invalid(m) if m.contains("365 days")),
            "{err}"
        );
        let token = actions
            .create_token("cli", ca, &new_token(Duration::from_secs(60)))
            .await
            .expect("create");
        actions
            .revoke_token("token:ops", token.id().as_str())
            .await
            .expect("revoke");
        let err = actions.revoke_token("cli", "nope\n").await.unwrap_err();
        assert!(
            matches!(&err, ActionError::NotFound(m) if !m.contains('\n')),
            "{err}"
        );
        assert_eq!(
            kinds(&db).await,
            vec!["token.revoked", "token.created"],
            "newest first, one each"
        );
    }

    #[tokio::test]
    async fn agent_actions_name_bad_ids_and_drain_needs_a_live_coordinator() {
        let (_dir, actions, db) = offline().await;
        assert!(matches!(
            actions.set_cordon("cli", "x", true).await,
            Err(ActionError::Invalid(_))
        ));
        let unknown = AgentId::new_random().to_string();
        assert!(matches!(
            actions.set_cordon("cli", &unknown, true).await,
            Err(ActionError::NotFound(_))
        ));
        assert!(matches!(
            actions.revoke_agent("cli", &unknown, "").await,
            Err(ActionError::NotFound(_))
        ));
        assert!(matches!(
            actions
                .drain("cli", &unknown, Duration::from_secs(60))
                .await,
            Err(ActionError::Unavailable(_))
        ));
        let err = actions
            .drain("cli", &unknown, Duration::from_secs(8 * 24 * 3600))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::Invalid(m) if m.contains("deadline_seconds")),
            "{err}"
        );
        assert!(
            kinds(&db).await.is_empty(),
            "nothing happened, nothing audited"
        );
    }
}
