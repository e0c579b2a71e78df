//! Which devices a placed runner's container gets: the scheduler chose the
//! GPUs (`scheduler/placement.rs::place`); here they become an NVIDIA device
//! request or device nodes.
//!
//! * NVIDIA: a device request for the chosen GPU uuids, no device nodes.
//! * AMD (ROCm): `/dev/kfd` (the compute interface, one per host) plus the
//!   chosen GPUs' render nodes.
//! * Intel: the chosen GPUs' render nodes.

use crate::scheduler::{GpuVendor, Placement};

/// AMD's kernel fusion driver node, which every ROCm container needs next to
/// its render nodes.
pub const AMD_KFD: &str = "/dev/kfd";

/// The GPU uuids for an NVIDIA device request (empty for other vendors).
pub fn nvidia_uuids(vendor: Option<GpuVendor>, placement: &Placement) -> Vec<String> {
    match vendor {
        Some(GpuVendor::Nvidia) => placement.gpus.clone(),
        _ => Vec::new(),
    }
}

/// The device nodes to pass into the container.
pub fn device_nodes(vendor: Option<GpuVendor>, placement: &Placement) -> Vec<String> {
    let render_nodes = placement.render_nodes.iter().cloned();
    match vendor {
        Some(GpuVendor::Amd) => std::iter::once(AMD_KFD.to_owned())
            .chain(render_nodes)
            .collect(),
        Some(GpuVendor::Intel) => render_nodes.collect(),
        Some(GpuVendor::Nvidia) | None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn placement(gpus: &[&str], render_nodes: &[&str]) -> Placement {
        Placement {
            agent_id: Uuid::nil(),
            arch: crate::scheduler::Arch::X86_64,
            gpus: gpus.iter().map(|s| s.to_string()).collect(),
            render_nodes: render_nodes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn amd_gets_kfd_then_render_nodes() {
        let p = placement(&["amd-0"], &["/dev/dri/renderD128"]);
        assert_eq!(
            device_nodes(Some(GpuVendor::Amd), &p),
            ["/dev/kfd", "/dev/dri/renderD128"]
        );
        assert!(nvidia_uuids(Some(GpuVendor::Amd), &p).is_empty());
    }

    #[test]
    fn intel_gets_only_render_nodes() {
        let p = placement(&["intel-0"], &["/dev/dri/renderD129"]);
        assert_eq!(
            device_nodes(Some(GpuVendor::Intel), &p),
            ["/dev/dri/renderD129"]
        );
    }

    #[test]
    fn nvidia_gets_a_device_request_and_no_nodes() {
        let p = placement(&["GPU-1", "GPU-2"], &[]);
        assert!(device_nodes(Some(GpuVendor::Nvidia), &p).is_empty());
        assert_eq!(
            nvidia_uuids(Some(GpuVendor::Nvidia), &p),
            ["GPU-1", "GPU-2"]
        );
        assert!(device_nodes(None, &placement(&[], &[])).is_empty());
    }
}
