use super::*;
use crate::docker::{BindMount, RunnerId};
use crate::inventory::Gpu;

fn spec() -> RunnerSpec {
    RunnerSpec::new(RunnerId::new_v4(), "p", "registry.example/runner:v1")
}

fn mount(source: &str) -> RunnerSpec {
    let mut s = spec();
    s.mounts.push(BindMount {
        source: source.into(),
        target: "/mnt".into(),
        read_only: false,
    });
    s
}

fn gpu(vendor: GpuVendor, uuid: &str, render: Option<&str>) -> Gpu {
    Gpu {
        vendor,
        index: 0,
        uuid: uuid.into(),
        name: "g".into(),
        memory_bytes: None,
        driver_version: None,
        cuda_version: None,
        mig_enabled: false,
        pci_id: None,
        pci_bus_id: None,
        render_node: render.map(str::to_string),
    }
}

fn amd_host() -> Inventory {
    Inventory {
        gpus: vec![gpu(GpuVendor::Amd, "amd-0", Some("/dev/dri/renderD128"))],
        ..Inventory::default()
    }
}

fn refusal(p: &HostPolicy, s: &RunnerSpec, inv: &Inventory) -> String {
    p.check(s, inv).expect_err("must be refused").to_string()
}

fn default_policy() -> HostPolicy {
    HostPolicy::new(PolicyConfig::default(), None)
}

#[test]
fn default_allows_a_plain_runner_and_the_docker_socket() {
    let p = default_policy();
    p.check(&spec(), &Inventory::default()).unwrap();
    p.check(&mount(DOCKER_SOCKET), &Inventory::default())
        .unwrap();
}

#[test]
fn docker_socket_refused_when_the_owner_turns_it_off() {
    let p = HostPolicy::new(
        PolicyConfig {
            allow_docker_socket: false,
            ..PolicyConfig::default()
        },
        None,
    );
    let e = refusal(&p, &mount(DOCKER_SOCKET), &Inventory::default());
    assert_eq!(
        e,
        "refused by host policy: mount source \"/var/run/docker.sock\" is not in policy.allowed_mount_sources"
    );
}

#[test]
fn root_and_unlisted_mount_sources_are_refused() {
    let p = default_policy();
    let e = refusal(&p, &mount("/"), &Inventory::default());
    assert_eq!(
        e,
        "refused by host policy: mount source \"/\" is not in policy.allowed_mount_sources"
    );
    for src in [
        "/etc",
        "/var/run",
        "/var/run/docker.sock/..",
        "/var/run/../../",
        "/run/../var/run/docker.sock",
    ] {
        let e = refusal(&p, &mount(src), &Inventory::default());
        assert!(e.contains("policy.allowed_mount_sources"), "{src}: {e}");
    }
}

#[test]
fn allowed_sources_cover_their_subtree_only_after_resolving_symlinks() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::symlink("/", cache.join("escape")).unwrap();
    std::os::unix::fs::symlink(&cache, d.path().join("alias")).unwrap();
    let p = HostPolicy::new(
        PolicyConfig {
            allowed_mount_sources: vec![cache.clone()],
            ..PolicyConfig::default()
        },
        None,
    );
    let inv = Inventory::default();
    p.check(&mount(cache.to_str().unwrap()), &inv).unwrap();
    p.check(
        &mount(cache.join("not-yet/created").to_str().unwrap()),
        &inv,
    )
    .unwrap();
    p.check(&mount(d.path().join("alias/sub").to_str().unwrap()), &inv)
        .unwrap();
    // A symlink inside the allowed directory that points at / is still /.
    let e = refusal(&p, &mount(cache.join("escape").to_str().unwrap()), &inv);
    assert!(e.contains("policy.allowed_mount_sources"), "{e}");
    // A sibling sharing the name as a string prefix is not below it.
    let e = refusal(&p, &mount(&format!("{}-other", cache.display())), &inv);
    assert!(e.contains("policy.allowed_mount_sources"), "{e}");
}

#[test]
fn devices_must_match_the_list_and_the_inventory() {
    let p = default_policy();
    let inv = amd_host();
    let mut s = spec();
    s.gpus.device_paths = vec!["/dev/kfd".into(), "/dev/dri/renderD128".into()];
    p.check(&s, &inv).unwrap();

    s.gpus.device_paths = vec!["/dev/sda".into()];
    assert_eq!(
        refusal(&p, &s, &inv),
        "refused by host policy: device \"/dev/sda\" is not in policy.allowed_devices"
    );
    // Matches the pattern, but this host has no such render node.
    s.gpus.device_paths = vec!["/dev/dri/renderD129".into()];
    assert!(refusal(&p, &s, &inv).contains("not a GPU device the inventory found"));
    // /dev/kfd without an AMD GPU in the inventory.
    s.gpus.device_paths = vec!["/dev/kfd".into()];
    assert!(
        refusal(&p, &s, &Inventory::default()).contains("not a GPU device the inventory found")
    );
    // Path tricks.
    s.gpus.device_paths = vec!["/dev/dri/renderD128/../../sda".into()];
    assert!(refusal(&p, &s, &inv).contains("policy.allowed_devices"));
}

#[test]
fn nvidia_gpus_must_be_on_this_host_and_allowed() {
    let inv = Inventory {
        gpus: vec![gpu(GpuVendor::Nvidia, "GPU-aaaa", None)],
        ..Inventory::default()
    };
    let mut s = spec();
    s.gpus.nvidia_uuids = vec!["GPU-aaaa".into()];
    default_policy().check(&s, &inv).unwrap();
    s.gpus.nvidia_uuids = vec!["GPU-bbbb".into()];
    assert!(refusal(&default_policy(), &s, &inv).contains("\"GPU-bbbb\""));
    s.gpus.nvidia_uuids = vec!["GPU-aaaa".into()];
    let no_nvidia = HostPolicy::new(
        PolicyConfig {
            allowed_devices: vec!["/dev/kfd".into()],
            ..PolicyConfig::default()
        },
        None,
    );
    assert!(refusal(&no_nvidia, &s, &inv).contains("policy.allowed_devices"));
}

#[test]
fn host_and_container_networks_are_refused_unless_allowed() {
    let p = default_policy();
    let mut s = spec();
    s.network_mode = Some("host".into());
    assert_eq!(
        refusal(&p, &s, &Inventory::default()),
        "refused by host policy: network mode \"host\" is refused (policy.allow_host_network = false)"
    );
    s.network_mode = Some("container:abc".into());
    assert!(refusal(&p, &s, &Inventory::default()).contains("policy.allow_container_network"));
    s.network_mode = Some("bridge".into());
    p.check(&s, &Inventory::default()).unwrap();

    let open = HostPolicy::new(
        PolicyConfig {
            allow_host_network: true,
            allow_container_network: true,
            ..PolicyConfig::default()
        },
        None,
    );
    for m in ["host", "container:abc"] {
        s.network_mode = Some(m.into());
        open.check(&s, &Inventory::default()).unwrap();
    }
}

#[test]
fn images_must_match_a_glob() {
    let p = HostPolicy::new(
        PolicyConfig {
            allowed_images: vec!["registry.example/*".into(), "alpine:3.?".into()],
            ..PolicyConfig::default()
        },
        None,
    );
    let inv = Inventory::default();
    p.check(&spec(), &inv).unwrap();
    let mut s = spec();
    s.image = "alpine:3.2".into();
    p.check(&s, &inv).unwrap();
    for img in ["evil.example/registry.example/x", "alpine:3.20", "alpine"] {
        s.image = img.into();
        assert!(
            refusal(&p, &s, &inv).contains("policy.allowed_images"),
            "{img}"
        );
    }
}

#[test]
fn cpu_and_memory_are_bounded() {
    let p = HostPolicy::new(
        PolicyConfig {
            max_cpu: Some(2.0),
            max_memory: Some(1 << 30),
            ..PolicyConfig::default()
        },
        None,
    );
    let inv = Inventory::default();
    let mut s = spec();
    s.cpu_limit = Some(2.0);
    s.memory_limit_bytes = Some(1 << 30);
    p.check(&s, &inv).unwrap();
    s.cpu_limit = Some(2.5);
    assert!(refusal(&p, &s, &inv).contains("policy.max_cpu"));
    s.cpu_limit = None;
    assert!(refusal(&p, &s, &inv).contains("policy.max_cpu"));
    s.cpu_limit = Some(1.0);
    s.memory_limit_bytes = Some((1 << 30) + 1);
    assert!(refusal(&p, &s, &inv).contains("policy.max_memory"));
}

#[test]
fn glob_basics() {
    assert!(glob_match("*", "anything/at:all"));
    assert!(glob_match("/dev/nvidia*", "/dev/nvidia0"));
    assert!(glob_match("/dev/nvidia*", "/dev/nvidiactl"));
    assert!(!glob_match("/dev/nvidia*", "/dev/sda"));
    assert!(glob_match("a*b*c", "aXXbYc"));
    assert!(!glob_match("a*b*c", "aXXbY"));
    assert!(!glob_match("", "x"));
}

#[test]
fn bad_policy_values_are_named() {
    let bad = [
        PolicyConfig {
            allowed_mount_sources: vec!["relative".into()],
            ..PolicyConfig::default()
        },
        PolicyConfig {
            allowed_mount_sources: vec!["/var/../".into()],
            ..PolicyConfig::default()
        },
    ];
    for c in bad {
        assert_eq!(c.validate().unwrap_err().0, "policy.allowed_mount_sources");
    }
    let c = PolicyConfig {
        allowed_devices: vec!["/etc/*".into()],
        ..PolicyConfig::default()
    };
    assert_eq!(c.validate().unwrap_err().0, "policy.allowed_devices");
    let c = PolicyConfig {
        max_cpu: Some(0.0),
        ..PolicyConfig::default()
    };
    assert_eq!(c.validate().unwrap_err().0, "policy.max_cpu");
}
