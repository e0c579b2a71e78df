//! Runners as the GitLab API sees them: creating one (`POST /user/runners`),
//! listing them (`GET /runners`, `GET /runners/all`) and their attributes.
//!
//! The `glrt-` token that creation returns is shown by GitLab exactly once;
//! [`CreatedRunner`] keeps it in a [`SecretString`] and its `Debug` hides it.

use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::wire;

/// Scope of a runner, without the owner id (`type` filter, `runner_type`
/// field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunnerKind {
    /// `instance_type`: any project on the instance (admin only).
    #[serde(rename = "instance_type")]
    Instance,
    /// `group_type`: projects of one group.
    #[serde(rename = "group_type")]
    Group,
    /// `project_type`: one project.
    #[serde(rename = "project_type")]
    Project,
}

impl RunnerKind {
    /// GitLab's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerKind::Instance => "instance_type",
            RunnerKind::Group => "group_type",
            RunnerKind::Project => "project_type",
        }
    }
}

/// Where a new runner is attached: the `runner_type` of `POST /user/runners`
/// together with its `group_id` / `project_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunnerType {
    /// Instance runner (needs an administrator's token).
    InstanceType,
    /// Group runner (needs the Owner role on the group).
    GroupType {
        /// Group id.
        id: u64,
    },
    /// Project runner (needs the Maintainer/Owner role on the project).
    ProjectType {
        /// Project id.
        id: u64,
    },
}

impl RunnerType {
    /// The scope without the owner id.
    pub fn kind(self) -> RunnerKind {
        match self {
            RunnerType::InstanceType => RunnerKind::Instance,
            RunnerType::GroupType { .. } => RunnerKind::Group,
            RunnerType::ProjectType { .. } => RunnerKind::Project,
        }
    }
}

/// `access_level` of a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    /// Runs jobs from any ref.
    NotProtected,
    /// Runs jobs from protected branches and tags only.
    RefProtected,
}

/// The request body of `POST /user/runners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRunner {
    /// Where to attach the runner.
    pub runner_type: RunnerType,
    /// Description (shown in the UI; AutoGit puts its marker here).
    pub description: Option<String>,
    /// Create it paused.
    pub paused: Option<bool>,
    /// Lock it to the project it was created for.
    pub locked: Option<bool>,
    /// Whether it takes jobs without tags.
    pub run_untagged: Option<bool>,
    /// Its tags; a job runs only on a runner that has all of the job's tags.
    pub tag_list: Vec<String>,
    /// Protected refs only, or any ref.
    pub access_level: Option<AccessLevel>,
    /// Upper bound for a job's timeout, in seconds.
    pub maximum_timeout: Option<u32>,
    /// Free-form note for administrators.
    pub maintenance_note: Option<String>,
}

impl CreateRunner {
    /// A request for a runner of the given type with everything else unset.
    pub fn new(runner_type: RunnerType) -> Self {
        CreateRunner {
            runner_type,
            description: None,
            paused: None,
            locked: None,
            run_untagged: None,
            tag_list: Vec::new(),
            access_level: None,
            maximum_timeout: None,
            maintenance_note: None,
        }
    }
}

/// JSON wire form of [`CreateRunner`], exactly the documented field names.
#[derive(Serialize)]
pub(crate) struct CreateRunnerBody<'a> {
    runner_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_untagged: Option<bool>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tag_list: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    access_level: Option<AccessLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maximum_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance_note: Option<&'a str>,
}

impl<'a> CreateRunnerBody<'a> {
    pub(crate) fn new(req: &'a CreateRunner) -> Self {
        let runner_type = req.runner_type;
        let (group_id, project_id) = match runner_type {
            RunnerType::InstanceType => (None, None),
            RunnerType::GroupType { id } => (Some(id), None),
            RunnerType::ProjectType { id } => (None, Some(id)),
        };
        CreateRunnerBody {
            runner_type: runner_type.kind().as_str(),
            group_id,
            project_id,
            description: req.description.as_deref(),
            paused: req.paused,
            locked: req.locked,
            run_untagged: req.run_untagged,
            tag_list: &req.tag_list,
            access_level: req.access_level,
            maximum_timeout: req.maximum_timeout,
            maintenance_note: req.maintenance_note.as_deref(),
        }
    }
}

/// The answer of `POST /user/runners`: the runner id and its `glrt-`
/// authentication token (shown once).
#[derive(Clone, Deserialize)]
pub struct CreatedRunner {
    /// Runner id.
    #[serde(deserialize_with = "wire::flexible_u64")]
    pub id: u64,
    /// The runner authentication token (`glrt-...`).
    pub token: SecretString,
    /// When the token expires, if the instance enforces expiry.
    #[serde(default, deserialize_with = "wire::opt_time")]
    pub token_expires_at: Option<OffsetDateTime>,
}

impl fmt::Debug for CreatedRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedRunner")
            .field("id", &self.id)
            .field("token", &"[REDACTED]")
            .field("token_expires_at", &self.token_expires_at)
            .finish()
    }
}

/// Runner status as reported by GitLab and as used in the `status` filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum RunnerStatus {
    /// Contacted GitLab within the last 2 hours.
    Online,
    /// Not contacted recently.
    Offline,
    /// Not contacted for a long time (3 months by default).
    Stale,
    /// Created but never connected.
    NeverContacted,
    /// Any other value (kept verbatim).
    Unknown(String),
}

impl RunnerStatus {
    /// GitLab's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            RunnerStatus::Online => "online",
            RunnerStatus::Offline => "offline",
            RunnerStatus::Stale => "stale",
            RunnerStatus::NeverContacted => "never_contacted",
            RunnerStatus::Unknown(s) => s,
        }
    }
}

impl From<String> for RunnerStatus {
    fn from(s: String) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "online" => RunnerStatus::Online,
            "offline" => RunnerStatus::Offline,
            "stale" => RunnerStatus::Stale,
            "never_contacted" => RunnerStatus::NeverContacted,
            _ => RunnerStatus::Unknown(s),
        }
    }
}

impl From<RunnerStatus> for String {
    fn from(s: RunnerStatus) -> Self {
        s.as_str().to_owned()
    }
}

/// One row of `GET /runners` / `GET /runners/all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInfo {
    /// Runner id.
    pub id: u64,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// `instance_type`, `group_type` or `project_type` (absent on old
    /// GitLab versions).
    #[serde(default, deserialize_with = "wire::lenient")]
    pub runner_type: Option<RunnerKind>,
    /// Whether the runner is paused.
    #[serde(default)]
    pub paused: Option<bool>,
    /// Whether the runner is active (the inverse of `paused`, deprecated).
    #[serde(default)]
    pub active: Option<bool>,
    /// Whether it is an instance runner.
    #[serde(default)]
    pub is_shared: Option<bool>,
    /// Whether GitLab considers it online.
    #[serde(default)]
    pub online: Option<bool>,
    /// Its status.
    #[serde(default)]
    pub status: Option<RunnerStatus>,
    /// Its tags (only in the detailed runner view).
    #[serde(default, deserialize_with = "wire::null_default")]
    pub tag_list: Vec<String>,
}

/// Filters of `GET /runners` and `GET /runners/all`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerFilter {
    /// `GET /runners/all` (every runner, administrators only) instead of
    /// `GET /runners` (runners the user owns).
    pub all: bool,
    /// `type`.
    pub kind: Option<RunnerKind>,
    /// `status`.
    pub status: Option<RunnerStatus>,
    /// `paused`.
    pub paused: Option<bool>,
    /// `tag_list` (runners having all of these tags).
    pub tag_list: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn body_uses_documented_field_names_and_owner_id() {
        let req = CreateRunner {
            tag_list: vec!["gpu".into(), "x86_64".into()],
            run_untagged: Some(false),
            access_level: Some(AccessLevel::NotProtected),
            maximum_timeout: Some(3600),
            ..CreateRunner::new(RunnerType::GroupType { id: 42 })
        };
        let body = CreateRunnerBody::new(&req);
        let json = serde_json::to_value(&body).expect("serialize");
        assert_eq!(json["runner_type"], "group_type");
        assert_eq!(json["group_id"], 42);
        assert!(json.get("project_id").is_none());
        assert!(
            json.get("description").is_none(),
            "unset fields are left out"
        );
        assert_eq!(json["tag_list"], serde_json::json!(["gpu", "x86_64"]));
        assert_eq!(json["access_level"], "not_protected");
        assert_eq!(json["maximum_timeout"], 3600);
        let instance = CreateRunner::new(RunnerType::InstanceType);
        let json = serde_json::to_value(CreateRunnerBody::new(&instance)).expect("serialize");
        assert_eq!(json, serde_json::json!({"runner_type": "instance_type"}));
    }

    #[test]
    fn created_runner_accepts_string_id_and_hides_token() {
        let created: CreatedRunner = serde_json::from_str(
            r#"{"id": "12345", "token": "glrt-abcdefghijklmnop", "token_expires_at": null}"#,
        )
        .expect("parses");
        assert_eq!(created.id, 12345);
        assert_eq!(created.token.expose_secret(), "glrt-abcdefghijklmnop");
        let debug = format!("{created:?}");
        assert!(!debug.contains("glrt-abcdefghijklmnop"), "{debug}");
    }

    #[test]
    fn runner_rows_tolerate_old_and_new_shapes() {
        let rows: Vec<RunnerInfo> = serde_json::from_str(
            r#"[{"active": true, "paused": false, "description": "test-1", "id": 6,
                 "ip_address": "127.0.0.1", "is_shared": false, "runner_type": "project_type",
                 "name": null, "online": true, "status": "online"},
                {"id": 8, "description": null, "status": "never_contacted", "runner_type": "mystery"}]"#,
        )
        .unwrap_or_else(|e| panic!("parse: {e}"));
        assert_eq!(rows[0].runner_type, Some(RunnerKind::Project));
        assert_eq!(rows[0].status, Some(RunnerStatus::Online));
        assert_eq!(rows[1].status, Some(RunnerStatus::NeverContacted));
        assert_eq!(rows[1].runner_type, None, "an unknown type is not an error");
    }
}
