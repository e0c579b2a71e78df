//! GitLab's JSON entities, field for field.
//!
//! Each builder names the Grape entity (lib/api/entities/...) or documentation page it
//! follows. Fields the simulator has no data for are present with GitLab's value for
//! "nothing" (`null`, `""`, `[]`), so clients that expect the key find it.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::state::{Job, JobStatus, Manager, Project, Runner, User, World, ts};
use super::timefmt::iso;

/// `API::Entities::UserBasic` (doc/api/users.md).
pub fn user_basic(w: &World, u: &User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "name": u.name,
        "state": "active",
        "locked": false,
        "avatar_url": null,
        "web_url": format!("{}/{}", w.settings.external_url, u.username),
    })
}

/// `API::Entities::User` (embedded in jobs).
pub fn user(w: &World, u: &User) -> Value {
    let mut v = user_basic(w, u);
    if let Some(m) = v.as_object_mut() {
        m.insert("created_at".into(), json!(iso(u.created_at)));
        for k in [
            "bio",
            "linkedin",
            "twitter",
            "discord",
            "website_url",
            "organization",
            "job_title",
            "pronouns",
        ] {
            m.insert(k.into(), json!(""));
        }
        for k in ["location", "work_information"] {
            m.insert(k.into(), Value::Null);
        }
        m.insert("public_email".into(), Value::Null);
        m.insert("bot".into(), json!(false));
        m.insert("followers".into(), json!(0));
        m.insert("following".into(), json!(0));
        m.insert("local_time".into(), Value::Null);
    }
    v
}

/// `GET /user` for the token's owner (`API::Entities::UserPublic`, plus `is_admin`
/// which GitLab only exposes to administrators).
pub fn current_user(w: &World, u: &User) -> Value {
    let mut v = user(w, u);
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "email".into(),
            json!(format!("{}@example.invalid", u.username)),
        );
        m.insert(
            "commit_email".into(),
            json!(format!("{}@example.invalid", u.username)),
        );
        m.insert("last_sign_in_at".into(), Value::Null);
        m.insert("confirmed_at".into(), json!(iso(u.created_at)));
        m.insert("last_activity_on".into(), Value::Null);
        m.insert("theme_id".into(), json!(1));
        m.insert("color_scheme_id".into(), json!(1));
        m.insert("projects_limit".into(), json!(100_000));
        m.insert("current_sign_in_at".into(), Value::Null);
        m.insert("identities".into(), json!([]));
        m.insert("can_create_group".into(), json!(true));
        m.insert("can_create_project".into(), json!(true));
        m.insert("two_factor_enabled".into(), json!(false));
        m.insert("external".into(), json!(false));
        m.insert("private_profile".into(), json!(false));
        if u.is_admin {
            m.insert("is_admin".into(), json!(true));
        }
    }
    v
}

/// `API::Entities::Project` (doc/api/projects.md "Get a single project"), trimmed to
/// the fields an instance without repositories can fill.
pub fn project(w: &World, p: &Project) -> Value {
    let base = &w.settings.external_url;
    let path_ns = w.project_path(p);
    let group = w.group(p.group_id);
    let (ns_name, ns_path) = group
        .map(|g| (g.name.clone(), g.path.clone()))
        .unwrap_or_else(|| ("root".into(), "root".into()));
    let host = base
        .split("://")
        .nth(1)
        .unwrap_or(base)
        .split(['/', ':'])
        .next()
        .unwrap_or("localhost")
        .to_owned();
    json!({
        "id": p.id,
        "description": null,
        "name": p.name,
        "name_with_namespace": format!("{ns_name} / {}", p.name),
        "path": p.path,
        "path_with_namespace": path_ns,
        "created_at": iso(p.created_at),
        "default_branch": "main",
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": format!("git@{host}:{path_ns}.git"),
        "http_url_to_repo": format!("{base}/{path_ns}.git"),
        "web_url": format!("{base}/{path_ns}"),
        "readme_url": null,
        "forks_count": 0,
        "avatar_url": null,
        "star_count": 0,
        "last_activity_at": iso(p.last_activity_at),
        "visibility": "private",
        "namespace": {
            "id": p.group_id,
            "name": ns_name,
            "path": ns_path,
            "kind": "group",
            "full_path": ns_path,
            "parent_id": null,
            "avatar_url": null,
            "web_url": format!("{base}/groups/{ns_path}"),
        },
        "archived": false,
        "empty_repo": true,
        "jobs_enabled": true,
        "shared_runners_enabled": true,
        "builds_access_level": "enabled",
        "creator_id": 1,
        "open_issues_count": 0,
        "ci_config_path": null,
    })
}

/// The `project` object of webhook payloads (`Project#hook_attrs`).
pub fn project_hook_attrs(w: &World, p: &Project) -> Value {
    let full = project(w, p);
    let pick = |k: &str| full.get(k).cloned().unwrap_or(Value::Null);
    let ns_name = full
        .get("namespace")
        .and_then(|n| n.get("name"))
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "id": p.id,
        "name": p.name,
        "description": null,
        "web_url": pick("web_url"),
        "avatar_url": null,
        "git_ssh_url": pick("ssh_url_to_repo"),
        "git_http_url": pick("http_url_to_repo"),
        "namespace": ns_name,
        "visibility_level": 0,
        "path_with_namespace": pick("path_with_namespace"),
        "default_branch": "main",
        "ci_config_path": null,
        "homepage": pick("web_url"),
        "url": pick("ssh_url_to_repo"),
        "ssh_url": pick("ssh_url_to_repo"),
        "http_url": pick("http_url_to_repo"),
    })
}

/// `API::Entities::Ci::Runner` (lib/api/entities/ci/runner.rb): the list shape.
pub fn runner(w: &World, r: &Runner, now: OffsetDateTime) -> Value {
    let running = w
        .jobs
        .values()
        .any(|j| j.runner_id == Some(r.id) && j.status == JobStatus::Running);
    let creator = w.user(r.creator_id).map(|u| user_basic(w, u));
    let mut v = json!({
        "id": r.id,
        "description": r.description,
        "ip_address": null,
        "active": !r.paused,
        "paused": r.paused,
        "is_shared": r.runner_type == super::state::RunnerType::Instance,
        "runner_type": r.runner_type.as_str(),
        "name": null,
        "online": r.online(now),
        "created_at": iso(r.created_at),
        "status": r.status(now),
        "job_execution_status": if running { "active" } else { "idle" },
    });
    if let (Some(m), Some(c)) = (v.as_object_mut(), creator) {
        m.insert("created_by".into(), c);
    }
    v
}

/// `API::Entities::Ci::RunnerDetails` (`GET /runners/:id`).
pub fn runner_details(w: &World, r: &Runner, now: OffsetDateTime) -> Value {
    let mut v = runner(w, r, now);
    let latest = r.managers.iter().max_by_key(|m| m.contacted_at);
    let projects: Vec<Value> = r
        .project_ids
        .iter()
        .filter_map(|id| w.projects.get(id))
        .map(|p| {
            let full = project(w, p);
            json!({
                "id": p.id,
                "description": null,
                "name": p.name,
                "name_with_namespace": full.get("name_with_namespace"),
                "path": p.path,
                "path_with_namespace": full.get("path_with_namespace"),
                "created_at": iso(p.created_at),
            })
        })
        .collect();
    let groups: Vec<Value> = r
        .group_id
        .and_then(|g| w.group(g))
        .map(|g| {
            vec![json!({
                "id": g.id,
                "name": g.name,
                "web_url": format!("{}/groups/{}", w.settings.external_url, g.path),
            })]
        })
        .unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("tag_list".into(), json!(r.tags));
        m.insert("run_untagged".into(), json!(r.run_untagged));
        m.insert("locked".into(), json!(r.locked));
        m.insert("maximum_timeout".into(), json!(r.maximum_timeout));
        m.insert("access_level".into(), json!(r.access_level));
        m.insert(
            "version".into(),
            json!(latest.and_then(|m| m.version.clone())),
        );
        m.insert(
            "revision".into(),
            json!(latest.and_then(|m| m.revision.clone())),
        );
        m.insert(
            "platform".into(),
            json!(latest.and_then(|m| m.platform.clone())),
        );
        m.insert(
            "architecture".into(),
            json!(latest.and_then(|m| m.architecture.clone())),
        );
        m.insert("contacted_at".into(), ts(r.contacted_at));
        m.insert("maintenance_note".into(), json!(r.maintenance_note));
        m.insert("projects".into(), json!(projects));
        m.insert("groups".into(), json!(groups));
    }
    v
}

/// `API::Entities::Ci::RunnerManager` (doc/api/runners.md "List runner's managers").
pub fn runner_manager(w: &World, runner_id: u64, m: &Manager, now: OffsetDateTime) -> Value {
    let running = w.jobs.values().any(|j| {
        j.runner_id == Some(runner_id)
            && j.runner_manager_id == Some(m.id)
            && j.status == JobStatus::Running
    });
    let online = m.contacted_at > now - super::state::ONLINE_CONTACT_TIMEOUT;
    json!({
        "id": m.id,
        "system_id": m.system_id,
        "version": m.version,
        "revision": m.revision,
        "platform": m.platform,
        "architecture": m.architecture,
        "created_at": iso(m.created_at),
        "contacted_at": iso(m.contacted_at),
        "ip_address": "127.0.0.1",
        "status": if online { "online" } else { "offline" },
        "job_execution_status": if running { "active" } else { "idle" },
    })
}

fn commit(j: &Job) -> Value {
    json!({
        "id": j.sha,
        "short_id": j.sha.get(..8).unwrap_or(&j.sha),
        "created_at": iso(j.created_at),
        "parent_ids": [],
        "title": "Simulated commit",
        "message": "Simulated commit",
        "author_name": "Administrator",
        "author_email": "root@example.invalid",
        "authored_date": iso(j.created_at),
        "committer_name": "Administrator",
        "committer_email": "root@example.invalid",
        "committed_date": iso(j.created_at),
        "trailers": {},
        "extended_trailers": {},
        "web_url": "",
    })
}

fn pipeline_status(j: &Job) -> &'static str {
    j.status.as_str()
}

/// `API::Entities::Ci::Job` (doc/api/jobs.md "Get a single job").
pub fn job(w: &World, j: &Job, now: OffsetDateTime) -> Value {
    let project_path = w
        .projects
        .get(&j.project_id)
        .map(|p| w.project_path(p))
        .unwrap_or_default();
    let base = &w.settings.external_url;
    let runner = j.runner_id.and_then(|id| w.runners.get(&id));
    let manager = runner.and_then(|r| {
        let mid = j.runner_manager_id?;
        r.managers.iter().find(|m| m.id == mid).map(|m| (r.id, m))
    });
    let mut tags = j.tags.clone();
    tags.sort();
    let mut v = json!({
        "id": j.id,
        "status": j.status.as_str(),
        "stage": j.stage,
        "name": j.name,
        "ref": j.git_ref,
        "tag": false,
        "coverage": null,
        "allow_failure": false,
        "created_at": iso(j.created_at),
        "started_at": ts(j.started_at),
        "finished_at": ts(j.finished_at),
        "erased_at": null,
        "duration": j.duration(now),
        "queued_duration": j.queued_duration(now),
        "user": w.user(j.user_id).map(|u| user(w, u)),
        "commit": commit(j),
        "pipeline": {
            "id": j.pipeline_id,
            "iid": j.pipeline_id,
            "project_id": j.project_id,
            "sha": j.sha,
            "ref": j.git_ref,
            "status": pipeline_status(j),
            "source": "push",
            "created_at": iso(j.created_at),
            "updated_at": iso(j.created_at),
            "web_url": format!("{base}/{project_path}/-/pipelines/{}", j.pipeline_id),
        },
        "web_url": format!("{base}/{project_path}/-/jobs/{}", j.id),
        "project": { "ci_job_token_scope_enabled": false },
        "artifacts": [],
        "runner": runner.map(|r| self::runner(w, r, now)),
        "runner_manager": manager.map(|(rid, m)| runner_manager(w, rid, m, now)),
        "artifacts_expire_at": null,
        "archived": false,
        "tag_list": tags,
    });
    if j.status == JobStatus::Failed
        && let Some(m) = v.as_object_mut()
    {
        m.insert("failure_reason".into(), json!(j.failure_reason));
    }
    v
}

/// The `POST /jobs/request` answer (`API::Entities::Ci::JobRequest::Response`).
pub fn job_request_payload(w: &World, j: &Job) -> Value {
    let base = &w.settings.external_url;
    let project = w.projects.get(&j.project_id);
    let project_path = project.map(|p| w.project_path(p)).unwrap_or_default();
    let project_name = project.map(|p| p.name.clone()).unwrap_or_default();
    let now = OffsetDateTime::now_utc();
    let var = |k: &str, v: String, public: bool, masked: bool| json!({ "key": k, "value": v, "public": public, "masked": masked });
    json!({
        "id": j.id,
        "token": j.token.expose(),
        "allow_git_fetch": true,
        "job_info": {
            "id": j.id,
            "name": j.name,
            "stage": j.stage,
            "project_id": j.project_id,
            "project_name": project_name,
            "time_in_queue_seconds": j.queued_duration(now).map(|d| d as u64).unwrap_or(0),
            "project_jobs_running_on_instance_runners_count": "0",
            "queue_size": 0,
            "queue_depth": 0,
        },
        "git_info": {
            "repo_url": format!("{base}/{project_path}.git"),
            "ref": j.git_ref,
            "sha": j.sha,
            "before_sha": "0000000000000000000000000000000000000000",
            "ref_type": "branch",
            "refspecs": [format!("+refs/heads/{0}:refs/remotes/origin/{0}", j.git_ref)],
            "depth": 20,
            "repo_object_format": "sha1",
        },
        "runner_info": { "timeout": 3600, "runner_session_url": null },
        "variables": [
            var("CI_JOB_ID", j.id.to_string(), true, false),
            var("CI_JOB_NAME", j.name.clone(), true, false),
            var("CI_JOB_STAGE", j.stage.clone(), true, false),
            var("CI_JOB_TOKEN", j.token.expose().to_owned(), false, true),
            var("CI_PROJECT_ID", j.project_id.to_string(), true, false),
            var("CI_PROJECT_PATH", project_path, true, false),
            var("CI_SERVER_URL", base.clone(), true, false),
            var("CI_COMMIT_SHA", j.sha.clone(), true, false),
            var("CI_COMMIT_REF_NAME", j.git_ref.clone(), true, false),
            var("AUTOGIT_SIM_DURATION_MS", j.duration_ms.to_string(), true, false),
        ],
        "steps": [{
            "name": "script",
            "script": [format!("sleep {:.3}", j.duration_ms as f64 / 1000.0)],
            "timeout": 3600,
            "when": "on_success",
            "allow_failure": false,
        }],
        "image": null,
        "services": [],
        "artifacts": [],
        "cache": [],
        "credentials": [],
        "features": {
            "trace_sections": true,
            "failure_reasons": ["unknown_failure", "script_failure", "runner_system_failure", "job_execution_timeout"],
        },
        "dependencies": [],
    })
}

/// The Job Hook body (lib/gitlab/data_builder/build.rb; doc/user/project/integrations/
/// webhook_events.md "Job events"). It deliberately has no job tag list: GitLab's
/// payload only carries the *runner's* tags.
pub fn job_hook_payload(w: &World, job_id: u64) -> Option<Value> {
    let j = w.jobs.get(&job_id)?;
    let p = w.projects.get(&j.project_id)?;
    let now = OffsetDateTime::now_utc();
    let runner = j.runner_id.and_then(|id| w.runners.get(&id)).map(|r| {
        json!({
            "id": r.id,
            "description": r.description,
            "runner_type": r.runner_type.as_str(),
            "active": !r.paused,
            "is_shared": r.runner_type == super::state::RunnerType::Instance,
            "tags": r.tags,
        })
    });
    let hook_user = w.user(j.user_id).map(|u| {
        json!({
            "id": u.id,
            "name": u.name,
            "username": u.username,
            "avatar_url": null,
            "email": "[REDACTED]",
        })
    });
    let project_json = project_hook_attrs(w, p);
    Some(json!({
        "object_kind": "build",
        "ref": j.git_ref,
        "tag": false,
        "before_sha": "0000000000000000000000000000000000000000",
        "sha": j.sha,
        "build_id": j.id,
        "build_name": j.name,
        "build_stage": j.stage,
        "build_status": j.status.as_str(),
        "build_created_at": iso(j.created_at),
        "build_started_at": ts(j.started_at),
        "build_finished_at": ts(j.finished_at),
        "build_duration": j.duration(now),
        "build_queued_duration": j.queued_duration(now),
        "build_allow_failure": false,
        "build_failure_reason": j.failure_reason.clone().unwrap_or_else(|| "unknown_failure".into()),
        "retries_count": 0,
        "pipeline_id": j.pipeline_id,
        "project_id": p.id,
        // `Project#full_name`: "<namespace name> / <project name>".
        "project_name": format!(
            "{} / {}",
            w.group(p.group_id).map(|g| g.name.as_str()).unwrap_or("root"),
            p.name
        ),
        "user": hook_user,
        "commit": {
            "id": j.pipeline_id,
            "name": null,
            "sha": j.sha,
            "message": "Simulated commit",
            "author_name": "Administrator",
            "author_email": "root@example.invalid",
            "author_url": "mailto:root@example.invalid",
            "status": pipeline_status(j),
            "duration": j.duration(now).map(|d| d as u64),
            "started_at": ts(j.started_at),
            "finished_at": ts(j.finished_at),
        },
        "repository": {
            "name": p.name,
            "url": project_json.get("url"),
            "description": null,
            "homepage": project_json.get("homepage"),
            "git_http_url": project_json.get("git_http_url"),
            "git_ssh_url": project_json.get("git_ssh_url"),
            "visibility_level": 0,
        },
        "project": project_json,
        "runner": runner,
        "environment": null,
        "source_pipeline": null,
    }))
}

/// `API::Entities::ProjectHook` (doc/api/project_webhooks.md).
pub fn project_hook(h: &super::state::Hook) -> Value {
    let now = OffsetDateTime::now_utc();
    json!({
        "id": h.id,
        "url": h.url,
        "name": null,
        "description": null,
        "project_id": h.project_id,
        "push_events": false,
        "push_events_branch_filter": null,
        "issues_events": false,
        "confidential_issues_events": false,
        "merge_requests_events": false,
        "tag_push_events": false,
        "note_events": false,
        "confidential_note_events": false,
        "job_events": h.job_events,
        "pipeline_events": false,
        "wiki_page_events": false,
        "deployment_events": false,
        "feature_flag_events": false,
        "releases_events": false,
        "emoji_events": false,
        "resource_access_token_events": false,
        "enable_ssl_verification": true,
        "repository_update_events": false,
        "alert_status": h.alert_status(now),
        "disabled_until": ts(h.disabled_until),
        "url_variables": [],
        "custom_headers": [],
        "created_at": iso(h.created_at),
    })
}
