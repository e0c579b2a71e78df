//! The GitLab simulator's REST, runner and GraphQL APIs, checked over real HTTP on
//! loopback against GitLab's documented behaviour: pagination headers and `Link`,
//! 401/403/404 bodies, runner creation/verification/deletion, tag matching in
//! `POST /jobs/request` (also under concurrent requests), job updates and traces, and
//! injected faults (429 with `Retry-After`, 5xx, latency).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use autogit_tests::gitlab_sim::{
    self, FaultSpec, NewJob, NewUser, SimConfig, SimServer, SimSnapshot,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "glpat-admin-for-tests";

async fn start() -> (SimServer, reqwest::Client) {
    let sim = gitlab_sim::spawn(SimConfig {
        admin_token: ADMIN.into(),
        ..SimConfig::default()
    })
    .await
    .expect("start simulator");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    (sim, client)
}

fn api(sim: &SimServer, path: &str) -> String {
    format!("{}/api/v4{path}", sim.url())
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<absent>")
        .to_owned()
}

/// Parses a `Link` header into rel -> URL.
fn links(resp: &reqwest::Response) -> HashMap<String, String> {
    header(resp, "link")
        .split(", ")
        .filter_map(|part| {
            let (url, rel) = part.split_once("; rel=")?;
            Some((
                rel.trim_matches('"').to_owned(),
                url.trim_start_matches('<').trim_end_matches('>').to_owned(),
            ))
        })
        .collect()
}

fn job(project_id: u64, tags: &[&str]) -> NewJob {
    NewJob {
        project_id,
        tags: tags.iter().map(|s| s.to_string()).collect(),
        ..NewJob::default()
    }
}

async fn create_runner(client: &reqwest::Client, sim: &SimServer, body: Value) -> (u64, String) {
    let resp = client
        .post(api(sim, "/user/runners"))
        .header("PRIVATE-TOKEN", ADMIN)
        .json(&body)
        .send()
        .await
        .expect("create runner");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.expect("json");
    (
        v["id"].as_u64().expect("id"),
        v["token"].as_str().expect("token").to_owned(),
    )
}

async fn request_job(client: &reqwest::Client, sim: &SimServer, token: &str) -> Option<Value> {
    let resp = client
        .post(api(sim, "/jobs/request"))
        .json(&json!({ "token": token, "system_id": "s_testmachine1" }))
        .send()
        .await
        .expect("request job");
    match resp.status() {
        StatusCode::CREATED => Some(resp.json().await.expect("payload")),
        StatusCode::NO_CONTENT => {
            assert_ne!(header(&resp, "x-gitlab-last-update"), "<absent>");
            None
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn pagination_headers_and_link_match_gitlab() {
    let (sim, client) = start().await;
    for _ in 0..45 {
        sim.handle().create_job(job(1, &["a"]));
    }
    let resp = client
        .get(api(
            &sim,
            "/projects/1/jobs?scope[]=pending&per_page=20&page=2&unknown_param=1",
        ))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-page"), "2");
    assert_eq!(header(&resp, "x-per-page"), "20");
    assert_eq!(header(&resp, "x-next-page"), "3");
    assert_eq!(header(&resp, "x-prev-page"), "1");
    assert_eq!(header(&resp, "x-total"), "45");
    assert_eq!(header(&resp, "x-total-pages"), "3");
    let l = links(&resp);
    for rel in ["prev", "next", "first", "last"] {
        assert!(l.contains_key(rel), "Link lacks rel={rel}: {l:?}");
    }
    assert!(
        l["next"].starts_with(&api(&sim, "/projects/1/jobs?")),
        "{}",
        l["next"]
    );
    assert!(l["next"].contains("page=3") && l["next"].contains("per_page=20"));
    assert!(
        l["next"].contains("scope%5B%5D=pending"),
        "params kept: {}",
        l["next"]
    );
    assert!(l["last"].contains("page=3"));
    let page2: Vec<Value> = resp.json().await.expect("json");
    assert_eq!(page2.len(), 20);
    // Jobs are listed newest first: page 2 holds ids 25..=6.
    assert_eq!(page2[0]["id"], 25);

    // Following rel="next" reaches the last page, which has no next page.
    let last = client
        .get(&l["next"])
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("next");
    assert_eq!(header(&last, "x-next-page"), "");
    assert_eq!(header(&last, "x-prev-page"), "2");
    assert!(!links(&last).contains_key("next"));
    let page3: Vec<Value> = last.json().await.expect("json");
    assert_eq!(page3.len(), 5);
    let ids: BTreeSet<u64> = page2
        .iter()
        .chain(&page3)
        .filter_map(|j| j["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 25, "pages overlap");

    // per_page is capped at 100 and 0 is refused.
    let capped = client
        .get(api(&sim, "/projects/1/jobs?per_page=500"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("capped");
    assert_eq!(header(&capped, "x-per-page"), "100");
    assert_eq!(header(&capped, "x-total-pages"), "1");
    let zero = client
        .get(api(&sim, "/projects/1/jobs?per_page=0"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("zero");
    assert_eq!(zero.status(), StatusCode::BAD_REQUEST);

    // Default page size is 20; scope filters; scope=<single> works too; bad scope is 400.
    sim.handle().create_job(job(1, &[]));
    let runner_token = create_runner(&client, &sim, json!({ "runner_type": "instance_type" }))
        .await
        .1;
    assert!(request_job(&client, &sim, &runner_token).await.is_some());
    let running = client
        .get(api(&sim, "/projects/1/jobs?scope=running"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("running");
    assert_eq!(header(&running, "x-total"), "1");
    let both = client
        .get(api(
            &sim,
            "/projects/1/jobs?scope[]=running&scope[]=pending",
        ))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("both");
    assert_eq!(header(&both, "x-total"), "46");
    assert_eq!(header(&both, "x-per-page"), "20");
    let bad = client
        .get(api(&sim, "/projects/1/jobs?scope[]=bogus"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("bad");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.json::<Value>().await.expect("json"),
        json!({ "error": "scope does not have a valid value" })
    );
}

#[tokio::test]
async fn projects_membership_listing_paginates() {
    let (sim, client) = start().await;
    for p in [3, 1, 2] {
        sim.handle().create_job(job(p, &[]));
    }
    let resp = client
        .get(api(&sim, "/projects?membership=true&per_page=2"))
        .header("Authorization", format!("Bearer {ADMIN}"))
        .send()
        .await
        .expect("projects");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-total"), "3");
    assert_eq!(header(&resp, "x-next-page"), "2");
    let next = links(&resp)["next"].clone();
    assert!(next.contains("membership=true"));
    let first: Vec<Value> = resp.json().await.expect("json");
    let second: Vec<Value> = client
        .get(&next)
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("page 2")
        .json()
        .await
        .expect("json");
    let ids: BTreeSet<u64> = first
        .iter()
        .chain(&second)
        .filter_map(|p| p["id"].as_u64())
        .collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3]));
    let p = &first[0];
    for field in [
        "path_with_namespace",
        "web_url",
        "namespace",
        "default_branch",
        "created_at",
    ] {
        assert!(p.get(field).is_some(), "project lacks {field}: {p}");
    }
    // By id and by URL-encoded path.
    let by_path: Value = client
        .get(api(&sim, "/projects/autogit-sim%2Fproject-2"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("by path")
        .json()
        .await
        .expect("json");
    assert_eq!(by_path["id"], 2);
}

#[tokio::test]
async fn authentication_and_authorization_errors() {
    let (sim, client) = start().await;
    sim.handle().create_job(job(1, &[]));
    sim.handle().create_job(job(2, &[]));
    let none = client
        .get(api(&sim, "/user"))
        .send()
        .await
        .expect("no token");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.json::<Value>().await.expect("json"),
        json!({ "message": "401 Unauthorized" })
    );
    let wrong = client
        .get(api(&sim, "/projects"))
        .header("PRIVATE-TOKEN", "glpat-wrong")
        .send()
        .await
        .expect("wrong");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let me: Value = client
        .get(api(&sim, "/user"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("user")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (me["username"].as_str(), me["is_admin"].as_bool()),
        (Some("root"), Some(true))
    );
    let version: Value = client
        .get(api(&sim, "/version"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("version")
        .json()
        .await
        .expect("json");
    assert!(
        version["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("18."))
    );

    let dev = sim.handle().create_user(NewUser {
        username: "dev".into(),
        admin: false,
        project_ids: vec![1],
    });
    let as_dev = |req: reqwest::RequestBuilder| req.header("PRIVATE-TOKEN", dev.token.clone());
    let all = as_dev(client.get(api(&sim, "/runners/all")))
        .send()
        .await
        .expect("all");
    assert_eq!(all.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        all.json::<Value>().await.expect("json"),
        json!({ "message": "403 Forbidden" })
    );
    let inst = as_dev(client.post(api(&sim, "/user/runners")))
        .form(&[("runner_type", "instance_type")])
        .send()
        .await
        .expect("instance runner");
    assert_eq!(inst.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        inst.json::<Value>().await.expect("json"),
        json!({ "message": "403 Forbidden - Insufficient permissions" })
    );
    let other = as_dev(client.get(api(&sim, "/projects/2")))
        .send()
        .await
        .expect("p2");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        other.json::<Value>().await.expect("json"),
        json!({ "message": "404 Project Not Found" })
    );
    let own = as_dev(client.get(api(&sim, "/projects/1/jobs")))
        .send()
        .await
        .expect("p1");
    assert_eq!(own.status(), StatusCode::OK);
    let listed = as_dev(client.get(api(&sim, "/projects?membership=true")))
        .send()
        .await
        .expect("mine");
    assert_eq!(header(&listed, "x-total"), "1");
    // A member may create a runner for its own project, not for another one.
    let mine = as_dev(client.post(api(&sim, "/user/runners")))
        .form(&[("runner_type", "project_type"), ("project_id", "1")])
        .send()
        .await
        .expect("project runner");
    assert_eq!(mine.status(), StatusCode::CREATED);
    let theirs = as_dev(client.post(api(&sim, "/user/runners")))
        .form(&[("runner_type", "project_type"), ("project_id", "2")])
        .send()
        .await
        .expect("other project runner");
    assert_eq!(theirs.status(), StatusCode::FORBIDDEN);
    let unknown = client
        .get(api(&sim, "/no/such/route"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("unknown");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.json::<Value>().await.expect("json"),
        json!({ "error": "404 Not Found" })
    );
}

#[tokio::test]
async fn runner_create_validate_verify_and_delete() {
    let (sim, client) = start().await;
    sim.handle().create_job(job(1, &[]));
    let post = |body: Value| {
        client
            .post(api(&sim, "/user/runners"))
            .header("PRIVATE-TOKEN", ADMIN)
            .json(&body)
            .send()
    };
    let cases = [
        (json!({}), json!({ "error": "runner_type is missing" })),
        (
            json!({ "runner_type": "cloud_type" }),
            json!({ "error": "runner_type does not have a valid value" }),
        ),
        (
            json!({ "runner_type": "instance_type", "access_level": "everything", "paused": "maybe" }),
            json!({ "error": "paused is invalid, access_level does not have a valid value" }),
        ),
        (
            json!({ "runner_type": "project_type" }),
            json!({ "message": "400 Bad request - Missing/invalid project" }),
        ),
        (
            json!({ "runner_type": "instance_type", "run_untagged": false }),
            json!({ "message": "400 Bad request - Tags list can not be empty when runner is not allowed to pick untagged jobs" }),
        ),
        (
            json!({ "runner_type": "instance_type", "maximum_timeout": 60 }),
            json!({ "message": "400 Bad request - Maximum timeout needs to be at least 10 minutes" }),
        ),
    ];
    for (body, want) in cases {
        let resp = post(body.clone()).await.expect("post");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp.json::<Value>().await.expect("json"), want, "{body}");
    }
    assert!(
        sim.handle().runners().is_empty(),
        "invalid input created a runner"
    );

    // Form encoding with a comma-separated tag_list, as curl --data would send it.
    let resp = client
        .post(api(&sim, "/user/runners"))
        .header("PRIVATE-TOKEN", ADMIN)
        .form(&[
            ("runner_type", "instance_type"),
            ("description", "gpu-pool-a"),
            ("tag_list", "gpu,linux"),
            ("run_untagged", "false"),
            ("maximum_timeout", "3600"),
            ("maintenance_note", "made by a test"),
        ])
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.expect("json");
    assert_eq!(created["token_expires_at"], Value::Null);
    let id = created["id"].as_u64().expect("id");
    let token = created["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("glrt-"));

    let details: Value = client
        .get(api(&sim, &format!("/runners/{id}")))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("details")
        .json()
        .await
        .expect("json");
    assert_eq!(details["tag_list"], json!(["gpu", "linux"]));
    assert_eq!(details["description"], "gpu-pool-a");
    assert_eq!(details["run_untagged"], false);
    assert_eq!(details["runner_type"], "instance_type");
    assert_eq!(details["is_shared"], true);
    assert_eq!(details["paused"], false);
    assert_eq!(details["maximum_timeout"], 3600);
    assert_eq!(details["status"], "never_contacted");
    assert_eq!(details["online"], Value::Null);
    assert!(
        details.get("token").is_none(),
        "runner details must not leak the token"
    );

    // Verify: 403 for a wrong token, 400 without system_id, 200 with it.
    let verify = |body: Value| client.post(api(&sim, "/runners/verify")).json(&body).send();
    assert_eq!(
        verify(json!({ "token": "glrt-nope", "system_id": "s_x" }))
            .await
            .expect("v")
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        verify(json!({ "token": token })).await.expect("v").status(),
        StatusCode::BAD_REQUEST
    );
    let ok = verify(json!({ "token": token, "system_id": "s_0123456789ab" }))
        .await
        .expect("v");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.json::<Value>().await.expect("json")["id"], id);
    let details: Value = client
        .get(api(&sim, &format!("/runners/{id}")))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("details")
        .json()
        .await
        .expect("json");
    assert_eq!(details["status"], "online");
    assert!(
        details["contacted_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let managers: Value = client
        .get(api(&sim, &format!("/runners/{id}/managers")))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("managers")
        .json()
        .await
        .expect("json");
    assert_eq!(managers[0]["system_id"], "s_0123456789ab");

    // Listing and filters.
    let (paused_id, _) = create_runner(
        &client,
        &sim,
        json!({ "runner_type": "instance_type", "paused": true, "tag_list": ["cpu"] }),
    )
    .await;
    let list = |q: &str| {
        let url = api(&sim, &format!("/runners/all{q}"));
        let c = client.clone();
        async move {
            let v: Vec<Value> = c
                .get(url)
                .header("PRIVATE-TOKEN", ADMIN)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            v.iter()
                .filter_map(|r| r["id"].as_u64())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("").await, vec![id, paused_id]);
    assert_eq!(list("?paused=true").await, vec![paused_id]);
    assert_eq!(list("?tag_list=gpu").await, vec![id]);
    assert_eq!(list("?tag_list=gpu,cpu").await, Vec::<u64>::new());
    assert_eq!(list("?status=online").await, vec![id]);
    assert_eq!(
        list("?status=never_contacted&type=instance_type").await,
        vec![paused_id]
    );
    let bad = client
        .get(api(&sim, "/runners/all?type=robot_type"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("bad filter");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Delete by id, then by token.
    let del = client
        .delete(api(&sim, &format!("/runners/{id}")))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let gone = client
        .get(api(&sim, &format!("/runners/{id}")))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("gone");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        gone.json::<Value>().await.expect("json"),
        json!({ "message": "404 Not found" })
    );
    let again = client
        .delete(api(&sim, &format!("/runners/{id}")))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("delete again");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        verify(json!({ "token": token, "system_id": "s_0123456789ab" }))
            .await
            .expect("v")
            .status(),
        StatusCode::FORBIDDEN,
        "a deleted runner's token must stop working"
    );
    let (_, t2) = create_runner(&client, &sim, json!({ "runner_type": "instance_type" })).await;
    let by_token = client
        .delete(api(&sim, "/runners"))
        .form(&[("token", t2.as_str())])
        .send()
        .await
        .expect("delete by token");
    assert_eq!(by_token.status(), StatusCode::NO_CONTENT);
    let snap = sim.handle().snapshot();
    assert_eq!(
        snap.runners.iter().filter(|r| r.deleted).count(),
        2,
        "deleted runners stay visible to tests"
    );
    assert!(request_job_status(&client, &sim, &t2).await == StatusCode::FORBIDDEN);
}

async fn request_job_status(client: &reqwest::Client, sim: &SimServer, token: &str) -> StatusCode {
    client
        .post(api(sim, "/jobs/request"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test]
async fn jobs_request_applies_gitlab_tag_matching() {
    let (sim, client) = start().await;
    let h = sim.handle();
    let j1 = h.create_job(job(1, &["gpu"])).id;
    let j2 = h.create_job(job(1, &[])).id;
    let j3 = h.create_job(job(1, &["gpu", "arm64"])).id;
    let j4 = h.create_job(job(2, &["gpu"])).id;
    let (_, gpu) = create_runner(
        &client,
        &sim,
        json!({ "runner_type": "instance_type", "tag_list": ["gpu", "linux"], "run_untagged": false }),
    )
    .await;
    let (_, untagged) =
        create_runner(&client, &sim, json!({ "runner_type": "instance_type" })).await;
    let (_, paused) = create_runner(
        &client,
        &sim,
        json!({ "runner_type": "instance_type", "tag_list": ["gpu"], "paused": true }),
    )
    .await;
    let (_, proj2) = create_runner(
        &client,
        &sim,
        json!({ "runner_type": "project_type", "project_id": 2, "tag_list": "gpu" }),
    )
    .await;

    assert!(
        request_job(&client, &sim, &paused).await.is_none(),
        "paused runners get nothing"
    );
    let p = request_job(&client, &sim, &proj2)
        .await
        .expect("project runner job");
    assert_eq!(p["id"], j4, "project runner takes its own project's job");
    assert!(
        request_job(&client, &sim, &proj2).await.is_none(),
        "and nothing from project 1"
    );
    let u = request_job(&client, &sim, &untagged)
        .await
        .expect("untagged job");
    assert_eq!(u["id"], j2);
    assert!(
        request_job(&client, &sim, &untagged).await.is_none(),
        "run_untagged does not grant tags"
    );
    let g = request_job(&client, &sim, &gpu).await.expect("gpu job");
    assert_eq!(g["id"], j1);
    assert!(
        request_job(&client, &sim, &gpu).await.is_none(),
        "[gpu, arm64] is not a subset of [gpu, linux]"
    );

    // The payload carries what a runner needs.
    assert!(g["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(g["job_info"]["project_id"], 1);
    assert_eq!(g["job_info"]["name"], "build");
    assert!(g["steps"][0]["script"].is_array());
    assert!(
        g["variables"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["key"] == "AUTOGIT_SIM_DURATION_MS"))
    );

    let state = h.snapshot();
    let status = |id: u64| {
        state
            .jobs
            .iter()
            .find(|j| j.id == id)
            .map(|j| j.status.clone())
    };
    assert_eq!(status(j3).as_deref(), Some("pending"));
    for id in [j1, j2, j4] {
        assert_eq!(status(id).as_deref(), Some("running"));
    }
}

#[tokio::test]
async fn concurrent_requests_never_hand_out_a_job_twice() {
    let (sim, client) = start().await;
    for _ in 0..40 {
        sim.handle().create_job(job(1, &["x"]));
    }
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(
            create_runner(
                &client,
                &sim,
                json!({ "runner_type": "instance_type", "tag_list": ["x"] }),
            )
            .await
            .1,
        );
    }
    let mut tasks = Vec::new();
    for token in tokens {
        let client = client.clone();
        let url = api(&sim, "/jobs/request");
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..100 {
                let resp = client
                    .post(&url)
                    .json(&json!({ "token": token }))
                    .send()
                    .await
                    .expect("request");
                if resp.status() == StatusCode::NO_CONTENT {
                    break;
                }
                let v: Value = resp.json().await.expect("json");
                got.push(v["id"].as_u64().expect("id"));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "every job handed out");
    assert_eq!(unique.len(), 40, "no job handed out twice: {all:?}");
    assert!(sim.handle().jobs().iter().all(|j| j.assignment_count == 1));
}

#[tokio::test]
async fn job_updates_trace_and_cancellation() {
    let (sim, client) = start().await;
    let jid = sim.handle().create_job(job(1, &["t"])).id;
    let (rid, token) = create_runner(
        &client,
        &sim,
        json!({ "runner_type": "instance_type", "tag_list": ["t"] }),
    )
    .await;
    let payload = request_job(&client, &sim, &token).await.expect("job");
    let job_token = payload["token"].as_str().expect("token").to_owned();
    let put = |body: Value| {
        client
            .put(api(&sim, &format!("/jobs/{jid}")))
            .json(&body)
            .send()
    };
    assert_eq!(
        put(json!({ "token": "glcbt-wrong", "state": "running" }))
            .await
            .expect("put")
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(json!({ "token": job_token, "state": "running" }))
            .await
            .expect("put")
            .status(),
        StatusCode::OK
    );
    let patch = |range: Option<&str>, body: &'static str| {
        let mut r = client
            .patch(api(&sim, &format!("/jobs/{jid}/trace")))
            .header("JOB-TOKEN", job_token.clone())
            .header("Content-Type", "text/plain")
            .body(body);
        if let Some(range) = range {
            r = r.header("Content-Range", range);
        }
        r.send()
    };
    let first = patch(Some("0-5"), "hello\n").await.expect("trace");
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&first, "range"), "0-6");
    assert_eq!(header(&first, "job-status"), "running");
    let gap = patch(Some("100-104"), "oops\n").await.expect("trace");
    assert_eq!(gap.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&gap, "range"), "0-6");
    let missing = patch(None, "x").await.expect("trace");
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        patch(Some("6-10"), "done\n").await.expect("trace").status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        put(json!({ "token": job_token, "state": "success" }))
            .await
            .expect("put")
            .status(),
        StatusCode::OK
    );
    let after = put(json!({ "token": job_token, "state": "running" }))
        .await
        .expect("put");
    assert_eq!(after.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&after, "job-status"), "success");

    let j: Value = client
        .get(api(&sim, &format!("/projects/1/jobs/{jid}")))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("job")
        .json()
        .await
        .expect("json");
    assert_eq!(j["status"], "success");
    assert_eq!(j["runner"]["id"], rid);
    assert_eq!(j["runner_manager"]["system_id"], "s_testmachine1");
    assert_eq!(j["tag_list"], json!(["t"]));
    assert!(j["duration"].as_f64().is_some() && j["queued_duration"].as_f64().is_some());
    assert!(j["started_at"].as_str().is_some() && j["finished_at"].as_str().is_some());
    let trace = client
        .get(api(&sim, &format!("/projects/1/jobs/{jid}/trace")))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("trace")
        .text()
        .await
        .expect("text");
    assert_eq!(trace, "hello\ndone\n");
    let missing_job = client
        .get(api(&sim, "/projects/1/jobs/999"))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("missing");
    assert_eq!(missing_job.status(), StatusCode::NOT_FOUND);

    // A job canceled while running: the runner's next update gets 403 + Job-Status.
    let jid2 = sim.handle().create_job(job(1, &["t"])).id;
    let p2 = request_job(&client, &sim, &token).await.expect("job 2");
    assert_eq!(p2["id"], jid2);
    let cancel = client
        .post(api(&sim, &format!("/projects/1/jobs/{jid2}/cancel")))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status(), StatusCode::CREATED);
    let resp = client
        .put(api(&sim, &format!("/jobs/{jid2}")))
        .json(&json!({ "token": p2["token"], "state": "success" }))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "job-status"), "canceled");
    assert_eq!(
        sim.handle().job(jid2).map(|j| j.status),
        Some("canceled".into())
    );
}

#[tokio::test]
async fn injected_faults_look_like_gitlab_failures() {
    let (sim, client) = start().await;
    let get = || {
        client
            .get(api(&sim, "/projects"))
            .header("PRIVATE-TOKEN", ADMIN)
            .send()
    };
    sim.handle().set_faults(FaultSpec {
        rate_limit_next: Some(2),
        retry_after_secs: Some(7),
        ..FaultSpec::default()
    });
    for _ in 0..2 {
        let r = get().await.expect("get");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&r, "retry-after"), "7");
        assert_eq!(header(&r, "ratelimit-remaining"), "0");
        assert_eq!(r.text().await.expect("text"), "Retry later\n");
    }
    assert_eq!(get().await.expect("get").status(), StatusCode::OK);

    sim.handle().set_faults(FaultSpec {
        fail_next: Some(1),
        ..FaultSpec::default()
    });
    let r = get().await.expect("get");
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({ "message": "500 Internal Server Error" })
    );
    sim.handle().set_faults(FaultSpec {
        fail_next: Some(1),
        fail_status: Some(502),
        ..FaultSpec::default()
    });
    assert_eq!(get().await.expect("get").status(), StatusCode::BAD_GATEWAY);
    assert_eq!(get().await.expect("get").status(), StatusCode::OK);

    // path_prefix limits where faults land.
    sim.handle().set_faults(FaultSpec {
        reset: true,
        fail_next: Some(1),
        fail_status: Some(503),
        path_prefix: Some("/api/v4/jobs".into()),
        ..FaultSpec::default()
    });
    assert_eq!(get().await.expect("get").status(), StatusCode::OK);
    assert_eq!(
        request_job_status(&client, &sim, "glrt-whatever").await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    sim.handle().set_faults(FaultSpec {
        reset: true,
        latency_ms: Some(300),
        ..FaultSpec::default()
    });
    let t = Instant::now();
    assert_eq!(get().await.expect("get").status(), StatusCode::OK);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "latency not applied"
    );
    sim.handle().set_faults(FaultSpec {
        reset: true,
        ..FaultSpec::default()
    });
    assert!(sim.handle().request_count("GET /api/v4/projects") >= 8);
    assert!(sim.handle().request_count("POST /api/v4/jobs/request") >= 1);
}

#[tokio::test]
async fn graphql_lists_pending_jobs_for_admins_only() {
    let (sim, client) = start().await;
    let a = sim.handle().create_job(job(1, &["gpu"])).id;
    let b = sim.handle().create_job(job(2, &[])).id;
    let query = |token: &str, q: &str, vars: Value| {
        client
            .post(format!("{}/api/graphql", sim.url()))
            .header("Authorization", format!("Bearer {token}"))
            .json(&json!({ "query": q, "variables": vars }))
            .send()
    };
    let q = "query($after: String) { jobs(statuses: [PENDING], first: 1, after: $after) { nodes { id status tags project { id } } pageInfo { hasNextPage endCursor } } }";
    let page1: Value = query(ADMIN, q, json!({}))
        .await
        .expect("gql")
        .json()
        .await
        .expect("json");
    let nodes = &page1["data"]["jobs"]["nodes"];
    assert_eq!(nodes[0]["id"], format!("gid://gitlab/Ci::Build/{b}"));
    assert_eq!(nodes[0]["status"], "PENDING");
    assert_eq!(nodes[0]["project"]["id"], "gid://gitlab/Project/2");
    assert_eq!(page1["data"]["jobs"]["pageInfo"]["hasNextPage"], true);
    let cursor = page1["data"]["jobs"]["pageInfo"]["endCursor"].clone();
    let page2: Value = query(ADMIN, q, json!({ "after": cursor }))
        .await
        .expect("gql")
        .json()
        .await
        .expect("json");
    assert_eq!(
        page2["data"]["jobs"]["nodes"][0]["id"],
        format!("gid://gitlab/Ci::Build/{a}")
    );
    assert_eq!(page2["data"]["jobs"]["nodes"][0]["tags"], json!(["gpu"]));
    assert_eq!(page2["data"]["jobs"]["pageInfo"]["hasNextPage"], false);

    let dev = sim.handle().create_user(NewUser {
        username: "dev".into(),
        ..NewUser::default()
    });
    let denied: Value = query(&dev.token, q, json!({}))
        .await
        .expect("gql")
        .json()
        .await
        .expect("json");
    assert_eq!(denied["data"]["jobs"], Value::Null);
    assert!(denied["errors"][0]["message"].as_str().is_some());
    let bad = query("glpat-nope", q, json!({})).await.expect("gql");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sim_controls_work_over_http() {
    let (sim, client) = start().await;
    let created = client
        .post(format!("{}/sim/jobs", sim.url()))
        .json(&json!({ "project_id": 9, "tags": ["gpu"], "name": "train", "duration_ms": 250 }))
        .send()
        .await
        .expect("sim job");
    assert_eq!(created.status(), StatusCode::CREATED);
    let j: Value = created.json().await.expect("json");
    assert_eq!(
        (j["status"].as_str(), j["name"].as_str()),
        (Some("pending"), Some("train"))
    );
    let user: Value = client
        .post(format!("{}/sim/users", sim.url()))
        .json(&json!({ "username": "alice", "project_ids": [9] }))
        .send()
        .await
        .expect("user")
        .json()
        .await
        .expect("json");
    let token = user["token"].as_str().expect("token");
    let jobs = client
        .get(api(&sim, "/projects/9/jobs"))
        .header("PRIVATE-TOKEN", token)
        .send()
        .await
        .expect("jobs");
    assert_eq!(header(&jobs, "x-total"), "1");
    let faults: Value = client
        .post(format!("{}/sim/faults", sim.url()))
        .json(&json!({ "drop_webhooks": true }))
        .send()
        .await
        .expect("faults")
        .json()
        .await
        .expect("json");
    assert_eq!(faults["drop_webhooks"], true);
    let state: SimSnapshot = client
        .get(format!("{}/sim/state", sim.url()))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("snapshot");
    assert_eq!(state.jobs.len(), 1);
    assert_eq!(state.jobs[0].duration_ms, 250);
    assert!(state.faults.drop_webhooks);
    assert!(
        !serde_json::to_string(&state).expect("json").contains(token),
        "state must not expose tokens"
    );
    let one = client
        .get(format!("{}/sim/jobs/{}", sim.url(), j["id"]))
        .send()
        .await
        .expect("one");
    assert_eq!(one.status(), StatusCode::OK);
    sim.shutdown().await.expect("shutdown");
}
