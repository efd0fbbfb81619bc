//! The inferrer: embeds every image once (head mode) and, whenever the checkpoint changes or more
//! images are embedded, predicts every unlabelled image of its shard and writes the predictions.
//! During the first pass, [`schedule`] keeps predicting from crowding out embedding, and a head
//! predicts on a thread of its own ([`head_pass`]) so that the network keeps its core.
//!
//! Images are embedded in the order the server will show them (the current ranking, then the
//! default order), in chunk files that grow in size (256, 512, ... 4,096 images), so the first
//! predictions come within seconds and the images people see next are always covered first.
//!
//! - [`args`]: the command line ([`InferrerArgs`]) and the [`Shard`] an inferrer covers.
//! - [`reload`]: the manifest and the checkpoint, read again between batches only when changed.
//! - [`embed`]: the images still to embed, the batches, and the chunk files they fill.
//! - [`scout_policy`]: when the scout ([`crate::scout`]) orders what is embedded next, and when
//!   it is retrained.
//! - [`schedule`]: when to predict again.
//! - [`predict`]: predicting with a head, on this thread or in the background, or with a
//!   fine-tuned network.
//! - [`head_pass`]: one prediction pass of a head, with everything it needs to run on any thread.

mod args;
mod embed;
mod head_pass;
mod predict;
mod reload;
mod schedule;
mod scout_policy;

pub use args::{InferrerArgs, Shard};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use binann_core::RunDirFile;
use binann_core::embeddings::EmbeddingChunk;
use binann_core::manifest::Manifest;
use binann_core::predictions::Predictions;
use binann_core::rundir::RunDir;
use binann_core::watch::FileWatcher;
use binann_model::{Backbone, DecodeAhead, FinetuneModel, Head, ModelMeta};
use tch::Device;

use crate::embedding_cache::EmbeddingIndex;
use crate::model_args::Mode;
use head_pass::PassOutcome;
use reload::Seen;
use schedule::PredictSchedule;
use scout_policy::Scouting;

/// The checkpoint as loaded, in the form its mode predicts with.
enum Model {
    Head(Head),
    Finetune(Box<FinetuneModel>),
}

/// What the inferrer holds from one turn of its loop to the next.
struct Inferrer {
    args: InferrerArgs,
    rundir: RunDir,
    device: Device,
    mode: Mode,
    datadir: PathBuf,
    manifest: Manifest,
    /// Where each embedded image's values are (chunk files in `RUNDIR/embeddings`).
    cache: EmbeddingIndex,
    backbone: Option<Backbone>,
    model: Option<(Model, ModelMeta)>,
    /// Embeddings of the chunk being filled (not yet written).
    partial_ids: Vec<u32>,
    partial_rows: Vec<Vec<f32>>,
    partial_failed: Vec<(u32, String)>,
    next_chunk: u32,
    /// Images still to embed, in showing order, and the chunk they were listed for: listing them
    /// costs a pass over the whole dataset, so it is done once per chunk, not per batch.
    todo: std::collections::VecDeque<u32>,
    todo_for_chunk: Option<u32>,
    /// The next batch, decoding on the other cores while the network runs on the current one.
    ahead: Option<(Vec<u32>, DecodeAhead)>,
    /// When the last predictions were made, and for what.
    schedule: PredictSchedule,
    generation: u64,
    /// The manifest and the checkpoint as last read.
    seen: Seen,
    /// The chunk file where the next prediction pass's sweep starts ([`head_pass::SWEEP_SIZE`]).
    sweep_from: usize,
    /// The prediction pass running on its own thread during the embedding pass, if any.
    background: Option<std::thread::JoinHandle<PassOutcome>>,
    /// The pixel model that chooses what to embed next (see [`crate::scout`]).
    scouting: Scouting,
}

/// Runs the inferrer until killed (or until one pass is done with `--once`).
pub fn run(mut args: InferrerArgs) -> anyhow::Result<()> {
    let (device, mode) = args.model.resolve()?;
    if device == Device::Cpu {
        binann_model::set_threads(args.cpu_threads());
        binann_model::set_idle_streams(args.idle_streams());
    }
    let rundir = RunDir::create_or_open(&args.common.rundir)?;
    let shard = args.shard;
    let _lock = rundir.lock(&format!("inferrer-{}-of-{}", shard.index, shard.count))?;
    let watch = args.common.watch_options();
    let manifest = crate::wait_for_manifest(&rundir, watch);
    let datadir = args.model.datadir.clone().unwrap_or_else(|| PathBuf::from(&manifest.datadir));
    args.model.choose_input_size(&manifest, &datadir, &rundir.checkpoint());
    let mut cache = EmbeddingIndex::new(&rundir.embeddings_dir(), &args.model.embedding_model_key());
    cache.refresh();
    let next_chunk = (0..).find(|i| !EmbeddingChunk::path(&rundir.embeddings_dir(), shard.index, shard.count, *i).exists()).unwrap_or(0);
    let generation = Predictions::load(&rundir.predictions(shard.index, shard.count)).map_or(0, |(g, _)| g);
    tracing::info!(
        ?device,
        mode = mode.name(),
        shard = format!("{}/{}", shard.index, shard.count),
        images = manifest.len(),
        input_size = args.model.input_size,
        cached = cache.len(),
        threads = if device == Device::Cpu { args.cpu_threads() } else { 0 },
        "inferrer started"
    );
    let mut inf = Inferrer {
        args,
        rundir,
        device,
        mode,
        datadir,
        manifest,
        cache,
        backbone: None,
        model: None,
        partial_ids: Vec::new(),
        partial_rows: Vec::new(),
        partial_failed: Vec::new(),
        next_chunk,
        todo: std::collections::VecDeque::new(),
        todo_for_chunk: None,
        ahead: None,
        schedule: PredictSchedule::default(),
        generation,
        seen: Seen::default(),
        sweep_from: 0,
        background: None,
        scouting: Scouting::default(),
    };
    if inf.mode == Mode::Head && inf.args.scout {
        inf.start_scout();
    }
    let mut watcher = FileWatcher::new(vec![inf.rundir.checkpoint(), inf.rundir.manifest()], watch);
    loop {
        // Watch before reading, so that a file replaced while this turn works wakes the next.
        watcher.rearm();
        inf.reload_manifest_if_grown();
        inf.reload_checkpoint_if_new();
        let embedding = inf.mode == Mode::Head
            && match inf.embed_some() {
                Ok(more) => {
                    if !more {
                        inf.end_scout();
                    }
                    more
                }
                Err(e) => {
                    tracing::error!("embedding failed (will retry): {e:#}");
                    false
                }
            };
        // While images remain to embed, a head predicts on a thread of its own beside the
        // network (predicting took a fifth of this thread's time during the first pass of 20,000
        // images, with the other core half idle); once none remain, on this thread, after the
        // last background pass has finished.
        let idle = inf.collect_background_pass(!embedding);
        let embedded = inf.cache.len() + inf.partial_ids.len();
        // With --once (a batch job: deploy/run-shard.sh), predict once the whole shard is
        // embedded: predicting along the way would only be overwritten.
        if idle
            && let Some((model, meta)) = &inf.model
            && !(inf.args.common.once && embedding)
            && inf.schedule.due(meta.generation, embedded, embedding, Instant::now())
        {
            if embedding && matches!(model, Model::Head(_)) {
                inf.predict_in_background();
            } else if let Err(e) = inf.predict_all() {
                tracing::error!("predicting failed (will retry): {e:#}");
            }
        }
        if embedding {
            continue;
        }
        if inf.args.common.once {
            return Ok(());
        }
        watcher.wait(Duration::from_secs(10));
    }
}

impl Inferrer {
    /// The image files of `ids`, in the same order.
    fn files(&self, ids: &[u32]) -> Vec<PathBuf> {
        ids.iter().map(|id| self.datadir.join(&self.manifest.paths[*id as usize])).collect()
    }
}
