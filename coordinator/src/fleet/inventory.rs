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
