//! The scout: a pixel model that chooses which images the network embeds next.
//!
//! The network can rank only the images it has embedded, and on a 2-core CPU its first pass over
//! 20,000 small images takes about a minute: a person labelling 5 images/s is 300 labels in
//! before the model has seen the whole folder, and a rare positive kind that the pass reaches
//! late is ranked late. Tiny thumbnails (12 × 12 colour pixels) of every image cost a decode each
//! and no network, about a fiftieth of the network's time for such images, and a logistic
//! regression on them (retrained on the labels, in milliseconds) already tells a trouser from the
//! rest. So while the pass runs, half of what the network embeds next is the images the scout
//! finds most like the positives, and half the default order, which keeps covering the folder
//! evenly for the kinds nobody has labelled yet (the diverse order, the exploring picks).
//!
//! The scout's scores never reach the ranking: every probability a person sees comes from the
//! network's head. Where thumbnails are not cheap beside the network (large photos, where the
//! decode is most of an embedding's cost), the scout stops after its first slice and the pass
//! keeps the default order.
//!
//! - [`ThumbnailBuilder`]: makes the thumbnails on a background thread, slice by slice.
//! - [`Scout`]: holds them, learns from the labels, and orders the images still to embed.
//! - [`SeedThumbnails`]: the seed images' thumbnails, kept in step with the seeds folder.
//!
//! The inferrer decides when to start the thumbnails, whether they are cheap enough to use, and
//! when to retrain the scout (`inferrer::scout_policy`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use binann_model::{Head, Preprocess, TrainOptions};
use tch::{Device, Kind, Tensor};

/// Side of a thumbnail, in pixels; each holds `3 × SIDE × SIDE` values.
pub const SIDE: u32 = 12;

/// Values per thumbnail.
pub const THUMBNAIL_LEN: usize = (3 * SIDE * SIDE) as usize;

/// The scout runs only while a thumbnail costs at most this share of an embedding (measured on
/// the first slice, while both compete for the cores). 28 px PNGs: about 1/50; 12-megapixel JPEGs
/// at a 224 px input: about 1/2, where the scout's pass would delay the network's by half.
pub const MAX_COST_SHARE: f64 = 1.0 / 8.0;

/// Images per slice the builder sends.
const SLICE: usize = 1024;

/// A slice of thumbnails from the [`ThumbnailBuilder`].
#[derive(Debug)]
pub struct ThumbnailSlice {
    /// The images, in the order given to the builder.
    pub ids: Vec<u32>,
    /// `THUMBNAIL_LEN` quantised values per image that decoded, `None` for one that did not.
    pub values: Vec<Option<Vec<u8>>>,
    /// Wall-clock time the slice took.
    pub took: Duration,
}

/// Makes thumbnails on a background thread, one [`ThumbnailSlice`] at a time, until every image
/// given is done or it is cancelled.
#[derive(Debug)]
pub struct ThumbnailBuilder {
    slices: mpsc::Receiver<ThumbnailSlice>,
    cancel: Arc<AtomicBool>,
}

impl ThumbnailBuilder {
    /// Starts thumbnailing `files` (image `ids[i]` at `files[i]`).
    pub fn start(ids: Vec<u32>, files: Vec<PathBuf>) -> Self {
        let (send, slices) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        std::thread::spawn(move || {
            let preprocess = Preprocess { size: SIDE };
            for (ids, files) in ids.chunks(SLICE).zip(files.chunks(SLICE)) {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let started = Instant::now();
                let values = binann_model::decode_batch(preprocess, files).into_iter().map(|r| r.ok().map(|v| quantise(&v))).collect();
                let slice = ThumbnailSlice { ids: ids.to_vec(), values, took: started.elapsed() };
                if send.send(slice).is_err() {
                    return;
                }
            }
        });
        Self { slices, cancel }
    }

    /// The slices finished since the last call, without waiting.
    pub fn ready(&self) -> Vec<ThumbnailSlice> {
        self.slices.try_iter().collect()
    }

    /// Waits for the next slice (None once every slice has been taken).
    pub fn next_blocking(&self) -> Option<ThumbnailSlice> {
        self.slices.recv().ok()
    }
}

impl Drop for ThumbnailBuilder {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Whether thumbnails are cheap enough beside the network to be worth making: `thumbnail` and
/// `embedding` are the wall-clock seconds per image of each.
pub fn worth_it(thumbnail: f64, embedding: f64) -> bool {
    thumbnail <= embedding * MAX_COST_SHARE
}

/// A preprocessed value (normalised with ImageNet statistics, about −2.2 to 2.7) as one byte.
/// The head standardises its inputs, so the affine map loses nothing but rounding.
fn quantise(values: &[f32]) -> Vec<u8> {
    values.iter().map(|v| ((v + 2.2) * 52.0).round().clamp(0.0, 255.0) as u8).collect()
}

/// Thumbnails of the images, a logistic regression on them, and the order it gives.
#[derive(Debug, Default)]
pub struct Scout {
    /// Row of each image id in `values`, `u32::MAX` for none.
    row_of: Vec<u32>,
    /// `THUMBNAIL_LEN` bytes per row.
    values: Vec<u8>,
    /// The model trained on the labels, if there were both kinds.
    head: Option<Head>,
    /// What the head was trained on: (labels, positives).
    trained_on: (usize, usize),
}

impl Scout {
    /// Adds the thumbnails of a slice (images that did not decode are left out).
    pub fn add(&mut self, slice: &ThumbnailSlice) {
        for (id, values) in slice.ids.iter().zip(&slice.values) {
            let Some(values) = values else { continue };
            let id = *id as usize;
            if self.row_of.len() <= id {
                self.row_of.resize(id + 1, u32::MAX);
            }
            if self.row_of[id] != u32::MAX {
                continue;
            }
            self.row_of[id] = self.len() as u32;
            self.values.extend_from_slice(values);
        }
    }

    /// Images with a thumbnail.
    pub fn len(&self) -> usize {
        self.values.len() / THUMBNAIL_LEN
    }

    /// True when no image has a thumbnail.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether a model is trained.
    pub fn is_trained(&self) -> bool {
        self.head.is_some()
    }

    /// What the model was trained on: (labels, positives).
    pub fn trained_on(&self) -> (usize, usize) {
        self.trained_on
    }

    fn row(&self, id: u32) -> Option<usize> {
        self.row_of.get(id as usize).filter(|r| **r != u32::MAX).map(|r| *r as usize)
    }

    fn tensor(&self, rows: &[usize], extra: &[Vec<u8>]) -> Tensor {
        let mut bytes = Vec::with_capacity((rows.len() + extra.len()) * THUMBNAIL_LEN);
        for r in rows {
            bytes.extend_from_slice(&self.values[r * THUMBNAIL_LEN..(r + 1) * THUMBNAIL_LEN]);
        }
        for e in extra {
            bytes.extend_from_slice(e);
        }
        Tensor::from_slice(&bytes).view([(rows.len() + extra.len()) as i64, THUMBNAIL_LEN as i64]).to_kind(Kind::Float)
    }

    /// Trains the model afresh on `labels` (image id, positive?) of images with a thumbnail, and
    /// on `seeds` (thumbnails of example positives from outside the dataset). Without both a
    /// positive and a negative there is nothing to learn, and the model is dropped.
    pub fn train(&mut self, labels: &[(u32, bool)], seeds: &[Vec<u8>]) {
        let known: Vec<(usize, bool)> = labels.iter().filter_map(|(id, p)| self.row(*id).map(|r| (r, *p))).collect();
        let positives = known.iter().filter(|(_, p)| *p).count() + seeds.len();
        let negatives = known.len() + seeds.len() - positives;
        self.trained_on = (known.len(), positives);
        if positives == 0 || negatives == 0 {
            self.head = None;
            return;
        }
        let rows: Vec<usize> = known.iter().map(|(r, _)| *r).collect();
        let x = self.tensor(&rows, seeds);
        let y: Vec<f32> = known.iter().map(|(_, p)| f32::from(u8::from(*p))).chain(seeds.iter().map(|_| 1.0)).collect();
        let mut head = Head::with_input(Device::Cpu, THUMBNAIL_LEN, 0);
        let options = TrainOptions { learning_rate: 1e-2, ..TrainOptions::default() };
        head.train(&x, &Tensor::from_slice(&y), &options);
        self.head = Some(head);
    }

    /// The model's logit for each of `ids` (NaN for an image without a thumbnail), or None
    /// without a model.
    pub fn logits(&self, ids: &[u32]) -> Option<Vec<f32>> {
        let head = self.head.as_ref()?;
        let rows: Vec<Option<usize>> = ids.iter().map(|id| self.row(*id)).collect();
        let present: Vec<usize> = rows.iter().flatten().copied().collect();
        let mut scores = Vec::with_capacity(present.len());
        for part in present.chunks(16_384) {
            let l: Vec<f32> = Vec::try_from(head.logits(&self.tensor(part, &[]))).ok()?;
            scores.extend(l);
        }
        let mut scores = scores.into_iter();
        Some(rows.iter().map(|r| if r.is_some() { scores.next().unwrap_or(f32::NAN) } else { f32::NAN }).collect())
    }

    /// `ids` (in their default order) reordered for embedding: the images most like the
    /// positives and the default order in turn, each image once. Without a model, `ids` as
    /// given.
    pub fn order(&self, ids: Vec<u32>) -> Vec<u32> {
        let Some(logits) = self.logits(&ids) else { return ids };
        let mut likely: Vec<(f32, u32)> = ids.iter().zip(&logits).filter(|(_, l)| !l.is_nan()).map(|(id, l)| (*l, *id)).collect();
        likely.sort_by(|a, b| b.0.total_cmp(&a.0));
        alternate(likely.into_iter().map(|(_, id)| id), ids)
    }
}

/// One from `first`, one from `second`, in turn, skipping what was taken already; every id of
/// `second` appears once in the result.
fn alternate(first: impl Iterator<Item = u32>, second: Vec<u32>) -> Vec<u32> {
    let n = second.iter().map(|id| *id as usize + 1).max().unwrap_or(0);
    let mut taken = vec![false; n];
    let mut out = Vec::with_capacity(second.len());
    let mut first = first.filter(|id| (*id as usize) < n);
    let mut second = second.into_iter();
    loop {
        let mut progressed = false;
        for pick in [first.find(|id| !taken[*id as usize]), second.find(|id| !taken[*id as usize])].into_iter().flatten() {
            if !taken[pick as usize] {
                taken[pick as usize] = true;
                out.push(pick);
                progressed = true;
            }
        }
        if !progressed {
            return out;
        }
    }
}

/// The thumbnail of one image file, for seed images (None if it does not decode).
pub fn thumbnail(path: &Path) -> Option<Vec<u8>> {
    Preprocess { size: SIDE }.load_image(path).ok().map(|v| quantise(&v))
}

/// Thumbnails of the seed images, by file: made once per file, and dropped when the file leaves
/// the seeds folder, so a deleted seed stops counting as a positive and the folder as listed is
/// what the scout last trained on until it changes again.
#[derive(Debug, Default)]
pub struct SeedThumbnails {
    /// None for a file that does not decode (kept, so it is not tried again).
    by_path: BTreeMap<PathBuf, Option<Vec<u8>>>,
}

impl SeedThumbnails {
    /// Whether `listing` (the seeds folder now, as [`binann_core::seeds::list`] gives it) holds
    /// exactly the files the thumbnails are of. Cheap: nothing is decoded.
    pub fn matches(&self, listing: &[PathBuf]) -> bool {
        listing.len() == self.by_path.len() && listing.iter().all(|p| self.by_path.contains_key(p))
    }

    /// Brings the thumbnails in step with `listing`: those of files gone are dropped, and `make`
    /// makes those of new files. Returns whether anything changed, and the thumbnails of every
    /// listed file that decodes.
    pub fn update(&mut self, listing: &[PathBuf], mut make: impl FnMut(&Path) -> Option<Vec<u8>>) -> (bool, Vec<Vec<u8>>) {
        let before = self.by_path.len();
        self.by_path.retain(|p, _| listing.contains(p));
        let mut changed = self.by_path.len() != before;
        for path in listing {
            if !self.by_path.contains_key(path) {
                self.by_path.insert(path.clone(), make(path));
                changed = true;
            }
        }
        (changed, self.by_path.values().flatten().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_seed_is_dropped_and_an_unchanged_folder_is_left_alone() {
        let (a, b, c) = (PathBuf::from("seeds/a.png"), PathBuf::from("seeds/b.png"), PathBuf::from("seeds/c.png"));
        let made = std::cell::RefCell::new(Vec::new());
        let make = |p: &Path| {
            made.borrow_mut().push(p.to_owned());
            // c does not decode.
            (p != c).then(|| p.to_string_lossy().into_owned().into_bytes())
        };
        let mut seeds = SeedThumbnails::default();
        assert!(seeds.matches(&[]), "no seeds, nothing to train on");
        let listing = vec![a.clone(), b.clone(), c.clone()];
        assert!(!seeds.matches(&listing));
        let (changed, thumbnails) = seeds.update(&listing, make);
        assert!(changed);
        assert_eq!(thumbnails, vec![b"seeds/a.png".to_vec(), b"seeds/b.png".to_vec()]);
        assert!(seeds.matches(&listing), "listed again unchanged: no reload, no retraining");
        assert_eq!(seeds.update(&listing, make), (false, thumbnails), "and nothing decoded again");
        assert_eq!(made.borrow().len(), 3);

        // b deleted: its thumbnail no longer counts as a positive, and once in step the folder
        // matches again rather than differing at every check.
        let listing = vec![a.clone(), c.clone()];
        assert!(!seeds.matches(&listing));
        assert_eq!(seeds.update(&listing, make), (true, vec![b"seeds/a.png".to_vec()]));
        assert!(seeds.matches(&listing));
        assert_eq!(made.borrow().len(), 3, "nothing decoded for a deletion");

        // One deleted and one added at once: the count is the same, the files are not.
        let d = PathBuf::from("seeds/d.png");
        let listing = vec![c.clone(), d.clone()];
        assert!(!seeds.matches(&listing));
        assert_eq!(seeds.update(&listing, make), (true, vec![b"seeds/d.png".to_vec()]));
        assert_eq!(made.borrow().last(), Some(&d));
    }

    #[test]
    fn alternate_takes_each_id_once_in_turn() {
        let out = alternate([9, 8, 1].into_iter(), vec![1, 2, 3, 8, 9, 4]);
        assert_eq!(out, vec![9, 1, 8, 2, 3, 4]);
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 2, 3, 4, 8, 9]);
    }

    /// A 28 px image of one of three kinds: a bar on the left (the positives), a bar on the
    /// right, or a bar across, each with its own brightness and a little noise.
    fn write_image(path: &std::path::Path, kind: u32, seed: u32) {
        let mut noise = binann_core::ranking::SplitMix64(u64::from(seed));
        let level = 150 + (noise.next_u64() % 100) as u8;
        let image = image::GrayImage::from_fn(28, 28, |x, y| {
            let on = match kind {
                0 => (4..10).contains(&x),
                1 => (18..24).contains(&x),
                _ => (11..17).contains(&y),
            };
            let jitter = (noise.next_u64() % 40) as u8;
            image::Luma([if on { level } else { jitter }])
        });
        image.save(path).expect("writing a test image");
    }

    #[test]
    fn the_scout_puts_the_images_like_the_positives_first_in_turn_with_the_default_order() {
        let dir = tempfile::tempdir().expect("a temp dir");
        // 300 images; every 30th is a positive (kind 0), the rest split between two other kinds.
        let kinds: Vec<u32> = (0..300).map(|i| if i % 30 == 7 { 0 } else { 1 + i % 2 }).collect();
        let mut files = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let path = dir.path().join(format!("{i:03}.png"));
            write_image(&path, *kind, i as u32);
            files.push(path);
        }
        let ids: Vec<u32> = (0..300).collect();
        let builder = ThumbnailBuilder::start(ids.clone(), files);
        let mut scout = Scout::default();
        while let Some(slice) = builder.next_blocking() {
            scout.add(&slice);
        }
        assert_eq!(scout.len(), 300);
        assert_eq!(scout.order(ids.clone()), ids, "no labels, no model: the default order");
        // One positive and a few negatives of both other kinds.
        let labels = [(7, true), (0, false), (1, false), (2, false), (3, false)];
        scout.train(&labels, &[]);
        assert!(scout.is_trained());
        assert_eq!(scout.trained_on(), (5, 1));
        let unlabelled: Vec<u32> = ids.iter().copied().filter(|id| !labels.iter().any(|(l, _)| l == id)).collect();
        let order = scout.order(unlabelled.clone());
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, unlabelled, "every image once");
        // Every other place is the scout's: the 9 other positives take its first 9.
        let scouted: Vec<u32> = order.iter().step_by(2).take(9).copied().collect();
        assert!(scouted.iter().all(|id| kinds[*id as usize] == 0), "the scout's first picks: {scouted:?}");
        // The places between keep the default order (skipping what the scout took).
        let between: Vec<u32> = order.iter().skip(1).step_by(2).take(5).copied().collect();
        assert_eq!(between, vec![0, 1, 2, 3, 4].into_iter().map(|i| unlabelled[i]).collect::<Vec<_>>());
        // Only negatives: nothing to learn.
        scout.train(&[(0, false), (1, false)], &[]);
        assert!(!scout.is_trained());
    }

    #[test]
    fn a_seed_image_alone_starts_the_scout() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let seed = dir.path().join("seed.png");
        write_image(&seed, 0, 999);
        let mut files = Vec::new();
        for i in 0..40u32 {
            let path = dir.path().join(format!("{i:03}.png"));
            write_image(&path, if i % 10 == 5 { 0 } else { 1 }, i);
            files.push(path);
        }
        let builder = ThumbnailBuilder::start((0..40).collect(), files);
        let mut scout = Scout::default();
        while let Some(slice) = builder.next_blocking() {
            scout.add(&slice);
        }
        let seeds = vec![thumbnail(&seed).expect("the seed decodes")];
        scout.train(&[(0, false), (1, false)], &seeds);
        assert!(scout.is_trained());
        let order = scout.order((2..40).collect());
        let firsts: Vec<u32> = order.iter().step_by(2).take(4).copied().collect();
        assert!(firsts.iter().all(|id| id % 10 == 5), "{firsts:?}");
    }

    #[test]
    fn thumbnails_cost_at_most_an_eighth_of_an_embedding() {
        assert!(worth_it(0.000_04, 0.002), "small PNGs: a fiftieth");
        assert!(!worth_it(0.01, 0.025), "camera photos at 224 px: more than a third");
    }
}
