//! CPU facts: model, physical cores, logical threads and the RISC-V ISA
//! string, from `<proc_root>/cpuinfo` and
//! `<sysfs_root>/devices/system/cpu/cpu*/topology`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::notes::Notes;

/// What the inventory reports about the CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CpuFacts {
    pub model: String,
    pub cores: u32,
    pub threads: u32,
    pub riscv_isa: Option<String>,
}

/// What `/proc/cpuinfo` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuInfo {
    /// The first model-like field found.
    pub model: Option<String>,
    /// Number of `processor` entries (online logical CPUs).
    pub threads: u32,
    /// Distinct `(physical id, core id)` pairs (x86 only).
    pub cores: u32,
    /// The first `isa` line (RISC-V only).
    pub isa: Option<String>,
}

/// Collects CPU facts; never fails, falls back to sysinfo and std.
pub(crate) fn cpu_facts(proc_root: &Path, sysfs_root: &Path, notes: &Notes) -> CpuFacts {
    let path = proc_root.join("cpuinfo");
    let info = match fs::read_to_string(&path) {
        Ok(text) => {
            notes.clear("cpuinfo");
            parse_cpuinfo(&text)
        }
        Err(err) => {
            notes.warn(
                "cpuinfo",
                format!(
                    "cannot read {}: {err}; CPU facts are partial",
                    path.display()
                ),
            );
            CpuInfo::default()
        }
    };

    let threads = Some(info.threads)
        .filter(|&t| t > 0)
        .or_else(|| online_cpus(sysfs_root))
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        })
        .unwrap_or(1);
    let cores = physical_cores_from_sysfs(sysfs_root)
        .or(Some(info.cores).filter(|&c| c > 0))
        .unwrap_or(threads)
        .min(threads);
    let model = info.model.unwrap_or_else(|| {
        let mut sys = sysinfo::System::new();
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        sys.cpus()
            .first()
            .map(|c| c.brand().trim().to_owned())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    });
    CpuFacts {
        model,
        cores,
        threads,
        riscv_isa: info.isa,
    }
}

/// Parses `/proc/cpuinfo` as written by x86, arm64 and RISC-V kernels.
pub(crate) fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut model_name = None;
    let mut uarch = None;
    let mut hardware = None;
    let mut implementer = None;
    let mut part = None;
    let mut core_ids = BTreeSet::new();
    let mut physical_id = None;

    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        match key {
            "processor" => {
                info.threads += 1;
                physical_id = None;
            }
            "model name" | "cpu model" if model_name.is_none() && !value.is_empty() => {
                model_name = Some(value.to_owned());
            }
            "uarch" if uarch.is_none() && !value.is_empty() => uarch = Some(value.to_owned()),
            "Hardware" if hardware.is_none() && !value.is_empty() => {
                hardware = Some(value.to_owned());
            }
            "CPU implementer" if implementer.is_none() => implementer = parse_hex(value),
            "CPU part" if part.is_none() => part = parse_hex(value),
            "isa" if info.isa.is_none() && !value.is_empty() => info.isa = Some(value.to_owned()),
            "physical id" => physical_id = Some(value.to_owned()),
            "core id" => {
                core_ids.insert((physical_id.clone().unwrap_or_default(), value.to_owned()));
            }
            _ => {}
        }
    }
    info.cores = u32::try_from(core_ids.len()).unwrap_or(u32::MAX);
    info.model = model_name
        .or(uarch)
        .or_else(|| implementer.map(|i| arm_cpu_name(i, part)))
        .or(hardware);
    info
}

fn parse_hex(value: &str) -> Option<u32> {
    u32::from_str_radix(value.trim_start_matches("0x"), 16).ok()
}

/// Names an arm64 core from its MIDR implementer and part, like lscpu does
/// for the common server and board cores.
fn arm_cpu_name(implementer: u32, part: Option<u32>) -> String {
    let known = match (implementer, part) {
        (0x41, Some(0xd03)) => Some("ARM Cortex-A53"),
        (0x41, Some(0xd05)) => Some("ARM Cortex-A55"),
        (0x41, Some(0xd07)) => Some("ARM Cortex-A57"),
        (0x41, Some(0xd08)) => Some("ARM Cortex-A72"),
        (0x41, Some(0xd0b)) => Some("ARM Cortex-A76"),
        (0x41, Some(0xd0c)) => Some("ARM Neoverse-N1"),
        (0x41, Some(0xd40)) => Some("ARM Neoverse-V1"),
        (0x41, Some(0xd49)) => Some("ARM Neoverse-N2"),
        (0x41, Some(0xd4f)) => Some("ARM Neoverse-V2"),
        (0xc0, Some(0xac3)) => Some("Ampere-1"),
        (0xc0, Some(0xac4)) => Some("Ampere-1a"),
        _ => None,
    };
    match (known, part) {
        (Some(name), _) => name.to_owned(),
        (None, Some(p)) => format!("arm64 implementer {implementer:#04x} part {p:#05x}"),
        (None, None) => format!("arm64 implementer {implementer:#04x}"),
    }
}

/// Counts physical cores as distinct `thread_siblings_list` values of the
/// online CPUs (each core lists the same set of sibling threads).
pub(crate) fn physical_cores_from_sysfs(sysfs_root: &Path) -> Option<u32> {
    let dir = sysfs_root.join("devices/system/cpu");
    let mut cores = BTreeSet::new();
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(num) = name.to_str().and_then(|n| n.strip_prefix("cpu")) else {
            continue;
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let topology = entry.path().join("topology");
        let siblings = fs::read_to_string(topology.join("core_cpus_list"))
            .or_else(|_| fs::read_to_string(topology.join("thread_siblings_list")));
        if let Ok(siblings) = siblings {
            cores.insert(siblings.trim().to_owned());
        }
    }
    u32::try_from(cores.len()).ok().filter(|&n| n > 0)
}

/// Counts CPUs in `<sysfs_root>/devices/system/cpu/online` ("0-3,8-11").
fn online_cpus(sysfs_root: &Path) -> Option<u32> {
    let text = fs::read_to_string(sysfs_root.join("devices/system/cpu/online")).ok()?;
    parse_cpu_list(&text)
}

/// Counts the CPUs in a kernel cpu list ("0-3,8,10-11" → 7).
pub(crate) fn parse_cpu_list(text: &str) -> Option<u32> {
    let mut count: u32 = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let n = match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.parse().ok()?;
                let b: u32 = b.parse().ok()?;
                b.checked_sub(a)?.checked_add(1)?
            }
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
        count = count.checked_add(n)?;
    }
    Some(count).filter(|&c| c > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\
        physical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\
        physical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 2\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\
        physical id\t: 0\ncore id\t\t: 1\n\nprocessor\t: 3\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\
        physical id\t: 1\ncore id\t\t: 0\n";

    const RISCV: &str = "processor\t: 0\nhart\t\t: 1\nisa\t\t: rv64imafdc_zicntr_zicsr_zifencei_zihpm\n\
        mmu\t\t: sv39\nuarch\t\t: sifive,u74-mc\n\nprocessor\t: 1\nhart\t\t: 2\n\
        isa\t\t: rv64imafdc_zicntr_zicsr_zifencei_zihpm\nmmu\t\t: sv39\nuarch\t\t: sifive,u74-mc\n";

    const ARM64: &str = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n\
        CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\n\n\
        processor\t: 1\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n";

    #[test]
    fn x86_cpuinfo_gives_model_threads_and_cores() {
        let info = parse_cpuinfo(X86);
        assert_eq!(
            info.model.as_deref(),
            Some("AMD EPYC 7763 64-Core Processor")
        );
        assert_eq!(info.threads, 4);
        assert_eq!(info.cores, 3, "(0,0) (0,1) (1,0)");
        assert_eq!(info.isa, None);
    }

    #[test]
    fn riscv_cpuinfo_gives_isa_and_uarch() {
        let info = parse_cpuinfo(RISCV);
        assert_eq!(
            info.isa.as_deref(),
            Some("rv64imafdc_zicntr_zicsr_zifencei_zihpm")
        );
        assert_eq!(info.model.as_deref(), Some("sifive,u74-mc"));
        assert_eq!(info.threads, 2);
        assert_eq!(info.cores, 0, "RISC-V cpuinfo has no core ids");
    }

    #[test]
    fn arm64_cpuinfo_names_the_core() {
        let info = parse_cpuinfo(ARM64);
        assert_eq!(info.model.as_deref(), Some("ARM Neoverse-N1"));
        assert_eq!(info.threads, 2);
        assert_eq!(
            arm_cpu_name(0x41, Some(0xfff)),
            "arm64 implementer 0x41 part 0xfff"
        );
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(7));
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
