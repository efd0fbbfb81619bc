//! `binann-selector`: watches the predictions and writes the ranking. See `--help`.

use std::time::Duration;

use anyhow::Context;
use binann_core::cli::CommonArgs;
use binann_core::rundir::RunDir;
use binann_core::watch::FileWatcher;
use binann_selector::{Selector, Strategy};
use clap::Parser;

/// binann's selector: orders the unlabelled images from the inferrer's predictions and writes the
/// ranking the server hands images out from.
#[derive(Debug, Parser)]
#[command(name = "binann-selector", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// How to order the images once the model knows a positive: `max-probability` (most probably
    /// positive first), or `random` (a fixed-seed shuffle that ignores the model).
    #[arg(long, env = "BINANN_SELECTOR", value_enum, default_value = "max-probability")]
    strategy: Strategy,
}

fn main() -> std::process::ExitCode {
    binann_core::cli::return_large_freed_blocks();
    binann_core::cli::main("binann-selector", "info", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let rundir = RunDir::create_or_open(&args.common.rundir)?;
    let _lock = rundir.lock("selector")?;
    let mut selector = Selector::new(rundir, args.strategy);
    loop {
        // Watch before reading, so a file replaced while this round works wakes the next one.
        let mut watcher = FileWatcher::new(selector.watched(), args.common.watch_options());
        selector.step().context("writing the ranking")?;
        if selector.reading() {
            continue;
        }
        if args.common.once {
            return Ok(());
        }
        // Until a model knows a positive, new embedding chunks (found by polling) refine the
        // order: look again sooner.
        let _ = watcher.wait(Duration::from_secs(if selector.knows_a_positive() { 5 } else { 2 }));
    }
}
