//! What an agent's host really is, as the coordinator keeps it.
//!
//! Converted from the wire type with validation in `grpc/convert.rs`:
//! prost types stop at the gRPC edge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Inventory {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    /// uname machine: x86_64, aarch64, riscv64, ...
    pub arch: String,
    pub cpu_model: String,
    pub cpu_cores: u32,
    pub cpu_threads: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub riscv_isa: Option<String>,
    pub mem_total_bytes: u64,
    pub docker: DockerInfo,
    /// What the agent says about itself (`[labels]` in `agent.toml`). A
    /// claim like the rest of the inventory: never a trust label, never
    /// read by placement.
    pub labels: BTreeMap<String, String>,
    pub gpus: Vec<Gpu>,
    /// The images on the host, one entry per reference. A claim too: it
    /// only orders the agents that trust labels, architecture and
    /// resources already admit (`scheduler/placement.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<HeldImage>,
}

/// One reference of an image on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldImage {
    /// As Docker lists it: `registry:5000/ci/runner:v1`, `alpine:latest`,
    /// `alpine@sha256:...`.
    pub reference: String,
    /// The image id, `sha256:...`.
    pub id: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DockerInfo {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_free_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The coordinator's one GPU vendor type (the scheduler's).
pub use crate::scheduler::GpuVendor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub vendor: GpuVendor,
    pub index: u32,
    pub uuid: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    pub mig_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub render_node: Option<String>,
}

/// Normalise an architecture name to uname's spelling, with the scheduler's
/// one definition of the names it knows; others are kept (lower-cased).
pub fn normalize_arch(a: &str) -> String {
    a.parse::<crate::scheduler::Arch>()
        .map(|arch| arch.as_str().to_string())
        .unwrap_or_else(|_| a.trim().to_ascii_lowercase())
}

/// The part of an inventory that placement trusts (`Fleet::scheduler_view`)
/// and that a real host rarely changes: a change is worth an audit record,
/// since a compromised agent inflating its claims changes exactly these.
/// Load, free memory and disk, Docker's state, OS, kernel and labels are not
/// part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareClaim {
    pub arch: String,
    pub cpu_threads: u32,
    pub mem_total_bytes: u64,
    /// Sorted by vendor, then UUID.
    pub gpus: Vec<GpuClaim>,
}

/// One GPU as placement sees it (a render node renumbered across a reboot
/// is the same GPU).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GpuClaim {
    pub vendor: GpuVendor,
    pub uuid: String,
    pub memory_bytes: Option<u64>,
}

/// What changed between two [`HardwareClaim`]s of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareChange {
    pub before: HardwareClaim,
    pub after: HardwareClaim,
    /// The fields that differ, in a fixed order: `arch`, `cpu_threads`,
    /// `mem_total_bytes`, `gpus`.
    pub changed: Vec<&'static str>,
}

/// Most GPUs listed as added or removed in an audit record; the rest are
/// counted.
const MAX_LISTED_GPUS: usize = 8;

impl HardwareClaim {
    pub fn of(inv: &Inventory) -> Self {
        let mut gpus: Vec<GpuClaim> = inv
            .gpus
            .iter()
            .map(|g| GpuClaim {
                vendor: g.vendor,
                uuid: g.uuid.clone(),
                memory_bytes: g.memory_bytes,
            })
            .collect();
        gpus.sort();
        HardwareClaim {
            arch: inv.arch.clone(),
            cpu_threads: inv.cpu_threads,
            mem_total_bytes: inv.mem_total_bytes,
            gpus,
        }
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "arch": crate::edge::logsafe::clean(&self.arch),
            "cpu_threads": self.cpu_threads,
            "mem_total_bytes": self.mem_total_bytes,
            "gpus": self.gpus.len(),
        })
    }
}

impl GpuClaim {
    /// `vendor uuid (bytes)`, escaped and cut like any peer string in a log.
    fn describe(&self) -> String {
        let memory = self
            .memory_bytes
            .map(|m| format!(" ({m} bytes)"))
            .unwrap_or_default();
        format!(
            "{} {}{memory}",
            self.vendor.as_str(),
            crate::edge::logsafe::clean(&self.uuid)
        )
    }
}

/// The hardware change from `before` to `after`, or `None` when placement
/// would see the same host. Pure; the caller audits it.
pub fn hardware_change(before: &Inventory, after: &Inventory) -> Option<HardwareChange> {
    let (before, after) = (HardwareClaim::of(before), HardwareClaim::of(after));
    let mut changed = Vec::new();
    if before.arch != after.arch {
        changed.push("arch");
    }
    if before.cpu_threads != after.cpu_threads {
        changed.push("cpu_threads");
    }
    if before.mem_total_bytes != after.mem_total_bytes {
        changed.push("mem_total_bytes");
    }
    if before.gpus != after.gpus {
        changed.push("gpus");
    }
    (!changed.is_empty()).then_some(HardwareChange {
        before,
        after,
        changed,
    })
}

impl HardwareChange {
    /// A compact before/after record for the audit log: the scalar claims,
    /// GPU counts, and the GPUs added and removed (at most
    /// [`MAX_LISTED_GPUS`] each, the rest counted). Agent-supplied strings
    /// are escaped and cut as `edge::logsafe` does for logs.
    pub fn summary(&self) -> serde_json::Value {
        let listed = |from: &[GpuClaim], not_in: &[GpuClaim]| {
            let all: Vec<String> = from
                .iter()
                .filter(|g| !not_in.contains(g))
                .map(GpuClaim::describe)
                .collect();
            let more = all.len().saturating_sub(MAX_LISTED_GPUS);
            let mut shown: Vec<serde_json::Value> = all
                .into_iter()
                .take(MAX_LISTED_GPUS)
                .map(Into::into)
                .collect();
            if more > 0 {
                shown.push(format!("…and {more} more").into());
            }
            shown
        };
        serde_json::json!({
            "changed": self.changed,
            "before": self.before.summary(),
            "after": self.after.summary(),
            "gpus_added": listed(&self.after.gpus, &self.before.gpus),
            "gpus_removed": listed(&self.before.gpus, &self.after.gpus),
        })
    }

    /// `arch x86_64 → aarch64, gpus 0 → 2` for a log line (escaped).
    pub fn describe(&self) -> String {
        let (b, a) = (&self.before, &self.after);
        self.changed
            .iter()
            .map(|field| match *field {
                "arch" => format!(
                    "arch {} → {}",
                    crate::edge::logsafe::clean(&b.arch),
                    crate::edge::logsafe::clean(&a.arch)
                ),
                "cpu_threads" => format!("cpu_threads {} → {}", b.cpu_threads, a.cpu_threads),
                "mem_total_bytes" => format!(
                    "mem_total_bytes {} → {}",
                    b.mem_total_bytes, a.mem_total_bytes
                ),
                _ => format!("gpus {} → {}", b.gpus.len(), a.gpus.len()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(vendor: GpuVendor, uuid: &str, memory: u64) -> Gpu {
        Gpu {
            vendor,
            index: 0,
            uuid: uuid.into(),
            name: "GPU".into(),
            memory_bytes: Some(memory),
            driver_version: Some("550.54.15".into()),
            cuda_version: None,
            mig_enabled: false,
            pci_id: None,
            pci_bus_id: None,
            render_node: None,
        }
    }

    fn host() -> Inventory {
        Inventory {
            hostname: "build-1".into(),
            os: "Debian 12".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            cpu_model: "EPYC".into(),
            cpu_cores: 8,
            cpu_threads: 16,
            mem_total_bytes: 64 << 30,
            gpus: vec![gpu(GpuVendor::Nvidia, "GPU-a", 24 << 30)],
            ..Inventory::default()
        }
    }

    #[test]
    fn ordinary_churn_is_not_a_hardware_change() {
        let before = host();
        let mut after = host();
        after.docker.available = !after.docker.available;
        after.docker.root_free_bytes = Some(12345);
        after.docker.error = Some("Docker went away".into());
        after.kernel = "6.1.1".into();
        after.os = "Debian 12.5".into();
        after.labels.insert("rack".into(), "b3".into());
        after.gpus[0].driver_version = Some("555.1".into());
        after.gpus[0].index = 3;
        after.gpus[0].render_node = Some("/dev/dri/renderD129".into());
        assert_eq!(hardware_change(&before, &after), None);
        assert_eq!(hardware_change(&before, &before), None);
    }

    #[test]
    fn gpu_order_does_not_matter() {
        let mut before = host();
        before.gpus.push(gpu(GpuVendor::Amd, "amd-1", 16 << 30));
        let mut after = before.clone();
        after.gpus.reverse();
        assert_eq!(hardware_change(&before, &after), None);
    }

    #[test]
    fn each_claim_placement_uses_is_a_change() {
        let before = host();
        type Edit = fn(&mut Inventory);
        let cases: [(&str, Edit); 6] = [
            ("arch", |i| i.arch = "aarch64".into()),
            ("cpu_threads", |i| i.cpu_threads = 256),
            ("mem_total_bytes", |i| i.mem_total_bytes = 2 << 40),
            ("gpus", |i| {
                i.gpus.push(gpu(GpuVendor::Nvidia, "GPU-b", 80 << 30))
            }),
            ("gpus", |i| i.gpus.clear()),
            ("gpus", |i| i.gpus[0].memory_bytes = Some(80 << 30)),
        ];
        for (field, change) in cases {
            let mut after = host();
            change(&mut after);
            let c = hardware_change(&before, &after).unwrap_or_else(|| panic!("{field}"));
            assert_eq!(c.changed, [field]);
        }
    }

    #[test]
    fn the_summary_is_compact_and_shows_before_and_after() {
        let before = host();
        let mut after = host();
        after.arch = "aarch64".into();
        after.mem_total_bytes = 2 << 40;
        after.gpus = (0..20)
            .map(|i| gpu(GpuVendor::Nvidia, &format!("GPU-{i:02}"), 80 << 30))
            .collect();
        let c = hardware_change(&before, &after).unwrap();
        assert_eq!(c.changed, ["arch", "mem_total_bytes", "gpus"]);
        let s = c.summary();
        assert_eq!(s["before"]["arch"], "x86_64");
        assert_eq!(s["after"]["arch"], "aarch64");
        assert_eq!(s["before"]["mem_total_bytes"], 64u64 << 30);
        assert_eq!(s["after"]["mem_total_bytes"], 2u64 << 40);
        assert_eq!(
            (s["before"]["gpus"].as_u64(), s["after"]["gpus"].as_u64()),
            (Some(1), Some(20))
        );
        let added = s["gpus_added"].as_array().unwrap();
        assert_eq!(added.len(), MAX_LISTED_GPUS + 1, "{added:?}");
        assert_eq!(added[0], format!("nvidia GPU-00 ({} bytes)", 80u64 << 30));
        assert_eq!(added[MAX_LISTED_GPUS], "…and 12 more");
        assert_eq!(
            s["gpus_removed"][0],
            format!("nvidia GPU-a ({} bytes)", 24u64 << 30)
        );
        assert_eq!(
            c.describe(),
            format!(
                "arch x86_64 → aarch64, mem_total_bytes {} → {}, gpus 1 → 20",
                64u64 << 30,
                2u64 << 40
            )
        );
    }

    #[test]
    fn agent_strings_in_the_summary_are_escaped_and_cut() {
        let before = host();
        let mut after = host();
        after.arch = "evil\nINFO forged\u{1b}[31m".into();
        after.gpus = vec![gpu(
            GpuVendor::Nvidia,
            &format!("GPU-\r\n{}", "x".repeat(2000)),
            1,
        )];
        let c = hardware_change(&before, &after).unwrap();
        let text = c.summary().to_string() + &c.describe();
        assert!(
            !text.contains('\n') && !text.contains('\r') && !text.contains('\u{1b}'),
            "{text}"
        );
        assert!(
            c.summary()["after"]["arch"]
                .as_str()
                .unwrap()
                .contains("evil\\nINFO forged")
        );
        let added = c.summary()["gpus_added"][0].as_str().unwrap().to_string();
        assert!(added.len() < 300, "cut like a log field: {}", added.len());
        assert!(added.contains("more chars]"), "{added}");
    }
}
