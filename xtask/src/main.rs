//! Project tasks.
//!
//! * `cargo xtask test`: the test command in README.md ([`test`]).
//! * `cargo xtask dist`: cross-built, stripped agent binaries ([`dist`]).
//! * `cargo xtask dev`: a local fleet on this host ([`dev`]).
//! * `cargo xtask faults`: the fault suite ([`faults`]).
//! * `cargo xtask fuzz`: every cargo-fuzz target for a bounded time ([`fuzz`]).
//!
//! `test` and `dev` first make sure the Debian packages in
//! `xtask/debian-packages.txt` are installed ([`packages`]).

mod dev;
mod dist;
mod faults;
mod fuzz;
mod packages;
mod test;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "AutoGit project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build all binaries, ensure Docker, run every test.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build stripped agent binaries for x86_64, aarch64 and riscv64 into target/dist/.
    Dist(dist::DistArgs),
    /// Run a local fleet on this host: coordinator, one agent, SQLite, and the
    /// GitLab simulator with demo jobs when no GitLab is configured.
    Dev(dev::DevArgs),
    /// The fault suite: break a real fleet at chosen moments and count what is
    /// left wrong (`--quick` for the short subset, `--only NAME`, `--verbose`).
    Faults {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run each cargo-fuzz target in fuzz/ for a bounded time (installs cargo-fuzz if missing).
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Test { args } => test::run(&args),
        Cmd::Dist(a) => dist::run(&a),
        Cmd::Dev(a) => dev::run(&a),
        Cmd::Faults { args } => faults::run(&args),
        Cmd::Fuzz(a) => fuzz::run_fuzz(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `cargo` in the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Run a command; fail if it fails.
pub fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
