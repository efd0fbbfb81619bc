//! Predicting every unlabelled image of the shard: with a head, on this thread or on one of its
//! own beside the embedding pass ([`super::head_pass`]); with a fine-tuned network, by decoding
//! every image again.

use std::time::Instant;

use binann_core::RunDirFile;
use binann_core::annotations::AnnotationState;
use binann_core::predictions::Predictions;
use binann_model::{FinetuneModel, ModelMeta};
use tch::{Device, Tensor};

use super::head_pass::{PassDone, PassOutcome};
use super::{Inferrer, Model};

impl Inferrer {
    /// Predicts every unlabelled image of the shard and writes the predictions, on this thread.
    pub(super) fn predict_all(&mut self) -> anyhow::Result<()> {
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
    pub(super) fn predict_in_background(&mut self) {
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
    pub(super) fn collect_background_pass(&mut self, wait: bool) -> bool {
        let Some(handle) = self.background.take_if(|h| wait || h.is_finished()) else { return self.background.is_none() };
        let outcome = handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let Err(e) = self.pass_finished(outcome) {
            tracing::error!("predicting failed (will retry): {e:#}");
        }
        true
    }

    /// Records a finished pass in the schedule and gives its head back unless a newer checkpoint
    /// was loaded meanwhile.
    fn pass_finished(&mut self, outcome: PassOutcome) -> anyhow::Result<()> {
        let PassOutcome { head, meta, result } = outcome;
        let generation = meta.generation;
        if let Ok(PassDone { sweep_next: Some(next), .. }) = &result {
            self.sweep_from = *next;
        }
        if self.model.is_none() {
            self.model = Some((Model::Head(head), meta));
        }
        self.record_predictions(generation, &result?);
        Ok(())
    }

    /// Records predictions written for checkpoint `generation` in the schedule, and logs them.
    fn record_predictions(&mut self, generation: u64, done: &PassDone) {
        self.schedule.record(generation, done.embedded, done.started, done.finished);
        let ms = done.finished.duration_since(done.started).as_secs_f64() * 1000.0;
        if done.complete {
            tracing::info!(
                checkpoint = generation,
                predicted = done.predicted,
                total = self.manifest.len(),
                "predictions written in {ms:.0} ms"
            );
        } else {
            tracing::info!(
                checkpoint = generation,
                front = done.predicted,
                "front predictions written; a newer checkpoint ended the pass after {ms:.0} ms"
            );
        }
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
            complete: true,
            sweep_next: None,
            started,
            finished: Instant::now(),
        };
        self.record_predictions(meta.generation, &done);
        Ok(())
    }
}
