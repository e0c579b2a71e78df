//! Fuzz bodies for the agent's inputs (see `autogit_certs::fuzz`): the
//! coordinator's `StartRunner` command as it arrives on the wire, and the
//! agent's TOML configuration. Not an API: hidden from the docs.

use autogit_certs::fuzz::assert_clear_error;
use autogit_proto::v1 as pb;
use prost::Message;

use crate::config::{Config, Overrides};
use crate::docker::RunnerSpec;

/// `StartRunner` bytes → [`RunnerSpec`] (`TryFrom`, `docker/spec.rs`): no
/// panic; bad input is a one-line error that never shows an env value
/// (they carry the runner token), and neither does the spec's `Debug`.
pub fn start_runner(data: &[u8]) {
    let Ok(msg) = pb::StartRunner::decode(data) else {
        return;
    };
    // Strings that appear elsewhere in the message may legitimately show up.
    let mut others = msg.clone();
    let secrets: Vec<String> = match others.spec.as_mut() {
        Some(spec) => spec
            .env
            .iter_mut()
            .map(|v| std::mem::take(&mut v.value))
            .collect(),
        None => Vec::new(),
    };
    let others = format!("{others:?}");
    let shown = match RunnerSpec::try_from(msg) {
        Ok(spec) => format!("{spec:?}"),
        Err(e) => {
            let m = e.to_string();
            assert_clear_error("StartRunner", &m);
            m
        }
    };
    for s in secrets
        .iter()
        .filter(|s| s.len() >= 6 && !others.contains(s.as_str()))
    {
        assert!(!shown.contains(s.as_str()), "an env value leaked: {shown}");
    }
}

/// The agent's TOML configuration file → [`Config`]: no panic; bad input
/// is a one-line error.
pub fn config(data: &[u8]) {
    let Some(path) = autogit_certs::fuzz::scratch_file("agent.toml", data) else {
        return;
    };
    if let Err(e) = Config::load(Some(&path), &[], &Overrides::default()) {
        assert_clear_error("agent config", &e.to_string());
    }
}
