//! Operator actions, written once: cordon, uncordon, drain, agent revoke,
//! trust label changes, runner stop, and join token create and revoke, each
//! with its audit record.
//!
//! The admin API (`http/api.rs`) and the CLI's offline backend
//! (`cli/backend.rs`, reading the data dir) are thin adapters over
//! [`Actions`], so the two surfaces check the same things, write the same
//! audit kinds and details, and cannot drift. The CLI with `--server` calls
//! the API and so lands here too.
//!
//! Offline ([`Actions::offline`]) there is no fleet in memory: changes go to
//! SQLite only, and a running coordinator picks up revocations from the
//! `revocations` table within a second (`fleet/monitor.rs`). Drain and trust
//! label changes need the running coordinator (the reconciler; the fleet
//! that placement reads) and are refused offline.
//!
//! Trust labels ([`Actions::change_labels`]) are what pools'
//! `agent_selector`s place by (`scheduler/labels.rs`): they are checked
//! here, written to SQLite and the live fleet under one lock, take effect
//! for the next placement pass at once, and audited with old and new
//! values (`agent.labels_changed`).

use std::time::Duration;

use autogit_certs::{AgentId, Fingerprint, JoinToken};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::Audit;
use crate::bounds;
use crate::db::{self, Db, DbError};
use crate::fleet::Fleet;
use crate::runners::ReconcilerHandle;
use crate::scheduler::Labels;
use crate::scheduler::labels;
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

/// A trust label change: an agent's labels before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelChange {
    pub agent: AgentId,
    pub old: Labels,
    pub new: Labels,
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

    /// Change an agent's trust labels: add or replace the pairs of `set`,
    /// then drop the keys in `remove` (absent keys are no error). Every key
    /// and value is checked ([`labels`]) and the result may hold at most
    /// [`labels::MAX_LABELS`]. A change is audited as `agent.labels_changed`
    /// with the old and new labels; no change, no record.
    pub async fn change_labels(
        &self,
        actor: &str,
        id: &str,
        set: &Labels,
        remove: &[String],
    ) -> Result<LabelChange, ActionError> {
        let agent = parse_agent(id)?;
        let id = agent.to_string();
        if set.is_empty() && remove.is_empty() {
            return Err(ActionError::Invalid(
                "name at least one label to set (key=value) or remove (key)".into(),
            ));
        }
        let invalid = |e: labels::LabelError| ActionError::Invalid(e.to_string());
        for (k, v) in set {
            labels::check_key(k).map_err(invalid)?;
            labels::check_value(k, v).map_err(invalid)?;
        }
        for k in remove {
            labels::check_key(k).map_err(invalid)?;
            if set.contains_key(k) {
                return Err(ActionError::Invalid(format!(
                    "label {k:?} is both set and removed"
                )));
            }
        }
        let Some(live) = &self.live else {
            return Err(ActionError::Unavailable(
                "changing trust labels needs a running coordinator (--server), which places by them"
                    .into(),
            ));
        };
        let _one_at_a_time = live.fleet.label_writes().await;
        let row = self.db.get_agent(&id).await?.ok_or_else(|| no_agent(&id))?;
        let old: Labels = serde_json::from_str(&row.labels).map_err(|e| DbError::Corrupt {
            what: "agent labels",
            detail: e.to_string(),
        })?;
        let mut new = old.clone();
        new.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        for k in remove {
            new.remove(k);
        }
        labels::check_labels(&new).map_err(invalid)?;
        if new != old {
            let json = serde_json::to_string(&new).unwrap_or_else(|_| "{}".into());
            if !self.db.set_agent_labels(&id, &json).await? {
                return Err(no_agent(&id));
            }
            live.fleet.set_trust_labels(&agent, new.clone());
            self.audit
                .record(
                    "agent.labels_changed",
                    actor,
                    Some(&id),
                    None,
                    json!({"old": old, "new": new}),
                )
                .await;
        }
        Ok(LabelChange { agent, old, new })
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
        // They become the trust labels of every agent enrolled with it.
        labels::check_labels(&req.labels).map_err(|e| ActionError::Invalid(e.to_string()))?;
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
                json!({"token_id": token.id().as_str(), "uses": req.uses, "ttl_seconds": req.ttl.as_secs(), "labels": req.labels}),
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

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A live `Actions` over a fleet with one enrolled agent labelled
    /// `rack=b3` (as its join token would have).
    async fn live_with_agent() -> (tempfile::TempDir, Actions, Db, Fleet, AgentId) {
        let (dir, _, db) = offline().await;
        let id = AgentId::new_random();
        let row = db::AgentRow {
            labels: r#"{"rack":"b3"}"#.into(),
            ..crate::fleet::registry::enrolled_row(&id, "h")
        };
        db.insert_agent(&row).await.expect("insert");
        let timings = crate::fleet::Timings {
            heartbeat_interval: Duration::from_secs(1),
            unreachable_after: Duration::from_secs(3),
            lost_after: Duration::from_secs(10),
        };
        let fleet = Fleet::new(&db.list_agents().await.expect("list"), &[], timings);
        let actions = Actions::live(
            db.clone(),
            Audit::new(db.clone()),
            fleet.clone(),
            ReconcilerHandle::default(),
        );
        (dir, actions, db, fleet, id)
    }

    async fn stored_labels(db: &Db, id: &AgentId) -> Labels {
        let row = db
            .get_agent(&id.to_string())
            .await
            .expect("get")
            .expect("row");
        serde_json::from_str(&row.labels).expect("json")
    }

    #[tokio::test]
    async fn label_changes_reach_the_database_the_fleet_and_the_audit_log() {
        let (_dir, actions, db, fleet, id) = live_with_agent().await;
        let change = actions
            .change_labels(
                "token:ops",
                &id.to_string(),
                &labels(&[("trust", "deploy")]),
                &[],
            )
            .await
            .expect("set");
        let both = labels(&[("rack", "b3"), ("trust", "deploy")]);
        assert_eq!(change.old, labels(&[("rack", "b3")]));
        assert_eq!(change.new, both);
        assert_eq!(stored_labels(&db, &id).await, both);
        assert_eq!(fleet.trust_labels(&id), Some(both.clone()));

        let change = actions
            .change_labels(
                "cli",
                &id.to_string(),
                &Labels::new(),
                &["rack".into(), "absent".into()],
            )
            .await
            .expect("remove");
        assert_eq!(change.new, labels(&[("trust", "deploy")]));
        assert_eq!(stored_labels(&db, &id).await, change.new);
        assert_eq!(fleet.trust_labels(&id), Some(change.new.clone()));

        // Removing what is not there changes nothing and records nothing.
        actions
            .change_labels("cli", &id.to_string(), &Labels::new(), &["absent".into()])
            .await
            .expect("no-op");

        let page = crate::audit::page(
            &db,
            &db::EventFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("events");
        let events = page["events"].as_array().expect("events");
        assert_eq!(events.len(), 2, "{page:#}");
        assert_eq!(events[0]["kind"], "agent.labels_changed");
        assert_eq!(events[0]["actor"], "cli");
        assert_eq!(
            events[0]["detail"]["old"],
            json!({"rack": "b3", "trust": "deploy"})
        );
        assert_eq!(events[0]["detail"]["new"], json!({"trust": "deploy"}));
        assert_eq!(events[1]["actor"], "token:ops");
        assert_eq!(events[1]["detail"]["old"], json!({"rack": "b3"}));
        assert_eq!(events[1]["agent_id"], id.to_string());
    }

    #[tokio::test]
    async fn bad_label_changes_are_refused_naming_the_problem_and_change_nothing() {
        let (_dir, actions, db, fleet, id) = live_with_agent().await;
        let agent = id.to_string();
        let cases: Vec<(Labels, Vec<String>, &str)> = vec![
            (labels(&[("trust", "de ploy")]), vec![], "value \"de ploy\""),
            (labels(&[("bad key", "x")]), vec![], "label key \"bad key\""),
            (labels(&[("trust", "")]), vec![], "value \"\""),
            (Labels::new(), vec!["-x".into()], "label key \"-x\""),
            (Labels::new(), vec![], "at least one label"),
            (
                labels(&[("trust", "a")]),
                vec!["trust".into()],
                "both set and removed",
            ),
            (
                (0..40).map(|i| (format!("k{i}"), "v".to_owned())).collect(),
                vec![],
                "at most 32 labels",
            ),
        ];
        for (set, remove, want) in cases {
            let err = actions
                .change_labels("cli", &agent, &set, &remove)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ActionError::Invalid(m) if m.contains(want)),
                "{want}: {err}"
            );
        }
        let unknown = AgentId::new_random().to_string();
        assert!(matches!(
            actions
                .change_labels("cli", &unknown, &labels(&[("a", "b")]), &[])
                .await,
            Err(ActionError::NotFound(_))
        ));
        assert!(matches!(
            Actions::offline(db.clone())
                .change_labels("cli", &agent, &labels(&[("a", "b")]), &[])
                .await,
            Err(ActionError::Unavailable(_))
        ));
        assert_eq!(stored_labels(&db, &id).await, labels(&[("rack", "b3")]));
        assert_eq!(fleet.trust_labels(&id), Some(labels(&[("rack", "b3")])));
        assert!(
            kinds(&db).await.is_empty(),
            "nothing changed, nothing audited"
        );
    }

    #[tokio::test]
    async fn join_token_labels_are_checked_because_they_become_trust_labels() {
        let (_dir, actions, db) = offline().await;
        let ca = autogit_certs::ClusterCa::generate("t")
            .expect("ca")
            .fingerprint();
        let mut req = new_token(Duration::from_secs(60));
        req.labels = labels(&[("trust", "deploy now")]);
        let err = actions.create_token("cli", ca, &req).await.unwrap_err();
        assert!(
            matches!(&err, ActionError::Invalid(m) if m.contains("\"deploy now\"")),
            "{err}"
        );
        assert!(kinds(&db).await.is_empty());
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
