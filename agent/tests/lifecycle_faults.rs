//! The runner supervisor under faults, against a fake Docker engine and
//! tokio's paused clock (deterministic; minutes of outage take no time):
//! acknowledged stops, Docker outages, and what GitLab's docker executor
//! leaves behind.

mod support;

use std::sync::Arc;
use std::time::Duration;

use autogit_agent::docker::issued::ISSUED_FILE;
use autogit_agent::docker::{
    self, ContainerStatus, GcPolicy, RunnerEvent, RunnerId, RunnerSpec, RunnerState, StopOutcome,
    StopRequest, SupervisorConfig, SupervisorHandle,
};
use support::fake_engine::FakeEngine;
use tokio::sync::mpsc;
use tokio::time::timeout;

const SCOPE: &str = "fake-scope";
const SHORT: &str = "abcdefghi";
/// Longer than any backoff step; a wait this long with no event is "never".
const LONG: Duration = Duration::from_secs(3600);

struct Harness {
    fake: Arc<FakeEngine>,
    sup: SupervisorHandle,
    events: mpsc::Receiver<RunnerEvent>,
}

fn config(tweak: impl FnOnce(&mut SupervisorConfig)) -> SupervisorConfig {
    let mut c = SupervisorConfig {
        scope: Some(SCOPE.into()),
        abort_timeout: Duration::from_secs(10),
        // Off unless a test is about the collector, so that runner-end
        // cleanup is what the other tests observe.
        leftover_gc_interval: Duration::ZERO,
        ..Default::default()
    };
    tweak(&mut c);
    c
}

async fn harness_with(fake: Arc<FakeEngine>, cfg: SupervisorConfig) -> Harness {
    let (tx, events) = mpsc::channel(256);
    let sup = docker::spawn(fake.clone(), cfg, tx)
        .await
        .expect("spawn supervisor");
    Harness { fake, sup, events }
}

async fn harness() -> Harness {
    harness_with(Arc::new(FakeEngine::new()), config(|_| {})).await
}

fn spec(runner: RunnerId) -> RunnerSpec {
    let mut s = RunnerSpec::new(runner, "pool", "gitlab/gitlab-runner:v18.4.0");
    s.stop_signal = Some("SIGQUIT".into());
    s.short_tokens = vec![SHORT.into()];
    s
}

/// This runner's events up to the first matching one; `Err` with what came
/// if none matched within `within` (of paused, auto-advancing time).
async fn events_until(
    rx: &mut mpsc::Receiver<RunnerEvent>,
    runner: RunnerId,
    within: Duration,
    pred: impl Fn(&RunnerState) -> bool,
) -> Result<Vec<RunnerEvent>, Vec<RunnerEvent>> {
    let mut seen = Vec::new();
    let res = timeout(within, async {
        while let Some(ev) = rx.recv().await {
            if ev.runner_id != runner {
                continue;
            }
            let done = pred(&ev.state);
            seen.push(ev);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    match res {
        Ok(true) => Ok(seen),
        _ => Err(seen),
    }
}

async fn until_removed(rx: &mut mpsc::Receiver<RunnerEvent>, runner: RunnerId) -> Vec<RunnerEvent> {
    events_until(rx, runner, LONG, |s| *s == RunnerState::Removed)
        .await
        .unwrap_or_else(|seen| panic!("no Removed within {LONG:?}: {seen:?}"))
}

async fn until_running(h: &mut Harness, runner: RunnerId) -> String {
    events_until(&mut h.events, runner, LONG, |s| *s == RunnerState::Running)
        .await
        .unwrap_or_else(|seen| panic!("not running: {seen:?}"));
    let found = h.fake.containers_of(runner);
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].0.clone()
}

fn states(evs: &[RunnerEvent]) -> Vec<RunnerState> {
    evs.iter().map(|e| e.state.clone()).collect()
}

fn abort(runner: RunnerId) -> StopRequest {
    StopRequest {
        runner_id: runner,
        graceful: false,
        grace_period: None,
    }
}

#[tokio::test(start_paused = true)]
async fn stop_of_an_untracked_runner_removes_its_container_before_reporting_removed() {
    let mut h = harness().await;
    let runner = RunnerId::new_v4();
    // A container the supervisor does not track (it appeared after the
    // supervisor adopted what was there).
    let id = h
        .fake
        .insert_runner_container(&spec(runner), Some(SCOPE), ContainerStatus::Running);
    let out = h.sup.stop(abort(runner)).await.expect("stop");
    assert_eq!(out, StopOutcome::NotFound);
    let evs = until_removed(&mut h.events, runner).await;
    assert!(
        h.fake.containers_of(runner).is_empty(),
        "Removed was reported while the container still exists: {evs:?}"
    );
    assert!(
        h.fake.signals().contains(&(id, "SIGTERM".into())),
        "{:?}",
        h.fake.signals()
    );
}

#[tokio::test(start_paused = true)]
async fn stop_of_an_unknown_runner_reports_removed_once_docker_confirms_nothing_is_there() {
    let mut h = harness().await;
    let runner = RunnerId::new_v4();
    h.fake.set_up(false);
    assert_eq!(
        h.sup.stop(abort(runner)).await.expect("stop"),
        StopOutcome::NotFound
    );
    let early = events_until(&mut h.events, runner, Duration::from_secs(300), |s| {
        *s == RunnerState::Removed
    })
    .await;
    assert!(
        early.is_err(),
        "Removed reported while Docker could not confirm it: {early:?}"
    );
    h.fake.set_up(true);
    let evs = until_removed(&mut h.events, runner).await;
    assert_eq!(states(&evs), vec![RunnerState::Removed]);
}

#[tokio::test(start_paused = true)]
async fn a_ten_minute_docker_outage_does_not_lose_the_runner() {
    let mut h = harness().await;
    let runner = RunnerId::new_v4();
    h.sup.start(spec(runner)).await.expect("start");
    let id = until_running(&mut h, runner).await;

    h.fake.set_up(false);
    let during = events_until(&mut h.events, runner, Duration::from_secs(600), |_| true).await;
    assert!(
        during.is_err(),
        "the runner was given up on during the outage: {during:?}"
    );
    assert_eq!(h.fake.containers_of(runner).len(), 1);

    // dockerd is back and the runner still runs: it is watched again.
    h.fake.set_up(true);
    let quiet = events_until(&mut h.events, runner, Duration::from_secs(120), |_| true).await;
    assert!(quiet.is_err(), "{quiet:?}");
    h.fake.exit(&id, 0);
    let evs = until_removed(&mut h.events, runner).await;
    assert_eq!(
        states(&evs),
        vec![RunnerState::Exited { code: 0 }, RunnerState::Removed]
    );
    assert!(h.fake.containers_of(runner).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dockerd_restart_that_killed_the_runner_is_reported_and_cleaned_up() {
    let mut h = harness().await;
    let runner = RunnerId::new_v4();
    h.sup.start(spec(runner)).await.expect("start");
    let id = until_running(&mut h, runner).await;
    h.fake.add_executor_leftovers(SHORT);

    // dockerd goes away; its containers die with it (no live-restore).
    h.fake.set_up(false);
    h.fake.exit(&id, 137);
    tokio::time::sleep(Duration::from_secs(240)).await;
    h.fake.set_up(true);

    let evs = until_removed(&mut h.events, runner).await;
    assert_eq!(evs[0].state, RunnerState::Exited { code: 137 });
    assert!(
        matches!(&evs[1].state, RunnerState::Failed { reason, .. } if reason.contains("137")),
        "{evs:?}"
    );
    assert!(h.fake.containers_of(runner).is_empty());
    assert_eq!(
        h.fake.leftovers_of(SHORT),
        0,
        "the job container and cache stay"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_an_outage_is_delivered_when_docker_answers() {
    let mut h = harness().await;
    let runner = RunnerId::new_v4();
    h.sup.start(spec(runner)).await.expect("start");
    let id = until_running(&mut h, runner).await;

    h.fake.set_up(false);
    assert_eq!(
        h.sup.stop(abort(runner)).await.expect("stop"),
        StopOutcome::Queued
    );
    let during = events_until(&mut h.events, runner, Duration::from_secs(300), |_| true).await;
    assert!(during.is_err(), "{during:?}");
    assert_eq!(h.fake.containers_of(runner).len(), 1);

    h.fake.set_up(true);
    let evs = until_removed(&mut h.events, runner).await;
    assert_eq!(
        states(&evs),
        vec![RunnerState::Exited { code: 143 }, RunnerState::Removed],
        "an asked-for stop is no failure"
    );
    assert_eq!(h.fake.signals(), vec![(id, "SIGTERM".to_owned())]);
    assert!(h.fake.containers_of(runner).is_empty());
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_kills_after_the_grace_period() {
    let mut h = harness().await;
    h.fake.ignore_graceful(true);
    let runner = RunnerId::new_v4();
    h.sup.start(spec(runner)).await.expect("start");
    let id = until_running(&mut h, runner).await;
    let stop = StopRequest {
        runner_id: runner,
        graceful: true,
        grace_period: Some(Duration::from_secs(900)),
    };
    assert_eq!(
        h.sup.stop(stop).await.expect("stop"),
        StopOutcome::Signalled
    );
    let early = events_until(&mut h.events, runner, Duration::from_secs(899), |_| true).await;
    assert!(early.is_err(), "killed before the grace period: {early:?}");
    let evs = until_removed(&mut h.events, runner).await;
    assert_eq!(evs[0].state, RunnerState::Exited { code: 137 });
    assert_eq!(
        h.fake.signals(),
        vec![(id.clone(), "SIGQUIT".into()), (id, "SIGKILL".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn runner_end_removes_only_its_own_executor_leftovers_and_says_how_many() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(ISSUED_FILE);
    let fake = Arc::new(FakeEngine::new());
    let mut h = harness_with(fake, config(|c| c.issued_tokens_file = Some(file.clone()))).await;
    h.fake.add_executor_leftovers(SHORT);
    h.fake.add_executor_leftovers("zzzzzzzzz");
    let runner = RunnerId::new_v4();
    h.sup.start(spec(runner)).await.expect("start");
    let id = until_running(&mut h, runner).await;
    // Recorded before the container existed, and only the short token.
    let issued = std::fs::read_to_string(&file).expect("issued file");
    assert_eq!(issued.lines().collect::<Vec<_>>(), vec![SHORT]);

    // The runner container is SIGKILLed (not by us): a failure, and its
    // job container, cache volume and network must still go.
    h.fake.exit(&id, 137);
    let evs = until_removed(&mut h.events, runner).await;
    let removed = evs.last().expect("Removed");
    assert_eq!(
        removed.detail.as_deref(),
        Some("removed what the docker executor left: 1 container(s), 1 volume(s), 1 network(s)")
    );
    assert_eq!(h.fake.leftovers_of(SHORT), 0);
    assert_eq!(
        h.fake.leftovers_of("zzzzzzzzz"),
        3,
        "another runner's work is untouched"
    );
}

#[tokio::test(start_paused = true)]
async fn an_exited_runner_found_after_an_agent_restart_takes_its_leftovers_with_it() {
    let fake = Arc::new(FakeEngine::new());
    let runner = RunnerId::new_v4();
    fake.insert_runner_container(
        &spec(runner),
        Some(SCOPE),
        ContainerStatus::Exited { code: 0 },
    );
    fake.add_executor_leftovers(SHORT);
    let mut h = harness_with(fake, config(|_| {})).await;
    let evs = until_removed(&mut h.events, runner).await;
    assert_eq!(
        states(&evs),
        vec![RunnerState::Exited { code: 0 }, RunnerState::Removed]
    );
    assert_eq!(
        h.fake.leftovers_of(SHORT),
        0,
        "short token came from the container's label"
    );
}

/// Leftovers of: a runner this agent issued that is gone (`ourgone12`), a
/// live runner (`livetoken`, adopted at start), and a host owner's own
/// gitlab-runner (`foreign12`).
async fn collector_case(policy: GcPolicy) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(ISSUED_FILE);
    std::fs::write(&file, "ourgone12\n").expect("write issued");
    let fake = Arc::new(FakeEngine::new());
    let live = RunnerId::new_v4();
    let mut live_spec = spec(live);
    live_spec.short_tokens = vec!["livetoken".into()];
    fake.insert_runner_container(&live_spec, Some(SCOPE), ContainerStatus::Running);
    for t in ["ourgone12", "livetoken", "foreign12"] {
        fake.add_executor_leftovers(t);
    }
    let h = harness_with(
        fake,
        config(|c| {
            c.issued_tokens_file = Some(file);
            c.gc_policy = policy;
            c.leftover_gc_interval = Duration::from_secs(60);
        }),
    )
    .await;
    for _ in 0..100 {
        if h.fake.leftovers_of("ourgone12") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        h.fake.leftovers_of("ourgone12"),
        0,
        "the start-up pass collects ours"
    );
    h
}

#[tokio::test(start_paused = true)]
async fn collector_by_default_takes_only_leftovers_of_runners_this_agent_issued() {
    let h = collector_case(GcPolicy::IssuedOnly).await;
    // Several periodic passes later.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(
        h.fake.leftovers_of("foreign12"),
        3,
        "a host owner's own runner work"
    );
    assert_eq!(h.fake.leftovers_of("livetoken"), 3, "a live runner's work");
}

#[tokio::test(start_paused = true)]
async fn collector_for_dedicated_hosts_takes_foreign_leftovers_but_never_a_live_runners() {
    let h = collector_case(GcPolicy::AllManaged).await;
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(h.fake.leftovers_of("foreign12"), 0);
    assert_eq!(h.fake.leftovers_of("livetoken"), 3, "a live runner's work");
}

#[tokio::test(start_paused = true)]
async fn collector_never_takes_leftovers_of_a_runner_whose_container_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(ISSUED_FILE);
    std::fs::write(&file, "untrack99\n").expect("write issued");
    let fake = Arc::new(FakeEngine::new());
    let h = harness_with(
        fake,
        config(|c| {
            c.issued_tokens_file = Some(file);
            c.leftover_gc_interval = Duration::from_secs(60);
        }),
    )
    .await;
    // A runner container the supervisor does not track (it appeared after
    // start-up), mid-job: its build container, cache and network exist.
    let runner = RunnerId::new_v4();
    let mut s = spec(runner);
    s.short_tokens = vec!["untrack99".into()];
    h.fake
        .insert_runner_container(&s, Some(SCOPE), ContainerStatus::Running);
    h.fake.add_executor_leftovers("untrack99");
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(
        h.fake.leftovers_of("untrack99"),
        3,
        "its job is still running"
    );
}

/// A start asks Docker nothing before its create call: in a burst every
/// extra call would wait in dockerd's queue. The runner's own calls are
/// exactly create, then start.
#[tokio::test(start_paused = true)]
async fn a_start_creates_without_asking_docker_anything_first() {
    let mut h = harness().await;
    let before = h.fake.calls().len();
    let runner = RunnerId::new_v4();
    h.sup.start(spec(runner)).await.expect("start");
    until_running(&mut h, runner).await;
    let calls: Vec<_> = h.fake.calls()[before..].to_vec();
    assert_eq!(calls.first(), Some(&"create"), "{calls:?}");
    assert!(!calls.contains(&"list runner's container"), "{calls:?}");
}

/// A missing image: create answers 404, the agent pulls and creates again,
/// as `docker run` does.
#[tokio::test(start_paused = true)]
async fn a_missing_image_is_pulled_then_the_create_repeated() {
    let mut h = harness().await;
    let runner = RunnerId::new_v4();
    let s = spec(runner);
    h.fake.remove_image(&s.image, true);
    let before = h.fake.calls().len();
    h.sup.start(s).await.expect("start");
    until_running(&mut h, runner).await;
    let calls: Vec<_> = h.fake.calls()[before..].to_vec();
    assert_eq!(&calls[..3], &["create", "pull", "create"], "{calls:?}");
}

/// The pool's registry credentials reach the pull of a missing image; a
/// spec without them pulls anonymously.
#[tokio::test(start_paused = true)]
async fn the_specs_registry_credentials_reach_the_pull() {
    let mut h = harness().await;
    let runner = RunnerId::new_v4();
    let mut s = spec(runner);
    s.registry_auth = Some(autogit_agent::docker::RegistryAuth {
        username: "puller".into(),
        password: secrecy::SecretString::from("reg-pw"),
    });
    h.fake.remove_image(&s.image, true);
    h.sup.start(s.clone()).await.expect("start");
    until_running(&mut h, runner).await;
    assert_eq!(
        h.fake.pulls(),
        vec![(s.image.clone(), Some("puller".to_owned()))]
    );

    let anonymous = RunnerId::new_v4();
    let mut s2 = spec(anonymous);
    s2.image = "registry.example/other:1".into();
    h.fake.remove_image(&s2.image, true);
    h.sup.start(s2.clone()).await.expect("start");
    until_running(&mut h, anonymous).await;
    assert_eq!(h.fake.pulls().last(), Some(&(s2.image.clone(), None)));
}

/// A missing image that cannot be pulled fails the runner, naming the
/// image, and leaves no container.
#[tokio::test(start_paused = true)]
async fn an_image_that_cannot_be_pulled_fails_the_runner_naming_it() {
    let mut h = harness().await;
    let runner = RunnerId::new_v4();
    let s = spec(runner);
    h.fake.remove_image(&s.image, false);
    h.sup.start(s.clone()).await.expect("start");
    let evs = until_removed(&mut h.events, runner).await;
    let reason = evs
        .iter()
        .find_map(|e| match &e.state {
            RunnerState::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Failed: {evs:?}"));
    assert!(
        reason.starts_with(&format!("pull image {}: ", s.image)),
        "{reason}"
    );
    assert!(h.fake.containers_of(runner).is_empty());
    assert_eq!(
        h.fake.calls().iter().filter(|c| **c == "create").count(),
        1,
        "no create after a failed pull"
    );
}

/// RUNNING carries how long the runner waited for its image: the pull's
/// time for a missing image, 0 for one already there.
#[tokio::test(start_paused = true)]
async fn running_reports_the_image_pull_time_and_zero_without_a_pull() {
    let mut h = harness().await;
    h.fake.set_pull_delay(Duration::from_millis(1500));
    let runner = RunnerId::new_v4();
    let s = spec(runner);
    h.fake.remove_image(&s.image, true);
    h.sup.start(s.clone()).await.expect("start");
    let evs = events_until(&mut h.events, runner, LONG, |st| *st == RunnerState::Running)
        .await
        .unwrap_or_else(|seen| panic!("not running: {seen:?}"));
    let running = evs.last().expect("running");
    assert_eq!(running.image_pull_ms, 1500, "{running:?}");
    assert_eq!(running.image.as_deref(), Some(s.image.as_str()));
    assert_eq!(autogit_proto::v1::RunnerStatus::from(running.clone()).image_pull_ms, 1500);

    let present = RunnerId::new_v4();
    h.sup.start(spec(present)).await.expect("start");
    let evs = events_until(&mut h.events, present, LONG, |st| *st == RunnerState::Running)
        .await
        .unwrap_or_else(|seen| panic!("not running: {seen:?}"));
    assert_eq!(evs.last().expect("running").image_pull_ms, 0);
}
