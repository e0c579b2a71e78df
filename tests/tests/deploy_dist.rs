//! The cross-built agents from `cargo xtask dist` (`target/dist/`), run for
//! real: natively on x86_64 and under qemu-user for aarch64 and riscv64.
//! They must report the emulated machine, link the way
//! `docs/adr/0003-agent-binary-linking.md` decided (and so load NVIDIA's NVML
//! where NVIDIA GPUs exist), and enroll with a real coordinator.
//!
//! Skipped, with a message, when `target/dist/` holds no agents (run
//! `cargo xtask dist`; `.ci/run` does).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use autogit_tests::harness::{Agent, Coordinator};
use serde_json::Value;

const ARCHES: [&str; 3] = ["x86_64", "aarch64", "riscv64"];

/// Says why a test did nothing, past libtest's output capture (a passing
/// test's `eprintln!` is hidden), so a skip is never silent.
fn skipped(msg: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn dist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("target/dist")
}

/// The dist binary for `arch`, or `None` (after saying why) when
/// `cargo xtask dist` has not run.
fn dist_agent(arch: &str) -> Option<PathBuf> {
    let p = dist_dir().join(format!("autogit-agent-{arch}"));
    if p.exists() {
        Some(p)
    } else {
        skipped(format!(
            "SKIPPED: {} is absent; build the cross agents with `cargo xtask dist` (docs/building.md)",
            p.display()
        ));
        None
    }
}

/// All three dist agents, or `None` when any is missing.
fn all_dist_agents() -> Option<Vec<(&'static str, PathBuf)>> {
    ARCHES
        .iter()
        .map(|a| dist_agent(a).map(|p| (*a, p)))
        .collect()
}

/// Does the binary have a program interpreter (is it dynamically linked)?
fn is_dynamic(bin: &Path) -> bool {
    let b = std::fs::read(bin).unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", bin.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    (0..phnum).any(|i| u32::from_le_bytes(b[phoff + i * phentsize..][..4].try_into().unwrap()) == 3)
}

/// The newest `GLIBC_2.N` the binary references.
fn max_glibc_minor(bin: &Path) -> Option<u32> {
    let b = std::fs::read(bin).unwrap();
    let needle = b"GLIBC_2.";
    b.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w == needle)
        .filter_map(|(i, _)| {
            let digits: String = b[i + needle.len()..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .map(|&c| c as char)
                .collect();
            digits.parse().ok()
        })
        .max()
}

/// argv prefix that runs a binary of `arch` here.
fn runner(arch: &str, bin: &Path) -> Vec<String> {
    if arch == std::env::consts::ARCH {
        return vec![];
    }
    let qemu = format!("qemu-{arch}-static");
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {qemu}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{qemu} is needed: apt-get install -y qemu-user-static (.ci/run installs it)"
    );
    let mut argv = vec![qemu];
    if is_dynamic(bin) {
        let sysroot = format!("/usr/{arch}-linux-gnu");
        assert!(
            Path::new(&sysroot).join("lib").is_dir(),
            "{sysroot} is needed: apt-get install -y libc6-dev-arm64-cross"
        );
        argv.extend(["-L".to_string(), sysroot]);
    }
    argv
}

/// `autogit-agent inventory` of a dist binary, with a private config so the
/// host's /etc/autogit/agent.toml is never read.
fn inventory(arch: &str, bin: &Path, lib_dir: Option<&Path>) -> (Value, String) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("state_dir = \"{}\"\n", tmp.path().join("state").display()),
    )
    .unwrap();
    let argv = runner(arch, bin);
    let mut cmd = Command::new(
        argv.first()
            .map(PathBuf::from)
            .unwrap_or_else(|| bin.to_path_buf()),
    );
    if !argv.is_empty() {
        cmd.args(&argv[1..]).arg(bin);
    }
    cmd.arg("--config")
        .arg(&config)
        .arg("inventory")
        .env("NO_COLOR", "1")
        .env_remove("AUTOGIT_LOG");
    match lib_dir {
        Some(d) => cmd.env("LD_LIBRARY_PATH", d),
        None => cmd.env_remove("LD_LIBRARY_PATH"),
    };
    let out: Output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{arch} inventory failed: {stderr}");
    (
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{arch}: bad JSON ({e}): {stderr}")),
        stderr,
    )
}

#[test]
fn dist_agents_run_and_report_the_machine_they_run_on() {
    let Some(agents) = all_dist_agents() else {
        return;
    };
    for (arch, bin) in agents {
        let (inv, _) = inventory(arch, &bin, None);
        assert_eq!(inv["arch"], arch, "{arch}: {inv}");
        assert!(
            inv["cpu_threads"].as_u64().unwrap_or(0) > 0,
            "{arch}: {inv}"
        );
        assert!(
            inv["mem_total_bytes"].as_u64().unwrap_or(0) > 0,
            "{arch}: {inv}"
        );
    }
}

#[test]
fn dist_agents_are_linked_as_the_adr_decided() {
    let Some(agents) = all_dist_agents() else {
        return;
    };
    for (arch, bin) in agents {
        match arch {
            "riscv64" => assert!(!is_dynamic(&bin), "riscv64 must be static"),
            _ => {
                assert!(
                    is_dynamic(&bin),
                    "{arch} must be dynamic (glibc) so NVML can be loaded"
                );
                let minor =
                    max_glibc_minor(&bin).unwrap_or_else(|| panic!("{arch}: no GLIBC_2.x symbols"));
                assert!(
                    minor <= 17,
                    "{arch} needs glibc 2.{minor}; the dist floor is 2.17"
                );
            }
        }
    }
}

/// Builds a stand-in `libnvidia-ml.so.1` for `arch` with one fake GPU.
fn nvml_stub(arch: &str, dir: &Path) -> PathBuf {
    const SRC: &str = r#"
#include <string.h>
typedef int nvmlReturn_t;
typedef void *nvmlDevice_t;
static int device;
static nvmlReturn_t copy(char *dst, unsigned len, const char *src) {
    if (strlen(src) + 1 > len) return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
    strcpy(dst, src);
    return 0;
}
nvmlReturn_t nvmlInit_v2(void) { return 0; }
nvmlReturn_t nvmlShutdown(void) { return 0; }
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *n) { *n = 1; return 0; }
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned i, nvmlDevice_t *d) { if (i) return 2; *d = &device; return 0; }
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *b, unsigned l) { (void)d; return copy(b, l, "GPU-00000000-autogit-nvml-stub"); }
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *b, unsigned l) { (void)d; return copy(b, l, "AutoGit NVML stub"); }
nvmlReturn_t nvmlSystemGetDriverVersion(char *b, unsigned l) { return copy(b, l, "999.99"); }
"#;
    let lib_dir = dir.join(arch);
    std::fs::create_dir_all(&lib_dir).unwrap();
    let src = dir.join("nvml_stub.c");
    std::fs::write(&src, SRC).unwrap();
    let cc = if arch == std::env::consts::ARCH {
        "cc".to_string()
    } else {
        format!("{arch}-linux-gnu-gcc")
    };
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(lib_dir.join("libnvidia-ml.so.1"))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| {
            panic!("{cc} is needed ({e}): apt-get install -y gcc-{arch}-linux-gnu")
        });
    assert!(
        out.status.success(),
        "{cc}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib_dir
}

#[test]
fn glibc_agents_load_nvml_and_the_static_riscv64_agent_cannot() {
    let Some(agents) = all_dist_agents() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (arch, bin) in agents {
        let stub = nvml_stub(arch, tmp.path());
        let (inv, stderr) = inventory(arch, &bin, Some(&stub));
        let nvidia: Vec<&Value> = inv["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["vendor"] == "nvidia")
            .collect();
        if arch == "riscv64" {
            // The documented trade-off: a static musl binary has no dlopen.
            assert!(nvidia.is_empty(), "{inv}");
            assert!(stderr.contains("Dynamic loading not supported"), "{stderr}");
        } else {
            assert_eq!(
                nvidia.len(),
                1,
                "{arch} did not load the NVML stub: {inv}\n{stderr}"
            );
            assert_eq!(nvidia[0]["uuid"], "GPU-00000000-autogit-nvml-stub");
            assert_eq!(nvidia[0]["driver_version"], "999.99");
        }
    }
}

#[test]
fn emulated_agents_enroll_and_report_their_arch_to_a_real_coordinator() {
    let Some(agents) = all_dist_agents() else {
        return;
    };
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let addr = c.grpc_addr();
    let tmp = tempfile::tempdir().unwrap();
    let mut running = Vec::new();
    for (arch, bin) in agents
        .into_iter()
        .filter(|(a, _)| *a != std::env::consts::ARCH)
    {
        // The harness runs `EMULATOR BINARY ARGS`; a wrapper adds qemu's flags.
        let argv = runner(arch, &bin);
        let wrapper = tmp.path().join(format!("run-{arch}"));
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec {} \"$@\"\n", argv.join(" ")),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut a = Agent::new(&format!("[labels]\nemulated = \"{arch}\"\n")).unwrap();
        a.runner = Some((wrapper, bin));
        let token = c.token(&["--uses", "1"]).unwrap();
        let id = a.join_ok(&addr, &token).unwrap();
        a.start().unwrap();
        running.push((arch, id, a));
    }
    for (arch, id, a) in &running {
        let agent = c
            .wait_agent_state(id, "ready", Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{arch}: {e:#}\nagent log:\n{}", a.logs()));
        assert_eq!(agent["arch"], *arch);
        assert_eq!(agent["reported_labels"]["emulated"], *arch);
    }
}
