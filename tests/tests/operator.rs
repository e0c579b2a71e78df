//! Operator surfaces against a real coordinator, agents, dockerd and the
//! GitLab simulator: admin API authentication, CLI through the API, drain
//! and cordon, and Prometheus metrics following a real run.

use std::time::Duration;

use autogit_tests::gitlab_sim::{NewHook, NewJob};
use autogit_tests::harness::{Agent, Coordinator, Sim, test_pool, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const SECRET: &str = "op-hook-secret";

struct Env {
    sim: Sim,
    c: Coordinator,
    admin: String,
}

fn env(pool_extra: &str) -> Env {
    let sim = Sim::start().unwrap();
    let cfg = format!(
        "{}\n[demand]\npoll_interval = \"1s\"\nwebhook_secret = \"{SECRET}\"\n[scheduler]\ngc_interval = \"2s\"\nstop_grace = \"30s\"\n{}",
        sim.gitlab_config(),
        test_pool("amd64", &["amd64"], "x86_64", pool_extra)
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.start().unwrap();
    sim.handle
        .add_hook(NewHook {
            url: c.http_url("/webhooks/gitlab"),
            token: Some(SECRET.into()),
            project_id: None,
        })
        .unwrap();
    let admin = c.admin_token("tester", &[]).unwrap();
    Env { sim, c, admin }
}

fn agent(c: &Coordinator) -> (Agent, String) {
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    (a, id)
}

fn http(method: &str, url: &str, token: Option<&str>) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let resp = match method {
        "get" => {
            let mut r = agent.get(url);
            if let Some(t) = token {
                r = r.header("Authorization", &format!("Bearer {t}"));
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(url);
            if let Some(t) = token {
                r = r.header("Authorization", &format!("Bearer {t}"));
            }
            r.send_json(serde_json::json!({}))
        }
    };
    let mut resp = resp.expect("HTTP call");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_json::<Value>().unwrap_or(Value::Null);
    (status, body)
}

/// The CLI against the running coordinator, through the API.
fn remote(e: &Env, args: &[&str]) -> std::process::Output {
    let mut full = vec![
        "--server".to_string(),
        e.c.http_url(""),
        "--token".to_string(),
        e.admin.clone(),
    ];
    full.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    e.c.cli(&refs).unwrap()
}

fn remote_json(e: &Env, args: &[&str]) -> Value {
    let out = remote(e, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "{args:?} printed invalid JSON ({err}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn every_admin_endpoint_refuses_a_missing_or_wrong_token() {
    let e = env("");
    let doc: Value =
        serde_json::from_str(include_str!("../../coordinator/src/http/openapi.json")).unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let url = e.c.http_url(&path.replace("{id}", &id));
            for token in [None, Some("AGA1deadbeefdeadbeef.AAAA"), Some("not-a-token")] {
                let (status, body) = http(method, &url, token);
                assert_eq!(
                    status, 401,
                    "{method} {path} with {token:?} gave {status}: {body}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 16, "only {checked} operations documented");
    // The dashboard too; health stays anonymous.
    assert_eq!(http("get", &e.c.http_url("/"), None).0, 401);
    assert_eq!(http("get", &e.c.http_url("/healthz"), None).0, 200);
    assert_eq!(http("get", &e.c.http_url("/readyz"), None).0, 200);
    // A revoked admin token stops working at once.
    let tokens =
        e.c.cli_ok(&["admin-token", "list", "--output", "json"])
            .unwrap();
    let tid = serde_json::from_str::<Vec<Value>>(&tokens).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        http("get", &e.c.http_url("/api/v1/agents"), Some(&e.admin)).0,
        200
    );
    e.c.cli_ok(&["admin-token", "revoke", &tid]).unwrap();
    assert_eq!(
        http("get", &e.c.http_url("/api/v1/agents"), Some(&e.admin)).0,
        401
    );
}

#[test]
fn cli_json_parses_and_matches_the_api_and_mutations_are_audited() {
    let e = env("");
    let (_a, agent_id) = agent(&e.c);
    let job = e.sim.handle.create_job(NewJob {
        project_id: 4,
        tags: vec!["amd64".into()],
        ..Default::default()
    });
    wait_for(T, "job done", || {
        (e.sim.handle.job(job.id)?.status == "success").then_some(())
    })
    .unwrap();
    e.sim.handle.create_job(NewJob {
        project_id: 4,
        tags: vec!["nope".into()],
        ..Default::default()
    });
    wait_for(T, "unmatched job visible", || {
        let (_, jobs) = http("get", &e.c.http_url("/api/v1/jobs"), Some(&e.admin));
        jobs.as_array()?
            .iter()
            .any(|j| j["reason"].as_str().is_some_and(|r| r.contains("nope")))
            .then_some(())
    })
    .unwrap();
    for (args, path) in [
        (vec!["agents", "list"], "/api/v1/agents"),
        (vec!["runners", "list"], "/api/v1/runners"),
        (vec!["token", "list"], "/api/v1/tokens"),
        (vec!["pools"], "/api/v1/pools"),
        (vec!["jobs"], "/api/v1/jobs"),
        (vec!["events"], "/api/v1/events?limit=50"),
    ] {
        let mut a = args.clone();
        a.extend(["--output", "json"]);
        let cli = remote_json(&e, &a);
        let (status, api) = http("get", &e.c.http_url(path), Some(&e.admin));
        assert_eq!(status, 200);
        let ids = |v: &Value| -> Vec<String> {
            let list = v.get("events").unwrap_or(v);
            list.as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    x.get("id")
                        .or(x.get("name"))
                        .or(x.get("job_id"))
                        .map(|i| i.to_string())
                        .unwrap_or_default()
                })
                .collect()
        };
        assert_eq!(ids(&cli), ids(&api), "{args:?} vs {path}");
    }
    // Offline mode prints the same agents from the data dir.
    let offline: Vec<Value> =
        serde_json::from_str(&e.c.cli_ok(&["agents", "list", "--output", "json"]).unwrap())
            .unwrap();
    assert_eq!(offline[0]["id"], agent_id.as_str());
    // Mutations are audited with the caller; stable exit codes.
    let out = remote(&e, &["cordon", &agent_id]);
    assert!(out.status.success());
    let events = remote_json(&e, &["events", "--agent", &agent_id, "--output", "json"]);
    let cordon = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "agent.cordoned")
        .expect("cordon audited");
    assert_eq!(cordon["actor"], "token:tester");
    assert_eq!(
        remote(&e, &["agents", "get", &uuid::Uuid::new_v4().to_string()])
            .status
            .code(),
        Some(3),
        "not found"
    );
    let mut bad = Env {
        admin: "AGA1deadbeefdeadbeef.AAAA".into(),
        ..e
    };
    assert_eq!(
        remote(&bad, &["agents", "list"]).status.code(),
        Some(4),
        "unauthorized"
    );
    bad.admin.clear();
    let down = bad
        .c
        .cli(&["--server", "http://127.0.0.1:9", "--token", "x", "pools"])
        .unwrap();
    assert_eq!(
        down.status.code(),
        Some(5),
        "unreachable: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    // Completions are generated.
    assert!(
        bad.c
            .cli_ok(&["completions", "bash"])
            .unwrap()
            .contains("autogit-coordinator")
    );
}

#[test]
fn a_cordoned_agent_gets_no_runner_and_the_job_shows_why() {
    let e = env("");
    let (_a, id) = agent(&e.c);
    assert!(remote(&e, &["cordon", &id]).status.success());
    let job = e.sim.handle.create_job(NewJob {
        project_id: 2,
        tags: vec!["amd64".into()],
        ..Default::default()
    });
    let reason = wait_for(T, "pool unmet reason", || {
        let pools = remote_json(&e, &["pools", "--output", "json"]);
        pools
            .as_array()?
            .iter()
            .find_map(|p| p["unmet_reason"].as_str().map(str::to_string))
    })
    .unwrap();
    assert!(reason.contains("cordoned"), "{reason}");
    let jobs = remote_json(&e, &["jobs", "--output", "json"]);
    assert!(
        jobs[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("cordoned"),
        "{jobs}"
    );
    assert!(e.sim.handle.runners().is_empty());
    assert!(remote(&e, &["uncordon", &id]).status.success());
    wait_for(T, "job served after uncordon", || {
        (e.sim.handle.job(job.id)?.status == "success").then_some(())
    })
    .unwrap();
}

#[test]
fn drain_lets_the_running_job_finish_before_the_host_reports_drained() {
    let e = env("");
    let (_a, id) = agent(&e.c);
    let job = e.sim.handle.create_job(NewJob {
        project_id: 1,
        tags: vec!["amd64".into()],
        duration_ms: Some(5000),
        ..Default::default()
    });
    wait_for(T, "job running", || {
        (e.sim.handle.job(job.id)?.status == "running").then_some(())
    })
    .unwrap();
    let out = remote(&e, &["drain", &id, "--deadline", "60s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("runner(s) left"),
        "progress shown: {stdout}"
    );
    assert!(stdout.contains("drained at"), "{stdout}");
    // The job finished successfully before the agent reported drained.
    let j = e.sim.handle.job(job.id).unwrap();
    assert_eq!(j.status, "success", "{j:?}");
    let agent = remote_json(&e, &["agents", "get", &id, "--output", "json"]);
    let drained = agent["drain"]["drained_at"].as_str().unwrap().to_string();
    assert!(
        j.finished_at.as_deref().unwrap() <= drained.as_str(),
        "job finished {:?} after drained {drained}",
        j.finished_at
    );
    let runners = remote_json(&e, &["runners", "list", "--output", "json"]);
    assert_eq!(runners[0]["exit_code"], 0, "{runners}");
    // A drained agent takes nothing new.
    e.sim.handle.create_job(NewJob {
        project_id: 1,
        tags: vec!["amd64".into()],
        ..Default::default()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        remote_json(&e, &["runners", "list", "--output", "json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn drain_past_its_deadline_stops_the_runner() {
    let e = env("");
    let (_a, id) = agent(&e.c);
    let job = e.sim.handle.create_job(NewJob {
        project_id: 1,
        tags: vec!["amd64".into()],
        duration_ms: Some(120_000),
        ..Default::default()
    });
    wait_for(T, "job running", || {
        (e.sim.handle.job(job.id)?.status == "running").then_some(())
    })
    .unwrap();
    let out = remote(&e, &["drain", &id, "--deadline", "2s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runners = remote_json(&e, &["runners", "list", "--output", "json"]);
    assert_ne!(runners[0]["state"], "busy", "{runners}");
    assert_ne!(
        runners[0]["exit_code"], 0,
        "the runner was stopped, not finished: {runners}"
    );
    assert_ne!(e.sim.handle.job(job.id).unwrap().status, "success");
    wait_for(T, "GitLab runner deleted", || {
        e.sim
            .handle
            .runners()
            .iter()
            .all(|r| r.deleted)
            .then_some(())
    })
    .unwrap();
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let (n, rest) = key.split_once('{').unwrap_or((key, ""));
        if n != name
            || !labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            return None;
        }
        value.parse().ok()
    })
}

#[test]
fn metrics_follow_a_real_run() {
    let e = env("");
    let (_a, _id) = agent(&e.c);
    let scrape = || http_text(&e.c.http_url("/metrics"));
    let before = scrape();
    assert_eq!(
        metric(&before, "autogit_grpc_sessions", &[]),
        Some(1.0),
        "{before}"
    );
    assert_eq!(
        metric(
            &before,
            "autogit_agents",
            &[("state", "ready"), ("arch", std::env::consts::ARCH)]
        ),
        Some(1.0),
        "{before}"
    );
    let job = e.sim.handle.create_job(NewJob {
        project_id: 6,
        tags: vec!["amd64".into()],
        duration_ms: Some(4000),
        ..Default::default()
    });
    wait_for(T, "job running", || {
        (e.sim.handle.job(job.id)?.status == "running").then_some(())
    })
    .unwrap();
    // The coordinator learns that its runner took the job a moment after
    // GitLab does (the job webhook, or the next poll): wait for the gauge
    // while the job still runs.
    let busy = |m: &str| {
        metric(
            m,
            "autogit_runners",
            &[("pool", "amd64"), ("state", "busy")],
        )
    };
    wait_for(T, "a busy runner in the metrics", || {
        let m = scrape();
        (busy(&m) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", scrape()));
    wait_for(T, "job done and runner gone", || {
        (e.sim.handle.job(job.id)?.status == "success"
            && e.sim.handle.runners().iter().all(|r| r.deleted))
        .then_some(())
    })
    .unwrap();
    let after = wait_for(T, "metrics settle", || {
        let m = scrape();
        metric(
            &m,
            "autogit_runners",
            &[("pool", "amd64"), ("state", "busy")],
        )
        // Known series stay, at zero.
        .is_none_or(|v| v == 0.0)
        .then_some(m)
    })
    .unwrap();
    assert!(
        metric(
            &after,
            "autogit_runner_provisioning_seconds_count",
            &[("pool", "amd64")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            "autogit_job_wait_seconds_count",
            &[("pool", "amd64")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            "autogit_gitlab_requests_total",
            &[("endpoint", "POST /user/runners"), ("code", "201")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            "autogit_gitlab_requests_total",
            &[("endpoint", "DELETE /runners/:id"), ("code", "204")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            "autogit_webhook_deliveries_total",
            &[("outcome", "accepted")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );
    assert!(
        metric(&after, "autogit_agent_cert_expiry_timestamp_seconds", &[]).unwrap_or(0.0) > 1.7e9,
        "{after}"
    );
}

fn http_text(url: &str) -> String {
    let mut resp = ureq::get(url).call().expect("scrape");
    resp.body_mut().read_to_string().unwrap()
}

#[test]
fn an_admin_client_certificate_works_over_https_and_a_foreign_or_expired_one_does_not() {
    let mut c = Coordinator::init("http_tls = true\n").unwrap();
    c.start().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let good = certs.path().join("alice");
    c.cli_ok(&[
        "admin-cert",
        "create",
        "--name",
        "alice",
        "--out",
        good.to_str().unwrap(),
    ])
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(good.join("alice-key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let server = format!("https://{}", c.http.unwrap());
    let run = |dir: &std::path::Path, args: &[&str]| {
        let mut a = vec![
            "--server",
            server.as_str(),
            "--admin-cert",
            dir.to_str().unwrap(),
        ];
        a.extend_from_slice(args);
        c.cli(&a).unwrap()
    };
    let ok = run(&good, &["cordon", &uuid::Uuid::new_v4().to_string()]);
    assert_eq!(
        ok.status.code(),
        Some(3),
        "authenticated (404 for an unknown agent): {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = run(&good, &["token", "create", "--ttl", "5m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Value =
        serde_json::from_slice(&run(&good, &["events", "--output", "json"]).stdout).unwrap();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "cert:alice"),
        "{events}"
    );
    // A certificate from another cluster's CA is refused during the handshake.
    let other = Coordinator::init("").unwrap();
    let foreign = certs.path().join("mallory");
    other
        .cli_ok(&[
            "admin-cert",
            "create",
            "--name",
            "mallory",
            "--out",
            foreign.to_str().unwrap(),
        ])
        .unwrap();
    std::fs::copy(good.join("ca.pem"), foreign.join("ca.pem")).unwrap(); // trust the right server
    let refused = run(&foreign, &["agents", "list"]);
    assert!(!refused.status.success());
    assert_ne!(refused.status.code(), Some(0));
    // An expired admin certificate is refused too.
    let old = certs.path().join("old");
    c.cli_ok(&[
        "admin-cert",
        "create",
        "--name",
        "old",
        "--out",
        old.to_str().unwrap(),
        "--ttl",
        "1s",
    ])
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let expired = run(&old, &["agents", "list"]);
    assert!(
        !expired.status.success(),
        "{}",
        String::from_utf8_lossy(&expired.stdout)
    );
    assert!(c.logs().contains("HTTPS handshake refused"), "{}", c.logs());
}

#[test]
fn a_fresh_coordinator_exports_known_gauges_at_zero() {
    // No GitLab, no agents: alerts such as "no ready agent" must still have
    // a series to look at.
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let admin = c.admin_token("scraper", &[]).unwrap();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut resp = agent
        .get(c.http_url("/metrics"))
        .header("Authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    for state in ["enrolled", "ready", "unreachable", "lost", "revoked"] {
        let line = format!("autogit_agents{{state=\"{state}\",arch=\"x86_64\"}} 0");
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("autogit_runners{")
            && l.contains("state=\"idle\"")
            && l.ends_with(" 0")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("autogit_pending_jobs{") && l.ends_with(" 0")),
        "{text}"
    );
}
