//! The trainer: learns from every label and writes the checkpoint.
//!
//! Head mode (the default on every device): the backbone is frozen; embeddings come from the cache
//! the inferrer fills (the trainer embeds any labelled image not cached yet itself), and a small
//! head is trained on them, continuing from the last round's head, in a fraction of a second.
//! Finetune mode (`BINANN_MODE=finetune`, for a GPU): the whole network keeps training on the
//! labelled images, an epoch per round.
//!
//! Seed images (examples of the positive class from outside the dataset, `RUNDIR/seeds`; see
//! [`binann_core::seeds`]) are trained on as positives beside the labels, so a model can rank the
//! folder as soon as the person has given one negative label.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use binann_core::RunDirFile;
use binann_core::annotations::{AnnotationFollower, AnnotationState, Label};
use binann_core::cli::CommonArgs;
use binann_core::rundir::RunDir;
use binann_core::watch::FileWatcher;
use binann_model::{Backbone, FinetuneModel, Head, ModelMeta, TrainOptions};
use tch::{Device, Kind, Tensor};
use tensorboard_rs::summary_writer::SummaryWriter;

use crate::embedding_cache::EmbeddingIndex;
use crate::model_args::{Mode, ModelArgs};
use crate::training_rows::{RowKey, TrainingRows};

/// binann's trainer: trains on the annotations and writes the checkpoint, forever.
#[derive(Debug, clap::Parser)]
#[command(name = "binann-trainer", version)]
pub struct TrainerArgs {
    /// The run directory and how to watch it.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The model and the device.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Optimiser steps per round in head mode when the head starts afresh; a round that continues
    /// from the previous head (labels were added) takes a quarter of them.
    #[arg(long, env = "BINANN_HEAD_STEPS", default_value_t = 200)]
    pub head_steps: usize,
    /// Hidden units of the head in head mode; 0 makes it a logistic regression.
    #[arg(long, env = "BINANN_HEAD_HIDDEN", default_value_t = binann_model::DEFAULT_HIDDEN_UNITS)]
    pub head_hidden: usize,
    /// libtorch threads of the trainer on the CPU. A head round needs one core at most (about 0.2 s,
    /// at 1,000 labels as at 100,000), and the inferrer's embedding pass, the most valuable work
    /// until it is complete, needs the others.
    #[arg(long, env = "BINANN_TRAINER_THREADS", default_value_t = 1)]
    pub threads: usize,
}

struct Trainer {
    args: TrainerArgs,
    rundir: RunDir,
    device: Device,
    mode: Mode,
    datadir: PathBuf,
    paths: binann_core::manifest::PathList,
    generation: u64,
    /// Where the embedding cache (chunk files in `RUNDIR/embeddings`) holds each image's
    /// embedding; only labelled images' are read.
    cache: EmbeddingIndex,
    /// Embeddings this process computed for labelled images the cache did not hold yet.
    own: HashMap<u32, Tensor>,
    unreadable: HashMap<u32, String>,
    backbone: Option<Backbone>,
    head: Option<Head>,
    /// The head's examples, kept between rounds.
    rows: TrainingRows,
    finetune_model: Option<FinetuneModel>,
    pixels: HashMap<u32, Tensor>,
    /// Seed images as the network sees them: embeddings in head mode, pixels in finetune mode.
    /// An unreadable one is kept as None (reported once, then left out).
    seeds: HashMap<PathBuf, Option<Tensor>>,
    board: SummaryWriter,
}

/// Runs the trainer until killed (or one round with `--once`).
pub fn run(mut args: TrainerArgs) -> anyhow::Result<()> {
    let (device, mode) = args.model.resolve()?;
    if device == Device::Cpu {
        tch::set_num_threads(args.threads.max(1) as i32);
    }
    let rundir = RunDir::create_or_open(&args.common.rundir)?;
    let _lock = rundir.lock("trainer")?;
    let watch = args.common.watch_options();
    let manifest = crate::wait_for_manifest(&rundir, watch);
    let datadir = args.model.datadir.clone().unwrap_or_else(|| PathBuf::from(&manifest.datadir));
    args.model.choose_input_size(&manifest, &datadir, &rundir.checkpoint());
    let generation = existing_generation(&rundir);
    tracing::info!(?device, mode = mode.name(), input_size = args.model.input_size, generation, "trainer started");
    let cache = EmbeddingIndex::new(&rundir.embeddings_dir(), &args.model.embedding_model_key());
    let board = SummaryWriter::new(rundir.tensorboard_dir());
    let mut t = Trainer {
        args,
        rundir,
        device,
        mode,
        datadir,
        paths: manifest.paths,
        generation,
        cache,
        own: HashMap::new(),
        unreadable: HashMap::new(),
        backbone: None,
        head: None,
        rows: TrainingRows::new(binann_model::EMBED_DIM),
        finetune_model: None,
        pixels: HashMap::new(),
        seeds: HashMap::new(),
        board,
    };
    let mut trained_on: Option<u64> = None;
    let mut annotations = AnnotationFollower::new(&t.rundir.annotations());
    let mut watcher = FileWatcher::new(vec![t.rundir.annotations(), t.rundir.manifest(), t.rundir.seeds_dir()], watch);
    loop {
        watcher.rearm();
        match annotations.refresh() {
            Ok(state) => {
                let mut labelled = labelled(state);
                if labelled.iter().any(|(id, _)| *id as usize >= t.paths.len()) {
                    t.reload_manifest();
                }
                // A label of an image the manifest does not list (a journal copied from another
                // run directory, a manifest restored from a backup) is left out, not a crash that
                // would stop every process.
                let listed = t.paths.len();
                let unknown = labelled.iter().filter(|(id, _)| *id as usize >= listed).count();
                if unknown > 0 {
                    tracing::warn!(unknown, images = listed, "leaving out labels of images the manifest does not list");
                    labelled.retain(|(id, _)| (*id as usize) < listed);
                }
                let seeds = binann_core::seeds::list(&t.rundir.seeds_dir());
                let key = fingerprint(&labelled, &seeds);
                let positives = labelled.iter().filter(|(_, y)| *y).count();
                // Finetune keeps improving on the same labels; head mode has nothing more to learn.
                let changed = trained_on != Some(key) || t.mode == Mode::Finetune;
                if changed && positives + seeds.len() > 0 && positives < labelled.len() {
                    let started = Instant::now();
                    match t.round(&labelled, &seeds, state) {
                        Ok(()) => trained_on = Some(key),
                        Err(e) => tracing::error!("training round failed (will retry): {e:#}"),
                    }
                    // While labels stream in, rest as long as the round took: the trainer then
                    // holds at most half a core, labels given meanwhile are taken together in the
                    // next round, and the model lags the person by one round at most.
                    if t.mode == Mode::Head && !t.args.common.once {
                        std::thread::sleep(started.elapsed());
                    }
                } else if changed && trained_on != Some(key) {
                    tracing::info!(
                        labels = labelled.len(),
                        positives,
                        seed_images = seeds.len(),
                        "waiting for at least one positive (or seed image) and one negative label"
                    );
                    trained_on = Some(key);
                }
            }
            Err(e) => tracing::error!("keeping the last model; the annotations are unreadable: {e}"),
        }
        if t.args.common.once {
            return Ok(());
        }
        let timeout = if t.mode == Mode::Finetune { Duration::from_millis(10) } else { Duration::from_secs(30) };
        watcher.wait(timeout);
    }
}

fn existing_generation(rundir: &RunDir) -> u64 {
    let path = rundir.checkpoint();
    if !path.exists() {
        return 0;
    }
    match binann_model::checkpoint::read_meta(&path) {
        Ok(meta) => meta.generation,
        Err(e) => {
            tracing::warn!("the existing checkpoint is unreadable and will be replaced: {e:#}");
            0
        }
    }
}

/// (id, positive?) of every positive/negative label in force, by id.
pub(crate) fn labelled(state: &AnnotationState) -> Vec<(u32, bool)> {
    let mut v: Vec<(u32, bool)> =
        state.labels().filter(|(_, e)| e.label != Label::Skip).map(|(id, e)| (id, e.label == Label::Positive)).collect();
    v.sort_unstable();
    v
}

fn fingerprint(labelled: &[(u32, bool)], seeds: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labelled.hash(&mut h);
    seeds.hash(&mut h);
    h.finish()
}

impl Trainer {
    fn reload_manifest(&mut self) {
        if let Ok((_, m)) = binann_core::manifest::Manifest::load(&self.rundir.manifest()) {
            self.paths = m.paths;
        }
    }

    fn round(&mut self, labelled: &[(u32, bool)], seeds: &[PathBuf], state: &AnnotationState) -> anyhow::Result<()> {
        let started = Instant::now();
        self.prepare_seeds(seeds)?;
        let (loss, accuracy, used, positives): (f32, Option<f32>, usize, usize) = match self.mode {
            Mode::Head => self.train_head(labelled, seeds)?,
            Mode::Finetune => {
                let seeds: Vec<Tensor> =
                    seeds.iter().filter_map(|p| self.seeds.get(p).and_then(Option::as_ref)).map(Tensor::shallow_clone).collect();
                self.train_finetune(labelled, &seeds)?
            }
        };
        self.generation += 1;
        let meta = ModelMeta {
            backbone: binann_model::BACKBONE_NAME.to_owned(),
            input_size: self.args.model.input_size,
            mode: self.mode.name(),
            generation: self.generation,
            labels_used: used as u64,
            positives: positives as u64,
            loss,
            created_ms: binann_core::now_ms(),
        };
        let path = self.rundir.checkpoint();
        match self.mode {
            Mode::Head => self.head.as_ref().context("no head")?.save(&path, &meta)?,
            Mode::Finetune => self.finetune_model.as_ref().context("no model")?.save(&path, &meta)?,
        }
        let step = self.generation as usize;
        self.board.add_scalar("train/loss", loss, step);
        // Finetune mode measures no training accuracy: nothing in the chart or the log rather than NaN.
        if let Some(accuracy) = accuracy {
            self.board.add_scalar("train/accuracy", accuracy, step);
        }
        self.board.add_scalar("labels/total", used as f32, step);
        self.board.add_scalar("labels/positives", positives as f32, step);
        let (judged, correct) = state.online_accuracy(Some(100));
        if judged > 0 {
            self.board.add_scalar("online/accuracy_last_100", correct as f32 / judged as f32, step);
        }
        if let Some(left) = state.positives_left(self.paths.len() as u64) {
            self.board.add_scalar("positives_left/estimate", left.estimate as f32, step);
            self.board.add_scalar("positives_left/low", left.low as f32, step);
            self.board.add_scalar("positives_left/high", left.high as f32, step);
            self.board.add_scalar("positives_left/recall", left.recall as f32, step);
        }
        self.board.flush();
        tracing::info!(
            generation = self.generation,
            labels = used,
            positives,
            loss,
            accuracy,
            "checkpoint written in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }

    fn backbone(&mut self) -> anyhow::Result<&Backbone> {
        if self.backbone.is_none() {
            // A few images at a time: no trial of the runtimes (a second of CPU the inferrer's
            // first pass would lose).
            self.backbone = Some(self.args.model.load_backbone(self.device, binann_model::RuntimeChoice::FirstInstalled)?);
        }
        Ok(self.backbone.as_ref().expect("just set"))
    }

    /// Embeds (head mode) or decodes (finetune mode) the seed images not seen before, and forgets
    /// the ones no longer in the folder.
    fn prepare_seeds(&mut self, seeds: &[PathBuf]) -> anyhow::Result<()> {
        self.seeds.retain(|p, _| seeds.contains(p));
        let new: Vec<PathBuf> = seeds.iter().filter(|p| !self.seeds.contains_key(*p)).cloned().collect();
        if new.is_empty() {
            return Ok(());
        }
        let results: Vec<Result<Tensor, String>> = match self.mode {
            Mode::Head => {
                let batch = self.args.model.batch;
                self.backbone()?
                    .embed_paths(&new, batch, |_| {})
                    .into_iter()
                    .map(|r| r.map(|v| Tensor::from_slice(&v)).map_err(|e| e.to_string()))
                    .collect()
            }
            Mode::Finetune => {
                let preprocess = binann_model::Preprocess { size: self.args.model.input_size };
                let s = self.args.model.input_size as i64;
                new.iter()
                    .map(|p| preprocess.load_image(p).map(|px| Tensor::from_slice(&px).view([3, s, s])).map_err(|e| e.to_string()))
                    .collect()
            }
        };
        for (path, r) in new.into_iter().zip(results) {
            match r {
                Ok(t) => {
                    self.seeds.insert(path, Some(t));
                }
                Err(e) => {
                    tracing::warn!("leaving an unreadable seed image out of training: {}: {e}", path.display());
                    self.seeds.insert(path, None);
                }
            }
        }
        Ok(())
    }

    /// Returns the loss, the training accuracy, the examples used (labels and seed images) and
    /// the positives among them.
    fn train_head(&mut self, labelled: &[(u32, bool)], seeds: &[PathBuf]) -> anyhow::Result<(f32, Option<f32>, usize, usize)> {
        self.cache.refresh();
        let missing: Vec<u32> = labelled
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !self.cache.contains(*id) && !self.own.contains_key(id) && !self.unreadable.contains_key(id))
            .collect();
        if !missing.is_empty() {
            let files: Vec<PathBuf> = missing.iter().map(|id| self.datadir.join(&self.paths[*id as usize])).collect();
            let batch = self.args.model.batch;
            let results = self.backbone()?.embed_paths(&files, batch, |_| {});
            for (id, r) in missing.iter().zip(results) {
                match r {
                    Ok(v) => {
                        self.own.insert(*id, Tensor::from_slice(&v));
                    }
                    Err(e) => {
                        tracing::warn!("leaving an unreadable image out of training: {e}");
                        self.unreadable.insert(*id, e.to_string());
                    }
                }
            }
        }
        let wanted: HashMap<RowKey, bool> =
            labelled.iter().map(|(id, y)| (RowKey::Image(*id), *y)).chain(seeds.iter().map(|p| (RowKey::Seed(p.clone()), true))).collect();
        let without_row = self.rows.retain(&wanted);
        let images: Vec<u32> =
            without_row.iter().filter_map(|(key, _)| if let RowKey::Image(id) = key { Some(*id) } else { None }).collect();
        let rows = &mut self.rows;
        self.cache.read_rows(&images, |id, values| rows.push(RowKey::Image(id), values, wanted[&RowKey::Image(id)]));
        // What the cache does not hold: images this process embedded, and the seed images.
        for (key, positive) in without_row {
            let own = match &key {
                RowKey::Image(id) => self.own.get(id),
                RowKey::Seed(path) => self.seeds.get(path).and_then(Option::as_ref),
            };
            if let Some(values) = own {
                self.rows.push(key, &Vec::<f32>::try_from(values.flatten(0, -1))?, positive);
            }
        }
        let examples = self.rows.len();
        // Embeddings that reached the cache need no private copy any more.
        self.own.retain(|id, _| !self.cache.contains(*id));
        let positives = self.rows.positives();
        anyhow::ensure!(positives > 0 && positives < examples, "need a readable positive and negative image");
        let x = self.rows.values().to_device(self.device);
        let y = self.rows.labels().to_device(self.device);
        // Continue from the last head (labels arrive one at a time, so it is nearly right already)
        // with a quarter of the steps. A round then costs the same at 10 labels or 100,000: the
        // journal is read from where the last round stopped, only new rows are copied, and the
        // head's steps are minibatches.
        let (mut head, steps) = match self.head.take() {
            Some(head) => (head, (self.args.head_steps / 4).max(1)),
            None => (Head::with_hidden(self.device, self.args.head_hidden), self.args.head_steps),
        };
        let report = head.train(&x, &y, &TrainOptions { steps, ..TrainOptions::default() });
        self.head = Some(head);
        Ok((report.loss, Some(report.accuracy), examples, positives))
    }

    /// As [`Trainer::train_head`]; no training accuracy (the batches' predictions are not kept).
    fn train_finetune(&mut self, labelled: &[(u32, bool)], seeds: &[Tensor]) -> anyhow::Result<(f32, Option<f32>, usize, usize)> {
        if self.finetune_model.is_none() {
            let path = self.rundir.checkpoint();
            let resumed = FinetuneModel::load(&path, binann_model::BACKBONE_NAME, self.args.model.input_size, self.device).ok();
            self.finetune_model = Some(match resumed {
                Some((model, _)) => model,
                None => FinetuneModel::new(&self.args.model.weights, self.args.model.input_size, self.device)?,
            });
        }
        let preprocess = binann_model::Preprocess { size: self.args.model.input_size };
        for (id, _) in labelled {
            if !self.pixels.contains_key(id) && !self.unreadable.contains_key(id) {
                let file = self.datadir.join(&self.paths[*id as usize]);
                match preprocess.load_image(&file) {
                    Ok(p) => {
                        let s = self.args.model.input_size as i64;
                        self.pixels.insert(*id, Tensor::from_slice(&p).view([3, s, s]));
                    }
                    Err(e) => {
                        tracing::warn!("leaving an unreadable image out of training: {e}");
                        self.unreadable.insert(*id, e.to_string());
                    }
                }
            }
        }
        // Every example as (pixels, positive?): the labelled images, then the seed images.
        let usable: Vec<(Tensor, bool)> = labelled
            .iter()
            .filter_map(|(id, y)| self.pixels.get(id).map(|p| (p.shallow_clone(), *y)))
            .chain(seeds.iter().map(|p| (p.shallow_clone(), true)))
            .collect();
        let positives = usable.iter().filter(|(_, y)| *y).count();
        anyhow::ensure!(positives > 0 && positives < usable.len(), "need a readable positive and negative image");
        let model = self.finetune_model.as_mut().expect("created above");
        model.set_pos_weight((usable.len() - positives) as f32 / positives as f32);
        let order = Tensor::randperm(usable.len() as i64, (Kind::Int64, Device::Cpu));
        let order: Vec<i64> = Vec::try_from(order)?;
        let (mut loss_sum, mut batches) = (0f32, 0usize);
        for chunk in order.chunks(self.args.model.batch.max(2)) {
            let images: Vec<Tensor> = chunk.iter().map(|&i| usable[i as usize].0.shallow_clone()).collect();
            let ys: Vec<f32> = chunk.iter().map(|&i| if usable[i as usize].1 { 1.0 } else { 0.0 }).collect();
            loss_sum += model.train_step(&Tensor::stack(&images, 0), &Tensor::from_slice(&ys));
            batches += 1;
        }
        Ok((loss_sum / batches.max(1) as f32, None, usable.len(), positives))
    }
}
