//! `autogit-bench-runners`: how long a pending job waits for a runner
//! container. A benchmark, not a test: it measures and reports.
//!
//! ```text
//! autogit-bench-runners [--jobs 60] [--path webhook|poll|both] [--poll-interval 2s]
//!                       [--agents 1] [--concurrency 1 | --burst N] [--warmup 2]
//!                       [--compare-docker | --compare-cold]
//!                       [--job-duration 200ms] [--job-timeout 60s]
//!                       [--coordinator-log info|debug] [--agent-log info]
//!                       [--csv PATH] [--keep-logs DIR]
//! ```
//!
//! For each path it starts the in-process GitLab simulator, a real
//! `autogit-coordinator serve`, `--agents` real agents and uses the real
//! dockerd with the local test runner image (present, never pulled):
//!
//! * **webhook**: a Job Hook on every project, polling every 300 s, so only
//!   the webhook can make a runner appear in time. `T0` is the moment the
//!   simulator finished delivering the job's `pending` Job Hook (the
//!   coordinator answers before doing any work for it).
//! * **poll**: every webhook is dropped (`drop_webhooks`), the coordinator
//!   polls every `--poll-interval`. `T0` is the job's creation. The wait is
//!   bounded by the poll interval (on average half of it) plus provisioning;
//!   each batch starts after a random pause in `[0, P)` so jobs do not lock
//!   onto the poll timer's phase.
//!
//! `T1` is Docker's own `start` event for the runner's container
//! (`docker events`, nanosecond `timeNano`), a clock independent of AutoGit.
//! A job is tied to its container through the runner that took it: the
//! simulator's job → GitLab runner → its description's `runner=<uuid>` →
//! the container label `autogit.runner-id`. The coordinator's own view
//! (`runners list`: record `created_at`, agent-reported `started_at`) and
//! the simulator's timestamps give the per-stage breakdown.
//!
//! Jobs go in batches of `--concurrency`, one batch at a time: a batch is
//! enqueued, every job must succeed, every container must be removed and
//! every GitLab runner deleted (with `--stock N`: all but the pool's N
//! stocked ones, and those N there) before the next batch, so each batch
//! meets a cold, quiet fleet (no warm runners: `idle_min = 0`). The first
//! `--warmup` batches are run but left out of the statistics.
//!
//! `--burst N` is `--concurrency N` with the pool's `max_runners` raised to
//! fit: a pipeline fanning out N jobs at once. `--compare-docker` follows
//! every AutoGit batch with a baseline batch of the same size: N containers
//! of the same image and limits created and started straight through the
//! Docker Engine API at once (`direct.rs`), and reports both distributions
//! and the ratio of their p99s. `--compare-cold` serves the runner image
//! from a local registry (Debian's `docker-registry` on loopback, with the
//! registry holding its only copy) and runs each path twice: warm (the
//! image stays on the host after the first pull) and cold (removed before
//! every batch, so each batch pulls every layer), then prints both
//! pickups side by side.
//!
//! Bounded: a fixed number of jobs, a timeout on every wait. Processes are
//! SIGKILLed and this run's containers removed at the end, also on error.
//! All traffic stays on 127.0.0.1. Exit status: 0 when every job got a
//! container, 1 when some did not (the report says which), 2 when the bench
//! itself could not run.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "autogit-bench-runners",
    about = "Measure the latency from a pending job to its runner container running"
)]
struct Args {
    /// Measured jobs per path (warm-up batches come on top).
    #[arg(long, default_value_t = 60)]
    jobs: usize,
    /// Which demand path to measure.
    #[arg(long, value_enum, default_value_t = PathArg::Both)]
    path: PathArg,
    /// The coordinator's poll interval on the poll path.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Agents (each a real `autogit-agent run` on the same dockerd).
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// Jobs enqueued at once per batch.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// A burst of N jobs at once per batch (sets `--concurrency N`).
    #[arg(long, conflicts_with = "concurrency")]
    burst: Option<usize>,
    /// After every AutoGit batch, start the same number of containers
    /// directly through the Docker API at once, and compare (webhook path).
    #[arg(long)]
    compare_docker: bool,
    /// Serve the runner image from a local registry (Debian's
    /// `docker-registry` on loopback) and measure each path twice, side by
    /// side: with the image kept on the host (warm), then removed before
    /// every batch so that each batch pulls it (cold).
    #[arg(long, conflicts_with = "compare_docker")]
    compare_cold: bool,
    /// Batches run first and left out of the statistics.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// How long each job "runs" inside the test runner.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    job_duration: Duration,
    /// Upper bound for a batch to finish, and again for the fleet to drain.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    job_timeout: Duration,
    /// `AUTOGIT_LOG` for the coordinator (`debug` logs each Job Hook, which
    /// adds the "coordinator logged it" row).
    #[arg(long, default_value = "info")]
    coordinator_log: String,
    /// `AUTOGIT_LOG` for the agents. Keep `bollard` at `info` or above:
    /// bollard's debug log prints container create bodies, runner token
    /// included. The lifecycle's debug line "creating container" gives the
    /// "agent calls docker create" instants.
    #[arg(long, default_value = "info,autogit_agent::docker::lifecycle=debug")]
    agent_log: String,
    /// Also write one line per job (all timestamps) to this CSV file.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// Keep the coordinator and agent logs in this directory.
    #[arg(long)]
    keep_logs: Option<std::path::PathBuf>,
    /// Put every batch in a project GitLab did not have when the
    /// coordinator started (by default jobs go to 5 projects that exist
    /// from the start). On the poll path such a job waits for the
    /// coordinator's next project re-listing.
    #[arg(long)]
    new_projects: bool,
    /// The pool's `stock`: GitLab runners created ahead of demand, so a
    /// start skips `POST /user/runners`.
    #[arg(long, default_value_t = 0)]
    stock: u32,
    /// Make the simulator take this long for every `POST /user/runners`,
    /// as a real GitLab's Rails request does (the simulator alone answers in
    /// about a millisecond).
    #[arg(long, value_parser = humantime::parse_duration)]
    gitlab_create_latency: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PathArg {
    Webhook,
    Poll,
    Both,
}

#[path = "bench_runners/direct.rs"]
mod direct;

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(n) = args.burst {
        args.concurrency = n;
    }
    if let Err(e) = validate(&args) {
        eprintln!("autogit-bench-runners: {e}");
        return ExitCode::from(2);
    }
    let paths: &[scenario::DemandPath] = match args.path {
        PathArg::Webhook => &[scenario::DemandPath::Webhook],
        PathArg::Poll => &[scenario::DemandPath::Poll],
        PathArg::Both => &[scenario::DemandPath::Webhook, scenario::DemandPath::Poll],
    };
    let machine = report::Machine::read();
    print!("{}", machine.render());
    // `--compare-cold`: the image comes from a local registry; the registry
    // lives until the end of main.
    let registry = if args.compare_cold {
        match autogit_tests::registry::Registry::start().and_then(|r| {
            let local = autogit_tests::harness::test_runner_image();
            let image = r.push(&local, "bench/runner:cold")?;
            // The registry then holds the only copy: removing the pulled
            // tag removes the layers too, so a cold batch pulls them all.
            // (Tests build the local image again when they need it.)
            autogit_tests::registry::remove_local_image(&local)?;
            Ok((r, image))
        }) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("autogit-bench-runners: local registry: {e:#}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let variants: Vec<scenario::Variant> = match &registry {
        Some((_, image)) => vec![
            scenario::Variant::warm(image),
            scenario::Variant::cold(image),
        ],
        None => vec![scenario::Variant::local()],
    };
    let mut failures = 0;
    let mut compared = Vec::new();
    for path in paths {
        for variant in &variants {
            match scenario::run(&args, *path, variant) {
                Ok(result) => {
                    failures += result.failures.len();
                    print!("{}", report::render(&args, &result));
                    compared.push((path.name(), variant.label, report::pickup(&result)));
                    if let Some(csv) = &args.csv {
                        let file = csv.with_extension(format!("{}.csv", path.name()));
                        if let Err(e) = std::fs::write(&file, report::csv(&result)) {
                            eprintln!("autogit-bench-runners: write {}: {e}", file.display());
                        }
                    }
                }
                Err(e) => {
                    eprintln!("autogit-bench-runners: {} path: {e:#}", path.name());
                    return ExitCode::from(2);
                }
            }
        }
    }
    if let Some((_, image)) = &registry {
        print!("{}", report::render_cold_comparison(&compared));
        if let Err(e) = autogit_tests::registry::remove_local_image(image) {
            eprintln!("autogit-bench-runners: {e:#}");
        }
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Largest batch: the pool's `max_runners` follows the batch size.
const MAX_BURST: usize = 256;

fn validate(args: &Args) -> Result<(), String> {
    if args.jobs == 0 || args.agents == 0 || args.concurrency == 0 {
        return Err("--jobs, --agents and --concurrency must be at least 1".into());
    }
    if args.concurrency > MAX_BURST {
        return Err(format!("--concurrency and --burst are at most {MAX_BURST}"));
    }
    if args.compare_docker && args.path != PathArg::Webhook {
        return Err("--compare-docker needs --path webhook".into());
    }
    if args.poll_interval < Duration::from_millis(100) {
        return Err("--poll-interval must be at least 100ms (the coordinator's minimum)".into());
    }
    if args.job_timeout < Duration::from_secs(5) {
        return Err("--job-timeout must be at least 5s".into());
    }
    Ok(())
}

fn progress(msg: &str) {
    eprintln!("autogit-bench-runners: {msg}");
}

mod clock {
    //! Wall-clock instants as nanoseconds since the Unix epoch. The
    //! simulator, the coordinator and dockerd all read the same host clock.

    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    /// Nanoseconds since the epoch.
    pub type Nanos = i128;

    pub fn now() -> Nanos {
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    }

    /// Parses an RFC 3339 timestamp (GitLab's `...123Z`, the coordinator's
    /// `runners list`, tracing's log prefix).
    pub fn parse(s: &str) -> Option<Nanos> {
        OffsetDateTime::parse(s.trim(), &Rfc3339)
            .ok()
            .map(OffsetDateTime::unix_timestamp_nanos)
    }

    /// Milliseconds from `a` to `b`.
    pub fn ms(a: Nanos, b: Nanos) -> f64 {
        (b - a) as f64 / 1e6
    }
}

mod procs {
    //! Child processes this bench starts itself (the coordinator's `serve`
    //! and the agents' `run`, so that `AUTOGIT_LOG` reaches them), killed
    //! with SIGKILL when dropped.

    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    use anyhow::{Context, anyhow, bail};

    /// A child killed and reaped on drop; stderr goes to `log`.
    #[derive(Debug)]
    pub struct Killed {
        child: Child,
        pub log: PathBuf,
    }

    impl Killed {
        /// Spawns `cmd`; returns the child and its first stdout line (when
        /// `first_line` is set, within 20 s). Later stdout is drained.
        pub fn spawn(
            mut cmd: Command,
            log: &Path,
            first_line: bool,
        ) -> anyhow::Result<(Self, String)> {
            let f =
                std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(f))
                .spawn()
                .with_context(|| format!("spawn {cmd:?}"))?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            let me = Killed {
                child,
                log: log.to_path_buf(),
            };
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let _ = tx.send(line);
                let mut sink = String::new();
                while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            if !first_line {
                return Ok((me, String::new()));
            }
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .map_err(|_| anyhow!("no output within 20 s; log:\n{}", me.logs()))?;
            if line.is_empty() {
                bail!("exited before printing its address; log:\n{}", me.logs());
            }
            Ok((me, line.trim().to_string()))
        }

        pub fn logs(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }
    }

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

mod docker_events {
    //! A `docker events` stream of AutoGit's container events, read on a
    //! thread into a shared list. Docker stamps each event itself
    //! (`timeNano`), so these times do not depend on AutoGit at all.

    use std::collections::HashSet;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};

    use anyhow::{Context, anyhow};
    use serde_json::Value;

    use crate::clock::Nanos;

    /// One container event of interest.
    #[derive(Debug, Clone)]
    pub struct Event {
        /// `create`, `start`, `die`, `destroy`, ...
        pub action: String,
        pub container_id: String,
        /// The `autogit.runner-id` label.
        pub runner_id: String,
        /// The `autogit.scope` label (the agent id).
        pub scope: String,
        pub at: Nanos,
    }

    /// The running `docker events` process; killed on drop.
    pub struct Stream {
        child: Child,
        events: Arc<Mutex<Vec<Event>>>,
    }

    impl Stream {
        /// Streams container events with `autogit.managed=true` since
        /// `since` (so nothing between now and the reader being ready is
        /// lost). Events of containers whose scope is not in `scopes` are
        /// dropped: other tests may share the daemon.
        pub fn start(since: Nanos, scopes: HashSet<String>) -> anyhow::Result<Self> {
            let since = format!("{}.{:09}", since / 1_000_000_000, since % 1_000_000_000);
            let mut child = Command::new("docker")
                .args([
                    "events",
                    "--since",
                    &since,
                    "--filter",
                    "type=container",
                    "--filter",
                    "label=autogit.managed=true",
                    "--format",
                    "{{json .}}",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("spawn docker events")?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("docker events: no stdout"))?;
            let events = Arc::new(Mutex::new(Vec::new()));
            let sink = events.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(ev) = parse(&line).filter(|e| scopes.contains(&e.scope)) {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(ev);
                    }
                }
            });
            Ok(Stream { child, events })
        }

        /// Everything seen so far.
        pub fn snapshot(&self) -> Vec<Event> {
            self.events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }

        /// True when the `docker events` process is still streaming.
        pub fn alive(&mut self) -> bool {
            matches!(self.child.try_wait(), Ok(None))
        }
    }

    impl Drop for Stream {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// One line of `docker events --format '{{json .}}'`.
    pub fn parse(line: &str) -> Option<Event> {
        let v: Value = serde_json::from_str(line).ok()?;
        let attrs = &v["Actor"]["Attributes"];
        let text = |x: &Value| x.as_str().map(str::to_string);
        Some(Event {
            action: text(&v["Action"]).or_else(|| text(&v["status"]))?,
            container_id: text(&v["Actor"]["ID"]).or_else(|| text(&v["id"]))?,
            runner_id: text(&attrs["autogit.runner-id"]).unwrap_or_default(),
            scope: text(&attrs["autogit.scope"]).unwrap_or_default(),
            at: v["timeNano"].as_i64().map(i128::from)?,
        })
    }

    /// Every container this run created has been destroyed.
    pub fn all_destroyed(events: &[Event]) -> bool {
        let created: HashSet<&str> = events
            .iter()
            .filter(|e| e.action == "create")
            .map(|e| e.container_id.as_str())
            .collect();
        let destroyed: HashSet<&str> = events
            .iter()
            .filter(|e| e.action == "destroy")
            .map(|e| e.container_id.as_str())
            .collect();
        created.is_subset(&destroyed)
    }

    /// The first `action` event of the container labelled with `runner_id`.
    pub fn first(events: &[Event], runner_id: &str, action: &str) -> Option<Nanos> {
        events
            .iter()
            .filter(|e| e.runner_id == runner_id && e.action == action)
            .map(|e| e.at)
            .min()
    }

    /// Removes (`docker rm -f`) every container of these scopes.
    pub fn remove_all(scopes: &HashSet<String>) {
        for scope in scopes {
            let out = Command::new("docker")
                .args(["ps", "-a", "-q", "--no-trunc", "--filter"])
                .arg(format!("label=autogit.scope={scope}"))
                .output();
            let Ok(out) = out else { continue };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
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

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_a_start_event() {
            let line = r#"{"status":"start","id":"abc","from":"autogit-test/runner:dev","Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"autogit.managed":"true","autogit.runner-id":"r-1","autogit.scope":"agent-1"}},"scope":"local","time":1700000000,"timeNano":1700000000123456789}"#;
            let e = parse(line).expect("parsed");
            assert_eq!(e.action, "start");
            assert_eq!(e.runner_id, "r-1");
            assert_eq!(e.scope, "agent-1");
            assert_eq!(e.at, 1_700_000_000_123_456_789);
            assert!(parse("not json").is_none());
        }
    }
}

mod stats {
    //! Percentiles and the like over a list of milliseconds.

    /// Summary of one series.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Summary {
        pub n: usize,
        pub min: f64,
        pub p50: f64,
        pub p90: f64,
        pub p99: f64,
        pub max: f64,
        pub mean: f64,
    }

    /// Nearest-rank percentile (`p` in 0..=100) of sorted `v`.
    fn rank(v: &[f64], p: f64) -> f64 {
        let n = v.len();
        let k = ((p / 100.0) * n as f64).ceil() as usize;
        v[k.clamp(1, n) - 1]
    }

    /// `None` for an empty series.
    pub fn summarize(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Summary {
            n: v.len(),
            min: v[0],
            p50: rank(&v, 50.0),
            p90: rank(&v, 90.0),
            p99: rank(&v, 99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn nearest_rank_percentiles() {
            let v: Vec<f64> = (1..=100).map(f64::from).collect();
            let s = summarize(&v).expect("non-empty");
            assert_eq!(
                (s.p50, s.p90, s.p99, s.max, s.min),
                (50.0, 90.0, 99.0, 100.0, 1.0)
            );
            assert!((s.mean - 50.5).abs() < 1e-9);
            let one = summarize(&[7.0]).expect("non-empty");
            assert_eq!((one.p50, one.p99), (7.0, 7.0));
            assert!(summarize(&[]).is_none());
        }
    }
}

mod host {
    //! Host CPU utilisation from `/proc/stat`, to tell a quiet machine from
    //! one where other work competes with the bench.

    /// Busy and total jiffies of all CPUs.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct CpuTimes {
        busy: u64,
        total: u64,
    }

    pub fn cpu_times() -> CpuTimes {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return CpuTimes::default();
        };
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = f.iter().take(8).sum();
        // idle + iowait
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        CpuTimes {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// Share of all CPUs busy between two readings, in percent.
    pub fn busy_percent(a: CpuTimes, b: CpuTimes) -> f64 {
        let total = b.total.saturating_sub(a.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * b.busy.saturating_sub(a.busy) as f64 / total as f64
    }

    /// The 1, 5 and 15 minute load averages.
    pub fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }
}

mod scenario {
    //! One demand path end to end: set-up, the batches, the per-job samples.

    use std::collections::{HashMap, HashSet};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use anyhow::{Context, anyhow, bail};
    use autogit_tests::gitlab_sim::{
        AttemptOutcome, FaultSpec, NewHook, NewJob, NewUser, SimRunner,
    };
    use autogit_tests::harness::{self, Agent, Coordinator, Sim};
    use rand::Rng;
    use serde_json::Value;

    use crate::clock::{self, Nanos};
    use crate::docker_events::{self, Stream};
    use crate::procs::Killed;
    use crate::{Args, direct, host, progress};

    const SECRET: &str = "bench-hook-secret";
    const POOL: &str = "bench";
    const TAG: &str = "bench-amd64";
    /// Projects that exist from the start; batches take turns.
    const PROJECTS: u64 = 5;

    /// Which mechanism tells the coordinator about a job.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DemandPath {
        Webhook,
        Poll,
    }

    impl DemandPath {
        pub fn name(self) -> &'static str {
            match self {
                DemandPath::Webhook => "webhook",
                DemandPath::Poll => "poll",
            }
        }
    }

    /// Everything known about one job, as instants on the host clock.
    #[derive(Debug, Clone, Default)]
    pub struct Sample {
        pub job_id: u64,
        pub batch: usize,
        pub warmup: bool,
        /// The bench's clock right before `create_job`.
        pub enqueued: Nanos,
        /// The simulator's `created_at` (ms).
        pub job_created: Option<Nanos>,
        /// The `pending` Job Hook delivery attempt that got a 2xx (ms;
        /// stamped when the answer arrived).
        pub hook_delivered: Option<Nanos>,
        /// The coordinator's debug line `job hook ... status=pending` (µs;
        /// only with `--coordinator-log debug`).
        pub hook_logged: Option<Nanos>,
        /// The AutoGit runner that took the job.
        pub runner_id: Option<String>,
        /// `runners list` `created_at`: the coordinator decided to start a runner (ms).
        pub record_created: Option<Nanos>,
        /// The simulator's GitLab runner `created_at` (`POST /user/runners`, ms).
        pub gitlab_runner_created: Option<Nanos>,
        /// The agent's debug line "creating container" (µs): it calls
        /// Docker's create right after.
        pub create_called: Option<Nanos>,
        /// Docker `create` event (ns).
        pub container_created: Option<Nanos>,
        /// Docker `start` event (ns): T1.
        pub container_started: Option<Nanos>,
        /// `runners list` `started_at`: the coordinator heard "running" (ms).
        pub coordinator_started: Option<Nanos>,
        /// The simulator's job `started_at`: the runner took the job (ms).
        pub job_taken: Option<Nanos>,
    }

    impl Sample {
        /// T0 on this path.
        pub fn t0(&self, path: DemandPath) -> Option<Nanos> {
            match path {
                DemandPath::Webhook => self.hook_delivered,
                DemandPath::Poll => self.job_created.or(Some(self.enqueued)),
            }
        }
    }

    /// The outcome of one path.
    #[derive(Debug, Clone)]
    pub struct PathResult {
        pub path: DemandPath,
        /// What the variant was (empty for the local image).
        pub variant: &'static str,
        pub samples: Vec<Sample>,
        /// Jobs that did not get a running container, with why.
        pub failures: Vec<String>,
        /// GitLab runners that took no job (over-provisioning).
        pub idle_runners: usize,
        pub wall: Duration,
        pub load_before: String,
        pub load_after: String,
        pub host_busy_percent: f64,
        pub docker_version: String,
        pub poll_interval: Duration,
        /// Coordinator warnings and errors, first few.
        pub coordinator_warnings: Vec<String>,
        /// `--compare-docker`: the baseline containers, batch by batch.
        pub direct: Vec<direct::Sample>,
    }

    /// Processes and containers of one run; on drop, agents first (so they
    /// start nothing new), then this run's containers, then the coordinator.
    struct Fleet {
        agents: Vec<Killed>,
        /// The agents' state dirs (and logs); removed last.
        homes: Vec<Agent>,
        coordinator: Option<Killed>,
        scopes: HashSet<String>,
        keep_logs: Option<(std::path::PathBuf, &'static str)>,
    }

    impl Drop for Fleet {
        fn drop(&mut self) {
            if let Some((dir, path)) = &self.keep_logs {
                let _ = std::fs::create_dir_all(dir);
                if let Some(c) = &self.coordinator {
                    let _ = std::fs::copy(&c.log, dir.join(format!("{path}-coordinator.log")));
                }
                for (i, a) in self.agents.iter().enumerate() {
                    let _ = std::fs::copy(&a.log, dir.join(format!("{path}-agent-{i}.log")));
                }
            }
            self.agents.clear();
            docker_events::remove_all(&self.scopes);
            self.coordinator = None;
            self.homes.clear();
        }
    }

    /// Where the runner image comes from, and whether each batch finds it
    /// on the host.
    pub struct Variant {
        pub image: String,
        /// Removed from the host before every batch (each batch pulls it).
        pub cold: bool,
        pub label: &'static str,
    }

    impl Variant {
        /// The locally built test image (never pulled).
        pub fn local() -> Self {
            Variant {
                image: harness::test_runner_image(),
                cold: false,
                label: "",
            }
        }
        /// From the local registry, kept on the host after its first pull.
        pub fn warm(image: &str) -> Self {
            Variant {
                image: image.to_owned(),
                cold: false,
                label: "warm image",
            }
        }
        /// From the local registry, pulled by every batch.
        pub fn cold(image: &str) -> Self {
            Variant {
                image: image.to_owned(),
                cold: true,
                label: "cold image (pulled from a local registry)",
            }
        }
    }

    fn coordinator_config(sim: &Sim, path: DemandPath, args: &Args, image: &str) -> String {
        let poll = match path {
            DemandPath::Webhook => Duration::from_secs(300),
            DemandPath::Poll => args.poll_interval,
        };
        // Production agent timings (no [agents] section); the pool is the
        // test pool's, with room for every job of a batch.
        format!(
            r#"{gitlab}
[demand]
poll_interval = "{poll}"
webhook_secret = "{SECRET}"

[scheduler]
provision_timeout = "60s"

[[pools]]
name = "{POOL}"
tags = ["{TAG}"]
arch = "x86_64"
image = "{image}"
command = ["run-single", "--max-builds", "1", "--wait-timeout", "30"]
network_mode = "host"
docker_socket = false
cpu_limit = 0.1
mem_limit = "128MiB"
max_runners = {max_runners}
stock = {stock}
"#,
            max_runners = args.concurrency.max(16),
            stock = args.stock,
            gitlab = sim.gitlab_config(),
            poll = humantime::format_duration(poll),
        )
    }

    /// Starts `serve` with `AUTOGIT_LOG` set, and records its addresses in `c`.
    fn start_coordinator(c: &mut Coordinator, log_level: &str) -> anyhow::Result<Killed> {
        let mut cmd = Command::new(harness::bin("autogit-coordinator"));
        cmd.arg("--data-dir")
            .arg(&c.dir)
            .arg("--config")
            .arg(&c.config)
            .args([
                "serve",
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .env("AUTOGIT_LOG", log_level)
            .env("NO_COLOR", "1");
        let log = c.dir.with_file_name("coordinator-bench.log");
        let (proc, line) = Killed::spawn(cmd, &log, true).context("start coordinator")?;
        // "autogit-coordinator listening grpc=ADDR http=ADDR"
        let field = |k: &str| -> anyhow::Result<std::net::SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .ok_or_else(|| anyhow!("unexpected first line {line:?}"))?
                .parse()
                .map_err(|e| anyhow!("bad address in {line:?}: {e}"))
        };
        c.grpc = Some(field("grpc=")?);
        c.http = Some(field("http=")?);
        Ok(proc)
    }

    fn start_agent(c: &Coordinator, log_level: &str) -> anyhow::Result<(Agent, Killed, String)> {
        let a = Agent::new("").context("agent state dir")?;
        let id = a
            .join_ok(&c.grpc_addr(), &c.token(&[]).context("create join token")?)
            .context("join agent")?;
        let mut cmd = Command::new(harness::bin("autogit-agent"));
        cmd.arg("--state-dir")
            .arg(&a.state_dir)
            .arg("--config")
            .arg(&a.config)
            .arg("run")
            .env("AUTOGIT_LOG", log_level)
            .env(harness::HOST_NETWORK_ENV, "true")
            .env("NO_COLOR", "1");
        let log = a.config.with_file_name("agent-bench.log");
        let (proc, _) = Killed::spawn(cmd, &log, false).context("start agent")?;
        c.wait_agent_state(&id, "ready", Duration::from_secs(45))
            .with_context(|| format!("agent log:\n{}", proc.logs()))?;
        Ok((a, proc, id))
    }

    /// Polls `f` every 20 ms (in-process, cheap) until it returns `Some`.
    fn wait<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
        autogit_tests::harness::wait_for_every(Duration::from_millis(20), timeout, what, f)
    }

    fn docker_version() -> String {
        Command::new("docker")
            .args([
                "version",
                "--format",
                "{{.Server.Version}} (API {{.Server.APIVersion}})",
            ])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// A GitLab runner of the pool's stock that no runner has used yet
    /// (created ahead of demand, never contacted, no job): not over-provisioning.
    fn unused_stock(r: &SimRunner) -> bool {
        !r.deleted
            && r.jobs.is_empty()
            && r.contacted_at.is_none()
            && r.description.split_whitespace().any(|w| w == "agent=stock")
    }

    /// The AutoGit runner id in a GitLab runner's description (`runner=<uuid>`).
    fn autogit_id(r: &SimRunner) -> Option<String> {
        r.description
            .split_whitespace()
            .find_map(|w| w.strip_prefix("runner="))
            .map(str::to_string)
    }

    /// Runs one path and returns its samples.
    pub fn run(args: &Args, path: DemandPath, variant: &Variant) -> anyhow::Result<PathResult> {
        let image = variant.image.clone();
        progress(&format!(
            "{} path: image {image} present; starting",
            path.name()
        ));
        let load_before = host::loadavg();
        let sim = Sim::start().context("start GitLab simulator")?;
        // The projects the jobs go to exist before the coordinator lists
        // its member projects at start-up, as on a real instance.
        sim.handle.create_user(NewUser {
            username: "bench-dev".into(),
            admin: false,
            project_ids: (1..=PROJECTS).collect(),
        });
        let mut c = Coordinator::init("").context("init coordinator data dir")?;
        std::fs::write(&c.config, coordinator_config(&sim, path, args, &image))
            .context("write coordinator config")?;
        let mut fleet = Fleet {
            agents: Vec::new(),
            homes: Vec::new(),
            coordinator: None,
            scopes: HashSet::new(),
            keep_logs: args.keep_logs.clone().map(|d| (d, path.name())),
        };
        fleet.coordinator = Some(start_coordinator(&mut c, &args.coordinator_log)?);
        sim.handle
            .add_hook(NewHook {
                url: c.http_url("/webhooks/gitlab"),
                token: Some(SECRET.into()),
                project_id: None,
            })
            .map_err(|e| anyhow!("add hook: {e}"))?;
        if path == DemandPath::Poll {
            sim.handle.set_faults(FaultSpec {
                drop_webhooks: Some(true),
                ..Default::default()
            });
        }
        if let Some(latency) = args.gitlab_create_latency {
            sim.handle.set_faults(FaultSpec {
                latency_ms: Some(latency.as_millis() as u64),
                path_prefix: Some("/api/v4/user/runners".into()),
                ..Default::default()
            });
        }
        for _ in 0..args.agents {
            let (a, proc, id) = start_agent(&c, &args.agent_log)?;
            fleet.agents.push(proc);
            fleet.scopes.insert(id);
            fleet.homes.push(a);
        }
        // The baseline's containers carry their own scope; the fleet's drop
        // removes them with the agents' containers.
        let direct_scope = format!("bench-direct-{}", std::process::id());
        let baseline = if args.compare_docker {
            fleet.scopes.insert(direct_scope.clone());
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("tokio runtime for the Docker baseline")?;
            let docker = direct::connect()?;
            Some((rt, docker))
        } else {
            None
        };
        let mut direct_samples: Vec<direct::Sample> = Vec::new();
        let mut events = Stream::start(clock::now() - 1_000_000_000, fleet.scopes.clone())?;

        let batches = args.warmup + args.jobs.div_ceil(args.concurrency);
        let mut enqueued: Vec<(u64, usize, bool, Nanos)> = Vec::new();
        let mut failures = Vec::new();
        let cpu_start = host::cpu_times();
        let started = Instant::now();
        let mut rng = rand::rng();
        let mut measured = 0;
        for batch in 0..batches {
            let warmup = batch < args.warmup;
            // Desynchronise from the poll timer (and the reconciler's tick).
            let jitter = match path {
                DemandPath::Poll => {
                    rng.random_range(0..args.poll_interval.as_millis().max(1) as u64)
                }
                DemandPath::Webhook => rng.random_range(0..500),
            };
            std::thread::sleep(Duration::from_millis(200 + jitter));
            if variant.cold {
                autogit_tests::registry::remove_local_image(&image)
                    .with_context(|| format!("remove {image} before batch {batch}"))?;
            }
            let n = if warmup {
                args.concurrency
            } else {
                args.concurrency.min(args.jobs - measured)
            };
            let mut ids = Vec::new();
            for _ in 0..n {
                let at = clock::now();
                let job = sim.handle.create_job(NewJob {
                    project_id: if args.new_projects {
                        1000 + batch as u64
                    } else {
                        1 + batch as u64 % PROJECTS
                    },
                    tags: vec![TAG.into()],
                    duration_ms: Some(args.job_duration.as_millis() as u64),
                    ..Default::default()
                });
                ids.push(job.id);
                enqueued.push((job.id, batch, warmup, at));
            }
            if !warmup {
                measured += n;
            }
            let done = wait(args.job_timeout, "batch jobs finished", || {
                ids.iter()
                    .all(|id| {
                        sim.handle.job(*id).is_some_and(|j| {
                            matches!(j.status.as_str(), "success" | "failed" | "canceled")
                        })
                    })
                    .then_some(())
            });
            if let Err(e) = done {
                for id in &ids {
                    let status = sim.handle.job(*id).map(|j| j.status).unwrap_or_default();
                    if status != "success" {
                        failures.push(format!("job {id} (batch {batch}): {e}; status {status}"));
                    }
                }
            }
            // A cold, quiet fleet for the next batch: with `--stock`, the
            // pool's stock whole again.
            wait(
                args.job_timeout,
                "containers removed, GitLab runners deleted, the stock whole",
                || {
                    let runners = sim.handle.runners();
                    let stocked = runners.iter().filter(|r| unused_stock(r)).count();
                    (docker_events::all_destroyed(&events.snapshot())
                        && runners.iter().all(|r| r.deleted || unused_stock(r))
                        && stocked == args.stock as usize)
                        .then_some(())
                },
            )
            .with_context(|| format!("after batch {batch}"))?;
            if let Some((rt, docker)) = &baseline {
                std::thread::sleep(Duration::from_millis(200));
                let (got, errors) = direct::burst(
                    rt,
                    docker,
                    &image,
                    &direct_scope,
                    batch,
                    n,
                    args.job_duration,
                );
                failures.extend(errors.into_iter().map(|e| format!("batch {batch}: {e}")));
                wait(args.job_timeout, "baseline containers started", || {
                    let evs = events.snapshot();
                    got.iter()
                        .all(|d| docker_events::first(&evs, &d.id, "start").is_some())
                        .then_some(())
                })
                .with_context(|| format!("baseline of batch {batch}"))?;
                docker_events::remove_all(&HashSet::from([direct_scope.clone()]));
                wait(args.job_timeout, "baseline containers removed", || {
                    docker_events::all_destroyed(&events.snapshot()).then_some(())
                })
                .with_context(|| format!("baseline of batch {batch}"))?;
                direct_samples.extend(got.into_iter().map(|d| direct::Sample { warmup, ..d }));
            }
            if !events.alive() {
                bail!("docker events stopped streaming");
            }
            if batch % 10 == 9 {
                progress(&format!(
                    "{} path: {} of {batches} batches",
                    path.name(),
                    batch + 1
                ));
            }
        }
        let wall = started.elapsed();
        let host_busy_percent = host::busy_percent(cpu_start, host::cpu_times());
        let load_after = host::loadavg();

        // Collect: the coordinator's runner rows, the simulator's view, Docker's events.
        let finished = (enqueued.len() + 100).to_string();
        let list = c.cli_ok(&[
            "runners",
            "list",
            "--output",
            "json",
            "--finished",
            &finished,
        ])?;
        let rows: Vec<Value> = serde_json::from_str(&list).context("parse runners list")?;
        let rows: HashMap<String, Value> = rows
            .into_iter()
            .filter_map(|r| Some((r["id"].as_str()?.to_string(), r)))
            .collect();
        let sim_runners: HashMap<u64, SimRunner> = sim
            .handle
            .runners()
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let idle_runners = sim_runners
            .values()
            .filter(|r| r.jobs.is_empty() && !unused_stock(r))
            .count();
        let deliveries = sim.handle.deliveries();
        let evs = events.snapshot();
        let coordinator_log = fleet
            .coordinator
            .as_ref()
            .map(Killed::logs)
            .unwrap_or_default();
        let hook_lines = hook_log_times(&coordinator_log);
        let mut create_lines = HashMap::new();
        for a in &fleet.agents {
            for (runner, at) in create_log_times(&a.logs()) {
                create_lines.entry(runner).or_insert(at);
            }
        }
        let ts = |v: &Value| v.as_str().and_then(clock::parse);

        let mut samples = Vec::new();
        for (job_id, batch, warmup, at) in enqueued {
            let mut s = Sample {
                job_id,
                batch,
                warmup,
                enqueued: at,
                ..Default::default()
            };
            let job = sim.handle.job(job_id);
            s.job_created = job.as_ref().and_then(|j| clock::parse(&j.created_at));
            s.job_taken = job
                .as_ref()
                .and_then(|j| j.started_at.as_deref())
                .and_then(clock::parse);
            s.hook_delivered = deliveries
                .iter()
                .filter(|d| d.job_id == job_id && d.build_status == "pending")
                .flat_map(|d| d.attempts.iter())
                .filter(|a| matches!(a.outcome, AttemptOutcome::Delivered { .. }))
                .filter_map(|a| clock::parse(&a.at))
                .min();
            s.hook_logged = hook_lines.get(&job_id).copied();
            let gl = job
                .as_ref()
                .and_then(|j| j.runner_id)
                .and_then(|id| sim_runners.get(&id));
            s.gitlab_runner_created = gl.and_then(|r| clock::parse(&r.created_at));
            s.runner_id = gl.and_then(autogit_id);
            if let Some(rid) = &s.runner_id {
                s.create_called = create_lines.get(rid).copied();
                s.container_created = docker_events::first(&evs, rid, "create");
                s.container_started = docker_events::first(&evs, rid, "start");
                if let Some(row) = rows.get(rid) {
                    s.record_created = ts(&row["created_at"]);
                    s.coordinator_started = ts(&row["started_at"]);
                }
            }
            if s.container_started.is_none()
                && !failures
                    .iter()
                    .any(|f| f.starts_with(&format!("job {job_id} ")))
            {
                failures.push(format!(
                    "job {job_id} (batch {batch}): no container start seen for it"
                ));
            }
            samples.push(s);
        }
        for d in &mut direct_samples {
            d.created = docker_events::first(&evs, &d.id, "create");
            d.started = docker_events::first(&evs, &d.id, "start");
        }
        let coordinator_warnings = coordinator_log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .take(5)
            .map(str::to_string)
            .collect();
        drop(fleet);
        Ok(PathResult {
            variant: variant.label,
            path,
            samples,
            failures,
            idle_runners,
            wall,
            load_before,
            load_after,
            host_busy_percent,
            docker_version: docker_version(),
            poll_interval: args.poll_interval,
            coordinator_warnings,
            direct: direct_samples,
        })
    }

    /// Job id → time of the coordinator's debug line
    /// `<ts> DEBUG ...: job hook project_id=.. job_id=N status=pending ...`.
    pub fn hook_log_times(log: &str) -> HashMap<u64, Nanos> {
        let mut out = HashMap::new();
        for line in log
            .lines()
            .filter(|l| l.contains(" job hook ") && l.contains("status=pending"))
        {
            let Some(at) = line.split_whitespace().next().and_then(clock::parse) else {
                continue;
            };
            let Some(id) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("job_id="))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            out.entry(id).or_insert(at);
        }
        out
    }

    /// Runner id → time of the agent's debug line
    /// `<ts> DEBUG autogit_agent::docker::lifecycle: creating container runner=<uuid>`.
    pub fn create_log_times(log: &str) -> Vec<(String, Nanos)> {
        log.lines()
            .filter(|l| l.contains(" creating container "))
            .filter_map(|line| {
                let at = line.split_whitespace().next().and_then(clock::parse)?;
                let runner = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("runner="))?;
                Some((runner.to_string(), at))
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_create_times_from_the_agent_debug_log() {
            let log = "2025-01-01T00:00:02.250000Z DEBUG autogit_agent::docker::lifecycle: creating container runner=0b7c\n\
                       2025-01-01T00:00:02.300000Z  INFO autogit_agent::docker::supervisor: starting runner runner=0b7c\n";
            let v = create_log_times(log);
            assert_eq!(
                v,
                vec![(
                    "0b7c".to_string(),
                    clock::parse("2025-01-01T00:00:02.25Z").expect("ts")
                )]
            );
        }

        #[test]
        fn reads_hook_times_from_the_debug_log() {
            let log = "2025-01-01T00:00:01.500000Z DEBUG autogit_coordinator::demand::tracker: job hook project_id=1 job_id=7 status=pending runner_id=None\n\
                       2025-01-01T00:00:01.400000Z DEBUG autogit_coordinator::demand::tracker: job hook project_id=1 job_id=7 status=created runner_id=None\n\
                       garbage line\n";
            let m = hook_log_times(log);
            assert_eq!(m.len(), 1);
            assert_eq!(m[&7], clock::parse("2025-01-01T00:00:01.5Z").expect("ts"));
        }
    }
}

mod report {
    //! The machine, the tables and the CSV.

    use std::fmt::Write;

    use crate::Args;
    use crate::clock::{self, Nanos};
    use crate::scenario::{DemandPath, PathResult, Sample};
    use crate::stats::{Summary, summarize};

    pub use autogit_tests::machine::Machine;

    fn row(out: &mut String, label: &str, s: Option<Summary>) {
        match s {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "  {label:<44} {:>4} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
                    s.n, s.min, s.p50, s.p90, s.p99, s.max, s.mean
                );
            }
            None => {
                let _ = writeln!(out, "  {label:<44}    0        -");
            }
        }
    }

    /// `b - a` in ms for every measured sample where both exist.
    fn series(
        samples: &[Sample],
        a: impl Fn(&Sample) -> Option<Nanos>,
        b: impl Fn(&Sample) -> Option<Nanos>,
    ) -> Vec<f64> {
        samples
            .iter()
            .filter(|s| !s.warmup)
            .filter_map(|s| Some(clock::ms(a(s)?, b(s)?)))
            .collect()
    }

    /// The headline latency: T0 (webhook delivered, or job created on the
    /// poll path) to the container running.
    pub fn pickup(r: &PathResult) -> Option<Summary> {
        summarize(&series(
            &r.samples,
            |s| s.t0(r.path),
            |s| s.container_started,
        ))
    }

    /// `--compare-cold`: warm and cold pickup of each path next to each
    /// other, and what the pull costs.
    pub fn render_cold_comparison(rows: &[(&str, &str, Option<Summary>)]) -> String {
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "== warm against cold image, T0 -> container running (ms)"
        );
        let _ = writeln!(
            out,
            "  {:<8} {:<44} {:>4} {:>8} {:>8} {:>8}",
            "path", "image", "n", "p50", "p99", "max"
        );
        for (path, label, s) in rows {
            match s {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "  {path:<8} {label:<44} {:>4} {:>8.0} {:>8.0} {:>8.0}",
                        s.n, s.p50, s.p99, s.max
                    );
                }
                None => {
                    let _ = writeln!(out, "  {path:<8} {label:<44}    0        -");
                }
            }
        }
        for pair in rows.chunks(2) {
            if let [(path, _, Some(w)), (_, _, Some(c))] = pair {
                let _ = writeln!(
                    out,
                    "  {path}: a cold pull adds {:.0} ms at p50 and {:.0} ms at p99",
                    c.p50 - w.p50,
                    c.p99 - w.p99
                );
            }
        }
        out
    }

    pub fn render(args: &Args, r: &PathResult) -> String {
        let mut out = String::new();
        let p = r.path;
        let measured = r.samples.iter().filter(|s| !s.warmup).count();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "== {} path{}: {measured} measured jobs (+{} warm-up), concurrency {}, {} agent(s), job duration {:?}{}",
            p.name(),
            if r.variant.is_empty() {
                String::new()
            } else {
                format!(", {}", r.variant)
            },
            r.samples.len() - measured,
            args.concurrency,
            args.agents,
            args.job_duration,
            if p == DemandPath::Poll {
                format!(", poll interval {:?}", r.poll_interval)
            } else {
                String::new()
            }
        );
        if args.stock > 0 || args.gitlab_create_latency.is_some() {
            let _ = writeln!(
                out,
                "   pool stock {}, POST /user/runners latency {:?}",
                args.stock,
                args.gitlab_create_latency.unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "   docker {}; load avg before {} / after {}; host CPU busy {:.0}% over {:.0} s",
            r.docker_version,
            r.load_before,
            r.load_after,
            r.host_busy_percent,
            r.wall.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  {:<44} {:>4} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "latency (ms)", "n", "min", "p50", "p90", "p99", "max", "mean"
        );
        let t0 = |s: &Sample| s.t0(p);
        let headline = match p {
            DemandPath::Webhook => "webhook delivered -> container running",
            DemandPath::Poll => "job created -> container running",
        };
        row(
            &mut out,
            headline,
            summarize(&series(&r.samples, t0, |s| s.container_started)),
        );
        if p == DemandPath::Webhook {
            row(
                &mut out,
                "job created -> container running",
                summarize(&series(
                    &r.samples,
                    |s| s.job_created,
                    |s| s.container_started,
                )),
            );
        }
        row(
            &mut out,
            "T0 -> coordinator saw it running",
            summarize(&series(&r.samples, t0, |s| s.coordinator_started)),
        );
        row(
            &mut out,
            "T0 -> runner took the job",
            summarize(&series(&r.samples, t0, |s| s.job_taken)),
        );
        if !r.direct.is_empty() {
            let direct = |a: fn(&crate::direct::Sample) -> Option<Nanos>| -> Vec<f64> {
                r.direct
                    .iter()
                    .filter(|d| !d.warmup)
                    .filter_map(|d| Some(clock::ms(d.called, a(d)?)))
                    .collect()
            };
            let base = summarize(&direct(|d| d.started));
            let _ = writeln!(
                out,
                "  baseline: the same number of containers at once, straight through the Docker API:"
            );
            row(&mut out, "create call -> container running", base);
            row(
                &mut out,
                "create call -> docker create",
                summarize(&direct(|d| d.created)),
            );
            let ours = summarize(&series(&r.samples, t0, |s| s.container_started));
            if let (Some(o), Some(b)) = (ours, base) {
                let _ = writeln!(
                    out,
                    "  ratio AutoGit / baseline: p99 {:.2} (goal <= 1.25), p50 {:.2}",
                    o.p99 / b.p99,
                    o.p50 / b.p50
                );
            }
        }
        let _ = writeln!(out, "  breakdown:");
        if p == DemandPath::Webhook {
            row(
                &mut out,
                "webhook delivered -> agent calls create",
                summarize(&series(&r.samples, t0, |s| s.create_called)),
            );
            row(
                &mut out,
                "webhook delivered -> docker create",
                summarize(&series(&r.samples, t0, |s| s.container_created)),
            );
            row(
                &mut out,
                "job created -> webhook delivered",
                summarize(&series(&r.samples, |s| s.job_created, |s| s.hook_delivered)),
            );
            row(
                &mut out,
                "webhook delivered -> coordinator logged it",
                summarize(&series(&r.samples, |s| s.hook_delivered, |s| s.hook_logged)),
            );
        }
        row(
            &mut out,
            "T0 -> runner record created (plan)",
            summarize(&series(&r.samples, t0, |s| s.record_created)),
        );
        row(
            &mut out,
            "record -> GitLab runner created",
            summarize(&series(
                &r.samples,
                |s| s.record_created,
                |s| s.gitlab_runner_created,
            )),
        );
        row(
            &mut out,
            "GitLab runner -> docker create",
            summarize(&series(
                &r.samples,
                |s| s.gitlab_runner_created,
                |s| s.container_created,
            )),
        );
        row(
            &mut out,
            "agent calls create -> docker create",
            summarize(&series(
                &r.samples,
                |s| s.create_called,
                |s| s.container_created,
            )),
        );
        row(
            &mut out,
            "docker create -> docker start",
            summarize(&series(
                &r.samples,
                |s| s.container_created,
                |s| s.container_started,
            )),
        );
        row(
            &mut out,
            "docker start -> coordinator started_at",
            summarize(&series(
                &r.samples,
                |s| s.container_started,
                |s| s.coordinator_started,
            )),
        );
        row(
            &mut out,
            "docker start -> runner took the job",
            summarize(&series(
                &r.samples,
                |s| s.container_started,
                |s| s.job_taken,
            )),
        );
        let warm: Vec<String> = r
            .samples
            .iter()
            .filter(|s| s.warmup)
            .filter_map(|s| Some(format!("{:.0}", clock::ms(s.t0(p)?, s.container_started?))))
            .collect();
        let _ = writeln!(
            out,
            "  warm-up jobs (ms, not in the table): [{}]",
            warm.join(", ")
        );
        if p == DemandPath::Poll {
            let _ = writeln!(
                out,
                "  note: polling bounds the wait; expected mean ~ P/2 = {:.0} ms plus provisioning{}",
                r.poll_interval.as_secs_f64() * 500.0,
                if args.new_projects {
                    " for known projects; these jobs were in new projects, found at the next project re-listing"
                } else {
                    ""
                }
            );
        }
        let no_started_at = r
            .samples
            .iter()
            .filter(|s| {
                !s.warmup
                    && s.record_created.is_some()
                    && s.container_started.is_some()
                    && s.coordinator_started.is_none()
            })
            .count();
        if no_started_at > 0 {
            let _ = writeln!(
                out,
                "  runners without a coordinator started_at: {no_started_at} (the runner took its job before the agent's running report arrived)"
            );
        }
        let _ = writeln!(out, "  GitLab runners that took no job: {}", r.idle_runners);
        for f in &r.failures {
            let _ = writeln!(out, "  FAILED: {f}");
        }
        for w in &r.coordinator_warnings {
            let _ = writeln!(out, "  coordinator: {w}");
        }
        out
    }

    /// One line per job; instants in ns since the epoch (empty when unknown).
    pub fn csv(r: &PathResult) -> String {
        let mut out = String::from(
            "path,job_id,batch,warmup,enqueued,job_created,hook_delivered,hook_logged,record_created,gitlab_runner_created,create_called,container_created,container_started,coordinator_started,job_taken,runner_id\n",
        );
        let f = |v: Option<Nanos>| v.map(|x| x.to_string()).unwrap_or_default();
        for s in &r.samples {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                r.path.name(),
                s.job_id,
                s.batch,
                s.warmup,
                s.enqueued,
                f(s.job_created),
                f(s.hook_delivered),
                f(s.hook_logged),
                f(s.record_created),
                f(s.gitlab_runner_created),
                f(s.create_called),
                f(s.container_created),
                f(s.container_started),
                f(s.coordinator_started),
                f(s.job_taken),
                s.runner_id.as_deref().unwrap_or("")
            );
        }
        for d in &r.direct {
            let _ = writeln!(
                out,
                "direct,,{},{},{},,,,,,,{},{},,,{}",
                d.batch,
                d.warmup,
                d.called,
                f(d.created),
                f(d.started),
                d.id
            );
        }
        out
    }
}
