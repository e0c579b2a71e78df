//! `cargo xtask dist`: stripped release binaries for every architecture we
//! ship, built offline on this host, into `target/dist/`.
//!
//! * `autogit-agent-{x86_64,aarch64,riscv64}`: the agent. x86_64 and aarch64
//!   are dynamic against glibc >= 2.17 so NVIDIA's `libnvidia-ml.so.1` can be
//!   `dlopen`ed; riscv64 is a static musl binary (no NVIDIA driver exists
//!   for it). `docs/adr/0003-agent-binary-linking.md` gives the reasons.
//! * `autogit-coordinator-<host arch>`: a static musl coordinator for the
//!   `FROM scratch` image (`deploy/build-image.sh`).
//! * `install.sh`, `autogit-agent.service`, `agent.toml`: the installer and
//!   what it installs, so the directory is a complete bundle.
//! * `SHA256SUMS` over all of it.
//!
//! The toolchain is Debian's Rust with `-Zbuild-std` and Zig as C compiler
//! and linker through cargo-zigbuild ([`toolchain`]); builds go to
//! `target/cross/` so the shared debug cache is never invalidated.

mod elf;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::root;

/// An architecture we ship.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
    #[value(name = "riscv64")]
    Riscv64,
}

impl Arch {
    const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Riscv64];

    /// The name in file names, `uname -m` and the inventory.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }

    fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => elf::EM_X86_64,
            Arch::Aarch64 => elf::EM_AARCH64,
            Arch::Riscv64 => elf::EM_RISCV,
        }
    }

    fn host() -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == std::env::consts::ARCH)
    }
}

/// How a binary is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Libc {
    /// Dynamic, against glibc symbol versions no newer than 2.17.
    Glibc217,
    /// Static musl.
    MuslStatic,
}

/// One binary to build.
#[derive(Clone, Debug)]
struct Build {
    package: &'static str,
    arch: Arch,
    libc: Libc,
}

impl Build {
    /// Rust's target triple.
    fn triple(&self) -> String {
        let cpu = match self.arch {
            Arch::Riscv64 => "riscv64gc",
            a => a.name(),
        };
        let env = match self.libc {
            Libc::Glibc217 => "gnu",
            Libc::MuslStatic => "musl",
        };
        format!("{cpu}-unknown-linux-{env}")
    }

    /// The target as cargo-zigbuild takes it (a glibc version suffix pins
    /// the symbol versions the binary may use).
    fn zig_target(&self) -> String {
        match self.libc {
            Libc::Glibc217 => format!("{}.2.17", self.triple()),
            Libc::MuslStatic => self.triple(),
        }
    }

    fn file_name(&self) -> String {
        format!("{}-{}", self.package, self.arch.name())
    }
}

/// The agent's linking decision per architecture (see the ADR).
fn agent_libc(arch: Arch) -> Libc {
    match arch {
        Arch::X86_64 | Arch::Aarch64 => Libc::Glibc217,
        Arch::Riscv64 => Libc::MuslStatic,
    }
}

#[derive(clap::Args)]
pub struct DistArgs {
    /// Build the agent only for these architectures (repeatable; default all).
    #[arg(long = "arch", value_enum)]
    arch: Vec<Arch>,
    /// Do not build the static coordinator for the container image.
    #[arg(long)]
    no_coordinator: bool,
    /// Only check that the cross toolchain is complete.
    #[arg(long)]
    check: bool,
}

/// What one build produced.
struct Built {
    path: PathBuf,
    size: u64,
    linkage: String,
    took: Duration,
    smoke: String,
}

pub fn run(a: &DistArgs) -> anyhow::Result<()> {
    let tc = toolchain::check()?;
    eprintln!(
        "dist: {} ({}), zig {}, {}",
        tc.rustc_version,
        tc.rustc.display(),
        tc.zig_version,
        tc.cargo_zigbuild.display()
    );
    if a.check {
        return Ok(());
    }
    let mut arches = if a.arch.is_empty() {
        Arch::ALL.to_vec()
    } else {
        a.arch.clone()
    };
    arches.sort();
    arches.dedup();
    let mut builds: Vec<Build> = arches
        .into_iter()
        .map(|arch| Build {
            package: "autogit-agent",
            arch,
            libc: agent_libc(arch),
        })
        .collect();
    if !a.no_coordinator {
        let arch = Arch::host().context(
            "the coordinator image is built for the host, whose architecture we do not ship",
        )?;
        builds.push(Build {
            package: "autogit-coordinator",
            arch,
            libc: Libc::MuslStatic,
        });
    }

    let cross = root().join("target/cross");
    let dist = root().join("target/dist");
    std::fs::create_dir_all(&dist).with_context(|| format!("create {}", dist.display()))?;
    let shims = toolchain_shims(&cross, &tc)?;
    let started = Instant::now();
    let mut built = Vec::new();
    for b in &builds {
        built.push(build_one(&tc, &shims, &cross, &dist, b)?);
    }
    bundle(&dist)?;
    println!();
    println!(
        "{:<42} {:>10} {:>7}  {:<24} {:>7}  smoke run",
        "binary", "bytes", "MiB", "linkage", "build"
    );
    for b in &built {
        println!(
            "{:<42} {:>10} {:>7.2}  {:<24} {:>6.0}s  {}",
            b.path.strip_prefix(root()).unwrap_or(&b.path).display(),
            b.size,
            b.size as f64 / (1024.0 * 1024.0),
            b.linkage,
            b.took.as_secs_f64(),
            b.smoke
        );
    }
    println!(
        "dist: done in {:.0}s; bundle and SHA256SUMS in {}",
        started.elapsed().as_secs_f64(),
        dist.display()
    );
    Ok(())
}

/// A directory whose `cargo` and `rustc` are Debian's, put first on PATH
/// so nothing (cargo-zigbuild, build scripts) reaches rustup's proxies.
fn toolchain_shims(cross: &Path, tc: &toolchain::Toolchain) -> anyhow::Result<PathBuf> {
    let dir = cross.join("toolchain-bin");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for (name, target) in [("cargo", &tc.cargo), ("rustc", &tc.rustc)] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link)
            .with_context(|| format!("link {}", link.display()))?;
    }
    Ok(dir)
}

fn build_one(
    tc: &toolchain::Toolchain,
    shims: &Path,
    cross: &Path,
    dist: &Path,
    b: &Build,
) -> anyhow::Result<Built> {
    let triple = b.triple();
    eprintln!(
        "dist: building {} for {} ({})",
        b.package,
        b.arch.name(),
        b.zig_target()
    );
    let mut cmd = Command::new(&tc.cargo_zigbuild);
    cmd.current_dir(root())
        .args([
            "build",
            "--profile",
            "dist",
            "-Zbuild-std=std,panic_abort",
            "--target",
        ])
        .arg(b.zig_target())
        .arg("--target-dir")
        .arg(cross)
        .args(["-p", b.package, "--bin", b.package]);
    // Outer `cargo run` / rustup settings must not leak into this build.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "LD_LIBRARY_PATH",
    ] {
        cmd.env_remove(var);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(shims.to_path_buf()).chain(std::env::split_paths(&path)),
    )?;
    cmd.env("PATH", path)
        .env("CARGO", &tc.cargo)
        .env("RUSTC", &tc.rustc)
        .env("RUSTC_BOOTSTRAP", "1");
    if b.libc == Libc::MuslStatic {
        // Zig provides musl's crt objects and libc.a; rustc would otherwise
        // look for its own copies, which only rustup's rust-std ships.
        let var = format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            triple.to_uppercase().replace('-', "_")
        );
        cmd.env(var, "-C link-self-contained=no");
    }
    let started = Instant::now();
    crate::run(cmd).with_context(|| format!("build {} for {}", b.package, b.arch.name()))?;
    let took = started.elapsed();

    let from = cross.join(&triple).join("dist").join(b.package);
    let to = dist.join(b.file_name());
    std::fs::copy(&from, &to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    set_mode(&to, 0o755)?;
    let bytes = std::fs::read(&to).with_context(|| format!("read {}", to.display()))?;
    let facts = elf::read(&bytes).with_context(|| format!("inspect {}", to.display()))?;
    check_facts(b, &facts).with_context(|| format!("check {}", to.display()))?;
    let smoke = smoke_run(b, &to, facts.interpreter.is_some())?;
    Ok(Built {
        path: to,
        size: bytes.len() as u64,
        linkage: facts.linkage(),
        took,
        smoke,
    })
}

/// The binary is what we meant to build: right machine, stripped, and
/// linked the way the ADR says.
fn check_facts(b: &Build, f: &elf::ElfFacts) -> anyhow::Result<()> {
    if f.machine != b.arch.elf_machine() {
        bail!(
            "ELF machine is {} but {} needs {}",
            f.machine,
            b.arch.name(),
            b.arch.elf_machine()
        );
    }
    if !f.stripped {
        bail!("not stripped (the dist profile sets strip = true)");
    }
    match b.libc {
        Libc::MuslStatic if f.interpreter.is_some() => {
            bail!("expected a static binary, found {}", f.linkage())
        }
        Libc::Glibc217 if f.interpreter.is_none() => {
            bail!("expected a dynamic glibc binary, found a static one")
        }
        Libc::Glibc217 if f.max_glibc > Some((2, 17)) => {
            bail!("needs {}, expected at most glibc 2.17", f.linkage())
        }
        _ => Ok(()),
    }
}

/// Runs `BINARY --version` natively or under qemu-user; a missing emulator
/// is reported, not fatal (the deploy_dist tests run the real checks).
fn smoke_run(b: &Build, bin: &Path, dynamic: bool) -> anyhow::Result<String> {
    let mut argv = match toolchain::runner(b.arch.name(), dynamic) {
        Ok(argv) => argv,
        Err(why) => return Ok(format!("skipped: {why}")),
    };
    argv.push(bin.display().to_string());
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .arg("--version")
        .output()
        .with_context(|| format!("run {argv:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.starts_with(b.package) {
        bail!(
            "{} --version failed ({}): {}{}",
            bin.display(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let how = if argv.len() > 1 {
        Path::new(&argv[0])
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        "native".into()
    };
    Ok(format!("ok ({how})"))
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

/// Copies the installer and what it installs next to the binaries and
/// writes `SHA256SUMS` for everything in the directory.
fn bundle(dist: &Path) -> anyhow::Result<()> {
    for (name, mode) in [
        ("install.sh", 0o755),
        ("autogit-agent.service", 0o644),
        ("agent.toml", 0o644),
    ] {
        let from = root().join("deploy").join(name);
        let to = dist.join(name);
        std::fs::copy(&from, &to)
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        set_mode(&to, mode)?;
    }
    let mut files: Vec<String> = std::fs::read_dir(dist)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS")
        .collect();
    files.sort();
    let out = Command::new("sha256sum")
        .current_dir(dist)
        .args(&files)
        .output()
        .context("run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(dist.join("SHA256SUMS"), out.stdout).context("write SHA256SUMS")
}
