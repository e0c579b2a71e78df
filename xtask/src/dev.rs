//! `cargo xtask dev`: a working local fleet on this host with embedded
//! defaults: the coordinator (SQLite in `target/autogit-dev/`), one agent
//! driving the local Docker engine, and — unless a real GitLab is given —
//! the GitLab simulator with a few demo jobs, served by the test runner
//! image, which the agent pulls from a local registry (`docker-registry` on
//! a loopback port). Ctrl-C stops everything it started and
//! removes every runner container it made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use autogit_tests::gitlab_sim::{NewHook, NewJob};
use autogit_tests::harness::Sim;
use autogit_tests::registry::{Registry, remove_local_image};
use serde_json::Value;

use crate::{cargo, root};

#[derive(clap::Args)]
pub struct DevArgs {
    /// Serve a real GitLab instead of the simulator (also AUTOGIT_DEV_GITLAB_URL).
    #[arg(long, env = "AUTOGIT_DEV_GITLAB_URL")]
    gitlab_url: Option<String>,
    /// Token for --gitlab-url, with the create_runner scope (also AUTOGIT_DEV_GITLAB_TOKEN).
    #[arg(long, env = "AUTOGIT_DEV_GITLAB_TOKEN", hide_env_values = true)]
    gitlab_token: Option<String>,
    /// Demo jobs to enqueue in the simulator (one every few seconds).
    #[arg(long, default_value_t = 6)]
    demo_jobs: u32,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// gRPC port for agents.
    #[arg(long, default_value_t = 7443)]
    grpc_port: u16,
    /// HTTP port (health, webhooks, admin).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
}

const WEBHOOK_SECRET: &str = "autogit-dev-webhook-secret";

/// A child process killed on drop.
struct Child2(Child, &'static str);

impl Drop for Child2 {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("dev: {} did not stop; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn native_pool() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("arm64", "aarch64"),
        "riscv64" => ("riscv64", "riscv64"),
        _ => ("amd64", "x86_64"),
    }
}

fn bin(name: &str) -> PathBuf {
    root().join("target/debug").join(name)
}

fn coordinator(dir: &Path, config: &Path) -> Command {
    let mut c = Command::new(bin("autogit-coordinator"));
    c.arg("--data-dir").arg(dir).arg("--config").arg(config);
    c
}

fn cli_json(dir: &Path, config: &Path, args: &[&str]) -> Vec<Value> {
    coordinator(dir, config)
        .args(args)
        .args(["--output", "json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default()
}

pub fn run(a: &DevArgs) -> anyhow::Result<()> {
    crate::packages::ensure("tests")?;
    let mut build = cargo();
    build.args(["build", "--bins", "-p", "autogit-coordinator", "-p", "autogit-agent", "-p", "autogit-tests"]);
    crate::run(build)?;
    let (socket, _dockerd) = crate::test::ensure_docker()?;
    let docker_host = format!("unix://{}", socket.display());
    // SAFETY of set_var: single-threaded at this point; children inherit it.
    unsafe { std::env::set_var("DOCKER_HOST", &docker_host) };

    let base = root().join("target/autogit-dev");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    let data = base.join("coordinator");
    let config = base.join("coordinator.toml");
    let (pool, arch) = native_pool();

    let sim;
    let mut registry = None;
    let gitlab_section;
    let pools;
    match (&a.gitlab_url, &a.gitlab_token) {
        (Some(url), Some(token)) => {
            println!("dev: serving the GitLab at {url}; add a project webhook (Job events) to http://<this host>:{}/webhooks/gitlab with secret {WEBHOOK_SECRET}", a.http_port);
            gitlab_section = format!("[gitlab]\nurl = \"{url}\"\ntoken = \"{token}\"\n");
            pools = String::new(); // the built-in default pools
            sim = None;
        }
        (Some(_), None) => bail!("--gitlab-url needs --gitlab-token (or AUTOGIT_DEV_GITLAB_TOKEN)"),
        _ => {
            let s = Sim::start()?;
            println!("dev: no GitLab configured — using the built-in GitLab SIMULATOR at {} with demo jobs", s.url);
            let local = autogit_tests::runner_image::ensure_test_runner_image(&bin("autogit-test-runner"))
                .context("build the local test runner image")?;
            // Served by a real local registry, so the agent really pulls it
            // on the first runner (and not again), as it would in production.
            let reg = Registry::start().context("start the local image registry (docker-registry)")?;
            let image = reg.push(&local, "autogit-test/runner:dev").context("push the test runner image")?;
            println!("dev: runner image {image} served by a local registry (docker-registry, log in {}); the agent pulls it as soon as it joins, ahead of the first job", reg.dir().join("registry.log").display());
            registry = Some(reg);
            gitlab_section = s.gitlab_config();
            pools = format!(
                "[[pools]]\nname = \"{pool}\"\ntags = [\"{pool}\"]\narch = \"{arch}\"\nimage = \"{image}\"\n\
                 command = [\"run-single\", \"--max-builds\", \"1\", \"--wait-timeout\", \"120\"]\n\
                 network_mode = \"host\"\ndocker_socket = false\ncpu_limit = 0.5\nmem_limit = \"256MiB\"\nmax_runners = 3\nidle_min = 0\n"
            );
            sim = Some(s);
        }
    }
    std::fs::write(
        &config,
        format!("{gitlab_section}\n[demand]\npoll_interval = \"5s\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n[scheduler]\ngc_interval = \"30s\"\n{pools}"),
    )?;

    crate::run({
        let mut c = coordinator(&data, &config);
        c.arg("init").stdout(Stdio::null());
        c
    })?;
    let grpc = format!("127.0.0.1:{}", a.grpc_port);
    let http = format!("127.0.0.1:{}", a.http_port);
    let log = std::fs::File::create(base.join("coordinator.log"))?;
    let mut child = coordinator(&data, &config)
        .args(["serve", "--grpc-listen", &grpc, "--http-listen", &http])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("start coordinator")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let coord = Child2(child, "coordinator");
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?;
    if !first.contains("listening") {
        bail!("coordinator did not start (ports {} / {} busy?); see {}", a.grpc_port, a.http_port, base.join("coordinator.log").display());
    }

    let token_out = coordinator(&data, &config).args(["token", "create", "--ttl", "10m"]).output()?;
    let token = String::from_utf8(token_out.stdout)?.lines().last().unwrap_or_default().to_string();
    let state = base.join("agent");
    let agent_cfg = base.join("agent.toml");
    // The simulator's demo pool runs runners with host networking (they reach
    // the simulator on loopback); the agent's host policy must allow it.
    std::fs::write(&agent_cfg, format!("state_dir = \"{}\"\n[policy]\nallow_host_network = true\n", state.display()))?;
    let join = Command::new(bin("autogit-agent"))
        .arg("--config")
        .arg(&agent_cfg)
        .args(["join", "--coordinator", &grpc, "--token", &token])
        .output()?;
    if !join.status.success() {
        bail!("agent join failed: {}", String::from_utf8_lossy(&join.stderr));
    }
    let agent_id: Value = serde_json::from_slice(&std::fs::read(state.join("agent.json"))?)?;
    let agent_id = agent_id["agent_id"].as_str().unwrap_or_default().to_string();
    let agent = Child2(
        Command::new(bin("autogit-agent"))
            .arg("--config")
            .arg(&agent_cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(base.join("agent.log"))?)
            .spawn()
            .context("start agent")?,
        "agent",
    );

    let d = data.display();
    let c = config.display();
    println!("dev: coordinator  gRPC {grpc}  HTTP http://{http}/healthz  (log: {}/coordinator.log)", base.display());
    println!("dev: agent {agent_id} enrolled (log: {}/agent.log)", base.display());
    // A ready admin token, so the dashboard opens with one click: the
    // fragment (`/#token=…`) never reaches the server; the login form posts
    // it and the browser keeps only an opaque session cookie.
    let admin_out = coordinator(&data, &config).args(["admin-token", "create", "--name", "dev", "--ttl", "24h"]).output()?;
    if !admin_out.status.success() {
        bail!("admin-token create failed: {}", String::from_utf8_lossy(&admin_out.stderr));
    }
    let admin = String::from_utf8(admin_out.stdout)?.lines().last().unwrap_or_default().to_string();
    println!("dev: dashboard    http://{http}/#token={admin}");
    println!("dev: admin token  {admin}  (valid 24h; CLI: --server http://{http} --token <it>)");
    println!("dev: look around with:");
    println!("       target/debug/autogit-coordinator agents list  --data-dir {d} --config {c}");
    println!("       target/debug/autogit-coordinator runners list --data-dir {d} --config {c}");
    println!("dev: press Ctrl-C to stop everything");

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc_handler(move || stop.store(true, Ordering::SeqCst))?;
    }
    if let Some(s) = &sim {
        s.handle.add_hook(NewHook { url: format!("http://{http}/webhooks/gitlab"), token: Some(WEBHOOK_SECRET.into()), project_id: None })
            .map_err(|e| anyhow!("register simulator webhook: {e}"))?;
    }

    let started = Instant::now();
    let mut enqueued = 0u32;
    let mut next_job = Instant::now() + Duration::from_secs(2);
    let mut seen_agents: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_runners: BTreeMap<String, String> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) && a.duration.is_none_or(|d| started.elapsed() < d) {
        if let Some(s) = &sim
            && enqueued < a.demo_jobs && Instant::now() >= next_job {
                let j = s.handle.create_job(NewJob {
                    project_id: 1 + u64::from(enqueued % 2),
                    tags: vec![pool.to_string()],
                    name: Some(format!("demo-{}", enqueued + 1)),
                    duration_ms: Some(1500 + 500 * u64::from(enqueued % 4)),
                    ..Default::default()
                });
                println!("dev: enqueued demo job {} ({}) tagged [{pool}] in the simulator", j.id, j.name);
                enqueued += 1;
                next_job = Instant::now() + Duration::from_secs(4);
            }
        for ag in cli_json(&data, &config, &["agents", "list"]) {
            let (id, st) = (ag["id"].as_str().unwrap_or("").to_string(), ag["state"].as_str().unwrap_or("").to_string());
            if seen_agents.get(&id) != Some(&st) {
                println!("dev: agent {} ({}, {}) is {st}", &id[..8.min(id.len())], ag["hostname"].as_str().unwrap_or("?"), ag["arch"].as_str().unwrap_or("?"));
                seen_agents.insert(id, st);
            }
        }
        for r in cli_json(&data, &config, &["runners", "list"]) {
            let (id, st) = (r["id"].as_str().unwrap_or("").to_string(), r["state"].as_str().unwrap_or("").to_string());
            if seen_runners.get(&id) != Some(&st) {
                let extra = r["job_id"].as_u64().map(|j| format!(" job {j}")).unwrap_or_default();
                println!("dev: runner {} (pool {}) is {st}{extra}", &id[..8.min(id.len())], r["pool"].as_str().unwrap_or("?"));
                seen_runners.insert(id, st);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    println!("dev: stopping");
    drop(agent);
    drop(coord);
    // The agent leaves containers running for the next agent to adopt; a dev
    // fleet is torn down for good, so remove them.
    let ids = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("label=autogit.scope={agent_id}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    if !ids.is_empty() {
        let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).stdout(Stdio::null()).status();
        println!("dev: removed {} runner container(s)", ids.len());
    }
    drop(sim);
    if let Some(reg) = registry {
        // What the agent pulled names a registry that is going away.
        let _ = remove_local_image(&reg.image("autogit-test/runner:dev"));
    }
    println!("dev: stopped; state kept in {} until the next run", base.display());
    Ok(())
}

/// Call `f` on SIGINT or SIGTERM (from a helper thread).
fn ctrlc_handler(f: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut i), Ok(mut t)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            tokio::select! { _ = i.recv() => {}, _ = t.recv() => {} }
            f();
        })
    });
    Ok(())
}
