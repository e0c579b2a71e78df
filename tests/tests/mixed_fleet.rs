//! A heterogeneous fleet for real: the coordinator natively, one native
//! amd64 agent, and the cross-built aarch64 and riscv64 agents under
//! qemu-user, all driving this host's dockerd. Each reports its true
//! architecture, and jobs tagged for an architecture land only there.

use std::time::Duration;

use autogit_tests::gitlab_sim::{NewHook, NewJob};
use autogit_tests::harness::{
    Agent, Coordinator, Sim, dist_agent, docker_inspect, test_pool, test_runner_image, wait_for,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

#[test]
fn jobs_tagged_for_an_arch_run_only_on_agents_of_that_arch() {
    let (Some(aarch64), Some(riscv64)) = (
        dist_agent("aarch64", "").unwrap(),
        dist_agent("riscv64", "").unwrap(),
    ) else {
        return;
    };
    let sim = Sim::start().unwrap();
    // A pool for jobs that do not care about the architecture, with an
    // image per architecture: two tags of the test image (this host's
    // dockerd runs both, whatever the agent under qemu reports).
    let image = test_runner_image();
    let per_arch = |arch: &str| {
        let tagged = format!("autogit-portable-{arch}:test");
        let out = std::process::Command::new("docker")
            .args(["tag", &image, &tagged])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tagged
    };
    let (x86_image, arm_image) = (per_arch("x86_64"), per_arch("aarch64"));
    let portable = test_pool("portable", &["portable"], "x86_64", "")
        .replace("arch = \"x86_64\"", "arch = [\"x86_64\", \"aarch64\"]")
        .replace(
            &format!("image = \"{image}\""),
            &format!("image = {{ x86_64 = \"{x86_image}\", aarch64 = \"{arm_image}\" }}"),
        );
    let pools = format!(
        "{}{}{}{portable}",
        test_pool("amd64", &["amd64"], "x86_64", ""),
        test_pool("arm64", &["arm64"], "aarch64", ""),
        test_pool("riscv64", &["riscv64"], "riscv64", "")
    );
    let cfg = format!(
        "{}\n[demand]\npoll_interval = \"2s\"\nwebhook_secret = \"s\"\n{pools}",
        sim.gitlab_config()
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.start().unwrap();
    sim.handle
        .add_hook(NewHook {
            url: c.http_url("/webhooks/gitlab"),
            token: Some("s".into()),
            project_id: None,
        })
        .unwrap();

    let mut agents: Vec<(&str, Agent)> = vec![
        ("x86_64", Agent::new("").unwrap()),
        ("aarch64", aarch64),
        ("riscv64", riscv64),
    ];
    let mut ids = std::collections::BTreeMap::new();
    for (arch, a) in agents.iter_mut() {
        let id = a
            .join_ok(&c.grpc_addr(), &c.token(&[]).unwrap())
            .unwrap_or_else(|e| panic!("{arch}: {e:#}"));
        a.start().unwrap();
        ids.insert(arch.to_string(), id);
    }
    for (arch, a) in &agents {
        c.wait_agent_state(&ids[*arch], "ready", T)
            .unwrap_or_else(|e| panic!("{arch}: {e:#}\n{}", a.logs()));
    }
    // agents list shows the three real architectures, from uname under emulation.
    let listed: Vec<Value> = c.agents().unwrap();
    let mut arches: Vec<&str> = listed.iter().map(|a| a["arch"].as_str().unwrap()).collect();
    arches.sort();
    assert_eq!(arches, vec!["aarch64", "riscv64", "x86_64"]);
    for a in &listed {
        let want = ids
            .iter()
            .find(|(_, id)| a["id"] == id.as_str())
            .map(|(arch, _)| arch.as_str())
            .unwrap();
        assert_eq!(a["arch"], want, "{a:#}");
    }

    let jobs: Vec<(&str, u64)> = [
        ("arm64", "aarch64"),
        ("riscv64", "riscv64"),
        ("amd64", "x86_64"),
    ]
    .iter()
    .map(|(tag, arch)| {
        (
            *arch,
            sim.handle
                .create_job(NewJob {
                    project_id: 1,
                    tags: vec![tag.to_string()],
                    ..Default::default()
                })
                .id,
        )
    })
    .collect();
    for (arch, job) in &jobs {
        wait_for(T, &format!("{arch} job done"), || {
            (sim.handle.job(*job)?.status == "success").then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    // GitLab says success a moment before the coordinator has confirmed
    // which runner ran the job: wait for its record.
    let runners: Vec<Value> = wait_for(T, "every job recorded on its runner", || {
        let runners: Vec<Value> =
            serde_json::from_str(&c.cli_ok(&["runners", "list", "--output", "json"]).ok()?).ok()?;
        jobs.iter()
            .all(|(_, job)| runners.iter().any(|r| r["job_id"] == *job))
            .then_some(runners)
    })
    .unwrap_or_else(|e| {
        let runners = c
            .cli_ok(&["runners", "list", "--output", "json"])
            .unwrap_or_default();
        panic!("{e}: {runners}\n{}", c.logs())
    });
    for (arch, job) in &jobs {
        let r = runners
            .iter()
            .find(|r| r["job_id"] == *job)
            .unwrap_or_else(|| panic!("no runner took job {job}: {runners:#?}"));
        assert_eq!(
            r["agent_id"],
            ids[*arch].as_str(),
            "job for {arch} placed on the wrong agent: {r:#}"
        );
    }
    // Every runner of an arch pool ran on that arch's agent, never elsewhere.
    for r in &runners {
        let arch = match r["pool"].as_str().unwrap() {
            "arm64" => "aarch64",
            "riscv64" => "riscv64",
            _ => "x86_64",
        };
        assert_eq!(r["agent_id"], ids[arch].as_str(), "{r:#}");
    }

    // Two jobs for the two-architecture pool at once: spread places one on
    // each of its architectures, each runner from its architecture's image.
    // Spread counts runners per agent, so first let the runners above (one
    // job each) be gone: one still stopping on the slower emulated agent
    // would tip the balance.
    wait_for(T, "the first jobs' runners are gone", || {
        c.active_runners().ok()?.is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", c.runners()));
    let portable_jobs: Vec<u64> = (0..2)
        .map(|_| {
            sim.handle
                .create_job(NewJob {
                    project_id: 1,
                    tags: vec!["portable".into()],
                    duration_ms: Some(6000),
                    ..Default::default()
                })
                .id
        })
        .collect();
    let running: Vec<Value> = wait_for(T, "both portable runners have a container", || {
        let runners: Vec<Value> =
            serde_json::from_str(&c.cli_ok(&["runners", "list", "--output", "json"]).ok()?).ok()?;
        let live: Vec<Value> = runners
            .into_iter()
            .filter(|r| r["pool"] == "portable" && r["container_id"].is_string())
            .filter(|r| ["idle", "busy"].contains(&r["state"].as_str().unwrap_or("")))
            .collect();
        (live.len() == 2).then_some(live)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let mut seen = Vec::new();
    for r in &running {
        let agent = r["agent_id"].as_str().unwrap();
        let arch = ids
            .iter()
            .find(|(_, id)| id.as_str() == agent)
            .map(|(a, _)| a.clone())
            .unwrap();
        let inspect = docker_inspect(r["container_id"].as_str().unwrap()).unwrap();
        let want = if arch == "aarch64" {
            &arm_image
        } else {
            &x86_image
        };
        assert_eq!(
            inspect["Config"]["Image"],
            want.as_str(),
            "runner on {arch}: {r:#}"
        );
        seen.push(arch);
    }
    seen.sort();
    assert_eq!(
        seen,
        vec!["aarch64", "x86_64"],
        "one runner on each architecture"
    );
    for job in &portable_jobs {
        wait_for(T, "portable job done", || {
            (sim.handle.job(*job)?.status == "success").then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    for tagged in [&x86_image, &arm_image] {
        let _ = std::process::Command::new("docker")
            .args(["rmi", tagged.as_str()])
            .output();
    }
}
