//! The one GraphQL query AutoGit needs: every pending job on the instance.
//!
//! The REST API has no instance-wide job listing; administrators can ask
//! `POST /api/graphql` for `jobs(statuses: [PENDING])` (a connection of
//! `CiJobInterface`, paginated through `pageInfo { hasNextPage endCursor }`,
//! at most 100 nodes a page).
//!
//! Beware: for a token that is not an administrator's, GitLab's
//! `Ci::JobsFinder` turns the access denial into an *empty* list, not an
//! error; with Admin Mode on, an admin's token also needs the `admin_mode`
//! scope. An empty answer therefore does not prove there is no demand:
//! check `GET /user` (`is_admin`) before relying on this query. A `null`
//! `jobs` field (alone or with GitLab's "you don't have permission" error) is
//! reported as [`GitLabError::Forbidden`](super::GitLabError::Forbidden).
//!
//! Only fields of `CiJobInterface` that have existed for a long time are
//! selected so older GitLab versions accept the query. The finder returns
//! builds only; trigger jobs (`Ci::Bridge`) would be dropped anyway.

use serde::{Deserialize, Serialize};

use super::job::{Job, JobPipeline, JobRunnerRef, JobStatus};
use super::wire;

/// Nodes per GraphQL page (GitLab's maximum page size).
pub const PAGE_SIZE: u32 = 100;

/// The query. `$after` is the previous page's `endCursor`.
pub const PENDING_JOBS_QUERY: &str = "query AutogitPendingBuilds($first: Int, $after: String) {
  jobs(statuses: [PENDING], first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id
      name
      status
      tags
      refName
      createdAt
      startedAt
      queuedDuration
      stage { name }
      pipeline { id }
      project { id }
      runner { id description }
    }
  }
}";

/// Body of the GraphQL POST.
#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    pub query: &'static str,
    pub variables: Variables<'a>,
}

/// Variables of [`PENDING_JOBS_QUERY`].
#[derive(Debug, Serialize)]
pub(crate) struct Variables<'a> {
    pub first: u32,
    pub after: Option<&'a str>,
}

/// Top-level GraphQL answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Response {
    #[serde(default)]
    pub data: Option<Data>,
    #[serde(default)]
    pub errors: Vec<ErrorEntry>,
}

/// One entry of `errors`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEntry {
    #[serde(default)]
    pub message: String,
}

/// `data`.
#[derive(Debug, Deserialize)]
pub(crate) struct Data {
    #[serde(default)]
    pub jobs: Option<Connection>,
}

/// A `CiJobConnection` page.
#[derive(Debug, Deserialize)]
pub(crate) struct Connection {
    #[serde(rename = "pageInfo")]
    pub page_info: PageInfo,
    #[serde(default, deserialize_with = "wire::null_default")]
    pub nodes: Vec<Option<Node>>,
}

/// `pageInfo`.
#[derive(Debug, Deserialize)]
pub(crate) struct PageInfo {
    #[serde(rename = "hasNextPage", default)]
    pub has_next_page: bool,
    #[serde(rename = "endCursor", default)]
    pub end_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Identified {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RunnerNode {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// One `CiJob` node.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Node {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "wire::null_default")]
    tags: Vec<String>,
    #[serde(default)]
    ref_name: Option<String>,
    #[serde(default, deserialize_with = "wire::opt_time")]
    created_at: Option<time::OffsetDateTime>,
    #[serde(default, deserialize_with = "wire::opt_time")]
    started_at: Option<time::OffsetDateTime>,
    #[serde(default)]
    queued_duration: Option<f64>,
    #[serde(default)]
    stage: Option<Named>,
    #[serde(default)]
    pipeline: Option<Identified>,
    #[serde(default)]
    project: Option<Identified>,
    #[serde(default)]
    runner: Option<RunnerNode>,
}

impl Node {
    /// The node as a [`Job`]; `None` for trigger jobs and nodes without a
    /// usable id or project (nothing a runner could take).
    pub(crate) fn into_job(self) -> Option<Job> {
        let gid = self.id?;
        if !gid.starts_with("gid://gitlab/Ci::Build/") {
            return None;
        }
        let id = wire::parse_global_id(&gid)?;
        let project_id = self
            .project
            .and_then(|p| p.id)
            .and_then(|g| wire::parse_global_id(&g))?;
        let pipeline = self
            .pipeline
            .and_then(|p| p.id)
            .and_then(|g| wire::parse_global_id(&g))
            .map(|pid| JobPipeline {
                id: pid,
                project_id: Some(project_id),
                git_ref: self.ref_name.clone(),
                sha: None,
            });
        let runner = self.runner.and_then(|r| {
            let rid = r.id.as_deref().and_then(wire::parse_global_id)?;
            Some(JobRunnerRef {
                id: rid,
                description: r.description,
                runner_type: None,
                is_shared: None,
            })
        });
        Some(Job {
            id,
            project_id,
            status: self
                .status
                .map(JobStatus::from)
                .unwrap_or(JobStatus::Pending),
            tag_list: self.tags,
            stage: self.stage.and_then(|s| s.name),
            name: self.name,
            git_ref: self.ref_name,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: None,
            queued_duration: self.queued_duration,
            allow_failure: None,
            runner,
            pipeline,
            web_url: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_converts_builds_and_drops_bridges() {
        let body = r#"{"data": {"jobs": {
            "pageInfo": {"hasNextPage": true, "endCursor": "eyJpZCI6IjQyIn0"},
            "nodes": [
              {"id": "gid://gitlab/Ci::Build/1977", "name": "test", "status": "PENDING",
               "tags": ["gpu", "linux"], "refName": "main",
               "createdAt": "2021-02-23T02:41:37Z", "startedAt": null, "queuedDuration": 12.5,
               "stage": {"name": "test"}, "pipeline": {"id": "gid://gitlab/Ci::Pipeline/2366"},
               "project": {"id": "gid://gitlab/Project/380"}, "runner": null,
               "someNewField": 1},
              {"id": "gid://gitlab/Ci::Bridge/1978", "name": "trigger", "status": "PENDING",
               "tags": null, "project": {"id": "gid://gitlab/Project/380"}},
              null
            ]}}}"#;
        let resp: Response = serde_json::from_str(body).expect("parses");
        let conn = resp.data.and_then(|d| d.jobs).expect("jobs present");
        assert!(conn.page_info.has_next_page);
        assert_eq!(
            conn.page_info.end_cursor.as_deref(),
            Some("eyJpZCI6IjQyIn0")
        );
        let jobs: Vec<Job> = conn
            .nodes
            .into_iter()
            .flatten()
            .filter_map(Node::into_job)
            .collect();
        assert_eq!(jobs.len(), 1, "the bridge is dropped");
        let job = &jobs[0];
        assert_eq!(job.id, 1977);
        assert_eq!(job.project_id, 380);
        assert_eq!(job.status, JobStatus::Pending);
        assert_eq!(job.tag_list, vec!["gpu", "linux"]);
        assert_eq!(job.pipeline.as_ref().map(|p| p.id), Some(2366));
        assert_eq!(job.stage.as_deref(), Some("test"));
    }

    #[test]
    fn null_jobs_field_is_understood() {
        let resp: Response = serde_json::from_str(r#"{"data": {"jobs": null}}"#).expect("parses");
        assert!(resp.data.and_then(|d| d.jobs).is_none());
    }
}
