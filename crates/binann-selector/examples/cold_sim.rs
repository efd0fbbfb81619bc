//! The order before the first positive as the loop runs it, offline: the embedding pass reaches
//! the images in the default order at RATE images/s, writing chunks of 256, 512, 1,024, 2,048 and
//! then 4,096 images; the selector orders what is embedded when a chunk lands (LAG seconds later);
//! a person labels at 5 labels/s from the first second. Prints the labels to the first positive per
//! draw and ordering (`ORDERS`: kmeans/P for one cluster per P images, smallest first, as
//! before; farthest, the default; shuffle, the pass's own order; farthest+shuffle and
//! farthest+kmeans, half the places each; `SEEDS`: seeds per draw). `cargo run -p binann-selector --example cold_sim -- RATE DRAW...` where each
//! DRAW is a `bench-recall` draw folder (`run/` with every image embedded, and `truth.csv`).

use std::collections::{HashMap, HashSet};

use binann_core::RunDirFile;
use binann_core::manifest::Manifest;
use binann_core::ranking::{DEFAULT_ORDER_SEED, default_order};
use binann_selector::clusters::{Clusters, SKETCH_DIM, SketchCache, cluster_count, farthest_first};
use binann_selector::interleave;

const PACE: f64 = 5.0;
const LAG: f64 = 1.0;
const LABELS: usize = 400;

/// An ordering of the rows of `values` (SKETCH_DIM each).
fn order(name: &str, values: &[f32], seed: u64) -> Vec<usize> {
    let n = values.len() / SKETCH_DIM;
    let per = |p: usize| Clusters::fit(values, (n / p).clamp(8, 256).min(n), seed).round_robin();
    match name {
        "kmeans/16" => Clusters::fit(values, cluster_count(n), seed).round_robin(),
        "kmeans/8" => per(8),
        "kmeans/32" => per(32),
        "kmeans/64" => per(64),
        "farthest" => farthest_first(values, LABELS),
        "shuffle" => (0..n).collect(),
        // Half the places each (drawn per ordering): the pass's own order, or k-means round robin.
        "farthest+shuffle" => interleave(&(0..n).collect::<Vec<_>>(), &farthest_first(values, LABELS), 0.5, seed),
        "farthest+kmeans" => {
            interleave(&Clusters::fit(values, cluster_count(n), seed).round_robin(), &farthest_first(values, LABELS), 0.5, seed)
        }
        other => panic!("unknown ordering {other}"),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rate: f64 = args[1].parse()?;
    let names: Vec<String> = std::env::var("ORDERS")
        .unwrap_or_else(|_| "kmeans/16,kmeans/8,kmeans/32,kmeans/64,farthest".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let seeds: u64 = std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut table: HashMap<String, Vec<usize>> = HashMap::new();
    for dir in &args[2..] {
        let dir = std::path::Path::new(dir);
        let truth = std::fs::read_to_string(dir.join("truth.csv"))?;
        let positive: HashSet<String> = truth
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[1] == "1").then(|| f[0].to_owned())
            })
            .collect();
        let (_, manifest) = Manifest::load(&dir.join("run/manifest.bin"))?;
        let mut sketches = SketchCache::default();
        sketches.refresh(&dir.join("run/embeddings"));
        let row_of: HashMap<u32, usize> = sketches.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let pass: Vec<u32> = default_order(manifest.len(), DEFAULT_ORDER_SEED);
        let is_positive = |id: u32| positive.contains(manifest.path(id).unwrap());
        // Chunk boundaries and when each lands.
        let mut bounds = Vec::new();
        let mut done = 0usize;
        let mut size = 256usize;
        while done < pass.len() {
            done = (done + size).min(pass.len());
            bounds.push((done, done as f64 / rate + LAG));
            size = (size * 2).min(4096);
        }
        for name in &names {
            let mut firsts = Vec::new();
            for seed in 1..=seeds {
                let mut labelled = HashSet::new();
                let mut current: Vec<u32> = Vec::new();
                let mut fitted = 0usize;
                let mut first = None;
                for label in 1..=LABELS {
                    let t = (label - 1) as f64 / PACE;
                    let visible = bounds.iter().take_while(|(_, at)| *at <= t).last().map_or(0, |(n, _)| *n);
                    if visible != fitted {
                        let rows: Vec<usize> = pass[..visible].iter().map(|id| row_of[id]).collect();
                        let values: Vec<f32> = rows.iter().flat_map(|r| sketches.row(*r).to_vec()).collect();
                        current = order(name, &values, seed).into_iter().map(|i| sketches.ids[rows[i]]).collect();
                        fitted = visible;
                    }
                    let next = current.iter().chain(&pass).copied().find(|id| !labelled.contains(id)).unwrap();
                    labelled.insert(next);
                    if is_positive(next) {
                        first = Some(label);
                        break;
                    }
                }
                firsts.push(first.unwrap_or(LABELS + 1));
            }
            println!("{} {name:>16}: {firsts:?}", dir.display());
            table.entry(name.clone()).or_default().extend(firsts);
        }
    }
    for name in &names {
        let mut v = table[name].clone();
        v.sort();
        let mean = v.iter().sum::<usize>() as f64 / v.len() as f64;
        println!("{name:>16}: median {} mean {mean:.1} worst {} ({} runs)", v[v.len() / 2], v[v.len() - 1], v.len());
    }
    Ok(())
}
