//! `cargo xtask dev`: a local fleet (work in progress).

#[derive(clap::Args)]
pub struct DevArgs {}

pub fn run(_a: &DevArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
