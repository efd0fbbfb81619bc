//! The visual kinds of a folder: clusters of the backbone embeddings, and orders that visit them.
//!
//! Rare positives are found by showing every kind of image early. Before the first positive the
//! model knows nothing, and a random order needs about 1 / prevalence labels per positive; an order
//! that shows each time the image least like all those shown so far reaches a kind unlike the rest
//! as soon as it is the farthest thing left. Once a model exists, visiting the clusters in turn
//! finds a second kind of positive that pure max-probability ordering would leave until the first
//! kind is exhausted (`mix` with `clusters`).
//!
//! - [`SketchCache`]: each embedding reduced to [`SKETCH_DIM`] values twice, by a fixed random
//!   [`Projection`] (for the orders) and onto the principal directions of the first chunk's
//!   embeddings (for nearest neighbours; 1,000,000 images fit in 128 MB each), read chunk by chunk
//!   and cached per chunk file; written to the run directory as [`binann_core::sketches::Sketches`]
//!   for the server's "more like this" and look-alikes.
//! - [`Clusters::fit`]: k-means (k-means++ seeding, a few Lloyd rounds on a sample, one assignment
//!   pass over everything).
//! - [`Clusters::round_robin`]: one image of each cluster in turn.
//! - [`diverse_order`]: the order before the first positive, [`farthest_first`] and
//!   [`Clusters::round_robin`] half the places each.
//! - [`farthest_first`]: each next image the one farthest
//!   from every image shown so far.
//! - [`Unexplored`]: the same continued from the labelled images, for the exploring picks while
//!   the model calls nothing positive.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use binann_core::RunDirFile;
use binann_core::embeddings::EmbeddingChunk;
use binann_core::ranking::{SplitMix64, shuffle_key};

pub use binann_core::sketches::SKETCH_DIM;

/// Most images k-means is fitted on (the rest are only assigned).
const FIT_SAMPLE: usize = 20_000;

/// Lloyd rounds.
const ROUNDS: usize = 12;

/// The number of clusters for `n` images: one per 16 images, 8 to 256. k-means with few clusters
/// merges a rare kind into a common one. They serve the exploring picks of `mix`; the order
/// before the first positive is [`diverse_order`].
pub fn cluster_count(n: usize) -> usize {
    (n / 16).clamp(8, 256).min(n.max(1))
}

/// The linear map from an embedding to its sketch: the embedding made unit-length, less `mean`,
/// onto the SKETCH_DIM rows of `basis`.
#[derive(Debug, Clone)]
pub struct Projection {
    /// Values per embedding.
    dim: usize,
    /// Subtracted from each unit-length embedding (zero for the random projection).
    mean: Vec<f32>,
    /// SKETCH_DIM rows of `dim` values.
    basis: Vec<f32>,
}

/// Rows the principal directions are fitted on at most.
const PRINCIPAL_FIT_ROWS: usize = 4096;

impl Projection {
    /// A fixed random projection: SKETCH_DIM × `dim` signs, scaled so that lengths are kept on
    /// average (for too few embeddings to fit [`Projection::principal`]).
    pub fn random(dim: usize) -> Self {
        let mut rng = SplitMix64(0x005E_ED0F_B1A5);
        let scale = 1.0 / (SKETCH_DIM as f32).sqrt();
        let basis = (0..SKETCH_DIM * dim).map(|_| if rng.next_u64() & 1 == 0 { scale } else { -scale }).collect();
        Self { dim, mean: vec![0.0; dim], basis }
    }

    /// The SKETCH_DIM principal directions of the unit-length `rows` (`dim` values each; the first
    /// 4,096 rows), by subspace iteration; the random projection for fewer than 2 × SKETCH_DIM
    /// non-zero rows. Repeatable: the same rows give the same projection.
    ///
    /// Why: random signs keep distances only roughly in 32 values, and the nearest images of a
    /// positive are what look-alikes and exploring rest on. Over the benchmark's folders, on the
    /// final map's 1,280 values (the embedding before the five depths), of an ankle boot's 8
    /// nearest images 37 % were ankle boots with random signs, 52 % with the principal directions
    /// of the first 256 embeddings (as many as from 4,096), and 57 % in the full 1,280 values.
    pub fn principal(rows: &[f32], dim: usize) -> Self {
        let units: Vec<Vec<f32>> = rows
            .chunks_exact(dim)
            .filter_map(|r| {
                let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                (norm > 0.0).then(|| r.iter().map(|v| v / norm).collect())
            })
            .take(PRINCIPAL_FIT_ROWS)
            .collect();
        if units.len() < 2 * SKETCH_DIM {
            return Self::random(dim);
        }
        let mut mean = vec![0f32; dim];
        for u in &units {
            for (m, v) in mean.iter_mut().zip(u) {
                *m += v / units.len() as f32;
            }
        }
        let centred: Vec<Vec<f32>> = units.iter().map(|u| u.iter().zip(&mean).map(|(v, m)| v - m).collect()).collect();
        let mut basis = Self::random(dim).basis;
        for _ in 0..SUBSPACE_ROUNDS {
            // basis <- Xᵀ X basis, then orthonormal again (Gram-Schmidt).
            let mut next = vec![0f32; SKETCH_DIM * dim];
            for x in &centred {
                for (j, b) in basis.chunks_exact(dim).enumerate() {
                    let p: f32 = x.iter().zip(b).map(|(a, c)| a * c).sum();
                    for (n, v) in next[j * dim..(j + 1) * dim].iter_mut().zip(x) {
                        *n += p * v;
                    }
                }
            }
            for j in 0..SKETCH_DIM {
                let (done, rest) = next.split_at_mut(j * dim);
                let row = &mut rest[..dim];
                for earlier in done.chunks_exact(dim) {
                    let p: f32 = row.iter().zip(earlier).map(|(a, b)| a * b).sum();
                    for (v, e) in row.iter_mut().zip(earlier) {
                        *v -= p * e;
                    }
                }
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                // A direction with no variance left (fewer distinct rows than SKETCH_DIM) is zero:
                // its sketch value is 0 for every image.
                let scale = if norm > 1e-12 { 1.0 / norm } else { 0.0 };
                row.iter_mut().for_each(|v| *v *= scale);
            }
            basis = next;
        }
        Self { dim, mean, basis }
    }

    /// The sketches of `rows` (row-major, `dim` values each). A zero row (an image that failed to
    /// decode) stays at the origin.
    pub fn apply(&self, rows: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; rows.len() / self.dim * SKETCH_DIM];
        for (r, row) in rows.chunks_exact(self.dim).enumerate() {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm == 0.0 {
                continue;
            }
            let centred: Vec<f32> = row.iter().zip(&self.mean).map(|(v, m)| v / norm - m).collect();
            for (o, b) in out[r * SKETCH_DIM..(r + 1) * SKETCH_DIM].iter_mut().zip(self.basis.chunks_exact(self.dim)) {
                *o = centred.iter().zip(b).map(|(a, c)| a * c).sum();
            }
        }
        out
    }
}

/// Rounds of subspace iteration for [`Projection::principal`].
const SUBSPACE_ROUNDS: usize = 30;

/// Sketches of embedded images, in no particular order.
#[derive(Debug, Default)]
pub struct SketchCache {
    /// Image ids.
    pub ids: Vec<u32>,
    /// `ids.len()` rows of SKETCH_DIM values by the fixed random projection: what the orders
    /// that spread over the folder work on (k-means, farthest first, [`Unexplored`]).
    pub values: Vec<f32>,
    /// The same rows by the principal directions of the first chunk file of their model: what
    /// nearest-neighbour searches work on (the sketch file: "more like this", look-alikes).
    ///
    /// Two projections because each serves one purpose better. Over the benchmark's folders (on
    /// the final map's 1,280 values, before the five depths), of an ankle boot's 8 nearest images
    /// 52 % were ankle boots by the principal directions and 37 % by random signs (57 % in the
    /// full 1,280 values); but farthest first by the principal
    /// directions chases the ends of their main axes, and found the first positive after 54 labels
    /// on average against 22 by random signs (`examples/cold_sim.rs`; "dress": 212 against 127).
    pub neighbours: Vec<f32>,
    /// The model of the chunks the sketches come from (the newest chunk's).
    model: Option<String>,
    /// Chunk files already read.
    cache: HashMap<PathBuf, CachedChunk>,
    /// The principal projection, fitted on the first chunk file of the newest model (its path and
    /// modification time): every run of the selector fits the same one, and all sketches share it.
    principal: Option<(PathBuf, Option<SystemTime>, Projection)>,
}

/// A chunk file's sketches.
#[derive(Debug)]
struct CachedChunk {
    /// The file's modification time when read.
    modified: Option<SystemTime>,
    /// The model that embedded it.
    model: String,
    /// Its images.
    ids: Vec<u32>,
    /// Their sketches by the random projection.
    values: Vec<f32>,
    /// Their sketches by the principal projection.
    neighbours: Vec<f32>,
}

impl SketchCache {
    /// Reads the chunk files of `dir` that are new or changed since the last call, and rebuilds
    /// the sketch list from the chunks of the newest chunk's model (a chunk of an older model, left
    /// from a change of input size or of the embedding, is ignored as the inferrer ignores it).
    /// Returns whether anything changed. Unreadable chunks are skipped with a warning.
    ///
    /// The principal directions are fitted on the first chunk file of the newest model: in a run
    /// directory that still holds an older model's chunks, fitted on those they would have another
    /// width, and every new chunk's neighbours would fall back to random signs.
    pub fn refresh(&mut self, dir: &Path) -> bool {
        let files = EmbeddingChunk::files(dir);
        if self.principal.is_none()
            && let Some((first, modified)) = files.first()
        {
            self.fit_principal(first, *modified);
        }
        let before = self.cache.len();
        self.cache.retain(|path, _| files.iter().any(|(p, _)| p == path));
        let mut changed = self.cache.len() != before;
        changed |= self.read_changed(&files);
        let newest = self.newest_model();
        let source = files.iter().find(|(path, _)| self.cache.get(path).map(|c| &c.model) == newest.as_ref());
        if let Some((path, modified)) = source
            && self.principal.as_ref().is_none_or(|(p, m, _)| (p, m) != (path, modified))
            && self.fit_principal(path, *modified)
        {
            self.cache.clear(); // every chunk is sketched again with it
            self.read_changed(&files);
            changed = true;
        }
        if changed {
            let newest = self.newest_model();
            self.model.clone_from(&newest);
            self.ids.clear();
            self.values.clear();
            self.neighbours.clear();
            let mut seen = std::collections::HashSet::new();
            let mut paths: Vec<&PathBuf> = self.cache.keys().collect();
            paths.sort();
            for path in paths {
                let c = &self.cache[path];
                if Some(&c.model) != newest.as_ref() {
                    continue;
                }
                for (i, id) in c.ids.iter().enumerate() {
                    if seen.insert(*id) {
                        self.ids.push(*id);
                        self.values.extend_from_slice(&c.values[i * SKETCH_DIM..(i + 1) * SKETCH_DIM]);
                        self.neighbours.extend_from_slice(&c.neighbours[i * SKETCH_DIM..(i + 1) * SKETCH_DIM]);
                    }
                }
            }
        }
        changed
    }

    /// The model of the newest chunk read.
    fn newest_model(&self) -> Option<String> {
        self.cache.iter().max_by_key(|(path, c)| (c.modified, (*path).clone())).map(|(_, c)| c.model.clone())
    }

    /// Fits the principal directions on the chunk file `path`; false when it is unreadable (the
    /// projection in use stays).
    fn fit_principal(&mut self, path: &Path, modified: Option<SystemTime>) -> bool {
        match EmbeddingChunk::load(path) {
            Ok((_, chunk)) => {
                let principal = Projection::principal(&chunk.floats(), chunk.dim as usize);
                self.principal = Some((path.to_owned(), modified, principal));
                true
            }
            Err(e) => {
                tracing::warn!("an embedding chunk is unreadable (the sketches' principal directions wait for it): {e}");
                false
            }
        }
    }

    /// Sketches the chunk files that are new or changed since they were read; true if any was.
    fn read_changed(&mut self, files: &[(PathBuf, Option<SystemTime>)]) -> bool {
        let mut changed = false;
        for (path, modified) in files {
            if self.cache.get(path).is_some_and(|c| c.modified == *modified) {
                continue;
            }
            match EmbeddingChunk::load(path).map(|(_, chunk)| chunk) {
                Ok(chunk) => {
                    let floats = chunk.floats();
                    let dim = chunk.dim as usize;
                    let random = Projection::random(dim).apply(&floats);
                    // A chunk of another model may have another width: its neighbours by the
                    // random projection then.
                    let neighbours = match &self.principal {
                        Some((_, _, principal)) if principal.dim == dim => principal.apply(&floats),
                        _ => random.clone(),
                    };
                    self.cache.insert(
                        path.clone(),
                        CachedChunk { modified: *modified, model: chunk.model, ids: chunk.ids, values: random, neighbours },
                    );
                    changed = true;
                }
                Err(e) => tracing::warn!("skipping an unreadable embedding chunk: {e}"),
            }
        }
        changed
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * SKETCH_DIM..(i + 1) * SKETCH_DIM]
    }

    /// Number of sketches.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The model of the chunks the sketches come from.
    ///
    /// (Not the model of whichever chunk holds the first image: after a change of model the same
    /// image is in an older chunk too.)
    pub fn model(&self) -> Option<&str> {
        if self.ids.is_empty() { None } else { self.model.as_deref() }
    }

    /// The file the server searches for "more like this" and look-alikes: the [`Self::neighbours`].
    pub fn to_file(&self) -> binann_core::sketches::Sketches {
        binann_core::sketches::Sketches::quantise(self.ids.clone(), &self.neighbours, self.model().unwrap_or_default().to_owned())
    }
}

fn distance2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
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
    pub fn fit(values: &[f32], k: usize, seed: u64) -> Self {
        let n = values.len() / SKETCH_DIM;
        let row = |i: usize| &values[i * SKETCH_DIM..(i + 1) * SKETCH_DIM];
        let k = k.clamp(1, n.max(1));
        if n == 0 {
            return Self { assignment: Vec::new(), distance: Vec::new(), sizes: vec![0; k] };
        }
        let mut rng = SplitMix64(seed ^ 0xC1u64);
        // A fixed-stride sample: every image has the same chance, and no RNG state is needed.
        let stride = n.div_ceil(FIT_SAMPLE).max(1);
        let sample: Vec<usize> = (0..n).step_by(stride).collect();
        // k-means++ seeding: each next centre drawn with probability ∝ squared distance.
        let mut centres: Vec<f32> = row(sample[(rng.next_u64() % sample.len() as u64) as usize]).to_vec();
        let mut nearest: Vec<f32> = sample.iter().map(|&i| distance2(row(i), &centres[..SKETCH_DIM])).collect();
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
            let c = row(sample[pick]).to_vec();
            for (j, &i) in sample.iter().enumerate() {
                nearest[j] = nearest[j].min(distance2(row(i), &c));
            }
            centres.extend_from_slice(&c);
        }
        let assign = |centres: &[f32], i: usize| -> (u32, f32) {
            let mut best = (0u32, f32::INFINITY);
            for (c, centre) in centres.chunks_exact(SKETCH_DIM).enumerate() {
                let d = distance2(row(i), centre);
                if d < best.1 {
                    best = (c as u32, d);
                }
            }
            best
        };
        for _ in 0..ROUNDS {
            let mut sums = vec![0f32; k * SKETCH_DIM];
            let mut counts = vec![0usize; k];
            for &i in &sample {
                let (c, _) = assign(&centres, i);
                counts[c as usize] += 1;
                for (s, v) in sums[c as usize * SKETCH_DIM..(c as usize + 1) * SKETCH_DIM].iter_mut().zip(row(i)) {
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
        let (assignment, distance): (Vec<u32>, Vec<f32>) = (0..n).map(|i| assign(&centres, i)).unzip();
        let mut sizes = vec![0usize; k];
        for c in &assignment {
            sizes[*c as usize] += 1;
        }
        Self { assignment, distance, sizes }
    }

    /// Rows in turns, smallest clusters first, each cluster's rows nearest its centre first.
    pub fn round_robin(&self) -> Vec<usize> {
        let groups: Vec<Option<u32>> = self.assignment.iter().map(|c| Some(*c)).collect();
        round_robin(&groups, |i| self.distance[i])
    }
}

/// Items in turns: each turn takes the next item of every group, smallest groups first (unusual
/// images come early); within a group, items by `key` ascending (ties by index). Items of no group
/// come last, by `key`.
pub fn round_robin(groups: &[Option<u32>], key: impl Fn(usize) -> f32) -> Vec<usize> {
    in_turns(groups, key, |_, members| (members, 0))
}

/// The exploring picks' order: in turns, one image of every cluster, the clusters with the fewest
/// labelled images first (then the smallest, the most unusual); within a cluster, its most typical
/// images (nearest the centre) first. `members[i]` is the cluster and centre distance of the i-th
/// unlabelled image (None: not clustered, last); `sizes` counts every image of a cluster, so a
/// cluster's labelled images are its size less its unlabelled members. The images the person
/// labelled least resemble come first: that is where an unseen kind of positive is likeliest.
pub fn least_labelled_first(members: &[Option<(u32, f32)>], sizes: &[usize]) -> Vec<usize> {
    let groups: Vec<Option<u32>> = members.iter().map(|m| m.map(|(c, _)| c)).collect();
    let distance = |i: usize| members[i].map_or(f32::INFINITY, |(_, d)| d);
    in_turns(&groups, distance, |c, unlabelled| {
        let size = sizes.get(c as usize).copied().unwrap_or(unlabelled).max(unlabelled);
        (size - unlabelled, size)
    })
}

/// Items in turns, the groups ordered by `group_order(group, its item count)` (ties by group),
/// each group's items by `key` ascending (ties by index); items of no group last, by `key`.
fn in_turns(groups: &[Option<u32>], key: impl Fn(usize) -> f32, group_order: impl Fn(u32, usize) -> (usize, usize)) -> Vec<usize> {
    let mut members: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut loose = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        match g {
            Some(g) => members.entry(*g).or_default().push(i),
            None => loose.push(i),
        }
    }
    let by_key = |m: &mut Vec<usize>| m.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
    let mut lists: Vec<(u32, Vec<usize>)> = members.into_iter().collect();
    for (_, m) in &mut lists {
        by_key(m);
    }
    lists.sort_by_key(|(g, m)| (group_order(*g, m.len()), *g));
    let longest = lists.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(groups.len());
    for turn in 0..longest {
        for (_, m) in &lists {
            if let Some(&i) = m.get(turn) {
                out.push(i);
            }
        }
    }
    by_key(&mut loose);
    out.extend(loose);
    out
}

/// Most images [`farthest_first`] orders; past them the server's default order follows.
pub const FARTHEST_FIRST_PICKS: usize = 1024;

/// The first `count` rows of `values` (SKETCH_DIM each) in farthest-first order (greedy k-centre):
/// row 0 first, then each time the row farthest from every row picked so far. A kind of image
/// unlike the rest is reached as soon as it is the farthest thing left, whatever its size, and
/// no kind is shown twice while another is unvisited. Beyond 20,000 rows the traversal runs on a
/// fixed-stride sample, as k-means does (count × sample distances).
///
/// Measured offline (`examples/cold_sim.rs`: the pass embedding at 370 images/s, the order made
/// again on every chunk, 5 labels/s, five 20,000-image folders with two kinds of positive at 1 %):
/// the first positive after 18 labels in the median (mean 22, worst 37), against 50 (mean 69,
/// worst 293) for one image of each k-means cluster in turn (one cluster per 16 images, smallest
/// first) and 79 in the pass's own order. Small clusters split a rare kind among common ones, and
/// the smallest-first order spends its first labels on odd single images. A kind that sits among
/// others ("dress" at 0.2 %) loses: on the five-depth embeddings (2026-12-04) no dress within 400
/// labels in most starts, against 77 for k-means and 112 for the pass's order, hence
/// [`diverse_order`] after the first [`FARTHEST_ALONE_LABELS`] labels.
pub fn farthest_first(values: &[f32], count: usize) -> Vec<usize> {
    let n = values.len() / SKETCH_DIM;
    let row = |i: usize| &values[i * SKETCH_DIM..(i + 1) * SKETCH_DIM];
    let stride = n.div_ceil(FIT_SAMPLE).max(1);
    let sample: Vec<usize> = (0..n).step_by(stride).collect();
    k_centre(|j| row(sample[j]), vec![f32::INFINITY; sample.len()], count).into_iter().map(|j| sample[j]).collect()
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
/// Neither order alone finds both the kinds unlike the rest and those among others. Measured
/// offline (`examples/cold_sim.rs`, the pass at 370 images/s, 5 labels/s, labels to the first
/// positive, median over 5 folders × 3 seeds): trouser and ankle boot at 1 % 25 farthest first,
/// 42 round robin, 38 for the two; "dress" at 0.2 %, which sits among coats and shirts, none
/// within 400 labels farthest first (it chases outliers: bags, sandals), 77 round robin, 93 for
/// the two, against 79 and 112 in the pass's own order.
pub fn diverse_order(clusters: &Clusters, values: &[f32], seed: u64) -> Vec<usize> {
    crate::interleave(&clusters.round_robin(), &farthest_first(values, FARTHEST_FIRST_PICKS), DIVERSE_FARTHEST_SHARE, seed)
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
                self.nearest.push(self.folded_rows.chunks_exact(SKETCH_DIM).map(|f| distance2(row, f)).fold(f32::INFINITY, f32::min));
                self.ids.push(id);
                self.rows.extend_from_slice(row);
            }
        }
        let new: Vec<u32> = labelled.iter().copied().filter(|id| !self.folded.contains(id)).collect();
        if new.is_empty() {
            return;
        }
        let row_of: HashMap<u32, usize> = sketches.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        for id in new {
            let Some(&r) = row_of.get(&id) else { continue };
            self.folded.insert(id);
            let row = sketches.row(r);
            self.folded_rows.extend_from_slice(row);
            for (d, c) in self.nearest.iter_mut().zip(self.rows.chunks_exact(SKETCH_DIM)) {
                *d = d.min(distance2(c, row));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `per` points around each of `centres.len()` well-separated centres in sketch space.
    fn blobs(sizes: &[usize], seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = SplitMix64(seed);
        let mut values = Vec::new();
        let mut truth = Vec::new();
        for (b, size) in sizes.iter().enumerate() {
            for _ in 0..*size {
                for j in 0..SKETCH_DIM {
                    let centre = if j == b % SKETCH_DIM { 10.0 * (1 + b / SKETCH_DIM) as f32 } else { 0.0 };
                    values.push(centre + (rng.next_f64() as f32 - 0.5));
                }
                truth.push(b);
            }
        }
        (values, truth)
    }

    #[test]
    fn the_diverse_order_reaches_every_cluster_before_repeating_one() {
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
    fn projection_keeps_near_things_near() {
        let dim = 1280;
        let mut rng = SplitMix64(9);
        let a: Vec<f32> = (0..dim).map(|_| rng.next_f64() as f32).collect();
        let near: Vec<f32> = a.iter().map(|v| v + 0.02 * (rng.next_f64() as f32 - 0.5)).collect();
        let far: Vec<f32> = (0..dim).map(|_| rng.next_f64() as f32 * (rng.next_f64() as f32)).collect();
        let rows: Vec<f32> = [a.clone(), near, far, vec![0.0; dim]].concat();
        let s = Projection::random(dim).apply(&rows);
        let row = |i: usize| &s[i * SKETCH_DIM..(i + 1) * SKETCH_DIM];
        assert!(distance2(row(0), row(1)) * 20.0 < distance2(row(0), row(2)));
        assert!(row(3).iter().all(|v| *v == 0.0), "a failed image's zero row stays zero");
        // Unit vectors keep about unit length.
        let len = row(0).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((0.6..1.4).contains(&len), "{len}");
    }

    #[test]
    fn principal_directions_keep_what_varies() {
        // 200 rows in 64 dimensions: a common part (the first value), a spread along three others,
        // and a little noise everywhere. The principal sketch keeps the distances between the
        // (unit-length) rows; random signs keep them only on average.
        let dim = 64;
        let mut rng = SplitMix64(4);
        let rows: Vec<f32> = (0..200)
            .flat_map(|_| {
                let mut r: Vec<f32> = (0..dim).map(|_| 0.01 * (rng.next_f64() as f32 - 0.5)).collect();
                r[0] += 20.0;
                for v in &mut r[1..4] {
                    *v += 6.0 * (rng.next_f64() as f32 - 0.5);
                }
                r
            })
            .collect();
        let unit: Vec<f32> = rows
            .chunks_exact(dim)
            .flat_map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                r.iter().map(move |v| v / n)
            })
            .collect();
        let worst = |sketch: &[f32]| {
            let mut worst = 0f32;
            for i in 0..200 {
                for j in (i + 1)..200 {
                    let full = distance2(&unit[i * dim..(i + 1) * dim], &unit[j * dim..(j + 1) * dim]).sqrt();
                    let kept =
                        distance2(&sketch[i * SKETCH_DIM..(i + 1) * SKETCH_DIM], &sketch[j * SKETCH_DIM..(j + 1) * SKETCH_DIM]).sqrt();
                    worst = worst.max((kept - full).abs() / full);
                }
            }
            worst
        };
        let principal = Projection::principal(&rows, dim);
        assert_eq!(principal.apply(&rows), Projection::principal(&rows, dim).apply(&rows), "repeatable");
        let (kept, random) = (worst(&principal.apply(&rows)), worst(&Projection::random(dim).apply(&rows)));
        assert!(kept < 0.05, "principal directions: distances within {kept}");
        assert!(random > 2.0 * kept, "random signs: within {random}, principal {kept}");
        // Too few rows to fit: the random projection.
        assert_eq!(Projection::principal(&rows[..10 * dim], dim).apply(&rows[..dim]), Projection::random(dim).apply(&rows[..dim]));
        let zero = vec![0.0; dim];
        assert!(principal.apply(&zero).iter().all(|v| *v == 0.0), "a failed image's zero row stays zero");
    }

    #[test]
    fn sketches_follow_the_chunk_files() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = |ids: Vec<u32>, model: &str| EmbeddingChunk {
            values: EmbeddingChunk::pack(&ids.iter().flat_map(|i| vec![*i as f32 + 1.0; 8]).collect::<Vec<_>>()),
            ids,
            dim: 8,
            model: model.into(),
            failed: Vec::new(),
        };
        let mut sketches = SketchCache::default();
        assert!(!sketches.refresh(dir.path()));
        chunk(vec![0, 1, 2], "m").save(&EmbeddingChunk::path(dir.path(), 0, 1, 0), 1).unwrap();
        assert!(sketches.refresh(dir.path()));
        assert_eq!(sketches.ids, [0, 1, 2]);
        assert!(!sketches.refresh(dir.path()), "nothing changed");
        chunk(vec![3, 4], "m").save(&EmbeddingChunk::path(dir.path(), 0, 1, 1), 1).unwrap();
        std::fs::write(dir.path().join("chunk-0-of-1-000002.bin"), b"not a chunk").unwrap();
        assert!(sketches.refresh(dir.path()));
        assert_eq!(sketches.ids, [0, 1, 2, 3, 4]);
        assert_eq!(sketches.values.len(), 5 * SKETCH_DIM);
    }

    #[test]
    fn the_principal_directions_come_from_the_newest_model_when_an_older_one_left_chunks() {
        let dir = tempfile::tempdir().unwrap();
        // An older model's chunk first (by name), 8 values per image, as a run directory keeps
        // after the embedding changed; then the new model's, 16 values, enough rows to fit.
        let older: Vec<f32> = (0..100 * 8).map(|i| ((i * 7919) % 101) as f32 / 101.0).collect();
        let newer: Vec<f32> = (0..100 * 16).map(|i| ((i * 104_729) % 97) as f32 / 97.0 - 0.5).collect();
        let save = |index: u32, ids: std::ops::Range<u32>, dim: u32, values: &[f32], model: &str| {
            let chunk =
                EmbeddingChunk { ids: ids.collect(), dim, model: model.into(), values: EmbeddingChunk::pack(values), failed: Vec::new() };
            chunk.save(&EmbeddingChunk::path(dir.path(), 0, 1, index), 1).unwrap();
        };
        save(0, 0..100, 8, &older, "old");
        save(1, 0..100, 16, &newer, "new");
        let mut sketches = SketchCache::default();
        assert!(sketches.refresh(dir.path()));
        assert_eq!(sketches.model(), Some("new"));
        assert_eq!(sketches.ids, (0..100).collect::<Vec<u32>>());
        let fitted = Projection::principal(&newer, 16);
        assert_eq!(sketches.neighbours, fitted.apply(&newer), "neighbours by the new model's principal directions");
        assert_ne!(sketches.neighbours, Projection::random(16).apply(&newer));
        assert_eq!(sketches.values, Projection::random(16).apply(&newer));
        assert!(!sketches.refresh(dir.path()), "nothing changed");
    }
}
