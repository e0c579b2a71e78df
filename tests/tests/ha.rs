//! Several coordinators on one PostgreSQL (ADR 0018), for real: three
//! replica processes sharing a private PostgreSQL cluster and a data dir
//! (the CA), an agent that knows all three, the GitLab simulator, and a
//! real dockerd.

use std::time::{Duration, Instant};

use autogit_tests::gitlab_sim::NewJob;
use autogit_tests::harness::{Agent, Coordinator, Sim, assert_nothing_left, test_pool, wait_for};
use autogit_tests::postgres::Postgres;
use serde_json::Value;

const T: Duration = Duration::from_secs(45);

fn status(c: &Coordinator) -> Value {
    let out = c
        .cli_ok(&["cluster", "status", "--output", "json"])
        .expect("cluster status");
    serde_json::from_str(&out).expect("status json")
}

/// The replica `status` names as leader, by its HTTP address.
fn leader_http(status: &Value) -> Option<String> {
    status["replicas"]
        .as_array()?
        .iter()
        .find(|r| r["role"] == "leader")
        .and_then(|r| r["http_addr"].as_str())
        .map(str::to_string)
}

/// From `cluster status`'s epoch log: consecutive epochs, and each lease
/// taken no earlier than the one before it ended.
fn assert_one_leader_at_a_time(status: &Value) {
    let mut log: Vec<(i64, i64, i64)> = status["recent_epochs"]
        .as_array()
        .expect("epochs")
        .iter()
        .map(|e| {
            let n = |k: &str| e[k].as_i64().expect(k);
            (n("epoch"), n("acquired_at"), n("expires_at"))
        })
        .collect();
    log.reverse();
    assert!(!log.is_empty());
    for w in log.windows(2) {
        let ((e0, _, end0), (e1, start1, _)) = (w[0], w[1]);
        assert_eq!(e1, e0 + 1, "{log:?}");
        assert!(
            start1 >= end0,
            "epoch {e1} began before epoch {e0} ended: {log:?}"
        );
    }
    assert_eq!(status["epoch"].as_i64(), log.last().map(|l| l.0), "{log:?}");
}

/// A private PostgreSQL, the GitLab simulator, and `n` replicas on one
/// database and data dir (one CA), with `demand` as their `[demand]`
/// settings and a 6 s lease; the first leads. `None`: no PostgreSQL here.
fn cluster(n: usize, demand: &str) -> Option<(Postgres, Sim, Vec<Coordinator>)> {
    let pg = Postgres::start()?;
    let url = pg.create_db("autogit");
    let sim = Sim::start().unwrap();
    let cfg = format!(
        "{}\n[demand]\n{demand}\n[scheduler]\ngc_interval = \"2s\"\n[cluster]\nlease_ttl = \"6s\"\n{}",
        sim.gitlab_config(),
        test_pool("amd64", &["amd64"], "x86_64", "")
    );
    let mut first = Coordinator::init(&cfg).unwrap();
    first.env.push(("AUTOGIT_DATABASE__URL".into(), url));
    first.start().unwrap();
    // It listens before it takes the lease: the first leads before the others start.
    wait_for(T, "the first replica leads", || {
        (readyz(&first).0 == 200).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", first.logs()));
    let mut replicas = vec![first];
    for _ in 1..n {
        let mut r = replicas[0].replica();
        r.start().unwrap();
        replicas.push(r);
    }
    Some((pg, sim, replicas))
}

/// An agent joined with every replica's address, ready on the first.
fn join(replicas: &[Coordinator]) -> (Agent, String) {
    let addrs: Vec<String> = replicas.iter().map(|r| r.grpc_addr()).collect();
    let mut agent = Agent::new("").unwrap();
    let id = agent
        .join_ok(&addrs.join(","), &replicas[0].token(&[]).unwrap())
        .unwrap();
    agent.start().unwrap();
    replicas[0].wait_agent_state(&id, "ready", T).unwrap();
    (agent, id)
}

/// A job for the `amd64` pool that runs `duration_ms`.
fn job(sim: &Sim, duration_ms: u64) -> u64 {
    sim.handle
        .create_job(NewJob {
            project_id: 7,
            tags: vec!["amd64".into()],
            duration_ms: Some(duration_ms),
            ..Default::default()
        })
        .id
}

/// Wait for job `id` to reach `status`; on timeout, show `logs`.
fn wait_job(sim: &Sim, id: u64, status: &str, what: &str, logs: impl Fn() -> String) {
    wait_for(T, what, || {
        (sim.handle.job(id)?.status == status).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
}

fn readyz(c: &Coordinator) -> (u16, String) {
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut r = http.get(&c.http_url("/readyz")).call().expect("readyz");
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), body)
}

#[test]
fn killing_the_leader_mid_job_elects_another_within_seconds_and_ci_goes_on_with_nothing_lost_or_doubled()
 {
    let Some((_pg, sim, mut replicas)) = cluster(3, "poll_interval = \"1s\"") else {
        return;
    };
    // One leader, two followers; a load balancer would route to the leader.
    let s = status(&replicas[0]);
    assert_eq!(s["epoch"], 1, "{s:#}");
    assert_eq!(
        leader_http(&s).as_deref(),
        Some(replicas[0].http.unwrap().to_string().as_str()),
        "{s:#}"
    );
    assert_eq!(readyz(&replicas[0]).0, 200);
    let leader_addr = replicas[0].http.unwrap().to_string();
    for follower in &replicas[1..] {
        let (code, body) = readyz(follower);
        assert_eq!(code, 503, "a follower is not ready: {body}");
        assert!(body.contains(&format!("leader: {leader_addr}")), "{body}");
    }
    wait_for(T, "three replicas in cluster status", || {
        (status(&replicas[0])["replicas"].as_array()?.len() == 3).then_some(())
    })
    .unwrap();

    // Two agents that know every replica.
    let agents = [join(&replicas), join(&replicas)];

    // A job runs on the leader's runner; the leader is SIGKILLed meanwhile.
    let job = job(&sim, 8_000);
    wait_job(&sim, job, "running", "job running", || replicas[0].logs());
    let busy = wait_for(
        T,
        "the leader's record of the runner taking the job",
        || {
            replicas[0]
                .runners()
                .ok()?
                .into_iter()
                .find(|r| r["job_id"] == job)
        },
    )
    .unwrap();
    let killed_http = replicas[0].http.unwrap().to_string();
    replicas[0].kill();
    let killed_at = Instant::now();
    let mut leader_idx = None;
    wait_for(Duration::from_secs(15), "a new leader", || {
        let s = status(&replicas[1]);
        let l = leader_http(&s).filter(|l| *l != killed_http)?;
        leader_idx = replicas
            .iter()
            .position(|r| r.http.map(|h| h.to_string()) == Some(l.clone()));
        (s["epoch"] == 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", replicas[1].logs(), replicas[2].logs()));
    let elected = killed_at.elapsed();
    let leader = &replicas[leader_idx.expect("the leader is one of ours")];
    assert_eq!(readyz(leader).0, 200);
    wait_for(
        Duration::from_secs(15),
        "both agents' sessions on the new leader",
        || {
            let logs = leader.logs();
            agents
                .iter()
                .all(|(_, id)| {
                    logs.contains(&format!("agent={id}")) && logs.contains("agent session opened")
                })
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", leader.logs()));
    let reconnected = killed_at.elapsed();
    eprintln!("leader elected {elected:?} after the kill; agent back {reconnected:?} after it");

    // The running job finishes, once; a new job gets a runner.
    wait_job(&sim, job, "success", "the running job finishes", || {
        leader.logs()
    });
    let second = self::job(&sim, 200);
    wait_job(&sim, second, "success", "a new job after failover", || {
        leader.logs()
    });

    // The fault suite's counters: no orphaned container or GitLab runner,
    // no job served twice, no record lost.
    for (_, id) in &agents {
        assert_nothing_left(&sim, leader, id);
    }
    for j in [job, second] {
        assert_eq!(
            sim.handle.job(j).unwrap().assignment_count,
            1,
            "job {j} served once"
        );
    }
    let runners = leader.runners().unwrap();
    assert_eq!(runners.len(), 2, "{runners:#?}\n{}", leader.logs());
    assert!(
        runners
            .iter()
            .any(|r| r["id"] == busy["id"] && r["state"] == "exited"),
        "the old leader's runner record lives on and ends: {runners:#?}"
    );
    assert!(runners.iter().all(|r| r["exit_code"] == 0), "{runners:#?}");
    // One leader at a time: the epoch log has one entry per change.
    let s = status(leader);
    assert_eq!(s["recent_epochs"].as_array().unwrap().len(), 2);
    assert_one_leader_at_a_time(&s);
}

/// Acceptance 2 of the HA issue: a paused leader. SIGSTOP it until a
/// follower has taken over and serves CI, then SIGCONT: the old leader
/// stops on its own (it cannot have renewed), without a session, a runner
/// or a second leader in the epoch log.
#[test]
fn a_paused_leader_that_wakes_up_after_a_takeover_stops_without_acting() {
    let Some((_pg, sim, replicas)) = cluster(2, "poll_interval = \"1s\"") else {
        return;
    };
    let (agent, agent_id) = join(&replicas);
    let [mut old, new] = <[Coordinator; 2]>::try_from(replicas).ok().unwrap();

    let paused = old.proc.as_ref().expect("running");
    paused.signal(nix::sys::signal::Signal::SIGSTOP);
    let new_http = new.http.unwrap().to_string();
    wait_for(Duration::from_secs(20), "the follower takes over", || {
        let s = status(&new);
        (s["epoch"] == 2 && leader_http(&s).as_deref() == Some(new_http.as_str())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", new.logs()));
    // The agent finds the new leader on its own (its session to the
    // paused one times out), and CI goes on there.
    wait_for(
        Duration::from_secs(60),
        "the agent's session on the new leader",
        || new.logs().contains("agent session opened").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", new.logs(), agent.logs()));
    let job = job(&sim, 200);
    wait_job(
        &sim,
        job,
        "success",
        "the job, served by the new leader",
        || new.logs(),
    );
    let log_before_wake = old.logs().len();

    paused.signal(nix::sys::signal::Signal::SIGCONT);
    let exit = old
        .proc
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}: the old leader went on\n{}", old.logs()));
    assert!(
        !exit.success(),
        "a deposed leader exits with an error: {exit:?}"
    );
    let woke = old.logs()[log_before_wake..].to_string();
    assert!(woke.contains("lost the leader lease"), "{woke}");
    for action in ["agent session opened", "starting runner", "runner created"] {
        assert!(
            !woke.contains(action),
            "the deposed leader acted ({action}):\n{woke}"
        );
    }
    // One leader at a time, and the job served once, by the new one.
    let epochs: Vec<i64> = status(&new)["recent_epochs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["epoch"].as_i64())
        .collect();
    assert_eq!(epochs, [2, 1]);
    assert_one_leader_at_a_time(&status(&new));
    assert_eq!(sim.handle.job(job).unwrap().assignment_count, 1);
    assert_nothing_left(&sim, &new, &agent_id);
}

/// Acceptance 4 of the HA issue: GitLab's webhook reaches a follower while
/// the leader is dead. The follower checks it and keeps it in PostgreSQL;
/// the replica that takes over takes it in and serves the job. (Its first
/// poll would find the job too; the log shows the kept webhook was taken.)
#[test]
fn a_webhook_sent_to_a_follower_while_there_is_no_leader_is_served_after_failover() {
    let Some((_pg, sim, replicas)) = cluster(
        2,
        "poll_interval = \"300s\"\nwebhook_secret = \"hook-secret\"",
    ) else {
        return;
    };
    let (_agent, agent_id) = join(&replicas);
    let [mut leader, follower] = <[Coordinator; 2]>::try_from(replicas).ok().unwrap();
    sim.handle
        .add_hook(autogit_tests::gitlab_sim::NewHook {
            url: follower.http_url("/webhooks/gitlab"),
            token: Some("hook-secret".into()),
            project_id: None,
        })
        .unwrap();

    leader.kill();
    let job = job(&sim, 200);
    wait_for(
        Duration::from_secs(10),
        "the follower accepts the webhook",
        || {
            sim.handle
                .deliveries()
                .iter()
                .flat_map(|d| d.attempts.iter())
                .any(|a| {
                    matches!(
                        a.outcome,
                        autogit_tests::gitlab_sim::AttemptOutcome::Delivered { status: 200 }
                    )
                })
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:#?}\n{}", sim.handle.deliveries(), follower.logs()));
    wait_job(
        &sim,
        job,
        "success",
        "the job, served after failover",
        || follower.logs(),
    );
    assert!(
        follower
            .logs()
            .contains("taking in webhooks that followers kept"),
        "{}",
        follower.logs()
    );
    assert_eq!(sim.handle.job(job).unwrap().assignment_count, 1);
    assert_nothing_left(&sim, &follower, &agent_id);
}

/// One admin API request with a bearer token, redirects not followed:
/// status, `Location`, JSON body (`null` if none).
fn api(method: &str, url: &str, token: &str) -> (u16, Option<String>, Value) {
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent();
    let auth = format!("Bearer {token}");
    let mut r = match method {
        "GET" => http.get(url).header("Authorization", &auth).call(),
        _ => http
            .post(url)
            .header("Authorization", &auth)
            .header("X-AutoGit-Request", "1")
            .send_empty(),
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let location = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    let body = r.body_mut().read_json().unwrap_or(Value::Null);
    (r.status().as_u16(), location, body)
}

/// The HA issue: followers serve the read-only admin API and the dashboard
/// from PostgreSQL, and send every change to the leader.
#[test]
fn a_follower_serves_the_read_only_api_from_postgres_and_sends_changes_to_the_leader() {
    let Some((_pg, sim, replicas)) = cluster(2, "poll_interval = \"1s\"") else {
        return;
    };
    let (_agent, agent_id) = join(&replicas);
    let [leader, follower] = <[Coordinator; 2]>::try_from(replicas).ok().unwrap();
    let job = job(&sim, 200);
    wait_job(&sim, job, "success", "a job on the leader", || {
        leader.logs()
    });
    let token = leader.admin_token("ops", &[]).unwrap();
    let (on_leader, on_follower) = (|p: &str| leader.http_url(p), |p: &str| follower.http_url(p));

    // Runners: the follower's list is the leader's, from the database (the
    // runner may still be winding down between the two reads: read again).
    wait_for(
        T,
        "the same runners on the follower as on the leader",
        || {
            let (code, _, leader_runners) = api("GET", &on_leader("/api/v1/runners"), &token);
            assert_eq!(code, 200);
            assert_eq!(
                leader_runners.as_array().map(Vec::len),
                Some(1),
                "{leader_runners:#}"
            );
            let (code, _, runners) = api("GET", &on_follower("/api/v1/runners"), &token);
            assert_eq!(code, 200, "{runners}");
            (runners == leader_runners).then_some(())
        },
    )
    .unwrap();
    // Agents: as the leader last wrote them (liveness is flushed in batches).
    let agent = wait_for(T, "the agent, ready, on the follower", || {
        let (code, _, agents) = api("GET", &on_follower("/api/v1/agents"), &token);
        assert_eq!(code, 200, "{agents}");
        agents
            .as_array()?
            .iter()
            .find(|a| a["id"] == agent_id.as_str() && a["state"] == "ready")
            .cloned()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", follower.logs()));
    assert_eq!(agent["connected"], true);
    assert_eq!(agent["cordoned"], false);
    assert_eq!(agent["arch"], "x86_64");
    let (code, _, pools) = api("GET", &on_follower("/api/v1/pools"), &token);
    assert_eq!(code, 200);
    assert_eq!(pools[0]["name"], "amd64", "{pools:#}");
    let (code, _, events) = api("GET", &on_follower("/api/v1/events"), &token);
    assert_eq!(code, 200);
    assert!(events.to_string().contains("agent.enrolled"), "{events:#}");
    // The dashboard page, and no admin API without credentials.
    let (code, _, _) = api("GET", &on_follower("/"), &token);
    assert_eq!(code, 200);
    let (code, _, _) = api("GET", &on_follower("/api/v1/agents"), "not-a-token");
    assert_eq!(code, 401);

    // A change is a 307 to the same path on the leader, which does it.
    let cordon = format!("/api/v1/agents/{agent_id}/cordon");
    let (code, location, body) = api("POST", &on_follower(&cordon), &token);
    assert_eq!(code, 307, "{body}");
    assert_eq!(location.as_deref(), Some(on_leader(&cordon).as_str()));
    assert_eq!(body["leader"], leader.http.unwrap().to_string());
    let (code, _, body) = api("POST", &location.unwrap(), &token);
    assert_eq!(code, 200, "{body}");
    let (_, _, agent) = api(
        "GET",
        &on_follower(&format!("/api/v1/agents/{agent_id}")),
        &token,
    );
    assert_eq!(
        agent["cordoned"], true,
        "the follower reads the leader's change"
    );
    // Pending jobs live in the leader's memory: that read goes there too.
    let (code, location, _) = api("GET", &on_follower("/api/v1/jobs?x=1"), &token);
    assert_eq!(code, 307);
    assert_eq!(
        location.as_deref(),
        Some(on_leader("/api/v1/jobs?x=1").as_str())
    );
    // The leader itself answers everything.
    let (code, _, _) = api("GET", &on_leader("/api/v1/jobs"), &token);
    assert_eq!(code, 200);
}

/// Acceptance 3 of the HA issue: PostgreSQL restarts (immediate shutdown,
/// as a crash) in the middle of a job. The replicas reconnect, the job
/// finishes once, new jobs get runners, no record is lost, and the epoch
/// log shows one leader at a time.
#[test]
fn a_postgres_restart_mid_job_loses_nothing_and_leaves_one_leader() {
    let Some((pg, sim, replicas)) = cluster(2, "poll_interval = \"1s\"") else {
        return;
    };
    let (_agent, agent_id) = join(&replicas);
    let [mut a, b] = <[Coordinator; 2]>::try_from(replicas).ok().unwrap();
    let job = job(&sim, 6_000);
    let busy = wait_for(T, "the runner taking the job", || {
        a.runners().ok()?.into_iter().find(|r| r["job_id"] == job)
    })
    .unwrap();

    pg.stop();
    std::thread::sleep(Duration::from_secs(3));
    pg.start_server();

    let both_logs = || format!("{}\n{}", a.logs(), b.logs());
    wait_job(&sim, job, "success", "the job finishes", both_logs);
    let second = self::job(&sim, 200);
    wait_job(
        &sim,
        second,
        "success",
        "a new job after the restart",
        both_logs,
    );
    // Whichever replica leads now (a leader that could not renew in time
    // stopped itself; nothing restarts it in this test).
    let leader = if a.proc.as_mut().and_then(|p| p.try_exit()).is_none() {
        &a
    } else {
        &b
    };
    assert_nothing_left(&sim, leader, &agent_id);
    for j in [job, second] {
        assert_eq!(
            sim.handle.job(j).unwrap().assignment_count,
            1,
            "job {j} served once"
        );
    }
    let runners = leader.runners().unwrap();
    assert_eq!(runners.len(), 2, "{runners:#?}");
    assert!(
        runners.iter().any(|r| r["id"] == busy["id"]),
        "{runners:#?}"
    );
    // The epoch log: one leader at a time, each lease taken only once the
    // one before had ended.
    let s = status(leader);
    assert_one_leader_at_a_time(&s);
}
