//! Real coordinator and agent processes for end-to-end tests.
//!
//! Binaries come from `AUTOGIT_BIN_DIR` or the cargo target dir next to the
//! running test (`cargo xtask test` builds them first). Every process is
//! killed with SIGKILL when its handle drops, so a failing test leaves
//! nothing running. All traffic is on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

/// Directory holding the built `autogit-*` binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AUTOGIT_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/debug/deps/<test-exe> → target/debug
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a built binary; panics with the fix when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, or run the tests with `cargo xtask test`)",
        p.display()
    );
    p
}

/// Poll `f` every 100 ms until it returns `Some`, at most `timeout`.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    wait_for_every(Duration::from_millis(100), timeout, what, f)
}

/// Poll `f` every `every` until it returns `Some`, at most `timeout`.
pub fn wait_for_every<T>(
    every: Duration,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// A child process killed (SIGKILL) on drop, with its stderr in a file.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Start `cmd` with stderr to `log`; its stdout is returned for
    /// [`read_line_timeout`]. SIGKILLed on drop.
    pub fn spawn(
        mut cmd: Command,
        log: PathBuf,
    ) -> anyhow::Result<(Self, std::process::ChildStdout)> {
        let f = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(f))
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        Ok((
            Proc {
                child: Some(child),
                log,
            },
            stdout,
        ))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send a signal (e.g. SIGTERM) without waiting.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait for exit at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        wait_for(timeout, "process exit", || self.try_exit())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Short timings so liveness tests run in seconds.
pub const FAST_COORDINATOR_CONFIG: &str = r#"
[agents]
heartbeat_interval = "300ms"
unreachable_after = "2s"
lost_after = "20s"
persist_interval = "1s"
"#;

/// A coordinator data dir plus, when running, its process.
pub struct Coordinator {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub proc: Option<Proc>,
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// Extra environment for the coordinator process (e.g. `AUTOGIT_LOG`).
    pub env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Coordinator {
    /// `init` a fresh data dir in a temp dir, with `extra_config` followed by
    /// [`FAST_COORDINATOR_CONFIG`] as its config.
    pub fn init(extra_config: &str) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("coordinator");
        let config = tmp.path().join("coordinator.toml");
        // Extra config first, so its top-level keys precede the [agents] table.
        std::fs::write(
            &config,
            format!("{extra_config}\n{FAST_COORDINATOR_CONFIG}"),
        )?;
        let c = Coordinator {
            dir,
            config,
            proc: None,
            grpc: None,
            http: None,
            env: Vec::new(),
            _tmp: Some(tmp),
        };
        c.cli_ok(&["init"])?;
        Ok(c)
    }

    /// Another replica of this coordinator: the same data dir (so the same
    /// CA), config and environment, its own process and ports.
    pub fn replica(&self) -> Coordinator {
        Coordinator {
            dir: self.dir.clone(),
            config: self.config.clone(),
            proc: None,
            grpc: None,
            http: None,
            env: self.env.clone(),
            _tmp: None,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin("autogit-coordinator"));
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(&self.config);
        cmd.env_remove("AUTOGIT_LOG").env("NO_COLOR", "1");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Run a subcommand to completion.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.command().args(args).output()?)
    }

    /// Run a subcommand that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "autogit-coordinator {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `token create` with `args`; returns the token (last stdout line).
    pub fn token(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut a = vec!["token", "create"];
        a.extend_from_slice(args);
        let out = self.cli_ok(&a)?;
        out.lines()
            .last()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("token create printed nothing"))
    }

    /// `admin-token create --name <name>` with `args` (e.g. `--role
    /// viewer`); returns the token (last stdout line).
    pub fn admin_token(&self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut a = vec!["admin-token", "create", "--name", name];
        a.extend_from_slice(args);
        let out = self.cli_ok(&a)?;
        out.lines()
            .last()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("admin-token create printed nothing"))
    }

    /// `agents list --output json`.
    pub fn agents(&self) -> anyhow::Result<Vec<Value>> {
        let out = self.cli_ok(&["agents", "list", "--output", "json"])?;
        Ok(serde_json::from_str(&out)?)
    }

    /// `runners list --output json`: every runner record, ended ones too.
    pub fn runners(&self) -> anyhow::Result<Vec<Value>> {
        let out = self.cli_ok(&["runners", "list", "--output", "json"])?;
        Ok(serde_json::from_str(&out)?)
    }

    /// The runners not over yet ([`ACTIVE_RUNNER_STATES`]).
    pub fn active_runners(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .runners()?
            .into_iter()
            .filter(|r| ACTIVE_RUNNER_STATES.contains(&r["state"].as_str().unwrap_or("")))
            .collect())
    }

    /// `token list --output json`.
    pub fn tokens(&self) -> anyhow::Result<Vec<Value>> {
        let out = self.cli_ok(&["token", "list", "--output", "json"])?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Start `serve`. The first start picks free ports; later starts reuse
    /// them so agents find the coordinator where they left it.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let grpc = self
            .grpc
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let http = self
            .http
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let mut cmd = self.command();
        cmd.args(["serve", "--grpc-listen", &grpc, "--http-listen", &http]);
        let n = std::fs::read_dir(self.dir.parent().unwrap_or(Path::new(".")))
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.dir.with_file_name(format!("coordinator-{n}.log"));
        let (proc, stdout) = Proc::spawn(cmd, log)?;
        let line = read_line_timeout(stdout, Duration::from_secs(20))
            .with_context(|| format!("coordinator start; log:\n{}", proc.logs()))?;
        // "autogit-coordinator listening grpc=ADDR http=ADDR"
        let field = |k: &str| -> anyhow::Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .ok_or_else(|| anyhow!("unexpected first line {line:?}"))?
                .parse()
                .map_err(|e| anyhow!("bad address in {line:?}: {e}"))
        };
        self.grpc = Some(field("grpc=")?);
        self.http = Some(field("http=")?);
        self.proc = Some(proc);
        Ok(())
    }

    pub fn grpc_addr(&self) -> String {
        self.grpc.map(|a| a.to_string()).unwrap_or_default()
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http.expect("coordinator started"), path)
    }

    /// SIGTERM the running coordinator and wait for it to exit: a clean stop.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut p = self
            .proc
            .take()
            .ok_or_else(|| anyhow!("the coordinator is not running"))?;
        p.signal(nix::sys::signal::Signal::SIGTERM);
        p.wait_exit(timeout)
    }

    /// SIGKILL the running coordinator.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(Proc::logs).unwrap_or_default()
    }

    /// Wait until `agents list` shows `id` in `state`.
    pub fn wait_agent_state(
        &self,
        id: &str,
        state: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        wait_for(timeout, &format!("agent {id} to be {state}"), || {
            self.agents()
                .ok()?
                .into_iter()
                .find(|a| a["id"] == id && a["state"] == state)
        })
        .with_context(|| format!("coordinator log:\n{}", self.logs()))
    }
}

/// The first line `stdout` prints, within `timeout`; the rest is drained,
/// so the process never blocks on (or dies of) a closed pipe.
pub fn read_line_timeout(
    stdout: std::process::ChildStdout,
    timeout: Duration,
) -> anyhow::Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let mut sink = String::new();
        while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let line = rx
        .recv_timeout(timeout)
        .map_err(|_| anyhow!("no output within {timeout:?}"))?;
    if line.is_empty() {
        bail!("process exited before printing its address");
    }
    Ok(line.trim().to_string())
}

/// The agent setting that lets test runners use host networking.
pub const HOST_NETWORK_ENV: &str = "AUTOGIT_POLICY__ALLOW_HOST_NETWORK";

/// The agent's `images.prepull`. Off in tests by default: the default pools
/// name Docker Hub images, and tests send nothing beyond loopback; a test
/// of warm images sets it to `true` in the agent's `env`.
pub const PREPULL_ENV: &str = "AUTOGIT_IMAGES__PREPULL";

/// Short reconnect timings for tests.
pub const FAST_AGENT_CONFIG: &str = r#"
[session]
reconnect_initial = "100ms"
reconnect_max = "1s"
connect_timeout = "3s"
"#;

/// An agent state dir plus, when running, its process.
pub struct Agent {
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub proc: Option<Proc>,
    /// Run under this emulator (e.g. qemu-aarch64-static) with this binary.
    pub runner: Option<(PathBuf, PathBuf)>,
    /// Extra environment for the agent process (e.g. `AUTOGIT_LOG`).
    pub env: Vec<(String, String)>,
    _tmp: tempfile::TempDir,
}

impl Agent {
    /// A new, not yet enrolled agent with `extra_config` appended to [`FAST_AGENT_CONFIG`].
    pub fn new(extra_config: &str) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let state_dir = tmp.path().join("state");
        let config = tmp.path().join("agent.toml");
        std::fs::write(&config, format!("{FAST_AGENT_CONFIG}\n{extra_config}"))?;
        Ok(Agent {
            state_dir,
            config,
            proc: None,
            runner: None,
            env: Vec::new(),
            _tmp: tmp,
        })
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.runner {
            Some((emu, binary)) => {
                let mut c = Command::new(emu);
                c.arg(binary);
                c
            }
            None => Command::new(bin("autogit-agent")),
        };
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--config")
            .arg(&self.config);
        cmd.env_remove("AUTOGIT_LOG").env("NO_COLOR", "1");
        // Test pools run runners with `network_mode = "host"` (tests reach
        // only loopback), which the host policy refuses by default; a test of
        // that refusal sets `AUTOGIT_POLICY__ALLOW_HOST_NETWORK=false` in `env`.
        cmd.env(HOST_NETWORK_ENV, "true");
        cmd.env(PREPULL_ENV, "false");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `join`; returns the raw output (tests check failures too).
    pub fn join(&self, coordinator: &str, token: &str) -> anyhow::Result<Output> {
        Ok(self
            .command()
            .args(["join", "--coordinator", coordinator, "--token", token])
            .output()?)
    }

    /// `join` that must succeed; returns the agent id.
    pub fn join_ok(&self, coordinator: &str, token: &str) -> anyhow::Result<String> {
        let out = self.join(coordinator, token)?;
        if !out.status.success() {
            bail!("join failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.id()
    }

    pub fn id(&self) -> anyhow::Result<String> {
        let v: Value = serde_json::from_slice(&std::fs::read(self.state_dir.join("agent.json"))?)?;
        v["agent_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("agent.json has no agent_id"))
    }

    /// The agent's current certificate, read the way the agent reads it.
    pub fn cert_pem(&self) -> anyhow::Result<String> {
        Ok(autogit_agent::state::StateDir::new(&self.state_dir)
            .load()?
            .cert_pem)
    }

    /// Start `run`.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let mut cmd = self.command();
        cmd.arg("run");
        let n = std::fs::read_dir(self._tmp.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let (proc, mut stdout) = Proc::spawn(cmd, self._tmp.path().join(format!("agent-{n}.log")))?;
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        self.proc = Some(proc);
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(Proc::logs).unwrap_or_default()
    }
}

impl Drop for Agent {
    /// Kill the agent and remove the runner containers it left (a real agent
    /// leaves them for its next process to adopt; a test has no next process).
    fn drop(&mut self) {
        self.kill();
        if let Ok(id) = self.id() {
            let ids = docker_containers(&format!("autogit.scope={id}"));
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `autogit-agent inventory` JSON for a config.
pub fn agent_inventory(config: &Path) -> anyhow::Result<Value> {
    let out = Command::new(bin("autogit-agent"))
        .arg("--config")
        .arg(config)
        .arg("inventory")
        .output()?;
    if !out.status.success() {
        bail!("inventory failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The path of a file in the agent crate's test fixtures.
pub fn agent_fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/tests/fixtures")
        .join(rel)
}

/// The GitLab simulator, in this process, on its own runtime.
pub struct Sim {
    pub handle: crate::gitlab_sim::SimHandle,
    pub url: String,
    pub admin_token: String,
    server: Option<crate::gitlab_sim::SimServer>,
    rt: tokio::runtime::Runtime,
}

impl Sim {
    pub fn start() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let admin_token = format!("glpat-{}", uuid::Uuid::new_v4().simple());
        let cfg = crate::gitlab_sim::SimConfig {
            admin_token: admin_token.clone(),
            ..Default::default()
        };
        let server = rt.block_on(crate::gitlab_sim::spawn(cfg))?;
        Ok(Sim {
            handle: server.handle().clone(),
            url: server.url(),
            admin_token,
            server: Some(server),
            rt,
        })
    }

    /// `[gitlab]` section pointing a coordinator at this simulator.
    pub fn gitlab_config(&self) -> String {
        format!(
            "[gitlab]\nurl = \"{}\"\ntoken = \"{}\"\n",
            self.url, self.admin_token
        )
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = self.rt.block_on(s.shutdown());
        }
    }
}

/// A free port on loopback address `ip`, found by binding port 0 and
/// letting it go.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("bind a port on {ip}: {e}"))
}

/// A runner record's states before it is over (`stopped`, `failed`).
pub const ACTIVE_RUNNER_STATES: [&str; 5] =
    ["provisioning", "starting", "idle", "busy", "stopping"];

/// After jobs: no runner active, no container of `agent_id` left, every
/// GitLab runner deleted, and every record that had a GitLab runner says
/// when it was deleted. Waits up to 30 s for each.
pub fn assert_nothing_left(sim: &Sim, c: &Coordinator, agent_id: &str) {
    let t = Duration::from_secs(30);
    let runners = || c.runners().unwrap_or_default();
    wait_for(t, "no active runners", || {
        c.active_runners().ok()?.is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", runners()));
    wait_for(t, "containers removed", || {
        docker_containers(&format!("autogit.scope={agent_id}"))
            .is_empty()
            .then_some(())
    })
    .unwrap();
    wait_for(t, "GitLab runners deleted", || {
        sim.handle.runners().iter().all(|r| r.deleted).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", sim.handle.runners()));
    for r in runners() {
        assert!(
            r["gitlab_deleted_at"].is_string() || r["gitlab_runner_id"].is_null(),
            "{r:#}"
        );
    }
}

/// Ids of containers on the test Docker daemon with `label` (`k=v`).
pub fn docker_containers(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label={label}"),
        ])
        .output();
    let Ok(out) = out else { return Vec::new() }; // no docker CLI: nothing to list
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// `docker inspect` of one container as JSON.
pub fn docker_inspect(id: &str) -> anyhow::Result<Value> {
    let out = Command::new("docker").args(["inspect", id]).output()?;
    if !out.status.success() {
        bail!(
            "docker inspect {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    v.into_iter()
        .next()
        .ok_or_else(|| anyhow!("docker inspect {id}: empty"))
}

/// The test runner image, built once per test process.
pub fn test_runner_image() -> String {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            crate::runner_image::ensure_test_runner_image(&bin("autogit-test-runner"))
                .expect("build test runner image")
        })
        .clone()
}

/// A `[[pools]]` entry running the test runner image with host networking.
/// The URL and runner token reach it as `CI_SERVER_URL` / `CI_SERVER_TOKEN`
/// (the coordinator refuses `{runner_token}` in a command).
pub fn test_pool(name: &str, tags: &[&str], arch: &str, extra: &str) -> String {
    test_pool_with_image(name, tags, arch, &test_runner_image(), extra)
}

/// [`test_pool`] with another image (e.g. the test runner image in a
/// local registry, see [`crate::registry`]).
pub fn test_pool_with_image(
    name: &str,
    tags: &[&str],
    arch: &str,
    image: &str,
    extra: &str,
) -> String {
    let tags = tags
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[[pools]]
name = "{name}"
tags = [{tags}]
arch = "{arch}"
image = "{image}"
command = ["run-single", "--max-builds", "1", "--wait-timeout", "60"]
network_mode = "host"
docker_socket = false
cpu_limit = 0.5
mem_limit = "256MiB"
max_runners = 4
{extra}
"#
    )
}

/// `target/dist` (built by `cargo xtask dist`), or `AUTOGIT_DIST_DIR`.
pub fn dist_dir() -> PathBuf {
    std::env::var_os("AUTOGIT_DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dist"))
}

/// An agent running the cross-built `target/dist/autogit-agent-<arch>`,
/// under `qemu-<arch>-static` when `arch` is not this machine's. `None` when
/// the binary is absent, unless `AUTOGIT_REQUIRE_DIST` is set (CI), which
/// makes that an error.
pub fn dist_agent(arch: &str, extra_config: &str) -> anyhow::Result<Option<Agent>> {
    let binary = dist_dir().join(format!("autogit-agent-{arch}"));
    if !binary.exists() {
        if std::env::var_os("AUTOGIT_REQUIRE_DIST").is_some() {
            bail!(
                "{} is missing: run `cargo xtask dist` first",
                binary.display()
            );
        }
        eprintln!(
            "SKIPPED: {} is absent; build it with `cargo xtask dist`",
            binary.display()
        );
        return Ok(None);
    }
    let mut agent = Agent::new(extra_config)?;
    if arch == std::env::consts::ARCH {
        // Run the dist binary itself (the harness runs `WRAPPER BINARY ARGS`).
        let wrapper = agent._tmp.path().join("run-native");
        std::fs::write(&wrapper, "#!/bin/sh\nexec \"$@\"\n")?;
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        agent.runner = Some((wrapper, binary));
        return Ok(Some(agent));
    }
    let qemu = format!("qemu-{arch}-static");
    // Dynamically linked (glibc) builds need the cross sysroot's loader and libc.
    let elf = std::fs::read(&binary)?;
    let dynamic = elf.windows(b"ld-linux".len()).any(|w| w == b"ld-linux");
    let sysroot = format!("/usr/{arch}-linux-gnu");
    let wrapper = agent._tmp.path().join(format!("run-{arch}"));
    let prefix = if dynamic {
        format!("{qemu} -L {sysroot}")
    } else {
        qemu
    };
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec {prefix} \"$@\"\n"))?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    agent.runner = Some((wrapper, binary));
    Ok(Some(agent))
}
