//! `autogit-bench-fleet`: how much CPU and memory one coordinator needs for a
//! fleet of N agents. A benchmark, not a test: it measures and reports.
//!
//! ```text
//! autogit-bench-fleet --agents N [--heartbeat 5s] [--duration 60s]
//!                     [--connect-concurrency 50] [--enroll-concurrency 50]
//!                     [--phase-timeout 300s] [--idle-window 10s]
//! ```
//!
//! 1. Starts a real `autogit-coordinator serve` on 127.0.0.1 (through the
//!    test harness) with `[agents] heartbeat_interval` = `--heartbeat` and
//!    the default persistence interval, and creates one join token with
//!    `--uses N`.
//! 2. Enrolls N agents in this process, each with its own key, CSR and
//!    certificate (at most `--enroll-concurrency` at a time), over the same
//!    pinned-CA TLS the real agent uses.
//! 3. Opens N sessions, each on its own TLS connection with its own client
//!    certificate (at most `--connect-concurrency` handshakes at a time):
//!    `Hello`, wait for `Welcome`, then one heartbeat per interval, each agent
//!    at its own random phase.
//! 4. After one heartbeat interval of warm-up, measures the coordinator
//!    process for `--duration`: CPU time (utime + stime from
//!    `/proc/<pid>/stat`) as % of one core, and RSS (`VmRSS`, peak `VmHWM`
//!    from `/proc/<pid>/status`). The idle coordinator (`--idle-window`,
//!    before any agent), enrollment and session set-up are measured too, as
//!    their own phases.
//! 5. Closes every session, kills the coordinator and prints one table.
//!
//! Everything is bounded (`--phase-timeout` caps enrollment and set-up) and
//! every connection goes to 127.0.0.1. The bench raises its own
//! `RLIMIT_NOFILE` soft limit to the hard limit before it starts the
//! coordinator, which inherits it. Exit status: 0 when every agent enrolled,
//! connected and kept its session; 1 when any failed (the table says which);
//! 2 when the bench itself could not run.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use autogit_certs::JoinToken;
use autogit_tests::harness::Coordinator;
use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "autogit-bench-fleet",
    about = "Measure one coordinator's CPU and RSS under N simulated agents"
)]
struct Args {
    /// Number of simulated agents.
    #[arg(long)]
    agents: usize,
    /// Heartbeat interval (also written to the coordinator's config).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Length of the steady-state measurement window.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// TLS handshakes + Hello/Welcome in flight at once.
    #[arg(long, default_value_t = 50)]
    connect_concurrency: usize,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 50)]
    enroll_concurrency: usize,
    /// Upper bound for the enrollment phase and for the session set-up phase.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    phase_timeout: Duration,
    /// Measure the coordinator with no agents for this long first (0 skips it).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_window: Duration,
    /// The coordinator's state store: a SQLite file in its data dir, or a
    /// private PostgreSQL cluster (`tests/src/postgres.rs`) whose CPU is
    /// measured too.
    #[arg(long, value_enum, default_value = "sqlite")]
    database: Store,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Store {
    Sqlite,
    Postgres,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            print!("{}", report.render());
            if report.failures() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("autogit-bench-fleet: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn progress(msg: &str) {
    eprintln!("autogit-bench-fleet: {msg}");
}

/// The coordinator config for this run: production timings except the
/// heartbeat, which follows `--heartbeat`; persistence stays at its default.
fn coordinator_config(heartbeat: Duration, agents: usize) -> String {
    let unreachable = heartbeat.saturating_mul(4).max(Duration::from_secs(20));
    let lost = unreachable.saturating_mul(2).max(Duration::from_secs(600));
    // Every simulated agent enrolls and connects from this one address: lift
    // the per-IP enrollment rate limit and the connection cap accordingly.
    let per_ip = agents.clamp(1, 1_000_000);
    let connections = agents.saturating_mul(2).clamp(16_384, 1_000_000);
    format!(
        "[agents]\nheartbeat_interval = \"{}\"\nunreachable_after = \"{}\"\nlost_after = \"{}\"\n\
         [limits]\nenroll_per_ip_burst = {per_ip}\nenroll_per_ip_per_minute = 1000000\n\
         grpc_max_connections = {connections}\n",
        humantime::format_duration(heartbeat),
        humantime::format_duration(unreachable),
        humantime::format_duration(lost)
    )
}

fn run(args: &Args) -> anyhow::Result<report::Report> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.heartbeat < Duration::from_millis(100) {
        bail!("--heartbeat must be at least 100ms (the coordinator's minimum)");
    }
    if args.connect_concurrency == 0 || args.enroll_concurrency == 0 {
        bail!("--connect-concurrency and --enroll-concurrency must be at least 1");
    }
    let nofile = limits::raise_nofile().context("raise RLIMIT_NOFILE")?;
    // Each side holds one socket per agent, plus files, the database and slack.
    let need = args.agents as u64 + 256;
    if nofile.0 < need {
        progress(&format!(
            "warning: RLIMIT_NOFILE is {} (hard {}); {} agents need about {need} per process. Raise it with `ulimit -n`",
            nofile.0, nofile.1, args.agents
        ));
    }
    let machine = report::Machine::read();
    let load_start = report::loadavg();

    let mut coordinator = Coordinator::init("").context("init coordinator data dir")?;
    std::fs::write(
        &coordinator.config,
        coordinator_config(args.heartbeat, args.agents),
    )
    .context("write coordinator config")?;
    let pg = match args.database {
        Store::Sqlite => None,
        Store::Postgres => {
            let pg = autogit_tests::postgres::Postgres::start()
                .context("no PostgreSQL server is installed (apt-get install postgresql)")?;
            let url = pg.create_db("autogit");
            coordinator
                .env
                .push(("AUTOGIT_DATABASE__URL".into(), url));
            Some(pg)
        }
    };
    let db_pid = match &pg {
        Some(pg) => Some(pg.server_pid().context("PostgreSQL's server pid")?),
        None => None,
    };
    coordinator.start().context("start coordinator")?;
    let pid = coordinator
        .proc
        .as_ref()
        .and_then(|p| p.pid())
        .context("coordinator has no pid")?;
    let addr = coordinator.grpc_addr();
    let coordinator_nofile =
        procfs::nofile_limit(procfs::Target::Pid(pid)).unwrap_or_else(|| "unknown".into());
    progress(&format!(
        "coordinator pid {pid} listening on {addr}, open-file limit {coordinator_nofile}"
    ));
    let uses = args.agents.to_string();
    let token = coordinator
        .token(&["--uses", &uses, "--ttl", "1h"])
        .context("create join token")?;
    let token = JoinToken::parse(&token).context("parse join token")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    let mut report = rt.block_on(bench::run(
        args,
        &coordinator,
        (pid, db_pid),
        &addr,
        Arc::new(token),
    ))?;
    report.database = match args.database {
        Store::Sqlite => "SQLite (WAL), a file in the data dir".into(),
        Store::Postgres => format!(
            "PostgreSQL, a private cluster on loopback (fsync off), server pid {}",
            db_pid.unwrap_or(0)
        ),
    };
    report.machine = machine;
    report.load_start = load_start;
    report.load_end = report::loadavg();
    report.nofile = nofile;
    report.coordinator_nofile = coordinator_nofile;
    // The sessions are closed: SIGKILL and reap the coordinator.
    coordinator.kill();
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(report)
}

mod limits {
    //! The open-file limit: one socket per simulated agent on each side.

    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    /// Raise the soft `RLIMIT_NOFILE` to the hard limit. Children (the
    /// coordinator) inherit it. Returns (soft, hard) after the change.
    pub fn raise_nofile() -> nix::Result<(u64, u64)> {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        if soft < hard {
            // An unlimited hard limit cannot be the soft one (the kernel caps
            // it at fs.nr_open); keep the old soft limit then.
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                super::progress(&format!(
                    "warning: cannot raise RLIMIT_NOFILE from {soft} to {hard}: {e}"
                ));
            }
        }
        getrlimit(Resource::RLIMIT_NOFILE)
    }
}

mod procfs {
    //! CPU time and memory of one process, from `/proc/<pid>/stat` and
    //! `/proc/<pid>/status`.

    use std::time::Duration;

    use anyhow::Context;

    /// Which process to read: a pid, or this process.
    #[derive(Debug, Clone, Copy)]
    pub enum Target {
        Pid(u32),
        SelfProcess,
    }

    impl Target {
        fn path(self, file: &str) -> String {
            match self {
                Target::Pid(p) => format!("/proc/{p}/{file}"),
                Target::SelfProcess => format!("/proc/self/{file}"),
            }
        }
    }

    /// Clock ticks per second for `/proc/<pid>/stat` times.
    pub fn clock_ticks() -> u64 {
        match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
            Ok(Some(t)) if t > 0 => t as u64,
            _ => 100,
        }
    }

    /// utime + stime of the process so far.
    pub fn cpu_time(t: Target) -> anyhow::Result<Duration> {
        let path = t.path("stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .with_context(|| format!("parse {path}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
        let field = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("parse field {} of {path}", i + 3))
        };
        let ticks = field(11)? + field(12)?;
        let hz = clock_ticks();
        Ok(Duration::from_secs(ticks / hz)
            + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
    }

    /// The utime + stime fields of `/proc/<pid>/stat` (and cutime +
    /// cstime: what its reaped children used), and its parent's pid.
    fn stat_times(pid: u32) -> Option<(u32, u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let n = |i: usize| fields.get(i).and_then(|s| s.parse::<u64>().ok());
        Some((n(1)? as u32, n(11)? + n(12)?, n(13)? + n(14)?))
    }

    /// CPU of a server and its workers: `root` (with what its exited
    /// children used) and every live child of it. PostgreSQL runs one
    /// process per connection under its postmaster.
    pub fn tree_cpu_time(root: u32) -> anyhow::Result<Duration> {
        let (_, own, reaped) = stat_times(root).with_context(|| format!("read /proc/{root}/stat"))?;
        let mut ticks = own + reaped;
        for entry in std::fs::read_dir("/proc").context("read /proc")?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((parent, t, _)) = stat_times(pid).filter(|_| pid != root)
                && parent == root
            {
                ticks += t;
            }
        }
        let hz = clock_ticks();
        Ok(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
    }

    /// Memory and resource counts at one instant.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Memory {
        /// Resident set size now, KiB.
        pub rss_kib: u64,
        /// Peak resident set size so far, KiB.
        pub hwm_kib: u64,
        pub threads: u64,
    }

    pub fn memory(t: Target) -> anyhow::Result<Memory> {
        let path = t.path("status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let mut m = Memory::default();
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let number = || {
                value
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match key {
                "VmRSS" => m.rss_kib = number(),
                "VmHWM" => m.hwm_kib = number(),
                "Threads" => m.threads = number(),
                _ => {}
            }
        }
        Ok(m)
    }

    /// The soft "Max open files" limit from `/proc/<pid>/limits`.
    pub fn nofile_limit(t: Target) -> Option<String> {
        let limits = std::fs::read_to_string(t.path("limits")).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.trim_start_matches("Max open files")
            .split_whitespace()
            .next()
            .map(str::to_string)
    }

    /// Whole-machine CPU jiffies since boot from `/proc/stat`: (busy, total).
    pub fn machine_jiffies() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return (0, 0);
        };
        // user nice system idle iowait irq softirq steal (guest is inside user).
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let total: u64 = v.iter().sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        (total.saturating_sub(idle), total)
    }

    /// Open file descriptors (sockets included).
    pub fn open_fds(t: Target) -> u64 {
        std::fs::read_dir(t.path("fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0)
    }
}

mod bench {
    //! The phases: enroll, open sessions, steady state, close.

    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use autogit_certs::JoinToken;
    use autogit_tests::harness::Coordinator;
    use rand::Rng;
    use tokio::sync::{Semaphore, watch};
    use tokio::task::JoinSet;

    use super::procfs::{self, Target};
    use super::report::{Failures, LogCounts, Phase, Report, Steady};
    use autogit_tests::fleet_sim::{self as sim, Enrolled};
    use super::{Args, progress};

    /// Bound on one enrollment (connect + RPC).
    const ENROLL_TIMEOUT: Duration = Duration::from_secs(60);
    /// Bound on one session set-up (connect + Hello + Welcome).
    const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
    /// How often RSS is sampled during the steady state.
    const SAMPLE_EVERY: Duration = Duration::from_secs(1);
    /// How many distinct failure messages the report keeps.
    const KEEP_ERRORS: usize = 5;

    /// Counters shared by all session tasks.
    #[derive(Default)]
    struct Shared {
        ready: AtomicUsize,
        open_failed: AtomicUsize,
        ended_early: AtomicUsize,
        heartbeats: AtomicU64,
        /// Heartbeats not queued because the session's send buffer was full.
        backpressured: AtomicU64,
        welcome_mismatch: AtomicUsize,
        open_latencies: Mutex<Vec<Duration>>,
        last_ready: Mutex<Duration>,
        errors: Mutex<Vec<String>>,
    }

    impl Shared {
        fn error(&self, e: String) {
            let mut errs = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            if errs.len() < KEEP_ERRORS && !errs.contains(&e) {
                errs.push(e);
            }
        }
    }

    struct Sampler {
        pid: u32,
        /// PostgreSQL's server process, when it is the store.
        db: Option<u32>,
        db_cpu: Duration,
        at: Instant,
        cpu: Duration,
        me: Duration,
        machine: (u64, u64),
    }

    impl Sampler {
        fn start((pid, db): (u32, Option<u32>)) -> anyhow::Result<Self> {
            Ok(Sampler {
                pid,
                db,
                db_cpu: match db {
                    Some(root) => procfs::tree_cpu_time(root)?,
                    None => Duration::ZERO,
                },
                at: Instant::now(),
                cpu: procfs::cpu_time(Target::Pid(pid))?,
                me: procfs::cpu_time(Target::SelfProcess)?,
                machine: procfs::machine_jiffies(),
            })
        }

        fn finish(self, name: &'static str, items: usize) -> anyhow::Result<Phase> {
            let wall = self.at.elapsed();
            let cpu = procfs::cpu_time(Target::Pid(self.pid))?.saturating_sub(self.cpu);
            let me = procfs::cpu_time(Target::SelfProcess)?.saturating_sub(self.me);
            let db_cpu = match self.db {
                Some(root) => Some(procfs::tree_cpu_time(root)?.saturating_sub(self.db_cpu)),
                None => None,
            };
            let mem = procfs::memory(Target::Pid(self.pid))?;
            let (busy, total) = procfs::machine_jiffies();
            let (busy, total) = (
                busy.saturating_sub(self.machine.0),
                total.saturating_sub(self.machine.1),
            );
            let machine_busy_pct = if total == 0 {
                0.0
            } else {
                busy as f64 / total as f64 * 100.0
            };
            Ok(Phase {
                name,
                wall,
                coordinator_cpu: cpu,
                bench_cpu: me,
                db_cpu,
                machine_busy_pct,
                items,
                rss_end_kib: mem.rss_kib,
            })
        }
    }

    /// Count agents that `agents list` (the coordinator's SQLite view) shows
    /// as ready, waiting up to `wait` for it to reach `want`.
    fn coordinator_ready(c: &Coordinator, want: usize, wait: Duration) -> Option<usize> {
        let deadline = Instant::now() + wait;
        loop {
            let n = c
                .agents()
                .ok()
                .map(|a| a.iter().filter(|a| a["state"] == "ready").count());
            if n == Some(want) || Instant::now() >= deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub async fn run(
        args: &Args,
        c: &Coordinator,
        (pid, db): (u32, Option<u32>),
        addr: &str,
        token: Arc<JoinToken>,
    ) -> anyhow::Result<Report> {
        let n = args.agents;
        // ---- idle: the coordinator's own background work, with no agents.
        progress(&format!(
            "measuring the idle coordinator for {:?}",
            args.idle_window
        ));
        let sampler = Sampler::start((pid, db))?;
        tokio::time::sleep(args.idle_window).await;
        let idle_phase = sampler.finish("idle (no agents)", 0)?;
        let idle = procfs::memory(Target::Pid(pid))?;
        // Start-up lines (e.g. "no [gitlab] configured") are not load; count what comes after.
        let log_start = c.logs().lines().count();
        let mut failures = Failures::default();

        // ---- enrollment
        progress(&format!(
            "enrolling {n} agents ({} at a time)",
            args.enroll_concurrency
        ));
        let sampler = Sampler::start((pid, db))?;
        let sem = Arc::new(Semaphore::new(args.enroll_concurrency));
        let mut set = JoinSet::new();
        let deadline = tokio::time::Instant::now() + args.phase_timeout;
        for i in 0..n {
            let Ok(permit) = tokio::time::timeout_at(deadline, sem.clone().acquire_owned()).await
            else {
                break;
            };
            let permit = permit?;
            let (addr, token) = (addr.to_string(), token.clone());
            set.spawn(async move {
                let started = Instant::now();
                let r = tokio::time::timeout(
                    ENROLL_TIMEOUT,
                    sim::enroll(&addr, &token, format!("bench-agent-{i:05}")),
                )
                .await;
                drop(permit);
                let r = r.unwrap_or_else(|_| {
                    Err(anyhow::anyhow!("enroll timed out after {ENROLL_TIMEOUT:?}"))
                });
                (r, started.elapsed())
            });
        }
        let mut enrolled: Vec<Enrolled> = Vec::with_capacity(n);
        let mut enroll_lat = Vec::with_capacity(n);
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, set.join_next()).await {
            match joined {
                Ok((Ok(a), d)) => {
                    enrolled.push(a);
                    enroll_lat.push(d);
                }
                Ok((Err(e), _)) => failures.enroll_error(format!("{e:#}")),
                Err(e) => failures.enroll_error(format!("enroll task: {e}")),
            }
        }
        set.abort_all();
        let missing = n - enrolled.len();
        if missing > failures.enroll {
            let unfinished = missing - failures.enroll;
            failures.enroll_errors.push(format!(
                "{unfinished} enrollments did not finish within --phase-timeout"
            ));
        }
        failures.enroll = missing;
        let enroll_phase = sampler.finish("enrollment", enrolled.len())?;
        progress(&format!(
            "enrolled {} of {n} in {:.1?}",
            enrolled.len(),
            enroll_phase.wall
        ));

        // ---- sessions
        progress(&format!(
            "opening {} sessions ({} at a time)",
            enrolled.len(),
            args.connect_concurrency
        ));
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let sampler = Sampler::start((pid, db))?;
        let phase_start = Instant::now();
        let sem = Arc::new(Semaphore::new(args.connect_concurrency));
        let mut sessions = JoinSet::new();
        let want = enrolled.len();
        let deadline = tokio::time::Instant::now() + args.phase_timeout;
        let mut rng = rand::rng();
        for agent in enrolled {
            let Ok(permit) = tokio::time::timeout_at(deadline, sem.clone().acquire_owned()).await
            else {
                break;
            };
            let permit = permit?;
            let phase = Duration::from_micros(
                rng.random_range(0..args.heartbeat.as_micros().max(1) as u64),
            );
            let (addr, shared, stop, heartbeat) = (
                addr.to_string(),
                shared.clone(),
                stop_rx.clone(),
                args.heartbeat,
            );
            sessions.spawn(async move {
                agent_session(
                    addr,
                    agent,
                    permit,
                    shared,
                    stop,
                    heartbeat,
                    phase,
                    phase_start,
                )
                .await;
            });
        }
        let spawned = sessions.len();
        // Wait until every session is up or has failed.
        while tokio::time::Instant::now() < deadline {
            let done =
                shared.ready.load(Ordering::Relaxed) + shared.open_failed.load(Ordering::Relaxed);
            if done >= spawned {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ready = shared.ready.load(Ordering::Relaxed);
        let open_phase = sampler.finish("sessions", ready)?;
        // Time from the first connect to the last Welcome, when all got one.
        let all_ready_after =
            (ready == want).then(|| *shared.last_ready.lock().unwrap_or_else(|p| p.into_inner()));
        progress(&format!(
            "{ready} of {want} sessions ready after {:.1?}",
            all_ready_after.unwrap_or(open_phase.wall)
        ));
        let db_ready_after_open =
            tokio::task::block_in_place(|| coordinator_ready(c, ready, Duration::from_secs(10)));

        // ---- steady state
        progress(&format!(
            "warm-up {:?}, then measuring for {:?}",
            args.heartbeat, args.duration
        ));
        tokio::time::sleep(args.heartbeat).await;
        let sampler = Sampler::start((pid, db))?;
        let hb0 = shared.heartbeats.load(Ordering::Relaxed);
        let ended0 = shared.ended_early.load(Ordering::Relaxed);
        let window_end = tokio::time::Instant::now() + args.duration;
        let (mut rss_sum, mut rss_max, mut rss_min, mut samples) = (0u64, 0u64, u64::MAX, 0u64);
        let (mut fds_max, mut threads_max) = (0u64, 0u64);
        loop {
            let m = procfs::memory(Target::Pid(pid))?;
            rss_sum += m.rss_kib;
            rss_max = rss_max.max(m.rss_kib);
            rss_min = rss_min.min(m.rss_kib);
            threads_max = threads_max.max(m.threads);
            fds_max = fds_max.max(procfs::open_fds(Target::Pid(pid)));
            samples += 1;
            let next = tokio::time::Instant::now() + SAMPLE_EVERY;
            if next > window_end {
                tokio::time::sleep_until(window_end).await;
                break;
            }
            tokio::time::sleep_until(next).await;
        }
        let window = sampler.finish("steady state", shared.ready.load(Ordering::Relaxed))?;
        let heartbeats_window = shared.heartbeats.load(Ordering::Relaxed) - hb0;
        let peak = procfs::memory(Target::Pid(pid))?;
        let db_ready_at_end =
            tokio::task::block_in_place(|| coordinator_ready(c, ready, Duration::from_secs(5)));
        let ended_in_window = shared.ended_early.load(Ordering::Relaxed) - ended0;
        let coordinator_log = LogCounts::of(&c.logs(), log_start);

        // ---- close
        progress("closing sessions");
        let _ = stop_tx.send(true);
        let close_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while let Ok(Some(_)) = tokio::time::timeout_at(close_deadline, sessions.join_next()).await
        {
        }
        sessions.abort_all();

        failures.open = shared.open_failed.load(Ordering::Relaxed) + (want - spawned);
        failures.ended_early = shared.ended_early.load(Ordering::Relaxed);
        failures.welcome_mismatch = shared.welcome_mismatch.load(Ordering::Relaxed);
        failures.session_errors = shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut open_lat = shared
            .open_latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(Report {
            agents: n,
            heartbeat: args.heartbeat,
            duration: args.duration,
            enroll_concurrency: args.enroll_concurrency,
            connect_concurrency: args.connect_concurrency,
            idle_rss_kib: idle.rss_kib,
            idle: idle_phase,
            enroll: enroll_phase,
            enroll_latency: super::report::Percentiles::of(&mut enroll_lat),
            open: open_phase,
            all_ready_after,
            open_latency: super::report::Percentiles::of(&mut open_lat),
            steady: Steady {
                phase: window,
                rss_min_kib: if samples > 0 { rss_min } else { 0 },
                rss_mean_kib: rss_sum.checked_div(samples).unwrap_or(0),
                rss_max_kib: rss_max,
                hwm_kib: peak.hwm_kib,
                threads: threads_max,
                fds: fds_max,
                heartbeats: heartbeats_window,
                ended: ended_in_window,
            },
            heartbeats_total: shared.heartbeats.load(Ordering::Relaxed),
            heartbeats_backpressured: shared.backpressured.load(Ordering::Relaxed),
            db_ready_after_open,
            db_ready_at_end,
            failures,
            machine: Default::default(),
            load_start: String::new(),
            load_end: String::new(),
            nofile: (0, 0),
            coordinator_nofile: String::new(),
            coordinator_log,
            database: String::new(),
        })
    }

    /// One agent: open its session (holding a connect permit), then
    /// heartbeat at its own phase until told to stop.
    #[allow(clippy::too_many_arguments)]
    async fn agent_session(
        addr: String,
        agent: Enrolled,
        permit: tokio::sync::OwnedSemaphorePermit,
        shared: Arc<Shared>,
        mut stop: watch::Receiver<bool>,
        heartbeat: Duration,
        phase: Duration,
        phase_start: Instant,
    ) {
        let started = Instant::now();
        let opened = tokio::time::timeout(OPEN_TIMEOUT, sim::open(&addr, &agent)).await;
        drop(permit);
        let (mut session, interval) = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                shared.error(format!("open: {e:#}"));
                shared.open_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                shared.error(format!("open: no Welcome within {OPEN_TIMEOUT:?}"));
                shared.open_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if interval != heartbeat {
            shared.welcome_mismatch.fetch_add(1, Ordering::Relaxed);
        }
        shared
            .open_latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(started.elapsed());
        {
            let mut last = shared.last_ready.lock().unwrap_or_else(|p| p.into_inner());
            *last = (*last).max(phase_start.elapsed());
        }
        shared.ready.fetch_add(1, Ordering::Relaxed);
        let mut next = tokio::time::Instant::now() + phase;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                m = session.inbound.message() => match m {
                    Ok(Some(_)) => {}
                    Ok(None) => return ended(&shared, &stop, "closed by the coordinator".into()),
                    Err(s) => return ended(&shared, &stop, format!("{:?}: {}", s.code(), s.message())),
                },
                _ = tokio::time::sleep_until(next) => {
                    next += heartbeat;
                    match session.out.try_send(sim::heartbeat()) {
                        Ok(()) => { shared.heartbeats.fetch_add(1, Ordering::Relaxed); }
                        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                            shared.backpressured.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                            return ended(&shared, &stop, "session stream closed".into());
                        }
                    }
                }
            }
        }
    }

    /// A session ended before the bench asked it to.
    fn ended(shared: &Shared, stop: &watch::Receiver<bool>, why: String) {
        if !*stop.borrow() {
            shared.error(format!("session ended early: {why}"));
            shared.ended_early.fetch_add(1, Ordering::Relaxed);
        }
    }
}

mod report {
    //! The figures, and the table printed at the end.

    use std::fmt::Write;
    use std::time::Duration;

    pub use autogit_tests::machine::Machine;

    /// The 1, 5 and 15 minute load averages.
    pub fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// Warning and error lines in the coordinator's log while under load.
    #[derive(Debug, Clone, Default)]
    pub struct LogCounts {
        pub warn: usize,
        pub error: usize,
        pub examples: Vec<String>,
    }

    impl LogCounts {
        /// Count the lines of `log` after the first `skip`.
        pub fn of(log: &str, skip: usize) -> Self {
            let mut c = LogCounts::default();
            for line in log.lines().skip(skip) {
                // "<timestamp> <LEVEL> <target>: <message>", possibly with colour codes.
                let level = line.split_whitespace().nth(1).unwrap_or("");
                let is_warn = level.contains("WARN");
                let is_error = level.contains("ERROR");
                c.warn += usize::from(is_warn);
                c.error += usize::from(is_error);
                // Session closes at the end are expected; keep other examples.
                if (is_warn || is_error)
                    && c.examples.len() < 5
                    && !line.contains("agent session closed")
                {
                    c.examples.push(line.chars().take(200).collect());
                }
            }
            c
        }
    }

    /// One measured phase.
    #[derive(Debug, Clone)]
    pub struct Phase {
        pub name: &'static str,
        pub wall: Duration,
        pub coordinator_cpu: Duration,
        pub bench_cpu: Duration,
        /// PostgreSQL's, all its processes; `None` on SQLite (in the coordinator).
        pub db_cpu: Option<Duration>,
        /// Busy share of all the machine's cores (everything running on it).
        pub machine_busy_pct: f64,
        /// Agents that completed the phase.
        pub items: usize,
        pub rss_end_kib: u64,
    }

    impl Phase {
        fn pct(cpu: Duration, wall: Duration) -> f64 {
            if wall.is_zero() {
                0.0
            } else {
                cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
            }
        }
        pub fn coordinator_pct(&self) -> f64 {
            Self::pct(self.coordinator_cpu, self.wall)
        }
        pub fn bench_pct(&self) -> f64 {
            Self::pct(self.bench_cpu, self.wall)
        }
        pub fn db_pct(&self) -> Option<f64> {
            self.db_cpu.map(|c| Self::pct(c, self.wall))
        }
    }

    /// Latency distribution of one step per agent.
    #[derive(Debug, Clone, Default)]
    pub struct Percentiles {
        pub p50: Duration,
        pub p99: Duration,
        pub max: Duration,
    }

    impl Percentiles {
        pub fn of(v: &mut [Duration]) -> Self {
            if v.is_empty() {
                return Self::default();
            }
            v.sort();
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            Percentiles {
                p50: at(0.5),
                p99: at(0.99),
                max: v[v.len() - 1],
            }
        }
    }

    #[derive(Debug, Clone, Default)]
    pub struct Failures {
        pub enroll: usize,
        pub enroll_errors: Vec<String>,
        pub open: usize,
        pub ended_early: usize,
        pub welcome_mismatch: usize,
        pub session_errors: Vec<String>,
    }

    impl Failures {
        pub fn enroll_error(&mut self, e: String) {
            self.enroll += 1;
            if self.enroll_errors.len() < 5 && !self.enroll_errors.contains(&e) {
                self.enroll_errors.push(e);
            }
        }
    }

    #[derive(Debug, Clone)]
    pub struct Steady {
        pub phase: Phase,
        pub rss_min_kib: u64,
        pub rss_mean_kib: u64,
        pub rss_max_kib: u64,
        pub hwm_kib: u64,
        pub threads: u64,
        pub fds: u64,
        pub heartbeats: u64,
        pub ended: usize,
    }

    #[derive(Debug, Clone)]
    pub struct Report {
        pub agents: usize,
        pub heartbeat: Duration,
        pub duration: Duration,
        pub enroll_concurrency: usize,
        pub connect_concurrency: usize,
        pub idle_rss_kib: u64,
        pub idle: Phase,
        pub enroll: Phase,
        pub enroll_latency: Percentiles,
        pub open: Phase,
        pub all_ready_after: Option<Duration>,
        pub open_latency: Percentiles,
        pub steady: Steady,
        pub heartbeats_total: u64,
        pub heartbeats_backpressured: u64,
        pub db_ready_after_open: Option<usize>,
        pub db_ready_at_end: Option<usize>,
        pub failures: Failures,
        pub machine: Machine,
        pub load_start: String,
        pub load_end: String,
        pub nofile: (u64, u64),
        pub coordinator_nofile: String,
        pub coordinator_log: LogCounts,
        /// The state store, in words.
        pub database: String,
    }

    fn mib(kib: u64) -> String {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    }

    fn ms(d: Duration) -> String {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    }

    fn opt(n: Option<usize>, of: usize) -> String {
        n.map(|n| format!("{n} / {of}"))
            .unwrap_or_else(|| "unavailable".into())
    }

    impl Report {
        pub fn failures(&self) -> usize {
            let f = &self.failures;
            f.enroll + f.open + f.ended_early + f.welcome_mismatch
        }

        pub fn render(&self) -> String {
            let mut s = String::new();
            let m = &self.machine;
            let _ = writeln!(
                s,
                "autogit-bench-fleet: {} agents, heartbeat {:?}, steady window {:?}",
                self.agents, self.heartbeat, self.duration
            );
            let _ = writeln!(
                s,
                "machine: {}, {} cores, {:.1} GiB RAM, kernel {}; load average {} at start, {} at end",
                m.cpu_model,
                m.cores,
                m.mem_total_kib as f64 / 1024.0 / 1024.0,
                m.kernel,
                self.load_start,
                self.load_end,
            );
            let _ = writeln!(
                s,
                "binaries: {} ({} profile); open-file limit: bench {}/{} (soft/hard), coordinator {}",
                autogit_tests::harness::bin_dir().display(),
                if cfg!(debug_assertions) {
                    "dev, unoptimized"
                } else {
                    "optimized"
                },
                self.nofile.0,
                self.nofile.1,
                self.coordinator_nofile
            );
            let _ = writeln!(s, "state store: {}", self.database);
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "| phase | agents | wall | coordinator CPU | coordinator CPU (% of one core) | PostgreSQL CPU (% of one core) | bench CPU (% of one core) | machine busy (% of all cores) | coordinator RSS at end |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            for p in [&self.idle, &self.enroll, &self.open, &self.steady.phase] {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} s | {:.2} s | {:.1} % | {} | {:.1} % | {:.1} % | {} |",
                    p.name,
                    p.items,
                    p.wall.as_secs_f64(),
                    p.coordinator_cpu.as_secs_f64(),
                    p.coordinator_pct(),
                    p.db_pct()
                        .map_or_else(|| "n/a".into(), |v| format!("{v:.1} %")),
                    p.bench_pct(),
                    p.machine_busy_pct,
                    mib(p.rss_end_kib)
                );
            }
            let _ = writeln!(s);
            let st = &self.steady;
            let expected = self.steady.phase.items as f64 * self.duration.as_secs_f64()
                / self.heartbeat.as_secs_f64();
            let rate = |n: usize, d: Duration| {
                if d.is_zero() {
                    0.0
                } else {
                    n as f64 / d.as_secs_f64()
                }
            };
            let rows: Vec<(&str, String)> = vec![
                (
                    "enrollment throughput",
                    format!(
                        "{:.1} agents/s ({} at a time)",
                        rate(self.enroll.items, self.enroll.wall),
                        self.enroll_concurrency
                    ),
                ),
                (
                    "enrollment latency",
                    format!(
                        "p50 {}, p99 {}, max {}",
                        ms(self.enroll_latency.p50),
                        ms(self.enroll_latency.p99),
                        ms(self.enroll_latency.max)
                    ),
                ),
                (
                    "time until all sessions ready",
                    match self.all_ready_after {
                        Some(d) => format!(
                            "{:.2} s ({} at a time)",
                            d.as_secs_f64(),
                            self.connect_concurrency
                        ),
                        None => format!(
                            "not all ready: {} of {} after {:.2} s",
                            self.open.items,
                            self.enroll.items,
                            self.open.wall.as_secs_f64()
                        ),
                    },
                ),
                (
                    "session set-up latency (connect → Welcome)",
                    format!(
                        "p50 {}, p99 {}, max {}",
                        ms(self.open_latency.p50),
                        ms(self.open_latency.p99),
                        ms(self.open_latency.max)
                    ),
                ),
                (
                    "coordinator CPU, steady state",
                    format!("{:.2} % of one core", st.phase.coordinator_pct()),
                ),
                (
                    "coordinator RSS idle (before enrollment)",
                    mib(self.idle_rss_kib),
                ),
                (
                    "coordinator RSS, steady state",
                    format!(
                        "min {}, mean {}, max {}",
                        mib(st.rss_min_kib),
                        mib(st.rss_mean_kib),
                        mib(st.rss_max_kib)
                    ),
                ),
                ("coordinator peak RSS (VmHWM)", mib(st.hwm_kib)),
                (
                    "coordinator threads / open fds (max)",
                    format!("{} / {}", st.threads, st.fds),
                ),
                (
                    "heartbeats sent in window",
                    format!("{} (expected ≈ {expected:.0})", st.heartbeats),
                ),
                (
                    "heartbeats sent in total",
                    format!(
                        "{} ({} not queued: send buffer full)",
                        self.heartbeats_total, self.heartbeats_backpressured
                    ),
                ),
                (
                    "ready per `agents list`, after set-up",
                    opt(self.db_ready_after_open, self.open.items),
                ),
                (
                    "ready per `agents list`, after window",
                    opt(self.db_ready_at_end, self.open.items),
                ),
                ("failed enrollments", self.failures.enroll.to_string()),
                ("failed session set-ups", self.failures.open.to_string()),
                (
                    "sessions ended early",
                    format!("{} ({} in the window)", self.failures.ended_early, st.ended),
                ),
                (
                    "Welcome with a different heartbeat interval",
                    self.failures.welcome_mismatch.to_string(),
                ),
                (
                    "coordinator log (after start-up)",
                    format!(
                        "{} WARN, {} ERROR lines",
                        self.coordinator_log.warn, self.coordinator_log.error
                    ),
                ),
            ];
            let _ = writeln!(s, "| figure | value |");
            let _ = writeln!(s, "|---|---|");
            for (k, v) in rows {
                let _ = writeln!(s, "| {k} | {v} |");
            }
            let errors: Vec<&String> = self
                .failures
                .enroll_errors
                .iter()
                .chain(&self.failures.session_errors)
                .chain(&self.coordinator_log.examples)
                .collect();
            if !errors.is_empty() {
                let _ = writeln!(s);
                let _ = writeln!(s, "first distinct failures and coordinator warnings:");
                for e in errors {
                    let _ = writeln!(s, "  {e}");
                }
            }
            s
        }
    }
}
