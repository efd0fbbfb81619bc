//! The embedding pass: the images still to embed, in the order the server will show them,
//! embedded a batch at a time (the next batch decoding while the network runs on this one) into
//! chunk files that grow with the cache.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::Context;
use binann_core::RunDirFile;
use binann_core::embeddings::{CHUNK, EmbeddingChunk};
use binann_core::ranking::{self, Ranking};
use binann_model::{Backbone, DecodeAhead};

use super::Inferrer;

impl Inferrer {
    fn backbone(&mut self) -> anyhow::Result<&Backbone> {
        if self.backbone.is_none() {
            self.backbone = Some(self.args.model.load_backbone(self.device, binann_model::RuntimeChoice::Fastest)?);
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

    /// Embeds one batch; writes the chunk when full. Returns false when nothing is left to embed.
    ///
    /// Before the network runs on this batch, the next one starts decoding on the other cores
    /// ([`DecodeAhead`]), so decoding hides behind the network across calls while the loop still
    /// looks at the checkpoint between batches.
    pub(super) fn embed_some(&mut self) -> anyhow::Result<bool> {
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
        self.cache.add_written(&path, &chunk);
        tracing::info!(
            images,
            embedded = self.cache.len(),
            total = self.manifest.len(),
            "embedding chunk written in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }
}
