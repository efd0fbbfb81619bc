//! The visual kinds of a folder: k-means clusters of the sketches, and the order that takes one
//! image of each in turn.

use std::collections::HashMap;

use binann_core::ranking::SplitMix64;

use crate::{SKETCH_DIM, Stored, distance2, fit_sample, row_of};

/// Lloyd rounds.
const ROUNDS: usize = 12;

/// The number of clusters for `n` images: one per 16 images, 8 to 256. k-means with few clusters
/// merges a rare kind into a common one.
pub fn cluster_count(n: usize) -> usize {
    (n / 16).clamp(8, 256).min(n.max(1))
}

/// A clustering of sketches.
#[derive(Debug, Clone)]
pub struct Clusters {
    /// The cluster of each row.
    pub assignment: Vec<u32>,
    /// Squared distance of each row to its cluster's centre.
    pub distance: Vec<f32>,
    /// Rows per cluster.
    pub sizes: Vec<usize>,
}

impl Clusters {
    /// k-means of the rows of `values` (SKETCH_DIM each) into `k` clusters, repeatable for a seed.
    pub fn fit(values: &[Stored], k: usize, seed: u64) -> Self {
        let n = values.len() / SKETCH_DIM;
        let k = k.clamp(1, n.max(1));
        if n == 0 {
            return Self { assignment: Vec::new(), distance: Vec::new(), sizes: vec![0; k] };
        }
        let mut rng = SplitMix64(seed ^ 0xC1u64);
        // `row(j)`: sample row j, in single precision.
        let (sample, sampled) = fit_sample(values);
        let row = |j: usize| &sampled[j * SKETCH_DIM..(j + 1) * SKETCH_DIM];
        // k-means++ seeding: each next centre drawn with probability ∝ squared distance.
        let mut centres: Vec<f32> = row((rng.next_u64() % sample.len() as u64) as usize).to_vec();
        let mut nearest: Vec<f32> = (0..sample.len()).map(|j| distance2(row(j), &centres[..SKETCH_DIM])).collect();
        while centres.len() / SKETCH_DIM < k {
            let total: f64 = nearest.iter().map(|d| f64::from(*d)).sum();
            let pick = if total > 0.0 {
                let mut target = rng.next_f64() * total;
                let mut chosen = sample.len() - 1;
                for (j, d) in nearest.iter().enumerate() {
                    target -= f64::from(*d);
                    if target <= 0.0 {
                        chosen = j;
                        break;
                    }
                }
                chosen
            } else {
                (rng.next_u64() % sample.len() as u64) as usize
            };
            let c = row(pick).to_vec();
            for (j, d) in nearest.iter_mut().enumerate() {
                *d = d.min(distance2(row(j), &c));
            }
            centres.extend_from_slice(&c);
        }
        let assign = |centres: &[f32], row: &[f32]| -> (u32, f32) {
            let mut best = (0u32, f32::INFINITY);
            for (c, centre) in centres.chunks_exact(SKETCH_DIM).enumerate() {
                let d = distance2(row, centre);
                if d < best.1 {
                    best = (c as u32, d);
                }
            }
            best
        };
        for _ in 0..ROUNDS {
            let mut sums = vec![0f32; k * SKETCH_DIM];
            let mut counts = vec![0usize; k];
            for j in 0..sample.len() {
                let (c, _) = assign(&centres, row(j));
                counts[c as usize] += 1;
                for (s, v) in sums[c as usize * SKETCH_DIM..(c as usize + 1) * SKETCH_DIM].iter_mut().zip(row(j)) {
                    *s += v;
                }
            }
            for c in 0..k {
                if counts[c] > 0 {
                    for j in 0..SKETCH_DIM {
                        centres[c * SKETCH_DIM + j] = sums[c * SKETCH_DIM + j] / counts[c] as f32;
                    }
                }
            }
        }
        let (assignment, distance): (Vec<u32>, Vec<f32>) = (0..n).map(|i| assign(&centres, &row_of(values, i))).unzip();
        let mut sizes = vec![0usize; k];
        for c in &assignment {
            sizes[*c as usize] += 1;
        }
        Self { assignment, distance, sizes }
    }

    /// Rows in turns, each turn one row of every cluster, the smallest clusters first (unusual
    /// images come early); within a cluster, its rows nearest the centre first (ties by row).
    pub fn round_robin(&self) -> Vec<usize> {
        let mut members: HashMap<u32, Vec<usize>> = HashMap::new();
        for (row, cluster) in self.assignment.iter().enumerate() {
            members.entry(*cluster).or_default().push(row);
        }
        let mut lists: Vec<(u32, Vec<usize>)> = members.into_iter().collect();
        for (_, rows) in &mut lists {
            rows.sort_by(|&a, &b| self.distance[a].total_cmp(&self.distance[b]).then(a.cmp(&b)));
        }
        lists.sort_by_key(|(cluster, rows)| (rows.len(), *cluster));
        let longest = lists.iter().map(|(_, rows)| rows.len()).max().unwrap_or(0);
        let mut out = Vec::with_capacity(self.assignment.len());
        for turn in 0..longest {
            out.extend(lists.iter().filter_map(|(_, rows)| rows.get(turn)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::blobs;

    #[test]
    fn the_round_robin_reaches_every_cluster_before_repeating_one() {
        // Eight blobs, one of them rare (5 of 1,205 points), listed blob by blob; twice as many
        // clusters as blobs, as cluster_count over-clusters.
        let sizes = [200, 200, 200, 200, 200, 100, 100, 5];
        let (values, truth) = blobs(&sizes, 3);
        for seed in 1..=5 {
            let clusters = Clusters::fit(&values, 2 * sizes.len(), seed);
            let order = clusters.round_robin();
            let k = clusters.sizes.iter().filter(|s| **s > 0).count();
            // One turn: every cluster once before any twice.
            let first_turn: std::collections::HashSet<u32> = order[..k].iter().map(|i| clusters.assignment[*i]).collect();
            assert_eq!(first_turn.len(), k, "seed {seed}");
            let blobs_seen: std::collections::HashSet<usize> = order[..k].iter().map(|i| truth[*i]).collect();
            assert_eq!(blobs_seen.len(), sizes.len(), "seed {seed}: the first {k} picks cover blobs {blobs_seen:?}");
            // The rare blob, the smallest cluster, comes first.
            assert_eq!(truth[order[0]], 7, "seed {seed}");
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..truth.len()).collect::<Vec<_>>(), "every row exactly once");
            // Repeatable.
            assert_eq!(Clusters::fit(&values, 2 * sizes.len(), seed).assignment, clusters.assignment);
        }
    }
}
