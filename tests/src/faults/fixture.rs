//! One fault-suite scenario's world: the GitLab simulator, a coordinator, its
//! agents, and the four counters read from all of them once things settle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::gitlab_sim::{NewHook, NewJob, SimJob, SimRunner};
use crate::harness::{Agent, Coordinator, Sim, docker_containers, test_pool, wait_for};

/// Whether a GitLab runner's description marks it as created for a stock.
fn is_stock(description: &str) -> bool {
    description.split_whitespace().any(|w| w == "agent=stock")
}

/// The webhook secret every scenario uses.
pub const SECRET: &str = "fault-suite-secret";

/// The four numbers every row reports; all must be zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Runner containers (ours, or the docker executor's for our runners) left
    /// on the host with no active runner record wanting them.
    pub orphan_containers: u32,
    /// GitLab runners created by this coordinator and never deleted although
    /// no active runner record holds them.
    pub orphan_gitlab_runners: u32,
    /// Jobs handed to more than one runner, or claimed by more than one record.
    pub double_served: u32,
    /// Jobs that never finished although capacity was there, GitLab runners
    /// the coordinator created with no record of them, and records stuck in an
    /// active state after everything settled.
    pub lost_records: u32,
}

impl Counters {
    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.orphan_containers,
            self.orphan_gitlab_runners,
            self.double_served,
            self.lost_records
        )
    }
}

/// Coordinator, simulator, agents and an admin API token.
pub struct Fixture {
    pub sim: Sim,
    pub c: Coordinator,
    pub agents: Vec<(Agent, String)>,
    pub admin_token: String,
    /// Jobs this scenario created and expects to finish.
    pub jobs: Vec<u64>,
    /// The pool's `stock`: GitLab runners the live coordinator may hold
    /// unrecorded, created ahead of demand (see [`Fixture::in_stock`]).
    pub stock: u32,
}

/// Settings of a scenario's coordinator.
pub struct Setup<'a> {
    /// Extra `[[pools]]` keys for the one `amd64` pool.
    pub pool_extra: &'a str,
    /// `[demand] poll_interval`.
    pub poll: &'a str,
    /// Extra top-level coordinator config appended last.
    pub extra: &'a str,
    /// Register the simulator's Job Hook.
    pub webhook: bool,
    /// The runner's `--wait-timeout` in seconds (how long an idle runner waits for a job).
    pub wait_timeout: u32,
    /// The pool's `stock` (GitLab runners created ahead of demand).
    pub stock: u32,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            pool_extra: "",
            poll: "2s",
            extra: "",
            webhook: true,
            wait_timeout: 60,
            stock: 0,
        }
    }
}

impl Fixture {
    /// Start the simulator and a coordinator with one `amd64` pool.
    pub fn start(s: Setup<'_>) -> anyhow::Result<Self> {
        let sim = Sim::start()?;
        let pool = test_pool(
            "amd64",
            &["amd64"],
            "x86_64",
            &format!("{}\nstock = {}\n", s.pool_extra, s.stock),
        );
        if !pool.contains(r#""--wait-timeout", "60""#) {
            bail!("the test pool's command no longer has --wait-timeout 60: update Setup::wait_timeout");
        }
        let cfg = format!(
            "{}\n[demand]\npoll_interval = \"{}\"\nwebhook_secret = \"{SECRET}\"\n[scheduler]\ngc_interval = \"2s\"\nprovision_timeout = \"60s\"\n{}\n{}",
            sim.gitlab_config(),
            s.poll,
            pool.replace(
                r#""--wait-timeout", "60""#,
                &format!(r#""--wait-timeout", "{}""#, s.wait_timeout)
            ),
            s.extra,
        );
        let mut c = Coordinator::init(&cfg)?;
        c.env.push(("AUTOGIT_LOG".into(), "debug".into()));
        let admin_token = c
            .cli_ok(&["admin-token", "create", "--name", "fault-suite"])?
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        c.start()?;
        if s.webhook {
            sim.handle
                .add_hook(NewHook {
                    url: c.http_url("/webhooks/gitlab"),
                    token: Some(SECRET.into()),
                    project_id: None,
                })
                .map_err(anyhow::Error::msg)?;
        }
        Ok(Fixture {
            sim,
            c,
            agents: Vec::new(),
            admin_token,
            jobs: Vec::new(),
            stock: s.stock,
        })
    }

    /// Enroll and start an agent against `coordinator` (default: the
    /// coordinator's own gRPC address); waits until it is ready.
    pub fn add_agent(&mut self, coordinator: Option<&str>, extra: &str) -> anyhow::Result<usize> {
        self.add_agent_wrapped(coordinator, extra, None)
    }

    /// [`Fixture::add_agent`], with every agent command run through `wrapper`
    /// (e.g. a script that execs `faketime -f +25h "$@"`).
    pub fn add_agent_wrapped(
        &mut self,
        coordinator: Option<&str>,
        extra: &str,
        wrapper: Option<std::path::PathBuf>,
    ) -> anyhow::Result<usize> {
        let mut a = Agent::new(extra)?;
        if let Some(w) = wrapper {
            a.runner = Some((w, crate::harness::bin("autogit-agent")));
        }
        a.env.push(("AUTOGIT_LOG".into(), "debug".into()));
        let addr = coordinator
            .map(str::to_string)
            .unwrap_or_else(|| self.c.grpc_addr());
        let id = a.join_ok(&addr, &self.c.token(&[])?)?;
        a.start()?;
        self.c.wait_agent_state(&id, "ready", Duration::from_secs(30))?;
        self.agents.push((a, id));
        Ok(self.agents.len() - 1)
    }

    /// A job for the `amd64` pool running `ms` milliseconds.
    pub fn job(&mut self, project_id: u64, ms: u64) -> SimJob {
        let j = self.sim.handle.create_job(NewJob {
            project_id,
            tags: vec!["amd64".into()],
            duration_ms: Some(ms),
            ..Default::default()
        });
        self.jobs.push(j.id);
        j
    }

    pub fn job_status(&self, id: u64) -> String {
        self.sim
            .handle
            .job(id)
            .map(|j| j.status)
            .unwrap_or_default()
    }

    /// Wait until job `id` has `status`.
    pub fn wait_job(&self, id: u64, status: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_for(timeout, &format!("job {id} {status}"), || {
            (self.job_status(id) == status).then_some(())
        })
        .with_context(|| format!("coordinator log tail:\n{}", tail(&self.c.logs(), 40)))
    }

    /// `runners list --output json` with every finished runner.
    pub fn runners(&self) -> Vec<Value> {
        self.c
            .cli_ok(&["runners", "list", "--output", "json", "--finished", "100000"])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    /// Our runner containers on the host, for every agent of this fixture.
    pub fn containers(&self) -> Vec<String> {
        self.agents
            .iter()
            .flat_map(|(_, id)| docker_containers(&format!("autogit.scope={id}")))
            .collect()
    }

    /// Containers and volumes the docker executor made for our runners
    /// (labelled with a short token of one of this simulator's runners).
    pub fn executor_leftovers(&self) -> u32 {
        let shorts: BTreeSet<String> =
            self.sim.handle.runner_short_tokens().into_iter().collect();
        let mut n = 0;
        for kind in [&["ps", "-a", "-q"][..], &["volume", "ls", "-q"][..]] {
            for s in &shorts {
                let out = std::process::Command::new("docker")
                    .args(kind)
                    .args([
                        "--filter",
                        &format!("label=com.gitlab.gitlab-runner.runner.id={s}"),
                    ])
                    .output();
                if let Ok(o) = out {
                    n += String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .count() as u32;
                }
            }
        }
        n
    }

    /// An admin API call; returns (status, body).
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = self.c.http_url(path);
        let auth = format!("Bearer {}", self.admin_token);
        let res = match method {
            "POST" => ureq::post(&url)
                .header("Authorization", &auth)
                .send_json(body.unwrap_or(Value::Object(Default::default()))),
            _ => ureq::get(&url).header("Authorization", &auth).call(),
        };
        match res {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_json().unwrap_or(Value::Null),
            ),
            Err(ureq::Error::StatusCode(s)) => (s, Value::Null),
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    /// Wait (bounded) until the world is quiet: every job of the scenario
    /// finished, no active runner record, no runner container, every GitLab
    /// runner deleted. Then count what is wrong. A world that does not
    /// settle within `timeout` is counted as it stands.
    pub fn settle_and_count(&self, timeout: Duration) -> Counters {
        let quiet = || {
            let jobs_done = self
                .jobs
                .iter()
                .all(|j| ["success", "failed", "canceled"].contains(&self.job_status(*j).as_str()));
            let records = self.runners();
            let active = records.iter().any(is_active);
            jobs_done
                && !active
                && self.containers().is_empty()
                && self.executor_leftovers() == 0
                && {
                    let gl = self.sim.handle.runners();
                    let stock = self.in_stock(&records, &gl);
                    gl.iter().all(|r| r.deleted || stock.contains(&r.id))
                }
        };
        let deadline = Instant::now() + timeout;
        while !quiet() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        self.count()
    }

    /// GitLab runners that are the live coordinator's stock, not leaks:
    /// undeleted, marked `agent=stock`, without a record, and at most
    /// `stock` of them (the oldest; any beyond the bound count as leaked).
    pub fn in_stock(&self, records: &[Value], gl: &[SimRunner]) -> BTreeSet<u64> {
        let recorded: BTreeSet<u64> = records
            .iter()
            .filter_map(|r| r["gitlab_runner_id"].as_u64())
            .collect();
        gl.iter()
            .filter(|r| !r.deleted && !recorded.contains(&r.id))
            .filter(|r| is_stock(&r.description))
            .map(|r| r.id)
            .take(self.stock as usize)
            .collect()
    }

    /// The four counters as things stand now.
    pub fn count(&self) -> Counters {
        let records = self.runners();
        let active_records = records.iter().filter(|r| is_active(r)).count() as u32;
        let containers = self.containers().len() as u32;
        let gl = self.sim.handle.runners();
        let stock = self.in_stock(&records, &gl);
        let recorded: BTreeSet<u64> = records
            .iter()
            .filter_map(|r| r["gitlab_runner_id"].as_u64())
            .collect();
        let held: BTreeSet<u64> = records
            .iter()
            .filter(|r| is_active(r))
            .filter_map(|r| r["gitlab_runner_id"].as_u64())
            .collect();
        let orphan_gitlab = gl
            .iter()
            .filter(|r| !r.deleted && !held.contains(&r.id) && !stock.contains(&r.id))
            .count() as u32;
        // A GitLab runner we created is known to the coordinator by its id, or
        // (when the coordinator died before learning the id) by the runner
        // uuid in its description.
        let ids: BTreeSet<String> = records
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect();
        let unrecorded = gl
            .iter()
            .filter(|r| {
                // A stocked runner deleted unused never needed a record.
                let unused_stock = r.deleted && is_stock(&r.description);
                !recorded.contains(&r.id)
                    && !stock.contains(&r.id)
                    && !unused_stock
                    && !ids.iter().any(|id| r.description.contains(id.as_str()))
            })
            .count() as u32;
        let mut claims: BTreeMap<u64, u32> = BTreeMap::new();
        for r in &records {
            if let Some(j) = r["job_id"].as_u64() {
                *claims.entry(j).or_default() += 1;
            }
        }
        let jobs = self.sim.handle.jobs();
        let double = jobs
            .iter()
            .filter(|j| self.jobs.contains(&j.id))
            .filter(|j| j.assignment_count > 1 || claims.get(&j.id).copied().unwrap_or(0) > 1)
            .count() as u32;
        let unfinished = self
            .jobs
            .iter()
            .filter(|j| !["success", "failed", "canceled"].contains(&self.job_status(**j).as_str()))
            .count() as u32;
        Counters {
            orphan_containers: containers + self.executor_leftovers(),
            orphan_gitlab_runners: orphan_gitlab,
            double_served: double,
            lost_records: unfinished + unrecorded + active_records,
        }
    }

    /// Kill the coordinator with SIGKILL and start it again on the same ports.
    pub fn restart_coordinator(&mut self, down_for: Duration) -> anyhow::Result<()> {
        self.c.kill();
        std::thread::sleep(down_for);
        self.c.start()
    }

    /// Everything a failing row needs to be understood.
    pub fn diagnostics(&self) -> String {
        format!(
            "runners: {:#}\nGitLab runners: {:?}\ncoordinator log tail:\n{}",
            Value::Array(self.runners()),
            self.sim
                .handle
                .runners()
                .iter()
                .map(|r| (r.id, r.deleted))
                .collect::<Vec<_>>(),
            tail(&self.c.logs(), 60)
        )
    }
}

fn is_active(r: &Value) -> bool {
    ["provisioning", "starting", "idle", "busy", "stopping"].contains(&r["state"].as_str().unwrap_or(""))
}

/// The short token(s) gitlab-runner labels its containers with: from 18.2
/// `glrt-` and any `tN_` prefix dropped, then 9 characters; up to 18.1
/// characters 5..14 of the token.
pub fn short_tokens(token: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(rest) = token.strip_prefix("glrt-") {
        let rest = ["t1_", "t2_", "t3_"]
            .iter()
            .find_map(|p| rest.strip_prefix(p))
            .unwrap_or(rest);
        out.push(rest.chars().take(9).collect());
    }
    if token.len() >= 14 {
        out.push(token.chars().skip(5).take(9).collect());
    }
    out.sort();
    out.dedup();
    out
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fail unless `cond` within `timeout`.
pub fn expect(cond: bool, what: &str) -> anyhow::Result<()> {
    if !cond {
        bail!("{what}");
    }
    Ok(())
}
