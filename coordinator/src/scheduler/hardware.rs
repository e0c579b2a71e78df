//! Hardware vocabulary shared by pools and agents: CPU architectures and GPU
//! vendors, with the spellings AutoGit accepts in config and from agents.

use std::fmt;
use std::str::FromStr;

/// A machine architecture a pool can require and an agent can have.
///
/// Canonical names are the kernel's (`uname -m`): `x86_64`, `aarch64`,
/// `riscv64`. The Docker/Debian aliases `amd64` and `arm64` are accepted
/// everywhere (config and agent inventory) and normalised; matching is
/// ASCII case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
    Riscv64,
}

impl Arch {
    /// All supported architectures, in a fixed order.
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Riscv64];

    /// The canonical (`uname -m`) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The architectures a pool's runners may run on: one or more, as a small
/// set (order is [`Arch::ALL`]'s). A pool whose jobs do not care lists
/// several (`arch = ["x86_64", "aarch64"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Archs(u8);

impl Archs {
    fn bit(a: Arch) -> u8 {
        1 << Arch::ALL.iter().position(|x| *x == a).unwrap_or(0)
    }

    /// The set of one architecture.
    pub fn one(a: Arch) -> Archs {
        Archs(Self::bit(a))
    }

    /// The set of these architectures; `None` when empty.
    pub fn of(archs: impl IntoIterator<Item = Arch>) -> Option<Archs> {
        let bits = archs.into_iter().fold(0, |b, a| b | Self::bit(a));
        (bits != 0).then_some(Archs(bits))
    }

    pub fn contains(self, a: Arch) -> bool {
        self.0 & Self::bit(a) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Arch> {
        Arch::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Never true for a value made by [`Self::one`] or [`Self::of`].
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl From<Arch> for Archs {
    fn from(a: Arch) -> Archs {
        Archs::one(a)
    }
}

/// `x86_64`, or `x86_64 or aarch64` for several.
impl fmt::Display for Archs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Arch::as_str).collect();
        f.write_str(&names.join(" or "))
    }
}

/// An architecture name AutoGit does not support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArch(pub String);

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsupported architecture {:?} (expected x86_64/amd64, aarch64/arm64 or riscv64)",
            self.0
        )
    }
}

impl std::error::Error for UnknownArch {}

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "riscv64" => Ok(Arch::Riscv64),
            _ => Err(UnknownArch(s.to_owned())),
        }
    }
}

/// A GPU vendor. Config spells them `nvidia`, `amd`, `intel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GpuVendor {
    Nvidia,
    Amd,
    Intel,
}

impl GpuVendor {
    /// Every vendor, in config order.
    pub const ALL: [GpuVendor; 3] = [GpuVendor::Nvidia, GpuVendor::Amd, GpuVendor::Intel];

    /// The config and storage spelling: `nvidia`, `amd`, `intel`.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
            GpuVendor::Intel => "intel",
        }
    }

    /// Whether containers reach this vendor's GPUs through device nodes
    /// (render nodes; see `runners/devices.rs`) rather than an NVIDIA device
    /// request.
    pub fn uses_device_nodes(self) -> bool {
        !matches!(self, GpuVendor::Nvidia)
    }
}

impl fmt::Display for GpuVendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GpuVendor::Nvidia => "NVIDIA",
            GpuVendor::Amd => "AMD",
            GpuVendor::Intel => "Intel",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_aliases_normalise() {
        assert_eq!("amd64".parse::<Arch>(), Ok(Arch::X86_64));
        assert_eq!("X86_64".parse::<Arch>(), Ok(Arch::X86_64));
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Aarch64));
        assert_eq!("aarch64".parse::<Arch>(), Ok(Arch::Aarch64));
        assert_eq!("riscv64".parse::<Arch>(), Ok(Arch::Riscv64));
        assert_eq!(Arch::Aarch64.to_string(), "aarch64");
    }

    #[test]
    fn unknown_arch_is_rejected_with_its_name() {
        let err = "ppc64le".parse::<Arch>().unwrap_err();
        assert!(err.to_string().contains("\"ppc64le\""), "{err}");
        assert!("armv7l".parse::<Arch>().is_err());
        assert!("".parse::<Arch>().is_err());
    }
}
