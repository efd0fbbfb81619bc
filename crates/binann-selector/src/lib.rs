//! binann-selector: orders the unlabelled images for the server from the inferrer's predictions.
//!
//! - [`Strategy`]: the orderings (most probably positive first by default).
//! - [`select`]: one strategy applied to merged predictions.
//! - [`clusters`]: the visual kinds of the folder, for the order before the first positive and
//!   for exploring picks that visit every kind.

pub mod clusters;

use binann_core::ranking::{SplitMix64, shuffle_key};

/// How the ranking orders images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// Most probably positive first: finds a rare positive class fastest.
    MaxProbability,
    /// Closest to 0.5 first: what the model is least sure of.
    Entropy,
    /// Least probably positive first.
    MinProbability,
    /// A fixed-seed shuffle, ignoring the model (the baseline).
    Random,
    /// Mostly max-probability, with a share of exploring picks (`--explore`, of the kind
    /// `--explore-with` names) so the model does not tunnel on what it already knows.
    Mix,
}

impl Strategy {
    /// The name shown in the page and the ranking file: the option's spelling.
    pub fn name(self) -> String {
        binann_core::cli::value_name(&self)
    }
}

/// What the exploring picks of [`Strategy::Mix`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Explore {
    /// Closest to 0.5.
    Entropy,
    /// Uniformly random.
    Random,
    /// The most probable image of each visual kind in turn (clusters of the embeddings, smallest
    /// first): a second kind of positive is found while the first is still being labelled.
    Clusters,
}

/// Orders `(id, prob)` pairs by `strategy`. `explore` is the share of exploring picks for Mix;
/// `seed` makes random choices repeatable. `cluster_of` gives an id's visual kind for
/// [`Explore::Clusters`] (None everywhere: the exploring picks are by entropy instead).
pub fn select(
    ids: &[u32],
    probs: &[f32],
    strategy: Strategy,
    explore: f64,
    explore_with: Explore,
    seed: u64,
    cluster_of: &dyn Fn(u32) -> Option<u32>,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..ids.len()).collect();
    let by_prob_desc = |idx: &mut Vec<usize>| idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(ids[a].cmp(&ids[b])));
    let by_entropy =
        |idx: &mut Vec<usize>| idx.sort_by(|&a, &b| (probs[a] - 0.5).abs().total_cmp(&(probs[b] - 0.5).abs()).then(ids[a].cmp(&ids[b])));
    let shuffle = |idx: &mut Vec<usize>| idx.sort_by_cached_key(|&i| shuffle_key(seed, ids[i]));
    match strategy {
        Strategy::MaxProbability => by_prob_desc(&mut idx),
        Strategy::MinProbability => idx.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]).then(ids[a].cmp(&ids[b]))),
        Strategy::Entropy => by_entropy(&mut idx),
        Strategy::Random => shuffle(&mut idx),
        Strategy::Mix => {
            let mut exploit = idx.clone();
            by_prob_desc(&mut exploit);
            let mut other = idx;
            match explore_with {
                Explore::Entropy => by_entropy(&mut other),
                Explore::Random => shuffle(&mut other),
                Explore::Clusters => {
                    let groups: Vec<Option<u32>> = ids.iter().map(|id| cluster_of(*id)).collect();
                    if groups.iter().all(Option::is_none) {
                        by_entropy(&mut other)
                    } else {
                        other = clusters::round_robin(&groups, |i| -probs[i]);
                    }
                }
            }
            let mut taken = vec![false; ids.len()];
            let mut out = Vec::with_capacity(ids.len());
            let (mut a, mut b) = (0, 0);
            let mut rng = SplitMix64(seed);
            while out.len() < ids.len() {
                let pick_other = rng.next_f64() < explore;
                let (list, cursor) = if pick_other { (&other, &mut b) } else { (&exploit, &mut a) };
                while *cursor < list.len() && taken[list[*cursor]] {
                    *cursor += 1;
                }
                if let Some(&i) = list.get(*cursor) {
                    taken[i] = true;
                    out.push(i);
                }
            }
            return out;
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_order_as_named() {
        let ids = [10, 11, 12, 13, 14];
        let probs = [0.15, 0.9, 0.5, 0.6, 0.0];
        let order = |s| select(&ids, &probs, s, 0.0, Explore::Random, 1, &|_| None).iter().map(|&i| ids[i]).collect::<Vec<_>>();
        assert_eq!(order(Strategy::MaxProbability), [11, 13, 12, 10, 14]);
        assert_eq!(order(Strategy::MinProbability), [14, 10, 12, 13, 11]);
        assert_eq!(order(Strategy::Entropy), [12, 13, 10, 11, 14]);
        let mut r = order(Strategy::Random);
        assert_eq!(order(Strategy::Random), r);
        r.sort();
        assert_eq!(r, ids);
        // Mix without exploring is max-probability; with some, every id still appears once.
        assert_eq!(order(Strategy::Mix), order(Strategy::MaxProbability));
        let ids: Vec<u32> = (0..1000).collect();
        let probs: Vec<f32> = ids.iter().map(|i| *i as f32 / 1000.0).collect();
        let mix = select(&ids, &probs, Strategy::Mix, 0.2, Explore::Entropy, 7, &|_| None);
        let mut sorted = mix.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        let near_half = mix[..100].iter().filter(|&&i| (probs[i] - 0.5).abs() < 0.1).count();
        assert!((5..=40).contains(&near_half), "{near_half} exploring picks in the first 100");
    }

    #[test]
    fn exploring_by_clusters_visits_a_second_kind_early() {
        // Kind 0 (ids 0..500) has high probabilities; kind 1 (ids 500..1000) has lower ones, and
        // its best (id 999, 0.3) is far down the max-probability order.
        let ids: Vec<u32> = (0..1000).collect();
        let probs: Vec<f32> = ids.iter().map(|&i| if i < 500 { 0.5 + i as f32 / 1000.0 } else { (i - 500) as f32 / 1700.0 }).collect();
        let cluster = |id: u32| Some(u32::from(id >= 500));
        let without_exploring = select(&ids, &probs, Strategy::Mix, 0.0, Explore::Clusters, 3, &cluster);
        assert!(without_exploring[..500].iter().all(|&i| i < 500), "without exploring, kind 1 waits for kind 0");
        let mix = select(&ids, &probs, Strategy::Mix, 0.2, Explore::Clusters, 3, &cluster);
        let first_of_kind_1 = mix.iter().position(|&i| i >= 500).unwrap();
        assert!(first_of_kind_1 < 30, "kind 1 first shown at {first_of_kind_1}");
        assert_eq!(mix[first_of_kind_1], 999, "kind 1 by its most probable image");
        // Without clusters known, the exploring picks fall back to entropy.
        let fallback = select(&ids, &probs, Strategy::Mix, 0.2, Explore::Clusters, 3, &|_| None);
        assert_eq!(fallback, select(&ids, &probs, Strategy::Mix, 0.2, Explore::Entropy, 3, &|_| None));
    }
}
