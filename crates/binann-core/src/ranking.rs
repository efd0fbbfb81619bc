//! The ranking: the order in which the server hands images out, with each image's probability.

use serde::{Deserialize, Serialize};

use crate::codec::{self, FileKind};
use crate::predictions::ModelInfo;

/// The order the server serves images in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    /// Image ids, first to show first.
    pub ids: Vec<u32>,
    /// The model's probability for each entry of `ids`, or NaN where there is none.
    pub probs: Vec<f32>,
    /// The strategy that ordered them (e.g. "max-probability").
    pub selector: String,
    /// The model behind the probabilities, if any.
    pub model: Option<ModelInfo>,
    /// How many images have a probability (across all shards).
    pub predicted: u64,
    /// When the ranking was written (ms since the epoch).
    pub created_ms: u64,
}

impl codec::RunDirFile for Ranking {
    const KIND: FileKind = FileKind::Ranking;
}

/// Seed of [`default_order`] as every process uses it (the server hands images out in this order
/// and the inferrer embeds them in it, so the first labels find their embeddings ready).
pub const DEFAULT_ORDER_SEED: u64 = 0;

/// The order used before any model exists: ids `0..n` shuffled with a fixed seed, so every process
/// and every restart agrees on it. Each id's place comes from a hash of the id alone, so images
/// added to the dataset later slot in without reordering the ones already there.
pub fn default_order(n: usize, seed: u64) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..n as u32).collect();
    ids.sort_by_cached_key(|id| shuffle_key(seed, *id));
    ids
}

/// A pseudo-random sort key for image `id` that depends on nothing else: sorting by it shuffles,
/// and images added later do not move the others.
pub fn shuffle_key(seed: u64, id: u32) -> u64 {
    SplitMix64(seed ^ (u64::from(id) << 20)).next_u64()
}

/// A tiny, fully specified PRNG: the default order must not change when a dependency's does.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_order_is_a_fixed_permutation() {
        let a = default_order(1000, 0);
        assert_eq!(a, default_order(1000, 0));
        assert_ne!(a, default_order(1000, 1));
        assert_ne!(a, (0..1000).collect::<Vec<u32>>());
        // Growing the dataset keeps the relative order of the images already there.
        let grown: Vec<u32> = default_order(1100, 0).into_iter().filter(|id| *id < 1000).collect();
        assert_eq!(grown, a);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
    }
}
