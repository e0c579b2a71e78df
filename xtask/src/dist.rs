//! `cargo xtask dist`: cross-built agent binaries (work in progress).

#[derive(clap::Args)]
pub struct DistArgs {}

pub fn run(_a: &DistArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
