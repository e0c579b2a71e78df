//! The GitLab client against GitLab's documented HTTP behaviour.
//!
//! Each test starts a small scripted HTTP server on 127.0.0.1:0 that answers
//! the way GitLab's documentation says it does (pagination headers, 429 with
//! `Retry-After`, 401/404, `POST /user/runners`) and records what the client
//! sent. The end-to-end behaviour against the full GitLab simulator lives in
//! the `tests/` crate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autogit_coordinator::gitlab::webhook::{
    HEADER_EVENT, HEADER_IDEMPOTENCY_KEY, HEADER_TOKEN, JOB_HOOK_EVENT, WebhookError,
    parse_job_hook, token_matches,
};
use autogit_coordinator::gitlab::{
    AccessLevel, CreateRunner, GitLab, GitLabClient, GitLabClientConfig, GitLabError, JobScope,
    JobStatus, RetryPolicy, RunnerFilter, RunnerKind, RunnerStatus, RunnerType,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};

const TOKEN: &str = "glpat-TESTTOKEN-never-log-me-42";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

type Responder = dyn Fn(usize, &Seen) -> Response + Send + Sync;

struct Script {
    log: Mutex<Vec<Seen>>,
    respond: Box<Responder>,
}

/// A running scripted server.
struct Server {
    addr: SocketAddr,
    script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts a server whose answer to the n-th request (0-based) is
    /// `respond(n, request)`.
    async fn start(respond: impl Fn(usize, &Seen) -> Response + Send + Sync + 'static) -> Self {
        let script = Arc::new(Script {
            log: Mutex::new(Vec::new()),
            respond: Box::new(respond),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { addr, script, task }
    }

    fn requests(&self) -> Vec<Seen> {
        self.script
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(script): State<Arc<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers,
        body: body.to_vec(),
    };
    let n = {
        let mut log = script.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push(seen.clone());
        log.len() - 1
    };
    (script.respond)(n, &seen)
}

fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<String>) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.header("content-type", "application/json")
        .body(Body::from(body.into()))
        .expect("valid response")
}

fn config(base: String) -> GitLabClientConfig {
    let mut c = GitLabClientConfig::new(base, SecretString::from(TOKEN));
    c.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    };
    c.requests_per_minute = None;
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(5);
    c
}

fn client(server: &Server) -> GitLabClient {
    GitLabClient::new(config(server.base())).expect("client")
}

/// The value of query parameter `key` in a raw query string, decoded.
fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| {
            k.replace("%5B", "[")
                .replace("%5D", "]")
                .replace("%5b", "[")
                .replace("%5d", "]")
                == key
        })
        .map(|(_, v)| v.replace("%2C", ",").replace("%2c", ","))
        .collect()
}

fn page_of(query: &str) -> u32 {
    query_values(query, "page")
        .first()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
}

fn projects_json(page: u32) -> String {
    let a = page * 10 + 1;
    let b = page * 10 + 2;
    format!(
        r#"[{{"id": {a}, "name": "p{a}", "path_with_namespace": "g/p{a}", "archived": false,
             "builds_access_level": "enabled", "some_future_field": {{"x": 1}}}},
           {{"id": {b}, "name": "p{b}", "path_with_namespace": "g/p{b}", "archived": null,
             "default_branch": null}}]"#
    )
}

#[tokio::test]
async fn member_projects_follow_link_header_across_three_pages() {
    let server = Server::start(|_, req| {
        if req.path != "/api/v4/projects" {
            return respond(404, &[], r#"{"message":"404 Not Found"}"#);
        }
        let page = page_of(&req.query);
        // GitLab writes its external_url into Link; the client must keep
        // talking to the host it was configured with.
        let link = match page {
            1 | 2 => format!(
                "<https://gitlab.invalid/api/v4/projects?membership=true&page={}&per_page=100>; rel=\"next\", \
                 <https://gitlab.invalid/api/v4/projects?membership=true&page=1&per_page=100>; rel=\"first\"",
                page + 1
            ),
            _ => "<https://gitlab.invalid/api/v4/projects?membership=true&page=1&per_page=100>; rel=\"first\"".to_owned(),
        };
        respond(200, &[("link", link.as_str())], projects_json(page))
    })
    .await;

    let projects = client(&server).member_projects().await.expect("projects");
    let ids: Vec<u64> = projects.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![11, 12, 21, 22, 31, 32]);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "exactly three pages fetched");
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(r.method, Method::GET);
        assert_eq!(query_values(&r.query, "membership"), vec!["true"]);
        assert_eq!(query_values(&r.query, "per_page"), vec!["100"]);
        assert_eq!(page_of(&r.query), i as u32 + 1);
        assert_eq!(
            r.headers.get("private-token").and_then(|v| v.to_str().ok()),
            Some(TOKEN),
            "token sent in PRIVATE-TOKEN"
        );
        let ua = r
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(ua.starts_with("autogit/"), "user agent {ua:?}");
    }
}

#[tokio::test]
async fn project_jobs_follow_x_next_page_and_send_scopes() {
    let server = Server::start(|_, req| {
        if req.path != "/api/v4/projects/5/jobs" {
            return respond(404, &[], r#"{"message":"404 Project Not Found"}"#);
        }
        let page = page_of(&req.query);
        let next = if page < 3 { (page + 1).to_string() } else { String::new() };
        let id = 100 + page;
        let body = format!(
            r#"[{{"id": {id}, "status": "pending", "stage": "test", "name": "build-{id}",
                 "tag_list": ["gpu", "linux"], "created_at": "2015-12-24T15:51:21.802Z",
                 "started_at": null, "queued_duration": 0.010, "runner": null,
                 "pipeline": {{"id": 6, "project_id": 5, "ref": "main", "sha": "0ff3ae19", "status": "pending"}},
                 "project": {{"ci_job_token_scope_enabled": false}}}},
                {{"id": {}, "status": "running", "tag_list": null,
                 "runner": {{"id": 9, "description": "autogit-9", "active": true, "paused": false,
                             "is_shared": false, "runner_type": "project_type", "name": null,
                             "online": true, "status": "online"}},
                 "pipeline": {{"id": 6, "ref": "main", "sha": "0ff3ae19"}}}}]"#,
            id + 50
        );
        respond(
            200,
            &[("x-next-page", next.as_str()), ("x-page", &page.to_string())],
            body,
        )
    })
    .await;

    let jobs = client(&server)
        .jobs(5, &[JobScope::Pending, JobScope::Running])
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 6);
    assert_eq!(
        jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![101, 151, 102, 152, 103, 153]
    );
    assert!(
        jobs.iter().all(|j| j.project_id == 5),
        "project_id filled in"
    );
    assert_eq!(jobs[0].status, JobStatus::Pending);
    assert_eq!(jobs[0].tag_list, vec!["gpu", "linux"]);
    assert!(jobs[0].runner.is_none());
    assert_eq!(jobs[1].status, JobStatus::Running);
    assert!(jobs[1].tag_list.is_empty(), "null tag_list is empty");
    assert_eq!(jobs[1].runner.as_ref().map(|r| r.id), Some(9));

    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        query_values(&reqs[0].query, "scope[]"),
        vec!["pending", "running"],
        "scopes sent as scope[]=: {}",
        reqs[0].query
    );
    assert_eq!(
        query_values(&reqs[2].query, "scope[]"),
        vec!["pending", "running"],
        "scopes kept on later pages"
    );
}

#[tokio::test]
async fn pagination_stops_at_the_page_cap() {
    let server = Server::start(|_, req| {
        let next = (page_of(&req.query) + 1).to_string();
        respond(200, &[("x-next-page", next.as_str())], "[]")
    })
    .await;
    let mut cfg = config(server.base());
    cfg.max_pages = 5;
    let err = GitLabClient::new(cfg)
        .expect("client")
        .list_runners(&RunnerFilter::default())
        .await
        .expect_err("never-ending pagination must stop");
    assert!(
        matches!(err, GitLabError::TooManyPages { limit: 5, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 5);
}

#[tokio::test]
async fn a_link_pointing_back_is_an_error_not_a_loop() {
    let server = Server::start(|_, _| {
        respond(
            200,
            &[(
                "link",
                "<http://127.0.0.1/api/v4/runners?page=1&per_page=100>; rel=\"next\"",
            )],
            "[]",
        )
    })
    .await;
    let err = client(&server)
        .list_runners(&RunnerFilter::default())
        .await
        .expect_err("loop detected");
    assert!(matches!(err, GitLabError::Decode { .. }), "{err:?}");
    assert!(server.requests().len() <= 2);
}

#[tokio::test]
async fn retries_after_502_then_succeeds() {
    let server = Server::start(|n, _| match n {
        0 => respond(502, &[], "<html>502 Bad Gateway</html>"),
        _ => respond(200, &[], r#"{"version": "17.11.2-ee", "revision": "abc"}"#),
    })
    .await;
    let version = client(&server).version().await.expect("second try works");
    assert_eq!(version.major_minor(), Some((17, 11)));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn persistent_5xx_gives_up_after_bounded_attempts() {
    let server = Server::start(|_, _| respond(503, &[], "")).await;
    let err = client(&server).version().await.expect_err("always 503");
    assert_eq!(
        err,
        GitLabError::Server {
            endpoint: "GET /version".into(),
            status: 503
        }
    );
    assert!(err.is_transient());
    assert_eq!(server.requests().len(), 3, "max_attempts = 3");
}

#[tokio::test]
async fn rate_limit_429_waits_for_retry_after_then_succeeds() {
    let server = Server::start(|n, _| match n {
        0 => respond(429, &[("retry-after", "1")], r#"{"message":"Retry later"}"#),
        _ => respond(
            200,
            &[],
            r#"{"id": 1, "username": "root", "is_admin": true}"#,
        ),
    })
    .await;
    let start = Instant::now();
    let user = client(&server).current_user().await.expect("after waiting");
    let waited = start.elapsed();
    assert!(user.is_admin);
    assert!(
        waited >= Duration::from_millis(950),
        "must wait for Retry-After: 1, waited {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "waited too long: {waited:?}"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn retry_after_beyond_the_cap_is_returned_not_waited() {
    let server = Server::start(|_, _| respond(429, &[("retry-after", "120")], "")).await;
    let start = Instant::now();
    let err = client(&server)
        .version()
        .await
        .expect_err("too long to wait");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(
        err,
        GitLabError::RateLimited {
            endpoint: "GET /version".into(),
            retry_after: Some(Duration::from_secs(120)),
        }
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_typed_and_not_retried() {
    let server = Server::start(|_, req| match req.path.as_str() {
        "/api/v4/user" => respond(401, &[], r#"{"message":"401 Unauthorized"}"#),
        _ => respond(403, &[], r#"{"message":"403 Forbidden"}"#),
    })
    .await;
    let c = client(&server);
    let err = c.current_user().await.expect_err("401");
    assert_eq!(
        err,
        GitLabError::Unauthorized {
            endpoint: "GET /user".into()
        }
    );
    assert!(!err.is_transient());
    assert_eq!(server.requests().len(), 1, "401 is never retried");

    let err = c
        .list_runners(&RunnerFilter {
            all: true,
            ..RunnerFilter::default()
        })
        .await
        .expect_err("403");
    assert!(matches!(err, GitLabError::Forbidden { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 2, "403 is never retried");
}

#[tokio::test]
async fn other_4xx_carries_gitlabs_message_and_is_not_retried() {
    let server = Server::start(|_, _| {
        respond(
            400,
            &[],
            r#"{"message":{"runner_type":["does not have a valid value"]}}"#,
        )
    })
    .await;
    let err = client(&server)
        .create_runner(&CreateRunner::new(RunnerType::InstanceType))
        .await
        .expect_err("400");
    match &err {
        GitLabError::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 400);
            assert!(message.contains("does not have a valid value"), "{message}");
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn delete_runner_maps_404_to_not_found_and_204_to_ok() {
    let server = Server::start(|_, req| match req.path.as_str() {
        "/api/v4/runners/77" => respond(204, &[], ""),
        _ => respond(404, &[], r#"{"message":"404 Runner Not Found"}"#),
    })
    .await;
    let c = client(&server);
    c.delete_runner(77).await.expect("204 is success");
    let err = c.delete_runner(78).await.expect_err("gone");
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(
        err,
        GitLabError::NotFound {
            endpoint: "DELETE /runners/78".into()
        }
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "404 is not retried");
    assert!(reqs.iter().all(|r| r.method == Method::DELETE));
}

#[tokio::test]
async fn create_runner_sends_documented_fields_and_returns_the_token() {
    let server = Server::start(|_, req| {
        if req.method != Method::POST || req.path != "/api/v4/user/runners" {
            return respond(404, &[], "");
        }
        respond(
            201,
            &[],
            r#"{"id": 12345, "token": "glrt-6337ff461c94fd3fa32ba3b1ff4125", "token_expires_at": null}"#,
        )
    })
    .await;
    let request = CreateRunner {
        description: Some("autogit pool=gpu host=h1".into()),
        paused: Some(false),
        locked: Some(true),
        run_untagged: Some(false),
        tag_list: vec!["gpu".into(), "cuda-12".into()],
        access_level: Some(AccessLevel::NotProtected),
        maximum_timeout: Some(7200),
        maintenance_note: Some("managed by autogit".into()),
        ..CreateRunner::new(RunnerType::ProjectType { id: 42 })
    };
    let created = client(&server)
        .create_runner(&request)
        .await
        .expect("created");
    assert_eq!(created.id, 12345);
    assert_eq!(
        created.token.expose_secret(),
        "glrt-6337ff461c94fd3fa32ba3b1ff4125"
    );
    assert!(created.token_expires_at.is_none());
    assert!(!format!("{created:?}").contains("glrt-6337ff"));

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let ct = reqs[0]
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content type {ct:?}");
    let body: serde_json::Value = serde_json::from_slice(&reqs[0].body).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({
            "runner_type": "project_type",
            "project_id": 42,
            "description": "autogit pool=gpu host=h1",
            "paused": false,
            "locked": true,
            "run_untagged": false,
            "tag_list": ["gpu", "cuda-12"],
            "access_level": "not_protected",
            "maximum_timeout": 7200,
            "maintenance_note": "managed by autogit"
        })
    );
}

#[tokio::test]
async fn create_runner_is_not_retried_after_a_5xx() {
    let server = Server::start(|_, _| respond(500, &[], "")).await;
    let err = client(&server)
        .create_runner(&CreateRunner::new(RunnerType::GroupType { id: 3 }))
        .await
        .expect_err("500");
    assert!(
        matches!(err, GitLabError::Server { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(
        server.requests().len(),
        1,
        "a retry could create a second runner whose token is lost"
    );
}

#[tokio::test]
async fn list_runners_sends_filters_to_the_admin_endpoint() {
    let server = Server::start(|_, req| {
        if req.path != "/api/v4/runners/all" {
            return respond(404, &[], "");
        }
        respond(
            200,
            &[("x-next-page", "")],
            r#"[{"id": 6, "description": "autogit-6", "active": true, "paused": false,
                 "is_shared": true, "runner_type": "instance_type", "name": null,
                 "online": true, "status": "online", "ip_address": null}]"#,
        )
    })
    .await;
    let runners = client(&server)
        .list_runners(&RunnerFilter {
            all: true,
            kind: Some(RunnerKind::Instance),
            status: Some(RunnerStatus::Online),
            paused: Some(false),
            tag_list: vec!["gpu".into(), "linux".into()],
        })
        .await
        .expect("runners");
    assert_eq!(runners.len(), 1);
    assert_eq!(runners[0].runner_type, Some(RunnerKind::Instance));
    let q = &server.requests()[0].query;
    assert_eq!(query_values(q, "type"), vec!["instance_type"]);
    assert_eq!(query_values(q, "status"), vec!["online"]);
    assert_eq!(query_values(q, "paused"), vec!["false"]);
    assert_eq!(query_values(q, "tag_list"), vec!["gpu,linux"]);
}

#[tokio::test]
async fn instance_pending_jobs_follow_graphql_cursors() {
    let server = Server::start(|_, req| {
        if req.method != Method::POST || req.path != "/api/graphql" {
            return respond(404, &[], "");
        }
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let after = body["variables"]["after"].as_str().map(str::to_owned);
        let (id, next, cursor) = match after.as_deref() {
            None => (1, true, "c1"),
            Some("c1") => (2, false, "c2"),
            Some(_) => return respond(200, &[], r#"{"errors":[{"message":"bad cursor"}]}"#),
        };
        respond(
            200,
            &[],
            format!(
                r#"{{"data": {{"jobs": {{"pageInfo": {{"hasNextPage": {next}, "endCursor": "{cursor}"}},
                   "nodes": [{{"id": "gid://gitlab/Ci::Build/{id}", "name": "j{id}", "status": "PENDING",
                               "tags": ["gpu"], "createdAt": "2024-01-01T00:00:00Z",
                               "project": {{"id": "gid://gitlab/Project/7"}},
                               "pipeline": {{"id": "gid://gitlab/Ci::Pipeline/70"}},
                               "stage": {{"name": "build"}}, "runner": null}}]}}}}}}"#
            ),
        )
    })
    .await;
    let jobs = client(&server).instance_pending_jobs().await.expect("jobs");
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1, 2]);
    assert!(
        jobs.iter()
            .all(|j| j.project_id == 7 && j.status == JobStatus::Pending)
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let first: serde_json::Value = serde_json::from_slice(&reqs[0].body).expect("json");
    assert!(
        first["query"]
            .as_str()
            .unwrap_or_default()
            .contains("jobs(statuses: [PENDING]"),
        "query asks for pending jobs"
    );
}

#[tokio::test]
async fn instance_pending_jobs_null_connection_is_forbidden() {
    let server = Server::start(|n, _| match n {
        0 => respond(200, &[], r#"{"data": {"jobs": null}}"#),
        1 => respond(
            200,
            &[],
            r#"{"data": {"jobs": null}, "errors": [{"message": "The resource that you are attempting to access does not exist or you don't have permission to perform this action", "path": ["jobs"]}]}"#,
        ),
        _ => respond(
            200,
            &[],
            r#"{"data": null, "errors": [{"message": "Field 'bogus' doesn't exist on type 'CiJobInterface'"}]}"#,
        ),
    })
    .await;
    let c = client(&server);
    let err = c.instance_pending_jobs().await.expect_err("jobs: null");
    assert!(matches!(err, GitLabError::Forbidden { .. }), "{err:?}");
    let err = c
        .instance_pending_jobs()
        .await
        .expect_err("permission error");
    assert!(matches!(err, GitLabError::Forbidden { .. }), "{err:?}");
    let err = c.instance_pending_jobs().await.expect_err("schema error");
    match err {
        GitLabError::GraphQl { message, .. } => assert!(message.contains("bogus"), "{message}"),
        other => panic!("expected GraphQl, got {other:?}"),
    }
}

#[tokio::test]
async fn redirects_are_not_followed_so_the_token_stays_home() {
    let server = Server::start(|_, req| match req.path.as_str() {
        "/api/v4/version" => respond(302, &[("location", "/elsewhere/api/v4/version?x=1")], ""),
        _ => respond(200, &[], r#"{"version": "1.0.0"}"#),
    })
    .await;
    let err = client(&server).version().await.expect_err("redirect");
    assert!(
        matches!(err, GitLabError::Status { status: 302, .. }),
        "{err:?}"
    );
    assert_eq!(
        server.requests().len(),
        1,
        "redirect target never contacted"
    );
}

#[tokio::test]
async fn api_url_suffix_is_optional() {
    let server = Server::start(|_, req| match req.path.as_str() {
        "/api/v4/version" => respond(200, &[], r#"{"version": "18.0.0"}"#),
        _ => respond(404, &[], ""),
    })
    .await;
    for base in [server.base(), format!("{}/api/v4/", server.base())] {
        let c = GitLabClient::new(config(base.clone())).expect("client");
        assert_eq!(
            c.version().await.map(|v| v.version).ok().as_deref(),
            Some("18.0.0"),
            "base {base}"
        );
    }
}

#[tokio::test]
async fn the_token_never_appears_in_errors_or_debug_output() {
    // A hostile or broken server echoing the token back in bodies.
    let server = Server::start(move |_, req| match req.path.as_str() {
        "/api/v4/user" => respond(400, &[], format!(r#"{{"message":"bad token {TOKEN}"}}"#)),
        "/api/v4/version" => respond(200, &[], format!(r#"{{"version": 1, "x": "{TOKEN}"}}"#)),
        "/api/v4/projects/1" => respond(200, &[], format!(r#"{{"id": "{TOKEN}"}}"#)),
        "/api/v4/runners/1" => respond(401, &[], ""),
        _ => respond(502, &[], TOKEN.to_owned()),
    })
    .await;
    let c = client(&server);
    let mut errors = vec![
        c.current_user().await.expect_err("400"),
        c.version().await.expect_err("decode"),
        c.project(1).await.expect_err("decode"),
        c.delete_runner(1).await.expect_err("401"),
        c.job(1, 2).await.expect_err("502"),
    ];
    // A transport failure: a port nobody listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let offline = GitLabClient::new(config(format!("http://{dead_addr}"))).expect("client");
    let transport = offline.version().await.expect_err("nobody listens");
    assert!(
        matches!(transport, GitLabError::Transport { .. }),
        "{transport:?}"
    );
    errors.push(transport);

    let mut texts: Vec<String> = errors
        .iter()
        .flat_map(|e| [e.to_string(), format!("{e:?}"), format!("{e:#?}")])
        .collect();
    texts.push(format!("{c:?}"));
    texts.push(format!("{:?}", config(server.base())));
    for text in &texts {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(!text.contains("TESTTOKEN"), "token leaked: {text}");
    }
    // The errors still say what went wrong and where.
    assert!(
        texts[0].contains("GET /user") && texts[0].contains("400"),
        "{}",
        texts[0]
    );
    assert!(texts.iter().any(|t| t.contains("[REDACTED]")));
}

#[test]
fn config_errors_are_clear() {
    let err = GitLabClient::new(GitLabClientConfig::new(
        "gitlab.example.com",
        SecretString::from(TOKEN),
    ))
    .expect_err("no scheme");
    assert!(matches!(err, GitLabError::Config(_)), "{err:?}");
    let err = GitLabClient::new(GitLabClientConfig::new(
        "https://gitlab.example.com",
        SecretString::from("bad\ntoken"),
    ))
    .expect_err("newline in token");
    assert!(!err.to_string().contains("bad\ntoken"));
}

// ---------------------------------------------------------------------------
// Job Hook webhooks
// ---------------------------------------------------------------------------

/// The "Job events" payload example from GitLab's
/// doc/user/project/integrations/webhook_events.md. The documented example
/// carries `//` comments and a trailing comma, which real deliveries do not;
/// those are removed here, nothing else is changed.
const DOCUMENTED_JOB_HOOK: &str = r#"{
  "object_kind": "build",
  "ref": "gitlab-script-trigger",
  "tag": false,
  "before_sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
  "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
  "build_id": 1977,
  "build_name": "test",
  "build_stage": "test",
  "build_status": "created",
  "build_created_at": "2021-02-23T02:41:37.886Z",
  "build_created_at_iso": "2021-02-23T02:41:37Z",
  "build_started_at": null,
  "build_started_at_iso": null,
  "build_finished_at": null,
  "build_finished_at_iso": null,
  "build_duration": null,
  "build_queued_duration": 1095.588715,
  "build_allow_failure": false,
  "build_failure_reason": "script_failure",
  "retries_count": 2,
  "pipeline_id": 2366,
  "project_id": 380,
  "project_name": "gitlab-org/gitlab-test",
  "user": {
    "id": 3,
    "name": "User",
    "email": "user@gitlab.com",
    "avatar_url": "http://www.gravatar.com/avatar/e32bd13e2add097461cb96824b7a829c?s=80\u0026d=identicon"
  },
  "commit": {
    "id": 2366,
    "name": "Build pipeline",
    "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
    "message": "test\n",
    "author_name": "User",
    "author_email": "user@gitlab.com",
    "status": "created",
    "duration": null,
    "started_at": null,
    "started_at_iso": null,
    "finished_at": null,
    "finished_at_iso": null
  },
  "repository": {
    "name": "gitlab_test",
    "description": "Atque in sunt eos similique dolores voluptatem.",
    "homepage": "http://192.168.64.1:3005/gitlab-org/gitlab-test",
    "git_ssh_url": "git@192.168.64.1:gitlab-org/gitlab-test.git",
    "git_http_url": "http://192.168.64.1:3005/gitlab-org/gitlab-test.git",
    "visibility_level": 20
  },
  "project":{
     "id": 380,
     "name": "Gitlab Test",
     "description": "Atque in sunt eos similique dolores voluptatem.",
     "web_url": "http://192.168.64.1:3005/gitlab-org/gitlab-test",
     "avatar_url": null,
     "git_ssh_url": "git@192.168.64.1:gitlab-org/gitlab-test.git",
     "git_http_url": "http://192.168.64.1:3005/gitlab-org/gitlab-test.git",
     "namespace": "Gitlab Org",
     "visibility_level": 20,
     "path_with_namespace": "gitlab-org/gitlab-test",
     "default_branch": "master"
  },
  "runner": {
    "active": true,
    "runner_type": "project_type",
    "is_shared": false,
    "id": 380987,
    "description": "shared-runners-manager-6.gitlab.com",
    "tags": [
      "linux",
      "docker"
    ]
  },
  "environment": null,
  "source_pipeline":{
     "project":{
       "id": 41,
       "web_url": "https://gitlab.example.com/gitlab-org/upstream-project",
       "path_with_namespace": "gitlab-org/upstream-project"
     },
     "pipeline_id": 30,
     "job_id": 3401
  }
}"#;

#[test]
fn documented_job_hook_parses() {
    let hook = parse_job_hook(DOCUMENTED_JOB_HOOK.as_bytes()).expect("documented payload");
    assert_eq!(hook.object_kind, "build");
    assert_eq!(hook.build_id, 1977);
    assert_eq!(hook.build_status, JobStatus::Created);
    assert_eq!(hook.project_id, 380);
    assert_eq!(hook.pipeline_id, Some(2366));
    assert_eq!(hook.build_stage.as_deref(), Some("test"));
    assert_eq!(hook.retries_count, Some(2));
    assert_eq!(hook.build_queued_duration, Some(1095.588715));
    assert_eq!(
        hook.build_created_at.map(|t| t.unix_timestamp()),
        Some(1_614_048_097)
    );
    assert!(hook.build_started_at.is_none());
    assert_eq!(hook.git_ref.as_deref(), Some("gitlab-script-trigger"));
    let runner = hook.runner.expect("runner block");
    assert_eq!(runner.id, 380987);
    assert_eq!(runner.runner_type, Some(RunnerKind::Project));
    assert_eq!(runner.tags, vec!["linux", "docker"]);
    assert_eq!(
        hook.commit.and_then(|c| c.id),
        Some(2366),
        "commit.id is the pipeline id"
    );
}

#[test]
fn pending_hook_with_null_runner_and_unknown_fields_parses() {
    let mut value: serde_json::Value =
        serde_json::from_str(DOCUMENTED_JOB_HOOK).expect("valid JSON");
    value["build_status"] = "pending".into();
    value["runner"] = serde_json::Value::Null;
    value["build_failure_reason"] = serde_json::Value::Null;
    value["retries_count"] = serde_json::Value::Null;
    value["a_field_from_gitlab_99"] = serde_json::json!({"nested": [1, 2, 3]});
    // Older GitLab versions write timestamps as "YYYY-MM-DD HH:MM:SS UTC".
    value["build_created_at"] = "2021-02-23 02:41:37 UTC".into();
    let body = serde_json::to_vec(&value).expect("serialize");
    let hook = parse_job_hook(&body).expect("tolerant parse");
    assert_eq!(hook.build_status, JobStatus::Pending);
    assert!(hook.runner.is_none());
    assert_eq!(
        hook.build_created_at.map(|t| t.unix_timestamp()),
        Some(1_614_048_097)
    );
}

#[test]
fn malformed_and_foreign_hooks_are_clear_errors() {
    let err = parse_job_hook(b"{\"object_kind\": \"build\", ").expect_err("truncated");
    assert!(matches!(err, WebhookError::Malformed(_)), "{err:?}");
    assert!(
        err.to_string().contains("not a valid Job Hook JSON"),
        "{err}"
    );

    let err = parse_job_hook(b"").expect_err("empty");
    assert!(matches!(err, WebhookError::Malformed(_)), "{err:?}");

    let err = parse_job_hook(br#"{"object_kind": "pipeline", "object_attributes": {}}"#)
        .expect_err("pipeline hook");
    assert_eq!(
        err,
        WebhookError::NotAJobEvent {
            object_kind: "pipeline".into()
        }
    );

    let mut missing: serde_json::Value =
        serde_json::from_str(DOCUMENTED_JOB_HOOK).expect("valid JSON");
    if let Some(obj) = missing.as_object_mut() {
        obj.remove("build_id");
    }
    let err = parse_job_hook(&serde_json::to_vec(&missing).expect("ser")).expect_err("no id");
    assert!(err.to_string().contains("build_id"), "{err}");
}

#[test]
fn webhook_token_comparison() {
    let secret = SecretString::from("s3cr3t-hook-token");
    assert!(token_matches(&secret, Some(b"s3cr3t-hook-token")));
    assert!(!token_matches(&secret, Some(b"s3cr3t-hook-tokem")));
    assert!(!token_matches(&secret, Some(b"s3cr3t")));
    assert!(!token_matches(&secret, Some(b"")));
    assert!(!token_matches(&secret, None));
}

#[test]
fn webhook_header_names_match_gitlab() {
    assert_eq!(HEADER_EVENT, "X-Gitlab-Event");
    assert_eq!(HEADER_TOKEN, "X-Gitlab-Token");
    assert_eq!(HEADER_IDEMPOTENCY_KEY, "Idempotency-Key");
    assert_eq!(JOB_HOOK_EVENT, "Job Hook");
}

/// Runner creation and deletion draw from their own budget: with the
/// reads budget spent (2 a minute: the next read waits about 60 s), a new
/// runner is still created at once.
#[tokio::test]
async fn runner_calls_do_not_queue_behind_an_exhausted_reads_budget() {
    let server = Server::start(|_, req| match req.path.as_str() {
        "/api/v4/user/runners" => respond(
            201,
            &[],
            r#"{"id": 7, "token": "glrt-0000000000000000000000", "token_expires_at": null}"#,
        ),
        "/api/v4/runners/7" => respond(204, &[], ""),
        _ => respond(200, &[], r#"{"version": "17.11.2-ee", "revision": "abc"}"#),
    })
    .await;
    let mut cfg = config(server.base());
    cfg.requests_per_minute = Some(2);
    let c = Arc::new(GitLabClient::new(cfg).expect("client"));
    c.version()
        .await
        .expect("the reads budget's one burst token");
    let queued = tokio::spawn({
        let c = c.clone();
        async move { c.version().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !queued.is_finished(),
        "the second read must wait for the reads budget (the test's premise)"
    );
    let created = tokio::time::timeout(
        Duration::from_secs(20),
        c.create_runner(&CreateRunner::new(RunnerType::InstanceType)),
    )
    .await
    .expect("runner creation must not wait about 60 s behind the reads")
    .expect("created");
    assert_eq!(created.id, 7);
    tokio::time::timeout(Duration::from_secs(20), c.delete_runner(7))
        .await
        .expect("runner deletion must not wait behind the reads")
        .expect("deleted");
    assert!(!queued.is_finished(), "the read is still waiting");
    queued.abort();
}

/// Confirming single jobs (webhook hints of running and finished jobs)
/// draws from its own budget: with it spent, a pending-jobs listing, the
/// call that finds a burst's new jobs, still goes out at once.
#[tokio::test]
async fn listings_do_not_queue_behind_exhausted_job_confirmations() {
    let server = Server::start(|_, req| match req.path.as_str() {
        "/api/v4/projects/5/jobs/9" => respond(
            200,
            &[],
            r#"{"id": 9, "status": "success", "tag_list": ["x"],
                "pipeline": {"id": 6, "ref": "main", "sha": "0ff3ae19"}}"#,
        ),
        "/api/v4/projects/5/jobs" => respond(
            200,
            &[],
            r#"[{"id": 10, "status": "pending", "tag_list": ["x"],
                 "pipeline": {"id": 6, "ref": "main", "sha": "0ff3ae19"}}]"#,
        ),
        _ => respond(404, &[], r#"{"message": "404 Not Found"}"#),
    })
    .await;
    let mut cfg = config(server.base());
    cfg.job_requests_per_minute = Some(2);
    let c = Arc::new(GitLabClient::new(cfg).expect("client"));
    c.job(5, 9).await.expect("the job budget's one burst token");
    let queued = tokio::spawn({
        let c = c.clone();
        async move { c.job(5, 9).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !queued.is_finished(),
        "the second job fetch must wait for the job budget (the test's premise)"
    );
    let pending = tokio::time::timeout(Duration::from_secs(20), c.jobs(5, &[JobScope::Pending]))
        .await
        .expect("the listing must not wait about 60 s behind the job fetches")
        .expect("listed");
    assert_eq!(pending.iter().map(|j| j.id).collect::<Vec<_>>(), vec![10]);
    assert!(!queued.is_finished(), "the job fetch is still waiting");
    queued.abort();
}
