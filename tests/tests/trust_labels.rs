//! Trust comes from enrollment, never from the agent's word: a real
//! coordinator, the GitLab simulator and a rogue agent speaking the real
//! protocol over real mTLS.
//!
//! The rogue enrolls with a genuine join token (labelled `rack=b3`, not
//! `trust=deploy`) and a CSR, opens the session and claims everything a
//! `deploy` pool needs: arm64, eight 80 GiB NVIDIA GPUs, 2 TiB of memory,
//! and even a self-reported `trust=deploy` label. It must never get a
//! `StartRunner` of that pool (whose runner would carry a `glrt-` token), and
//! the pending job must say why. Once the operator runs `agent label set
//! <rogue> trust=deploy`, the same agent gets the runner: the selector, not
//! anything else, is what kept it out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use autogit_agent::transport;
use autogit_certs::{JoinToken, csr, tls};
use autogit_proto::v1 as pb;
use autogit_tests::gitlab_sim::NewJob;
use autogit_tests::harness::{Coordinator, Sim, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const GIB: u64 = 1 << 30;

/// Needs exactly what the rogue claims, and a trust label.
const DEPLOY_POOL: &str = r#"
[[pools]]
name = "deploy"
tags = ["deploy"]
arch = "aarch64"
gpu = { vendor = "nvidia", count = 2, min_memory = "40GiB" }
cpu_limit = 32.0
mem_limit = "1024GiB"
max_runners = 1
agent_selector = { trust = "deploy" }
"#;

/// A compromised host: enrolled for real, lying about everything else.
struct Rogue {
    id: String,
    /// Pools of the `StartRunner`s it received.
    starts: Arc<Mutex<Vec<String>>>,
    rt: Option<tokio::runtime::Runtime>,
}

fn fake_inventory() -> pb::Inventory {
    pb::Inventory {
        hostname: "rogue".into(),
        os: "Linux".into(),
        kernel: "6.1.0".into(),
        arch: "arm64".into(),
        cpu_model: "Imaginary".into(),
        cpu_cores: 128,
        cpu_threads: 256,
        mem_total_bytes: 2048 * GIB,
        docker: Some(pb::DockerInfo {
            available: true,
            version: "27.0.0".into(),
            ..Default::default()
        }),
        // Its own word: must never count as a trust label.
        labels: [("trust".to_owned(), "deploy".to_owned())].into(),
        gpus: (0..8)
            .map(|i| pb::Gpu {
                vendor: pb::GpuVendor::Nvidia as i32,
                index: i,
                uuid: format!("GPU-00000000-0000-0000-0000-00000000000{i}"),
                name: "NVIDIA H100 80GB HBM3".into(),
                memory_bytes: 80 * GIB,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

impl Rogue {
    fn join(addr: &str, token: &str) -> anyhow::Result<Rogue> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let starts = Arc::new(Mutex::new(Vec::new()));
        let seen = starts.clone();
        let id = rt.block_on(async {
            let pin = JoinToken::parse(token)?.ca_fingerprint();
            let channel = transport::connect(
                addr,
                tls::enrollment_client_config(pin)?,
                Duration::from_secs(5),
            )
            .await?;
            let keys = csr::generate("rogue")?;
            let enrolled = pb::enrollment_client::EnrollmentClient::new(channel)
                .enroll(pb::EnrollRequest {
                    token: token.to_owned(),
                    csr_pem: keys.csr_pem.clone(),
                    hostname: "rogue".into(),
                })
                .await?
                .into_inner();
            let cfg = tls::agent_client_config(
                &enrolled.ca_pem,
                &enrolled.certificate_pem,
                &keys.key_pem,
            )?;
            let channel = transport::connect(addr, cfg, Duration::from_secs(5)).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tx.send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
                    agent_version: "rogue".into(),
                    inventory: Some(fake_inventory()),
                    containers: vec![],
                })),
            })
            .await?;
            let mut inbound = pb::fleet_client::FleetClient::new(channel)
                .session(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            tokio::spawn(async move {
                let beat = pb::AgentMessage {
                    msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                        cpu_percent: 1.0,
                        mem_used_bytes: GIB,
                        mem_total_bytes: 2048 * GIB,
                        runner_containers: 0,
                    })),
                };
                while tx.send(beat.clone()).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
            tokio::spawn(async move {
                while let Ok(Some(m)) = inbound.message().await {
                    if let Some(pb::coordinator_message::Msg::StartRunner(s)) = m.msg {
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push(s.pool);
                    }
                }
            });
            anyhow::Ok(enrolled.agent_id)
        })?;
        Ok(Rogue {
            id,
            starts,
            rt: Some(rt),
        })
    }

    fn starts(&self) -> Vec<String> {
        self.starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

struct Env {
    sim: Sim,
    c: Coordinator,
    admin: String,
}

impl Env {
    fn start() -> Env {
        let sim = Sim::start().unwrap();
        let cfg = format!(
            "{}\n[demand]\npoll_interval = \"1s\"\n{DEPLOY_POOL}",
            sim.gitlab_config()
        );
        let mut c = Coordinator::init(&cfg).unwrap();
        c.start().unwrap();
        let admin = c.admin_token("ops", &[]).unwrap();
        Env { sim, c, admin }
    }

    /// A CLI command through the admin API.
    fn remote(&self, args: &[&str]) -> std::process::Output {
        let url = self.c.http_url("");
        let mut full = vec!["--server", url.as_str(), "--token", self.admin.as_str()];
        full.extend_from_slice(args);
        self.c.cli(&full).unwrap()
    }

    fn remote_json(&self, args: &[&str]) -> Value {
        let out = self.remote(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut resp = agent
            .post(&self.c.http_url(path))
            .header("Authorization", &format!("Bearer {}", self.admin))
            .send_json(body)
            .expect("HTTP call");
        let status = resp.status().as_u16();
        (
            status,
            resp.body_mut().read_json::<Value>().unwrap_or(Value::Null),
        )
    }
}

#[test]
fn a_rogue_agent_claiming_every_resource_gets_no_runner_of_a_trusted_pool_until_labelled() {
    let e = Env::start();
    let token = e.c.token(&["--label", "rack=b3"]).unwrap();
    let rogue = Rogue::join(&e.c.grpc_addr(), &token).unwrap();
    let listed = e.c.wait_agent_state(&rogue.id, "ready", T).unwrap();

    // Its claims are shown as claims; only the token's label is trusted.
    assert_eq!(listed["arch"], "aarch64", "{listed:#}");
    assert_eq!(listed["gpus"].as_array().map(Vec::len), Some(8));
    assert_eq!(listed["trust_labels"], json!({"rack": "b3"}), "{listed:#}");
    assert_eq!(listed["reported_labels"]["trust"], "deploy");

    let job = e.sim.handle.create_job(NewJob {
        project_id: 7,
        tags: vec!["deploy".into()],
        ..Default::default()
    });
    // The pending job and its pool name the missing trust label.
    let reason = wait_for(T, "the deploy job's reason", || {
        let jobs = e.remote_json(&["jobs", "--output", "json"]);
        jobs.as_array()?.iter().find(|j| j["job_id"] == job.id)?["reason"]
            .as_str()
            .map(str::to_owned)
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", e.c.logs()));
    assert_eq!(reason, "no agent with label trust=deploy");
    let pools = e.remote_json(&["pools", "--output", "json"]);
    assert_eq!(
        pools[0]["unmet_reason"], "no agent with label trust=deploy",
        "{pools:#}"
    );
    assert_eq!(pools[0]["agent_selector"], json!({"trust": "deploy"}));
    let table = String::from_utf8(e.remote(&["jobs"]).stdout).unwrap();
    assert!(
        table.contains("no agent with label trust=deploy"),
        "{table}"
    );

    // More planning passes (every fleet change and demand poll wakes one),
    // and still nothing reached the rogue or GitLab.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        e.c.wait_agent_state(&rogue.id, "ready", T).unwrap()["id"],
        rogue.id.as_str(),
        "the rogue stayed connected and ready throughout"
    );
    assert!(
        rogue.starts().is_empty(),
        "the rogue received StartRunner {:?}",
        rogue.starts()
    );
    assert!(
        e.sim.handle.runners().is_empty(),
        "no GitLab runner (no glrt- token) was created for it"
    );

    // Bad labels are refused, naming the problem, and change nothing.
    let (status, body) = e.post(
        &format!("/api/v1/agents/{}/labels", rogue.id),
        json!({"set": {"trust": "de ploy"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("\"de ploy\""),
        "{body}"
    );
    let out = e.remote(&["agents", "label", "set", &rogue.id, "trust"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key=value"));

    // The operator vouches for the host: the same agent now gets the runner.
    let out = e.remote(&["agents", "label", "set", &rogue.id, "trust=deploy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rack=b3, trust=deploy"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_for(T, "a deploy runner sent to the labelled agent", || {
        rogue.starts().contains(&"deploy".to_owned()).then_some(())
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", e.c.logs()));
    let shown = e.remote_json(&["agents", "show", &rogue.id, "--output", "json"]);
    assert_eq!(
        shown["trust_labels"],
        json!({"rack": "b3", "trust": "deploy"})
    );

    // The change is audited with who did it and the old and new labels.
    let events = e.remote_json(&["events", "--agent", &rogue.id, "--output", "json"]);
    let change = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ev| ev["kind"] == "agent.labels_changed")
        .unwrap_or_else(|| panic!("no agent.labels_changed event: {events:#}"))
        .clone();
    assert_eq!(change["actor"], "token:ops", "{change:#}");
    assert_eq!(change["detail"]["old"], json!({"rack": "b3"}));
    assert_eq!(
        change["detail"]["new"],
        json!({"rack": "b3", "trust": "deploy"})
    );

    // Removing the label takes the agent out of the pool's reach again.
    let out = e.remote(&["agents", "label", "rm", &rogue.id, "trust"]);
    assert!(out.status.success());
    let listed = e.c.wait_agent_state(&rogue.id, "ready", T).unwrap();
    assert_eq!(listed["trust_labels"], json!({"rack": "b3"}));
}
