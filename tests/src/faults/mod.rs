//! The fault suite (`cargo xtask faults`): real coordinator and agent
//! processes, a real dockerd and the GitLab simulator, broken at the moments
//! real fleets break. Each row reports four counters that must all be zero:
//! orphaned containers, orphaned GitLab runners, double-served jobs and lost
//! records (see [`Counters`]). `tests/tests/faults.rs` runs the short subset
//! in CI; `docs/reliability.md` records the whole table.

mod dockerd;
mod fixture;
mod proxy;
pub mod rows;

use std::time::{Duration, Instant};

pub use dockerd::PrivateDockerd;
pub use fixture::{Counters, Fixture, Setup, short_tokens};
pub use proxy::Proxy;
pub use rows::{Outcome, Row, Scale};

/// One row's result.
pub struct RowResult {
    pub name: &'static str,
    pub took: Duration,
    /// The counters, or why the scenario itself could not run to its end.
    pub result: Result<Outcome, String>,
}

impl RowResult {
    pub fn passed(&self) -> bool {
        matches!(&self.result, Ok(o) if o.counters.is_zero())
    }
}

/// Run one row, catching a failed scenario as a failed row.
pub fn run(row: &Row, scale: Scale) -> RowResult {
    let start = Instant::now();
    let result = (row.run)(scale).map_err(|e| format!("{e:#}"));
    RowResult {
        name: row.name,
        took: start.elapsed(),
        result,
    }
}

/// The table as Markdown.
pub fn render(results: &[RowResult]) -> String {
    let mut s = String::from(
        "| scenario | orphaned containers / orphaned GitLab runners / double-served / lost | took | notes |\n|---|---|---:|---|\n",
    );
    for r in results {
        let (counters, notes) = match &r.result {
            Ok(o) => (
                o.counters.to_string(),
                o.notes.lines().next().unwrap_or("").to_string(),
            ),
            Err(e) => (
                "did not finish".to_string(),
                e.lines().next().unwrap_or("").to_string(),
            ),
        };
        s.push_str(&format!(
            "| {} | {} | {:.0} s | {} |\n",
            r.name,
            counters,
            r.took.as_secs_f64(),
            notes.replace('|', "/")
        ));
    }
    s
}
