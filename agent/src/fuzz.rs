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
    /// Env values are replaced by this marker (only NUL bytes in a value
    /// are validated, and values with NUL keep their bytes), so a leak is
    /// found by looking for the marker rather than for arbitrary strings
    /// that `Debug` may print anyway (field names, parsed fields).
    const SECRET: &str = "glrt-fuzz-secret-7f3a9c";
    let Ok(mut msg) = pb::StartRunner::decode(data) else {
        return;
    };
    if let Some(spec) = msg.spec.as_mut() {
        for (i, v) in spec.env.iter_mut().enumerate() {
            if !v.value.contains('\0') {
                v.value = format!("{SECRET}-{i}");
            }
        }
    }
    // The marker may legitimately show up if the input put it elsewhere
    // (the message's own `Debug` redacts, so look at the raw bytes).
    let elsewhere = data.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
    let shown = match RunnerSpec::try_from(msg) {
        Ok(spec) => format!("{spec:?}"),
        Err(e) => {
            let m = e.to_string();
            assert_clear_error("StartRunner", &m);
            m
        }
    };
    assert!(
        elsewhere || !shown.contains(SECRET),
        "an env value leaked: {shown}"
    );
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
