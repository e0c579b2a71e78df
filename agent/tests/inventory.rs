//! Inventory collection against fixture trees (sysfs, procfs, os-release,
//! an NVIDIA fixture) and against this real host.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use autogit_agent::inventory::{
    self, Collector, DockerInfo, Gpu, GpuVendor, Inventory, InventoryOptions, NvidiaError,
    NvidiaFixture, NvidiaFixtureFile, NvidiaSource, gpu::drm,
};
use autogit_proto::v1 as pb;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn sysfs_options(name: &str) -> InventoryOptions {
    InventoryOptions {
        sysfs_root: fixture(&format!("sysfs/{name}")),
        ..InventoryOptions::default()
    }
}

/// GPUs from a sysfs fixture, with no NVIDIA source.
fn gpus_from(name: &str) -> Vec<Gpu> {
    Collector::with_nvidia_source(sysfs_options(name), None)
        .collect(DockerInfo::default())
        .gpus
}

fn assert_uuid(id: &str) {
    let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?} is not a UUID: {e}"));
    assert!(!parsed.is_nil());
}

#[test]
fn amd_fixture_gives_exactly_the_amd_gpu_with_vram_and_render_node() {
    let gpus = gpus_from("amd");
    assert_eq!(
        gpus.len(),
        1,
        "connectors, renderD and version entries are not GPUs: {gpus:#?}"
    );
    let gpu = &gpus[0];
    assert_uuid(&gpu.uuid);
    assert_eq!(
        gpu,
        &Gpu {
            vendor: GpuVendor::Amd,
            index: 0,
            uuid: gpu.uuid.clone(),
            name: "AMD GPU [1002:73bf]".to_owned(),
            memory_bytes: Some(17_163_091_968),
            driver_version: None,
            cuda_version: None,
            mig_enabled: false,
            pci_id: Some("1002:73bf".to_owned()),
            pci_bus_id: Some("0000:0b:00.0".to_owned()),
            render_node: Some("/dev/dri/renderD128".to_owned()),
        }
    );
    // Stable: the same id on the next collection, by a new collector.
    assert_eq!(gpus_from("amd")[0].uuid, gpu.uuid);
}

#[test]
fn intel_fixture_without_symlinks_gives_the_igpu_without_vram() {
    let gpus = gpus_from("intel");
    assert_eq!(gpus.len(), 1, "{gpus:#?}");
    let gpu = &gpus[0];
    assert_eq!(gpu.vendor, GpuVendor::Intel);
    assert_eq!(gpu.index, 0);
    assert_eq!(gpu.name, "Intel GPU [8086:9a49]");
    assert_eq!(gpu.memory_bytes, None);
    assert_eq!(gpu.pci_id.as_deref(), Some("8086:9a49"));
    assert_eq!(
        gpu.pci_bus_id.as_deref(),
        Some("0000:00:02.0"),
        "from uevent PCI_SLOT_NAME"
    );
    assert_eq!(gpu.render_node.as_deref(), Some("/dev/dri/renderD129"));
    assert_eq!(gpu.cuda_version, None);
    assert!(!gpu.mig_enabled);
    assert_uuid(&gpu.uuid);
    assert_ne!(gpu.uuid, gpus_from("amd")[0].uuid);
}

#[test]
fn fixture_without_known_gpus_gives_an_empty_list() {
    assert_eq!(gpus_from("none"), Vec::<Gpu>::new());
    // The ASPEED card is there, but it is not a vendor we report.
    let devices = drm::scan(&fixture("sysfs/none")).expect("scan none fixture");
    assert!(devices.is_empty(), "{devices:#?}");
}

#[test]
fn missing_sysfs_root_gives_no_gpus_and_does_not_panic() {
    let missing = fixture("sysfs/does-not-exist");
    let err = drm::scan(&missing).expect_err("missing class/drm");
    assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("class/drm"), "{err}");

    let opts = InventoryOptions {
        sysfs_root: missing,
        ..InventoryOptions::default()
    };
    let collector = Collector::with_nvidia_source(opts, None);
    let inv = collector.collect(DockerInfo::default());
    assert!(inv.gpus.is_empty());
    assert!(
        inv.cpu_threads > 0,
        "CPU facts fall back when sysfs is missing"
    );
    assert!(inv.cpu_cores > 0 && inv.cpu_cores <= inv.cpu_threads);
}

#[test]
fn nvidia_fixture_file_parses_into_the_right_gpus() {
    let fixture =
        NvidiaFixture::from_file(&fixture("nvidia/two-gpus.json")).expect("parse fixture");
    let gpus = fixture.gpus();
    assert_eq!(gpus.len(), 2);
    let (rtx, a100) = (&gpus[0], &gpus[1]);
    assert_eq!(rtx.index, 0, "sorted by index, not file order");
    assert_eq!(rtx.vendor, GpuVendor::Nvidia);
    assert_eq!(rtx.uuid, "GPU-9c0b1f4e-2d3a-6b7c-8e9f-0a1b2c3d4e5f");
    assert_eq!(rtx.name, "NVIDIA GeForce RTX 3090");
    assert_eq!(rtx.memory_bytes, Some(25_769_803_776));
    assert!(!rtx.mig_enabled, "mig_enabled defaults to false");
    assert_eq!(rtx.pci_id.as_deref(), Some("10de:2204"), "lowercased");
    assert_eq!(
        rtx.pci_bus_id.as_deref(),
        Some("0000:01:00.0"),
        "NVML form normalized"
    );
    assert_eq!(a100.index, 1);
    assert_eq!(a100.name, "NVIDIA A100-SXM4-40GB");
    assert_eq!(a100.memory_bytes, Some(42_949_672_960));
    assert!(a100.mig_enabled);
    for gpu in gpus {
        assert_eq!(gpu.driver_version.as_deref(), Some("550.54.15"));
        assert_eq!(gpu.cuda_version.as_deref(), Some("12.4"));
        assert_eq!(gpu.render_node, None);
    }
    assert_eq!(NvidiaSource::gpus(&fixture).expect("fixture source"), gpus);
}

#[test]
fn broken_nvidia_fixtures_are_errors_not_panics() {
    let missing =
        NvidiaFixture::from_file(&fixture("nvidia/absent.json")).expect_err("missing file");
    assert!(
        matches!(missing, NvidiaError::FixtureRead { .. }),
        "{missing:?}"
    );
    assert!(!missing.is_absent());

    let no_name =
        NvidiaFixture::from_json(r#"{"gpus":[{"uuid":"GPU-1"}]}"#).expect_err("name missing");
    assert!(no_name.to_string().contains("name"), "{no_name}");
    assert!(NvidiaFixture::from_json("not json").is_err());

    // A collector pointed at a missing fixture reports no NVIDIA GPUs but
    // still reports the rest.
    let opts = InventoryOptions {
        nvidia_fixture: Some(fixture("nvidia/absent.json")),
        ..sysfs_options("amd")
    };
    let inv = Collector::new(opts).collect(DockerInfo::default());
    assert_eq!(inv.gpus.len(), 1);
    assert_eq!(inv.gpus[0].vendor, GpuVendor::Amd);
}

#[test]
fn mixed_host_orders_gpus_and_gives_nvidia_its_render_node() {
    let opts = InventoryOptions {
        nvidia_fixture: Some(fixture("nvidia/two-gpus.json")),
        ..sysfs_options("mixed")
    };
    let gpus = Collector::new(opts).collect(DockerInfo::default()).gpus;
    let summary: Vec<(GpuVendor, u32, Option<&str>, Option<&str>)> = gpus
        .iter()
        .map(|g| {
            (
                g.vendor,
                g.index,
                g.pci_bus_id.as_deref(),
                g.render_node.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                GpuVendor::Nvidia,
                0,
                Some("0000:01:00.0"),
                Some("/dev/dri/renderD131")
            ),
            (GpuVendor::Nvidia, 1, Some("0000:07:00.0"), None),
            (
                GpuVendor::Amd,
                0,
                Some("0000:03:00.0"),
                Some("/dev/dri/renderD130")
            ),
            (
                GpuVendor::Amd,
                1,
                Some("0000:0b:00.0"),
                Some("/dev/dri/renderD129")
            ),
            (
                GpuVendor::Intel,
                0,
                Some("0000:00:02.0"),
                Some("/dev/dri/renderD128")
            ),
        ],
        "NVIDIA by index, then AMD and Intel by bus id; the NVIDIA DRM card and the \
         simple-framebuffer are not extra GPUs"
    );
    let amd_named = &gpus[3];
    assert_eq!(
        amd_named.name, "AMD Radeon RX 7900 XTX",
        "from product_name"
    );
    assert_eq!(amd_named.memory_bytes, Some(25_753_026_560));
    assert_eq!(
        amd_named.driver_version.as_deref(),
        Some("6.7.0"),
        "module version"
    );
    assert_eq!(
        gpus[2].name, "AMD GPU [1002:73bf]",
        "empty product_name falls back"
    );
    let mut uuids: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    uuids.sort_unstable();
    uuids.dedup();
    assert_eq!(uuids.len(), gpus.len(), "every GPU has its own id");
}

#[test]
fn changing_the_nvidia_fixture_changes_the_inventory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nvidia.json");
    std::fs::copy(fixture("nvidia/two-gpus.json"), &path).expect("copy fixture");
    let collector = Collector::new(InventoryOptions {
        nvidia_fixture: Some(path.clone()),
        ..sysfs_options("none")
    });
    let first = collector.collect(DockerInfo::default());
    assert_eq!(first.gpus.len(), 2);
    assert_eq!(
        first,
        collector.collect(DockerInfo::default()),
        "nothing changed"
    );

    std::fs::write(
        &path,
        r#"{"gpus":[{"uuid":"GPU-9c0b1f4e-2d3a-6b7c-8e9f-0a1b2c3d4e5f","name":"NVIDIA GeForce RTX 3090"}]}"#,
    )
    .expect("rewrite fixture");
    let second = collector.collect(DockerInfo::default());
    assert_eq!(second.gpus.len(), 1);
    assert_ne!(first, second, "a lost GPU is a change the session must see");
}

#[test]
fn proc_and_etc_roots_are_read_for_cpu_memory_and_os() {
    let opts = InventoryOptions {
        sysfs_root: fixture("sysfs/none"),
        proc_root: fixture("proc/riscv64"),
        etc_root: fixture("etc/ubuntu"),
        labels: BTreeMap::new(),
        nvidia_fixture: None,
    };
    let inv = Collector::with_nvidia_source(opts, None).collect(DockerInfo::default());
    assert_eq!(
        inv.riscv_isa.as_deref(),
        Some("rv64imafdc_zicntr_zicsr_zifencei_zihpm_zba_zbb")
    );
    assert_eq!(inv.cpu_model, "sifive,u74-mc");
    assert_eq!(inv.cpu_threads, 4);
    assert_eq!(
        inv.cpu_cores, 4,
        "no topology in sysfs: one thread per core"
    );
    assert_eq!(inv.mem_total_bytes, 8_029_232 * 1024);
    assert_eq!(inv.os, "Ubuntu 24.04.1 LTS");
}

#[test]
fn collect_on_this_host_reports_the_real_machine() {
    let mut labels = BTreeMap::new();
    labels.insert("zone".to_owned(), "lab-1".to_owned());
    let docker = DockerInfo {
        available: true,
        version: Some("20.10.24".to_owned()),
        api_version: Some("1.41".to_owned()),
        root_dir: Some("/var/lib/docker".to_owned()),
        root_free_bytes: Some(1),
        error: None,
        images: Vec::new(),
    };
    let opts = InventoryOptions {
        labels: labels.clone(),
        ..InventoryOptions::default()
    };
    let inv = inventory::collect(&opts, docker.clone());

    assert_eq!(
        inv.arch,
        std::env::consts::ARCH,
        "uname machine on a native run"
    );
    #[cfg(target_arch = "x86_64")]
    assert_eq!(inv.arch, "x86_64");
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    assert!(!inv.hostname.is_empty());
    if let Ok(hostname) = read("/proc/sys/kernel/hostname") {
        assert_eq!(inv.hostname, hostname);
    }
    assert!(!inv.kernel.is_empty());
    if let Ok(release) = read("/proc/sys/kernel/osrelease") {
        assert_eq!(inv.kernel, release);
    }
    assert!(!inv.os.is_empty());
    assert!(!inv.cpu_model.is_empty() && inv.cpu_model != "unknown");
    assert!(inv.cpu_threads > 0);
    assert!(inv.cpu_cores > 0 && inv.cpu_cores <= inv.cpu_threads);
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(inv.cpu_threads as usize >= parallelism);
    assert!(inv.mem_total_bytes > 64 * 1024 * 1024);
    assert_eq!(inv.docker, docker);
    assert_eq!(inv.labels, labels);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(inv.riscv_isa, None);
}

#[test]
fn json_output_is_snake_case_with_integer_bytes_and_round_trips() {
    let inv = Collector::new(InventoryOptions {
        nvidia_fixture: Some(fixture("nvidia/two-gpus.json")),
        ..sysfs_options("amd")
    })
    .collect(DockerInfo {
        available: false,
        error: Some("connect /var/run/docker.sock: permission denied".to_owned()),
        ..DockerInfo::default()
    });
    let json = serde_json::to_value(&inv).expect("serialize");
    let amd = &json["gpus"][2];
    assert_eq!(amd["vendor"], "amd");
    assert_eq!(amd["memory_bytes"], 17_163_091_968_u64);
    assert_eq!(amd["pci_bus_id"], "0000:0b:00.0");
    assert_eq!(json["gpus"][0]["vendor"], "nvidia");
    assert_eq!(json["gpus"][0]["cuda_version"], "12.4");
    assert!(json["mem_total_bytes"].is_u64());
    assert_eq!(json["docker"]["available"], false);
    assert!(
        json["docker"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("permission denied"))
    );
    let back: Inventory = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back, inv);
}

#[test]
fn proto_conversion_keeps_every_field() {
    let mut labels = BTreeMap::new();
    labels.insert("gpu".to_owned(), "yes".to_owned());
    let inv = Collector::new(InventoryOptions {
        nvidia_fixture: Some(fixture("nvidia/two-gpus.json")),
        labels,
        ..sysfs_options("mixed")
    })
    .collect(DockerInfo {
        available: true,
        version: Some("20.10.24".to_owned()),
        api_version: Some("1.41".to_owned()),
        root_dir: Some("/var/lib/docker".to_owned()),
        root_free_bytes: Some(123_456),
        error: None,
        images: Vec::new(),
    });
    let wire = pb::Inventory::from(&inv);
    assert_eq!(wire.hostname, inv.hostname);
    assert_eq!(wire.arch, inv.arch);
    assert_eq!(wire.cpu_threads, inv.cpu_threads);
    assert_eq!(wire.mem_total_bytes, inv.mem_total_bytes);
    assert_eq!(wire.labels.get("gpu").map(String::as_str), Some("yes"));
    let docker = wire.docker.as_ref().expect("docker info");
    assert_eq!(docker.root_free_bytes, 123_456);
    assert_eq!(docker.api_version, "1.41");
    assert_eq!(docker.error, "");
    let vendors: Vec<i32> = wire.gpus.iter().map(|g| g.vendor).collect();
    assert_eq!(
        vendors,
        vec![
            pb::GpuVendor::Nvidia as i32,
            pb::GpuVendor::Nvidia as i32,
            pb::GpuVendor::Amd as i32,
            pb::GpuVendor::Amd as i32,
            pb::GpuVendor::Intel as i32,
        ]
    );
    let a100 = &wire.gpus[1];
    assert!(a100.mig_enabled);
    assert_eq!(a100.cuda_version, "12.4");
    assert_eq!(
        a100.render_node, "",
        "absent render node is the proto default"
    );
    let intel = &wire.gpus[4];
    assert_eq!(intel.memory_bytes, 0, "no VRAM is the proto default");
    assert_eq!(intel.render_node, "/dev/dri/renderD128");
    assert_eq!(intel.uuid, inv.gpus[4].uuid);
}

/// Collects log output for one test.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn nvml_absence_is_logged_once_across_collections() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let inventories = tracing::subscriber::with_default(subscriber, || {
        // Real NVML; a sysfs root without DRM so the log is about NVML only.
        let collector = Collector::new(sysfs_options("does-not-exist"));
        (0..3)
            .map(|_| collector.collect(DockerInfo::default()))
            .collect::<Vec<_>>()
    });
    let text = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8 logs");
    let nvml_lines = text.lines().filter(|l| l.contains("NVML")).count();
    let drm_lines = text.lines().filter(|l| l.contains("class/drm")).count();
    assert_eq!(drm_lines, 1, "missing DRM is said once:\n{text}");

    let nvidia: Vec<&Gpu> = inventories[0]
        .gpus
        .iter()
        .filter(|g| g.vendor == GpuVendor::Nvidia)
        .collect();
    if nvidia.is_empty() {
        // No driver here (the normal case on CI).
        assert_eq!(nvml_lines, 1, "NVML absence is said exactly once:\n{text}");
        assert!(text.contains("reporting no NVIDIA GPUs"), "{text}");
    } else {
        // A machine with NVIDIA GPUs: NVML really listed them.
        assert_eq!(nvml_lines, 0, "{text}");
        for gpu in nvidia {
            assert!(gpu.uuid.starts_with("GPU-"), "{gpu:?}");
            assert!(gpu.memory_bytes.is_some_and(|m| m > 0), "{gpu:?}");
            assert!(
                gpu.cuda_version.as_deref().is_some_and(|v| v.contains('.')),
                "{gpu:?}"
            );
            assert!(gpu.driver_version.is_some(), "{gpu:?}");
            assert!(
                gpu.pci_id
                    .as_deref()
                    .is_some_and(|p| p.starts_with("10de:")),
                "{gpu:?}"
            );
        }
    }
    assert!(inventories.windows(2).all(|w| w[0].gpus == w[1].gpus));
}

#[test]
fn nvidia_fixture_file_source_reads_the_file_on_each_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gpus.json");
    let source = NvidiaFixtureFile::new(&path);
    assert!(source.gpus().is_err(), "no file yet");
    std::fs::write(&path, r#"{"gpus":[{"uuid":"GPU-1","name":"NVIDIA T4"}]}"#).expect("write");
    let gpus = source.gpus().expect("file now present");
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0].name, "NVIDIA T4");
    assert_eq!(gpus[0].driver_version, None);
}

#[test]
fn free_bytes_reports_space_on_a_real_file_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = inventory::free_bytes(dir.path()).expect("statvfs");
    assert!(free > 0);
    let err = inventory::free_bytes(&dir.path().join("missing")).expect_err("missing dir");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn collector_can_be_shared_with_blocking_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Collector>();
    assert_send_sync::<Inventory>();
}
