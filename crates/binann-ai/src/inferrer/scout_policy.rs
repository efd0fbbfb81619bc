//! How the inferrer uses the scout ([`crate::scout`]) during the first pass: the thumbnails are
//! made from the start, trusted only once they prove cheap beside the network, and the scout is
//! retrained when the labels or the seeds change or its thumbnails grow by a tenth.

use std::time::{Duration, Instant};

use binann_core::annotations::AnnotationState;
use binann_core::ranking;
use binann_core::watch::FileStamp;

use super::Inferrer;
use crate::scout::{Scout, ThumbnailBuilder};

/// The scout and what it is waiting for.
#[derive(Default)]
pub(super) struct Scouting {
    pub(super) scout: Scout,
    /// Makes the thumbnails; None when done, off, or not started.
    builder: Option<ThumbnailBuilder>,
    /// Seconds per image of the network (a running mean over its batches) and of the thumbnails
    /// (the first slice), for the verdict.
    pub(super) embedding_s: Option<f64>,
    thumbnail_s: Option<f64>,
    /// Whether thumbnails are cheap enough to use; None until both costs are known.
    pub(super) verdict: Option<bool>,
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

impl Inferrer {
    /// Starts thumbnailing this shard's images (in the default order, so that a scout with only
    /// its first slices still covers the folder evenly), unless every image is embedded already.
    pub(super) fn start_scout(&mut self) {
        let n = self.manifest.len();
        let shard = self.args.shard;
        let ids: Vec<u32> = ranking::default_order(n, ranking::DEFAULT_ORDER_SEED).into_iter().filter(|id| shard.owns(*id)).collect();
        if ids.iter().all(|id| self.cache.contains(*id)) {
            return;
        }
        let files = self.files(&ids);
        self.scouting.builder = Some(ThumbnailBuilder::start(ids, files));
    }

    /// Lets the scout go once every image is embedded: it only orders what is still to embed, and
    /// its thumbnails take 432 bytes an image (432 MB at a million images).
    pub(super) fn end_scout(&mut self) {
        let s = &mut self.scouting;
        if s.builder.is_some() || !s.scout.is_empty() {
            tracing::debug!(thumbnails = s.scout.len(), "every image embedded: the scout's thumbnails are let go");
            s.builder = None;
            s.scout = Scout::default();
        }
    }

    /// Takes the thumbnails made meanwhile, decides whether they are worth making, and retrains
    /// the scout when the labels changed. Returns true when the to-do list should be ordered again.
    pub(super) fn update_scout(&mut self) -> bool {
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
}
