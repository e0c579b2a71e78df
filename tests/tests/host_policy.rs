//! The host owner's veto end to end: a real coordinator asks a real agent
//! (with the real dockerd) for runners its `[policy]` forbids. Each start is
//! refused with the rule named, no container is created, and the
//! coordinator does not ask that agent again for that pool.

use std::time::{Duration, Instant};

use autogit_tests::gitlab_sim::NewJob;
use autogit_tests::harness::{
    Agent, Coordinator, HOST_NETWORK_ENV, Sim, docker_containers, test_pool, wait_for,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(45);
/// How long the test watches for a retry storm (many reconcile passes and
/// polls: the coordinator ticks every 500 ms and polls every second).
const WATCH: Duration = Duration::from_secs(8);

fn of_pool(c: &Coordinator, pool: &str) -> Vec<Value> {
    c.runners()
        .unwrap()
        .into_iter()
        .filter(|r| r["pool"] == pool)
        .collect()
}

fn admin_token(c: &Coordinator) -> String {
    c.admin_token("policy-test", &[]).unwrap()
}

fn get_json(url: &str, admin: &str) -> Value {
    ureq::get(url)
        .header("Authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

#[test]
fn an_agent_refuses_what_its_policy_forbids_once_with_the_rule_named_and_creates_nothing() {
    let sim = Sim::start().unwrap();
    let mount = |src: &str| format!("[[pools.mounts]]\nsource = \"{src}\"\ntarget = \"/host\"\n");
    let pools = [
        test_pool("rootfs", &["rootfs"], "x86_64", &mount("/")),
        test_pool("rawdisk", &["rawdisk"], "x86_64", &mount("/dev/sda")),
        test_pool("hostnet", &["hostnet"], "x86_64", ""),
    ]
    .concat();
    let cfg = format!(
        "{}\n[demand]\npoll_interval = \"1s\"\n[scheduler]\ngc_interval = \"2s\"\nprovision_timeout = \"60s\"\n{pools}",
        sim.gitlab_config()
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.start().unwrap();

    let mut a = Agent::new("").unwrap();
    // This host's owner forbids host networking (the harness allows it).
    a.env.push((HOST_NETWORK_ENV.into(), "false".into()));
    let agent_id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&agent_id, "ready", T).unwrap();

    for tag in ["rootfs", "rawdisk", "hostnet"] {
        sim.handle.create_job(NewJob {
            project_id: 9,
            tags: vec![tag.into()],
            ..Default::default()
        });
    }
    let expected = [
        (
            "rootfs",
            r#"refused by host policy: mount source "/" is not in policy.allowed_mount_sources"#,
        ),
        (
            "rawdisk",
            r#"refused by host policy: mount source "/dev/sda" is not in policy.allowed_mount_sources"#,
        ),
        (
            "hostnet",
            r#"refused by host policy: network mode "host" is refused (policy.allow_host_network = false)"#,
        ),
    ];
    for (pool, reason) in expected {
        let rec = wait_for(T, &format!("pool {pool}: a failed runner"), || {
            of_pool(&c, pool)
                .into_iter()
                .find(|r| r["state"] == "failed")
        })
        .unwrap_or_else(|e| panic!("{e}\n{:#?}\nagent:\n{}", c.runners().unwrap(), a.logs()));
        assert_eq!(rec["reason"], reason, "{rec:#}");
    }

    // No retry storm: over many passes each pool keeps its one record.
    let until = Instant::now() + WATCH;
    while Instant::now() < until {
        for (pool, _) in expected {
            let n = of_pool(&c, pool).len();
            assert_eq!(
                n,
                1,
                "pool {pool} retried on the refusing agent: {:#?}",
                c.runners().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Nothing was created in Docker for this agent.
    assert_eq!(
        docker_containers(&format!("autogit.scope={agent_id}")),
        Vec::<String>::new()
    );

    // "Why pending" names the host and the rule.
    let admin = admin_token(&c);
    let pools = get_json(&c.http_url("/api/v1/pools"), &admin);
    for (pool, reason) in expected {
        let p = pools
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == pool)
            .unwrap();
        let unmet = p["unmet_reason"].as_str().unwrap_or_default();
        let rule = reason.trim_start_matches("refused by host policy: ");
        assert!(
            unmet.starts_with("refused by host policy on ") && unmet.ends_with(rule),
            "{pool}: {unmet:?}"
        );
    }
}
