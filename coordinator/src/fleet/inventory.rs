//! What an agent's host really is, as the coordinator keeps it.
//!
//! Converted from the wire type with validation (`TryFrom<proto::Inventory>`):
//! prost types stop at the gRPC edge.

use std::collections::{BTreeMap, BTreeSet};

use autogit_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::grpc::ProtocolError;

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
    pub labels: BTreeMap<String, String>,
    pub gpus: Vec<Gpu>,
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

const MAX_STR: usize = 1024;
const MAX_GPUS: usize = 64;
const MAX_LABELS: usize = 64;

fn opt(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

fn bounded(field: &'static str, s: String) -> Result<String, ProtocolError> {
    if s.len() > MAX_STR {
        return Err(ProtocolError::invalid(
            field,
            format!("longer than {MAX_STR} bytes"),
        ));
    }
    Ok(s)
}

/// Normalise an architecture name to uname's spelling, with the scheduler's
/// one definition of the names it knows; others are kept (lower-cased).
pub fn normalize_arch(a: &str) -> String {
    a.parse::<crate::scheduler::Arch>()
        .map(|arch| arch.as_str().to_string())
        .unwrap_or_else(|_| a.trim().to_ascii_lowercase())
}

impl TryFrom<pb::Inventory> for Inventory {
    type Error = ProtocolError;

    fn try_from(p: pb::Inventory) -> Result<Self, ProtocolError> {
        let hostname = bounded("inventory.hostname", p.hostname)?;
        if hostname.is_empty() {
            return Err(ProtocolError::invalid(
                "inventory.hostname",
                "must not be empty",
            ));
        }
        let arch = normalize_arch(&bounded("inventory.arch", p.arch)?);
        if arch.is_empty() {
            return Err(ProtocolError::invalid(
                "inventory.arch",
                "must not be empty",
            ));
        }
        if p.labels.len() > MAX_LABELS {
            return Err(ProtocolError::invalid(
                "inventory.labels",
                format!("more than {MAX_LABELS} labels"),
            ));
        }
        if p.gpus.len() > MAX_GPUS {
            return Err(ProtocolError::invalid(
                "inventory.gpus",
                format!("more than {MAX_GPUS} GPUs"),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut gpus = Vec::with_capacity(p.gpus.len());
        for g in p.gpus {
            let vendor = match pb::GpuVendor::try_from(g.vendor) {
                Ok(pb::GpuVendor::Nvidia) => GpuVendor::Nvidia,
                Ok(pb::GpuVendor::Amd) => GpuVendor::Amd,
                Ok(pb::GpuVendor::Intel) => GpuVendor::Intel,
                _ => {
                    return Err(ProtocolError::invalid(
                        "inventory.gpus.vendor",
                        format!("unknown vendor {}", g.vendor),
                    ));
                }
            };
            let uuid = bounded("inventory.gpus.uuid", g.uuid)?;
            if uuid.is_empty() {
                return Err(ProtocolError::invalid(
                    "inventory.gpus.uuid",
                    "must not be empty",
                ));
            }
            if !seen.insert(uuid.clone()) {
                return Err(ProtocolError::invalid(
                    "inventory.gpus.uuid",
                    format!("duplicate GPU {uuid}"),
                ));
            }
            gpus.push(Gpu {
                vendor,
                index: g.index,
                uuid,
                name: bounded("inventory.gpus.name", g.name)?,
                memory_bytes: (g.memory_bytes > 0).then_some(g.memory_bytes),
                driver_version: opt(bounded("inventory.gpus.driver_version", g.driver_version)?),
                cuda_version: opt(bounded("inventory.gpus.cuda_version", g.cuda_version)?),
                mig_enabled: g.mig_enabled,
                pci_id: opt(bounded("inventory.gpus.pci_id", g.pci_id)?),
                pci_bus_id: opt(bounded("inventory.gpus.pci_bus_id", g.pci_bus_id)?),
                render_node: opt(bounded("inventory.gpus.render_node", g.render_node)?),
            });
        }
        let d = p.docker.unwrap_or_default();
        Ok(Inventory {
            hostname,
            os: bounded("inventory.os", p.os)?,
            kernel: bounded("inventory.kernel", p.kernel)?,
            arch,
            cpu_model: bounded("inventory.cpu_model", p.cpu_model)?,
            cpu_cores: p.cpu_cores,
            cpu_threads: p.cpu_threads,
            riscv_isa: opt(bounded("inventory.riscv_isa", p.riscv_isa)?),
            mem_total_bytes: p.mem_total_bytes,
            docker: DockerInfo {
                available: d.available,
                version: opt(d.version),
                api_version: opt(d.api_version),
                root_dir: opt(d.root_dir),
                root_free_bytes: (d.root_free_bytes > 0).then_some(d.root_free_bytes),
                error: opt(d.error),
            },
            labels: p.labels.into_iter().collect(),
            gpus,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::Inventory {
        pb::Inventory {
            hostname: "h".into(),
            arch: "arm64".into(),
            gpus: vec![pb::Gpu {
                vendor: pb::GpuVendor::Amd as i32,
                uuid: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn normalises_arch_and_accepts_valid() {
        let inv = Inventory::try_from(sample()).unwrap();
        assert_eq!(inv.arch, "aarch64");
        assert_eq!(inv.gpus[0].vendor, GpuVendor::Amd);
    }

    #[test]
    fn rejects_duplicate_gpu_and_empty_hostname() {
        let mut p = sample();
        p.gpus.push(p.gpus[0].clone());
        assert!(
            Inventory::try_from(p)
                .unwrap_err()
                .to_string()
                .contains("duplicate GPU")
        );
        let mut p = sample();
        p.hostname.clear();
        assert!(
            Inventory::try_from(p)
                .unwrap_err()
                .to_string()
                .contains("inventory.hostname")
        );
    }
}
