//! AMD and Intel GPUs from sysfs: `<sysfs_root>/class/drm/card<N>/device/`.
//!
//! For every `card<N>` entry (connector entries such as `card0-DP-1`,
//! `renderD*` and `version` are skipped) this reads, in the PCI device
//! directory `card<N>/device/`:
//! - `vendor` and `device` (`0x1002`, `0x73bf`); devices without them are not
//!   PCI (SoC display engines, simple-framebuffer) and are skipped;
//! - `mem_info_vram_total` (amdgpu only) and `product_name` (amdgpu, often
//!   absent or empty);
//! - the PCI bus id, from the name of the `device` symlink's target (the
//!   kernel's layout) or, when `device` is a plain directory, from
//!   `PCI_SLOT_NAME` in `uevent`;
//! - the driver (`DRIVER` in `uevent`), and its version from
//!   `<sysfs_root>/module/<driver>/version` when the module has one (DKMS
//!   builds do, in-tree drivers do not);
//! - the render node: `device/drm/renderD<M>` → `/dev/dri/renderD<M>`.
//!
//! Only vendors in [`GpuVendor`] are kept. NVIDIA cards are returned too, so
//! NVML's GPUs can be given their render nodes, but become [`Gpu`]s only
//! through NVML.
//!
//! Test fixture trees may use real relative symlinks (as the kernel does) or
//! plain directories with `uevent` carrying `PCI_SLOT_NAME`; both work.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::inventory::model::{Gpu, GpuVendor};

/// A DRM card of a vendor we know, as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrmDevice {
    /// Who made it.
    pub vendor: GpuVendor,
    /// The DRM card name ("card0"); the number changes with probe order.
    pub card: String,
    /// PCI vendor:device, lowercase ("1002:73bf").
    pub pci_id: String,
    /// PCI address, lowercase ("0000:0b:00.0"), when sysfs tells.
    pub pci_bus_id: Option<String>,
    /// `product_name`, when the driver exposes a non-empty one.
    pub product_name: Option<String>,
    /// `mem_info_vram_total` (dedicated VRAM in bytes; amdgpu only).
    pub vram_bytes: Option<u64>,
    /// "/dev/dri/renderD128", when the device has a render node.
    pub render_node: Option<String>,
    /// Kernel driver ("amdgpu", "i915", "xe", "nvidia").
    pub driver: Option<String>,
    /// The driver module's version, when it has one.
    pub driver_version: Option<String>,
}

/// The DRM class directory could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("list DRM devices in {}: {source}", path.display())]
pub struct DrmError {
    /// `<sysfs_root>/class/drm`.
    pub path: PathBuf,
    /// Why (`NotFound` when the host has no DRM devices at all).
    #[source]
    pub source: io::Error,
}

/// Lists the DRM cards of known vendors under `sysfs_root`, ordered by
/// vendor then PCI bus id. Unreadable individual cards are skipped.
pub fn scan(sysfs_root: &Path) -> Result<Vec<DrmDevice>, DrmError> {
    let class = sysfs_root.join("class/drm");
    let entries = fs::read_dir(&class).map_err(|source| DrmError {
        path: class.clone(),
        source,
    })?;
    let mut devices: Vec<DrmDevice> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(card) = name.to_str().filter(|n| is_card_name(n)) else {
            continue;
        };
        let Some(device) = read_card(sysfs_root, &entry.path(), card) else {
            continue;
        };
        let duplicate = device.pci_bus_id.is_some()
            && devices.iter().any(|d| d.pci_bus_id == device.pci_bus_id);
        if !duplicate {
            devices.push(device);
        }
    }
    devices.sort_by(|a, b| {
        (a.vendor, &a.pci_bus_id, &a.card).cmp(&(b.vendor, &b.pci_bus_id, &b.card))
    });
    Ok(devices)
}

/// The AMD and Intel GPUs among `devices`, indexed per vendor in PCI bus id
/// order.
pub fn amd_intel_gpus(devices: &[DrmDevice]) -> Vec<Gpu> {
    let mut gpus: Vec<Gpu> = Vec::new();
    for d in devices
        .iter()
        .filter(|d| matches!(d.vendor, GpuVendor::Amd | GpuVendor::Intel))
    {
        let index = gpus.iter().filter(|g| g.vendor == d.vendor).count();
        let vendor_name = match d.vendor {
            GpuVendor::Amd => "AMD",
            GpuVendor::Intel => "Intel",
            GpuVendor::Nvidia => "NVIDIA",
        };
        gpus.push(Gpu {
            vendor: d.vendor,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            uuid: stable_uuid(d),
            name: d
                .product_name
                .clone()
                .unwrap_or_else(|| format!("{vendor_name} GPU [{}]", d.pci_id)),
            memory_bytes: d.vram_bytes,
            driver_version: d.driver_version.clone(),
            cuda_version: None,
            mig_enabled: false,
            pci_id: Some(d.pci_id.clone()),
            pci_bus_id: d.pci_bus_id.clone(),
            render_node: d.render_node.clone(),
        });
    }
    gpus
}

/// "card0" yes; "card0-DP-1", "renderD128", "version" no.
fn is_card_name(name: &str) -> bool {
    name.strip_prefix("card")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn read_card(sysfs_root: &Path, card_dir: &Path, card: &str) -> Option<DrmDevice> {
    let dev = card_dir.join("device");
    let uevent = fs::read_to_string(dev.join("uevent")).unwrap_or_default();
    let (vendor_id, device_id) = match (
        read_hex_u16(&dev.join("vendor")),
        read_hex_u16(&dev.join("device")),
    ) {
        (Some(v), Some(d)) => (v, d),
        _ => uevent_value(&uevent, "PCI_ID").and_then(parse_pci_id)?,
    };
    let Some(vendor) = GpuVendor::from_pci_vendor_id(vendor_id) else {
        tracing::debug!(
            card,
            vendor = format!("{vendor_id:#06x}"),
            "skipping DRM card of another vendor"
        );
        return None;
    };
    let pci_bus_id = fs::read_link(&dev)
        .ok()
        .and_then(|target| {
            target
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
        })
        .filter(|n| is_pci_address(n))
        .or_else(|| uevent_value(&uevent, "PCI_SLOT_NAME").filter(|n| is_pci_address(n)))
        .map(|n| n.to_ascii_lowercase());
    let driver = uevent_value(&uevent, "DRIVER");
    let driver_version = driver
        .as_ref()
        .and_then(|d| read_trimmed(&sysfs_root.join("module").join(d).join("version")));
    Some(DrmDevice {
        vendor,
        card: card.to_owned(),
        pci_id: format!("{vendor_id:04x}:{device_id:04x}"),
        pci_bus_id,
        product_name: read_trimmed(&dev.join("product_name")),
        vram_bytes: read_trimmed(&dev.join("mem_info_vram_total")).and_then(|s| s.parse().ok()),
        render_node: render_node(&dev),
        driver,
        driver_version,
    })
}

/// The lowest-numbered `renderD<M>` under `device/drm/`.
fn render_node(dev: &Path) -> Option<String> {
    fs::read_dir(dev.join("drm"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let num: u32 = name.strip_prefix("renderD")?.parse().ok()?;
            Some((num, name))
        })
        .min()
        .map(|(_, name)| format!("/dev/dri/{name}"))
}

/// A non-empty, trimmed file content.
fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// "0x1002\n" → 0x1002.
fn read_hex_u16(path: &Path) -> Option<u16> {
    let text = read_trimmed(path)?;
    u16::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

/// "1002:73BF" → (0x1002, 0x73bf).
fn parse_pci_id(id: String) -> Option<(u16, u16)> {
    let (v, d) = id.split_once(':')?;
    Some((
        u16::from_str_radix(v, 16).ok()?,
        u16::from_str_radix(d, 16).ok()?,
    ))
}

fn uevent_value(uevent: &str, key: &str) -> Option<String> {
    uevent.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k == key && !v.trim().is_empty()).then(|| v.trim().to_owned())
    })
}

/// "dddd:bb:dd.f" in hex.
fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = s.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(domain), Some(bus), Some(devfn), None) => {
            hex(domain, 4)
                && hex(bus, 2)
                && devfn
                    .split_once('.')
                    .is_some_and(|(dev, func)| hex(dev, 2) && hex(func, 1))
        }
        _ => false,
    }
}

/// A UUID (RFC 9562 version 8) derived from the vendor and PCI bus id with
/// FNV-1a 128, so it stays the same across reboots and agent upgrades. Unique
/// per host, not globally. Without a bus id the card name stands in.
fn stable_uuid(d: &DrmDevice) -> String {
    let location = d
        .pci_bus_id
        .clone()
        .unwrap_or_else(|| format!("drm-{}", d.card));
    let key = format!("autogit-gpu:{:04x}:{location}", d.vendor.pci_vendor_id());
    let hash = fnv1a_128(key.as_bytes());
    uuid::Builder::from_custom_bytes(hash.to_be_bytes())
        .into_uuid()
        .to_string()
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_names_exclude_connectors_and_render_nodes() {
        assert!(is_card_name("card0"));
        assert!(is_card_name("card12"));
        assert!(!is_card_name("card0-DP-1"));
        assert!(!is_card_name("card"));
        assert!(!is_card_name("renderD128"));
        assert!(!is_card_name("version"));
    }

    #[test]
    fn pci_addresses_are_validated() {
        assert!(is_pci_address("0000:0b:00.0"));
        assert!(is_pci_address("0000:00:02.0"));
        assert!(!is_pci_address("0000:0b:00"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("card0"));
        assert!(!is_pci_address("0000:0b:00.0:1"));
    }

    #[test]
    fn fnv1a_128_matches_the_reference_vectors() {
        assert_eq!(fnv1a_128(b""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }

    #[test]
    fn stable_uuid_depends_on_bus_id_not_card_number() {
        let dev = |card: &str, bus: &str| DrmDevice {
            vendor: GpuVendor::Amd,
            card: card.to_owned(),
            pci_id: "1002:73bf".to_owned(),
            pci_bus_id: Some(bus.to_owned()),
            product_name: None,
            vram_bytes: None,
            render_node: None,
            driver: None,
            driver_version: None,
        };
        let a = stable_uuid(&dev("card0", "0000:0b:00.0"));
        assert_eq!(a, stable_uuid(&dev("card1", "0000:0b:00.0")));
        assert_ne!(a, stable_uuid(&dev("card0", "0000:0c:00.0")));
        let parsed = uuid::Uuid::parse_str(&a).expect("valid uuid");
        assert_eq!(parsed.get_version_num(), 8);
    }
}
