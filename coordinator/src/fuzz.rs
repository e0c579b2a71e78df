//! Fuzz bodies for the coordinator's inputs (see `autogit_certs::fuzz`):
//! GitLab Job Hook bodies, the agent's messages as they arrive on the wire,
//! and the TOML configuration. Not an API: hidden from the docs.

use autogit_certs::fuzz::assert_clear_error;
use autogit_proto::v1 as pb;
use prost::Message;

use crate::config::{Config, Overrides};
use crate::fleet::Inventory;
use crate::fleet::session::RunnerReport;
use crate::gitlab::webhook::parse_job_hook;

/// A webhook body → `parse_job_hook`: no panic; bad input is a one-line error.
pub fn job_hook(data: &[u8]) {
    match parse_job_hook(data) {
        Ok(hook) => assert_eq!(hook.object_kind, "build"),
        Err(e) => assert_clear_error("job hook", &e.to_string()),
    }
}

/// `Inventory` bytes (in `Hello` and inventory updates) → the domain
/// [`Inventory`]: no panic; bad input is a one-line error.
pub fn inventory(data: &[u8]) {
    let Ok(msg) = pb::Inventory::decode(data) else {
        return;
    };
    if let Err(e) = Inventory::try_from(msg) {
        assert_clear_error("inventory", &e.to_string());
    }
}

/// `RunnerStatus` and `ManagedContainer` bytes → [`RunnerReport`]: no
/// panic; bad input is a one-line error; what is kept is bounded.
pub fn runner_report(data: &[u8]) {
    if let Ok(msg) = pb::RunnerStatus::decode(data) {
        match RunnerReport::try_from(msg) {
            Ok(r) => {
                assert!(r.runner_id.len() <= 128);
                assert!(r.log_tail.len() <= 200);
            }
            Err(e) => assert_clear_error("runner status", &e.to_string()),
        }
    }
    if let Ok(msg) = pb::ManagedContainer::decode(data)
        && let Err(e) = RunnerReport::try_from(msg)
    {
        assert_clear_error("managed container", &e.to_string());
    }
}

/// The coordinator's TOML configuration file → [`Config`]: no panic; bad
/// input is a one-line error.
pub fn config(data: &[u8]) {
    let Some(path) = autogit_certs::fuzz::scratch_file("coordinator.toml", data) else {
        return;
    };
    if let Err(e) = Config::load(Some(&path), &[], &Overrides::default()) {
        assert_clear_error("coordinator config", &e.to_string());
    }
}
