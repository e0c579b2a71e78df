//! Agent liveness states and the operator-facing view of an agent.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::inventory::{Gpu, Inventory};
use crate::db::{self, AgentRow, DbError};

/// Where an agent is in its life.
///
/// `enrolled` → (session opens) `ready` → (session closes, or heartbeats stop
/// for `unreachable_after`) `unreachable` → (`lost_after` without a session)
/// `lost`. Any state returns to `ready` when a session opens. `revoked` is
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Enrolled,
    Ready,
    Unreachable,
    Lost,
    Revoked,
}

impl AgentState {
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentState::Enrolled => "enrolled",
            AgentState::Ready => "ready",
            AgentState::Unreachable => "unreachable",
            AgentState::Lost => "lost",
            AgentState::Revoked => "revoked",
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "enrolled" => AgentState::Enrolled,
            "ready" => AgentState::Ready,
            "unreachable" => AgentState::Unreachable,
            "lost" => AgentState::Lost,
            "revoked" => AgentState::Revoked,
            other => return Err(format!("unknown agent state {other:?}")),
        })
    }
}

/// Last reported load, from heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Load {
    pub cpu_percent: f32,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    pub runner_containers: u32,
}

/// A drain in progress (or finished) on an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339: runners still running then are stopped.
    pub deadline: String,
    /// RFC 3339, once no runner is left.
    pub drained_at: Option<String>,
    #[serde(skip)]
    pub deadline_ms: i64,
}

pub fn now_rfc3339() -> String {
    rfc3339(db::to_ms(time::OffsetDateTime::now_utc()))
}

/// An agent as operators see it (`agents list`, the admin API).
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    pub arch: String,
    pub state: AgentState,
    pub cordoned: bool,
    pub connected: bool,
    /// RFC 3339, or null if never seen.
    pub last_seen: Option<String>,
    pub enrolled_at: String,
    pub cert_expires_at: String,
    /// Labels an operator set (join token at enrollment, `agent label
    /// set`): the only labels a pool's `agent_selector` looks at.
    pub trust_labels: BTreeMap<String, String>,
    /// Labels the agent reports about itself (`[labels]` in its
    /// `agent.toml`): informational, never trusted for placement.
    pub reported_labels: BTreeMap<String, String>,
    pub gpus: Vec<Gpu>,
    pub load: Option<Load>,
    pub inventory: Option<Inventory>,
    /// Set while (and after) the agent is drained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
}

pub fn rfc3339(ms: i64) -> String {
    db::from_ms(ms)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl AgentView {
    /// Build the view from a stored row (the offline view, used by CLI
    /// commands that read the data dir directly).
    pub fn from_row(row: &AgentRow) -> Result<Self, DbError> {
        let corrupt = |what: &'static str, e: serde_json::Error| DbError::Corrupt {
            what,
            detail: e.to_string(),
        };
        let inventory: Option<Inventory> = match &row.inventory {
            Some(s) => Some(serde_json::from_str(s).map_err(|e| corrupt("agent inventory", e))?),
            None => None,
        };
        let load: Option<Load> = match &row.load {
            Some(s) => Some(serde_json::from_str(s).map_err(|e| corrupt("agent load", e))?),
            None => None,
        };
        let trust_labels: BTreeMap<String, String> =
            serde_json::from_str(&row.labels).map_err(|e| corrupt("agent labels", e))?;
        Ok(AgentView {
            id: row.id.clone(),
            hostname: row.hostname.clone(),
            arch: row.arch.clone(),
            state: row.state.parse().map_err(|e| DbError::Corrupt {
                what: "agent state",
                detail: e,
            })?,
            cordoned: row.cordoned,
            connected: false,
            last_seen: row.last_seen.map(rfc3339),
            enrolled_at: rfc3339(row.enrolled_at),
            cert_expires_at: rfc3339(row.cert_not_after),
            trust_labels,
            reported_labels: inventory
                .as_ref()
                .map(|i| i.labels.clone())
                .unwrap_or_default(),
            gpus: inventory
                .as_ref()
                .map(|i| i.gpus.clone())
                .unwrap_or_default(),
            load,
            inventory,
            drain: None,
        })
    }
}
