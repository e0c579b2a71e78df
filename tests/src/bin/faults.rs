//! `autogit-faults`: run the fault suite and print its table
//! (`cargo xtask faults` builds everything and runs this).

use std::process::ExitCode;

use autogit_tests::faults::{self, Scale};
use autogit_tests::machine::Machine;
use clap::Parser;

#[derive(Parser)]
#[command(name = "autogit-faults", about = "Break a real fleet at chosen moments and count what is left wrong")]
struct Args {
    /// Only the short subset, with shorter outages (what CI runs).
    #[arg(long)]
    quick: bool,
    /// Only rows whose name contains this (with --quick: at the short scale, in the subset or not).
    #[arg(long)]
    only: Option<String>,
    /// Print each failing row's diagnostics in full.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scale = Scale { quick: args.quick };
    let rows: Vec<_> = faults::rows::all()
        .into_iter()
        .filter(|r| !args.quick || r.in_quick || args.only.is_some())
        .filter(|r| args.only.as_deref().is_none_or(|o| r.name.contains(o)))
        .collect();
    let mut results = Vec::new();
    for row in &rows {
        eprintln!("autogit-faults: {} ...", row.name);
        let r = faults::run(row, scale);
        match &r.result {
            Ok(o) => eprintln!("  {} in {:.0} s", o.counters, r.took.as_secs_f64()),
            Err(e) => eprintln!("  did not finish: {}", e.lines().next().unwrap_or("")),
        }
        if args.verbose && !r.passed() {
            match &r.result {
                Ok(o) => eprintln!("{}", o.notes),
                Err(e) => eprintln!("{e}"),
            }
        }
        results.push(r);
    }
    print!("{}", Machine::read().render());
    print!("{}", faults::render(&results));
    let failed = results.iter().filter(|r| !r.passed()).count();
    println!("{} passed, {} failed", results.len() - failed, failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
