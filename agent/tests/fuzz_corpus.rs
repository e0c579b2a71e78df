//! Replays the agent's fuzz corpora (`fuzz/corpus/<target>/`).

use autogit_agent::fuzz;
use autogit_certs::fuzz::replay_corpus;

#[test]
fn start_runner_corpus() {
    replay_corpus("start_runner", fuzz::start_runner);
}

#[test]
fn agent_config_corpus() {
    replay_corpus("agent_config", fuzz::config);
}

/// Writes the hand-made binary seeds of `start_runner` (protobuf). Run once
/// after changing them: `cargo test -p autogit-agent --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_start_runner_seeds() {
    use autogit_proto::v1 as pb;
    use prost::Message;
    let good = pb::StartRunner {
        runner_id: "0b8a3f52-8d2f-4c39-9c5e-2f7d1f0f6b11".into(),
        pool: "cuda".into(),
        spec: Some(pb::ContainerSpec {
            image: "gitlab/gitlab-runner:latest".into(),
            command: vec![
                "run-single".into(),
                "--token".into(),
                "{runner_token}".into(),
            ],
            env: vec![pb::EnvVar {
                name: "CI_SERVER_TOKEN".into(),
                value: "glrt-secret-value".into(),
            }],
            cpu_limit: 2.0,
            memory_limit_bytes: 4 << 30,
            gpus: Some(pb::GpuAccess {
                nvidia_uuids: vec!["GPU-1".into()],
                device_paths: vec!["/dev/dri/renderD128".into()],
            }),
            labels: [("team".to_string(), "ml".to_string())].into(),
            network_mode: "host".into(),
            mounts: vec![pb::Mount {
                source: "/cache".into(),
                target: "/cache".into(),
                read_only: true,
            }],
            stop_signal: "SIGQUIT".into(),
            registry_auth: Some(pb::RegistryAuth {
                username: "puller".into(),
                password: "registry-secret-value".into(),
            }),
        }),
    };
    let mut no_spec = good.clone();
    no_spec.spec = None;
    let mut bad_env = good.clone();
    bad_env.spec.as_mut().unwrap().env.push(pb::EnvVar {
        name: "1BAD".into(),
        value: "glrt-other-secret".into(),
    });
    let mut reserved = good.clone();
    reserved
        .spec
        .as_mut()
        .unwrap()
        .labels
        .insert("autogit.managed".into(), "x".into());
    let mut relative = good.clone();
    relative.spec.as_mut().unwrap().mounts[0].target = "cache".into();
    let mut limits = good.clone();
    limits.spec.as_mut().unwrap().cpu_limit = f64::NAN;
    let dir = autogit_certs::fuzz::corpus_dir("start_runner");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, m) in [
        ("valid", good),
        ("no-spec", no_spec),
        ("bad-env", bad_env),
        ("reserved-label", reserved),
        ("relative-mount", relative),
        ("nan-cpu", limits),
    ] {
        std::fs::write(dir.join(name), m.encode_to_vec()).unwrap();
    }
    std::fs::write(dir.join("empty"), b"").unwrap();
}
