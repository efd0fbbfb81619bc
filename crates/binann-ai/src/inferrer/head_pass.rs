//! One prediction pass of a head over the embeddings held when it was made, self-contained so
//! that it can run on a thread of its own beside the embedding pass.
//!
//! On a large shard a whole pass takes seconds (4 s for a million images on one core), longer
//! than a person takes per label. There the pass first scores the front: the images the last
//! predictions ranked highest, which the person will be shown next, and a slice of the rest that
//! moves on with every pass (the sweep), and writes them among the last predictions of the rest;
//! then it scores everything, and gives up as soon as a newer checkpoint is written, whose front
//! matters more.

use std::path::PathBuf;
use std::time::Instant;

use binann_core::RunDirFile;
use binann_core::annotations::AnnotationState;
use binann_core::predictions::Predictions;
use binann_core::watch::FileStamp;
use binann_model::{Head, ModelMeta};
use tch::{Device, Tensor};

use super::{Inferrer, Shard};
use crate::embedding_cache::IndexedChunk;

/// One prediction pass of a head over the embeddings held when it was made: everything it needs,
/// so that it can run on any thread ([`HeadPass::run`]).
pub(super) struct HeadPass {
    head: Head,
    meta: ModelMeta,
    /// The chunk files, read one at a time.
    chunks: Vec<IndexedChunk>,
    /// The chunk being filled: its ids and embeddings.
    partial: Option<(Vec<u32>, Tensor)>,
    /// Images of the chunk being filled that could not be read.
    failed: Vec<(u32, String)>,
    /// Images embedded, for the schedule.
    embedded: usize,
    shard: Shard,
    annotations: PathBuf,
    /// The predictions file, and the generation to write it as (the front's is one less).
    out: PathBuf,
    generation: u64,
    /// Scoring the front first, and giving up the whole pass for a newer checkpoint, happen only
    /// when the last predictions hold at least `front_from` images.
    front: FrontFirst,
}

/// When and how a [`HeadPass`] scores the front first.
#[derive(Debug, Clone)]
pub(super) struct FrontFirst {
    /// Predicted images from which the front is scored first.
    pub(super) from: usize,
    /// The images the last predictions ranked highest that are scored first.
    pub(super) size: usize,
    /// The sweep: the chunk files scored with the front, from this one (modulo their number)
    /// until they hold at least `sweep_size` images.
    pub(super) sweep_from: usize,
    pub(super) sweep_size: usize,
    /// The checkpoint file and its stamp when this pass's head was read: a change means a newer
    /// checkpoint, which ends the pass.
    pub(super) checkpoint: PathBuf,
    pub(super) stamp: Option<FileStamp>,
}

/// Predicted images from which a pass scores the front first: a whole pass over 64,000 images
/// takes about 250 ms on one core, within a label's time.
pub(super) const FRONT_FROM: usize = 65_536;

/// Images in the front: the person labels a few a second, and a new checkpoint comes every second
/// or so, so the front is far more than they see before the next one.
pub(super) const FRONT_SIZE: usize = 8_192;

/// Images in each pass's sweep. While labels stream in, every checkpoint ends the whole pass
/// early, and an image outside the front kept the score of the first model that saw it: on a
/// folder of 190,800 images no whole pass finished after the first 67,000, and a positive that an
/// early model ranked low stayed low. With the sweep, a checkpoint a second rescores the whole
/// folder every 12 seconds at 190,800 images (4 chunks of 4,096 a pass), every minute at a million.
/// At a million images label -> ranking took as long with half this sweep (1,025 against 1,034 ms).
pub(super) const SWEEP_SIZE: usize = 16_384;

/// What a [`HeadPass`] gives back: its head and checkpoint, and what it did.
pub(super) struct PassOutcome {
    pub(super) head: Head,
    pub(super) meta: ModelMeta,
    pub(super) result: anyhow::Result<PassDone>,
}

/// What a pass did, for the schedule and the log.
pub(super) struct PassDone {
    pub(super) embedded: usize,
    /// Images predicted by this head: all unlabelled ones, or only the front when a newer
    /// checkpoint ended the pass.
    pub(super) predicted: usize,
    pub(super) complete: bool,
    /// Where the next pass's sweep starts, when this one swept.
    pub(super) sweep_next: Option<usize>,
    pub(super) started: Instant,
    pub(super) finished: Instant,
}

impl HeadPass {
    pub(super) fn run(self) -> PassOutcome {
        let result = self.predict();
        PassOutcome { head: self.head, meta: self.meta, result }
    }

    fn predict(&self) -> anyhow::Result<PassDone> {
        let started = Instant::now();
        let labelled = AnnotationState::load(&self.annotations)?;
        let wanted = |id: u32| self.shard.owns(id) && !labelled.is_done(id);
        let front = self.write_front(&wanted)?;
        if let Some((scored, _)) = front {
            // Logged rather than returned: the schedule learns of the whole pass only.
            tracing::debug!(scored, "front predictions written in {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
        let front_first = front.map(|(scored, _)| scored);
        let sweep_next = front.map(|(_, next)| next);
        let superseded = || front_first.is_some() && FileStamp::of(&self.front.checkpoint) != self.front.stamp;
        let mut ids = Vec::new();
        let mut logits = Vec::new();
        let mut failed = self.failed.clone();
        for chunk in &self.chunks {
            if superseded() {
                let predicted = front_first.unwrap_or(0);
                return Ok(PassDone { embedded: self.embedded, predicted, complete: false, sweep_next, started, finished: Instant::now() });
            }
            failed.extend(chunk.failed.iter().map(|id| (*id, "unreadable image".to_owned())));
            if !chunk.ids.iter().any(|id| wanted(*id)) {
                continue;
            }
            let values = match chunk.read_all() {
                Ok(values) => values,
                Err(e) => {
                    tracing::warn!("its images keep no prediction until the inferrer restarts: {e:#}");
                    continue;
                }
            };
            let l: Vec<f32> = Vec::try_from(self.head.logits(&values).to_device(Device::Cpu))?;
            for (row, id) in chunk.ids.iter().enumerate() {
                if wanted(*id) && !chunk.failed.contains(id) {
                    ids.push(*id);
                    logits.push(l[row]);
                }
            }
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
        self.predictions(ids, logits, failed).save(&self.out, self.generation)?;
        Ok(PassDone { embedded: self.embedded, predicted, complete: true, sweep_next, started, finished: Instant::now() })
    }

    /// On a large shard, scores the front (the unlabelled images the last predictions ranked
    /// highest), the sweep's chunks and the images embedded since, and writes them among the last
    /// predictions of the rest; returns how many images it scored and where the next sweep
    /// starts, or None where the shard is small (or was never predicted) and the whole pass is
    /// quick enough.
    fn write_front(&self, wanted: &impl Fn(u32) -> bool) -> anyhow::Result<Option<(usize, usize)>> {
        let Ok((_, mut last)) = Predictions::load(&self.out) else { return Ok(None) };
        if last.ids.len() < self.front.from {
            return Ok(None);
        }
        let mut keep: Vec<usize> = (0..last.ids.len()).filter(|i| wanted(last.ids[*i])).collect();
        let size = self.front.size.min(keep.len());
        if size < keep.len() {
            keep.select_nth_unstable_by(size, |a, b| last.logits[*b].total_cmp(&last.logits[*a]));
        }
        let front: std::collections::HashMap<u32, usize> = keep[..size].iter().map(|i| (last.ids[*i], *i)).collect();
        // Images embedded since the last predictions are scored too: the front is chosen from
        // those, so an image never predicted would otherwise stay out of the ranking for as long
        // as labels keep coming.
        let mut place_in_last = vec![u32::MAX; last.ids.iter().max().map_or(0, |m| *m as usize + 1)];
        for (i, id) in last.ids.iter().enumerate() {
            place_in_last[*id as usize] = i as u32;
        }
        let place = |id: u32| place_in_last.get(id as usize).copied().filter(|i| *i != u32::MAX).map(|i| i as usize);
        let is_new = |id: u32| place(id).is_none() && wanted(id);
        // The sweep's chunks, from where the last pass's ended.
        let mut sweep = vec![false; self.chunks.len()];
        let mut sweep_next = self.front.sweep_from;
        let mut swept_rows = 0;
        while swept_rows < self.front.sweep_size && sweep_next < self.front.sweep_from + self.chunks.len() {
            let i = sweep_next % self.chunks.len();
            sweep[i] = true;
            swept_rows += self.chunks[i].ids.len();
            sweep_next += 1;
        }
        let (mut new_ids, mut new_logits) = (Vec::new(), Vec::new());
        let mut scored = 0;
        // The rows to score in each chunk, and where each goes: the front's place in the last
        // predictions, or None for a new image.
        let pick = |chunk_ids: &[u32], failed: &[u32], swept: bool| -> (Vec<usize>, Vec<Option<usize>>) {
            chunk_ids
                .iter()
                .enumerate()
                .filter(|(_, id)| !failed.contains(id))
                .filter_map(|(row, id)| match front.get(id) {
                    Some(at) => Some((row, Some(*at))),
                    // Wanted and not in the last predictions is new: scored as such.
                    None if swept && wanted(*id) => Some((row, place(*id))),
                    None => is_new(*id).then_some((row, None)),
                })
                .unzip()
        };
        let mut score = |chunk_ids: &[u32], rows: Vec<usize>, at: Vec<Option<usize>>, values: &Tensor| -> anyhow::Result<()> {
            let l: Vec<f32> = Vec::try_from(self.head.logits(values).to_device(Device::Cpu))?;
            for ((row, at), logit) in rows.into_iter().zip(at).zip(l) {
                match at {
                    Some(at) => last.logits[at] = logit,
                    None => {
                        new_ids.push(chunk_ids[row]);
                        new_logits.push(logit);
                    }
                }
                scored += 1;
            }
            Ok(())
        };
        for (chunk, swept) in self.chunks.iter().zip(sweep) {
            let (rows, at) = pick(&chunk.ids, &chunk.failed, swept);
            if rows.is_empty() {
                continue;
            }
            // A swept chunk in one read, the front's rows of the others one by one.
            let values = if swept { chunk.read_all().map(|all| all.index_select(0, &row_index(&rows))) } else { chunk.read_rows(&rows) };
            match values {
                Ok(values) => score(&chunk.ids, rows, at, &values)?,
                Err(e) => tracing::warn!("its images keep their last predictions: {e:#}"),
            }
        }
        if let Some((partial_ids, values)) = &self.partial {
            let (rows, at) = pick(partial_ids, &[], false);
            if !rows.is_empty() {
                let values = values.index_select(0, &row_index(&rows));
                score(partial_ids, rows, at, &values)?;
            }
        }
        let mut kept = vec![false; last.ids.len()];
        for i in keep {
            kept[i] = true;
        }
        let (mut ids, mut logits): (Vec<u32>, Vec<f32>) =
            last.ids.iter().zip(&last.logits).zip(kept).filter(|(_, k)| *k).map(|((id, l), _)| (*id, *l)).unzip();
        ids.extend(new_ids);
        logits.extend(new_logits);
        self.predictions(ids, logits, last.failed).save(&self.out, self.generation - 1)?;
        Ok(Some((scored, sweep_next % self.chunks.len().max(1))))
    }

    /// This pass's predictions file: `logits` of `ids` by this pass's checkpoint.
    fn predictions(&self, ids: Vec<u32>, logits: Vec<f32>, failed: Vec<(u32, String)>) -> Predictions {
        Predictions {
            model: crate::model_info(&self.meta),
            shard: (self.shard.index, self.shard.count),
            ids,
            logits,
            failed,
            created_ms: binann_core::now_ms(),
        }
    }
}

/// Row numbers as the index tensor `index_select` takes.
fn row_index(rows: &[usize]) -> Tensor {
    Tensor::from_slice(&rows.iter().map(|r| *r as i64).collect::<Vec<_>>())
}

impl Inferrer {
    /// A prediction pass with `head` over the embeddings held now: the chunks' tensors are shared,
    /// the chunk being filled copied.
    pub(super) fn head_pass(&mut self, head: Head, meta: ModelMeta) -> HeadPass {
        // Two generations: the front's predictions, then the whole pass's.
        self.generation += 2;
        let partial = (!self.partial_rows.is_empty()).then(|| {
            let rows =
                Tensor::from_slice(&self.partial_rows.concat()).view([self.partial_rows.len() as i64, binann_model::EMBED_DIM as i64]);
            (self.partial_ids.clone(), rows)
        });
        HeadPass {
            head,
            meta,
            chunks: self.cache.chunks().to_vec(),
            partial,
            failed: self.partial_failed.clone(),
            embedded: self.cache.len() + self.partial_ids.len(),
            shard: self.args.shard,
            annotations: self.rundir.annotations(),
            out: self.rundir.predictions(self.args.shard.index, self.args.shard.count),
            generation: self.generation,
            front: FrontFirst {
                from: FRONT_FROM,
                size: FRONT_SIZE,
                sweep_from: self.sweep_from,
                sweep_size: SWEEP_SIZE,
                checkpoint: self.rundir.checkpoint(),
                stamp: self.seen.checkpoint_stamp(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use binann_core::embeddings::EmbeddingChunk;
    use binann_core::rundir::RunDir;

    use crate::embedding_cache::EmbeddingIndex;

    /// A run directory whose journal labels `ids` negative.
    fn rundir_labelling(ids: &[u32]) -> (tempfile::TempDir, RunDir) {
        use binann_core::annotations::{Event, Label, Record};
        use binann_core::codec::FileKind;
        use binann_core::journal::{self, JournalWriter};
        let dir = tempfile::tempdir().expect("a temp dir");
        let rundir = RunDir::create_or_open(dir.path()).unwrap();
        let mut writer = JournalWriter::open::<Record>(&rundir.annotations(), FileKind::Annotations).unwrap().writer;
        for (seq, id) in ids.iter().enumerate() {
            let event = Event::Label { id: *id, label: Label::Negative, prob: None };
            let record = Record { audit: None, seq: seq as u64, time_ms: 0, client: "t".into(), annotator: String::new(), event };
            writer.append_framed(&journal::frame(&record)).unwrap();
        }
        (dir, rundir)
    }

    /// A head checkpoint's description.
    fn head_meta(generation: u64, labels_used: u64, positives: u64) -> ModelMeta {
        ModelMeta {
            backbone: binann_model::BACKBONE_NAME.into(),
            input_size: 64,
            mode: binann_model::MODE_HEAD.into(),
            generation,
            labels_used,
            positives,
            loss: 0.5,
            created_ms: 0,
        }
    }

    /// Writes the shard's last predictions (generation 7): `logits` of images `0..logits.len()` by
    /// the checkpoint `meta` describes.
    fn save_last_predictions(out: &std::path::Path, meta: &ModelMeta, logits: &[f32]) {
        Predictions {
            model: crate::model_info(meta),
            shard: (0, 1),
            ids: (0..logits.len() as u32).collect(),
            logits: logits.to_vec(),
            failed: Vec::new(),
            created_ms: 0,
        }
        .save(out, 7)
        .unwrap();
    }

    /// `values` of `ids` written as the run directory's first chunk file, with `failed` among
    /// them, and indexed as the inferrer indexes it.
    fn chunk_file(rundir: &RunDir, ids: Vec<u32>, values: &Tensor, failed: &[u32]) -> Vec<IndexedChunk> {
        chunk_file_at(rundir, 0, ids, values, failed)
    }

    /// The same as chunk file `index`.
    fn chunk_file_at(rundir: &RunDir, index: u32, ids: Vec<u32>, values: &Tensor, failed: &[u32]) -> Vec<IndexedChunk> {
        let floats: Vec<f32> = Vec::try_from(values.flatten(0, -1)).unwrap();
        let chunk = EmbeddingChunk {
            ids,
            dim: binann_model::EMBED_DIM as u32,
            model: "m".into(),
            values: EmbeddingChunk::pack(&floats),
            failed: failed.iter().map(|id| (*id, "unreadable".into())).collect(),
        };
        let path = EmbeddingChunk::path(&rundir.embeddings_dir(), 0, 1, index);
        chunk.save(&path, 1).unwrap();
        let mut index = EmbeddingIndex::new(&rundir.embeddings_dir(), "m");
        index.add_written(&path, &chunk);
        index.chunks().to_vec()
    }

    #[test]
    fn a_head_pass_on_another_thread_predicts_every_unlabelled_readable_image() {
        let (_dir, rundir) = rundir_labelling(&[1, 4]);
        let dim = binann_model::EMBED_DIM as i64;
        let chunk = Tensor::randn([4, dim], (tch::Kind::Float, Device::Cpu));
        let partial = Tensor::randn([2, dim], (tch::Kind::Float, Device::Cpu));
        let head = Head::new(Device::Cpu);
        let expected: Vec<f32> = Vec::try_from(head.logits(&Tensor::cat(&[chunk.shallow_clone(), partial.shallow_clone()], 0))).unwrap();
        let meta = head_meta(3, 2, 1);
        let out = rundir.predictions(0, 1);
        let pass = HeadPass {
            head,
            meta,
            // Image 2 failed in its chunk, 6 in the chunk being filled; 1 and 4 are labelled.
            chunks: chunk_file(&rundir, vec![0, 1, 2, 3], &chunk, &[2]),
            partial: Some((vec![4, 5], partial)),
            failed: vec![(6, "unreadable".into())],
            embedded: 6,
            shard: Shard { index: 0, count: 1 },
            annotations: rundir.annotations(),
            out: out.clone(),
            generation: 9,
            front: FrontFirst { from: 1, size: 1, sweep_from: 0, sweep_size: 0, checkpoint: rundir.checkpoint(), stamp: None },
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
    fn on_a_large_shard_the_front_and_the_new_images_are_scored_first_and_a_newer_checkpoint_ends_the_pass() {
        let (_dir, rundir) = rundir_labelling(&[1]);
        let dim = binann_model::EMBED_DIM as i64;
        // Images 8 and 9 were embedded after the last predictions; 9 could not be read.
        let chunk = Tensor::randn([10, dim], (tch::Kind::Float, Device::Cpu));
        let head = Head::new(Device::Cpu);
        let new_logits: Vec<f32> = Vec::try_from(head.logits(&chunk)).unwrap();
        let meta = |generation| head_meta(generation, 1, 0);
        // The last predictions, by checkpoint 4: image 1 has been labelled since; of the others,
        // 2 and 4 ranked highest.
        let out = rundir.predictions(0, 1);
        let last_logits = vec![0.1, 9.0, 5.0, 0.2, 4.0, 0.3, 0.4, 0.5];
        save_last_predictions(&out, &meta(4), &last_logits);
        // A checkpoint written after the one this pass's head was read from (stamp None: none then).
        binann_core::atomic::write_atomic(&rundir.checkpoint(), b"newer").unwrap();
        let chunks = chunk_file(&rundir, (0..10).collect(), &chunk, &[9]);
        let pass = |head: Head, stamp| HeadPass {
            head,
            meta: meta(5),
            chunks: chunks.clone(),
            partial: None,
            failed: Vec::new(),
            embedded: 10,
            shard: Shard { index: 0, count: 1 },
            annotations: rundir.annotations(),
            out: out.clone(),
            generation: 9,
            front: FrontFirst { from: 5, size: 2, sweep_from: 0, sweep_size: 0, checkpoint: rundir.checkpoint(), stamp },
        };
        let outcome = pass(head, None).run();
        let done = outcome.result.unwrap();
        assert_eq!((done.complete, done.predicted), (false, 3), "the front and the new image only");
        let (generation, front) = Predictions::load(&out).unwrap();
        assert_eq!(generation, 8);
        assert_eq!(front.model.checkpoint_generation, 5);
        assert_eq!(front.ids, [0, 2, 3, 4, 5, 6, 7, 8], "every unlabelled image of the last predictions, and the new one");
        let expected: Vec<f32> =
            [0, 2, 3, 4, 5, 6, 7, 8].iter().map(|id| if [2, 4, 8].contains(id) { new_logits[*id] } else { last_logits[*id] }).collect();
        // Scored two rows at a time rather than eight: the same logits to rounding.
        let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(
            close(&front.logits, &expected),
            "the front scored by the new head, the rest as they were: {:?}, {expected:?}",
            front.logits
        );
        // Read from the checkpoint as it is now: nothing newer, so the pass goes through.
        let done = pass(outcome.head, FileStamp::of(&rundir.checkpoint())).run().result.unwrap();
        assert_eq!((done.complete, done.predicted), (true, 8));
        let (generation, all) = Predictions::load(&out).unwrap();
        assert_eq!(generation, 9);
        let expected: Vec<f32> = [0, 2, 3, 4, 5, 6, 7, 8].iter().map(|id| new_logits[*id]).collect();
        assert!(close(&all.logits, &expected), "{:?}, {expected:?}", all.logits);
    }

    #[test]
    fn the_sweep_rescores_a_moving_slice_of_the_folder_with_the_front() {
        let (_dir, rundir) = rundir_labelling(&[6]);
        let dim = binann_model::EMBED_DIM as i64;
        let values = Tensor::randn([10, dim], (tch::Kind::Float, Device::Cpu));
        let head = Head::new(Device::Cpu);
        let new_logits: Vec<f32> = Vec::try_from(head.logits(&values)).unwrap();
        // Two chunk files: images 0-4 and 5-9.
        let mut chunks = chunk_file_at(&rundir, 0, (0..5).collect(), &values.narrow(0, 0, 5), &[]);
        chunks.extend(chunk_file_at(&rundir, 1, (5..10).collect(), &values.narrow(0, 5, 5), &[]));
        let meta = head_meta(5, 1, 0);
        // The last predictions rank image 2 highest: the front of one.
        let out = rundir.predictions(0, 1);
        let last_logits: Vec<f32> = (0..10).map(|id| if id == 2 { 9.0 } else { -(id as f32) }).collect();
        save_last_predictions(&out, &meta, &last_logits);
        binann_core::atomic::write_atomic(&rundir.checkpoint(), b"newer").unwrap();
        let pass = HeadPass {
            head,
            meta,
            chunks,
            partial: None,
            failed: Vec::new(),
            embedded: 10,
            shard: Shard { index: 0, count: 1 },
            annotations: rundir.annotations(),
            out: out.clone(),
            generation: 9,
            // The sweep starts at the second chunk file and takes one (5 images).
            front: FrontFirst { from: 5, size: 1, sweep_from: 1, sweep_size: 5, checkpoint: rundir.checkpoint(), stamp: None },
        };
        let done = pass.run().result.unwrap();
        assert_eq!((done.complete, done.predicted, done.sweep_next), (false, 5, Some(0)), "the front and four swept images");
        let (_, front) = Predictions::load(&out).unwrap();
        assert_eq!(front.ids, [0, 1, 2, 3, 4, 5, 7, 8, 9], "every unlabelled image");
        let expected: Vec<f32> = front
            .ids
            .iter()
            .map(|id| if [2, 5, 7, 8, 9].contains(id) { new_logits[*id as usize] } else { last_logits[*id as usize] })
            .collect();
        let close = front.logits.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-5);
        assert!(close, "the front and the swept chunk by the new head, the rest as they were: {:?}, {expected:?}", front.logits);
    }
}
