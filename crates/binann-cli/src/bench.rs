//! placeholder
/// Options of `binann bench-server`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}
/// Runs the benchmark.
pub fn run(_args: &BenchArgs) -> anyhow::Result<()> { anyhow::bail!("not yet") }
