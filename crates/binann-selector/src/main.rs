//! `binann-selector`: watches the predictions and writes the ranking. See `--help`.

use std::time::{Duration, Instant};

use anyhow::Context;
use binann_core::cli::CommonArgs;
use binann_core::ranking::Ranking;
use binann_core::rundir::RunDir;
use binann_core::watch::FileWatcher;
use binann_selector::{Explore, Strategy, merge_predictions, prediction_files, select};
use clap::Parser;

/// binann's selector: orders the unlabelled images from the inferrer's predictions and writes the
/// ranking the server hands images out from.
#[derive(Debug, Parser)]
#[command(name = "binann-selector", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// How to order the images.
    #[arg(long, env = "BINANN_SELECTOR", value_enum, default_value = "max-probability")]
    strategy: Strategy,
    /// Share of exploring picks in the `mix` strategy (0 to 1).
    #[arg(long, env = "BINANN_EXPLORE", default_value_t = 0.1)]
    explore: f64,
    /// What the exploring picks of `mix` are.
    #[arg(long, env = "BINANN_EXPLORE_WITH", value_enum, default_value = "entropy")]
    explore_with: Explore,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("binann-selector: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!((0.0..=1.0).contains(&args.explore), "--explore must be between 0 and 1, got {}", args.explore);
    let rundir = RunDir::create_or_open(&args.common.rundir)?;
    let _lock = rundir.lock("selector")?;
    let mut generation = match Ranking::load(&rundir.ranking()) {
        Ok((g, _)) => g,
        Err(e) if e.is_not_found() => 0,
        Err(e) => {
            tracing::warn!("the existing ranking is unreadable and will be replaced: {e}");
            0
        }
    };
    let mut last_inputs = Vec::new();
    loop {
        // Watch before reading, so a file replaced while this round works wakes the next one.
        // New shards may appear: the watch list is rebuilt each round.
        let mut paths = prediction_files(rundir.root());
        paths.push(rundir.predictions(0, 1));
        let mut watcher = FileWatcher::new(paths, args.common.watch_options());
        let files = prediction_files(rundir.root());
        let stamps: Vec<_> = files.iter().map(|f| (f.clone(), std::fs::metadata(f).and_then(|m| m.modified()).ok())).collect();
        if !files.is_empty() && stamps != last_inputs {
            let started = Instant::now();
            let merged = merge_predictions(&files);
            for p in &merged.problems {
                tracing::error!("skipping unreadable predictions: {p}");
            }
            if merged.model.is_some() {
                let order = select(&merged.ids, &merged.probs, args.strategy, args.explore, args.explore_with, generation + 1);
                let ranking = Ranking {
                    ids: order.iter().map(|&i| merged.ids[i]).collect(),
                    probs: order.iter().map(|&i| merged.probs[i]).collect(),
                    selector: args.strategy.name().to_owned(),
                    model: merged.model.clone(),
                    predicted: merged.ids.len() as u64,
                    created_ms: binann_core::now_ms(),
                };
                generation += 1;
                ranking.save(&rundir.ranking(), generation).context("writing the ranking")?;
                tracing::info!(
                    generation,
                    images = ranking.ids.len(),
                    checkpoint = merged.model.as_ref().map(|m| m.checkpoint_generation),
                    "ranking written in {:.0} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            last_inputs = stamps;
        }
        if args.common.once {
            return Ok(());
        }
        let _ = watcher.wait(Duration::from_secs(5));
    }
}
