//! NVIDIA GPUs through NVML, behind the [`NvidiaSource`] trait.
//!
//! [`Nvml`] is the real source (it `dlopen`s `libnvidia-ml.so.1`, so the
//! agent builds and runs on hosts without the driver). [`NvidiaFixture`] is a
//! test double read from JSON; the agent exposes it as the testing-only config
//! key `inventory.nvidia_fixture`, so end-to-end tests can give an agent fake
//! NVIDIA GPUs.
//!
//! # Fixture format
//!
//! ```json
//! {
//!   "driver_version": "550.54.15",
//!   "cuda_version": "12.4",
//!   "gpus": [
//!     {
//!       "index": 0,
//!       "uuid": "GPU-4a1e6c8f-9a2b-4f0e-8c77-3f1d2b5e6a10",
//!       "name": "NVIDIA A100-SXM4-40GB",
//!       "memory_bytes": 42949672960,
//!       "mig_enabled": true,
//!       "pci_id": "10de:20b0",
//!       "pci_bus_id": "0000:07:00.0"
//!     }
//!   ]
//! }
//! ```
//!
//! `driver_version` and `cuda_version` are system-wide (as in NVML) and
//! optional. Per GPU, `uuid` and `name` are required; `index` defaults to the
//! position in the list, `mig_enabled` to `false`, and `memory_bytes`,
//! `pci_id` and `pci_bus_id` to absent. Unknown fields are rejected, as are
//! duplicate indexes or UUIDs.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use nvml_wrapper::error::NvmlError;
use serde::Deserialize;

use crate::inventory::model::{Gpu, GpuVendor};

/// Where NVIDIA GPUs come from.
pub trait NvidiaSource: Send + Sync {
    /// The NVIDIA GPUs present now, ordered by index.
    fn gpus(&self) -> Result<Vec<Gpu>, NvidiaError>;
}

/// Why NVIDIA GPUs could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum NvidiaError {
    /// `libnvidia-ml.so.1` could not be loaded: no NVIDIA driver installed.
    #[error("NVML library libnvidia-ml.so.1 not found (is the NVIDIA driver installed?): {0}")]
    LibraryNotFound(String),
    /// The library is there but the kernel driver is not loaded.
    #[error("NVIDIA driver is not loaded")]
    DriverNotLoaded,
    /// An NVML call failed.
    #[error("NVML: {op}: {source}")]
    Nvml {
        /// What we were doing, e.g. "count devices".
        op: &'static str,
        /// What NVML said.
        #[source]
        source: NvmlError,
    },
    /// The fixture file could not be read.
    #[error("read NVIDIA fixture {}: {source}", path.display())]
    FixtureRead {
        /// The fixture file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The fixture file is not valid fixture JSON.
    #[error("invalid NVIDIA fixture {}: {reason}", path.display())]
    FixtureInvalid {
        /// The fixture file ("<inline>" for [`NvidiaFixture::from_json`]).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl NvidiaError {
    /// True when there is simply no NVIDIA stack on this host (an expected
    /// condition, logged at info level), false for real failures.
    pub fn is_absent(&self) -> bool {
        matches!(
            self,
            NvidiaError::LibraryNotFound(_) | NvidiaError::DriverNotLoaded
        )
    }

    fn nvml(op: &'static str) -> impl FnOnce(NvmlError) -> NvidiaError {
        move |source| match source {
            NvmlError::LibloadingError(e) => NvidiaError::LibraryNotFound(e.to_string()),
            NvmlError::LibraryNotFound => {
                NvidiaError::LibraryNotFound("NVML_ERROR_LIBRARY_NOT_FOUND".to_owned())
            }
            NvmlError::DriverNotLoaded => NvidiaError::DriverNotLoaded,
            source => NvidiaError::Nvml { op, source },
        }
    }
}

/// The real NVML. Initialise once and reuse: `nvmlInit` is not free.
pub struct Nvml {
    inner: nvml_wrapper::Nvml,
}

impl fmt::Debug for Nvml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nvml").finish_non_exhaustive()
    }
}

/// `nvmlDeviceGetMigMode` reports `NVML_DEVICE_MIG_ENABLE` (1) when MIG is on.
const NVML_DEVICE_MIG_ENABLE: u32 = 1;

impl Nvml {
    /// Loads `libnvidia-ml.so.1` and initialises NVML.
    pub fn init() -> Result<Self, NvidiaError> {
        let inner = nvml_wrapper::Nvml::init().map_err(NvidiaError::nvml("initialise NVML"))?;
        Ok(Nvml { inner })
    }

    fn gpu(
        &self,
        index: u32,
        driver: &Option<String>,
        cuda: &Option<String>,
    ) -> Result<Gpu, NvidiaError> {
        let device = self
            .inner
            .device_by_index(index)
            .map_err(NvidiaError::nvml("get device by index"))?;
        let uuid = device
            .uuid()
            .map_err(NvidiaError::nvml("read device UUID"))?;
        let name = device
            .name()
            .map_err(NvidiaError::nvml("read device name"))?;
        // Optional attributes: NotSupported (or an old driver missing the
        // symbol) leaves them empty instead of hiding the GPU.
        let memory_bytes = device.memory_info().ok().map(|m| m.total);
        let mig_enabled = device
            .mig_mode()
            .map(|m| m.current == NVML_DEVICE_MIG_ENABLE)
            .unwrap_or(false);
        let pci = device.pci_info().ok();
        Ok(Gpu {
            vendor: GpuVendor::Nvidia,
            index,
            uuid,
            name,
            memory_bytes,
            driver_version: driver.clone(),
            cuda_version: cuda.clone(),
            mig_enabled,
            pci_id: pci.as_ref().map(|p| pci_id_from_nvml(p.pci_device_id)),
            pci_bus_id: pci.as_ref().map(|p| normalize_pci_bus_id(&p.bus_id)),
            render_node: None,
        })
    }
}

impl NvidiaSource for Nvml {
    fn gpus(&self) -> Result<Vec<Gpu>, NvidiaError> {
        let driver = self.inner.sys_driver_version().ok();
        let cuda = self
            .inner
            .sys_cuda_driver_version()
            .ok()
            .map(format_cuda_version);
        let count = self
            .inner
            .device_count()
            .map_err(NvidiaError::nvml("count devices"))?;
        (0..count)
            .map(|index| self.gpu(index, &driver, &cuda))
            .collect()
    }
}

/// NVML's CUDA driver version (12040) as "12.4".
pub fn format_cuda_version(version: i32) -> String {
    format!(
        "{}.{}",
        nvml_wrapper::cuda_driver_version_major(version),
        nvml_wrapper::cuda_driver_version_minor(version)
    )
}

/// NVML's combined `pci_device_id` (device << 16 | vendor) as "10de:20b0".
pub fn pci_id_from_nvml(combined: u32) -> String {
    format!("{:04x}:{:04x}", combined & 0xffff, combined >> 16)
}

/// NVML writes bus ids as "00000000:07:00.0"; sysfs as "0000:07:00.0".
/// Lowercases and drops the extra domain zeros so both compare equal.
pub fn normalize_pci_bus_id(bus_id: &str) -> String {
    let lower = bus_id.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        Some((domain, rest))
            if domain.len() > 4 && domain[..domain.len() - 4].bytes().all(|b| b == b'0') =>
        {
            format!("{}:{rest}", &domain[domain.len() - 4..])
        }
        _ => lower,
    }
}

/// NVIDIA GPUs from a JSON fixture (see the module docs for the format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvidiaFixture {
    gpus: Vec<Gpu>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    #[serde(default)]
    driver_version: Option<String>,
    #[serde(default)]
    cuda_version: Option<String>,
    gpus: Vec<FixtureGpu>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureGpu {
    #[serde(default)]
    index: Option<u32>,
    uuid: String,
    name: String,
    #[serde(default)]
    memory_bytes: Option<u64>,
    #[serde(default)]
    mig_enabled: bool,
    #[serde(default)]
    pci_id: Option<String>,
    #[serde(default)]
    pci_bus_id: Option<String>,
}

impl NvidiaFixture {
    /// Reads and validates a fixture file.
    pub fn from_file(path: &Path) -> Result<Self, NvidiaError> {
        let text = std::fs::read_to_string(path).map_err(|source| NvidiaError::FixtureRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates fixture JSON.
    pub fn from_json(text: &str) -> Result<Self, NvidiaError> {
        Self::parse(text, Path::new("<inline>"))
    }

    /// The GPUs this fixture describes, ordered by index.
    pub fn gpus(&self) -> &[Gpu] {
        &self.gpus
    }

    fn parse(text: &str, path: &Path) -> Result<Self, NvidiaError> {
        let invalid = |reason: String| NvidiaError::FixtureInvalid {
            path: path.to_owned(),
            reason,
        };
        let file: FixtureFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut indexes = BTreeSet::new();
        let mut uuids = BTreeSet::new();
        let mut gpus = Vec::with_capacity(file.gpus.len());
        for (position, g) in file.gpus.into_iter().enumerate() {
            let index = match g.index {
                Some(i) => i,
                None => u32::try_from(position).map_err(|_| invalid("too many GPUs".to_owned()))?,
            };
            if g.uuid.trim().is_empty() || g.name.trim().is_empty() {
                return Err(invalid(format!(
                    "GPU {index}: uuid and name must not be empty"
                )));
            }
            if !indexes.insert(index) {
                return Err(invalid(format!("duplicate GPU index {index}")));
            }
            if !uuids.insert(g.uuid.clone()) {
                return Err(invalid(format!("duplicate GPU uuid {}", g.uuid)));
            }
            gpus.push(Gpu {
                vendor: GpuVendor::Nvidia,
                index,
                uuid: g.uuid,
                name: g.name,
                memory_bytes: g.memory_bytes,
                driver_version: file.driver_version.clone(),
                cuda_version: file.cuda_version.clone(),
                mig_enabled: g.mig_enabled,
                pci_id: g.pci_id.map(|p| p.to_ascii_lowercase()),
                pci_bus_id: g.pci_bus_id.as_deref().map(normalize_pci_bus_id),
                render_node: None,
            });
        }
        gpus.sort_by_key(|g| g.index);
        Ok(NvidiaFixture { gpus })
    }
}

impl NvidiaSource for NvidiaFixture {
    fn gpus(&self) -> Result<Vec<Gpu>, NvidiaError> {
        Ok(self.gpus.clone())
    }
}

/// A fixture file that is re-read on every collection, so a test can change
/// the fake GPUs while the agent runs and watch the inventory update.
#[derive(Clone, Debug)]
pub struct NvidiaFixtureFile {
    path: PathBuf,
}

impl NvidiaFixtureFile {
    /// A source reading `path` on each call.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        NvidiaFixtureFile { path: path.into() }
    }
}

impl NvidiaSource for NvidiaFixtureFile {
    fn gpus(&self) -> Result<Vec<Gpu>, NvidiaError> {
        NvidiaFixture::from_file(&self.path).map(|f| f.gpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_versions_format_like_nvidia_smi() {
        assert_eq!(format_cuda_version(12040), "12.4");
        assert_eq!(format_cuda_version(11080), "11.8");
        assert_eq!(format_cuda_version(12020), "12.2");
    }

    #[test]
    fn nvml_pci_ids_split_vendor_and_device() {
        assert_eq!(pci_id_from_nvml(0x20b0_10de), "10de:20b0");
    }

    #[test]
    fn nvml_bus_ids_are_normalized_to_sysfs_form() {
        assert_eq!(normalize_pci_bus_id("00000000:07:00.0"), "0000:07:00.0");
        assert_eq!(normalize_pci_bus_id("0000:0B:00.0"), "0000:0b:00.0");
        assert_eq!(normalize_pci_bus_id("00010000:07:00.0"), "00010000:07:00.0");
    }

    #[test]
    fn absent_errors_are_told_apart_from_failures() {
        assert!(NvidiaError::DriverNotLoaded.is_absent());
        assert!(NvidiaError::LibraryNotFound("x".into()).is_absent());
        assert!(!NvidiaError::nvml("count devices")(NvmlError::NoPermission).is_absent());
    }

    #[test]
    fn fixture_rejects_duplicates_and_unknown_fields() {
        let dup = r#"{"gpus":[{"uuid":"GPU-a","name":"A"},{"index":0,"uuid":"GPU-b","name":"B"}]}"#;
        let err = NvidiaFixture::from_json(dup).expect_err("duplicate index");
        assert!(err.to_string().contains("duplicate GPU index 0"), "{err}");

        let dup_uuid = r#"{"gpus":[{"uuid":"GPU-a","name":"A"},{"uuid":"GPU-a","name":"B"}]}"#;
        assert!(NvidiaFixture::from_json(dup_uuid).is_err());

        let typo = r#"{"gpus":[{"uuid":"GPU-a","name":"A","memory":1}]}"#;
        let err = NvidiaFixture::from_json(typo).expect_err("unknown field");
        assert!(err.to_string().contains("memory"), "{err}");

        let empty = r#"{"gpus":[{"uuid":" ","name":"A"}]}"#;
        assert!(NvidiaFixture::from_json(empty).is_err());
    }
}
