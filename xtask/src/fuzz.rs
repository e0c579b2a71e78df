//! `cargo xtask fuzz [--seconds N] [--target NAME]`: run every cargo-fuzz
//! target in `fuzz/` for a bounded time and print what each did.
//!
//! Each target starts from its seed corpus `fuzz/corpus/<target>/` (read
//! only) and writes what it finds to `fuzz/work/<target>/` (ignored by git),
//! so the checked-in corpus stays a handful of readable seeds. A crash
//! leaves its input in `fuzz/artifacts/<target>/`: fix the bug, then copy
//! the input into `fuzz/corpus/<target>/`, where the normal `cargo test`
//! replays it from then on. cargo-fuzz needs nightly flags; Debian's or
//! rustup's stable compiler accepts them with `RUSTC_BOOTSTRAP=1`, which is
//! set here. cargo-fuzz is installed with `cargo install` when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::{root, run};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long to run each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run only this target (repeatable; default all of `fuzz/fuzz_targets/`).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// libFuzzer sanitizer: `none` (our code forbids `unsafe`) or `address`.
    #[arg(long, default_value = "none")]
    sanitizer: String,
}

/// The last status line of one run.
struct Outcome {
    target: String,
    ok: bool,
    stats: String,
}

pub fn run_fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    let fuzz_dir = root().join("fuzz");
    ensure_cargo_fuzz()?;
    let targets = if args.targets.is_empty() {
        all_targets(&fuzz_dir)?
    } else {
        args.targets.clone()
    };
    if targets.is_empty() {
        bail!(
            "no fuzz targets in {}",
            fuzz_dir.join("fuzz_targets").display()
        );
    }
    let mut build = cargo_fuzz(&fuzz_dir);
    build.args(["build", "--sanitizer", &args.sanitizer]);
    run(build).context("build the fuzz targets")?;
    let mut outcomes = Vec::new();
    for target in &targets {
        let work = fuzz_dir.join("work").join(target);
        std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let mut cmd = cargo_fuzz(&fuzz_dir);
        cmd.args(["run", "--sanitizer", &args.sanitizer, target])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-print_final_stats=1")
            .stderr(Stdio::piped());
        eprintln!("xtask: fuzzing {target} for {} s", args.seconds);
        let out = cmd
            .output()
            .with_context(|| format!("run cargo fuzz run {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stats = log
            .lines()
            .rev()
            .find(|l| l.contains("DONE") || l.contains("cov:"))
            .unwrap_or("no status line")
            .to_string();
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map(str::trim);
        let stats = match runs {
            Some(n) => format!("{n} runs; {stats}"),
            None => stats,
        };
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        outcomes.push(Outcome {
            target: target.clone(),
            ok: out.status.success(),
            stats,
        });
    }
    println!("{:<20} {:<6} last status", "target", "result");
    for o in &outcomes {
        println!(
            "{:<20} {:<6} {}",
            o.target,
            if o.ok { "ok" } else { "FAILED" },
            o.stats
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(fuzz_dir)
        .arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1");
    c
}

/// Install cargo-fuzz when `cargo fuzz` is not available.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let present = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!(
        "xtask: cargo-fuzz is missing; installing it with `cargo install cargo-fuzz --locked`"
    );
    let mut install = Command::new(&cargo);
    install.args(["install", "cargo-fuzz", "--locked"]);
    run(install)
}

/// The targets: `fuzz/fuzz_targets/<name>.rs`, sorted.
fn all_targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir: PathBuf = fuzz_dir.join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".rs"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}
