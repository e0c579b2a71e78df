//! Conversions from the inventory model to the wire types in
//! `autogit_proto::v1`. Absent values become proto3 defaults ("" and 0).

use autogit_proto::v1 as pb;

use super::model::{DockerInfo, Gpu, GpuVendor, HeldImage, Inventory};

impl From<GpuVendor> for pb::GpuVendor {
    fn from(vendor: GpuVendor) -> Self {
        match vendor {
            GpuVendor::Nvidia => pb::GpuVendor::Nvidia,
            GpuVendor::Amd => pb::GpuVendor::Amd,
            GpuVendor::Intel => pb::GpuVendor::Intel,
        }
    }
}

impl From<&Gpu> for pb::Gpu {
    fn from(gpu: &Gpu) -> Self {
        pb::Gpu {
            vendor: pb::GpuVendor::from(gpu.vendor) as i32,
            index: gpu.index,
            uuid: gpu.uuid.clone(),
            name: gpu.name.clone(),
            memory_bytes: gpu.memory_bytes.unwrap_or_default(),
            driver_version: gpu.driver_version.clone().unwrap_or_default(),
            cuda_version: gpu.cuda_version.clone().unwrap_or_default(),
            mig_enabled: gpu.mig_enabled,
            pci_id: gpu.pci_id.clone().unwrap_or_default(),
            pci_bus_id: gpu.pci_bus_id.clone().unwrap_or_default(),
            render_node: gpu.render_node.clone().unwrap_or_default(),
        }
    }
}

impl From<&DockerInfo> for pb::DockerInfo {
    fn from(docker: &DockerInfo) -> Self {
        pb::DockerInfo {
            available: docker.available,
            version: docker.version.clone().unwrap_or_default(),
            api_version: docker.api_version.clone().unwrap_or_default(),
            root_dir: docker.root_dir.clone().unwrap_or_default(),
            root_free_bytes: docker.root_free_bytes.unwrap_or_default(),
            error: docker.error.clone().unwrap_or_default(),
        }
    }
}

impl From<&HeldImage> for pb::HeldImage {
    fn from(image: &HeldImage) -> Self {
        pb::HeldImage {
            reference: image.reference.clone(),
            id: image.id.clone(),
            size_bytes: image.size_bytes,
        }
    }
}

impl From<&Inventory> for pb::Inventory {
    fn from(inv: &Inventory) -> Self {
        pb::Inventory {
            hostname: inv.hostname.clone(),
            os: inv.os.clone(),
            kernel: inv.kernel.clone(),
            arch: inv.arch.clone(),
            cpu_model: inv.cpu_model.clone(),
            cpu_cores: inv.cpu_cores,
            cpu_threads: inv.cpu_threads,
            riscv_isa: inv.riscv_isa.clone().unwrap_or_default(),
            mem_total_bytes: inv.mem_total_bytes,
            docker: Some(pb::DockerInfo::from(&inv.docker)),
            labels: inv
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            gpus: inv.gpus.iter().map(pb::Gpu::from).collect(),
            images: inv.docker.images.iter().map(pb::HeldImage::from).collect(),
        }
    }
}
