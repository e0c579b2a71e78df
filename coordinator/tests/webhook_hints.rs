//! Webhook payloads are hints (issue 8, fault 7): a Job Hook with a valid
//! secret can still be forged or replayed (a new `Idempotency-Key` defeats
//! delivery de-duplication), so "running", "success" and "failed" change
//! nothing until GitLab confirms them. Against the GitLab simulator over
//! loopback HTTP.

use std::sync::Arc;
use std::time::Duration;

use autogit_coordinator::demand::{
    self, DemandConfig, DemandHandle, DemandSnapshot, WebhookHeaders,
};
use autogit_coordinator::gitlab::webhook::JOB_HOOK_EVENT;
use autogit_coordinator::gitlab::{GitLabClient, GitLabClientConfig, RetryPolicy};
use autogit_coordinator::scheduler::{Arch, Pool};
use autogit_tests::gitlab_sim::{self, NewJob, SimConfig, SimServer};
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const ADMIN_TOKEN: &str = "glpat-hints-test-admin-token";
const SECRET: &str = "hook-secret-for-hint-tests";
const WAIT: Duration = Duration::from_secs(10);
const PROJECT: u64 = 31;

struct Env {
    sim: SimServer,
    demand: DemandHandle,
    shutdown: CancellationToken,
}

async fn start(cfg: DemandConfig) -> Env {
    start_with(cfg, |_| {}).await
}

async fn start_with(cfg: DemandConfig, client: impl FnOnce(&mut GitLabClientConfig)) -> Env {
    let sim = gitlab_sim::spawn(SimConfig {
        admin_token: ADMIN_TOKEN.into(),
        ..SimConfig::default()
    })
    .await
    .expect("start GitLab simulator");
    assert!(sim.url().starts_with("http://127.0.0.1:"), "{}", sim.url());
    let mut client_cfg = GitLabClientConfig::new(sim.url(), SecretString::from(ADMIN_TOKEN));
    client_cfg.requests_per_minute = None;
    client_cfg.retry = RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::ZERO,
    };
    client(&mut client_cfg);
    let gitlab = Arc::new(GitLabClient::new(client_cfg).expect("GitLab client"));
    let pools = autogit_coordinator::pools::LivePools::new(vec![Pool::new(
        "cpu",
        &["linux"],
        Arch::X86_64,
    )]);
    let shutdown = CancellationToken::new();
    let (demand, _activity) = demand::spawn(gitlab, pools, cfg, shutdown.clone());
    Env {
        sim,
        demand,
        shutdown,
    }
}

impl Env {
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

    fn job_fetches(&self) -> u64 {
        self.sim
            .handle()
            .request_count("GET /api/v4/projects/{id}/jobs/{job_id}")
    }

    /// Deliver one hook with a valid secret and a fresh delivery key.
    fn hook(
        &self,
        key: &str,
        job_id: u64,
        status: &str,
        runner: Option<u64>,
    ) -> demand::WebhookOutcome {
        let body = json!({
            "object_kind": "build",
            "build_id": job_id,
            "build_status": status,
            "project_id": PROJECT,
            "runner": runner.map(|id| json!({"id": id, "tags": []})),
        })
        .to_string();
        let headers = WebhookHeaders {
            token: Some(SECRET.as_bytes()),
            event: Some(JOB_HOOK_EVENT),
            delivery_key: Some(key),
        };
        self.demand
            .receive_webhook(headers, body.as_bytes())
            .outcome
    }

    /// Waits until the tracker has taken every queued hook and every fetch
    /// it caused has come back: two polls that start after this call.
    async fn settle(&self) {
        let since = std::time::Instant::now();
        self.wait_for("a poll started after the hooks", |s| {
            s.last_poll_started.is_some_and(|t| t > since)
        })
        .await;
        let since = std::time::Instant::now();
        self.wait_for("a second poll", |s| {
            s.last_poll_started.is_some_and(|t| t > since)
        })
        .await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.sim.shutdown().await.expect("stop simulator");
    }
}

fn config() -> DemandConfig {
    DemandConfig {
        poll_interval: Duration::from_millis(200),
        projects: Some(vec![PROJECT]),
        poll_requests_per_minute: 60_000,
        webhook_secret: Some(SecretString::from(SECRET)),
        webhook_queue: 4096,
        ..DemandConfig::default()
    }
}

#[tokio::test]
async fn a_forged_success_does_not_take_a_pending_job_out_of_demand() {
    let env = start(config()).await;
    let job = env.sim.handle().create_job(NewJob {
        project_id: PROJECT,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    env.wait_for("the pending job", |s| s.job(job.id).is_some())
        .await;

    // A replayed "success" (valid secret, new delivery key) and a forged
    // "running" on some runner: GitLab still says pending.
    assert_eq!(
        env.hook("forged-1", job.id, "success", None),
        demand::WebhookOutcome::Accepted
    );
    assert_eq!(
        env.hook("forged-2", job.id, "running", Some(4242)),
        demand::WebhookOutcome::Accepted
    );
    env.settle().await;
    let snap = env.demand.snapshot();
    assert!(
        snap.job(job.id).is_some(),
        "the job is still pending and counted: {snap:#?}"
    );
    assert_eq!(snap.per_pool.get("cpu"), Some(&1), "it still gets a runner");
    env.stop().await;
}

#[tokio::test]
async fn a_flood_of_replayed_hints_costs_a_bounded_number_of_fetches() {
    let env = start(DemandConfig {
        poll_interval: Duration::from_secs(3600),
        projects: Some(Vec::new()),
        ..config()
    })
    .await;
    let job = env.sim.handle().create_job(NewJob {
        project_id: PROJECT,
        tags: vec!["linux".into()],
        ..Default::default()
    });
    assert_eq!(
        env.hook("pending", job.id, "pending", None),
        demand::WebhookOutcome::Accepted
    );
    env.wait_for("the hooked job", |s| s.job(job.id).is_some())
        .await;
    let before = env.job_fetches();

    for i in 0..2000 {
        let status = if i % 2 == 0 { "success" } else { "failed" };
        let outcome = env.hook(&format!("replay-{i}"), job.id, status, None);
        assert_eq!(outcome, demand::WebhookOutcome::Accepted, "delivery {i}");
    }
    // Let the tracker drain its queue and finish the fetches it started.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fetched = env.job_fetches();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if env.job_fetches() == fetched || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    let extra = env.job_fetches() - before;
    assert!(
        (1..=4).contains(&extra),
        "2,000 replayed hints caused {extra} job fetches"
    );
    assert!(
        env.demand.snapshot().job(job.id).is_some(),
        "the job is still pending"
    );
    env.stop().await;
}

/// A pipeline's burst of `pending` hooks (64 jobs of one project) is
/// confirmed by listing the project's pending jobs, not by 64 job fetches,
/// and every job is found. A hinted job the listing does not show (here
/// already canceled) is fetched by itself and stays out of demand.
#[tokio::test]
async fn a_burst_of_pending_hints_is_confirmed_by_a_few_listings_and_finds_every_job() {
    let env = start(DemandConfig {
        // Hooks only: no poll lists the project.
        poll_interval: Duration::from_secs(3600),
        projects: Some(Vec::new()),
        ..config()
    })
    .await;
    let sim = env.sim.handle();
    let jobs: Vec<u64> = (0..64)
        .map(|_| {
            sim.create_job(NewJob {
                project_id: PROJECT,
                tags: vec!["linux".into()],
                ..Default::default()
            })
            .id
        })
        .collect();
    let canceled = sim
        .create_job(NewJob {
            project_id: PROJECT,
            tags: vec!["linux".into()],
            ..Default::default()
        })
        .id;
    sim.cancel_job(canceled).expect("cancel");
    let listings_before = sim.request_count("GET /api/v4/projects/{id}/jobs");

    for (i, id) in jobs.iter().chain([&canceled]).enumerate() {
        let outcome = env.hook(&format!("burst-{i}"), *id, "pending", None);
        assert_eq!(outcome, demand::WebhookOutcome::Accepted, "delivery {i}");
    }
    let snap = env
        .wait_for("all 64 hinted jobs pending", |s| {
            jobs.iter().all(|id| s.job(*id).is_some())
        })
        .await;
    assert_eq!(snap.per_pool.get("cpu"), Some(&64), "{snap:#?}");
    // The canceled job's own fetch comes back and changes nothing.
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.job_fetches() < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listings = sim.request_count("GET /api/v4/projects/{id}/jobs") - listings_before;
    assert_eq!(
        env.job_fetches(),
        1,
        "only the job the listing did not show is fetched by itself"
    );
    assert!(
        (1..=8).contains(&listings),
        "65 hints cost {listings} listings"
    );
    assert!(env.demand.snapshot().job(canceled).is_none());
    assert_eq!(env.demand.stats().listings, listings);
    env.stop().await;
}

/// A finished burst's confirmations wait for the single-job budget, each
/// holding one of the `fetch_concurrency` slots; the next burst's pending
/// listing has slots of its own and goes out at once.
#[tokio::test]
async fn a_pending_listing_does_not_wait_behind_confirmations_stuck_in_their_budget() {
    let env = start_with(
        DemandConfig {
            poll_interval: Duration::from_secs(3600),
            projects: Some(Vec::new()),
            fetch_concurrency: 1,
            ..config()
        },
        // One burst token, then one fetch every 30 s.
        |c| c.job_requests_per_minute = Some(2),
    )
    .await;
    let sim = env.sim.handle();
    let new_job = || {
        sim.create_job(NewJob {
            project_id: PROJECT,
            tags: vec!["linux".into()],
            ..Default::default()
        })
        .id
    };
    // Two confirmations: the first takes the budget's token, the second
    // waits about 30 s for the next one, holding the only fetch slot.
    let (a, b) = (new_job(), new_job());
    env.hook("run-a", a, "running", Some(1));
    env.hook("run-b", b, "running", Some(1));
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.job_fetches() < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.job_fetches(), 1, "the premise: one fetch went out");

    let c = new_job();
    env.hook("pend-c", c, "pending", None);
    // WAIT (10 s) is far below the 30 s the stuck confirmation needs.
    env.wait_for("the new pending job", |s| s.job(c).is_some())
        .await;
    assert_eq!(env.job_fetches(), 1, "the second confirmation still waits");
    env.stop().await;
}
