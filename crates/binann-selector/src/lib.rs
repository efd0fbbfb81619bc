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
    lanes_sum(a, b, |x, y| (x - y) * (x - y))
}

/// The dot product of `a` and `b`.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    lanes_sum(a, b, |x, y| x * y)
}

/// The sum of `term` over the pairs of `a` and `b`, added in 8 lanes: a plain `sum()` of floats
/// must add them in order, one at a time, which the compiler cannot spread over a vector
/// register. Projecting 20,000 embeddings took the selector 1.7 s of a core that way, while the
/// first embedding pass wanted every core.
#[inline]
fn lanes_sum(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    const LANES: usize = 8;
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| term(*x, *y)).sum();
    let mut lanes = [0f32; LANES];
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            lanes[i] += term(x[i], y[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use binann_core::ranking::SplitMix64;

    use super::*;

    #[test]
    fn sums_in_lanes_equal_the_plain_sums() {
        let mut rng = SplitMix64(7);
        for len in [0, 1, 7, 8, 9, 32, 1920, 1923] {
            let mut draw = || (0..len).map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0).collect::<Vec<f32>>();
            let (a, b) = (draw(), draw());
            let plain_dot: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            let plain_distance: f64 = a.iter().zip(&b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
            assert!((f64::from(dot(&a, &b)) - plain_dot).abs() < 1e-3, "length {len}");
            assert!((f64::from(distance2(&a, &b)) - plain_distance).abs() < 1e-3, "length {len}");
        }
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
        assert_eq!(distance2(&[1.0; 9], &[3.0; 9]), 36.0);
    }

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
