//! `cargo xtask faults`: the fault suite against real processes and dockerd.
//! Builds the binaries, makes sure a Docker engine answers (starting a
//! private one like `cargo xtask test`), and runs `autogit-faults`, which
//! prints the table recorded in `docs/reliability.md`.

use crate::{cargo, root};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    crate::run(build)?;
    let (socket, _dockerd) = crate::test::ensure_docker()?;
    let mut cmd = std::process::Command::new(root().join("target/debug/autogit-faults"));
    cmd.args(args);
    cmd.env("DOCKER_HOST", format!("unix://{}", socket.display()));
    cmd.env("AUTOGIT_BIN_DIR", root().join("target/debug"));
    crate::run(cmd)
}
