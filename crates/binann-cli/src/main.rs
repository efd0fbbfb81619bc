//! `binann`: the person-facing tools. It never links libtorch.
//!
//! - `inspect FILE`: print any run-directory file as JSON.
//! - `demo-data`: write Fashion-MNIST images as PNG files plus a ground-truth CSV.
//! - `export`: labels and predictions of every image, as CSV or JSON Lines.
//! - `simulate`: a simulated annotator answering from a ground-truth CSV (in the library, which
//!   binann-bench's recall benchmark shares).
//!
//! The benchmarks are binaries of their own, in crates/binann-bench.

mod demo;
mod export;

use std::path::PathBuf;

use binann_cli::simulate;
use clap::{Parser, Subcommand};

/// binann's tools: inspect run-directory files, make demo data, export, simulate an annotator.
#[derive(Debug, Parser)]
#[command(name = "binann", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print any run-directory file (manifest, annotations, ranking, predictions, embeddings,
    /// checkpoint) as JSON: the header first, then the content, one value per line.
    Inspect {
        /// The file, e.g. RUNDIR/ranking.bin.
        file: PathBuf,
    },
    /// Write Fashion-MNIST images as PNG files and their classes as a CSV kept outside the folder.
    DemoData(demo::DemoArgs),
    /// Write every image with its human label, the model's probability and label, and where the
    /// final label came from (CSV or JSON Lines); --label-rest lets the model label the rest.
    Export(export::ExportArgs),
    /// A simulated annotator: labels through the HTTP API from a ground-truth CSV, at a set pace.
    Simulate(simulate::SimulateArgs),
}

fn main() -> std::process::ExitCode {
    // The tools print their own figures; only warnings go to the log.
    binann_core::cli::main("binann", "warn", || match Cli::parse().command {
        Command::Inspect { file } => inspect(&file),
        Command::DemoData(args) => demo::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Simulate(args) => simulate::run(&args),
    })
}

fn inspect(file: &std::path::Path) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match binann_core::inspect::inspect(file, &mut out) {
        Ok(()) => Ok(()),
        // `inspect FILE | head` closes the pipe early: that is not an error.
        Err(binann_core::inspect::InspectError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}
