//! The coordinator on PostgreSQL, end to end: a real coordinator, agent,
//! dockerd and GitLab simulator, and a private PostgreSQL cluster
//! (`autogit_tests::postgres`).

use std::time::Duration;

use autogit_tests::gitlab_sim::{NewHook, NewJob};
use autogit_tests::harness::{Agent, Coordinator, Sim, assert_nothing_left, test_pool, wait_for};
use autogit_tests::postgres::Postgres;
use serde_json::Value;

const T: Duration = Duration::from_secs(45);
const SECRET: &str = "hook-secret-pg";

fn run_job(sim: &Sim, c: &Coordinator, agent_id: &str) -> u64 {
    let job = sim.handle.create_job(NewJob {
        project_id: 7,
        tags: vec!["amd64".into()],
        duration_ms: Some(200),
        ..Default::default()
    });
    wait_for(T, "job success", || {
        sim.handle
            .job(job.id)
            .is_some_and(|j| j.status == "success")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_nothing_left(sim, c, agent_id);
    job.id
}

fn events(c: &Coordinator) -> Vec<Value> {
    let out = c
        .cli_ok(&["events", "--limit", "1000", "--output", "json"])
        .expect("events");
    let page: Value = serde_json::from_str(&out).expect("events json");
    page["events"].as_array().cloned().expect("events")
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|r| r["id"].to_string()).collect()
}

#[test]
fn a_sqlite_install_moved_to_postgres_keeps_its_state_and_its_agent_reconnects_without_joining_again()
 {
    let Some(pg) = Postgres::start() else { return };
    let sim = Sim::start().unwrap();
    let cfg = format!(
        "{}\n[demand]\npoll_interval = \"2s\"\nwebhook_secret = \"{SECRET}\"\n[scheduler]\ngc_interval = \"2s\"\n{}",
        sim.gitlab_config(),
        test_pool("amd64", &["amd64"], "x86_64", "")
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
    let mut agent = Agent::new("").unwrap();
    let agent_id = agent
        .join_ok(&c.grpc_addr(), &c.token(&["--uses", "3"]).unwrap())
        .unwrap();
    agent.start().unwrap();
    c.wait_agent_state(&agent_id, "ready", T).unwrap();
    let first_job = run_job(&sim, &c, &agent_id);

    // What the SQLite install holds.
    let tokens = c.tokens().unwrap();
    let runners = c.runners().unwrap();
    let events_before = events(&c);
    assert_eq!(runners.len(), 1);
    assert_eq!(runners[0]["job_id"], first_job);
    assert!(events_before.iter().any(|e| e["kind"] == "agent.enrolled"));
    assert!(events_before.iter().any(|e| e["kind"] == "runner.exited"));

    // Stop it, move the state, start on PostgreSQL (same CA, same ports).
    c.kill();
    let url = pg.create_db("autogit");
    let out = c.cli_ok(&["migrate", "--to", &url]).unwrap();
    assert!(out.contains("moved the state"), "{out}");
    let line = |table: &str| {
        out.lines()
            .find(|l| l.starts_with(table))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("agents").ends_with(" 1 rows"), "{out}");
    assert!(line("runners").ends_with(" 1 rows"), "{out}");
    // Into a database that now holds state, it refuses.
    let again = c.cli(&["migrate", "--to", &url]).unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds state"));

    c.env.push(("AUTOGIT_DATABASE__URL".into(), url.clone()));
    c.start().unwrap();
    let agents = c.agents().unwrap();
    assert_eq!(
        ids(&agents),
        [format!("{agent_id:?}")],
        "the same agent, no other"
    );
    assert_eq!(c.tokens().unwrap(), tokens, "tokens and their use counts");
    assert_eq!(c.runners().unwrap(), runners);
    let moved = events(&c);
    assert_eq!(
        ids(&moved)[moved.len() - events_before.len()..],
        ids(&events_before)
    );

    // The log names the store, without a password.
    assert!(
        c.logs()
            .contains(&format!("state store opened database={url}")),
        "{}",
        c.logs()
    );
    // The agent comes back on its own certificate and serves a new job.
    c.wait_agent_state(&agent_id, "ready", T).unwrap();
    let second_job = run_job(&sim, &c, &agent_id);
    assert_ne!(second_job, first_job);
    assert_eq!(c.agents().unwrap().len(), 1, "the agent did not join again");
    // The new runner is in PostgreSQL, not in the old SQLite file.
    assert_eq!(pg.psql("autogit", "SELECT COUNT(*) FROM runners"), "2");
    let sqlite_runners = c
        .cli_ok(&[
            "--database",
            &format!("sqlite://{}/autogit.db", c.dir.display()),
            "runners",
            "list",
            "--output",
            "json",
        ])
        .unwrap();
    let sqlite_runners: Vec<Value> = serde_json::from_str(&sqlite_runners).unwrap();
    assert_eq!(sqlite_runners.len(), 1);
}
