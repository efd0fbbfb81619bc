//! `binann-selector`: watches the predictions and writes the ranking. See `--help`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use binann_core::RunDirFile;
use binann_core::annotations::AnnotationState;
use binann_core::cli::CommonArgs;
use binann_core::predictions;
use binann_core::ranking::Ranking;
use binann_core::rundir::RunDir;
use binann_core::watch::{FileStamp, FileWatcher};
use binann_selector::clusters::{
    Clusters, FARTHEST_ALONE_LABELS, FARTHEST_FIRST_PICKS, SKETCH_DIM, SketchCache, Unexplored, cluster_count, diverse_order,
    farthest_first,
};
use binann_selector::{Explore, Strategy, interleave, select};
use clap::Parser;

/// binann's selector: orders the unlabelled images from the inferrer's predictions and writes the
/// ranking the server hands images out from.
#[derive(Debug, Parser)]
#[command(name = "binann-selector", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// How to order the images once the model knows a positive.
    #[arg(long, env = "BINANN_SELECTOR", value_enum, default_value = "max-probability")]
    strategy: Strategy,
    /// Share of exploring picks in the `mix` strategy (0 to 1): each place of a ranking, the top
    /// included, is one with this probability.
    #[arg(long, env = "BINANN_EXPLORE", default_value_t = 0.1)]
    explore: f64,
    /// What the exploring picks of `mix` are.
    #[arg(long, env = "BINANN_EXPLORE_WITH", value_enum, default_value = "entropy")]
    explore_with: Explore,
    // The order before the model has seen a positive: the help text is made from
    // `FARTHEST_ALONE_LABELS` itself, so that the two cannot disagree.
    #[arg(long, env = "BINANN_COLD_START", value_enum, default_value = "diverse", help = cold_start_help())]
    cold_start: ColdStart,
}

/// `--cold-start`'s help.
fn cold_start_help() -> String {
    format!(
        "The order before the model has seen a positive: `diverse` shows the embedded images farthest first (each next image \
         the one least like every image shown so far, so a kind unlike the rest comes early), and after {FARTHEST_ALONE_LABELS} \
         labels without a positive gives half the places to one image of each visual kind in turn (so a kind among others \
         comes too); `shuffle` the fixed-seed shuffle"
    )
}

/// The order before the first positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColdStart {
    /// The embedded images farthest first, then also one of each k-means cluster in turn
    /// ([`diverse_order`]).
    Diverse,
    /// The fixed-seed shuffle every process agrees on.
    Shuffle,
}

/// Exploring picks listed while the model calls nothing positive (the ranking is rewritten after
/// nearly every label, so only its first places are handed out).
const DRY_PICKS: usize = 32;

/// Share of the places that are exploring picks while the model calls nothing positive. Its best
/// guesses among negatives still find positives (3–20 % of them in the bench's traces, against
/// 1 % at random), so exploring takes half the places, not all.
const DRY_EXPLORE: f64 = 0.5;

fn main() -> std::process::ExitCode {
    binann_core::cli::main("binann-selector", "info", || run(Args::parse()))
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
    let mut sketches = SketchCache::default();
    let mut clusters: Option<Clusters> = None;
    // Each embedded image's cluster and squared distance to its centre (u32::MAX: none yet).
    let mut kind_of_id: Vec<(u32, f32)> = Vec::new();
    let mut fitted_on = 0usize;
    let mut sketch_generation = binann_core::sketches::Sketches::load(&rundir.sketches()).map_or(0, |(g, _)| g);
    let mut dirty = true;
    let mut cold = true;
    // Whether the order before the first positive is past farthest first alone
    // (`FARTHEST_ALONE_LABELS`), and the annotations file as it was when that was last checked.
    let mut cold_mixed = false;
    let mut annotations_seen = None;
    let mut unexplored = Unexplored::default();
    loop {
        // Watch before reading, so a file replaced while this round works wakes the next one.
        // New shards may appear: the watch list is rebuilt each round.
        let mut paths = predictions::files(rundir.root());
        paths.push(rundir.predictions(0, 1));
        let mut watcher = FileWatcher::new(paths, args.common.watch_options());
        // The sketches serve the cold start and the server's "more like this" and look-alikes
        // (through the sketch file), the visual kinds the exploring picks: kept up to date
        // whatever the strategy. While the embedding pass runs, refit when the embedded images
        // grew by a tenth (a chunk of 4,096 more among 1,000,000 changes the kinds little and
        // would cost a pass over all of them); once no chunk came since the last round, refit for
        // whatever is left, so the images embedded last get their sketches too.
        let changed = sketches.refresh(&rundir.embeddings_dir());
        let grown = sketches.len() * 10 >= fitted_on * 11;
        if sketches.len() != fitted_on && (!changed || grown) {
            let started = Instant::now();
            let fitted = Clusters::fit(&sketches.values, cluster_count(sketches.len()), 1);
            kind_of_id = vec![(u32::MAX, 0.0); sketches.ids.iter().map(|id| *id as usize + 1).max().unwrap_or(0)];
            for (row, id) in sketches.ids.iter().enumerate() {
                kind_of_id[*id as usize] = (fitted.assignment[row], fitted.distance[row]);
            }
            tracing::info!(
                images = sketches.len(),
                clusters = fitted.sizes.len(),
                smallest = fitted.sizes.iter().min(),
                "visual kinds found in {:.0} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
            clusters = Some(fitted);
            fitted_on = sketches.len();
            sketch_generation += 1;
            if let Err(e) = sketches.to_file().save(&rundir.sketches(), sketch_generation) {
                tracing::error!("writing the sketches for \"more like this\": {e}");
            }
            dirty = true; // the clusters changed: order again
        }
        let kind_of = |id: u32| kind_of_id.get(id as usize).copied().filter(|(c, _)| *c != u32::MAX);
        let kinds = binann_selector::Kinds { of: &kind_of, sizes: clusters.as_ref().map_or(&[][..], |c| &c.sizes) };
        if cold && !cold_mixed && args.cold_start == ColdStart::Diverse {
            let stamp = FileStamp::of(&rundir.annotations());
            if stamp != annotations_seen {
                annotations_seen = stamp;
                if AnnotationState::load(&rundir.annotations()).is_ok_and(|state| state.labels().count() >= FARTHEST_ALONE_LABELS) {
                    cold_mixed = true;
                    dirty = true;
                }
            }
        }
        let files = predictions::files(rundir.root());
        let stamps: Vec<_> = files.iter().map(|f| (f.clone(), std::fs::metadata(f).and_then(|m| m.modified()).ok())).collect();
        if stamps != last_inputs || dirty {
            let started = Instant::now();
            let merged = if files.is_empty() { Default::default() } else { predictions::merge(&files) };
            for p in &merged.problems {
                tracing::error!("skipping unreadable predictions: {p}");
            }
            let knows_a_positive = merged.model.as_ref().is_some_and(|m| m.positives_used > 0);
            cold = !knows_a_positive;
            let ranking = if knows_a_positive || args.strategy == Strategy::Random {
                merged.model.is_some().then(|| {
                    let order = select(&merged.ids, &merged.logits, args.strategy, args.explore, args.explore_with, generation + 1, &kinds);
                    // The model calls nothing positive: its first picks are its best guesses among
                    // negatives. Half the places go to the images farthest from everything labelled,
                    // where a kind of positive nobody has labelled yet would be.
                    let dry = args.strategy.positives_first() && merged.logits.iter().all(|l| *l < 0.0);
                    let (order, selector) = if dry {
                        let labelled: Vec<u32> = match AnnotationState::load(&rundir.annotations()) {
                            Ok(state) => state.labels().map(|(id, _)| id).collect(),
                            Err(e) => {
                                tracing::warn!("the annotations are unreadable; exploring from the last ones read: {e}");
                                Vec::new()
                            }
                        };
                        unexplored.update(&sketches, &labelled);
                        let index_of: HashMap<u32, usize> = merged.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
                        let picks: Vec<usize> =
                            unexplored.farthest(|id| index_of.contains_key(&id), DRY_PICKS).into_iter().map(|id| index_of[&id]).collect();
                        (
                            interleave(&order, &picks, DRY_EXPLORE, generation + 1),
                            format!("{}, exploring (nothing called positive)", args.strategy.name()),
                        )
                    } else {
                        (order, args.strategy.name())
                    };
                    Ranking {
                        ids: order.iter().map(|&i| merged.ids[i]).collect(),
                        probs: order.iter().map(|&i| predictions::probability(merged.logits[i])).collect(),
                        selector,
                        model: merged.model.clone(),
                        predicted: merged.ids.len() as u64,
                        created_ms: binann_core::now_ms(),
                    }
                })
            } else if let (ColdStart::Diverse, Some(fitted)) = (args.cold_start, &clusters) {
                // No model knows a positive yet: the embedded images farthest first, and past the
                // first labels the images the clusters were fitted on (the first rows; they are
                // refitted as the pass grows), half the places farthest first and half one of each
                // cluster in turn. Images not embedded yet follow in the default order (the server
                // appends them).
                let order = if cold_mixed && fitted_on <= sketches.len() {
                    diverse_order(fitted, &sketches.values[..fitted_on * SKETCH_DIM], generation + 1)
                } else {
                    farthest_first(&sketches.values, FARTHEST_FIRST_PICKS)
                };
                Some(Ranking {
                    ids: order.iter().map(|&i| sketches.ids[i]).collect(),
                    probs: vec![f32::NAN; order.len()],
                    selector: "diverse (no positive yet)".to_owned(),
                    model: None,
                    predicted: 0,
                    created_ms: binann_core::now_ms(),
                })
            } else {
                None
            };
            if let Some(ranking) = ranking {
                generation += 1;
                ranking.save(&rundir.ranking(), generation).context("writing the ranking")?;
                tracing::info!(
                    generation,
                    images = ranking.ids.len(),
                    selector = ranking.selector,
                    checkpoint = ranking.model.as_ref().map(|m| m.checkpoint_generation),
                    "ranking written in {:.0} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            last_inputs = stamps;
            dirty = false;
        }
        if args.common.once {
            return Ok(());
        }
        // Until a model knows a positive, new embedding chunks (found by polling) refine the
        // diverse order: look again sooner.
        let _ = watcher.wait(Duration::from_secs(if cold { 2 } else { 5 }));
    }
}
