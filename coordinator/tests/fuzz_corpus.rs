//! Replays the coordinator's fuzz corpora (`fuzz/corpus/<target>/`).

use autogit_certs::fuzz::replay_corpus;
use autogit_coordinator::fuzz;

#[test]
fn job_hook_corpus() {
    replay_corpus("job_hook", fuzz::job_hook);
}

#[test]
fn inventory_corpus() {
    replay_corpus("inventory", fuzz::inventory);
}

#[test]
fn runner_report_corpus() {
    replay_corpus("runner_report", fuzz::runner_report);
}

#[test]
fn coordinator_config_corpus() {
    replay_corpus("coordinator_config", fuzz::config);
}

/// Writes the hand-made binary seeds of `inventory` and `runner_report`
/// (protobuf). Run once after changing them:
/// `cargo test -p autogit-coordinator --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_protobuf_seeds() {
    use autogit_proto::v1 as pb;
    use prost::Message;
    let write = |target: &str, name: &str, bytes: Vec<u8>| {
        let dir = autogit_certs::fuzz::corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let inv = pb::Inventory {
        hostname: "build-1".into(),
        os: "Debian GNU/Linux 12".into(),
        kernel: "6.1.0".into(),
        arch: "x86_64".into(),
        cpu_model: "EPYC".into(),
        cpu_cores: 16,
        cpu_threads: 32,
        riscv_isa: String::new(),
        mem_total_bytes: 64 << 30,
        docker: Some(pb::DockerInfo {
            available: true,
            version: "20.10".into(),
            api_version: "1.41".into(),
            root_dir: "/var/lib/docker".into(),
            root_free_bytes: 1 << 40,
            error: String::new(),
        }),
        labels: [("rack".to_string(), "b3".to_string())].into(),
        images: vec![pb::HeldImage {
            reference: "registry.example:5000/ci/runner:v1".into(),
            id: "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945".into(),
            size_bytes: 300 << 20,
        }],
        gpus: vec![pb::Gpu {
            vendor: pb::GpuVendor::Nvidia as i32,
            index: 0,
            uuid: "GPU-1".into(),
            name: "H100".into(),
            memory_bytes: 80 << 30,
            ..Default::default()
        }],
    };
    write("inventory", "valid", inv.encode_to_vec());
    write(
        "inventory",
        "riscv",
        pb::Inventory {
            arch: "riscv64".into(),
            riscv_isa: "rv64imafdc".into(),
            ..inv.clone()
        }
        .encode_to_vec(),
    );
    write(
        "inventory",
        "no-hostname",
        pb::Inventory {
            hostname: String::new(),
            ..inv.clone()
        }
        .encode_to_vec(),
    );
    write(
        "inventory",
        "bad-gpu-vendor",
        pb::Inventory {
            gpus: vec![pb::Gpu {
                vendor: 9,
                ..Default::default()
            }],
            ..inv.clone()
        }
        .encode_to_vec(),
    );
    write("inventory", "empty", Vec::new());
    let status = pb::RunnerStatus {
        runner_id: "0b8a3f52-8d2f-4c39-9c5e-2f7d1f0f6b11".into(),
        container_id: "abc123".into(),
        state: pb::RunnerState::Failed as i32,
        exit_code: 1,
        reason: "image not found".into(),
        log_tail: vec!["line 1".into(), "line 2".into()],
        at_unix_ms: 1_700_000_000_000,
        image_pull_ms: 12_300,
    };
    write("runner_report", "status-valid", status.encode_to_vec());
    write(
        "runner_report",
        "status-bad-state",
        pb::RunnerStatus {
            state: 42,
            ..status.clone()
        }
        .encode_to_vec(),
    );
    write(
        "runner_report",
        "status-no-id",
        pb::RunnerStatus {
            runner_id: String::new(),
            ..status.clone()
        }
        .encode_to_vec(),
    );
    let container = pb::ManagedContainer {
        runner_id: "r1".into(),
        container_id: "c1".into(),
        pool: "p".into(),
        state: pb::RunnerState::Running as i32,
        exit_code: 0,
    };
    write(
        "runner_report",
        "container-valid",
        container.encode_to_vec(),
    );
    write("runner_report", "empty", Vec::new());
}
