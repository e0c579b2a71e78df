//! The cross toolchain `dist` needs, found or explained.
//!
//! * Debian's Rust (`rustc-web`, `cargo-web`, `rust-web-src`): a `rustc`
//!   whose standard-library sources ship beside it, so `-Zbuild-std` can
//!   build `std` for targets rustup cannot download here.
//! * Zig (PyPI `ziglang`) driven by `cargo-zigbuild` (PyPI wheel): the C
//!   compiler and linker for every target, with musl for static binaries
//!   and glibc stubs of an old version (2.17) for portable dynamic ones.
//! * Optional, for the post-build smoke run: `qemu-user-static` and the
//!   Debian cross glibc (`libc6-dev-arm64-cross`) for the dynamic aarch64
//!   binary.
//!
//! Every check that fails says which package to install, with the exact
//! command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::bail;

/// Versions verified with this project; `docs/building.md` names them too.
pub const ZIGLANG_VERSION: &str = "0.17.1";
pub const CARGO_ZIGBUILD_VERSION: &str = "0.24.1";

/// The apt command for the Rust toolchain with std sources.
pub const APT_RUST: &str = "apt-get install -y rustc-web cargo-web rust-web-src";
/// The apt command for running the results under emulation.
pub const APT_QEMU: &str =
    "apt-get install -y qemu-user-static libc6-dev-arm64-cross libc6-dev-riscv64-cross";

/// The pip command for Zig and cargo-zigbuild.
pub fn pip_zig() -> String {
    format!(
        "python3 -m pip install ziglang=={ZIGLANG_VERSION} cargo-zigbuild=={CARGO_ZIGBUILD_VERSION}"
    )
}

/// The tools found.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// Debian's `cargo` (a rustup proxy would pick rustup's toolchain).
    pub cargo: PathBuf,
    /// Debian's `rustc`.
    pub rustc: PathBuf,
    pub rustc_version: String,
    pub cargo_zigbuild: PathBuf,
    pub zig_version: String,
}

/// Where Debian's packages put the compiler.
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// Runs `cmd` and returns its trimmed stdout when it succeeds.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An executable called `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `cargo-zigbuild` on PATH, or in the scripts directory of the `python3`
/// that pip installed it for (pyenv only links new scripts after a rehash).
fn find_cargo_zigbuild() -> Option<PathBuf> {
    on_path("cargo-zigbuild").or_else(|| {
        let dir = output(Command::new("python3").args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ]))?;
        let p = Path::new(&dir).join("cargo-zigbuild");
        p.is_file().then_some(p)
    })
}

/// Zig's version, as cargo-zigbuild will find it (`zig` on PATH, else
/// `python3 -m ziglang`).
fn zig_version() -> Option<String> {
    output(Command::new("zig").arg("version"))
        .or_else(|| output(Command::new("python3").args(["-m", "ziglang", "version"])))
}

/// Checks everything needed to build; the error lists every missing piece
/// with the command that installs it.
pub fn check() -> anyhow::Result<Toolchain> {
    let mut missing = Vec::new();
    let rustc = PathBuf::from(DEBIAN_RUSTC);
    let cargo = PathBuf::from(DEBIAN_CARGO);
    let rustc_version = output(Command::new(&rustc).arg("--version"));
    let sysroot = output(Command::new(&rustc).args(["--print", "sysroot"]));
    let std_src = sysroot
        .as_ref()
        .map(|s| Path::new(s).join("lib/rustlib/src/rust/library/Cargo.lock"));
    match (&rustc_version, &std_src) {
        (None, _) => missing.push(format!(
            "Debian's Rust compiler ({DEBIAN_RUSTC}): {APT_RUST}"
        )),
        (Some(_), Some(src)) if !src.exists() => missing.push(format!(
            "the standard library sources ({}): {APT_RUST}",
            src.display()
        )),
        _ => {}
    }
    if output(Command::new(&cargo).arg("--version")).is_none() {
        missing.push(format!("Debian's cargo ({DEBIAN_CARGO}): {APT_RUST}"));
    }
    let zig = zig_version();
    if zig.is_none() {
        missing.push(format!("zig (PyPI ziglang): {}", pip_zig()));
    }
    let zigbuild = find_cargo_zigbuild();
    if zigbuild.is_none() {
        missing.push(format!("cargo-zigbuild (PyPI): {}", pip_zig()));
    }
    match (rustc_version, zigbuild, zig) {
        (Some(rustc_version), Some(cargo_zigbuild), Some(zig_version)) if missing.is_empty() => {
            Ok(Toolchain {
                cargo,
                rustc,
                rustc_version,
                cargo_zigbuild,
                zig_version,
            })
        }
        _ => bail!(
            "the cross toolchain is incomplete (see docs/building.md):\n  - {}",
            missing.join("\n  - ")
        ),
    }
}

/// How to run a binary of `arch` on this host, if this host can: natively,
/// or under qemu-user with the Debian cross sysroot for dynamic binaries.
pub fn runner(arch: &str, dynamic: bool) -> Result<Vec<String>, String> {
    if arch == std::env::consts::ARCH {
        return Ok(Vec::new());
    }
    let qemu = format!("qemu-{arch}-static");
    let Some(qemu_path) = on_path(&qemu) else {
        return Err(format!("{qemu} is not installed ({APT_QEMU})"));
    };
    let mut cmd = vec![qemu_path.display().to_string()];
    if dynamic {
        let sysroot = format!("/usr/{arch}-linux-gnu");
        if !Path::new(&sysroot).join("lib").is_dir() {
            return Err(format!(
                "the {arch} glibc ({sysroot}) is not installed ({APT_QEMU})"
            ));
        }
        cmd.extend(["-L".to_string(), sysroot]);
    }
    Ok(cmd)
}
