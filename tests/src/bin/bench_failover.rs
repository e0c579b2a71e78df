//! `autogit-bench-failover`: how long a fleet of N agents is without a
//! coordinator when the leader dies (ADR 0018). A benchmark, not a test: it
//! measures and reports.
//!
//! ```text
//! autogit-bench-failover --agents N [--lease-ttl 10s] [--heartbeat 5s]
//!                        [--connect-concurrency 50] [--phase-timeout 300s]
//! ```
//!
//! 1. Starts a private PostgreSQL cluster (`autogit_tests::postgres`) and two
//!    real coordinator replicas on it (`[cluster] lease_ttl`), sharing one
//!    data dir and so one CA. The first leads.
//! 2. Enrolls N simulated agents (`autogit_tests::fleet_sim`, the real wire
//!    protocol, each with its own key and certificate) and opens their
//!    sessions on the leader. Each agent knows both replicas and, when its
//!    session ends, tries them in turn until one welcomes it (0.5-1.5 s
//!    apart, as the real agent's backoff with jitter).
//! 3. SIGKILLs the leader and measures, from the kill: when `cluster status`
//!    names the other replica leader, when each agent's session is back, and
//!    when all are. Also the new leader's CPU and RSS over the takeover.
//!
//! Every connection goes to 127.0.0.1; every wait is bounded by
//! `--phase-timeout`. Exit status: 0 when every agent came back, 1 when any
//! did not, 2 when the bench could not run.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use autogit_certs::JoinToken;
use autogit_tests::fleet_sim::{self as sim, Enrolled};
use autogit_tests::harness::{Coordinator, wait_for};
use autogit_tests::postgres::Postgres;
use clap::Parser;
use rand::Rng;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

#[derive(Debug, Parser)]
#[command(
    name = "autogit-bench-failover",
    about = "Measure failover of two coordinator replicas under N simulated agents"
)]
struct Args {
    /// Number of simulated agents.
    #[arg(long)]
    agents: usize,
    /// The replicas' `[cluster] lease_ttl`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Heartbeat interval (also written to the coordinators' config).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Enrollments and session set-ups in flight at once (before the kill).
    #[arg(long, default_value_t = 50)]
    connect_concurrency: usize,
    /// Upper bound for each phase.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    phase_timeout: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(r) => {
            print!("{}", r.render(&args));
            if r.back == args.agents {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("autogit-bench-failover: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn progress(msg: &str) {
    eprintln!("autogit-bench-failover: {msg}");
}

struct Outcome {
    enrolled: usize,
    connected_before: usize,
    elected: Option<Duration>,
    back: usize,
    all_back: Option<Duration>,
    per_agent: Vec<Duration>,
    new_leader_cpu_pct: f64,
    new_leader_rss_kib: u64,
    machine: autogit_tests::machine::Machine,
    errors: Vec<String>,
}

fn config(args: &Args) -> String {
    let unreachable = args.heartbeat.saturating_mul(4).max(Duration::from_secs(20));
    let per_ip = args.agents.clamp(1, 1_000_000);
    let connections = args.agents.saturating_mul(2).clamp(16_384, 1_000_000);
    format!(
        "[agents]\nheartbeat_interval = \"{}\"\nunreachable_after = \"{}\"\nlost_after = \"600s\"\n\
         [cluster]\nlease_ttl = \"{}\"\n\
         [limits]\nenroll_per_ip_burst = {per_ip}\nenroll_per_ip_per_minute = 1000000\n\
         grpc_max_connections = {connections}\n",
        humantime::format_duration(args.heartbeat),
        humantime::format_duration(unreachable),
        humantime::format_duration(args.lease_ttl),
    )
}

fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// CPU time (utime + stime) of `pid`, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // Fields after the command: state is not numeric, so utime/stime are 11/12 here.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn leader_http(c: &Coordinator) -> Option<String> {
    let out = c.cli_ok(&["cluster", "status", "--output", "json"]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["replicas"]
        .as_array()?
        .iter()
        .find(|r| r["role"] == "leader")
        .and_then(|r| r["http_addr"].as_str())
        .map(str::to_string)
}

fn run(args: &Args) -> anyhow::Result<Outcome> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    raise_nofile();
    let machine = autogit_tests::machine::Machine::read();
    let pg = Postgres::start().context("PostgreSQL is not installed")?;
    let url = pg.create_db("autogit");
    let mut a = Coordinator::init("").context("init the data dir")?;
    std::fs::write(&a.config, config(args)).context("write config")?;
    a.env.push(("AUTOGIT_DATABASE__URL".into(), url));
    a.start().context("start replica a")?;
    // A replica listens before it takes the lease: a leads before b starts.
    let a_http = a.http.context("a's address")?.to_string();
    wait_for(Duration::from_secs(30), "replica a to take the lease", || {
        (leader_http(&a).as_deref() == Some(a_http.as_str())).then_some(())
    })
    .with_context(|| a.logs())?;
    let mut b = a.replica();
    b.start().context("start replica b")?;
    let b_http = b.http.context("b's address")?.to_string();
    let b_pid = b.proc.as_ref().and_then(|p| p.pid()).context("b's pid")?;
    let addrs = format!("{},{}", a.grpc_addr(), b.grpc_addr());
    let uses = args.agents.to_string();
    let token = JoinToken::parse(&a.token(&["--uses", &uses, "--ttl", "1h"])?)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        // ---- enroll (against the leader)
        progress(&format!("enrolling {} agents", args.agents));
        let sem = Arc::new(Semaphore::new(args.connect_concurrency));
        let token = Arc::new(token);
        let mut set = JoinSet::new();
        for i in 0..args.agents {
            let permit = sem.clone().acquire_owned().await?;
            let (addrs, token) = (addrs.clone(), token.clone());
            set.spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(60),
                    sim::enroll(&addrs, &token, format!("failover-agent-{i:05}")),
                )
                .await;
                drop(permit);
                r.map_err(|_| anyhow::anyhow!("enroll timed out"))?
            });
        }
        let mut enrolled: Vec<Enrolled> = Vec::with_capacity(args.agents);
        let mut errors = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(e)) => enrolled.push(e),
                Ok(Err(e)) if errors.len() < 5 => errors.push(format!("enroll: {e:#}")),
                _ => {}
            }
        }
        let n = enrolled.len();
        progress(&format!("enrolled {n}; opening sessions"));

        // ---- sessions that come back on their own
        let state = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sessions = JoinSet::new();
        for agent in enrolled {
            let (addrs, state, stop, hb) = (addrs.clone(), state.clone(), stop_rx.clone(), args.heartbeat);
            let permit = sem.clone().acquire_owned().await?;
            sessions.spawn(agent_loop(addrs, agent, state, stop, hb, Some(permit)));
        }
        let deadline = Instant::now() + args.phase_timeout;
        while state.connected.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connected_before = state.connected.load(Ordering::Relaxed);
        progress(&format!("{connected_before} of {n} sessions on the leader; waiting 2 heartbeats"));
        tokio::time::sleep(args.heartbeat * 2).await;

        // ---- the kill
        let cpu0 = cpu_time(b_pid);
        let killed = Instant::now();
        *state.killed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(killed);
        a.kill();
        progress("leader SIGKILLed");
        let mut elected = None;
        let mut all_back = None;
        while Instant::now() < killed + args.phase_timeout {
            if elected.is_none()
                && tokio::task::block_in_place(|| leader_http(&b)).as_deref() == Some(b_http.as_str())
            {
                elected = Some(killed.elapsed());
                progress(&format!("b leads after {:.1?}", killed.elapsed()));
            }
            if state.back.load(Ordering::Relaxed) >= n {
                all_back = Some(*state.last_back.lock().unwrap_or_else(|p| p.into_inner()));
                if elected.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wall = killed.elapsed();
        let cpu = cpu_time(b_pid).saturating_sub(cpu0);
        let rss = rss_kib(b_pid);
        let _ = stop_tx.send(true);
        sessions.abort_all();
        let per_agent = state.per_agent.lock().unwrap_or_else(|p| p.into_inner()).clone();
        errors.extend(state.errors.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        anyhow::Ok(Outcome {
            enrolled: n,
            connected_before,
            elected,
            back: state.back.load(Ordering::Relaxed),
            all_back,
            per_agent,
            new_leader_cpu_pct: cpu.as_secs_f64() * 100.0 / wall.as_secs_f64().max(0.001),
            new_leader_rss_kib: rss,
            machine,
            errors,
        })
    })?;
    b.kill();
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(pg);
    Ok(outcome)
}

#[derive(Default)]
struct Shared {
    connected: AtomicUsize,
    back: AtomicUsize,
    killed_at: Mutex<Option<Instant>>,
    last_back: Mutex<Duration>,
    per_agent: Mutex<Vec<Duration>>,
    errors: Mutex<Vec<String>>,
}

/// One agent: hold a session; when it ends, try again after 0.5-1.5 s,
/// until `stop`. Its first session after the kill counts as "back".
async fn agent_loop(
    addrs: String,
    agent: Enrolled,
    state: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    heartbeat: Duration,
    mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let mut counted_back = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let opened = tokio::time::timeout(Duration::from_secs(30), sim::open(&addrs, &agent)).await;
        permit.take();
        match opened {
            Ok(Ok((mut session, _))) => {
                let killed = *state.killed_at.lock().unwrap_or_else(|p| p.into_inner());
                match killed {
                    None => {
                        state.connected.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(k) if !counted_back => {
                        counted_back = true;
                        let d = k.elapsed();
                        state.per_agent.lock().unwrap_or_else(|p| p.into_inner()).push(d);
                        {
                            let mut last = state.last_back.lock().unwrap_or_else(|p| p.into_inner());
                            *last = (*last).max(d);
                        }
                        state.back.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                }
                let mut tick = tokio::time::interval(heartbeat);
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        m = session.inbound.message() => match m {
                            Ok(Some(_)) => {}
                            _ => break,
                        },
                        _ = tick.tick() => {
                            if session.out.try_send(sim::heartbeat()).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                let mut errs = state.errors.lock().unwrap_or_else(|p| p.into_inner());
                let e = format!("{e:#}");
                if errs.len() < 5 && !errs.contains(&e) && state.killed_at.lock().map(|k| k.is_none()).unwrap_or(false) {
                    errs.push(e);
                }
            }
            Err(_) => {}
        }
        let wait = Duration::from_millis(rand::rng().random_range(500..1500));
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl Outcome {
    fn render(&self, args: &Args) -> String {
        let ms = |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        let mut v = self.per_agent.clone();
        v.sort();
        let pct = |p: f64| -> Option<Duration> {
            (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * p).round() as usize])
        };
        let mut out = String::new();
        out += &format!("autogit-bench-failover: {} agents, lease_ttl {:?}, heartbeat {:?}\n", args.agents, args.lease_ttl, args.heartbeat);
        out += &format!("{}\n", self.machine.render());
        out += &format!("enrolled {} / connected before the kill {}\n", self.enrolled, self.connected_before);
        out += "| from the leader's SIGKILL to | time |\n|---|---:|\n";
        out += &format!("| the other replica leads (`cluster status`) | {} |\n", ms(self.elected));
        out += &format!("| an agent's session is back, p50 | {} |\n", ms(pct(0.5)));
        out += &format!("| an agent's session is back, p99 | {} |\n", ms(pct(0.99)));
        out += &format!("| every agent's session is back ({} of {}) | {} |\n", self.back, self.enrolled, ms(self.all_back));
        out += &format!(
            "new leader over the takeover: {:.0} % of one core, RSS {} MiB\n",
            self.new_leader_cpu_pct,
            self.new_leader_rss_kib / 1024
        );
        for e in &self.errors {
            out += &format!("error: {e}\n");
        }
        out
    }
}
