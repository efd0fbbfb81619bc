//! binann-selector: orders the unlabelled images for the server from the inferrer's predictions.
//!
//! - [`Selector`]: the selector process, one round at a time: which order the ranking takes (the
//!   model's, the model's with exploring picks, or one that spreads over the folder before the
//!   first positive) and when it is written again.
//! - [`Strategy`] and [`select`]: the model's order over merged predictions.
//! - [`projection`]: the linear maps from an embedding to its sketch.
//! - [`sketch_cache`]: every embedded image's sketch, read from the embedding chunks.
//! - [`kmeans`]: the visual kinds of the folder (k-means of the sketches).
//! - [`orders`]: the orders that spread over the folder (farthest first, one of each kind in
//!   turn, the unexplored regions) and [`orders::interleave`], which mixes two orders.

pub mod kmeans;
pub mod orders;
pub mod projection;
mod selector;
pub mod sketch_cache;

use binann_core::ranking::shuffle_key;
pub use binann_core::sketches::SKETCH_DIM;
pub use selector::{DIVERSE, EXPLORING, FARTHEST_FIRST, Selector};

/// Most images k-means and the farthest-first orders work on: past them, a fixed-stride sample
/// (every image has the same chance, and no random state is needed).
const FIT_SAMPLE: usize = 20_000;

/// How the ranking orders the images once the model knows a positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// Most probably positive first: finds a rare positive class fastest.
    MaxProbability,
    /// A fixed-seed shuffle, ignoring the model: an unbiased look at the folder, and the baseline
    /// the benchmarks compare with.
    Random,
}

impl Strategy {
    /// The name shown in the page and the ranking file: the option's spelling.
    pub fn name(self) -> String {
        binann_core::cli::value_name(&self)
    }
}

/// Orders `(id, logit)` pairs by `strategy` (the model's logits, not probabilities: they order
/// what a confident model's probabilities round to exactly 0 or 1); `seed` makes the shuffle
/// repeatable. Returns indices into `ids`.
pub fn select(ids: &[u32], logits: &[f32], strategy: Strategy, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..ids.len()).collect();
    match strategy {
        Strategy::MaxProbability => idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(ids[a].cmp(&ids[b]))),
        Strategy::Random => idx.sort_by_cached_key(|&i| shuffle_key(seed, ids[i])),
    }
    idx
}

/// How the selector holds a sketch value: in half precision, 64 bytes a row instead of 128. At
/// a million images the two projections' rows took 256 MB in single precision, a fifth of what
/// all four processes held; half precision keeps about three significant digits, far finer than
/// the distances the orders compare.
pub type Stored = half::f16;

/// Row `i` of `values` (SKETCH_DIM stored values each), in single precision.
fn row_of(values: &[Stored], i: usize) -> [f32; SKETCH_DIM] {
    use half::slice::HalfFloatSliceExt;
    let mut row = [0f32; SKETCH_DIM];
    values[i * SKETCH_DIM..(i + 1) * SKETCH_DIM].convert_to_f32_slice(&mut row);
    row
}

/// The rows of `values` (SKETCH_DIM stored values each) that k-means and farthest first work on:
/// every row up to [`FIT_SAMPLE`], past them a fixed-stride sample (every image has the same
/// chance, and no random state is needed). Returns the rows' indices, and their values one after
/// the other in single precision.
fn fit_sample(values: &[Stored]) -> (Vec<usize>, Vec<f32>) {
    let n = values.len() / SKETCH_DIM;
    let sample: Vec<usize> = (0..n).step_by(n.div_ceil(FIT_SAMPLE).max(1)).collect();
    let rows = sample.iter().flat_map(|&i| row_of(values, i)).collect();
    (sample, rows)
}

/// Squared distance between two sketches.
fn distance2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

#[cfg(test)]
mod tests {
    use binann_core::ranking::SplitMix64;

    use super::*;

    /// Points around well-separated centres in sketch space, `sizes[b]` around centre `b`, listed
    /// blob by blob; returns the rows and each row's blob.
    pub(crate) fn blobs(sizes: &[usize], seed: u64) -> (Vec<Stored>, Vec<usize>) {
        let mut rng = SplitMix64(seed);
        let mut values = Vec::new();
        let mut truth = Vec::new();
        for (b, size) in sizes.iter().enumerate() {
            for _ in 0..*size {
                for j in 0..SKETCH_DIM {
                    let centre = if j == b % SKETCH_DIM { 10.0 * (1 + b / SKETCH_DIM) as f32 } else { 0.0 };
                    values.push(Stored::from_f32(centre + (rng.next_f64() as f32 - 0.5)));
                }
                truth.push(b);
            }
        }
        (values, truth)
    }

    /// The logits of probabilities, as the inferrer stores them.
    fn logits(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| (p / (1.0 - p)).ln()).collect()
    }

    #[test]
    fn strategies_order_as_named() {
        let ids = [10, 11, 12, 13, 14];
        let probs = [0.15, 0.9, 0.5, 0.6, 0.0];
        let order = |s, seed| select(&ids, &logits(&probs), s, seed).iter().map(|&i| ids[i]).collect::<Vec<_>>();
        assert_eq!(order(Strategy::MaxProbability, 1), [11, 13, 12, 10, 14]);
        let mut r = order(Strategy::Random, 1);
        assert_eq!(order(Strategy::Random, 1), r, "repeatable for a seed");
        r.sort();
        assert_eq!(r, ids);
        let ids: Vec<u32> = (0..100).collect();
        let shuffled = |seed| select(&ids, &vec![0.0; 100], Strategy::Random, seed);
        assert_ne!(shuffled(1), shuffled(2), "another seed, another order");
        assert_ne!(shuffled(1), (0..100).collect::<Vec<_>>());
    }
}
