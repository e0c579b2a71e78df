//! GPUs: NVIDIA through NVML ([`nvidia`]), AMD and Intel through sysfs
//! ([`drm`]). A missing library or device leaves its part empty and is logged
//! once; it never fails the inventory.

pub mod drm;
pub mod nvidia;

use std::io;
use std::path::Path;

use super::model::{Gpu, GpuVendor};
use super::notes::Notes;
use nvidia::NvidiaSource;

/// All GPUs: NVIDIA (by index) first, then AMD and Intel (by PCI bus id).
/// NVIDIA GPUs get their render node from sysfs when NVML's bus id matches a
/// DRM card.
pub(crate) fn collect_gpus(
    sysfs_root: &Path,
    nvidia: Option<&dyn NvidiaSource>,
    notes: &Notes,
) -> Vec<Gpu> {
    let drm_devices = match drm::scan(sysfs_root) {
        Ok(devices) => {
            notes.clear("drm");
            devices
        }
        Err(err) if err.source.kind() == io::ErrorKind::NotFound => {
            notes.info(
                "drm",
                format!("{err}; no AMD or Intel GPUs reported (host has no DRM devices)"),
            );
            Vec::new()
        }
        Err(err) => {
            notes.warn("drm", format!("{err}; no AMD or Intel GPUs reported"));
            Vec::new()
        }
    };

    let mut gpus = match nvidia.map(|source| source.gpus()) {
        None => Vec::new(),
        Some(Ok(gpus)) => {
            notes.clear("nvidia");
            gpus
        }
        Some(Err(err)) => {
            notes.warn("nvidia", format!("cannot list NVIDIA GPUs: {err}"));
            Vec::new()
        }
    };
    for gpu in gpus.iter_mut().filter(|g| g.render_node.is_none()) {
        gpu.render_node = drm_devices
            .iter()
            .filter(|d| d.vendor == GpuVendor::Nvidia && d.pci_bus_id.is_some())
            .find(|d| d.pci_bus_id == gpu.pci_bus_id)
            .and_then(|d| d.render_node.clone());
    }
    gpus.sort_by_key(|g| g.index);
    gpus.extend(drm::amd_intel_gpus(&drm_devices));
    gpus
}
