//! Job Hook webhooks from the GitLab simulator, received by a real HTTP server on
//! loopback: GitLab's headers and body, per-project routing, redelivery with the same
//! `Idempotency-Key`, auto-disabling after 4 consecutive failures, the 10 s-style
//! timeout, dropped deliveries, and refusal of non-loopback targets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autogit_tests::gitlab_sim::{
    self, AttemptOutcome, FaultSpec, NewHook, NewJob, SimConfig, SimServer,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

const ADMIN: &str = "glpat-admin-for-hook-tests";
const SECRET: &str = "hook-secret-123";

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = r.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.got.lock().expect("lock").push(Received { headers, body });
    StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
}

async fn receiver() -> (Receiver, SocketAddr) {
    let r = Receiver {
        got: Arc::default(),
        status: Arc::new(AtomicU16::new(200)),
        delay_ms: Arc::new(AtomicU64::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/hook", post(record))
        .with_state(r.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (r, addr)
}

impl Receiver {
    fn events(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..250 {
            if self.events().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.events()
    }
}

async fn start(config: SimConfig) -> SimServer {
    gitlab_sim::spawn(SimConfig {
        admin_token: ADMIN.into(),
        ..config
    })
    .await
    .expect("start simulator")
}

fn h<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn create_runner(sim: &SimServer, tags: &[&str]) -> String {
    let v: Value = reqwest::Client::new()
        .post(format!("{}/api/v4/user/runners", sim.url()))
        .header("PRIVATE-TOKEN", ADMIN)
        .json(&json!({ "runner_type": "instance_type", "tag_list": tags, "description": "hook-test" }))
        .send()
        .await
        .expect("create runner")
        .json()
        .await
        .expect("json");
    v["token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn job_lifecycle_sends_gitlab_job_hooks() {
    let (rx, addr) = receiver().await;
    let sim = start(SimConfig::default()).await;
    sim.handle()
        .add_hook(NewHook {
            url: format!("http://{addr}/hook"),
            token: Some(SECRET.into()),
            project_id: Some(5),
        })
        .expect("hook");
    let job = sim.handle().create_job(NewJob {
        project_id: 5,
        tags: vec!["only-this-job-tag".into()],
        name: Some("compile".into()),
        ..NewJob::default()
    });
    // Events for another project must not reach a project hook.
    sim.handle().create_job(NewJob {
        project_id: 6,
        ..NewJob::default()
    });
    let runner_token = create_runner(&sim, &["only-this-job-tag", "linux"]).await;
    let client = reqwest::Client::new();
    let payload: Value = client
        .post(format!("{}/api/v4/jobs/request", sim.url()))
        .json(&json!({ "token": runner_token, "system_id": "s_hooktest0001" }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("payload");
    assert_eq!(payload["id"], job.id);
    let put = client
        .put(format!("{}/api/v4/jobs/{}", sim.url(), job.id))
        .json(&json!({ "token": payload["token"], "state": "success" }))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), reqwest::StatusCode::OK);

    let events = rx.wait_for(4).await;
    let statuses: Vec<&str> = events
        .iter()
        .filter_map(|e| e.body["build_status"].as_str())
        .collect();
    assert_eq!(statuses, ["created", "pending", "running", "success"]);
    let mut webhook_uuids = std::collections::BTreeSet::new();
    let mut idempotency = std::collections::BTreeSet::new();
    for e in &events {
        assert_eq!(h(e, "x-gitlab-event"), "Job Hook");
        assert_eq!(h(e, "x-gitlab-token"), SECRET);
        assert_eq!(h(e, "x-gitlab-instance"), sim.url());
        assert!(
            h(e, "user-agent").starts_with("GitLab/18."),
            "{}",
            h(e, "user-agent")
        );
        assert_eq!(h(e, "content-type"), "application/json");
        for name in [
            "x-gitlab-webhook-uuid",
            "x-gitlab-event-uuid",
            "idempotency-key",
        ] {
            assert!(
                uuid::Uuid::parse_str(h(e, name)).is_ok(),
                "{name} = {:?}",
                h(e, name)
            );
        }
        webhook_uuids.insert(h(e, "x-gitlab-webhook-uuid").to_owned());
        idempotency.insert(h(e, "idempotency-key").to_owned());
        let b = &e.body;
        assert_eq!(b["object_kind"], "build");
        assert_eq!(b["build_id"], job.id);
        assert_eq!(b["build_name"], "compile");
        assert_eq!(b["build_stage"], "test");
        assert_eq!(b["project_id"], 5);
        assert_eq!(b["pipeline_id"], job.pipeline_id);
        assert_eq!(
            b["commit"]["id"], job.pipeline_id,
            "commit.id is the pipeline id"
        );
        for field in [
            "ref",
            "tag",
            "sha",
            "before_sha",
            "build_created_at",
            "build_started_at",
            "build_finished_at",
            "build_duration",
            "build_queued_duration",
            "build_allow_failure",
            "build_failure_reason",
            "retries_count",
            "project_name",
            "user",
            "commit",
            "repository",
            "project",
            "environment",
            "runner",
        ] {
            assert!(b.get(field).is_some(), "payload lacks {field}");
        }
        assert!(b.get("tag_list").is_none() && b.get("build_tags").is_none());
    }
    assert_eq!(
        webhook_uuids.len(),
        4,
        "X-Gitlab-Webhook-UUID is new per delivery"
    );
    assert_eq!(idempotency.len(), 4, "one Idempotency-Key per event");
    // Before a runner is assigned the payload has no runner and no trace of the job's tags.
    for e in &events[..2] {
        assert_eq!(e.body["runner"], Value::Null);
        assert!(
            !e.body.to_string().contains("only-this-job-tag"),
            "job tags leaked into the payload"
        );
        assert_eq!(e.body["build_started_at"], Value::Null);
    }
    let running = &events[2].body;
    assert_eq!(running["runner"]["description"], "hook-test");
    assert_eq!(running["runner"]["runner_type"], "instance_type");
    assert_eq!(running["runner"]["is_shared"], true);
    assert_eq!(running["runner"]["active"], true);
    assert_eq!(
        running["runner"]["tags"],
        json!(["only-this-job-tag", "linux"])
    );
    assert!(
        running["build_started_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(events[3].body["build_finished_at"].as_str().is_some());
    assert!(events.iter().all(|e| e.body["project_id"] == 5));

    // "Resend request": same Idempotency-Key and Event-UUID, new Webhook-UUID.
    let first = sim.handle().deliveries()[0].clone();
    assert!(sim.handle().redeliver(first.id));
    let events = rx.wait_for(5).await;
    let again = &events[4];
    assert_eq!(h(again, "idempotency-key"), first.idempotency_key);
    assert_eq!(h(again, "x-gitlab-event-uuid"), first.event_uuid);
    assert_ne!(
        h(again, "x-gitlab-webhook-uuid"),
        h(&events[0], "x-gitlab-webhook-uuid")
    );
}

#[tokio::test]
async fn failing_hook_is_disabled_after_four_consecutive_failures() {
    let (rx, addr) = receiver().await;
    rx.status.store(500, Ordering::SeqCst);
    let sim = start(SimConfig::default()).await;
    let hook = sim
        .handle()
        .add_hook(NewHook {
            url: format!("http://{addr}/hook"),
            token: None,
            project_id: None,
        })
        .expect("hook");
    // 3 jobs = 6 events; GitLab gives up on the hook after the 4th failure.
    for _ in 0..3 {
        sim.handle().create_job(NewJob {
            project_id: 1,
            ..NewJob::default()
        });
    }
    let (done, snap) = sim
        .handle()
        .wait_until(Duration::from_secs(5), |s| {
            s.deliveries.len() == 6 && s.deliveries.iter().all(|d| !d.attempts.is_empty())
        })
        .await;
    assert!(done, "deliveries did not finish: {:?}", snap.deliveries);
    let outcomes: Vec<&AttemptOutcome> = snap
        .deliveries
        .iter()
        .map(|d| &d.attempts[0].outcome)
        .collect();
    assert!(outcomes[..4].iter().all(|o| matches!(
        o,
        AttemptOutcome::Failed {
            status: Some(500),
            ..
        }
    )));
    assert!(
        outcomes[4..]
            .iter()
            .all(|o| **o == AttemptOutcome::SkippedDisabled),
        "{outcomes:?}"
    );
    assert_eq!(rx.events().len(), 4, "a disabled hook receives nothing");
    let state = &snap.hooks[0];
    assert_eq!(state.alert_status, "temporarily_disabled");
    assert_eq!(state.recent_failures, 4);
    assert!(state.disabled_until.is_some());

    // Re-enabling (GitLab: the hook's "enable" / a successful test) resumes delivery,
    // and a success resets the failure count.
    rx.status.store(200, Ordering::SeqCst);
    assert!(sim.handle().enable_hook(hook.id));
    sim.handle().create_job(NewJob {
        project_id: 1,
        ..NewJob::default()
    });
    let events = rx.wait_for(6).await;
    assert_eq!(events.len(), 6);
    let hooks = sim.handle().hooks();
    assert_eq!(
        (hooks[0].recent_failures, hooks[0].alert_status.as_str()),
        (0, "executable")
    );
}

#[tokio::test]
async fn short_backoff_expires_and_timeouts_count_as_failures() {
    let (rx, addr) = receiver().await;
    rx.delay_ms.store(1_000, Ordering::SeqCst);
    let sim = start(SimConfig {
        webhook_timeout: Duration::from_millis(200),
        hook_initial_backoff: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    sim.handle()
        .add_hook(NewHook {
            url: format!("http://{addr}/hook"),
            token: None,
            project_id: None,
        })
        .expect("hook");
    sim.handle().create_job(NewJob {
        project_id: 1,
        ..NewJob::default()
    });
    sim.handle().create_job(NewJob {
        project_id: 1,
        ..NewJob::default()
    });
    let (done, snap) = sim
        .handle()
        .wait_until(Duration::from_secs(5), |s| {
            s.deliveries
                .iter()
                .filter(|d| !d.attempts.is_empty())
                .count()
                == 4
        })
        .await;
    assert!(done);
    assert!(snap.deliveries.iter().all(|d| matches!(
        &d.attempts[0].outcome,
        AttemptOutcome::Failed { status: None, error } if error == "timeout"
    )));
    assert_eq!(snap.hooks[0].alert_status, "temporarily_disabled");
    // After the (shortened) backoff the hook is executable again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    rx.delay_ms.store(0, Ordering::SeqCst);
    sim.handle().create_job(NewJob {
        project_id: 1,
        ..NewJob::default()
    });
    let (ok, snap) = sim
        .handle()
        .wait_until(Duration::from_secs(5), |s| {
            s.deliveries.len() == 6 && s.deliveries[4..].iter().all(|d| !d.attempts.is_empty())
        })
        .await;
    assert!(ok);
    assert!(matches!(
        snap.deliveries[4].attempts[0].outcome,
        AttemptOutcome::Delivered { status: 200 }
    ));
}

#[tokio::test]
async fn dropped_webhooks_fault_loses_events_until_turned_off() {
    let (rx, addr) = receiver().await;
    let sim = start(SimConfig::default()).await;
    sim.handle()
        .add_hook(NewHook {
            url: format!("http://{addr}/hook"),
            token: None,
            project_id: None,
        })
        .expect("hook");
    sim.handle().set_faults(FaultSpec {
        drop_webhooks: Some(true),
        ..FaultSpec::default()
    });
    sim.handle().create_job(NewJob {
        project_id: 1,
        ..NewJob::default()
    });
    let (done, snap) = sim
        .handle()
        .wait_until(Duration::from_secs(5), |s| {
            s.deliveries.iter().all(|d| !d.attempts.is_empty())
        })
        .await;
    assert!(done && snap.deliveries.len() == 2);
    assert!(
        snap.deliveries
            .iter()
            .all(|d| d.attempts[0].outcome == AttemptOutcome::Dropped)
    );
    assert!(rx.events().is_empty());
    assert_eq!(
        snap.hooks[0].recent_failures, 0,
        "dropping is not a receiver failure"
    );
    sim.handle().set_faults(FaultSpec {
        drop_webhooks: Some(false),
        ..FaultSpec::default()
    });
    sim.handle().create_job(NewJob {
        project_id: 1,
        ..NewJob::default()
    });
    assert_eq!(rx.wait_for(2).await.len(), 2);
}

#[tokio::test]
async fn project_hooks_api_registers_job_events_and_refuses_remote_urls() {
    let (rx, addr) = receiver().await;
    let sim = start(SimConfig::default()).await;
    sim.handle().create_job(NewJob {
        project_id: 3,
        ..NewJob::default()
    });
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/api/v4/projects/3/hooks", sim.url()))
        .header("PRIVATE-TOKEN", ADMIN)
        .json(&json!({ "url": format!("http://{addr}/hook"), "job_events": true, "token": SECRET }))
        .send()
        .await
        .expect("add hook");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let hook: Value = created.json().await.expect("json");
    assert_eq!(
        (hook["job_events"].as_bool(), hook["project_id"].as_u64()),
        (Some(true), Some(3))
    );
    assert!(
        hook.get("token").is_none(),
        "the hook secret is never returned"
    );
    let listed: Vec<Value> = client
        .get(format!("{}/api/v4/projects/3/hooks", sim.url()))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.len(), 1);
    sim.handle().create_job(NewJob {
        project_id: 3,
        ..NewJob::default()
    });
    let events = rx.wait_for(2).await;
    assert_eq!(events.len(), 2);
    assert_eq!(h(&events[0], "x-gitlab-token"), SECRET);

    // A hook without job_events gets no Job Hook.
    let quiet = client
        .post(format!("{}/api/v4/projects/3/hooks", sim.url()))
        .header("PRIVATE-TOKEN", ADMIN)
        .json(&json!({ "url": format!("http://{addr}/hook") }))
        .send()
        .await
        .expect("quiet hook");
    assert_eq!(quiet.status(), reqwest::StatusCode::CREATED);
    // Non-loopback targets are refused at registration, so nothing is ever sent there.
    let remote = client
        .post(format!("{}/api/v4/projects/3/hooks", sim.url()))
        .header("PRIVATE-TOKEN", ADMIN)
        .json(&json!({ "url": "http://192.0.2.10/hook", "job_events": true }))
        .send()
        .await
        .expect("remote hook");
    assert_eq!(remote.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(
        sim.handle()
            .add_hook(NewHook {
                url: "http://example.com/h".into(),
                ..NewHook::default()
            })
            .is_err()
    );
    let sim_remote = client
        .post(format!("{}/sim/hooks", sim.url()))
        .json(&json!({ "url": "http://10.1.2.3/h" }))
        .send()
        .await
        .expect("sim remote");
    assert_eq!(
        sim_remote.status(),
        reqwest::StatusCode::UNPROCESSABLE_ENTITY
    );

    let hook_id = hook["id"].as_u64().expect("id");
    let del = client
        .delete(format!("{}/api/v4/projects/3/hooks/{hook_id}", sim.url()))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("delete hook");
    assert_eq!(del.status(), reqwest::StatusCode::NO_CONTENT);
    sim.handle().create_job(NewJob {
        project_id: 3,
        ..NewJob::default()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.events().len(),
        2,
        "deleted and job_events=false hooks stay silent"
    );
}
