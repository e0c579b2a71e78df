//! The fault suite's short subset (`cargo xtask faults --quick` runs the same
//! rows; `cargo xtask faults` the whole table with longer outages). Each row
//! breaks a real fleet at one moment and must leave zero orphaned containers,
//! zero orphaned GitLab runners, zero double-served jobs and zero lost records.
//! Rows run one at a time: each kills processes at chosen moments, and a
//! loaded machine would move those moments.

use std::sync::Mutex;

use autogit_tests::faults::{self, Scale};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn row(name: &str) {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rows = faults::rows::all();
    let row = rows
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name:?}"));
    assert!(row.in_quick, "{name} is not in the quick subset");
    let r = faults::run(row, Scale { quick: true });
    match r.result {
        Ok(o) => assert!(
            o.counters.is_zero(),
            "{name}: counters {} (orphaned containers / orphaned GitLab runners / double-served / lost)\n{}",
            o.counters,
            o.notes
        ),
        Err(e) => panic!("{name}: the scenario did not finish: {e}"),
    }
}

#[test]
fn coordinator_sigkill_after_create_runner() {
    row("coordinator SIGKILL after POST /user/runners");
}

#[test]
fn coordinator_sigkill_after_start_runner() {
    row("coordinator SIGKILL after StartRunner was sent");
}

#[test]
fn coordinator_sigkill_with_gitlab_runners_in_stock() {
    row("coordinator SIGKILL with GitLab runners in stock");
}

#[test]
fn coordinator_sigkill_before_delete_runner() {
    row("coordinator SIGKILL after exit, before DELETE /runners/:id");
}

#[test]
fn agent_sigkill_mid_job() {
    row("agent SIGKILL mid-job");
}

#[test]
fn gitlab_outage_then_recovery() {
    row("GitLab 5xx then 429, then recovering");
}

#[test]
fn agent_cut_off_during_a_stop() {
    row("agent cut off (unreachable < t < lost) during a stop");
}

#[test]
fn webhook_flood_with_forged_statuses() {
    row("webhook flood: duplicates and forged statuses");
}

#[test]
fn dockerd_restart_mid_job() {
    row("dockerd restart mid-job");
}

#[test]
fn half_open_and_idle_connections() {
    row("half-open HTTP and idle TLS connections");
}

#[test]
fn every_quick_row_has_a_test() {
    let names = [
        "coordinator SIGKILL after POST /user/runners",
        "coordinator SIGKILL after StartRunner was sent",
        "coordinator SIGKILL with GitLab runners in stock",
        "coordinator SIGKILL after exit, before DELETE /runners/:id",
        "agent SIGKILL mid-job",
        "GitLab 5xx then 429, then recovering",
        "agent cut off (unreachable < t < lost) during a stop",
        "webhook flood: duplicates and forged statuses",
        "dockerd restart mid-job",
        "half-open HTTP and idle TLS connections",
    ];
    for r in faults::rows::all().iter().filter(|r| r.in_quick) {
        assert!(names.contains(&r.name), "quick row {:?} has no test here", r.name);
    }
}
