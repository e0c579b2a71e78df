//! The demand module against the real GitLab simulator over loopback HTTP:
//! webhook authentication, de-duplication and parsing; the Job Hook fast
//! path (tags fetched from GitLab, pools assigned, Busy/Finished); polling
//! alone; and polling through injected GitLab failures.

use std::sync::Arc;
use std::time::Duration;

use autogit_coordinator::demand::{
    self, DemandConfig, DemandHandle, DemandSnapshot, RunnerActivity, Source, WEBHOOK_PATH,
};
use autogit_coordinator::gitlab::{
    CreateRunner, GitLab, GitLabClient, GitLabClientConfig, JobStatus, RetryPolicy, RunnerType,
};
use autogit_coordinator::scheduler::{Arch, Pool};
use autogit_tests::gitlab_sim::{self, FaultSpec, NewHook, NewJob, NewUser, SimConfig, SimServer};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ADMIN_TOKEN: &str = "glpat-demand-test-admin-token";
const SECRET: &str = "hook-secret-for-tests";
const WAIT: Duration = Duration::from_secs(10);

/// A simulator, the demand module on a GitLab client for it, and the
/// webhook endpoint served on 127.0.0.1.
struct Env {
    sim: SimServer,
    admin: GitLabClient,
    demand: DemandHandle,
    activity: mpsc::UnboundedReceiver<RunnerActivity>,
    webhook_url: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

fn pools() -> autogit_coordinator::pools::LivePools {
    autogit_coordinator::pools::LivePools::new(vec![
        Pool::new("cpu", &["linux"], Arch::X86_64),
        Pool::new("gpu", &["linux", "gpu"], Arch::X86_64),
    ])
}

/// Polling that never repeats on its own, so only webhooks change demand
/// (the first poll covers no project: none is configured yet).
fn webhook_only() -> DemandConfig {
    DemandConfig {
        poll_interval: Duration::from_secs(3600),
        projects: Some(Vec::new()),
        webhook_secret: Some(SecretString::from(SECRET)),
        ..DemandConfig::default()
    }
}

fn fast_polling(projects: Option<Vec<u64>>) -> DemandConfig {
    DemandConfig {
        poll_interval: Duration::from_millis(150),
        projects,
        poll_requests_per_minute: 60_000,
        ..DemandConfig::default()
    }
}

async fn start(cfg: DemandConfig) -> Env {
    start_as(cfg, None).await
}

/// Like [`start`], with the demand module using `user`'s token instead of
/// the administrator's.
async fn start_as(cfg: DemandConfig, user: Option<NewUser>) -> Env {
    let sim = gitlab_sim::spawn(SimConfig {
        admin_token: ADMIN_TOKEN.into(),
        ..SimConfig::default()
    })
    .await
    .expect("start GitLab simulator");
    assert!(sim.url().starts_with("http://127.0.0.1:"), "{}", sim.url());
    let token = match user {
        Some(user) => sim.handle().create_user(user).token,
        None => ADMIN_TOKEN.to_owned(),
    };
    let mut client_cfg = GitLabClientConfig::new(sim.url(), SecretString::from(token));
    client_cfg.requests_per_minute = None;
    // One attempt, so injected faults reach the poller instead of being
    // retried away by the client.
    client_cfg.retry = RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::ZERO,
    };
    let gitlab = Arc::new(GitLabClient::new(client_cfg).expect("GitLab client"));
    // Runners are created with the administrator's token whoever polls.
    let mut admin_cfg = GitLabClientConfig::new(sim.url(), SecretString::from(ADMIN_TOKEN));
    admin_cfg.requests_per_minute = None;
    let admin = GitLabClient::new(admin_cfg).expect("admin GitLab client");
    let shutdown = CancellationToken::new();
    let (demand, activity) = demand::spawn(gitlab.clone(), pools(), cfg, shutdown.clone());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind webhook listener");
    let addr = listener.local_addr().expect("local addr");
    let router = demand::webhook_router(demand.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    Env {
        sim,
        admin,
        demand,
        activity,
        webhook_url: format!("http://{addr}{WEBHOOK_PATH}"),
        http: reqwest::Client::new(),
        shutdown,
    }
}

impl Env {
    /// Waits until the snapshot satisfies `cond`; fails the test with the
    /// last snapshot otherwise.
    async fn wait_for(&self, what: &str, cond: impl Fn(&DemandSnapshot) -> bool) -> DemandSnapshot {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut ticks = self.demand.subscribe();
        loop {
            let snap = self.demand.snapshot();
            if cond(&snap) {
                return snap;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; snapshot: {snap:#?}; stats: {:?}",
                self.demand.stats()
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), ticks.changed()).await;
        }
    }

    async fn next_activity(&mut self) -> RunnerActivity {
        tokio::time::timeout(WAIT, self.activity.recv())
            .await
            .expect("runner activity in time")
            .expect("activity channel open")
    }

    async fn post_hook(&self, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let mut req = self
            .http
            .post(&self.webhook_url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("webhook request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    fn job_fetches(&self) -> u64 {
        self.sim
            .handle()
            .request_count("GET /api/v4/projects/{id}/jobs/{job_id}")
    }

    /// Creates an instance runner with `tags` and has it take a job, as a
    /// runner process would. Returns (runner id, job id, job token).
    async fn runner_takes_job(&self, tags: &[&str]) -> (u64, u64, String) {
        let mut req = CreateRunner::new(RunnerType::InstanceType);
        req.tag_list = tags.iter().map(|t| (*t).to_owned()).collect();
        let runner = self.admin.create_runner(&req).await.expect("create runner");
        use secrecy::ExposeSecret;
        let resp = self
            .http
            .post(format!("{}/api/v4/jobs/request", self.sim.url()))
            .json(&json!({"token": runner.token.expose_secret(), "system_id": "s_demandtest01"}))
            .send()
            .await
            .expect("request job");
        assert_eq!(resp.status().as_u16(), 201, "runner got a job");
        let job: Value = resp.json().await.expect("job payload");
        let job_id = job["id"].as_u64().expect("job id");
        let token = job["token"].as_str().expect("job token").to_owned();
        (runner.id, job_id, token)
    }

    async fn finish_job(&self, job_id: u64, token: &str, state: &str) {
        let resp = self
            .http
            .put(format!("{}/api/v4/jobs/{job_id}", self.sim.url()))
            .json(&json!({"token": token, "state": state}))
            .send()
            .await
            .expect("update job");
        assert_eq!(resp.status().as_u16(), 200, "job update accepted");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let mut ticks = self.demand.subscribe();
        // The tracker drops its side of the tick channel when it stops.
        let stopped =
            tokio::time::timeout(WAIT, async { while ticks.changed().await.is_ok() {} }).await;
        assert!(stopped.is_ok(), "tracker stops on shutdown");
        self.sim.shutdown().await.expect("stop simulator");
    }
}

fn hook_body(project_id: u64, job_id: u64, status: &str) -> String {
    json!({
        "object_kind": "build",
        "build_id": job_id,
        "build_name": "test",
        "build_status": status,
        "project_id": project_id,
        "runner": null,
        "some_future_field": {"ignored": true}
    })
    .to_string()
}

fn job_hook_headers<'a>(token: &'a str, key: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("X-Gitlab-Event", "Job Hook"),
        ("X-Gitlab-Token", token),
        ("Idempotency-Key", key),
    ]
}

#[tokio::test]
async fn webhook_rejects_bad_tokens_and_bodies_and_deduplicates() {
    let env = start(webhook_only()).await;
    let job = env.sim.handle().create_job(NewJob {
        project_id: 11,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    let body = hook_body(11, job.id, "pending");

    // Wrong and missing secret: 401, no fetch, no demand.
    let (status, _) = env
        .post_hook(&job_hook_headers("not-the-secret", "k-1"), &body)
        .await;
    assert_eq!(status, 401);
    let (status, _) = env
        .post_hook(
            &[("X-Gitlab-Event", "Job Hook"), ("Idempotency-Key", "k-2")],
            &body,
        )
        .await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snap = env.demand.snapshot();
    // (The generation may tick: every completed poll publishes a snapshot.)
    assert!(snap.jobs.is_empty(), "nothing changes: {snap:?}");
    assert_eq!(
        env.job_fetches(),
        0,
        "an unauthenticated hook never reaches GitLab"
    );

    // Another event kind: 200, ignored.
    let (status, _) = env
        .post_hook(
            &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", SECRET)],
            r#"{"object_kind":"push"}"#,
        )
        .await;
    assert_eq!(status, 200);

    // Malformed JSON: 400 naming the problem.
    let (status, text) = env
        .post_hook(
            &job_hook_headers(SECRET, "k-3"),
            "{\"object_kind\": \"build\", ",
        )
        .await;
    assert_eq!(status, 400);
    assert!(text.contains("malformed Job Hook"), "{text}");
    let (status, text) = env
        .post_hook(
            &job_hook_headers(SECRET, "k-4"),
            r#"{"object_kind":"build","build_id":"seven","build_status":"pending","project_id":11}"#,
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        text.contains("build_id") || text.contains("invalid type"),
        "{text}"
    );

    // The same delivery twice: processed once.
    let (status, _) = env.post_hook(&job_hook_headers(SECRET, "k-5"), &body).await;
    assert_eq!(status, 200);
    let (status, text) = env.post_hook(&job_hook_headers(SECRET, "k-5"), &body).await;
    assert_eq!(status, 200);
    assert!(text.contains("duplicate"), "{text}");
    let snap = env
        .wait_for("the pending job", |s| s.job(job.id).is_some())
        .await;
    assert_eq!(snap.per_pool.get("cpu"), Some(&1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = env.demand.stats();
    assert_eq!(
        stats.fetches + stats.listings,
        1,
        "the duplicate caused no second confirmation: {stats:?}"
    );

    let stats = env.demand.stats().webhooks;
    assert_eq!(stats.unauthorized, 2);
    assert_eq!(stats.ignored, 1);
    assert_eq!(stats.malformed, 2);
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.duplicate, 1);
    assert_eq!(stats.overloaded, 0);
    env.stop().await;
}

#[tokio::test]
async fn without_a_secret_webhooks_are_refused_but_polling_finds_demand() {
    let env = start(fast_polling(Some(vec![21]))).await;
    let job = env.sim.handle().create_job(NewJob {
        project_id: 21,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    let (status, text) = env
        .post_hook(
            &job_hook_headers("anything", "k-1"),
            &hook_body(21, job.id, "pending"),
        )
        .await;
    assert_eq!(status, 401);
    assert!(text.contains("disabled"), "{text}");
    assert!(!env.demand.webhooks_enabled());
    let snap = env
        .wait_for("polling to find the job", |s| s.job(job.id).is_some())
        .await;
    assert_eq!(snap.job(job.id).map(|j| j.via), Some(Source::Poll));
    assert_eq!(env.demand.stats().webhooks.unauthorized, 1);
    env.stop().await;
}

#[tokio::test]
async fn job_hooks_bring_tagged_demand_and_runner_activity() {
    let mut env = start(webhook_only()).await;
    env.sim
        .handle()
        .add_hook(NewHook {
            url: env.webhook_url.clone(),
            token: Some(SECRET.into()),
            project_id: None,
        })
        .expect("register hook");

    let job = env.sim.handle().create_job(NewJob {
        project_id: 42,
        tags: vec!["gpu".into(), "linux".into()],
        name: Some("cuda-tests".into()),
        ..Default::default()
    });
    let snap = env
        .wait_for("the hooked job", |s| s.job(job.id).is_some())
        .await;
    let pending = snap.job(job.id).expect("job");
    assert_eq!(
        pending.tags,
        vec!["gpu", "linux"],
        "tags fetched from GitLab"
    );
    assert_eq!(pending.pool.as_deref(), Some("gpu"), "most specific pool");
    assert_eq!(pending.project_id, 42);
    assert_eq!(pending.name, "cuda-tests");
    assert_eq!(pending.via, Source::Webhook);
    assert_eq!(snap.per_pool.get("gpu"), Some(&1));
    assert_eq!(snap.per_pool.get("cpu"), None, "counted once");

    // A runner takes it: the running hook removes it and reports Busy.
    let ticks = env.demand.subscribe();
    let (runner_id, taken, token) = env.runner_takes_job(&["linux", "gpu"]).await;
    assert_eq!(taken, job.id);
    assert_eq!(
        env.next_activity().await,
        RunnerActivity::Busy {
            gitlab_runner_id: runner_id,
            project_id: 42,
            job_id: job.id
        }
    );
    // Published before the activity: whoever hears Busy sees the job gone.
    assert!(
        env.demand.snapshot().jobs.is_empty(),
        "the job left the snapshot before Busy was sent"
    );
    assert!(
        ticks.has_changed().unwrap_or(false),
        "subscribers were told"
    );

    // It finishes: Finished with its status.
    env.finish_job(job.id, &token, "failed").await;
    assert_eq!(
        env.next_activity().await,
        RunnerActivity::Finished {
            gitlab_runner_id: runner_id,
            job_id: job.id,
            status: JobStatus::Failed
        }
    );
    assert!(
        env.demand.stats().webhooks.accepted >= 4,
        "{:?}",
        env.demand.stats()
    );
    env.stop().await;
}

#[tokio::test]
async fn polling_alone_tracks_pending_running_and_finished_jobs() {
    // projects = None: the token's member projects (root sees them all).
    let mut env = start(fast_polling(None)).await;
    let sim = env.sim.handle().clone();
    let cpu = sim.create_job(NewJob {
        project_id: 5,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    let gpu = sim.create_job(NewJob {
        project_id: 6,
        tags: vec!["linux".into(), "gpu".into()],
        ..Default::default()
    });
    let untagged = sim.create_job(NewJob {
        project_id: 6,
        tags: vec![],
        ..Default::default()
    });
    let rocm = sim.create_job(NewJob {
        project_id: 6,
        tags: vec!["gpu".into(), "rocm".into()],
        ..Default::default()
    });
    let snap = env
        .wait_for("four polled jobs", |s| s.jobs.len() == 4)
        .await;
    assert!(snap.jobs.iter().all(|j| j.via == Source::Poll));
    assert_eq!(
        snap.job(cpu.id).and_then(|j| j.pool.as_deref()),
        Some("cpu")
    );
    assert_eq!(
        snap.job(gpu.id).and_then(|j| j.pool.as_deref()),
        Some("gpu")
    );
    let u = snap.job(untagged.id).expect("untagged job");
    assert_eq!(u.pool, None);
    assert!(
        u.unmatched_reason
            .as_deref()
            .is_some_and(|r| r.contains("untagged") && r.contains("run_untagged")),
        "{u:?}"
    );
    assert_eq!(
        snap.job(rocm.id)
            .and_then(|j| j.unmatched_reason.as_deref()),
        Some("no pool's tags cover [gpu, rocm]")
    );
    assert_eq!(snap.unmatched, 2);
    assert_eq!(snap.per_pool.get("cpu"), Some(&1));
    assert_eq!(snap.per_pool.get("gpu"), Some(&1));

    // A runner takes the cpu job: Busy, and it leaves the pending set.
    let (runner_id, taken, token) = env.runner_takes_job(&["linux"]).await;
    assert_eq!(taken, cpu.id);
    assert_eq!(
        env.next_activity().await,
        RunnerActivity::Busy {
            gitlab_runner_id: runner_id,
            project_id: 5,
            job_id: cpu.id
        }
    );
    env.wait_for("the taken job to leave", |s| s.job(cpu.id).is_none())
        .await;

    // A canceled job leaves too.
    sim.cancel_job(rocm.id);
    env.wait_for("the canceled job to leave", |s| s.job(rocm.id).is_none())
        .await;

    // The busy job finishes: polling notices and reports Finished once.
    env.finish_job(cpu.id, &token, "success").await;
    assert_eq!(
        env.next_activity().await,
        RunnerActivity::Finished {
            gitlab_runner_id: runner_id,
            job_id: cpu.id,
            status: JobStatus::Success
        }
    );
    // Several more polls: no repeated Busy or Finished.
    let polls = env.demand.stats().polls;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.demand.stats().polls < polls + 4 {
        assert!(tokio::time::Instant::now() < deadline, "polls continue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        env.activity.try_recv().is_err(),
        "each activity reported once"
    );
    let snap = env.demand.snapshot();
    assert_eq!(snap.jobs.len(), 2, "{snap:?}");
    env.stop().await;
}

#[tokio::test]
async fn polling_survives_server_errors_and_rate_limits() {
    let env = start(fast_polling(Some(vec![31, 32]))).await;
    let sim = env.sim.handle().clone();
    let first = sim.create_job(NewJob {
        project_id: 31,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    env.wait_for("the first job", |s| s.job(first.id).is_some())
        .await;

    // GitLab fails every listing for a while: the known job stays.
    for status in [500u16, 502, 503] {
        let errors = env.demand.stats().poll_errors;
        sim.set_faults(FaultSpec {
            fail_next: Some(4),
            fail_status: Some(status),
            path_prefix: Some("/api/v4/projects".into()),
            ..FaultSpec::default()
        });
        let deadline = tokio::time::Instant::now() + WAIT;
        while env.demand.stats().poll_errors < errors + 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "poller keeps polling through {status}: {:?}",
                env.demand.stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            env.demand.snapshot().job(first.id).is_some(),
            "a failed listing removes nothing ({status})"
        );
    }

    // Rate limited with Retry-After: the poller waits, then carries on.
    let errors = env.demand.stats().poll_errors;
    sim.set_faults(FaultSpec {
        reset: true,
        rate_limit_next: Some(2),
        retry_after_secs: Some(1),
        ..FaultSpec::default()
    });
    let second = sim.create_job(NewJob {
        project_id: 32,
        tags: vec!["linux".into(), "gpu".into()],
        ..Default::default()
    });
    let snap = env
        .wait_for("the second job after the 429s", |s| {
            s.job(second.id).is_some()
        })
        .await;
    assert!(snap.job(first.id).is_some());
    assert_eq!(
        snap.job(second.id).and_then(|j| j.pool.as_deref()),
        Some("gpu")
    );
    assert!(
        env.demand.stats().poll_errors >= errors + 2,
        "the 429s were seen: {:?}",
        env.demand.stats()
    );

    // Jobs that leave while GitLab works again are removed.
    sim.cancel_job(first.id);
    env.wait_for("the canceled job to leave", |s| s.job(first.id).is_none())
        .await;
    env.stop().await;
}

#[tokio::test]
async fn the_poller_keeps_to_its_request_budget() {
    // 600 requests per minute: one request every 100 ms at most, even
    // though a poll of five projects is due every 150 ms.
    let env = start(DemandConfig {
        poll_requests_per_minute: 600,
        ..fast_polling(Some(vec![1, 2, 3, 4, 5]))
    })
    .await;
    for project_id in 1..=5 {
        env.sim.handle().create_job(NewJob {
            project_id,
            tags: vec!["linux".into()],
            ..Default::default()
        });
    }
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await;
    let listings = env
        .sim
        .handle()
        .request_count("GET /api/v4/projects/{id}/jobs");
    assert!(
        (10..=21).contains(&listings),
        "expected about one listing per 100 ms over {window:?}, got {listings}"
    );
    assert_eq!(env.demand.snapshot().jobs.len(), 5);
    env.stop().await;
}

const GRAPHQL: &str = "POST /api/graphql";
const LISTINGS: &str = "GET /api/v4/projects/{id}/jobs";

#[tokio::test]
async fn instance_mode_uses_graphql_with_an_admin_token() {
    let mut env = start(DemandConfig {
        instance_jobs: true,
        ..fast_polling(None)
    })
    .await;
    let sim = env.sim.handle().clone();
    let a = sim.create_job(NewJob {
        project_id: 51,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    let b = sim.create_job(NewJob {
        project_id: 52,
        tags: vec!["linux".into(), "gpu".into()],
        ..Default::default()
    });
    let snap = env
        .wait_for("both jobs from GraphQL", |s| s.jobs.len() == 2)
        .await;
    assert_eq!(snap.job(a.id).and_then(|j| j.pool.as_deref()), Some("cpu"));
    assert_eq!(snap.job(b.id).and_then(|j| j.pool.as_deref()), Some("gpu"));
    assert!(sim.request_count(GRAPHQL) > 0);
    assert_eq!(sim.request_count(LISTINGS), 0, "no per-project listing");

    // GraphQL lists only pending jobs: a job that vanished is fetched, and
    // the runner that took it is reported.
    let (runner_id, taken, _) = env.runner_takes_job(&["linux"]).await;
    assert_eq!(taken, a.id);
    assert_eq!(
        env.next_activity().await,
        RunnerActivity::Busy {
            gitlab_runner_id: runner_id,
            project_id: 51,
            job_id: a.id
        }
    );
    env.wait_for("the taken job to leave", |s| s.job(a.id).is_none())
        .await;
    env.stop().await;
}

#[tokio::test]
async fn instance_mode_falls_back_to_projects_for_a_non_admin_token() {
    let env = start_as(
        DemandConfig {
            instance_jobs: true,
            ..fast_polling(None)
        },
        Some(NewUser {
            username: "dev".into(),
            admin: false,
            project_ids: vec![61],
        }),
    )
    .await;
    let sim = env.sim.handle().clone();
    let mine = sim.create_job(NewJob {
        project_id: 61,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    let other = sim.create_job(NewJob {
        project_id: 62,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    env.wait_for("the member project's job", |s| s.job(mine.id).is_some())
        .await;
    // A few more polls: the other project's job is never seen, and GraphQL
    // (which would answer a non-admin with an empty list) is never asked.
    let polls = env.demand.stats().polls;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.demand.stats().polls < polls + 3 {
        assert!(tokio::time::Instant::now() < deadline, "polls continue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(env.demand.snapshot().job(other.id).is_none());
    assert_eq!(sim.request_count(GRAPHQL), 0);
    assert!(sim.request_count(LISTINGS) > 0);
    env.stop().await;
}

#[tokio::test]
async fn projects_known_from_webhooks_are_polled_too() {
    // No project configured: only the webhook makes project 77 known.
    let env = start(DemandConfig {
        webhook_secret: Some(SecretString::from(SECRET)),
        ..fast_polling(Some(Vec::new()))
    })
    .await;
    let sim = env.sim.handle().clone();
    sim.add_hook(NewHook {
        url: env.webhook_url.clone(),
        token: Some(SECRET.into()),
        project_id: Some(77),
    })
    .expect("register hook");
    let job = sim.create_job(NewJob {
        project_id: 77,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    let snap = env
        .wait_for("the hooked job", |s| s.job(job.id).is_some())
        .await;
    assert_eq!(snap.job(job.id).map(|j| j.via), Some(Source::Webhook));
    // The cancel hook is lost; polling project 77 notices anyway.
    sim.set_faults(FaultSpec {
        drop_webhooks: Some(true),
        ..FaultSpec::default()
    });
    sim.cancel_job(job.id);
    env.wait_for("polling to remove the canceled job", |s| s.jobs.is_empty())
        .await;
    assert!(sim.request_count(LISTINGS) > 0);
    env.stop().await;
}
