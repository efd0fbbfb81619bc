//! One prediction pass of a head over the embeddings held when it was made, self-contained so
//! that it can run on a thread of its own beside the embedding pass.

use std::path::PathBuf;
use std::time::Instant;

use binann_core::RunDirFile;
use binann_core::annotations::AnnotationState;
use binann_core::predictions::Predictions;
use binann_model::{Head, ModelMeta};
use tch::{Device, Tensor};

use super::{Inferrer, Shard};

/// One prediction pass of a head over the embeddings held when it was made: everything it needs,
/// so that it can run on any thread ([`HeadPass::run`]).
pub(super) struct HeadPass {
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
pub(super) struct PassOutcome {
    pub(super) head: Head,
    pub(super) meta: ModelMeta,
    pub(super) result: anyhow::Result<PassDone>,
}

/// What a pass did, for the schedule and the log.
pub(super) struct PassDone {
    pub(super) embedded: usize,
    pub(super) predicted: usize,
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

impl Inferrer {
    /// A prediction pass with `head` over the embeddings held now: the chunks' tensors are shared,
    /// the chunk being filled copied.
    pub(super) fn head_pass(&mut self, head: Head, meta: ModelMeta) -> HeadPass {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use binann_core::rundir::RunDir;

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
}
