//! The orders that spread over the folder: [`farthest_first`] and [`diverse_order`] before the
//! first positive, [`Unexplored`] for the exploring picks while the model calls nothing positive,
//! and [`interleave`], which mixes two orders.

use std::collections::{HashMap, HashSet};

use binann_core::ranking::{SplitMix64, shuffle_key};

use crate::kmeans::Clusters;
use crate::sketch_cache::SketchCache;
use crate::{FIT_SAMPLE, SKETCH_DIM, Stored, distance2, fit_sample};

/// Most images [`farthest_first`] orders; past them the server's default order follows.
pub const FARTHEST_FIRST_PICKS: usize = 1024;

/// The first `count` rows of `values` (SKETCH_DIM each) in farthest-first order (greedy k-centre):
/// row 0 first, then each time the row farthest from every row picked so far. A kind of image
/// unlike the rest is reached as soon as it is the farthest thing left, whatever its size, and
/// no kind is shown twice while another is unvisited. Beyond 20,000 rows the traversal runs on a
/// fixed-stride sample, as k-means does (count × sample distances).
///
/// Measured by an offline simulation of the loop (the pass embedding at 370 images/s, the order
/// made again on every chunk, 5 labels/s, five 20,000-image folders with two kinds of positive at 1 %):
/// the first positive after 18 labels in the median (mean 22, worst 37), against 50 (mean 69,
/// worst 293) for one image of each k-means cluster in turn (one cluster per 16 images, smallest
/// first) and 79 in the pass's own order. Small clusters split a rare kind among common ones, and
/// the smallest-first order spends its first labels on odd single images. A kind that sits among
/// others ("dress" at 0.2 %) loses: on the five-depth embeddings no dress within 400
/// labels in most starts, against 77 for k-means and 112 for the pass's order, hence
/// [`diverse_order`] after the first [`FARTHEST_ALONE_LABELS`] labels.
pub fn farthest_first(values: &[Stored], count: usize) -> Vec<usize> {
    let (sample, sampled) = fit_sample(values);
    let row = |j: usize| &sampled[j * SKETCH_DIM..(j + 1) * SKETCH_DIM];
    k_centre(row, vec![f32::INFINITY; sample.len()], count).into_iter().map(|j| sample[j]).collect()
}

/// Share of the places of [`diverse_order`] that go to [`farthest_first`]; the rest go to
/// [`Clusters::round_robin`].
pub const DIVERSE_FARTHEST_SHARE: f64 = 0.5;

/// Labels before the first positive that [`farthest_first`] orders alone; past them the selector
/// switches to [`diverse_order`]. A kind unlike the rest comes within them (the first trouser or
/// ankle boot at 1 % after 20–50 labels), and the second kind of a folder is found sooner when
/// the first labels went to the outliers: with the mixed order from the first label, one draw
/// in five found no ankle boot in 400 labels (recall after 2 × 0.86 against 0.89, one run each).
pub const FARTHEST_ALONE_LABELS: usize = 64;

/// The order before the first positive, past its first [`FARTHEST_ALONE_LABELS`] labels: the
/// rows `clusters` was fitted on (`values`, SKETCH_DIM each), each place [`farthest_first`]'s
/// next pick (the first [`FARTHEST_FIRST_PICKS`]) with
/// probability [`DIVERSE_FARTHEST_SHARE`], otherwise [`Clusters::round_robin`]'s, drawn anew for
/// each `seed` (the ranking's generation). Every row appears once.
///
/// Neither order alone finds both the kinds unlike the rest and those among others. Measured by
/// the same offline simulation (the pass at 370 images/s, 5 labels/s, labels to the first
/// positive, median over 5 folders × 3 seeds): trouser and ankle boot at 1 % 25 farthest first,
/// 42 round robin, 38 for the two; "dress" at 0.2 %, which sits among coats and shirts, none
/// within 400 labels farthest first (it chases outliers: bags, sandals), 77 round robin, 93 for
/// the two, against 79 and 112 in the pass's own order.
pub fn diverse_order(clusters: &Clusters, values: &[Stored], seed: u64) -> Vec<usize> {
    interleave(&clusters.round_robin(), &farthest_first(values, FARTHEST_FIRST_PICKS), DIVERSE_FARTHEST_SHARE, seed)
}

/// Greedy k-centre over the points `0..nearest.len()` (`row` gives each one's sketch): up to
/// `count` of them, each the one farthest from every earlier pick and from what `nearest` holds
/// (each point's squared distance to the nearest point chosen before this call; infinite for
/// none). Ties go to the lower point, so with nothing chosen before, point 0 comes first.
fn k_centre<'a>(row: impl Fn(usize) -> &'a [f32], mut nearest: Vec<f32>, count: usize) -> Vec<usize> {
    let count = count.min(nearest.len());
    let mut out = Vec::with_capacity(count);
    let first_max = |nearest: &[f32]| {
        let mut farthest = (f32::NEG_INFINITY, 0usize);
        for (j, d) in nearest.iter().enumerate() {
            if *d > farthest.0 {
                farthest = (*d, j);
            }
        }
        farthest.1
    };
    let mut next = first_max(&nearest);
    while out.len() < count {
        out.push(next);
        nearest[next] = f32::NEG_INFINITY; // picked
        let picked = row(next);
        for (j, d) in nearest.iter_mut().enumerate() {
            if *d != f32::NEG_INFINITY {
                *d = d.min(distance2(row(j), picked));
            }
        }
        next = first_max(&nearest);
    }
    out
}

/// Seed of the hash that picks [`Unexplored`]'s candidates.
const CANDIDATE_SEED: u64 = 0x0E8_910E;

/// How far the embedded images are from the nearest labelled one, kept up to date label by label:
/// [`Unexplored::farthest`] continues [`farthest_first`] from the labels, to explore where the
/// person has not looked.
#[derive(Debug, Default)]
pub struct Unexplored {
    /// The candidate images: about 20,000 of the sketches (more once the folder has grown past
    /// that: the candidates chosen before stay).
    ids: Vec<u32>,
    /// Their sketches, SKETCH_DIM values each (copied: the sketch cache reorders as it grows).
    rows: Vec<f32>,
    /// Each candidate's squared distance to the nearest labelled image folded in (infinite before
    /// any).
    nearest: Vec<f32>,
    /// The candidates' ids, to add only new ones.
    known: HashSet<u32>,
    /// Labelled images folded in.
    folded: HashSet<u32>,
    /// Their sketches, to measure new candidates against.
    folded_rows: Vec<f32>,
}

impl Unexplored {
    /// Folds in the images of `labelled` not folded before (those without a sketch wait until
    /// they have one) and measures the candidates not measured before. Each new label costs one
    /// distance per candidate; a label undone stays folded in (its neighbours look a little more
    /// explored than they are).
    pub fn update(&mut self, sketches: &SketchCache, labelled: &[u32]) {
        // Each image is a candidate when its hash falls under a threshold that shrinks as the
        // folder grows (about 20,000 of n): the sets are nested, so earlier candidates stay.
        let threshold = u64::MAX / sketches.len().div_ceil(FIT_SAMPLE).max(1) as u64;
        for i in 0..sketches.len() {
            let id = sketches.ids[i];
            if shuffle_key(CANDIDATE_SEED, id) <= threshold && self.known.insert(id) {
                let row = sketches.row(i);
                self.nearest.push(self.folded_rows.chunks_exact(SKETCH_DIM).map(|f| distance2(&row, f)).fold(f32::INFINITY, f32::min));
                self.ids.push(id);
                self.rows.extend_from_slice(&row);
            }
        }
        let new: Vec<u32> = labelled.iter().copied().filter(|id| !self.folded.contains(id)).collect();
        if new.is_empty() {
            return;
        }
        // The new labels' rows only: a map of every sketch would cost 40 MB and 50 ms a label at
        // a million images.
        let wanted: HashSet<u32> = new.iter().copied().collect();
        let row_of: HashMap<u32, usize> =
            sketches.ids.iter().enumerate().filter(|(_, id)| wanted.contains(id)).map(|(i, id)| (*id, i)).collect();
        for id in new {
            let Some(&r) = row_of.get(&id) else { continue };
            self.folded.insert(id);
            let row = sketches.row(r);
            self.folded_rows.extend_from_slice(&row);
            for (d, c) in self.nearest.iter_mut().zip(self.rows.chunks_exact(SKETCH_DIM)) {
                *d = d.min(distance2(c, &row));
            }
        }
    }

    /// Up to `count` candidates that `eligible` accepts (and not labelled), each the farthest from
    /// every labelled image and every earlier pick (greedy k-centre continued from the labels);
    /// ties by id.
    pub fn farthest(&self, eligible: impl Fn(u32) -> bool, count: usize) -> Vec<u32> {
        let row = |i: usize| &self.rows[i * SKETCH_DIM..(i + 1) * SKETCH_DIM];
        let mut pool: Vec<usize> = (0..self.ids.len()).filter(|&i| eligible(self.ids[i]) && !self.folded.contains(&self.ids[i])).collect();
        pool.sort_unstable_by_key(|&i| self.ids[i]); // k_centre breaks ties by position: by id
        let nearest = pool.iter().map(|&i| self.nearest[i]).collect();
        k_centre(|p| row(pool[p]), nearest, count).into_iter().map(|p| self.ids[pool[p]]).collect()
    }
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
    use crate::tests::blobs;

    #[test]
    fn the_order_before_the_first_positive_mixes_both_orders_and_covers_every_blob() {
        let sizes = [200, 200, 200, 200, 200, 100, 100, 5];
        let (values, truth) = blobs(&sizes, 3);
        let clusters = Clusters::fit(&values, 2 * sizes.len(), 1);
        let k = clusters.sizes.iter().filter(|s| **s > 0).count();
        let farthest = farthest_first(&values, FARTHEST_FIRST_PICKS);
        let round_robin = clusters.round_robin();
        let mut orders = Vec::new();
        for seed in 1..=5 {
            let order = diverse_order(&clusters, &values, seed);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..truth.len()).collect::<Vec<_>>(), "seed {seed}: every row exactly once");
            // Within two turns of the clusters, either order has had a full turn of its own.
            let seen: std::collections::HashSet<usize> = order[..2 * k].iter().map(|i| truth[*i]).collect();
            assert_eq!(seen.len(), sizes.len(), "seed {seed}: the first {} places cover blobs {seen:?}", 2 * k);
            assert_eq!(diverse_order(&clusters, &values, seed), order, "repeatable");
            orders.push(order);
        }
        // Both orders contribute to the first places: over the five draws, the first 20 places
        // hold some of farthest first's first picks and some of the round robin's.
        let firsts: Vec<usize> = orders.iter().flat_map(|o| o[..20].to_vec()).collect();
        assert!(firsts.iter().any(|i| farthest[..10].contains(i) && !round_robin[..10].contains(i)));
        assert!(firsts.iter().any(|i| round_robin[..10].contains(i) && !farthest[..10].contains(i)));
        assert_ne!(orders[0], orders[1], "drawn anew for each ranking");
    }

    #[test]
    fn farthest_first_reaches_every_blob_before_repeating_one() {
        // Eight blobs, one of them rare (5 of 1,205 points), listed blob by blob.
        let sizes = [200, 200, 200, 200, 200, 100, 100, 5];
        let (values, truth) = blobs(&sizes, 3);
        let order = farthest_first(&values, 100);
        assert_eq!(order.len(), 100);
        let first_turn: std::collections::HashSet<usize> = order[..sizes.len()].iter().map(|i| truth[*i]).collect();
        assert_eq!(first_turn.len(), sizes.len(), "the first {} picks cover every blob, the rare one included", sizes.len());
        let distinct: std::collections::HashSet<usize> = order.iter().copied().collect();
        assert_eq!(distinct.len(), order.len(), "no row twice");
        assert_eq!(farthest_first(&values, 100), order, "repeatable");
        assert_eq!(farthest_first(&values, 5000).len(), truth.len(), "at most every row");
        assert!(farthest_first(&[], 10).is_empty());
    }

    #[test]
    fn unexplored_picks_the_blobs_nobody_labelled_first() {
        // Eight blobs, one of them rare; labels in blobs 0..6 only.
        let sizes = [200, 200, 200, 200, 200, 100, 100, 5];
        let (values, truth) = blobs(&sizes, 5);
        let sketches = SketchCache { ids: (0..truth.len() as u32).collect(), values, ..Default::default() };
        let labelled: Vec<u32> = (0..truth.len() as u32).filter(|i| truth[*i as usize] < 6 && i % 50 == 0).collect();
        let mut unexplored = Unexplored::default();
        unexplored.update(&sketches, &labelled);
        let picks = unexplored.farthest(|_| true, 2);
        let kinds: std::collections::HashSet<usize> = picks.iter().map(|id| truth[*id as usize]).collect();
        assert_eq!(kinds, [6, 7].into(), "the two unlabelled blobs first: {picks:?}");
        assert!(picks.iter().all(|p| !labelled.contains(p)));
        // Once blob 6 is labelled too, the rare blob comes first; what `eligible` refuses never.
        let more: Vec<u32> = (0..truth.len() as u32).filter(|i| truth[*i as usize] == 6 && i % 20 == 0).collect();
        unexplored.update(&sketches, &more);
        assert_eq!(truth[unexplored.farthest(|_| true, 1)[0] as usize], 7);
        let not_rare = unexplored.farthest(|id| truth[id as usize] != 7, 3);
        assert!(not_rare.iter().all(|id| truth[*id as usize] != 7), "{not_rare:?}");
        // Folding the same labels again changes nothing.
        let before = unexplored.farthest(|_| true, 5);
        unexplored.update(&sketches, &labelled);
        assert_eq!(unexplored.farthest(|_| true, 5), before);
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
}
