//! A deliberately tiny `POST /api/graphql`: only the instance-wide `jobs` query that an
//! administrator uses to find pending jobs (doc/api/graphql/reference "Query.jobs":
//! arguments `statuses: [CiJobStatus!]`, `first`, `after`; `CiJob` fields `id`
//! (`gid://gitlab/Ci::Build/N`), `status` (upper-case enum), `name`, `tags`,
//! `createdAt`, `queuedAt`, `project { id fullPath }`, `runner { id }`).
//!
//! It is not a GraphQL engine: arguments are read from the `jobs(...)` call (literals
//! or `$variables`), and every supported field is returned whatever the selection set
//! asks for; `pageInfo { hasNextPage endCursor }` and `count` are always included.
//! Non-administrators get `jobs: null` with GitLab's "resource not available" error.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiReq;
use crate::gitlab_sim::server::Shared;
use crate::gitlab_sim::timefmt::{iso, iso_opt};

const NOT_AVAILABLE: &str = "The resource that you are attempting to access does not exist or \
you don't have permission to perform this action";

/// The `jobs(...)` arguments.
#[derive(Debug, Default, PartialEq)]
struct JobsArgs {
    statuses: Option<Vec<String>>,
    first: Option<usize>,
    after: Option<String>,
}

/// Finds `jobs(` in the query and returns the text between its parentheses.
fn jobs_call(query: &str) -> Option<&str> {
    let start = query.find("jobs")?;
    let rest = query[start + 4..].trim_start();
    if !rest.starts_with('(') {
        return Some("");
    }
    let end = rest.find(')')?;
    Some(&rest[1..end])
}

fn resolve<'a>(raw: &'a str, vars: &'a Value) -> Value {
    let raw = raw.trim();
    if let Some(name) = raw.strip_prefix('$') {
        return vars.get(name).cloned().unwrap_or(Value::Null);
    }
    if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return Value::Array(
            inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.trim_matches('"').to_owned()))
                .collect(),
        );
    }
    if let Some(s) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return Value::String(s.to_owned());
    }
    if let Ok(n) = raw.parse::<u64>() {
        return json!(n);
    }
    Value::String(raw.to_owned())
}

fn parse_args(args: &str, vars: &Value) -> JobsArgs {
    let mut out = JobsArgs::default();
    // Split on commas that are not inside brackets.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in args.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&args[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&args[start..]);
    for part in parts {
        let Some((k, v)) = part.split_once(':') else {
            continue;
        };
        let v = resolve(v, vars);
        match k.trim() {
            "statuses" => {
                out.statuses = match v {
                    Value::Array(a) => Some(
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_ascii_lowercase))
                            .collect(),
                    ),
                    Value::String(s) => Some(vec![s.to_ascii_lowercase()]),
                    _ => None,
                }
            }
            "first" => out.first = v.as_u64().and_then(|n| usize::try_from(n).ok()),
            "after" => out.after = v.as_str().map(str::to_owned),
            _ => {}
        }
    }
    out
}

pub async fn graphql(State(s): State<Arc<Shared>>, req: ApiReq) -> Response {
    let query = req.params.string("query").unwrap_or_default();
    let vars = req
        .params
        .object("variables")
        .cloned()
        .unwrap_or(Value::Null);
    s.with_world(|w| {
        let user = match req.user_token() {
            None => None,
            Some(t) => match w.user_by_token(&t) {
                Some(u) => Some(u.clone()),
                None => {
                    return (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({ "errors": [{ "message": "Invalid token" }] })),
                    )
                        .into_response();
                }
            },
        };
        let Some(args) = jobs_call(&query) else {
            return Json(json!({ "errors": [{
                "message": "The GitLab simulator only implements the `jobs` query"
            }]}))
            .into_response();
        };
        if !user.as_ref().is_some_and(|u| u.is_admin) {
            return Json(json!({
                "data": { "jobs": null },
                "errors": [{ "message": NOT_AVAILABLE, "path": ["jobs"] }],
            }))
            .into_response();
        }
        let args = parse_args(args, &vars);
        let after_id = args
            .after
            .as_deref()
            .and_then(|c| hex::decode(c).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<u64>().ok());
        let all: Vec<_> = w
            .jobs
            .values()
            .rev()
            .filter(|j| {
                args.statuses
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| s == j.status.as_str()))
            })
            .collect();
        let count = all.len();
        let first = args.first.unwrap_or(100).clamp(1, 100);
        let page: Vec<_> = all
            .into_iter()
            .filter(|j| after_id.is_none_or(|a| j.id < a))
            .take(first + 1)
            .collect();
        let has_next = page.len() > first;
        let page = &page[..page.len().min(first)];
        let nodes: Vec<Value> = page
            .iter()
            .map(|j| {
                let project = w.projects.get(&j.project_id);
                json!({
                    "id": format!("gid://gitlab/Ci::Build/{}", j.id),
                    "name": j.name,
                    "status": j.status.as_str().to_ascii_uppercase(),
                    "tags": j.tags,
                    "createdAt": iso(j.created_at),
                    "queuedAt": iso_opt(j.queued_at),
                    "startedAt": iso_opt(j.started_at),
                    "project": project.map(|p| json!({
                        "id": format!("gid://gitlab/Project/{}", p.id),
                        "fullPath": w.project_path(p),
                    })),
                    "runner": j.runner_id.map(|r| json!({ "id": format!("gid://gitlab/Ci::Runner/{r}") })),
                })
            })
            .collect();
        let end_cursor = page.last().map(|j| hex::encode(j.id.to_string()));
        Json(json!({
            "data": { "jobs": {
                "count": count,
                "nodes": nodes,
                "pageInfo": { "hasNextPage": has_next, "endCursor": end_cursor },
            }}
        }))
        .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_literal_and_variable_arguments() {
        let q = "query { jobs(statuses: [PENDING, RUNNING], first: 5) { nodes { id } } }";
        let a = parse_args(jobs_call(q).unwrap_or(""), &Value::Null);
        assert_eq!(a.statuses, Some(vec!["pending".into(), "running".into()]));
        assert_eq!(a.first, Some(5));
        let q = "query($s: [CiJobStatus!], $c: String) { jobs(statuses: $s, after: $c) { count } }";
        let vars = json!({ "s": ["PENDING"], "c": "3132" });
        let a = parse_args(jobs_call(q).unwrap_or(""), &vars);
        assert_eq!(a.statuses, Some(vec!["pending".into()]));
        assert_eq!(a.after.as_deref(), Some("3132"));
    }
}
