//! Demand-driven runners end to end: the GitLab simulator, a real coordinator
//! and agents, and a real dockerd running the test runner image.

use std::time::Duration;

use autogit_tests::gitlab_sim::{AttemptOutcome, FaultSpec, NewHook, NewJob};
use autogit_tests::harness::{
    Agent, Coordinator, Sim, agent_fixture, assert_nothing_left, docker_containers, docker_inspect,
    test_pool, wait_for,
};

const T: Duration = Duration::from_secs(45);
const SECRET: &str = "hook-secret-1";

/// A simulator, a coordinator serving it with `pools`, and `poll` as the
/// poll interval.
fn setup(pools: &str, poll: &str) -> (Sim, Coordinator) {
    let sim = Sim::start().unwrap();
    let cfg = format!(
        "{}\n[demand]\npoll_interval = \"{poll}\"\nwebhook_secret = \"{SECRET}\"\n[scheduler]\ngc_interval = \"2s\"\nprovision_timeout = \"60s\"\n{pools}",
        sim.gitlab_config()
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.env.push(("AUTOGIT_LOG".into(), "debug".into()));
    c.start().unwrap();
    (sim, c)
}

fn hook(sim: &Sim, c: &Coordinator) {
    sim.handle
        .add_hook(NewHook {
            url: c.http_url("/webhooks/gitlab"),
            token: Some(SECRET.into()),
            project_id: None,
        })
        .unwrap();
}

fn agent(c: &Coordinator, extra: &str) -> (Agent, String) {
    let mut a = Agent::new(extra).unwrap();
    // Debug logging everywhere: the runner token must still never be logged.
    a.env.push(("AUTOGIT_LOG".into(), "debug".into()));
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    (a, id)
}

fn job_done(sim: &Sim, id: u64) -> bool {
    sim.handle.job(id).is_some_and(|j| j.status == "success")
}

#[test]
fn webhook_job_gets_a_runner_container_that_takes_it_and_everything_is_cleaned_up() {
    // Polling every 5 minutes: only the webhook can be fast.
    let (sim, c) = setup(&test_pool("amd64", &["amd64"], "x86_64", ""), "300s");
    hook(&sim, &c);
    let (_a, agent_id) = agent(&c, "");
    let job = sim.handle.create_job(NewJob {
        project_id: 7,
        tags: vec!["amd64".into()],
        duration_ms: Some(300),
        ..Default::default()
    });
    // 1. the webhook arrives (the pending event was delivered and accepted)
    wait_for(T, "webhook delivered", || {
        sim.handle
            .deliveries()
            .iter()
            .any(|d| {
                d.attempts
                    .iter()
                    .any(|a| matches!(a.outcome, AttemptOutcome::Delivered { .. }))
            })
            .then_some(())
    })
    .unwrap();
    // 2. a runner is created in GitLab, with the pool's tags and an AutoGit description
    let gl = wait_for(Duration::from_secs(15), "GitLab runner created", || {
        sim.handle.runners().into_iter().next()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_eq!(gl.tags, vec!["amd64".to_string()]);
    assert!(gl.description.starts_with("autogit/"), "{}", gl.description);
    assert!(!gl.run_untagged);
    // 3.-4. the container starts and takes the job, which succeeds
    wait_for(T, "job success", || job_done(&sim, job.id).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let j = sim.handle.job(job.id).unwrap();
    assert_eq!(j.assignment_count, 1);
    assert_eq!(j.runner_id, Some(gl.id));
    // 5.-6. container removed, runner deleted; the fleet is back at idle_min (0)
    assert_nothing_left(&sim, &c, &agent_id);
    let r = &c.runners().unwrap()[0];
    assert_eq!(r["state"], "exited");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["job_id"], job.id, "the runner was seen taking the job");
    for k in [
        "created_at",
        "started_at",
        "busy_at",
        "finished_at",
        "gitlab_deleted_at",
    ] {
        assert!(r[k].is_string(), "lifecycle timestamp {k} missing: {r:#}");
    }
    assert!(
        !c.logs().contains("glrt-"),
        "runner token in coordinator log"
    );
    assert!(
        !_a.logs().contains("glrt-"),
        "runner token in agent log (AUTOGIT_LOG=debug)"
    );
    assert!(
        _a.logs().contains("DEBUG"),
        "the agent really logged at debug level"
    );
}

#[test]
fn polling_alone_serves_jobs_when_webhooks_are_dropped() {
    let (sim, c) = setup(&test_pool("amd64", &["amd64"], "x86_64", ""), "1s");
    hook(&sim, &c);
    sim.handle.set_faults(FaultSpec {
        drop_webhooks: Some(true),
        ..Default::default()
    });
    let (_a, agent_id) = agent(&c, "");
    let jobs: Vec<u64> = (0..2)
        .map(|_| {
            sim.handle
                .create_job(NewJob {
                    project_id: 3,
                    tags: vec!["amd64".into()],
                    ..Default::default()
                })
                .id
        })
        .collect();
    wait_for(T, "both jobs done", || {
        jobs.iter().all(|j| job_done(&sim, *j)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert!(
        sim.handle.deliveries().iter().all(|d| d
            .attempts
            .iter()
            .all(|a| !matches!(a.outcome, AttemptOutcome::Delivered { .. }))),
        "no webhook got through"
    );
    for j in &jobs {
        assert_eq!(sim.handle.job(*j).unwrap().assignment_count, 1);
    }
    assert_nothing_left(&sim, &c, &agent_id);
}

#[test]
fn job_for_a_missing_arch_stays_pending_with_a_visible_reason() {
    let pools = format!(
        "{}{}",
        test_pool("amd64", &["amd64"], "x86_64", ""),
        test_pool("arm64", &["arm64"], "aarch64", "")
    );
    let (sim, c) = setup(&pools, "1s");
    hook(&sim, &c);
    let (_a, _id) = agent(&c, "");
    let job = sim.handle.create_job(NewJob {
        project_id: 1,
        tags: vec!["arm64".into()],
        ..Default::default()
    });
    wait_for(T, "unplaceable reason logged", || {
        c.logs().contains("no aarch64 agent ready").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sim.handle.job(job.id).unwrap().status, "pending");
    assert!(
        sim.handle.runners().is_empty(),
        "no runner created for an unplaceable pool"
    );
}

#[test]
fn gpu_job_goes_only_to_the_agent_with_the_gpu_with_the_right_device_request() {
    let pools = format!(
        "{}{}",
        test_pool("amd64", &["amd64"], "x86_64", ""),
        test_pool(
            "nvidia",
            &["gpu", "nvidia"],
            "x86_64",
            "[pools.gpu]\nvendor = \"nvidia\"\ncount = 1\n"
        )
    );
    let (sim, c) = setup(&pools, "1s");
    hook(&sim, &c);
    let gpu_cfg = format!(
        "[inventory]\nnvidia_fixture = \"{}\"\n[docker]\nkeep_failed_for = \"60s\"\n",
        agent_fixture("nvidia/two-gpus.json").display()
    );
    let (_plain, plain_id) = agent(&c, "[docker]\nkeep_failed_for = \"60s\"\n");
    let (_gpu, gpu_id) = agent(&c, &gpu_cfg);
    sim.handle.create_job(NewJob {
        project_id: 2,
        tags: vec!["gpu".into(), "nvidia".into()],
        ..Default::default()
    });
    let r = wait_for(T, "GPU runner placed", || {
        c.runners()
            .unwrap()
            .into_iter()
            .find(|r| r["pool"] == "nvidia")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_eq!(r["agent_id"], gpu_id.as_str(), "placed on the GPU agent");
    let gpu_uuid = r["gpus"][0].as_str().unwrap().to_string();
    assert!(gpu_uuid.starts_with("GPU-"), "{r:#}");
    // The container exists on the GPU agent only; its config carries the device request.
    let ids = wait_for(T, "GPU container created", || {
        let ids = docker_containers(&format!("autogit.scope={gpu_id}"));
        (!ids.is_empty()).then_some(ids)
    })
    .unwrap();
    assert!(docker_containers(&format!("autogit.scope={plain_id}")).is_empty());
    let inspect = docker_inspect(&ids[0]).unwrap();
    let req = &inspect["HostConfig"]["DeviceRequests"][0];
    assert_eq!(req["Driver"], "nvidia", "{inspect:#}");
    assert_eq!(req["DeviceIDs"], serde_json::json!([gpu_uuid]));
    assert_eq!(req["Capabilities"], serde_json::json!([["gpu"]]));
    // No NVIDIA runtime on this machine: the start fails, and is cleaned up.
    wait_for(T, "GPU runner failed cleanly", || {
        c.runners().unwrap().into_iter().find(|r| {
            r["pool"] == "nvidia" && r["state"] == "failed" && r["gitlab_deleted_at"].is_string()
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", c.runners().unwrap()));
}

#[test]
fn agent_sigkill_mid_job_orphans_nothing_and_serves_the_job_once() {
    let (sim, c) = setup(&test_pool("amd64", &["amd64"], "x86_64", ""), "1s");
    hook(&sim, &c);
    let (mut a, agent_id) = agent(&c, "");
    let job = sim.handle.create_job(NewJob {
        project_id: 5,
        tags: vec!["amd64".into()],
        duration_ms: Some(4000),
        ..Default::default()
    });
    wait_for(T, "job running", || {
        (sim.handle.job(job.id)?.status == "running").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    a.kill();
    assert_eq!(
        docker_containers(&format!("autogit.scope={agent_id}")).len(),
        1,
        "the container survives the agent"
    );
    a.start().unwrap();
    wait_for(T, "job success", || job_done(&sim, job.id).then_some(())).unwrap();
    assert_eq!(
        sim.handle.job(job.id).unwrap().assignment_count,
        1,
        "served exactly once"
    );
    assert_nothing_left(&sim, &c, &agent_id);
    assert!(a.logs().contains("adopting"), "{}", a.logs());
}

#[test]
fn wrong_webhook_secret_gets_401_and_changes_nothing() {
    let (sim, c) = setup(&test_pool("amd64", &["amd64"], "x86_64", ""), "300s");
    let (_a, _id) = agent(&c, "");
    // The job exists in GitLab, but only a forged hook announces it.
    let job = sim.handle.create_job(NewJob {
        project_id: 9,
        tags: vec!["amd64".into()],
        ..Default::default()
    });
    let body = serde_json::json!({"object_kind": "build", "build_id": job.id, "build_status": "pending", "project_id": 9});
    for token in [Some("wrong"), None] {
        let mut req =
            ureq::post(&c.http_url("/webhooks/gitlab")).header("X-Gitlab-Event", "Job Hook");
        if let Some(t) = token {
            req = req.header("X-Gitlab-Token", t);
        }
        let status = match req.send_json(&body) {
            Ok(r) => r.status().as_u16(),
            Err(ureq::Error::StatusCode(s)) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(status, 401);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sim.handle.runners().is_empty(),
        "a forged webhook created a runner"
    );
    assert!(c.runners().unwrap().is_empty());
}
