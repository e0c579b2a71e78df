//! The reconciler in-process: a real [`Fleet`] with fake agent sessions (the
//! test holds the receiving end of each session's channel), a fake GitLab
//! that counts calls, a real SQLite file in a temp dir, and tokio's paused
//! clock moved only by the test.
//!
//! A task that keeps yielding stops tokio from auto-advancing the paused
//! clock while the reconciler waits on SQLite's worker thread, so time moves
//! only in [`Harness::run_for`]. Waits for the reconciler are bounded in
//! real time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use autogit_certs::AgentId;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::fake_gitlab::FakeGitLab;
use super::{DemandSource, Reconciler, ReconcilerConfig, ReconcilerHandle};
use crate::db::{AgentRow, Db, EventFilter};
use crate::demand::{DemandSnapshot, PendingJob, RunnerActivity, Source};
use crate::fleet::command::StartRunner;
use crate::fleet::session::{AgentEvent, ContainerState, RunnerReport};
use crate::fleet::{AgentCommand, Fleet, Inventory, SessionId, Timings};
use crate::pools::LivePools;
use crate::runners::wait_objective::Tally;
use crate::runners::{Clock, Phase, RunnerRecord};
use crate::scheduler::{Arch, Pool, Strategy};

/// How long (real time) a wait for the reconciler may take.
const REAL_LIMIT: Duration = Duration::from_secs(20);
const TICK: Duration = Duration::from_millis(500);
const STOP_GRACE: Duration = Duration::from_secs(60);
const LOST_AFTER: Duration = Duration::from_secs(120);

type SessionRx = mpsc::Receiver<AgentCommand>;

struct FakeDemand {
    snapshot: watch::Receiver<Arc<DemandSnapshot>>,
    ticks: watch::Receiver<u64>,
}

impl DemandSource for FakeDemand {
    fn snapshot(&self) -> Arc<DemandSnapshot> {
        self.snapshot.borrow().clone()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.ticks.clone()
    }
}

/// Await `f`, failing the test if it takes more than [`REAL_LIMIT`] of real time.
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    let start = std::time::Instant::now();
    tokio::pin!(f);
    loop {
        tokio::select! {
            biased;
            v = &mut f => return v,
            _ = tokio::task::yield_now() => {
                assert!(start.elapsed() < REAL_LIMIT, "{what}: nothing within {REAL_LIMIT:?}");
            }
        }
    }
}

fn inventory() -> Inventory {
    Inventory {
        hostname: "build-1".into(),
        arch: "x86_64".into(),
        cpu_threads: 8,
        mem_total_bytes: 16 << 30,
        ..Default::default()
    }
}

fn agent_row(id: &AgentId) -> AgentRow {
    crate::fleet::registry::enrolled_row(id, "build-1")
}

fn report(runner: Uuid, state: ContainerState, exit_code: i32) -> RunnerReport {
    RunnerReport {
        runner_id: runner.to_string(),
        container_id: Some(format!("c-{runner}")),
        state,
        exit_code,
        reason: None,
        log_tail: Vec::new(),
        image_pull: None,
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    db: Db,
    fleet: Fleet,
    gitlab: Arc<FakeGitLab>,
    demand: watch::Sender<Arc<DemandSnapshot>>,
    demand_ticks: watch::Sender<u64>,
    events: mpsc::UnboundedSender<AgentEvent>,
    activity: mpsc::UnboundedSender<RunnerActivity>,
    handle: ReconcilerHandle,
    clock: Clock,
    /// The pools in force; a test replaces them as a reload does.
    pools: LivePools,
    agent: AgentId,
    session: Option<SessionId>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(
            vec![Pool::new("amd64", &["amd64"], Arch::X86_64)],
            Clock::following_tokio(),
        )
        .await
    }

    /// A harness with these pools, whose wall clock starts at `clock`.
    async fn start_with(pools: Vec<Pool>, clock: Clock) -> Harness {
        // Keep the runtime busy so the paused clock never auto-advances.
        tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).await.unwrap();
        let agent = AgentId::new_random();
        let fleet = Fleet::new(
            &[agent_row(&agent)],
            &[],
            Timings {
                heartbeat_interval: Duration::from_secs(1),
                unreachable_after: Duration::from_secs(10),
                lost_after: LOST_AFTER,
            },
        );
        let gitlab = Arc::new(FakeGitLab::default());
        let (demand, _) = watch::channel(Arc::new(DemandSnapshot::default()));
        let (demand_ticks, _) = watch::channel(0);
        let mut h = Harness {
            _dir: dir,
            db,
            fleet,
            gitlab,
            demand,
            demand_ticks,
            events: mpsc::unbounded_channel().0,
            activity: mpsc::unbounded_channel().0,
            handle: ReconcilerHandle::default(),
            clock,
            pools: LivePools::new(pools),
            agent,
            session: None,
            shutdown: CancellationToken::new(),
            task: None,
        };
        h.launch();
        h.settle().await;
        h
    }

    /// Start a reconciler on this harness's database, fleet and GitLab.
    fn launch(&mut self) {
        let reconciler = Reconciler::new(
            ReconcilerConfig {
                pools: self.pools.clone(),
                strategy: Strategy::Spread,
                runner_url: "http://127.0.0.1:9".into(),
                cluster: "testcluster".into(),
                provision_timeout: Duration::from_secs(300),
                gc_interval: Duration::from_secs(60),
                stop_grace: STOP_GRACE,
                metrics: None,
            },
            self.db.clone(),
            self.fleet.clone(),
            self.gitlab.clone(),
            FakeDemand {
                snapshot: self.demand.subscribe(),
                ticks: self.demand_ticks.subscribe(),
            },
        )
        .with_clock(self.clock);
        self.handle = reconciler.handle();
        let (events, events_rx) = mpsc::unbounded_channel();
        let (activity, activity_rx) = mpsc::unbounded_channel();
        self.events = events;
        self.activity = activity;
        self.shutdown = CancellationToken::new();
        self.task = Some(tokio::spawn(reconciler.run(
            events_rx,
            activity_rx,
            self.shutdown.clone(),
        )));
    }

    /// Stop the reconciler and start a new one on the same state (a
    /// coordinator restart; the fleet's sessions are the test's to end).
    async fn restart(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            bounded("reconciler stops", t).await.unwrap();
        }
        self.launch();
        self.settle().await;
    }

    /// Wait until the reconciler applied everything sent so far.
    async fn settle(&self) {
        bounded("settle", self.handle.settle()).await.unwrap();
    }

    /// Move the paused clock forward by `total` in `step`s, letting the
    /// reconciler handle every tick.
    async fn run_for(&self, total: Duration, step: Duration) {
        let mut done = Duration::ZERO;
        while done < total {
            tokio::time::advance(step).await;
            done += step;
            self.settle().await;
        }
    }

    /// Set the pending jobs of pool `amd64`: jobs 1 to `jobs`.
    fn pending(&self, jobs: u64) {
        self.pending_ids(1..=jobs);
    }

    /// Set the pending jobs of pool `amd64`, first seen now (the
    /// reconciler's wall time).
    fn pending_ids(&self, ids: impl IntoIterator<Item = u64>) {
        let now = self.clock.now_utc();
        let jobs = ids
            .into_iter()
            .map(|job_id| PendingJob {
                project_id: 1,
                job_id,
                name: "build".into(),
                tags: vec!["amd64".into()],
                pool: Some("amd64".into()),
                unmatched_reason: None,
                created_at: None,
                seen_at: now,
                via: Source::Poll,
                confirmed: std::time::Instant::now(),
            })
            .collect();
        let generation = *self.demand_ticks.borrow() + 1;
        self.demand
            .send(Arc::new(DemandSnapshot::new(generation, jobs)))
            .unwrap();
        self.demand_ticks.send(generation).unwrap();
    }

    /// Open a session for the agent, as `fleet/session.rs` does, with these
    /// containers present on its host.
    fn connect(&mut self, containers: Vec<RunnerReport>) -> SessionRx {
        let (tx, rx) = mpsc::channel(256);
        let (sid, _) = self.fleet.connect(self.agent, inventory(), tx).unwrap();
        self.session = Some(sid);
        self.events
            .send(AgentEvent::Connected {
                agent: self.agent,
                containers,
            })
            .unwrap();
        rx
    }

    fn disconnect(&mut self) {
        let sid = self.session.take().expect("connected");
        self.fleet.disconnect(&self.agent, sid);
        self.events
            .send(AgentEvent::Disconnected { agent: self.agent })
            .unwrap();
    }

    fn agent_reports(&self, r: RunnerReport) {
        self.events
            .send(AgentEvent::RunnerStatus {
                agent: self.agent,
                report: r,
            })
            .unwrap();
    }

    async fn record(&self, id: Uuid) -> RunnerRecord {
        let row = self.db.get_runner(&id.to_string()).await.unwrap().unwrap();
        RunnerRecord::from_row(&row).unwrap()
    }

    async fn event_kinds(&self) -> Vec<String> {
        let f = EventFilter {
            agent_id: Some(self.agent.to_string()),
            limit: 1000,
            ..Default::default()
        };
        let mut kinds: Vec<String> = self
            .db
            .list_events(&f)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        kinds.reverse();
        kinds
    }

    /// One pending job (job 1) → the runner start sent to the agent.
    async fn start_for_one_job(&self, rx: &mut SessionRx) -> Box<StartRunner> {
        self.pending(1);
        let AgentCommand::StartRunner(start) = next_msg(rx).await else {
            panic!("expected StartRunner");
        };
        start
    }

    /// One pending job → a runner started on the agent and running (idle).
    async fn idle_runner(&self, rx: &mut SessionRx) -> (Uuid, u64) {
        let start = self.start_for_one_job(rx).await;
        self.pending(0);
        let id = start.runner_id;
        self.agent_reports(report(id, ContainerState::Running, 0));
        self.settle().await;
        let rec = self.record(id).await;
        assert_eq!(rec.phase, Phase::Idle);
        (id, rec.gitlab_runner_id.expect("a GitLab runner"))
    }

    /// An idle runner that GitLab says took a job of its own: job
    /// 1000 + its GitLab id, apart from the ids [`Harness::pending`] lists
    /// (a job a runner holds is not demand).
    async fn busy_runner(&self, rx: &mut SessionRx) -> (Uuid, u64) {
        let (id, gitlab_id) = self.idle_runner(rx).await;
        self.activity
            .send(RunnerActivity::Busy {
                gitlab_runner_id: gitlab_id,
                project_id: 1,
                job_id: 1000 + gitlab_id,
            })
            .unwrap();
        self.settle().await;
        assert_eq!(self.record(id).await.phase, Phase::Busy);
        (id, gitlab_id)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn next_msg(rx: &mut SessionRx) -> AgentCommand {
    bounded("a message to the agent", rx.recv())
        .await
        .expect("session open")
}

/// A stop for `runner`: its grace (`None`: forceful).
fn expect_stop(cmd: AgentCommand, runner: Uuid) -> Option<Duration> {
    match cmd {
        AgentCommand::StopRunner {
            runner_id,
            graceful,
            grace,
        } if runner_id == runner.to_string() => {
            assert_eq!(graceful, grace.is_some());
            grace
        }
        other => panic!("expected StopRunner for {runner}, got {other:?}"),
    }
}

/// Nothing more was sent to the agent.
fn quiet(rx: &mut SessionRx) {
    if let Ok(m) = rx.try_recv() {
        panic!("unexpected message to the agent: {m:?}");
    }
}

/// GitLab's word that a runner took a job can reach the reconciler before
/// the demand snapshot that drops the job. The job is the runner's, not
/// demand for a second runner.
#[tokio::test(start_paused = true)]
async fn a_job_heard_taken_before_the_snapshot_drops_it_starts_no_second_runner() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let start = h.start_for_one_job(&mut rx).await;
    let id = start.runner_id;
    h.agent_reports(report(id, ContainerState::Running, 0));
    h.settle().await;
    let gitlab_id = h
        .record(id)
        .await
        .gitlab_runner_id
        .expect("a GitLab runner");

    // Job 1 is still in the snapshot when the runner is heard taking it.
    h.activity
        .send(RunnerActivity::Busy {
            gitlab_runner_id: gitlab_id,
            project_id: 1,
            job_id: 1,
        })
        .unwrap();
    h.settle().await;
    h.run_for(Duration::from_secs(5), TICK).await;
    assert_eq!(h.record(id).await.phase, Phase::Busy);
    quiet(&mut rx);
    assert_eq!(h.gitlab.live(), vec![gitlab_id], "one GitLab runner");

    // A second job is demand again.
    h.pending_ids([1, 2]);
    assert!(matches!(
        next_msg(&mut rx).await,
        AgentCommand::StartRunner(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_drained_busy_runner_is_left_alone_until_the_deadline_and_deleted_only_once_gone() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let (id, gitlab_id) = h.busy_runner(&mut rx).await;

    let deadline = h.clock.now_utc() + Duration::from_secs(3600);
    assert_eq!(h.handle.drain(h.agent, deadline).await, Ok(1));
    assert_eq!(
        expect_stop(next_msg(&mut rx).await, id),
        Some(Duration::from_secs(3600)),
        "a drain lets the job finish: graceful with the time left to the deadline"
    );

    // Ten minutes of a long job: every tick handled.
    h.run_for(Duration::from_secs(600), TICK).await;
    assert_eq!(h.gitlab.deletes(), Vec::<u64>::new(), "GitLab runner kept");
    assert_eq!(h.gitlab.live(), vec![gitlab_id]);
    assert_eq!(h.record(id).await.phase, Phase::Stopping);
    assert!(!h.event_kinds().await.contains(&"agent.drained".to_string()));
    quiet(&mut rx);

    // Past the deadline: stopped forcefully, still not finished.
    h.run_for(Duration::from_secs(3000) + TICK, Duration::from_secs(10))
        .await;
    assert_eq!(expect_stop(next_msg(&mut rx).await, id), None, "forceful");
    assert_eq!(h.gitlab.deletes(), Vec::<u64>::new());
    assert_eq!(h.record(id).await.phase, Phase::Stopping);

    // The agent confirms the container gone: finished, deleted, drained.
    h.agent_reports(report(id, ContainerState::Removed, 0));
    h.settle().await;
    h.run_for(TICK, TICK).await;
    let rec = h.record(id).await;
    assert_eq!(rec.phase, Phase::Exited);
    assert_eq!(h.gitlab.deletes(), vec![gitlab_id]);
    assert!(rec.gitlab_deleted_at.is_some());
    let kinds = h.event_kinds().await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "agent.drained").count(),
        1,
        "{kinds:?}"
    );
    // The audit log tells it in the order it happened.
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("no {kind}: {kinds:?}"))
    };
    assert!(at("runner.exited") < at("agent.drained"), "{kinds:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stop_asked_while_the_agent_is_away_is_delivered_at_reconnect() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let (id, gitlab_id) = h.idle_runner(&mut rx).await;
    h.disconnect();
    h.settle().await;

    assert_eq!(h.handle.stop_runner(id).await, Ok(()));
    h.run_for(Duration::from_secs(5), TICK).await;
    assert_eq!(h.record(id).await.phase, Phase::Stopping);
    assert!(h.gitlab.deletes().is_empty());

    let mut rx2 = h.connect(vec![report(id, ContainerState::Running, 0)]);
    assert!(
        expect_stop(next_msg(&mut rx2).await, id).is_some(),
        "graceful"
    );
    h.agent_reports(report(id, ContainerState::Exited, 0));
    h.settle().await;
    assert_eq!(h.record(id).await.phase, Phase::Exited);
    h.settle().await;
    assert_eq!(h.gitlab.deletes(), vec![gitlab_id]);
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_stop_is_resent_at_every_reconnect_and_gitlab_waits_for_the_ack() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let (id, gitlab_id) = h.idle_runner(&mut rx).await;
    assert_eq!(h.handle.stop_runner(id).await, Ok(()));
    expect_stop(next_msg(&mut rx).await, id);

    // The agent never answers; it reconnects twice with the container still there.
    for _ in 0..2 {
        h.disconnect();
        h.run_for(Duration::from_secs(2), TICK).await;
        rx = h.connect(vec![report(id, ContainerState::Running, 0)]);
        expect_stop(next_msg(&mut rx).await, id);
    }
    // Long past the grace period: forceful, and GitLab still keeps the runner.
    h.run_for(STOP_GRACE + Duration::from_secs(600), TICK).await;
    assert_eq!(expect_stop(next_msg(&mut rx).await, id), None, "forceful");
    quiet(&mut rx);
    assert!(h.gitlab.deletes().is_empty(), "not deleted before the ack");
    assert_eq!(h.record(id).await.phase, Phase::Stopping);

    // A reconnect without the container is the confirmation.
    h.disconnect();
    h.settle().await;
    let _rx = h.connect(vec![]);
    h.settle().await;
    assert_eq!(h.record(id).await.phase, Phase::Exited);
    h.settle().await;
    assert_eq!(h.gitlab.deletes(), vec![gitlab_id]);
}

#[tokio::test(start_paused = true)]
async fn a_lost_agent_releases_its_stopping_runner_and_gitlab_runner() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let (id, gitlab_id) = h.idle_runner(&mut rx).await;
    assert_eq!(h.handle.stop_runner(id).await, Ok(()));
    h.disconnect();
    h.run_for(Duration::from_secs(5), TICK).await;
    assert!(h.gitlab.deletes().is_empty());

    // The fleet monitor declares it lost (its clock is std's; drive it directly).
    let later = std::time::Instant::now() + LOST_AFTER + Duration::from_secs(1);
    h.fleet.tick(later);
    h.fleet.tick(later + LOST_AFTER + Duration::from_secs(1));
    h.run_for(TICK, TICK).await;
    assert_eq!(h.record(id).await.phase, Phase::Lost);
    h.settle().await;
    assert_eq!(h.gitlab.deletes(), vec![gitlab_id]);
}

#[tokio::test(start_paused = true)]
async fn a_runner_that_never_runs_is_stopped_and_cleaned_up_only_after_the_agent_answers() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let start = h.start_for_one_job(&mut rx).await;
    h.pending(0);
    let id = start.runner_id;
    h.run_for(Duration::from_secs(301), Duration::from_secs(1))
        .await;
    assert_eq!(
        expect_stop(next_msg(&mut rx).await, id),
        None,
        "a runner that never ran is stopped at once"
    );
    assert!(h.gitlab.deletes().is_empty(), "its container may exist");
    // The agent never had it: it answers `Removed`.
    h.agent_reports(report(id, ContainerState::Removed, 0));
    h.settle().await;
    let rec = h.record(id).await;
    assert_eq!(rec.phase, Phase::Failed);
    assert!(rec.reason.unwrap().contains("not running within"));
    h.settle().await;
    assert_eq!(h.gitlab.deletes().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_gitlab_fails_the_runner_without_a_start_and_backs_off() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    h.gitlab.fail_creates(true);
    h.pending(1);
    h.run_for(Duration::from_secs(1), TICK).await;
    let first = h.gitlab.creates();
    assert!(first >= 1);
    // Backoff: the next attempt waits (2 s after the first failure).
    h.settle().await;
    assert_eq!(h.gitlab.creates(), first, "no retry before the backoff");
    quiet(&mut rx);
    assert!(h.handle.status().create_errors.contains_key("amd64"));
    // GitLab recovers: the next attempt starts a runner.
    h.gitlab.fail_creates(false);
    h.run_for(Duration::from_secs(5), TICK).await;
    assert!(matches!(
        next_msg(&mut rx).await,
        AgentCommand::StartRunner(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_slow_gitlab_does_not_stall_reports() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let (id, _) = h.idle_runner(&mut rx).await;
    h.gitlab.delay(Duration::from_secs(30));
    h.agent_reports(report(id, ContainerState::Exited, 0));
    // The delete is still in flight; the loop keeps answering.
    h.settle().await;
    assert_eq!(h.record(id).await.phase, Phase::Exited);
    assert!(h.gitlab.deletes().is_empty());
    h.run_for(Duration::from_secs(31), TICK).await;
    assert_eq!(h.gitlab.deletes().len(), 1);
    assert!(h.record(id).await.gitlab_deleted_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn draining_an_agent_without_runners_is_done_at_once_and_an_unknown_agent_is_refused() {
    let mut h = Harness::start().await;
    let _rx = h.connect(vec![]);
    let deadline = h.clock.now_utc() + Duration::from_secs(60);
    assert_eq!(h.handle.drain(h.agent, deadline).await, Ok(0));
    h.run_for(TICK, TICK).await;
    assert!(h.event_kinds().await.contains(&"agent.drained".to_string()));
    let stranger = AgentId::new_random();
    let err = h.handle.drain(stranger, deadline).await.unwrap_err();
    assert!(err.contains(&stranger.to_string()), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_gitlab_delete_is_retried_until_it_succeeds() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let (id, gitlab_id) = h.idle_runner(&mut rx).await;
    h.gitlab.fail_deletes(true);
    h.agent_reports(report(id, ContainerState::Exited, 0));
    h.run_for(Duration::from_secs(1), TICK).await;
    assert_eq!(h.gitlab.deletes(), vec![gitlab_id], "tried once");
    assert_eq!(h.gitlab.live(), vec![gitlab_id]);
    assert!(h.record(id).await.gitlab_deleted_at.is_none());
    h.gitlab.fail_deletes(false);
    // The next collection round (gc_interval = 60 s) retries it.
    h.run_for(Duration::from_secs(61), TICK).await;
    assert!(h.gitlab.live().is_empty());
    assert!(h.record(id).await.gitlab_deleted_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_stop_wanted_before_a_coordinator_restart_is_still_wanted_after_it() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let (id, gitlab_id) = h.idle_runner(&mut rx).await;
    assert_eq!(h.handle.stop_runner(id).await, Ok(()));
    expect_stop(next_msg(&mut rx).await, id);

    h.restart().await;
    h.disconnect();
    let mut rx = h.connect(vec![report(id, ContainerState::Running, 0)]);
    expect_stop(next_msg(&mut rx).await, id);
    assert_eq!(h.record(id).await.phase, Phase::Stopping);
    assert!(h.gitlab.deletes().is_empty());
    h.agent_reports(report(id, ContainerState::Removed, 0));
    h.settle().await;
    assert_eq!(h.record(id).await.phase, Phase::Exited);
    h.settle().await;
    assert_eq!(h.gitlab.deletes(), vec![gitlab_id]);
}

#[tokio::test(start_paused = true)]
async fn reports_from_another_agent_change_nothing_and_unknown_containers_are_stopped() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let (id, _) = h.idle_runner(&mut rx).await;
    // Another (authenticated) agent claims our runner's container exited.
    let intruder = AgentId::new_random();
    h.events
        .send(AgentEvent::RunnerStatus {
            agent: intruder,
            report: report(id, ContainerState::Exited, 0),
        })
        .unwrap();
    h.settle().await;
    assert_eq!(h.record(id).await.phase, Phase::Idle, "not finished");
    assert!(h.gitlab.deletes().is_empty(), "GitLab runner kept");

    // Our agent reconnects listing a container no record wants: it is stopped.
    h.disconnect();
    let stranger = Uuid::new_v4();
    let mut rx = h.connect(vec![
        report(id, ContainerState::Running, 0),
        report(stranger, ContainerState::Running, 0),
    ]);
    assert_eq!(
        expect_stop(next_msg(&mut rx).await, stranger),
        None,
        "forceful"
    );
    h.settle().await;
    quiet(&mut rx);
    assert_eq!(h.record(id).await.phase, Phase::Idle, "ours is adopted");
}

/// Every `StartRunner` sent so far (other messages dropped).
fn starts(rx: &mut SessionRx) -> Vec<Uuid> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        if let AgentCommand::StartRunner(s) = m {
            out.push(s.runner_id);
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_host_policy_refusal_is_recorded_and_not_retried_on_that_agent() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let start = h.start_for_one_job(&mut rx).await;
    let id = start.runner_id;
    let rule = "mount source \"/\" is not in policy.allowed_mount_sources";
    h.agent_reports(RunnerReport {
        container_id: None,
        reason: Some(format!("refused by host policy: {rule}")),
        ..report(id, ContainerState::Failed, 0)
    });
    h.settle().await;

    let rec = h.record(id).await;
    assert_eq!(rec.phase, Phase::Failed);
    assert_eq!(
        rec.reason.as_deref(),
        Some(format!("refused by host policy: {rule}").as_str())
    );

    // Many passes with the job still pending: no second StartRunner.
    h.run_for(Duration::from_secs(120), TICK).await;
    assert_eq!(
        starts(&mut rx),
        Vec::<Uuid>::new(),
        "a refused pool is not retried on the refusing agent"
    );
    assert_eq!(
        h.handle.status().unmet.get("amd64").map(String::as_str),
        Some(format!("refused by host policy on build-1: {rule}").as_str()),
        "why pending names the host and the rule"
    );

    // Once the refusal expires the agent is asked once more (its policy may
    // have changed), and only once.
    h.run_for(super::refusals::RETRY_AFTER, Duration::from_secs(10))
        .await;
    let again = starts(&mut rx);
    assert_eq!(again.len(), 1, "{again:?}");
}

#[tokio::test(start_paused = true)]
async fn an_ordinary_start_failure_is_not_taken_for_a_policy_refusal() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let start = h.start_for_one_job(&mut rx).await;
    h.agent_reports(RunnerReport {
        container_id: None,
        reason: Some("pull image: not found".into()),
        ..report(start.runner_id, ContainerState::Failed, 0)
    });
    h.settle().await;
    h.run_for(Duration::from_secs(30), TICK).await;
    assert!(!starts(&mut rx).is_empty(), "a failed pull is tried again");
    assert!(
        !h.handle
            .status()
            .unmet
            .get("amd64")
            .is_some_and(|r| r.contains("host policy"))
    );
}

/// A burst: every start's record and `runner.created` event are committed
/// (together, one transaction per pass) before its GitLab runner is
/// created, so a crash between the two leaves a record for the collector
/// to go by, never a GitLab runner nobody knows.
#[tokio::test(start_paused = true)]
async fn a_burst_of_starts_commits_every_record_before_its_gitlab_runner() {
    let mut h = Harness::start().await;
    h.gitlab.check_records_in(h.db.clone());
    let mut rx = h.connect(vec![]);
    // As many as the test agent has room for.
    h.pending(4);
    h.settle().await;
    // The fake reads SQLite (real time) inside each create.
    bounded("4 GitLab runners created", async {
        while h.gitlab.creates() < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    h.settle().await;
    assert_eq!(h.gitlab.creates(), 4);
    assert_eq!(h.gitlab.unrecorded_creates(), 0);
    assert_eq!(starts(&mut rx).len(), 4);
    let kinds = h.event_kinds().await;
    assert_eq!(kinds.iter().filter(|k| *k == "runner.created").count(), 4);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "runner.gitlab_created")
            .count(),
        4
    );
}

/// Every message to the agent so far: (starts, stops).
fn drain_msgs(rx: &mut SessionRx) -> (Vec<crate::fleet::command::StartRunner>, Vec<Uuid>) {
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    while let Ok(m) = rx.try_recv() {
        match m {
            AgentCommand::StartRunner(s) => starts.push(*s),
            AgentCommand::StopRunner { runner_id, .. } => stops.push(runner_id.parse().unwrap()),
            _ => {}
        }
    }
    (starts, stops)
}

/// Warm runners rise when a schedule window opens and fall when it closes,
/// with wall time driven by the paused clock (not real hours); the runner
/// that is busy when the window closes keeps its job.
#[tokio::test(start_paused = true)]
async fn warm_runners_follow_the_schedule_window_and_a_busy_runner_outlives_it() {
    use crate::scheduler::Window;
    use time::macros::datetime;
    let mut pool = Pool::new("amd64", &["amd64"], Arch::X86_64);
    pool.schedule =
        vec![Window::new("* 8-17 * * mon-fri", "Europe/Berlin", Some(2), None).unwrap()];
    // Monday 07:58 in Berlin (UTC+1).
    let clock = Clock::following_tokio_from(datetime!(2026-11-30 06:58:00 UTC));
    let mut h = Harness::start_with(vec![pool], clock).await;
    let mut rx = h.connect(vec![]);

    h.run_for(Duration::from_secs(90), TICK).await;
    let (early, _) = drain_msgs(&mut rx);
    assert!(
        early.is_empty(),
        "no warm runner before 08:00: {}",
        early.len()
    );

    // 08:00: two warm runners.
    h.run_for(Duration::from_secs(60), TICK).await;
    let (opened, _) = drain_msgs(&mut rx);
    assert_eq!(opened.len(), 2, "two warm runners at 08:00");
    for s in &opened {
        h.agent_reports(report(s.runner_id, ContainerState::Running, 0));
    }
    h.settle().await;
    // One takes a job: a third keeps two warm.
    let busy = opened[0].runner_id;
    let gitlab_id = h.record(busy).await.gitlab_runner_id.unwrap();
    h.activity
        .send(RunnerActivity::Busy {
            gitlab_runner_id: gitlab_id,
            project_id: 1,
            job_id: 7,
        })
        .unwrap();
    h.run_for(TICK * 4, TICK).await;
    let (third, _) = drain_msgs(&mut rx);
    assert_eq!(
        third.len(),
        1,
        "a warm runner replaces the one that took a job"
    );
    h.agent_reports(report(third[0].runner_id, ContainerState::Running, 0));
    h.settle().await;

    // The working day passes without changes, to 17:58.
    h.run_for(
        Duration::from_secs(9 * 3600 + 57 * 60),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(h.clock.now_utc().hour(), 16, "17:xx in Berlin");
    let (starts, stops) = drain_msgs(&mut rx);
    assert!(
        starts.is_empty() && stops.is_empty(),
        "{} starts, stops {stops:?}",
        starts.len()
    );

    // 18:00: the idle runners are stopped, the busy one is not.
    h.run_for(Duration::from_secs(180), TICK).await;
    assert_eq!(h.clock.now_utc().hour(), 17, "18:00 in Berlin");
    let (starts, mut stops) = drain_msgs(&mut rx);
    stops.sort();
    let mut idle = vec![opened[1].runner_id, third[0].runner_id];
    idle.sort();
    assert!(starts.is_empty());
    assert_eq!(stops, idle, "only the idle runners fall at 18:00");
    assert_eq!(h.record(busy).await.phase, Phase::Busy);

    // Its job done, the busy runner exits and is not replaced.
    h.agent_reports(report(busy, ContainerState::Exited, 0));
    h.run_for(Duration::from_secs(60), TICK).await;
    let (starts, _) = drain_msgs(&mut rx);
    assert!(starts.is_empty(), "no warm runners after 18:00");
    assert_eq!(h.record(busy).await.phase, Phase::Exited);
}

/// A reload that changes a pool's image: the idle runner made from the old
/// definition is replaced, the busy one finishes its job; new runners get
/// the new image. A reload that removes the pool: no new runners for it.
#[tokio::test(start_paused = true)]
async fn a_reload_replaces_idle_runners_of_a_changed_pool_and_starves_a_removed_one() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let (busy, _) = h.busy_runner(&mut rx).await;
    let (idle, _) = h.idle_runner(&mut rx).await;
    let old_image = h.pools.current()[0].image.clone();

    let mut changed = h.pools.current()[0].clone();
    changed.image = "registry.example/runner:2".into();
    h.pools.replace(vec![changed.clone()]);
    h.run_for(TICK * 2, TICK).await;
    let (starts, stops) = drain_msgs(&mut rx);
    assert_eq!(
        stops,
        vec![idle],
        "the idle runner of the old definition is replaced"
    );
    assert!(
        starts.is_empty(),
        "nothing pending, idle_min 0: no replacement yet"
    );
    assert_eq!(
        h.record(busy).await.phase,
        Phase::Busy,
        "the busy runner keeps its job"
    );
    assert_eq!(h.record(idle).await.reason.as_deref(), Some("PoolChanged"));

    h.pending(1);
    h.run_for(TICK * 2, TICK).await;
    let (starts, _) = drain_msgs(&mut rx);
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].spec.image, "registry.example/runner:2");
    assert_ne!(starts[0].spec.image, old_image);
    h.agent_reports(report(starts[0].runner_id, ContainerState::Running, 0));
    h.pending(0);
    h.settle().await;

    // A resize or a new wait objective alone keeps every runner.
    let mut resized = changed.clone();
    resized.max_runners = 9;
    resized.wait_objective = Some(Duration::from_secs(30));
    h.pools.replace(vec![resized]);
    h.run_for(TICK * 2, TICK).await;
    let (starts, stops) = drain_msgs(&mut rx);
    assert!(starts.is_empty() && stops.is_empty(), "stops {stops:?}");

    // Removed: its idle runner stops, the busy one does not, and pending
    // jobs that named it start nothing.
    h.pools
        .replace(vec![Pool::new("arm64", &["arm64"], Arch::Aarch64)]);
    h.pending(2);
    h.run_for(Duration::from_secs(30), TICK).await;
    let (starts, stops) = drain_msgs(&mut rx);
    assert!(starts.is_empty(), "no runner for a removed pool");
    assert!(!stops.contains(&busy));
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!(h.record(busy).await.phase, Phase::Busy);
}

#[tokio::test(start_paused = true)]
async fn each_job_a_runner_takes_counts_its_wait_against_the_pools_objective() {
    let mut pool = Pool::new("amd64", &["amd64"], Arch::X86_64);
    pool.wait_objective = Some(Duration::from_secs(30));
    let mut h = Harness::start_with(vec![pool.clone()], Clock::following_tokio()).await;
    let mut rx = h.connect(vec![]);
    let mut take = async |job_id: u64, after: Duration| {
        h.pending_ids([job_id]);
        let AgentCommand::StartRunner(start) = next_msg(&mut rx).await else {
            panic!("expected StartRunner");
        };
        h.agent_reports(report(start.runner_id, ContainerState::Running, 0));
        h.run_for(after, Duration::from_secs(1)).await;
        let gitlab_runner_id = h.record(start.runner_id).await.gitlab_runner_id.unwrap();
        h.activity
            .send(RunnerActivity::Busy {
                gitlab_runner_id,
                project_id: 1,
                job_id,
            })
            .unwrap();
        h.pending_ids([]);
        h.settle().await;
    };
    take(1, Duration::from_secs(10)).await; // met
    take(2, Duration::from_secs(45)).await; // missed

    let shares = h
        .handle
        .wait_shares(&pool)
        .expect("the pool has an objective");
    assert_eq!(shares.last_hour, Tally { met: 1, total: 2 });
    assert_eq!(shares.last_day, Tally { met: 1, total: 2 });
    let plain = Pool::new("amd64", &["amd64"], Arch::X86_64);
    assert_eq!(
        h.handle.wait_shares(&plain),
        None,
        "no objective, no shares"
    );

    // An hour on, only the 24 h window still holds them.
    h.run_for(Duration::from_secs(3600), Duration::from_secs(60))
        .await;
    let shares = h.handle.wait_shares(&pool).unwrap();
    assert_eq!(shares.last_hour.ratio(), None);
    assert_eq!(shares.last_day.ratio(), Some(0.5));
}

#[tokio::test(start_paused = true)]
async fn a_runner_on_an_agent_without_its_image_says_so_until_it_runs_and_records_the_pull() {
    let mut h = Harness::start().await;
    let mut rx = h.connect(vec![]);
    let start = h.start_for_one_job(&mut rx).await;
    h.settle().await;
    let id = start.runner_id;
    let why = h.handle.status().cold_starts.get("amd64").cloned();
    assert_eq!(
        why.as_deref(),
        Some(
            "runner starting on build-1: pulling gitlab/gitlab-runner:latest first \
             (no agent that fits holds it yet)"
        ),
        "why pending names the host and the image"
    );
    let mut running = report(id, ContainerState::Running, 0);
    running.image_pull = Some(Duration::from_millis(12_300));
    h.agent_reports(running);
    h.settle().await;
    let rec = h.record(id).await;
    assert_eq!(rec.image_pull, Some(Duration::from_millis(12_300)));
    let row = h.db.get_runner(&id.to_string()).await.unwrap().unwrap();
    let view = crate::runners::model::RunnerView::from(&row);
    assert_eq!(view.image.as_deref(), Some("cold pull 12.3 s"));
    assert!(
        h.handle.status().cold_starts.is_empty(),
        "running: nothing to explain"
    );
}

#[tokio::test(start_paused = true)]
async fn a_runner_on_an_agent_holding_its_image_is_warm() {
    let mut h = Harness::start().await;
    let (tx, mut rx) = mpsc::channel(256);
    let mut inv = inventory();
    inv.images = vec![crate::fleet::inventory::HeldImage {
        reference: "gitlab/gitlab-runner:latest".into(),
        id: "sha256:1".into(),
        size_bytes: 1,
    }];
    let (sid, _) = h.fleet.connect(h.agent, inv, tx).unwrap();
    h.session = Some(sid);
    h.events
        .send(AgentEvent::Connected {
            agent: h.agent,
            containers: vec![],
        })
        .unwrap();
    let start = h.start_for_one_job(&mut rx).await;
    h.settle().await;
    assert!(
        h.handle.status().cold_starts.is_empty(),
        "warm: no pull to wait for"
    );
    let mut running = report(start.runner_id, ContainerState::Running, 0);
    running.image_pull = Some(Duration::ZERO);
    h.agent_reports(running);
    h.settle().await;
    let row =
        h.db.get_runner(&start.runner_id.to_string())
            .await
            .unwrap()
            .unwrap();
    let view = crate::runners::model::RunnerView::from(&row);
    assert_eq!(
        (view.image_pull_ms, view.image.as_deref()),
        (Some(0), Some("warm image"))
    );
}

mod stock;
