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

    /// Whether the strategy puts the probable positives first: then, while the model calls
    /// nothing positive, the selector gives half the places to exploring picks.
    pub fn positives_first(self) -> bool {
        matches!(self, Strategy::MaxProbability | Strategy::Mix)
    }
}

/// The visual kinds of the folder as [`select`] sees them (see [`clusters`]).
pub struct Kinds<'a> {
    /// An image's cluster and its squared distance to the cluster's centre; None for an image
    /// not clustered yet.
    pub of: &'a dyn Fn(u32) -> Option<(u32, f32)>,
    /// Images per cluster, labelled or not.
    pub sizes: &'a [usize],
}

impl Kinds<'_> {
    /// No visual kinds known.
    pub const NONE: Kinds<'static> = Kinds { of: &|_| None, sizes: &[] };
}

/// What the exploring picks of [`Strategy::Mix`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Explore {
    /// Closest to 0.5.
    Entropy,
    /// Uniformly random.
    Random,
    /// The most typical image (nearest its cluster's centre) of the visual kinds labelled least so
    /// far, smallest first: a second kind of positive is found while the first is still being
    /// labelled, as the order before the first positive found the first.
    Clusters,
}

/// Orders `(id, logit)` pairs by `strategy` (the model's logits, not probabilities: they order
/// what a confident model's probabilities round to exactly 0 or 1). `explore` is the share of
/// exploring picks for Mix; `seed` makes random choices repeatable. `kinds` tells the visual kinds for
/// [`Explore::Clusters`] (none known: the exploring picks are by entropy instead). The `ids` are
/// the unlabelled images: a kind's labelled images are those of its size not among them.
pub fn select(
    ids: &[u32],
    logits: &[f32],
    strategy: Strategy,
    explore: f64,
    explore_with: Explore,
    seed: u64,
    kinds: &Kinds,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..ids.len()).collect();
    let by_prob_desc = |idx: &mut Vec<usize>| idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(ids[a].cmp(&ids[b])));
    // Nearest probability ½ is nearest logit 0.
    let by_entropy = |idx: &mut Vec<usize>| idx.sort_by(|&a, &b| logits[a].abs().total_cmp(&logits[b].abs()).then(ids[a].cmp(&ids[b])));
    let shuffle = |idx: &mut Vec<usize>| idx.sort_by_cached_key(|&i| shuffle_key(seed, ids[i]));
    match strategy {
        Strategy::MaxProbability => by_prob_desc(&mut idx),
        Strategy::MinProbability => idx.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(ids[a].cmp(&ids[b]))),
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
                    let members: Vec<Option<(u32, f32)>> = ids.iter().map(|id| (kinds.of)(*id)).collect();
                    if members.iter().all(Option::is_none) {
                        by_entropy(&mut other)
                    } else {
                        other = clusters::least_labelled_first(&members, kinds.sizes);
                    }
                }
            }
            return interleave(&exploit, &other, explore, seed);
        }
    }
    idx
}

/// `main` (an order of the indices `0..main.len()`) with the picks of `other` (indices into the
/// same list, in their own order) mixed in: each place is one of `other`'s with probability
/// `share` while it has any left, drawn anew for every ranking (`seed` is its generation). The
/// server hands out from the top of a ranking that is rewritten after nearly every label, so
/// places spaced evenly (every fifth) would almost never be reached; a fresh draw makes the top an
/// exploring pick at the share asked for. Every index appears once.
pub fn interleave(main: &[usize], other: &[usize], share: f64, seed: u64) -> Vec<usize> {
    let mut taken = vec![false; main.len()];
    let mut out = Vec::with_capacity(main.len());
    let (mut a, mut b) = (0, 0);
    let mut rng = SplitMix64(seed);
    while out.len() < main.len() {
        while b < other.len() && taken[other[b]] {
            b += 1;
        }
        let pick_other = rng.next_f64() < share && b < other.len();
        let (list, cursor) = if pick_other { (other, &mut b) } else { (main, &mut a) };
        while *cursor < list.len() && taken[list[*cursor]] {
            *cursor += 1;
        }
        if let Some(&i) = list.get(*cursor) {
            taken[i] = true;
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The logits of probabilities, as the inferrer stores them.
    fn logits(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| (p / (1.0 - p)).ln()).collect()
    }

    #[test]
    fn strategies_order_as_named() {
        let ids = [10, 11, 12, 13, 14];
        let probs = [0.15, 0.9, 0.5, 0.6, 0.0];
        let order = |s| select(&ids, &logits(&probs), s, 0.0, Explore::Random, 1, &Kinds::NONE).iter().map(|&i| ids[i]).collect::<Vec<_>>();
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
        let mix = select(&ids, &logits(&probs), Strategy::Mix, 0.2, Explore::Entropy, 7, &Kinds::NONE);
        let mut sorted = mix.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        let near_half = mix[..100].iter().filter(|&&i| (probs[i] - 0.5).abs() < 0.1).count();
        assert!((5..=40).contains(&near_half), "{near_half} exploring picks in the first 100");
    }

    #[test]
    fn interleave_mixes_in_the_other_picks_at_the_share_until_they_run_out() {
        let main: Vec<usize> = (0..100).collect();
        let other = [90, 91, 92, 93, 5];
        let out = interleave(&main, &other, 0.5, 11);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, main, "every index once");
        // The other picks come in their order, early (about every second place).
        let places: Vec<usize> = [90, 91, 92, 93].iter().map(|i| out.iter().position(|o| o == i).unwrap()).collect();
        assert!(places.windows(2).all(|w| w[0] < w[1]), "{places:?}");
        assert!(places[3] < 20, "{out:?}");
        // The rest keeps the main order.
        let rest: Vec<usize> = out.iter().copied().filter(|i| !other.contains(i)).collect();
        assert!(rest.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(interleave(&main, &other, 0.0, 11), main, "share 0: the main order");
        assert_eq!(interleave(&main, &[], 0.5, 11), main, "nothing to mix in");
    }

    #[test]
    fn the_top_of_each_ranking_explores_at_the_share() {
        // The server hands out the top of a ranking that is rewritten after nearly every label:
        // across generations, the first place must be an exploring pick at about the share.
        let ids: Vec<u32> = (0..100).collect();
        let probs: Vec<f32> = ids.iter().map(|i| 1.0 - *i as f32 / 100.0).collect();
        let exploring_tops = (1..=1000u64)
            .filter(|generation| {
                let order = select(&ids, &logits(&probs), Strategy::Mix, 0.2, Explore::Entropy, *generation, &Kinds::NONE);
                order[0] != 0 // not the most probable image
            })
            .count();
        assert!((150..=250).contains(&exploring_tops), "{exploring_tops} of 1000 rankings start with an exploring pick");
    }

    #[test]
    fn exploring_by_clusters_visits_the_kinds_labelled_least() {
        // Kind 0 (ids 0..500) has high probabilities. Kinds 1 and 2 (ids 500..750, 750..1000) have
        // low ones; 100 images of kind 1 are labelled already (its size is 350), none of kind 2.
        // Kind 2's most typical image is 900 (nearest its centre), kind 0's is 100.
        let ids: Vec<u32> = (0..1000).collect();
        let probs: Vec<f32> = ids.iter().map(|&i| if i < 500 { 0.5 + i as f32 / 1000.0 } else { (i - 500) as f32 / 1700.0 }).collect();
        let of = |id: u32| {
            let kind = (id / 250).saturating_sub(1).min(2);
            Some((kind, (id as f32 - if kind == 0 { 100.0 } else { 900.0 }).abs()))
        };
        let sizes = [500, 350, 250];
        let kinds = Kinds { of: &of, sizes: &sizes };
        let without_exploring = select(&ids, &logits(&probs), Strategy::Mix, 0.0, Explore::Clusters, 3, &kinds);
        assert!(without_exploring[..500].iter().all(|&i| i < 500), "without exploring, the other kinds wait for kind 0");
        let mix = select(&ids, &logits(&probs), Strategy::Mix, 0.2, Explore::Clusters, 3, &kinds);
        // The exploring picks, in order: kind 2's most typical image, then kind 0's (no label
        // either, but larger; its most probable images are exploiting picks), then kind 1's (100
        // labelled).
        let exploring: Vec<usize> = mix.iter().copied().filter(|i| !(400..500).contains(i)).take(3).collect();
        assert_eq!(exploring[0], 900, "the unlabelled kind first, by its most typical image");
        assert_eq!(exploring[1], 100, "then the next least labelled kind");
        assert!((500..750).contains(&exploring[2]), "the kind with labels last, got {}", exploring[2]);
        assert!(mix[..20].contains(&900), "an exploring pick among the first 20");
        // Without clusters known, the exploring picks fall back to entropy.
        let fallback = select(&ids, &logits(&probs), Strategy::Mix, 0.2, Explore::Clusters, 3, &Kinds::NONE);
        assert_eq!(fallback, select(&ids, &logits(&probs), Strategy::Mix, 0.2, Explore::Entropy, 3, &Kinds::NONE));
    }
}
