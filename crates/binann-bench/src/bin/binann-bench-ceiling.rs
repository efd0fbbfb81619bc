//! `binann-bench-ceiling RUNDIR TRUTH [--folds 5] [--every 5] [--seed 1]`
//!
//! How far the embeddings of a run directory can carry the model, judged in seconds instead of a
//! labelling run: whatever limits the loop (the pass, the selector, the person's pace), it cannot
//! do better than a head that sees every label, or than a loop that has every image embedded from
//! the start and retrains without latency.
//!
//! - **All-label ceiling**: binann's head (and logistic regression) trained on every label but one
//!   fold, scored on that fold: the AUC and the share of positives among the top #positives of the
//!   held-out scores, the fraction a perfect ranking would label first.
//! - **Idealised loop**: it starts from one positive and one negative drawn at random (as a person
//!   with a seed image does; finding the first positive is the cold start's job, measured by
//!   `binann-bench-recall`), then binann's head is retrained every `--every` labels on everything
//!   labelled and the next images are the most probable positives: recall after 1 × and 2 ×
//!   #positives labels, the two given ones included.
//!
//! RUNDIR is any run directory whose inferrer has embedded the folder (e.g. one left by
//! `binann-bench-recall`); TRUTH is a CSV naming the columns path and label (1/0), paths relative
//! to the data folder, as `binann demo-data --truth` writes it.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use binann_cli::simulate::read_truth;
use binann_core::RunDirFile;
use binann_core::embeddings::EmbeddingChunk;
use binann_core::manifest::Manifest;
use binann_core::rundir::RunDir;
use binann_model::{EMBED_DIM, Head, TrainOptions};
use clap::Parser;
use tch::{Device, Kind, Tensor};

/// The figures a run directory's embeddings allow, with every label known or with the loop made ideal.
#[derive(Debug, Parser)]
#[command(name = "binann-bench-ceiling")]
struct CeilingArgs {
    /// A run directory whose images have been embedded.
    rundir: PathBuf,
    /// Ground truth: a CSV naming the columns path and label.
    truth: PathBuf,
    /// Folds of the cross-validated all-label ceiling.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// The idealised loop retrains after this many labels.
    #[arg(long, default_value_t = 5)]
    every: usize,
    /// Seed of the folds and of the loop's random start.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A small deterministic generator (SplitMix64): the figures must not depend on a crate's stream.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Every embedded image of the run directory that the truth names: (embeddings, labels).
fn load(args: &CeilingArgs) -> anyhow::Result<(Tensor, Vec<bool>)> {
    let rundir = RunDir::open_existing(&args.rundir);
    let (_, manifest) = Manifest::load(&rundir.manifest()).with_context(|| format!("reading the manifest of {}", args.rundir.display()))?;
    let truth = read_truth(&args.truth)?;
    let mut rows: HashMap<u32, Vec<f32>> = HashMap::new();
    for (path, _) in EmbeddingChunk::files(&rundir.embeddings_dir()) {
        let (_, chunk) = EmbeddingChunk::load(&path).with_context(|| format!("reading {}", path.display()))?;
        if chunk.dim as usize != EMBED_DIM {
            continue;
        }
        let failed: Vec<u32> = chunk.failed.iter().map(|(id, _)| *id).collect();
        for (id, row) in chunk.ids.iter().zip(chunk.floats().chunks_exact(EMBED_DIM)) {
            if !failed.contains(id) {
                rows.insert(*id, row.to_vec());
            }
        }
    }
    let mut values = Vec::new();
    let mut labels = Vec::new();
    let mut ids: Vec<u32> = rows.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        if let Some(positive) = manifest.path(id).and_then(|p| truth.get(p)) {
            values.extend_from_slice(&rows[&id]);
            labels.push(*positive);
        }
    }
    let positives = labels.iter().filter(|p| **p).count();
    if positives == 0 || positives == labels.len() {
        bail!(
            "{} embedded images named in {} ({} of {} images in the folder), {positives} positive: need both classes",
            labels.len(),
            args.truth.display(),
            rows.len(),
            manifest.len()
        );
    }
    eprintln!("{} embedded images with a truth label ({positives} positive) of {} in the folder", labels.len(), manifest.len());
    Ok((Tensor::from_slice(&values).view([labels.len() as i64, EMBED_DIM as i64]), labels))
}

/// A head trained on rows `train` of `x`, as the trainer trains its first one.
fn trained_head(x: &Tensor, labels: &[bool], train: &[i64], hidden: usize) -> Head {
    let index = Tensor::from_slice(train);
    let ys: Vec<f32> = train.iter().map(|i| f32::from(u8::from(labels[*i as usize]))).collect();
    let mut head = Head::with_hidden(Device::Cpu, hidden);
    head.train(&x.index_select(0, &index), &Tensor::from_slice(&ys), &TrainOptions::default());
    head
}

/// Area under the ROC curve of `scores` (ties count half).
fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Ranks averaged over ties, then the Mann–Whitney statistic.
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for k in i..=j {
            ranks[order[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    let positives = labels.iter().filter(|p| **p).count() as f64;
    let negatives = labels.len() as f64 - positives;
    let rank_sum: f64 = ranks.iter().zip(labels).filter(|(_, p)| **p).map(|(r, _)| r).sum();
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// Share of positives among the `scores`' top #positives.
fn precision_at_positives(scores: &[f64], labels: &[bool]) -> f64 {
    let positives = labels.iter().filter(|p| **p).count();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    order[..positives].iter().filter(|i| labels[**i]).count() as f64 / positives as f64
}

/// Held-out logits of every row, from `folds` heads each trained on the other folds.
fn cross_validated(x: &Tensor, labels: &[bool], folds: usize, hidden: usize, seed: u64) -> Vec<f64> {
    // Stratified: positives and negatives are dealt to the folds separately.
    let mut rng = SplitMix(seed);
    let mut fold_of = vec![0usize; labels.len()];
    for class in [true, false] {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|i| labels[*i] == class).collect();
        rng.shuffle(&mut rows);
        for (n, row) in rows.into_iter().enumerate() {
            fold_of[row] = n % folds;
        }
    }
    let mut scores = vec![0.0; labels.len()];
    for fold in 0..folds {
        let train: Vec<i64> = (0..labels.len()).filter(|i| fold_of[*i] != fold).map(|i| i as i64).collect();
        let held: Vec<i64> = (0..labels.len()).filter(|i| fold_of[*i] == fold).map(|i| i as i64).collect();
        let head = trained_head(x, labels, &train, hidden);
        let logits = tch::no_grad(|| head.logits(&x.index_select(0, &Tensor::from_slice(&held))));
        let logits: Vec<f32> = Vec::try_from(logits.to_kind(Kind::Float).flatten(0, -1)).expect("float logits");
        for (row, logit) in held.iter().zip(logits) {
            scores[*row as usize] = f64::from(logit);
        }
    }
    scores
}

/// The idealised loop: the positives found after each label.
fn idealised_loop(x: &Tensor, labels: &[bool], every: usize, until: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix(seed ^ 0x5EED);
    let pick = |rng: &mut SplitMix, class: bool| {
        let rows: Vec<usize> = (0..labels.len()).filter(|r| labels[*r] == class).collect();
        rows[(rng.next() % rows.len() as u64) as usize]
    };
    let mut shown = vec![pick(&mut rng, true), pick(&mut rng, false)];
    let mut labelled = vec![false; labels.len()];
    for row in &shown {
        labelled[*row] = true;
    }
    while shown.len() < until.min(labels.len()) {
        let train: Vec<i64> = shown.iter().map(|r| *r as i64).collect();
        let head = trained_head(x, labels, &train, binann_model::DEFAULT_HIDDEN_UNITS);
        let logits: Vec<f32> = Vec::try_from(tch::no_grad(|| head.logits(x)).flatten(0, -1)).expect("float logits");
        let mut candidates: Vec<usize> = (0..labels.len()).filter(|r| !labelled[*r]).collect();
        candidates.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
        for row in candidates.into_iter().take(every) {
            labelled[row] = true;
            shown.push(row);
        }
    }
    shown.truncate(until);
    shown
        .iter()
        .scan(0, |found, row| {
            *found += usize::from(labels[*row]);
            Some(*found)
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = CeilingArgs::parse();
    anyhow::ensure!(args.folds >= 2, "--folds must be at least 2");
    anyhow::ensure!(args.every >= 1, "--every must be at least 1");
    let (x, labels) = load(&args)?;
    let positives = labels.iter().filter(|p| **p).count();
    println!("all-label ceiling ({}-fold, held-out scores):", args.folds);
    for (name, hidden) in [("binann's head", binann_model::DEFAULT_HIDDEN_UNITS), ("logistic regression", 0)] {
        let scores = cross_validated(&x, &labels, args.folds, hidden, args.seed);
        println!(
            "  {name:<20} AUC {:.3}, positives in the top {positives}: {:.3}",
            auc(&scores, &labels),
            precision_at_positives(&scores, &labels)
        );
    }
    let found = idealised_loop(&x, &labels, args.every, 2 * positives, args.seed);
    let recall = |n: usize| found.get(n.saturating_sub(1)).map_or(f64::NAN, |f| *f as f64 / positives as f64);
    println!(
        "idealised loop (every image embedded, one positive and one negative to start, retrained every {} labels): recall after 1 × {:.3}, after 2 × {:.3}",
        args.every,
        recall(positives),
        recall(2 * positives)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_pairs_in_order_and_ties_as_half() {
        let labels = [true, false, true, false];
        assert_eq!(auc(&[0.9, 0.1, 0.8, 0.2], &labels), 1.0);
        assert_eq!(auc(&[0.1, 0.9, 0.2, 0.8], &labels), 0.0);
        assert_eq!(auc(&[0.5, 0.5, 0.5, 0.5], &labels), 0.5);
        // One positive above both negatives, one below one: 3 of 4 pairs in order.
        assert_eq!(auc(&[0.9, 0.3, 0.2, 0.1], &labels), 0.75);
    }

    #[test]
    fn precision_counts_positives_among_the_top_positives() {
        let labels = [true, false, true, false];
        assert_eq!(precision_at_positives(&[0.9, 0.8, 0.1, 0.2], &labels), 0.5);
        assert_eq!(precision_at_positives(&[0.9, 0.1, 0.8, 0.2], &labels), 1.0);
    }

    #[test]
    fn a_separable_folder_reaches_the_ceiling_and_the_loop_finds_every_positive() {
        // 200 rows, 20 positives whose first 64 values are 1 higher, as a kind of image lifts
        // many features at once: any head separates them.
        let mut values = vec![0f32; 200 * EMBED_DIM];
        let labels: Vec<bool> = (0..200).map(|i| i % 10 == 3).collect();
        let mut rng = SplitMix(9);
        for (i, row) in values.chunks_exact_mut(EMBED_DIM).enumerate() {
            for v in row.iter_mut() {
                *v = (rng.next() % 1000) as f32 / 1000.0;
            }
            if labels[i] {
                row[..64].iter_mut().for_each(|v| *v += 1.0);
            }
        }
        let x = Tensor::from_slice(&values).view([200, EMBED_DIM as i64]);
        let scores = cross_validated(&x, &labels, 5, 0, 1);
        let (a, p) = (auc(&scores, &labels), precision_at_positives(&scores, &labels));
        assert!(a > 0.99, "AUC {a}, precision {p}");
        assert!(p >= 0.85, "AUC {a}, precision {p}");
        let found = idealised_loop(&x, &labels, 5, 60, 1);
        assert_eq!(found.len(), 60);
        assert_eq!(found[20], 20, "every positive within the first 21 labels (the given negative the one miss): {found:?}");
    }
}
