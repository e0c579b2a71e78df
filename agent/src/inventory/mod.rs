//! Hardware inventory: what this build host is, reported to the coordinator
//! on connect and whenever it changes.
//!
//! [`Collector::collect`] gathers hostname, OS, kernel and machine
//! architecture ([`host`]), CPU and memory ([`cpu`]), GPUs ([`gpu`]: NVIDIA
//! through NVML, AMD and Intel through sysfs), the operator's labels and the
//! [`DockerInfo`] that the docker module found, into an [`Inventory`]. It is
//! synchronous file and library I/O; call it from `spawn_blocking`.
//!
//! Nothing here fails: a missing library, device or file leaves that part
//! empty and logs one line saying why (again only if the reason changes).
//! The roots of `/sys`, `/proc` and `/etc` are injectable
//! ([`InventoryOptions`]) so tests run against fixture trees.

pub mod cpu;
pub mod disk;
pub mod gpu;
pub mod host;
mod model;
mod notes;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub use disk::free_bytes;
pub use gpu::drm::{DrmDevice, DrmError};
pub use gpu::nvidia::{NvidiaError, NvidiaFixture, NvidiaFixtureFile, NvidiaSource, Nvml};
pub use model::{DockerInfo, Gpu, GpuVendor, HeldImage, Inventory, MAX_HELD_IMAGES};

use notes::Notes;

/// Where to look, and what to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryOptions {
    /// The sysfs mount ("/sys"): `class/drm`, `devices/system/cpu`, `module`.
    pub sysfs_root: PathBuf,
    /// The procfs mount ("/proc"): `cpuinfo`, `meminfo`.
    pub proc_root: PathBuf,
    /// The `/etc` directory: `os-release`.
    pub etc_root: PathBuf,
    /// Operator labels from the agent's config, reported as they are.
    pub labels: BTreeMap<String, String>,
    /// Testing only (`inventory.nvidia_fixture`, which a release build
    /// refuses at config load, `config::test_only_options`): read NVIDIA GPUs
    /// from this JSON file (re-read on every collection) instead of NVML. See
    /// [`gpu::nvidia`] for the format.
    pub nvidia_fixture: Option<PathBuf>,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        InventoryOptions {
            sysfs_root: PathBuf::from("/sys"),
            proc_root: PathBuf::from("/proc"),
            etc_root: PathBuf::from("/etc"),
            labels: BTreeMap::new(),
            nvidia_fixture: None,
        }
    }
}

/// Collects inventories repeatedly, holding the NVML handle (initialised
/// once; if NVML is absent at start it is not retried until the agent
/// restarts) and the log-once state between collections.
pub struct Collector {
    opts: InventoryOptions,
    nvidia: Option<Box<dyn NvidiaSource>>,
    notes: Notes,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("opts", &self.opts)
            .field("nvidia", &self.nvidia.is_some())
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector using the NVIDIA fixture when `opts.nvidia_fixture` is
    /// set, NVML otherwise. When NVML cannot be initialised this logs one
    /// line saying why and reports no NVIDIA GPUs.
    pub fn new(opts: InventoryOptions) -> Self {
        let nvidia: Option<Box<dyn NvidiaSource>> = match &opts.nvidia_fixture {
            Some(path) => {
                tracing::info!(
                    path = %path.display(),
                    "reading NVIDIA GPUs from a fixture instead of NVML (testing only)"
                );
                Some(Box::new(NvidiaFixtureFile::new(path)))
            }
            None => match Nvml::init() {
                Ok(nvml) => Some(Box::new(nvml)),
                Err(err) if err.is_absent() => {
                    tracing::info!("NVML unavailable, reporting no NVIDIA GPUs: {err}");
                    None
                }
                Err(err) => {
                    tracing::warn!("NVML failed to initialise, reporting no NVIDIA GPUs: {err}");
                    None
                }
            },
        };
        Self::with_nvidia_source(opts, nvidia)
    }

    /// A collector with an explicit NVIDIA source (`None`: no NVIDIA GPUs);
    /// `opts.nvidia_fixture` is ignored.
    pub fn with_nvidia_source(
        opts: InventoryOptions,
        nvidia: Option<Box<dyn NvidiaSource>>,
    ) -> Self {
        Collector {
            opts,
            nvidia,
            notes: Notes::default(),
        }
    }

    /// The options this collector reads.
    pub fn options(&self) -> &InventoryOptions {
        &self.opts
    }

    /// Collects the inventory now. Never fails; see the module docs.
    pub fn collect(&self, docker: DockerInfo) -> Inventory {
        let o = &self.opts;
        let facts = host::host_facts();
        let cpu = cpu::cpu_facts(&o.proc_root, &o.sysfs_root, &self.notes);
        Inventory {
            hostname: facts.hostname,
            os: host::os_name(&o.etc_root, &self.notes),
            kernel: facts.kernel,
            arch: facts.arch,
            cpu_model: cpu.model,
            cpu_cores: cpu.cores,
            cpu_threads: cpu.threads,
            riscv_isa: cpu.riscv_isa,
            mem_total_bytes: host::mem_total_bytes(&o.proc_root, &self.notes),
            docker,
            labels: o.labels.clone(),
            gpus: gpu::collect_gpus(&o.sysfs_root, self.nvidia.as_deref(), &self.notes),
        }
    }
}

/// One-shot collection (for `autogit-agent inventory`). The session should
/// keep a [`Collector`] instead, so NVML is initialised once.
pub fn collect(opts: &InventoryOptions, docker: DockerInfo) -> Inventory {
    Collector::new(opts.clone()).collect(docker)
}
