//! How fast exploring picks find a kind of positive nobody has labelled yet, offline. For each
//! `bench-recall` draw folder given (`run/` with its embeddings, `truth.csv`, `trace.csv`), the
//! labels of its trace before the first positive of the kind it found second (at most 150 of
//! them) count as labelled; each rule then picks images one by one (each pick labelled in turn),
//! and the picks until the first positive of an unlabelled kind are printed, per rule:
//!
//! - `farthest`: the unlabelled image farthest from every labelled one and every earlier pick,
//!   what the selector explores with while the model calls nothing positive
//!   ([`Unexplored::farthest`]);
//! - `typical`: the same among typical images only (no farther from their k-means centre than the
//!   median of their cluster, in a cluster of 8 or more), so that a lone outlier does not count as
//!   unexplored ground;
//! - `medoids`: the same among the most typical image of each cluster (farthest first over the
//!   clusters);
//! - `random`: a shuffle.
//!
//! `cargo run -p binann-selector --example discover_sim -- DRAW...`
//!
//! On 2026-12-04, over 17 traces of the five 1 % trouser + ankle boot folders, the picks to the
//! second kind were 37 in the median (8–60) for `farthest`, 31 (1–130) for `typical`, 12 (2 to
//! none within 400) for `medoids`, 23 (3–309) for both in turn, and 98 for `random`: medoids find
//! a compact kind (trousers) in one or two picks and miss a kind at the edge of another (ankle
//! boots). In the real loop (`bench-recall --seeds 5 --labels 400`), both in turn found the
//! trousers after 75 labels where farthest alone took 211–214, but recall after 2 × did not rise
//! (0.88, one draw finding no ankle boot, against 0.89): the selector keeps `farthest`.

use std::collections::{HashMap, HashSet};

use binann_core::RunDirFile;
use binann_core::manifest::Manifest;
use binann_core::ranking::shuffle_key;
use binann_selector::clusters::{Clusters, SketchCache, Unexplored, cluster_count};

const CAP: usize = 400;

fn main() -> anyhow::Result<()> {
    let rules = ["farthest", "typical", "medoids", "medoids+farthest", "random"];
    let mut table: HashMap<&str, Vec<usize>> = HashMap::new();
    for dir in std::env::args().skip(1) {
        let dir = std::path::Path::new(&dir);
        let (_, manifest) = Manifest::load(&dir.join("run/manifest.bin"))?;
        let id_of: HashMap<&str, u32> = manifest.paths.iter().enumerate().map(|(i, p)| (p.as_str(), i as u32)).collect();
        let mut kind: HashMap<u32, String> = HashMap::new();
        for line in std::fs::read_to_string(dir.join("truth.csv"))?.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f[1] == "1" {
                kind.insert(id_of[f[0]], f[2].to_owned());
            }
        }
        let trace: Vec<u32> = std::fs::read_to_string(dir.join("trace.csv"))?
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).expect("an id").parse().expect("a number"))
            .collect();
        let mut kinds_seen: Vec<&str> = Vec::new();
        let mut cut = trace.len();
        for (i, id) in trace.iter().enumerate() {
            if let Some(k) = kind.get(id)
                && !kinds_seen.contains(&k.as_str())
            {
                kinds_seen.push(k);
                if kinds_seen.len() == 2 {
                    cut = i;
                    break;
                }
            }
        }
        let Some(&known) = kinds_seen.first() else { continue };
        let labelled: Vec<u32> = trace[..cut.min(150)].to_vec();
        let mut sketches = SketchCache::default();
        sketches.refresh(&dir.join("run/embeddings"));
        let clusters = Clusters::fit(&sketches.values, cluster_count(sketches.len()), 1);
        let mut median = vec![0f32; clusters.sizes.len()];
        for (c, m) in median.iter_mut().enumerate() {
            let mut d: Vec<f32> =
                (0..sketches.len()).filter(|&r| clusters.assignment[r] as usize == c).map(|r| clusters.distance[r]).collect();
            d.sort_by(f32::total_cmp);
            *m = d.get(d.len() / 2).copied().unwrap_or(0.0);
        }
        let row_of: HashMap<u32, usize> = sketches.ids.iter().enumerate().map(|(r, id)| (*id, r)).collect();
        let typical = |id: u32| {
            row_of.get(&id).is_some_and(|&r| {
                let c = clusters.assignment[r] as usize;
                clusters.sizes[c] >= 8 && clusters.distance[r] <= median[c]
            })
        };
        let mut medoid: HashMap<u32, (f32, u32)> = HashMap::new();
        for (r, id) in sketches.ids.iter().enumerate() {
            let e = medoid.entry(clusters.assignment[r]).or_insert((f32::INFINITY, *id));
            if clusters.distance[r] < e.0 {
                *e = (clusters.distance[r], *id);
            }
        }
        let medoids: HashSet<u32> = medoid.values().map(|(_, id)| *id).collect();
        let done: HashSet<u32> = labelled.iter().copied().collect();
        let is_new = |id: &u32| kind.get(id).is_some_and(|k| k != known);
        for rule in rules {
            let picks: Vec<u32> = match rule {
                "random" => {
                    let mut ids: Vec<u32> = sketches.ids.iter().copied().filter(|id| !done.contains(id)).collect();
                    ids.sort_by_key(|id| shuffle_key(7, *id));
                    ids.into_iter().take(CAP).collect()
                }
                "medoids+farthest" => {
                    // In turn, each pick labelled before the next.
                    let mut unexplored = Unexplored::default();
                    let mut so_far = labelled.clone();
                    unexplored.update(&sketches, &so_far);
                    let mut picks = Vec::new();
                    while picks.len() < CAP {
                        let pick = if picks.len() % 2 == 0 {
                            unexplored
                                .farthest(|id| medoids.contains(&id), 1)
                                .into_iter()
                                .next()
                                .or_else(|| unexplored.farthest(|_| true, 1).into_iter().next())
                        } else {
                            unexplored.farthest(|_| true, 1).into_iter().next()
                        };
                        let Some(pick) = pick else { break };
                        picks.push(pick);
                        so_far.push(pick);
                        unexplored.update(&sketches, &so_far);
                    }
                    picks
                }
                _ => {
                    let mut unexplored = Unexplored::default();
                    unexplored.update(&sketches, &labelled);
                    match rule {
                        "farthest" => unexplored.farthest(|_| true, CAP),
                        "typical" => unexplored.farthest(typical, CAP),
                        _ => unexplored.farthest(|id| medoids.contains(&id), CAP),
                    }
                }
            };
            let found = picks.iter().position(is_new).map_or(CAP + 1, |p| p + 1);
            println!("{} ({} labelled, {known} known) {rule:>16}: {found}", dir.display(), labelled.len());
            table.entry(rule).or_default().push(found);
        }
    }
    for rule in rules {
        let mut v = table.get(rule).cloned().unwrap_or_default();
        v.sort();
        if v.is_empty() {
            continue;
        }
        println!("{rule:>16}: median {} of {} draws, all {v:?}", v[v.len() / 2], v.len());
    }
    Ok(())
}
