//! Reload without restart, end to end: the GitLab simulator, a real
//! coordinator process reloaded by SIGHUP and by `autogit-coordinator
//! reload`, a real agent and dockerd running the test runner image. A job
//! running on a pool that a reload removes completes; the removed pool gets
//! no new runners; an invalid config changes nothing and says why.

use std::time::Duration;

use autogit_tests::gitlab_sim::{NewHook, NewJob};
use autogit_tests::harness::{Agent, Coordinator, Sim, test_pool, wait_for};
use nix::sys::signal::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(45);
const SECRET: &str = "hook-secret-reload";

struct Env {
    sim: Sim,
    c: Coordinator,
    admin: String,
    /// The config file's text without its pools.
    base: String,
}

impl Env {
    fn start(pools: &str) -> Env {
        let sim = Sim::start().unwrap();
        let base = format!(
            "{}\n[demand]\npoll_interval = \"2s\"\nwebhook_secret = \"{SECRET}\"\n[scheduler]\ngc_interval = \"2s\"\nprovision_timeout = \"60s\"\n",
            sim.gitlab_config()
        );
        let mut c = Coordinator::init(&format!("{base}{pools}")).unwrap();
        c.env.push(("AUTOGIT_LOG".into(), "debug".into()));
        c.start().unwrap();
        sim.handle
            .add_hook(NewHook {
                url: c.http_url("/webhooks/gitlab"),
                token: Some(SECRET.into()),
                project_id: None,
            })
            .unwrap();
        let admin = c.admin_token("reloader", &[]).unwrap();
        Env {
            sim,
            c,
            admin,
            base,
        }
    }

    /// Rewrite the config file as `Coordinator::init` wrote it, with `pools`.
    fn write_pools(&self, pools: &str) {
        let text = std::fs::read_to_string(&self.c.config).unwrap();
        // `init` appends the harness's fast settings after our text.
        let (_, fast) = text.split_once("[agents]").expect("fast settings");
        std::fs::write(
            &self.c.config,
            format!("{}{pools}\n[agents]{fast}", self.base),
        )
        .unwrap();
    }

    /// The CLI against the running coordinator, through the API.
    fn remote(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec!["--server", "", "--token", self.admin.as_str()];
        let url = self.c.http_url("");
        full[1] = url.as_str();
        full.extend(args);
        self.c.cli(&full).unwrap()
    }

    fn pool_names(&self) -> Vec<String> {
        let out = self.remote(&["pools", "--output", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pools: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        pools
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn sighup(&self) {
        self.c
            .proc
            .as_ref()
            .expect("running")
            .signal(Signal::SIGHUP);
    }

    fn job_status(&self, id: u64) -> String {
        self.sim
            .handle
            .job(id)
            .map(|j| j.status)
            .unwrap_or_default()
    }
}

fn agent(c: &Coordinator) -> Agent {
    let mut a = Agent::new("").unwrap();
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    a
}

#[test]
fn a_reload_during_a_running_job_lets_it_finish_and_starves_the_removed_pool() {
    let keep = test_pool("keep", &["keep"], "x86_64", "");
    let gone = test_pool("gone", &["gone"], "x86_64", "");
    let e = Env::start(&format!("{keep}{gone}"));
    let _a = agent(&e.c);

    // A long job on the pool about to be removed, running.
    let long = e.sim.handle.create_job(NewJob {
        project_id: 7,
        tags: vec!["gone".into()],
        duration_ms: Some(8000),
        ..Default::default()
    });
    wait_for(T, "the long job runs", || {
        (e.job_status(long.id) == "running").then_some(())
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", e.c.logs()));

    // An invalid config: refused by the CLI with the reason, and by SIGHUP;
    // nothing changes.
    e.write_pools(&format!(
        "{keep}{}",
        test_pool("gone", &["gone"], "x86_64", "idle_min = 9")
    ));
    let out = e.remote(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an invalid config is refused");
    assert!(
        stderr.contains("pool 'gone': max_runners") && stderr.contains("nothing was changed"),
        "says why: {stderr}"
    );
    e.sighup();
    wait_for(T, "SIGHUP refusal logged", || {
        e.c.logs().contains("config reload refused").then_some(())
    })
    .unwrap();
    assert_eq!(e.pool_names(), vec!["keep", "gone"]);

    // The pool removed, by SIGHUP: the running job is not touched.
    e.write_pools(&keep);
    e.sighup();
    wait_for(T, "the pool is gone", || {
        (e.pool_names() == vec!["keep"]).then_some(())
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", e.c.logs()));
    assert_eq!(
        e.job_status(long.id),
        "running",
        "the reload did not stop the job"
    );
    let out = e.remote(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "config reloaded: no pool changed",
        "the same file again changes nothing"
    );
    wait_for(T, "the long job completes", || {
        (e.job_status(long.id) == "success").then_some(())
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", e.c.logs()));
    assert_eq!(e.sim.handle.job(long.id).unwrap().assignment_count, 1);

    // A new job for the removed pool gets no runner; one for the kept pool does.
    let created = e.sim.handle.runners().len();
    let orphan = e.sim.handle.create_job(NewJob {
        project_id: 7,
        tags: vec!["gone".into()],
        duration_ms: Some(100),
        ..Default::default()
    });
    let kept = e.sim.handle.create_job(NewJob {
        project_id: 7,
        tags: vec!["keep".into()],
        duration_ms: Some(100),
        ..Default::default()
    });
    wait_for(T, "the kept pool serves its job", || {
        (e.job_status(kept.id) == "success").then_some(())
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", e.c.logs()));
    assert_eq!(e.job_status(orphan.id), "pending");
    assert_eq!(
        e.sim.handle.runners().len(),
        created + 1,
        "only the kept pool's job got a GitLab runner"
    );
    let out = e.remote(&["jobs", "--output", "json"]);
    let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let why = jobs
        .iter()
        .find(|j| j["job_id"] == orphan.id)
        .unwrap_or_else(|| panic!("job {} listed: {jobs:#?}", orphan.id));
    assert!(why["pool"].is_null(), "{why:#}");

    // The audit log tells both reloads.
    let out = e.remote(&["events", "--output", "json", "--limit", "200"]);
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(events.contains("config.reload_refused"), "{events}");
    assert!(
        events.contains("config.reloaded") && events.contains("\"gone\""),
        "{events}"
    );
}
