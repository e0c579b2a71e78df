//! The inventory data model: what an agent tells the coordinator about its
//! host. Plain serde types, printed as JSON by `autogit-agent inventory` and
//! compared with `==` by the session to notice changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything the agent reports about its host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The host name (`gethostname(2)`).
    pub hostname: String,
    /// Operating system, `PRETTY_NAME` from os-release
    /// ("Debian GNU/Linux 12 (bookworm)").
    pub os: String,
    /// Kernel release from `uname(2)` ("6.1.0-18-amd64").
    pub kernel: String,
    /// Machine architecture from `uname(2)`: `x86_64`, `aarch64`, `riscv64`.
    /// This is what the kernel (or qemu-user) says, not the compile target.
    pub arch: String,
    /// CPU model ("AMD EPYC 7763 64-Core Processor"); on RISC-V the `uarch`.
    pub cpu_model: String,
    /// Physical cores.
    pub cpu_cores: u32,
    /// Logical CPUs (hardware threads) online.
    pub cpu_threads: u32,
    /// RISC-V ISA string from `/proc/cpuinfo` ("rv64imafdc_zicsr..."), only
    /// on RISC-V.
    pub riscv_isa: Option<String>,
    /// Total memory in bytes.
    pub mem_total_bytes: u64,
    /// The local Docker engine, as the docker part of the agent found it.
    pub docker: DockerInfo,
    /// Operator-assigned labels from the agent's config.
    pub labels: BTreeMap<String, String>,
    /// GPUs: NVIDIA first (by NVML index), then AMD, then Intel (each by PCI
    /// bus id).
    pub gpus: Vec<Gpu>,
}

/// The local Docker engine. Filled in by the agent's docker module and handed
/// to [`collect`](super::collect) as an input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerInfo {
    /// Whether the engine answered.
    pub available: bool,
    /// Engine version ("20.10.24").
    pub version: Option<String>,
    /// Engine API version ("1.41").
    pub api_version: Option<String>,
    /// The daemon's `DockerRootDir` ("/var/lib/docker").
    pub root_dir: Option<String>,
    /// Free bytes on the file system holding `root_dir`
    /// (see [`free_bytes`](super::free_bytes)).
    pub root_free_bytes: Option<u64>,
    /// Why the engine is unavailable, when it is.
    pub error: Option<String>,
    /// The images on the host, one entry per reference (see [`HeldImage`]),
    /// sorted by reference, at most [`MAX_HELD_IMAGES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<HeldImage>,
}

/// The most images an inventory lists (the first by reference).
pub const MAX_HELD_IMAGES: usize = 1000;

/// One image on the host under one reference: a tag (`RepoTags`) or a
/// digest reference (`RepoDigests`) as Docker lists it; `<none>` ones are
/// left out, so an image with two tags is two entries with one id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeldImage {
    /// `registry/repo:tag` or `registry/repo@sha256:...`.
    pub reference: String,
    /// Docker's image id (`sha256:...`).
    pub id: String,
    /// The image's size as Docker reports it.
    pub size_bytes: u64,
}

/// Who made a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuVendor {
    /// NVIDIA, found through NVML.
    Nvidia,
    /// AMD, found through sysfs (`amdgpu`).
    Amd,
    /// Intel, found through sysfs (`i915`, `xe`).
    Intel,
}

impl GpuVendor {
    /// The PCI vendor id of this vendor.
    pub fn pci_vendor_id(self) -> u16 {
        match self {
            GpuVendor::Nvidia => 0x10de,
            GpuVendor::Amd => 0x1002,
            GpuVendor::Intel => 0x8086,
        }
    }

    /// The vendor with this PCI vendor id, if it is one we report.
    pub fn from_pci_vendor_id(id: u16) -> Option<Self> {
        match id {
            0x10de => Some(GpuVendor::Nvidia),
            0x1002 => Some(GpuVendor::Amd),
            0x8086 => Some(GpuVendor::Intel),
            _ => None,
        }
    }
}

/// One GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// Who made it.
    pub vendor: GpuVendor,
    /// NVIDIA: the NVML index (what `--gpus device=N` means). AMD and Intel:
    /// the ordinal among this vendor's GPUs, ordered by PCI bus id.
    pub index: u32,
    /// NVIDIA: the NVML UUID ("GPU-<uuid>"). AMD and Intel: a UUID derived
    /// from the vendor and PCI bus id, stable across reboots on this host.
    pub uuid: String,
    /// Product name ("NVIDIA A100-SXM4-40GB"; "AMD GPU [1002:73bf]" when the
    /// kernel does not name it).
    pub name: String,
    /// Dedicated memory in bytes (NVIDIA, AMD); `None` for integrated GPUs or
    /// when unknown.
    pub memory_bytes: Option<u64>,
    /// Driver version (NVIDIA; others only when the module reports one).
    pub driver_version: Option<String>,
    /// CUDA driver version, "12.4" (NVIDIA only).
    pub cuda_version: Option<String>,
    /// Whether MIG mode is currently enabled (NVIDIA only).
    pub mig_enabled: bool,
    /// PCI vendor:device, lowercase hex ("1002:73bf").
    pub pci_id: Option<String>,
    /// PCI address, "dddd:bb:dd.f" lowercase ("0000:0b:00.0").
    pub pci_bus_id: Option<String>,
    /// DRM render node ("/dev/dri/renderD128"), when the device has one.
    pub render_node: Option<String>,
}
