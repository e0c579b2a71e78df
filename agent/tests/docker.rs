//! The runner supervisor against the real Docker daemon: lifecycle and event
//! order, idempotent starts, failures with log tails, pull failures, what
//! `docker inspect` shows, graceful and abort stops, adoption after an agent
//! restart, and GPU device plumbing.
//!
//! Every test uses its own scope label and fresh runner ids, runs containers
//! with `network_mode: host` (no bridge exists here), and removes its
//! containers on drop, so tests can run concurrently with each other and
//! with other suites on the same daemon.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use autogit_agent::docker::{
    self, ContainerEngine, ContainerStatus, DockerEngine, RunnerEvent, RunnerId, RunnerSpec,
    RunnerState, StartOutcome, StopOutcome, StopRequest, SupervisorConfig, SupervisorHandle,
    mapping,
};
use autogit_proto::v1 as pb;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use support::{
    BUSYBOX_IMAGE, Cleanup, ensure_busybox_image, events_until, events_until_removed, next_event,
    states, unique_scope, wait_for_file,
};
use tokio::sync::mpsc;

fn sh_spec(runner: RunnerId, script: &str) -> RunnerSpec {
    let mut spec = RunnerSpec::new(runner, "test-pool", BUSYBOX_IMAGE);
    spec.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
    spec.network_mode = Some("host".into());
    spec
}

struct Harness {
    engine: DockerEngine,
    sup: SupervisorHandle,
    events: mpsc::Receiver<RunnerEvent>,
    scope: String,
    _cleanup: Cleanup,
}

async fn harness(test: &str, tweak: impl FnOnce(&mut SupervisorConfig)) -> Harness {
    ensure_busybox_image();
    let scope = unique_scope(test);
    let cleanup = Cleanup::new(&scope);
    let engine = support::engine().await;
    let mut config = SupervisorConfig {
        scope: Some(scope.clone()),
        abort_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    tweak(&mut config);
    let (tx, events) = mpsc::channel(256);
    let sup = docker::spawn(Arc::new(engine.clone()), config, tx)
        .await
        .expect("spawn supervisor");
    Harness {
        engine,
        sup,
        events,
        scope,
        _cleanup: cleanup,
    }
}

/// Containers (running or not) labelled with this runner id.
async fn count_for_runner(engine: &DockerEngine, runner: RunnerId) -> usize {
    let filters = HashMap::from([(
        "label",
        vec![format!("{}={runner}", mapping::LABEL_RUNNER_ID)],
    )]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    engine
        .client()
        .list_containers(Some(opts))
        .await
        .expect("list containers")
        .len()
}

async fn inspect(engine: &DockerEngine, id: &str) -> bollard::models::ContainerInspectResponse {
    engine
        .client()
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .expect("inspect container")
}

fn container_id(events: &[RunnerEvent]) -> String {
    events
        .iter()
        .find_map(|e| e.container_id.clone())
        .expect("an event with a container id")
}

#[tokio::test]
async fn engine_negotiates_api_version_and_reports_info() {
    let engine = support::engine().await;
    let info = engine.info().await.expect("info");
    assert!(!info.version.is_empty());
    assert!(!info.root_dir.is_empty());
    // The client speaks no newer API than the daemon does (1.41 on Docker 20.10).
    let parse = |v: &str| -> (u32, u32) {
        let (a, b) = v.split_once('.').expect("major.minor");
        (a.parse().expect("major"), b.parse().expect("minor"))
    };
    assert!(
        parse(&engine.api_version()) <= parse(&info.api_version),
        "client {} vs daemon {}",
        engine.api_version(),
        info.api_version
    );
    let inv = engine.inventory_info().await;
    assert!(inv.available);
    assert_eq!(inv.api_version.as_deref(), Some(info.api_version.as_str()));
    assert!(inv.root_free_bytes.is_some_and(|b| b > 0), "{inv:?}");
}

#[tokio::test]
async fn start_reports_creating_running_exited_removed_and_leaves_nothing() {
    let mut h = harness("lifecycle", |_| {}).await;
    let runner = RunnerId::new_v4();
    let out = h
        .sup
        .start(sh_spec(runner, "echo hello; sleep 0.3"))
        .await
        .expect("start");
    assert_eq!(out, StartOutcome::Started);

    let evs = events_until_removed(&mut h.events, runner).await;
    assert_eq!(
        states(&evs),
        vec![
            RunnerState::Creating,
            RunnerState::Running,
            RunnerState::Exited { code: 0 },
            RunnerState::Removed
        ]
    );
    let id = container_id(&evs);
    assert!(
        evs.iter()
            .all(|e| e.container_id.as_deref() == Some(id.as_str())),
        "{evs:?}"
    );
    assert!(evs.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(
        count_for_runner(&h.engine, runner).await,
        0,
        "container must be gone"
    );
    assert_eq!(h.sup.running_count().await.expect("count"), 0);

    // The wire form of an event.
    let st = pb::RunnerStatus::from(evs[2].clone());
    assert_eq!(st.state, pb::RunnerState::Exited as i32);
    assert_eq!(st.runner_id, runner.to_string());
    assert_eq!(st.container_id, id);
}

#[tokio::test]
async fn waiting_outlives_the_request_timeout() {
    ensure_busybox_image();
    let scope = unique_scope("longwait");
    let _cleanup = Cleanup::new(&scope);
    // A 1 s request timeout and a container that lives 3 s: the wait must
    // not time out (the daemon sends the headers at once, the status at exit),
    // or every runner that lives longer than the timeout would be "lost".
    let engine = support::engine()
        .await
        .with_request_timeout(Duration::from_secs(1));
    let runner = RunnerId::new_v4();
    let id = engine
        .create_container(&sh_spec(runner, "sleep 3; exit 4"), Some(&scope))
        .await
        .expect("create");
    engine.start_container(&id).await.expect("start");
    let started = std::time::Instant::now();
    let code = engine
        .wait_container(&id)
        .await
        .expect("wait past the request timeout");
    assert_eq!(code, 4);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    engine.remove_container(&id).await.expect("remove");
    assert_eq!(count_for_runner(&engine, runner).await, 0);
}

#[tokio::test]
async fn repeated_start_creates_no_second_container() {
    let mut h = harness("idempotent", |_| {}).await;
    let runner = RunnerId::new_v4();
    let spec = sh_spec(runner, "sleep 30");

    // Two starts racing, then one more once it runs.
    let (a, b) = tokio::join!(h.sup.start(spec.clone()), h.sup.start(spec.clone()));
    let mut outcomes = vec![a.expect("start a"), b.expect("start b")];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        vec![StartOutcome::AlreadyPresent, StartOutcome::Started]
    );
    events_until(&mut h.events, runner, |s| *s == RunnerState::Running).await;
    assert_eq!(h.sup.running_count().await.expect("count"), 1);

    assert_eq!(
        h.sup.start(spec.clone()).await.expect("again"),
        StartOutcome::AlreadyPresent
    );
    // The state is reported again.
    let ev = next_event(&mut h.events).await;
    assert_eq!((ev.runner_id, ev.state), (runner, RunnerState::Running));
    assert_eq!(count_for_runner(&h.engine, runner).await, 1);

    // An agent restart: a fresh supervisor adopts the container, and the
    // coordinator's repeated StartRunner still creates no second one.
    h.sup.shutdown().await;
    let (tx, mut events2) = mpsc::channel(64);
    let config = SupervisorConfig {
        scope: Some(h.scope.clone()),
        abort_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let sup2 = docker::spawn(Arc::new(h.engine.clone()), config, tx)
        .await
        .expect("respawn");
    let adopted = events_until(&mut events2, runner, |s| *s == RunnerState::Running).await;
    assert_eq!(states(&adopted), vec![RunnerState::Running]);
    assert_eq!(
        sup2.start(spec.clone()).await.expect("start after restart"),
        StartOutcome::AlreadyPresent
    );
    assert_eq!(count_for_runner(&h.engine, runner).await, 1);

    let stop = StopRequest {
        runner_id: runner,
        graceful: false,
        grace_period: None,
    };
    assert_eq!(sup2.stop(stop).await.expect("stop"), StopOutcome::Signalled);
    let evs = events_until_removed(&mut events2, runner).await;
    assert!(matches!(
        evs.last().map(|e| &e.state),
        Some(RunnerState::Removed)
    ));
    assert_eq!(count_for_runner(&h.engine, runner).await, 0);

    // After it is gone, a late duplicate StartRunner only re-reports Removed.
    assert_eq!(
        sup2.start(spec).await.expect("late start"),
        StartOutcome::AlreadyFinished
    );
    let ev = next_event(&mut events2).await;
    assert_eq!((ev.runner_id, ev.state), (runner, RunnerState::Removed));
    assert_eq!(count_for_runner(&h.engine, runner).await, 0);
}

/// The agent asks Docker nothing before creating a runner's container (a
/// burst of starts would queue those calls in dockerd): a container that
/// already carries the runner's name, created behind the supervisor's back
/// (an earlier agent's create that landed after this one listed), makes the
/// create conflict, and that container is adopted and started, never a
/// second one made.
#[tokio::test]
async fn a_container_created_behind_the_supervisors_back_is_adopted_not_doubled() {
    let mut h = harness("conflict", |_| {}).await;
    let runner = RunnerId::new_v4();
    let spec = sh_spec(runner, "sleep 30");
    let existing = h
        .engine
        .create_container(&spec, Some(&h.scope))
        .await
        .expect("the predecessor's create");

    assert_eq!(
        h.sup.start(spec.clone()).await.expect("start"),
        StartOutcome::Started
    );
    let evs = events_until(&mut h.events, runner, |s| *s == RunnerState::Running).await;
    assert_eq!(container_id(&evs), existing, "the existing container runs");
    assert_eq!(count_for_runner(&h.engine, runner).await, 1);
    assert_eq!(
        inspect(&h.engine, &existing)
            .await
            .state
            .and_then(|s| s.running),
        Some(true)
    );
}

#[tokio::test]
async fn non_zero_exit_reports_code_and_log_tail() {
    let mut h = harness("nonzero", |_| {}).await;
    let runner = RunnerId::new_v4();
    let script = "for i in $(seq 1 30); do echo line-$i; done; sleep 0.2; echo oops >&2; exit 3";
    h.sup.start(sh_spec(runner, script)).await.expect("start");

    let evs = events_until_removed(&mut h.events, runner).await;
    let st = states(&evs);
    assert_eq!(
        st[..3],
        [
            RunnerState::Creating,
            RunnerState::Running,
            RunnerState::Exited { code: 3 }
        ]
    );
    let RunnerState::Failed { reason, log_tail } = &st[3] else {
        panic!("expected Failed after Exited: {st:?}")
    };
    assert!(reason.contains("code 3"), "{reason}");
    assert_eq!(log_tail.len(), 20, "{log_tail:?}");
    // stdout and stderr are copied to the log separately (hence the pause
    // before the error line); both are in the tail.
    assert_eq!(
        log_tail.last().map(String::as_str),
        Some("oops"),
        "{log_tail:?}"
    );
    assert!(log_tail.contains(&"line-30".to_owned()), "{log_tail:?}");
    assert!(
        !log_tail.contains(&"line-1".to_owned()),
        "only the tail: {log_tail:?}"
    );
    assert_eq!(st[4], RunnerState::Removed);
    assert_eq!(count_for_runner(&h.engine, runner).await, 0);

    let wire = pb::RunnerStatus::from(evs[3].clone());
    assert_eq!(wire.state, pb::RunnerState::Failed as i32);
    assert_eq!(wire.log_tail.len(), 20);
}

#[tokio::test]
async fn start_failure_reports_failed_and_removes_the_container() {
    let mut h = harness("startfail", |_| {}).await;
    let runner = RunnerId::new_v4();
    let mut spec = sh_spec(runner, "");
    spec.command = vec!["/bin/no-such-binary".into()];
    h.sup.start(spec).await.expect("start");

    let evs = events_until_removed(&mut h.events, runner).await;
    let st = states(&evs);
    assert_eq!(st[0], RunnerState::Creating);
    let RunnerState::Failed { reason, .. } = &st[1] else {
        panic!("expected Failed: {st:?}")
    };
    assert!(reason.starts_with("start container"), "{reason}");
    assert!(reason.contains("no-such-binary"), "{reason}");
    assert_eq!(st.last(), Some(&RunnerState::Removed));
    assert!(!st.contains(&RunnerState::Running), "{st:?}");
    assert_eq!(count_for_runner(&h.engine, runner).await, 0);
}

#[tokio::test]
async fn missing_image_whose_pull_fails_reports_the_image_and_leaves_nothing() {
    let mut h = harness("pullfail", |_| {}).await;
    let runner = RunnerId::new_v4();
    let image = format!("autogit-test/not-here-{}:1", &runner.to_string()[..8]);
    let mut spec = sh_spec(runner, "true");
    spec.image = image.clone();
    h.sup.start(spec).await.expect("start");

    let evs = events_until_removed(&mut h.events, runner).await;
    let st = states(&evs);
    assert_eq!(st.len(), 2, "{st:?}");
    let RunnerState::Failed { reason, log_tail } = &st[0] else {
        panic!("expected Failed: {st:?}")
    };
    assert!(
        reason.starts_with(&format!("pull image {image}: ")),
        "{reason}"
    );
    assert!(log_tail.is_empty());
    assert_eq!(st[1], RunnerState::Removed);
    assert!(evs.iter().all(|e| e.container_id.is_none()));
    assert_eq!(count_for_runner(&h.engine, runner).await, 0);
    let inspected = h.engine.client().inspect_image(&image).await;
    assert!(
        matches!(
            inspected,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })
        ),
        "the image must not be there: {inspected:?}"
    );
}

/// An image made for another architecture than the daemon's is refused
/// before anything runs, with both platforms named, and nothing is left.
#[tokio::test]
async fn an_image_for_another_architecture_is_refused_before_it_runs() {
    let mut h = harness("foreign", |_| {}).await;
    let daemon = autogit_agent::docker::normalise_arch(
        &h.engine
            .client()
            .info()
            .await
            .expect("info")
            .architecture
            .unwrap_or_default(),
    );
    let (foreign, platform) = if daemon == "riscv64" {
        ("autogit-test/foreign:amd64", "linux/amd64")
    } else {
        ("autogit-test/foreign:riscv64", "linux/riscv64")
    };
    // An empty image of that platform, loaded from a hand-made `docker
    // save` archive (`docker import --platform` is ignored by older engines).
    let (os, arch) = platform.split_once('/').unwrap();
    let script = format!(
        r#"set -e
d=$(mktemp -d)
cd "$d"
tar -cf layer.tar --files-from /dev/null
diff=$(sha256sum layer.tar | cut -d' ' -f1)
printf '{{"architecture":"{arch}","os":"{os}","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}}}}' "$diff" > config.json
printf '[{{"Config":"config.json","RepoTags":["{foreign}"],"Layers":["layer.tar"]}}]' > manifest.json
tar -cf image.tar manifest.json config.json layer.tar
docker load -i image.tar
rm -rf "$d""#
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("docker load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let runner = RunnerId::new_v4();
    let mut spec = sh_spec(runner, "true");
    spec.image = foreign.to_owned();
    h.sup.start(spec).await.expect("start");
    let evs = events_until_removed(&mut h.events, runner).await;
    let st = states(&evs);
    let RunnerState::Failed { reason, .. } = &st[0] else {
        panic!("expected Failed first: {st:?}")
    };
    let image_arch = arch.replace("amd64", "x86_64");
    assert!(
        reason.starts_with(&format!(
            "image {foreign} is for {os}/{image_arch}, but this host's Docker runs {daemon}"
        )),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("this host's Docker runs {daemon}")),
        "{reason}"
    );
    assert!(!st.contains(&RunnerState::Running), "{st:?}");
    assert_eq!(st.last(), Some(&RunnerState::Removed));
    assert_eq!(
        count_for_runner(&h.engine, runner).await,
        0,
        "no container left"
    );
    let _ = h
        .engine
        .client()
        .remove_image(
            foreign,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;

    // The same host's own image is not refused.
    let runner = RunnerId::new_v4();
    h.sup.start(sh_spec(runner, "true")).await.expect("start");
    let st = states(&events_until_removed(&mut h.events, runner).await);
    assert!(st.contains(&RunnerState::Running), "{st:?}");
}

#[tokio::test]
async fn inspect_shows_labels_limits_mounts_env_and_stop_signal() {
    let mut h = harness("inspect", |_| {}).await;
    let runner = RunnerId::new_v4();
    let dir = tempfile::tempdir().expect("tempdir");
    let host_dir = dir.path().to_str().expect("utf-8 path").to_owned();

    // The whole way from the wire message.
    let msg = pb::StartRunner {
        runner_id: runner.to_string(),
        pool: "big-pool".into(),
        spec: Some(pb::ContainerSpec {
            image: BUSYBOX_IMAGE.into(),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo mounted > /out/proof; sleep 30".into(),
            ],
            env: vec![pb::EnvVar {
                name: "CI_SERVER_TOKEN".into(),
                value: "glrt-test-secret".into(),
            }],
            cpu_limit: 0.5,
            memory_limit_bytes: 64 * 1024 * 1024,
            gpus: None,
            labels: HashMap::from([("team".to_owned(), "infra".to_owned())]),
            network_mode: "host".into(),
            mounts: vec![pb::Mount {
                source: host_dir.clone(),
                target: "/out".into(),
                read_only: false,
            }],
            stop_signal: "SIGQUIT".into(),
            registry_auth: None,
        }),
    };
    let mut spec = RunnerSpec::try_from(msg).expect("valid StartRunner");
    // The scope label is not settable from the wire; tests still need it for cleanup.
    assert!(!format!("{spec:?}").contains("glrt-test-secret"));
    spec.labels.insert("test".into(), "inspect".into());
    h.sup.start(spec).await.expect("start");
    let evs = events_until(&mut h.events, runner, |s| *s == RunnerState::Running).await;
    let id = container_id(&evs);

    let c = inspect(&h.engine, &id).await;
    assert_eq!(
        c.name.as_deref(),
        Some(format!("/autogit-runner-{runner}").as_str())
    );
    let config = c.config.expect("config");
    let labels = config.labels.expect("labels");
    assert_eq!(
        labels.get("autogit.managed").map(String::as_str),
        Some("true")
    );
    assert_eq!(labels.get("autogit.runner-id"), Some(&runner.to_string()));
    assert_eq!(
        labels.get("autogit.pool").map(String::as_str),
        Some("big-pool")
    );
    assert_eq!(labels.get("autogit.scope"), Some(&h.scope));
    assert_eq!(labels.get("team").map(String::as_str), Some("infra"));
    assert_eq!(config.stop_signal.as_deref(), Some("SIGQUIT"));
    assert!(
        config
            .env
            .unwrap_or_default()
            .contains(&"CI_SERVER_TOKEN=glrt-test-secret".to_owned())
    );
    let hc = c.host_config.expect("host config");
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.memory, Some(64 * 1024 * 1024));
    assert_eq!(hc.network_mode.as_deref(), Some("host"));
    let mounts = c.mounts.expect("mounts");
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].source.as_deref(), Some(host_dir.as_str()));
    assert_eq!(mounts[0].destination.as_deref(), Some("/out"));
    assert_eq!(mounts[0].rw, Some(true));
    // The mount really works.
    wait_for_file(&dir.path().join("proof")).await;

    // list_managed sees it, and the wire form carries pool and state.
    let listed = h.sup.list_managed().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].status, ContainerStatus::Running);
    assert_eq!(listed[0].stop_signal.as_deref(), Some("SIGQUIT"));
    let wire = pb::ManagedContainer::from(listed[0].clone());
    assert_eq!(wire.pool, "big-pool");
    assert_eq!(wire.state, pb::RunnerState::Running as i32);

    let stop = StopRequest {
        runner_id: runner,
        graceful: false,
        grace_period: None,
    };
    h.sup.stop(stop).await.expect("stop");
    events_until_removed(&mut h.events, runner).await;
}

/// A runner that finishes its "job" on SIGQUIT: writes a marker and exits 0.
const QUIT_TRAP: &str = "trap 'echo quit > /out/quit; exit 0' QUIT; touch /out/ready; \
                         while true; do sleep 0.1; done";

#[tokio::test]
async fn graceful_stop_delivers_the_stop_signal() {
    let mut h = harness("graceful", |_| {}).await;
    let runner = RunnerId::new_v4();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = sh_spec(runner, QUIT_TRAP);
    spec.stop_signal = Some("SIGQUIT".into());
    spec.mounts = vec![docker::BindMount {
        source: dir.path().to_owned(),
        target: "/out".into(),
        read_only: false,
    }];
    h.sup.start(spec).await.expect("start");
    events_until(&mut h.events, runner, |s| *s == RunnerState::Running).await;
    wait_for_file(&dir.path().join("ready")).await;

    let stop = StopRequest {
        runner_id: runner,
        graceful: true,
        grace_period: Some(Duration::from_secs(20)),
    };
    assert_eq!(
        h.sup.stop(stop).await.expect("stop"),
        StopOutcome::Signalled
    );
    let evs = events_until_removed(&mut h.events, runner).await;
    assert_eq!(
        states(&evs),
        vec![RunnerState::Exited { code: 0 }, RunnerState::Removed]
    );
    let marker = std::fs::read_to_string(dir.path().join("quit")).expect("the QUIT trap ran");
    assert_eq!(marker.trim(), "quit");
    assert_eq!(count_for_runner(&h.engine, runner).await, 0);
}

#[tokio::test]
async fn abort_stop_kills_without_the_graceful_signal() {
    let mut h = harness("abort", |_| {}).await;
    let runner = RunnerId::new_v4();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = sh_spec(runner, QUIT_TRAP);
    spec.stop_signal = Some("SIGQUIT".into());
    spec.mounts = vec![docker::BindMount {
        source: dir.path().to_owned(),
        target: "/out".into(),
        read_only: false,
    }];
    h.sup.start(spec).await.expect("start");
    events_until(&mut h.events, runner, |s| *s == RunnerState::Running).await;
    wait_for_file(&dir.path().join("ready")).await;

    let started = std::time::Instant::now();
    let stop = StopRequest {
        runner_id: runner,
        graceful: false,
        grace_period: None,
    };
    assert_eq!(
        h.sup.stop(stop).await.expect("stop"),
        StopOutcome::Signalled
    );
    let evs = events_until_removed(&mut h.events, runner).await;
    // PID 1 ignores SIGTERM here, so the abort timeout (1 s) ends in SIGKILL;
    // a stop we asked for is not reported as a failure.
    assert_eq!(
        states(&evs),
        vec![RunnerState::Exited { code: 137 }, RunnerState::Removed]
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !dir.path().join("quit").exists(),
        "the graceful signal must not be sent"
    );
    assert_eq!(count_for_runner(&h.engine, runner).await, 0);
}

#[tokio::test]
async fn graceful_stop_kills_after_the_grace_period() {
    let mut h = harness("grace", |_| {}).await;
    let runner = RunnerId::new_v4();
    // Ignores SIGQUIT (and, as PID 1, SIGTERM): only SIGKILL ends it.
    let mut spec = sh_spec(runner, "trap '' QUIT; while true; do sleep 0.1; done");
    spec.stop_signal = Some("SIGQUIT".into());
    h.sup.start(spec).await.expect("start");
    events_until(&mut h.events, runner, |s| *s == RunnerState::Running).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let stop = StopRequest {
        runner_id: runner,
        graceful: true,
        grace_period: Some(Duration::from_millis(1500)),
    };
    assert_eq!(
        h.sup.stop(stop).await.expect("stop"),
        StopOutcome::Signalled
    );
    let evs = events_until_removed(&mut h.events, runner).await;
    assert_eq!(
        states(&evs),
        vec![RunnerState::Exited { code: 137 }, RunnerState::Removed]
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "killed before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[tokio::test]
async fn stop_of_an_unknown_runner_reports_removed() {
    let mut h = harness("unknown", |_| {}).await;
    let runner = RunnerId::new_v4();
    let stop = StopRequest {
        runner_id: runner,
        graceful: true,
        grace_period: None,
    };
    assert_eq!(h.sup.stop(stop).await.expect("stop"), StopOutcome::NotFound);
    let ev = next_event(&mut h.events).await;
    assert_eq!((ev.runner_id, ev.state), (runner, RunnerState::Removed));
}

#[tokio::test]
async fn supervisor_adopts_containers_that_existed_before_it() {
    ensure_busybox_image();
    let scope = unique_scope("adopt");
    let _cleanup = Cleanup::new(&scope);
    let engine = support::engine().await;

    // What a previous agent left behind: one runner still running, one that
    // exited while no agent was watching.
    let running = RunnerId::new_v4();
    let id_running = engine
        .create_container(&sh_spec(running, "sleep 2"), Some(&scope))
        .await
        .expect("create running");
    engine
        .start_container(&id_running)
        .await
        .expect("start running");
    let exited = RunnerId::new_v4();
    let id_exited = engine
        .create_container(&sh_spec(exited, "echo bye; exit 5"), Some(&scope))
        .await
        .expect("create exited");
    engine
        .start_container(&id_exited)
        .await
        .expect("start exited");
    assert_eq!(engine.wait_container(&id_exited).await.expect("wait"), 5);

    let (tx, mut events) = mpsc::channel(64);
    let config = SupervisorConfig {
        scope: Some(scope.clone()),
        ..Default::default()
    };
    let sup = docker::spawn(Arc::new(engine.clone()), config, tx)
        .await
        .expect("spawn");

    let listed = sup.list_managed().await.expect("list");
    let row = listed
        .iter()
        .find(|c| c.runner_id == running)
        .expect("running one is listed");
    assert_eq!(row.container_id, id_running);
    assert_eq!(row.pool, "test-pool");

    let mut by_runner: HashMap<RunnerId, Vec<RunnerState>> = HashMap::new();
    for _ in 0..16 {
        let ev = next_event(&mut events).await;
        by_runner.entry(ev.runner_id).or_default().push(ev.state);
        let done = |r: &RunnerId| {
            by_runner
                .get(r)
                .is_some_and(|s| s.last() == Some(&RunnerState::Removed))
        };
        if done(&running) && done(&exited) {
            break;
        }
    }
    assert_eq!(
        by_runner.get(&running),
        Some(&vec![
            RunnerState::Running,
            RunnerState::Exited { code: 0 },
            RunnerState::Removed
        ])
    );
    let ex = by_runner.get(&exited).expect("exited one reported");
    assert_eq!(ex[0], RunnerState::Exited { code: 5 });
    assert!(
        matches!(&ex[1], RunnerState::Failed { log_tail, .. } if log_tail == &vec!["bye".to_owned()]),
        "{ex:?}"
    );
    assert_eq!(ex[2], RunnerState::Removed);
    assert_eq!(count_for_runner(&engine, running).await, 0);
    assert_eq!(count_for_runner(&engine, exited).await, 0);
    assert!(sup.list_managed().await.expect("list").is_empty());
}

#[tokio::test]
async fn failed_container_is_kept_for_the_retention_then_removed() {
    let mut h = harness("retain", |c| c.failed_retention = Duration::from_secs(2)).await;
    let runner = RunnerId::new_v4();
    h.sup
        .start(sh_spec(runner, "echo broken; exit 1"))
        .await
        .expect("start");
    let evs = events_until(&mut h.events, runner, |s| {
        matches!(s, RunnerState::Failed { .. })
    })
    .await;
    let id = container_id(&evs);
    // Still there for an operator to look at.
    let c = inspect(&h.engine, &id).await;
    assert_eq!(c.state.and_then(|s| s.exit_code), Some(1));
    let listed = h.sup.list_managed().await.expect("list");
    assert_eq!(
        listed.first().map(|c| c.status),
        Some(ContainerStatus::Exited { code: 1 })
    );

    let rest = events_until_removed(&mut h.events, runner).await;
    assert_eq!(states(&rest), vec![RunnerState::Removed]);
    assert_eq!(count_for_runner(&h.engine, runner).await, 0);

    // A stop during retention removes at once.
    let runner2 = RunnerId::new_v4();
    let mut h2 = harness("retain-stop", |c| {
        c.failed_retention = Duration::from_secs(600)
    })
    .await;
    h2.sup
        .start(sh_spec(runner2, "exit 2"))
        .await
        .expect("start");
    events_until(&mut h2.events, runner2, |s| {
        matches!(s, RunnerState::Failed { .. })
    })
    .await;
    assert_eq!(count_for_runner(&h2.engine, runner2).await, 1);
    let stop = StopRequest {
        runner_id: runner2,
        graceful: true,
        grace_period: None,
    };
    assert_eq!(
        h2.sup.stop(stop).await.expect("stop"),
        StopOutcome::NotRunning
    );
    events_until_removed(&mut h2.events, runner2).await;
    assert_eq!(count_for_runner(&h2.engine, runner2).await, 0);
}

#[tokio::test]
async fn nvidia_device_request_and_device_nodes_reach_the_daemon() {
    ensure_busybox_image();
    let scope = unique_scope("gpu");
    let _cleanup = Cleanup::new(&scope);
    let engine = support::engine().await;
    let runner = RunnerId::new_v4();
    let mut spec = sh_spec(runner, "true");
    spec.gpus.nvidia_uuids = vec![
        "GPU-11111111-2222-3333-4444-555555555555".into(),
        "GPU-66666666-7777-8888-9999-000000000000".into(),
    ];
    spec.gpus.device_paths = vec!["/dev/kfd".into(), "/dev/dri/renderD128".into()];

    // Created, never started (no NVIDIA runtime here), and without the
    // managed label so no other supervisor on this daemon adopts it.
    let mut body = mapping::container_config(&spec, Some(&scope));
    if let Some(labels) = body.labels.as_mut() {
        labels.remove(mapping::LABEL_MANAGED);
    }
    let opts = bollard::query_parameters::CreateContainerOptionsBuilder::new()
        .name(&format!("autogit-gpu-test-{runner}"))
        .build();
    let created = engine
        .client()
        .create_container(Some(opts), body)
        .await
        .expect("create");
    let c = inspect(&engine, &created.id).await;
    let _ = engine
        .client()
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;

    let hc = c.host_config.expect("host config");
    let reqs = hc.device_requests.expect("device requests");
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].driver.as_deref(), Some("nvidia"));
    assert_eq!(reqs[0].device_ids.as_ref(), Some(&spec.gpus.nvidia_uuids));
    assert_eq!(reqs[0].capabilities, Some(vec![vec!["gpu".to_owned()]]));
    let devices: Vec<(String, String, String)> = hc
        .devices
        .expect("devices")
        .into_iter()
        .map(|d| {
            (
                d.path_on_host.unwrap_or_default(),
                d.path_in_container.unwrap_or_default(),
                d.cgroup_permissions.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        devices,
        vec![
            ("/dev/kfd".into(), "/dev/kfd".into(), "rwm".into()),
            (
                "/dev/dri/renderD128".into(),
                "/dev/dri/renderD128".into(),
                "rwm".into()
            ),
        ]
    );
}

#[tokio::test]
async fn gpu_runner_on_a_host_without_nvidia_fails_clearly() {
    let mut h = harness("nogpu", |_| {}).await;
    if std::path::Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipping: this host has an NVIDIA driver");
        return;
    }
    let runner = RunnerId::new_v4();
    let mut spec = sh_spec(runner, "true");
    spec.gpus.nvidia_uuids = vec!["GPU-11111111-2222-3333-4444-555555555555".into()];
    h.sup.start(spec).await.expect("start");
    let evs = events_until_removed(&mut h.events, runner).await;
    let st = states(&evs);
    let failed = st
        .iter()
        .find_map(|s| match s {
            RunnerState::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a Failed event");
    assert!(failed.starts_with("start container"), "{failed}");
    assert!(failed.contains("nvidia"), "{failed}");
    assert!(!st.contains(&RunnerState::Running), "{st:?}");
    assert_eq!(count_for_runner(&h.engine, runner).await, 0);
}

#[tokio::test]
async fn a_stalled_event_receiver_never_blocks_the_supervisor() {
    ensure_busybox_image();
    let scope = unique_scope("stalled");
    let _cleanup = Cleanup::new(&scope);
    let engine = support::engine().await;
    // Room for one event, and nobody reads (a session that is reconnecting).
    let (tx, mut events) = mpsc::channel(1);
    let config = SupervisorConfig {
        scope: Some(scope.clone()),
        ..Default::default()
    };
    let sup = docker::spawn(Arc::new(engine.clone()), config, tx)
        .await
        .expect("spawn");
    let runners: Vec<RunnerId> = (0..2).map(|_| RunnerId::new_v4()).collect();
    for r in &runners {
        sup.start(sh_spec(*r, "sleep 0.5")).await.expect("start");
    }
    // Both containers appear, finish and are removed although their events are stuck.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let mut seen = [false; 2];
    loop {
        let mut gone = 0;
        for (i, r) in runners.iter().enumerate() {
            let n = count_for_runner(&engine, *r).await;
            seen[i] |= n > 0;
            gone += usize::from(seen[i] && n == 0);
        }
        if gone == runners.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runners not run and removed: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The actor still answers, and it has processed every Removed.
    let five = Duration::from_secs(5);
    for r in &runners {
        let again = tokio::time::timeout(five, sup.start(sh_spec(*r, "true"))).await;
        assert_eq!(
            again.expect("answers").expect("start"),
            StartOutcome::AlreadyFinished
        );
    }
    let count = tokio::time::timeout(five, sup.running_count()).await;
    assert_eq!(count.expect("answers").expect("count"), 0);
    let listed = tokio::time::timeout(five, sup.list_managed()).await;
    assert!(listed.expect("answers").expect("list").is_empty());
    // Nothing was lost: all ten events (eight transitions, two re-reported
    // Removed) arrive, in order per runner.
    let mut got: HashMap<RunnerId, Vec<RunnerState>> = HashMap::new();
    for _ in 0..10 {
        let ev = next_event(&mut events).await;
        got.entry(ev.runner_id).or_default().push(ev.state);
    }
    for r in &runners {
        assert_eq!(
            got.get(r),
            Some(&vec![
                RunnerState::Creating,
                RunnerState::Running,
                RunnerState::Exited { code: 0 },
                RunnerState::Removed,
                RunnerState::Removed
            ])
        );
    }
}

/// Runs `docker ARGS`, returning trimmed stdout; panics on failure.
fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn executor_leftovers_are_listed_and_removed_by_short_token_only() {
    use autogit_agent::docker::LeftoverKind;
    ensure_busybox_image();
    let engine = support::engine().await;
    let uniq = &uuid::Uuid::new_v4().simple().to_string()[..9];
    let ours = format!("o{}", &uniq[1..]);
    let theirs = format!("f{}", &uniq[1..]);
    let label = |short: &str| format!("com.gitlab.gitlab-runner.runner.id={short}");
    for short in [&ours, &theirs] {
        let l = label(short);
        docker_cli(&[
            "run",
            "-d",
            "--network",
            "none",
            "--label",
            "com.gitlab.gitlab-runner.managed=true",
            "--label",
            &l,
            BUSYBOX_IMAGE,
            "sleep",
            "300",
        ]);
        docker_cli(&[
            "volume",
            "create",
            "--label",
            "com.gitlab.gitlab-runner.managed=true",
            "--label",
            &l,
        ]);
    }
    let listed = engine.list_executor_leftovers().await.expect("list");
    for short in [&ours, &theirs] {
        let kinds: Vec<LeftoverKind> = listed
            .iter()
            .filter(|l| &l.short_token == short)
            .map(|l| l.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![LeftoverKind::Container, LeftoverKind::Volume],
            "{listed:?}"
        );
    }

    let n = engine
        .remove_executor_leftovers(&ours)
        .await
        .expect("remove");
    assert_eq!((n.containers, n.volumes, n.networks), (1, 1, 0));
    assert!(docker_cli(&["ps", "-aq", "--filter", &format!("label={}", label(&ours))]).is_empty());
    assert!(
        docker_cli(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label={}", label(&ours))
        ])
        .is_empty()
    );
    // Again: nothing left, and no error.
    let n = engine
        .remove_executor_leftovers(&ours)
        .await
        .expect("remove again");
    assert!(n.is_empty());
    // Another runner's objects are untouched; clean them up.
    let n = engine
        .remove_executor_leftovers(&theirs)
        .await
        .expect("remove theirs");
    assert_eq!((n.containers, n.volumes), (1, 1), "theirs was still there");
}
