//! User, version, project, job and project-hook endpoints of the REST API.
//!
//! References: doc/api/users.md (`GET /user`), doc/api/version.md, doc/api/projects.md
//! (`GET /projects`, `GET /projects/:id`), doc/api/jobs.md (`GET /projects/:id/jobs`
//! with `scope`, `GET /projects/:id/jobs/:job_id`, `.../trace`, `.../cancel`) and
//! doc/api/project_webhooks.md (`/projects/:id/hooks`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{ApiError, ApiReq, authenticate, int_id};
use crate::gitlab_sim::entities;
use crate::gitlab_sim::pagination::{PageRequest, paginate, write_headers};
use crate::gitlab_sim::server::{Shared, check_hook_url};
use crate::gitlab_sim::state::{AVAILABLE_JOB_SCOPES, JobStatus, Project, User, World};

/// Renders a paginated JSON list with GitLab's pagination headers.
pub fn paged(w: &World, req: &ApiReq, items: Vec<Value>) -> Result<Response, ApiError> {
    let page_req = PageRequest::from_params(&req.params).map_err(|e| ApiError::Params(vec![e]))?;
    let page = paginate(items, page_req);
    let mut headers = HeaderMap::new();
    write_headers(
        &mut headers,
        &page,
        &w.settings.external_url,
        req.uri.path(),
        &req.params,
    );
    Ok((headers, Json(Value::Array(page.items))).into_response())
}

pub async fn version(State(s): State<Arc<Shared>>, req: ApiReq) -> Result<Response, ApiError> {
    s.with_world(|w| {
        authenticate(w, &req)?;
        Ok(Json(json!({
            "version": w.settings.version,
            "revision": w.settings.revision,
            "kas": { "enabled": false, "externalUrl": null, "externalK8sProxyUrl": null, "version": null },
            "enterprise": false,
        }))
        .into_response())
    })
}

pub async fn current_user(State(s): State<Arc<Shared>>, req: ApiReq) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        Ok(Json(entities::current_user(w, u)).into_response())
    })
}

/// Finds a project the user can see, or GitLab's `404 Project Not Found`.
pub fn visible_project<'w>(w: &'w World, user: &User, key: &str) -> Result<&'w Project, ApiError> {
    let p = w
        .find_project(key)
        .ok_or(ApiError::NotFound(Some("Project")))?;
    if w.can_read_project(user, p.id) {
        Ok(p)
    } else {
        Err(ApiError::NotFound(Some("Project")))
    }
}

pub async fn list_projects(
    State(s): State<Arc<Shared>>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        let mut errors = Vec::new();
        let membership = req.params.boolean("membership").unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        let owned = req.params.boolean("owned").unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        let order_by = req
            .params
            .string("order_by")
            .unwrap_or_else(|| "created_at".into());
        if ![
            "id",
            "name",
            "path",
            "created_at",
            "updated_at",
            "last_activity_at",
            "similarity",
            "star_count",
        ]
        .contains(&order_by.as_str())
        {
            errors.push("order_by does not have a valid value".into());
        }
        let sort = req.params.string("sort").unwrap_or_else(|| "desc".into());
        if !["asc", "desc"].contains(&sort.as_str()) {
            errors.push("sort does not have a valid value".into());
        }
        if !errors.is_empty() {
            return Err(ApiError::Params(errors));
        }
        let search = req.params.string("search").map(|s| s.to_lowercase());
        // Root created every simulated project, so an admin is a member of all of them;
        // other users see the projects they are members of (all projects are private).
        let member_only = membership.unwrap_or(false) || owned.unwrap_or(false);
        let mut projects: Vec<&Project> = w
            .projects
            .values()
            .filter(|p| {
                if member_only && !u.is_admin {
                    u.project_ids.contains(&p.id)
                } else {
                    w.can_read_project(u, p.id)
                }
            })
            .filter(|p| {
                search
                    .as_deref()
                    .is_none_or(|s| p.name.to_lowercase().contains(s) || p.path.contains(s))
            })
            .collect();
        projects.sort_by(|a, b| {
            let ord = match order_by.as_str() {
                "name" => a.name.cmp(&b.name),
                "path" => a.path.cmp(&b.path),
                "created_at" => a.created_at.cmp(&b.created_at),
                "updated_at" | "last_activity_at" => a.last_activity_at.cmp(&b.last_activity_at),
                _ => a.id.cmp(&b.id),
            }
            .then(a.id.cmp(&b.id));
            if sort == "asc" { ord } else { ord.reverse() }
        });
        let items = projects.iter().map(|p| entities::project(w, p)).collect();
        paged(w, &req, items)
    })
}

pub async fn get_project(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        let p = visible_project(w, u, &id)?;
        Ok(Json(entities::project(w, p)).into_response())
    })
}

pub async fn list_jobs(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        let p = visible_project(w, u, &id)?;
        let scopes = req.params.list("scope");
        if let Some(scopes) = &scopes
            && scopes
                .iter()
                .any(|s| !AVAILABLE_JOB_SCOPES.contains(&s.as_str()))
        {
            return Err(ApiError::Params(vec![
                "scope does not have a valid value".into(),
            ]));
        }
        let now = OffsetDateTime::now_utc();
        let items: Vec<Value> = w
            .jobs
            .values()
            .rev()
            .filter(|j| j.project_id == p.id)
            .filter(|j| {
                scopes
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| s == j.status.as_str()))
            })
            .map(|j| entities::job(w, j, now))
            .collect();
        paged(w, &req, items)
    })
}

fn project_job<'w>(
    w: &'w World,
    user: &User,
    project: &str,
    job_id: &str,
) -> Result<&'w crate::gitlab_sim::state::Job, ApiError> {
    let p = visible_project(w, user, project)?;
    let job_id = int_id(job_id, "job_id")?;
    w.jobs
        .get(&job_id)
        .filter(|j| j.project_id == p.id)
        .ok_or(ApiError::RecordNotFound)
}

pub async fn get_job(
    State(s): State<Arc<Shared>>,
    Path((id, job_id)): Path<(String, String)>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        let j = project_job(w, u, &id, &job_id)?;
        Ok(Json(entities::job(w, j, OffsetDateTime::now_utc())).into_response())
    })
}

pub async fn get_trace(
    State(s): State<Arc<Shared>>,
    Path((id, job_id)): Path<(String, String)>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        let j = project_job(w, u, &id, &job_id)?;
        Ok((
            [("content-type", "text/plain")],
            String::from_utf8_lossy(&j.trace).into_owned(),
        )
            .into_response())
    })
}

pub async fn cancel_job(
    State(s): State<Arc<Shared>>,
    Path((id, job_id)): Path<(String, String)>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        let jid = project_job(w, u, &id, &job_id)?.id;
        if w.jobs.get(&jid).is_some_and(|j| !j.status.is_finished()) {
            w.set_job_status(jid, JobStatus::Canceled, None);
        }
        let j = w.jobs.get(&jid).ok_or(ApiError::RecordNotFound)?;
        Ok((
            StatusCode::CREATED,
            Json(entities::job(w, j, OffsetDateTime::now_utc())),
        )
            .into_response())
    })
}

pub async fn list_hooks(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        let pid = visible_project(w, u, &id)?.id;
        let items = w
            .hooks
            .values()
            .filter(|h| !h.deleted && h.project_id == Some(pid))
            .map(entities::project_hook)
            .collect();
        paged(w, &req, items)
    })
}

pub async fn add_hook(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        let pid = visible_project(w, u, &id)?.id;
        let url = req
            .params
            .string("url")
            .ok_or_else(|| ApiError::Params(vec!["url is missing".into()]))?;
        let job_events = req
            .params
            .boolean("job_events")
            .map_err(|e| ApiError::Params(vec![e]))?
            .unwrap_or(false);
        check_hook_url(&url).map_err(ApiError::BadRequest)?;
        let hook_id = w.add_hook(url, req.params.string("token"), Some(pid), job_events);
        let h = w.hooks.get(&hook_id).ok_or(ApiError::RecordNotFound)?;
        Ok((StatusCode::CREATED, Json(entities::project_hook(h))).into_response())
    })
}

pub async fn delete_hook(
    State(s): State<Arc<Shared>>,
    Path((id, hook_id)): Path<(String, String)>,
    req: ApiReq,
) -> Result<Response, ApiError> {
    s.with_world(|w| {
        let u = authenticate(w, &req)?;
        let pid = visible_project(w, u, &id)?.id;
        let hook_id = int_id(&hook_id, "hook_id")?;
        match w.hooks.get_mut(&hook_id) {
            Some(h) if !h.deleted && h.project_id == Some(pid) => {
                h.deleted = true;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            _ => Err(ApiError::RecordNotFound),
        }
    })
}
