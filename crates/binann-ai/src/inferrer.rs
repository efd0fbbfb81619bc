//! The inferrer: embeds every image once (head mode) and, whenever the checkpoint changes or more
//! images are embedded, predicts every unlabelled image of its shard and writes the predictions.
//! During the first pass, [`PredictSchedule`] keeps predicting from crowding out embedding, and a
//! head predicts on a thread of its own ([`HeadPass`]) so that the network keeps its core.
//!
//! Images are embedded in the order the server will show them (the current ranking, then the
//! default order), in chunk files that grow in size (256, 512, ... 4,096 images), so the first
//! predictions come within seconds and the images people see next are always covered first.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use binann_core::RunDirFile;
use binann_core::annotations::AnnotationState;
use binann_core::cli::CommonArgs;
use binann_core::embeddings::{CHUNK, EmbeddingChunk};
use binann_core::manifest::Manifest;
use binann_core::predictions::Predictions;
use binann_core::ranking::{self, Ranking};
use binann_core::rundir::RunDir;
use binann_core::watch::{FileStamp, FileWatcher};
use binann_model::{Backbone, DecodeAhead, FinetuneModel, Head, ModelMeta};
use tch::{Device, Tensor};

use crate::embedding_cache::EmbeddingCache;
use crate::model_args::{Mode, ModelArgs};
use crate::scout::{Scout, ThumbnailBuilder};

/// Which part of the dataset an inferrer covers: images whose id modulo N is K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, 0-based.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("shard {s:?} must look like K/N, e.g. 0/2"))?;
        let index: u32 = k.parse().map_err(|_| format!("shard index {k:?} is not a number"))?;
        let count: u32 = n.parse().map_err(|_| format!("shard count {n:?} is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= K < N"));
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// True when image `id` belongs to this shard.
    pub fn owns(self, id: u32) -> bool {
        id % self.count == self.index
    }
}

/// binann's inferrer: predicts every unlabelled image whenever the checkpoint changes, forever.
#[derive(Debug, clap::Parser)]
#[command(name = "binann-inferrer", version)]
pub struct InferrerArgs {
    /// The run directory and how to watch it.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The model and the device.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cover only images whose id modulo N is K (run N inferrers, on one or several machines
    /// sharing RUNDIR; the selector merges their predictions).
    #[arg(long, env = "BINANN_SHARD", default_value = "0/1")]
    pub shard: Shard,
    /// libtorch threads (and image decoding threads) of the inferrer on the CPU; 0: every core
    /// but the trainer's one (at least 1). More threads per network pass are not faster on few
    /// cores: on 2, one thread embedded 1.4x as many images per second as two (64 px: 524 against
    /// 370; 224 px: 45 against 35), and left the other core to the trainer and the selector.
    #[arg(long, env = "BINANN_INFERRER_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// While the first embedding pass runs, embed the images most like the positives (by a
    /// logistic regression on 12-pixel thumbnails) in turn with the default order; off: the
    /// default order alone. Switched off by itself where thumbnails are not cheap (see
    /// `binann_ai::scout`).
    #[arg(long, env = "BINANN_SCOUT", default_value_t = true, action = clap::ArgAction::Set)]
    pub scout: bool,
}

impl InferrerArgs {
    /// The threads [`InferrerArgs::threads`] asks for, 0 resolved on this machine.
    pub fn cpu_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1),
            n => n,
        }
    }
}

enum Model {
    Head(Head),
    Finetune(Box<FinetuneModel>),
}

struct Inferrer {
    args: InferrerArgs,
    rundir: RunDir,
    device: Device,
    mode: Mode,
    datadir: PathBuf,
    manifest: Manifest,
    /// The embedding cache (chunk files in `RUNDIR/embeddings`).
    cache: EmbeddingCache,
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
    /// The prediction pass running on its own thread during the embedding pass, if any.
    background: Option<std::thread::JoinHandle<PassOutcome>>,
    /// The pixel model that chooses what to embed next (see [`crate::scout`]).
    scouting: Scouting,
}

/// The run-directory files the inferrer looks at between batches, as it last read them: an
/// unchanged file is not read again (reading the manifest and the checkpoint before every batch
/// took 4 % of the first pass over 20,000 images).
#[derive(Default)]
struct Seen {
    manifest: LastRead,
    checkpoint: LastRead,
}

/// A file's stamp when it was last read, and when that was.
#[derive(Default)]
struct LastRead(Option<(Option<FileStamp>, Instant)>);

impl LastRead {
    /// Whether to read the file, now stamped `stamp`, again: when its stamp changed, and at
    /// least every [`Self::AT_LEAST_EVERY`] (a file system with coarse modification times could
    /// give a new version the inode and size of the last); the read is recorded.
    fn changed(&mut self, stamp: Option<FileStamp>) -> bool {
        let now = Instant::now();
        let fresh = self.0.is_some_and(|(seen, at)| seen == stamp && now.duration_since(at) < Self::AT_LEAST_EVERY);
        if !fresh {
            self.0 = Some((stamp, now));
        }
        !fresh
    }

    const AT_LEAST_EVERY: Duration = Duration::from_secs(2);
}

/// The scout and what it is waiting for.
#[derive(Default)]
struct Scouting {
    scout: Scout,
    /// Makes the thumbnails; None when done, off, or not started.
    builder: Option<ThumbnailBuilder>,
    /// Seconds per image of the network (a running mean over its batches) and of the thumbnails
    /// (the first slice), for the verdict.
    embedding_s: Option<f64>,
    thumbnail_s: Option<f64>,
    /// Whether thumbnails are cheap enough to use; None until both costs are known.
    verdict: Option<bool>,
    /// The annotations file as last read (its stamp), and when.
    annotations_seen: Option<FileStamp>,
    checked: Option<Instant>,
    /// How long the last training and reordering took: checks are spaced by ten times that.
    cost: Duration,
    /// Thumbnails of the seed images, in step with the seeds folder as of the last training.
    seeds: crate::scout::SeedThumbnails,
    /// Thumbnails held when the to-do list was last ordered by the scout.
    ordered_with: usize,
}

/// Runs the inferrer until killed (or until one pass is done with `--once`).
pub fn run(mut args: InferrerArgs) -> anyhow::Result<()> {
    let (device, mode) = args.model.resolve()?;
    if device == Device::Cpu {
        binann_model::set_threads(args.cpu_threads());
    }
    let rundir = RunDir::create_or_open(&args.common.rundir)?;
    let shard = args.shard;
    let _lock = rundir.lock(&format!("inferrer-{}-of-{}", shard.index, shard.count))?;
    let watch = args.common.watch_options();
    let manifest = crate::wait_for_manifest(&rundir, watch);
    let datadir = args.model.datadir.clone().unwrap_or_else(|| PathBuf::from(&manifest.datadir));
    args.model.choose_input_size(&manifest, &datadir, &rundir.checkpoint());
    let mut cache = EmbeddingCache::new(&rundir.embeddings_dir(), &args.model.embedding_model_key());
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
        background: None,
        scouting: Scouting::default(),
    };
    if inf.mode == Mode::Head && inf.args.scout {
        inf.start_scout();
    }
    loop {
        let mut watcher = FileWatcher::new(vec![inf.rundir.checkpoint(), inf.rundir.manifest()], watch);
        inf.reload_manifest_if_grown();
        inf.reload_checkpoint_if_new();
        let embedding = inf.mode == Mode::Head
            && match inf.embed_some() {
                Ok(more) => more,
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

/// Decides when the inferrer predicts again.
///
/// Predicting covers every embedded image, so during the first pass of a large folder, predicting
/// after every batch would cost more than the embedding it waits on (at 64,000 embedded images,
/// the pass slowed from ~400 to ~40 images/s). While images remain to embed, predictions are
/// therefore renewed only for a new checkpoint or once the embedded set has grown by
/// [`Self::GROWTH`], and never so often that predicting takes more than a
/// 1 / ([`Self::SPACING`] + 1) share of the time. When nothing is left to embed, any change is
/// predicted at once: the last images of the pass and every new checkpoint.
#[derive(Debug, Default)]
struct PredictSchedule {
    /// The last predictions: checkpoint generation, embedded images, when they were finished and
    /// how long they took.
    last: Option<PredictedAt>,
}

#[derive(Debug, Clone, Copy)]
struct PredictedAt {
    generation: u64,
    embedded: usize,
    finished: Instant,
    took: Duration,
}

impl PredictSchedule {
    /// The share by which the embedded set must grow before it is predicted again mid-pass.
    const GROWTH: f64 = 0.05;
    /// The wait after predicting, as a multiple of the time predicting took.
    const SPACING: u32 = 3;

    /// Whether to predict now, for checkpoint `generation` and `embedded` images, given whether
    /// images remain to embed.
    fn due(&self, generation: u64, embedded: usize, embedding: bool, now: Instant) -> bool {
        let Some(last) = self.last else { return true };
        if (last.generation, last.embedded) == (generation, embedded) {
            return false;
        }
        if !embedding {
            return true;
        }
        let grown = embedded as f64 >= last.embedded as f64 * (1.0 + Self::GROWTH);
        let new_model = generation != last.generation;
        (grown || new_model) && now.duration_since(last.finished) >= last.took * Self::SPACING
    }

    fn record(&mut self, generation: u64, embedded: usize, started: Instant, finished: Instant) {
        self.last = Some(PredictedAt { generation, embedded, finished, took: finished.duration_since(started) });
    }
}

impl Inferrer {
    fn reload_manifest_if_grown(&mut self) {
        let stamp = FileStamp::of(&self.rundir.manifest());
        if !self.seen.manifest.changed(stamp) {
            return;
        }
        if let Ok((_, m)) = Manifest::load(&self.rundir.manifest())
            && m.len() != self.manifest.len()
        {
            tracing::info!(images = m.len(), "the dataset grew");
            self.manifest = m;
        }
    }

    fn reload_checkpoint_if_new(&mut self) {
        let path = self.rundir.checkpoint();
        let stamp = FileStamp::of(&path);
        // The model may be out on a background pass: then the file is read again.
        if stamp.is_none() || (!self.seen.checkpoint.changed(stamp) && self.model.is_some()) {
            return;
        }
        let size = self.args.model.input_size;
        let loaded = match self.mode {
            Mode::Head => Head::load(&path, Device::Cpu).map(|(h, m)| (Model::Head(h), m)),
            Mode::Finetune => {
                FinetuneModel::load(&path, binann_model::BACKBONE_NAME, size, self.device).map(|(f, m)| (Model::Finetune(Box::new(f)), m))
            }
        };
        match loaded.map_err(anyhow::Error::from).and_then(|(model, meta)| {
            binann_model::check_compatible(&meta, binann_model::BACKBONE_NAME, size)?;
            anyhow::ensure!(
                meta.mode == self.mode.name(),
                "checkpoint is a {} model, this inferrer runs in {} mode",
                meta.mode,
                self.mode.name()
            );
            Ok((model, meta))
        }) {
            Ok((model, meta)) => {
                if self.model.as_ref().is_none_or(|(_, m)| m.generation != meta.generation) {
                    self.model = Some((model, meta));
                }
            }
            Err(e) => {
                if self.model.is_none() {
                    tracing::error!("refusing the checkpoint {}: {e:#}", path.display());
                }
            }
        }
    }

    fn backbone(&mut self) -> anyhow::Result<&Backbone> {
        if self.backbone.is_none() {
            self.backbone = Some(self.args.model.load_backbone(self.device)?);
        }
        Ok(self.backbone.as_ref().expect("just set"))
    }

    /// The images of this shard without an embedding, in the order the server will show them.
    fn to_embed(&self) -> Vec<u32> {
        let n = self.manifest.len();
        let shard = self.args.shard;
        let failed: HashSet<u32> = self.cache.failed().collect();
        let ahead = self.ahead.iter().flat_map(|(ids, _)| ids);
        let partial: HashSet<u32> =
            self.partial_ids.iter().chain(self.partial_failed.iter().map(|(id, _)| id)).chain(ahead).copied().collect();
        let needed =
            |id: u32| (id as usize) < n && shard.owns(id) && !self.cache.contains(id) && !failed.contains(&id) && !partial.contains(&id);
        let mut seen = vec![false; n];
        let mut keep = |id: u32| {
            let fresh = (id as usize) < n && !seen[id as usize];
            if fresh {
                seen[id as usize] = true;
            }
            fresh && needed(id)
        };
        let ranked = Ranking::load(&self.rundir.ranking()).map(|(_, r)| r.ids).unwrap_or_default();
        let mut out: Vec<u32> = ranked.into_iter().filter(|id| keep(*id)).collect();
        let rest: Vec<u32> = ranking::default_order(n, ranking::DEFAULT_ORDER_SEED).into_iter().filter(|id| keep(*id)).collect();
        out.extend(if self.scouting.verdict == Some(true) { self.scouting.scout.order(rest) } else { rest });
        out
    }

    /// Starts thumbnailing this shard's images (in the default order, so that a scout with only
    /// its first slices still covers the folder evenly), unless every image is embedded already.
    fn start_scout(&mut self) {
        let n = self.manifest.len();
        let shard = self.args.shard;
        let ids: Vec<u32> = ranking::default_order(n, ranking::DEFAULT_ORDER_SEED).into_iter().filter(|id| shard.owns(*id)).collect();
        if ids.iter().all(|id| self.cache.contains(*id)) {
            return;
        }
        let files = self.files(&ids);
        self.scouting.builder = Some(ThumbnailBuilder::start(ids, files));
    }

    /// Takes the thumbnails made meanwhile, decides whether they are worth making, and retrains
    /// the scout when the labels changed. Returns true when the to-do list should be ordered again.
    fn update_scout(&mut self) -> bool {
        let s = &mut self.scouting;
        if let Some(builder) = &s.builder {
            let slices = builder.ready();
            for slice in &slices {
                s.thumbnail_s.get_or_insert(slice.took.as_secs_f64() / slice.ids.len().max(1) as f64);
                s.scout.add(slice);
            }
            let total = self.manifest.len().div_ceil(self.args.shard.count as usize);
            if s.verdict.is_none()
                && let (Some(thumbnail), Some(embedding)) = (s.thumbnail_s, s.embedding_s)
            {
                let worth = crate::scout::worth_it(thumbnail, embedding);
                s.verdict = Some(worth);
                if worth {
                    tracing::info!(
                        "scout on: a thumbnail costs {:.3} of an embedding ({:.0} µs against {:.0} µs)",
                        thumbnail / embedding,
                        thumbnail * 1e6,
                        embedding * 1e6
                    );
                } else {
                    tracing::info!(
                        "scout off: a thumbnail costs {:.2} of an embedding, more than {:.3}; the pass keeps the default order",
                        thumbnail / embedding,
                        crate::scout::MAX_COST_SHARE
                    );
                    s.builder = None;
                    s.scout = Scout::default();
                    return false;
                }
            }
            if s.scout.len() >= total {
                tracing::info!(images = s.scout.len(), "scout: every thumbnail made");
                s.builder = None;
            }
        }
        if s.verdict != Some(true) || s.scout.is_empty() {
            return false;
        }
        let now = Instant::now();
        if s.checked.is_some_and(|t| now.duration_since(t) < (s.cost * 10).max(Duration::from_secs(1))) {
            return false;
        }
        s.checked = Some(now);
        let path = self.rundir.annotations();
        let stamp = FileStamp::of(&path);
        let seeds = binann_core::seeds::list(&self.rundir.seeds_dir());
        let labels_changed = stamp != s.annotations_seen || !s.seeds.matches(&seeds);
        let grown = s.scout.is_trained() && s.scout.len() > s.ordered_with + s.ordered_with / 10;
        if !labels_changed && !grown {
            return false;
        }
        let started = Instant::now();
        if labels_changed {
            s.annotations_seen = stamp;
            let state = match AnnotationState::load(&path) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!("the scout could not read the annotations: {e}");
                    return false;
                }
            };
            let labels = crate::trainer::labelled(&state);
            let (_, seed_thumbnails) = s.seeds.update(&seeds, crate::scout::thumbnail);
            let was_trained = s.scout.is_trained();
            s.scout.train(&labels, &seed_thumbnails);
            if !s.scout.is_trained() && !was_trained {
                return false;
            }
        }
        s.ordered_with = s.scout.len();
        s.cost = started.elapsed();
        let (labels, positives) = s.scout.trained_on();
        tracing::debug!(labels, positives, thumbnails = s.scout.len(), "scout retrained in {:.0} ms", s.cost.as_secs_f64() * 1000.0);
        true
    }

    /// Embeds one batch; writes the chunk when full. Returns false when nothing is left to embed.
    ///
    /// Before the network runs on this batch, the next one starts decoding on the other cores
    /// ([`DecodeAhead`]), so decoding hides behind the network across calls while the loop still
    /// looks at the checkpoint between batches.
    fn embed_some(&mut self) -> anyhow::Result<bool> {
        let reorder = self.update_scout();
        if reorder || self.todo.is_empty() || self.todo_for_chunk != Some(self.next_chunk) {
            self.todo = self.to_embed().into();
            self.todo_for_chunk = Some(self.next_chunk);
        }
        let preprocess = self.backbone()?.preprocess();
        let (ids, decoded) = match self.ahead.take() {
            Some((ids, job)) => (ids, job.finish()),
            None => {
                let ids = self.take_batch(0);
                if ids.is_empty() {
                    self.flush_chunk()?;
                    return Ok(false);
                }
                let decoded = binann_model::decode_batch(preprocess, &self.files(&ids));
                (ids, decoded)
            }
        };
        let next = self.take_batch(ids.len());
        if !next.is_empty() {
            let files = self.files(&next);
            self.ahead = Some((next, DecodeAhead::start(preprocess, files)));
        }
        let network = Instant::now();
        let results = self.backbone()?.embed_decoded(decoded);
        let per_image = network.elapsed().as_secs_f64() / ids.len().max(1) as f64;
        let mean = self.scouting.embedding_s.get_or_insert(per_image);
        *mean = 0.8 * *mean + 0.2 * per_image;
        let target = self.chunk_target();
        for (id, r) in ids.iter().zip(results) {
            match r {
                Ok(v) => {
                    self.partial_ids.push(*id);
                    self.partial_rows.push(v);
                }
                Err(e) => {
                    tracing::warn!("skipping an unreadable image: {e}");
                    self.partial_failed.push((*id, e.to_string()));
                }
            }
        }
        if self.partial_ids.len() + self.partial_failed.len() >= target {
            self.flush_chunk()?;
        }
        Ok(true)
    }

    /// Images the chunk being filled should hold: 256, growing with the cache up to [`CHUNK`].
    fn chunk_target(&self) -> usize {
        self.cache.len().clamp(256, CHUNK)
    }

    /// Takes the next batch from the to-do list, sized so that the chunk being filled (with
    /// `coming` more images already on their way) ends at its target.
    fn take_batch(&mut self, coming: usize) -> Vec<u32> {
        let target = self.chunk_target();
        let pending = self.partial_ids.len() + self.partial_failed.len() + coming;
        // The batch on its way fills the chunk: this one starts the next.
        let pending = if pending >= target { 0 } else { pending };
        let take = self.args.model.batch.max(1).min(target - pending);
        std::iter::from_fn(|| self.todo.pop_front()).take(take).collect()
    }

    fn files(&self, ids: &[u32]) -> Vec<PathBuf> {
        ids.iter().map(|id| self.datadir.join(&self.manifest.paths[*id as usize])).collect()
    }

    fn flush_chunk(&mut self) -> anyhow::Result<()> {
        if self.partial_ids.is_empty() && self.partial_failed.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let dim = binann_model::EMBED_DIM;
        let mut ids = std::mem::take(&mut self.partial_ids);
        let mut values: Vec<f32> = std::mem::take(&mut self.partial_rows).concat();
        let failed = std::mem::take(&mut self.partial_failed);
        for (id, _) in &failed {
            ids.push(*id);
            values.extend(std::iter::repeat_n(0.0, dim));
        }
        let chunk = EmbeddingChunk {
            ids,
            dim: dim as u32,
            model: self.args.model.embedding_model_key(),
            values: EmbeddingChunk::pack(&values),
            failed,
        };
        let shard = self.args.shard;
        let path = EmbeddingChunk::path(&self.rundir.embeddings_dir(), shard.index, shard.count, self.next_chunk);
        chunk.save(&path, 1).context("writing an embedding chunk")?;
        self.next_chunk += 1;
        let images = chunk.ids.len();
        self.cache.add_written(path, chunk);
        tracing::info!(
            images,
            embedded = self.cache.len(),
            total = self.manifest.len(),
            "embedding chunk written in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }

    /// Predicts every unlabelled image of the shard and writes the predictions, on this thread.
    fn predict_all(&mut self) -> anyhow::Result<()> {
        match self.model.take() {
            Some((Model::Head(head), meta)) => {
                let outcome = self.head_pass(head, meta).run();
                self.pass_finished(outcome)
            }
            Some((Model::Finetune(model), meta)) => {
                let outcome = self.predict_finetuned(&model, &meta);
                self.model = Some((Model::Finetune(model), meta));
                outcome
            }
            None => Ok(()),
        }
    }

    /// Starts predicting with the head on a thread of its own, so that the embedding pass keeps
    /// this thread's core; [`Self::collect_background_pass`] takes the outcome.
    fn predict_in_background(&mut self) {
        let Some((Model::Head(head), meta)) = self.model.take() else { return };
        let pass = self.head_pass(head, meta);
        // libtorch's thread count is per thread for OpenMP: the new thread is told it too.
        let threads = tch::get_num_threads();
        self.background = Some(std::thread::spawn(move || {
            tch::set_num_threads(threads);
            pass.run()
        }));
    }

    /// Takes the outcome of the background prediction pass if it has finished, or waits for it
    /// when `wait`. Returns whether none is running any more.
    fn collect_background_pass(&mut self, wait: bool) -> bool {
        let Some(handle) = self.background.take_if(|h| wait || h.is_finished()) else { return self.background.is_none() };
        let outcome = handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let Err(e) = self.pass_finished(outcome) {
            tracing::error!("predicting failed (will retry): {e:#}");
        }
        true
    }

    /// A prediction pass with `head` over the embeddings held now: the chunks' tensors are shared,
    /// the chunk being filled copied.
    fn head_pass(&mut self, head: Head, meta: ModelMeta) -> HeadPass {
        self.generation += 1;
        let partial = (!self.partial_rows.is_empty()).then(|| {
            let rows =
                Tensor::from_slice(&self.partial_rows.concat()).view([self.partial_rows.len() as i64, binann_model::EMBED_DIM as i64]);
            (self.partial_ids.clone(), rows)
        });
        HeadPass {
            head,
            meta,
            chunks: self.cache.chunks().map(|c| (c.ids.clone(), c.values.shallow_clone(), c.failed.clone())).collect(),
            partial,
            failed: self.partial_failed.clone(),
            embedded: self.cache.len() + self.partial_ids.len(),
            shard: self.args.shard,
            annotations: self.rundir.annotations(),
            out: self.rundir.predictions(self.args.shard.index, self.args.shard.count),
            generation: self.generation,
        }
    }

    /// Records a finished pass in the schedule and gives its head back unless a newer checkpoint
    /// was loaded meanwhile.
    fn pass_finished(&mut self, outcome: PassOutcome) -> anyhow::Result<()> {
        let PassOutcome { head, meta, result } = outcome;
        let generation = meta.generation;
        if self.model.is_none() {
            self.model = Some((Model::Head(head), meta));
        }
        self.record_predictions(generation, &result?);
        Ok(())
    }

    /// Records predictions written for checkpoint `generation` in the schedule, and logs them.
    fn record_predictions(&mut self, generation: u64, done: &PassDone) {
        self.schedule.record(generation, done.embedded, done.started, done.finished);
        tracing::info!(
            checkpoint = generation,
            predicted = done.predicted,
            total = self.manifest.len(),
            "predictions written in {:.0} ms",
            done.finished.duration_since(done.started).as_secs_f64() * 1000.0
        );
    }

    /// Predicts with the fine-tuned network, decoding every unlabelled image of the shard (no
    /// embeddings to reuse), and writes the predictions.
    fn predict_finetuned(&mut self, model: &FinetuneModel, meta: &ModelMeta) -> anyhow::Result<()> {
        let started = Instant::now();
        let labelled = AnnotationState::load(&self.rundir.annotations())?;
        let shard = self.args.shard;
        let wanted = |id: u32| shard.owns(id) && !labelled.is_done(id);
        let mut ids = Vec::new();
        let mut logits = Vec::new();
        let mut failed: Vec<(u32, String)> = Vec::new();
        let todo: Vec<u32> = (0..self.manifest.len() as u32).filter(|id| wanted(*id)).collect();
        let bar = crate::progress_bar(todo.len() as u64, "predicting");
        let preprocess = binann_model::Preprocess { size: self.args.model.input_size };
        let s = self.args.model.input_size as i64;
        for batch in todo.chunks(self.args.model.batch.max(1)) {
            let mut images = Vec::new();
            let mut batch_ids = Vec::new();
            for (id, decoded) in batch.iter().zip(binann_model::decode_batch(preprocess, &self.files(batch))) {
                match decoded {
                    Ok(p) => {
                        images.push(Tensor::from_slice(&p).view([3, s, s]));
                        batch_ids.push(*id);
                    }
                    Err(e) => failed.push((*id, e.to_string())),
                }
            }
            if !images.is_empty() {
                let l: Vec<f32> = Vec::try_from(model.predict_logits(&Tensor::stack(&images, 0)).to_device(Device::Cpu))?;
                ids.extend(batch_ids);
                logits.extend(l);
            }
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        let predictions = Predictions {
            model: crate::model_info(meta),
            shard: (shard.index, shard.count),
            ids,
            logits,
            failed,
            created_ms: binann_core::now_ms(),
        };
        self.generation += 1;
        predictions.save(&self.rundir.predictions(shard.index, shard.count), self.generation)?;
        let done = PassDone {
            embedded: self.cache.len() + self.partial_ids.len(),
            predicted: predictions.ids.len(),
            started,
            finished: Instant::now(),
        };
        self.record_predictions(meta.generation, &done);
        Ok(())
    }
}

/// One prediction pass of a head over the embeddings held when it was made: everything it needs,
/// so that it can run on any thread ([`HeadPass::run`]).
struct HeadPass {
    head: Head,
    meta: ModelMeta,
    /// Each chunk's ids, embeddings (shared with the cache) and failed rows.
    chunks: Vec<(Vec<u32>, Tensor, Vec<u32>)>,
    /// The chunk being filled: its ids and embeddings.
    partial: Option<(Vec<u32>, Tensor)>,
    /// Images of the chunk being filled that could not be read.
    failed: Vec<(u32, String)>,
    /// Images embedded, for the schedule.
    embedded: usize,
    shard: Shard,
    annotations: PathBuf,
    /// The predictions file, and the generation to write it as.
    out: PathBuf,
    generation: u64,
}

/// What a [`HeadPass`] gives back: its head and checkpoint, and what it did.
struct PassOutcome {
    head: Head,
    meta: ModelMeta,
    result: anyhow::Result<PassDone>,
}

struct PassDone {
    embedded: usize,
    predicted: usize,
    started: Instant,
    finished: Instant,
}

impl HeadPass {
    fn run(self) -> PassOutcome {
        let result = self.predict();
        PassOutcome { head: self.head, meta: self.meta, result }
    }

    fn predict(&self) -> anyhow::Result<PassDone> {
        let started = Instant::now();
        let labelled = AnnotationState::load(&self.annotations)?;
        let wanted = |id: u32| self.shard.owns(id) && !labelled.is_done(id);
        let mut ids = Vec::new();
        let mut logits = Vec::new();
        let mut failed = self.failed.clone();
        for (chunk_ids, values, chunk_failed) in &self.chunks {
            let l: Vec<f32> = Vec::try_from(self.head.logits(values).to_device(Device::Cpu))?;
            for (row, id) in chunk_ids.iter().enumerate() {
                if wanted(*id) && !chunk_failed.contains(id) {
                    ids.push(*id);
                    logits.push(l[row]);
                }
            }
            failed.extend(chunk_failed.iter().map(|id| (*id, "unreadable image".to_owned())));
        }
        if let Some((partial_ids, rows)) = &self.partial {
            let l: Vec<f32> = Vec::try_from(self.head.logits(rows).to_device(Device::Cpu))?;
            for (id, logit) in partial_ids.iter().zip(l) {
                if wanted(*id) {
                    ids.push(*id);
                    logits.push(logit);
                }
            }
        }
        let predicted = ids.len();
        let predictions = Predictions {
            model: crate::model_info(&self.meta),
            shard: (self.shard.index, self.shard.count),
            ids,
            logits,
            failed,
            created_ms: binann_core::now_ms(),
        };
        predictions.save(&self.out, self.generation)?;
        Ok(PassDone { embedded: self.embedded, predicted, started, finished: Instant::now() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_inferrer_leaves_the_trainer_one_core_unless_told_its_threads() {
        let args = |extra: &[&str]| InferrerArgs::parse_from([&["binann-inferrer", "--rundir", "/nonexistent"], extra].concat());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(args(&[]).threads, 0, "the default is resolved on the machine");
        assert_eq!(args(&[]).cpu_threads(), (cores - 1).max(1));
        assert_eq!(args(&["--threads", "3"]).cpu_threads(), 3);
    }

    #[test]
    fn a_head_pass_on_another_thread_predicts_every_unlabelled_readable_image() {
        use binann_core::annotations::{Event, Label, Record};
        use binann_core::codec::FileKind;
        use binann_core::journal::{self, JournalWriter};
        let dir = tempfile::tempdir().expect("a temp dir");
        let rundir = RunDir::create_or_open(dir.path()).unwrap();
        let mut writer = JournalWriter::open::<Record>(&rundir.annotations(), FileKind::Annotations).unwrap().writer;
        for (seq, id) in [(0, 1), (1, 4)] {
            let event = Event::Label { id, label: Label::Negative, prob: None };
            let record = Record { audit: None, seq, time_ms: 0, client: "t".into(), annotator: String::new(), event };
            writer.append_framed(&journal::frame(&record)).unwrap();
        }
        let dim = binann_model::EMBED_DIM as i64;
        let chunk = Tensor::randn([4, dim], (tch::Kind::Float, Device::Cpu));
        let partial = Tensor::randn([2, dim], (tch::Kind::Float, Device::Cpu));
        let head = Head::new(Device::Cpu);
        let expected: Vec<f32> = Vec::try_from(head.logits(&Tensor::cat(&[chunk.shallow_clone(), partial.shallow_clone()], 0))).unwrap();
        let meta = ModelMeta {
            backbone: binann_model::BACKBONE_NAME.into(),
            input_size: 64,
            mode: binann_model::MODE_HEAD.into(),
            generation: 3,
            labels_used: 2,
            positives: 1,
            loss: 0.5,
            created_ms: 0,
        };
        let out = rundir.predictions(0, 1);
        let pass = HeadPass {
            head,
            meta,
            // Image 2 failed in its chunk, 6 in the chunk being filled; 1 and 4 are labelled.
            chunks: vec![(vec![0, 1, 2, 3], chunk, vec![2])],
            partial: Some((vec![4, 5], partial)),
            failed: vec![(6, "unreadable".into())],
            embedded: 6,
            shard: Shard { index: 0, count: 1 },
            annotations: rundir.annotations(),
            out: out.clone(),
            generation: 9,
        };
        let outcome = std::thread::spawn(move || pass.run()).join().unwrap();
        let done = outcome.result.unwrap();
        assert_eq!((done.predicted, done.embedded, outcome.meta.generation), (3, 6, 3));
        let (generation, predictions) = Predictions::load(&out).unwrap();
        assert_eq!(generation, 9);
        assert_eq!(predictions.ids, [0, 3, 5]);
        assert_eq!(predictions.logits, [expected[0], expected[3], expected[5]], "the head's own logits, row for row");
        let mut failed: Vec<u32> = predictions.failed.iter().map(|(id, _)| *id).collect();
        failed.sort_unstable();
        assert_eq!(failed, [2, 6]);
        assert_eq!(predictions.model.checkpoint_generation, 3);
    }

    #[test]
    fn a_file_is_read_again_when_replaced_and_at_least_every_two_seconds() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("file");
        let stamp = || FileStamp::of(&path);
        let mut last = LastRead::default();
        assert!(last.changed(stamp()), "never read: read it (even while missing)");
        assert!(!last.changed(stamp()), "still missing");
        binann_core::atomic::write_atomic(&path, b"one").unwrap();
        assert!(last.changed(stamp()), "created");
        assert!(!last.changed(stamp()), "unchanged");
        binann_core::atomic::write_atomic(&path, b"two").unwrap();
        assert!(last.changed(stamp()), "replaced by a file of the same size");
        assert!(!last.changed(stamp()));
        last.0 = last.0.map(|(s, at)| (s, at - LastRead::AT_LEAST_EVERY));
        assert!(last.changed(stamp()), "read again after two seconds even when unchanged");
        assert!(!last.changed(stamp()));
    }

    fn after(schedule: &mut PredictSchedule, generation: u64, embedded: usize, took_ms: u64) -> Instant {
        let started = Instant::now();
        let finished = started + Duration::from_millis(took_ms);
        schedule.record(generation, embedded, started, finished);
        finished
    }

    #[test]
    fn the_first_predictions_and_any_change_after_the_pass_are_due_at_once() {
        let mut s = PredictSchedule::default();
        let now = Instant::now();
        assert!(s.due(1, 0, true, now));
        let done = after(&mut s, 1, 10_000, 500);
        assert!(!s.due(1, 10_000, false, done + Duration::from_secs(60)), "nothing changed");
        assert!(s.due(1, 10_001, false, done), "the pass ended: its last image is predicted at once");
        assert!(s.due(2, 10_000, false, done), "a new checkpoint after the pass is predicted at once");
    }

    #[test]
    fn mid_pass_predictions_wait_for_growth_or_a_new_model() {
        let mut s = PredictSchedule::default();
        let done = after(&mut s, 1, 10_000, 10);
        let later = done + Duration::from_secs(5);
        assert!(!s.due(1, 10_032, true, later), "one more batch is not worth predicting everything again");
        assert!(!s.due(1, 10_499, true, later));
        assert!(s.due(1, 10_500, true, later), "5 % more images");
        assert!(s.due(2, 10_032, true, later), "a new model");
    }

    #[test]
    fn mid_pass_predicting_takes_at_most_a_quarter_of_the_time() {
        let mut s = PredictSchedule::default();
        let done = after(&mut s, 1, 64_000, 800);
        assert!(!s.due(2, 70_000, true, done + Duration::from_millis(2_399)));
        assert!(s.due(2, 70_000, true, done + Duration::from_millis(2_400)));
        assert!(s.due(2, 70_000, false, done), "once the pass is over, nothing waits");
    }
}
