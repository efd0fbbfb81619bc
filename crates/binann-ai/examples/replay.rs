//! Replays the labelling loop offline on a finished run's embeddings, without the processes, the
//! HTTP API or any latency: the diverse cold start (one image of each cluster in turn) until the
//! first positive, then a head retrained every `EVERY` labels, every unlabelled image predicted
//! (ranked by logit, as the loop does), and the next `EVERY` images taken from the top of the
//! ordering `POLICY` makes. It compares
//! orderings in seconds where `bench-recall` takes minutes, and shows what the loop would reach
//! with no latency and the whole folder embedded.
//!
//! `cargo run -p binann-ai --example replay -- LABELS EVERY POLICY DRAW_DIR...`
//!
//! - Each DRAW_DIR holds `run/` (with its embeddings) and `truth.csv`, as `bench-recall` leaves
//!   them.
//! - POLICY:
//!   - `max`: max-probability;
//!   - `lib:SHARE`: the selector's `mix` with `clusters` exploring picks at SHARE;
//!   - `tail:BELOW:ORDER`: images below probability BELOW by cluster in turn, the clusters by
//!     ORDER: `id`, `prob`, `share` or `small`;
//!   - `explore:SHARE:BELOW[:centre[:small]]`: every 1/SHARE-th pick, and every pick below BELOW,
//!     from the least-labelled cluster.
//! - The environment tunes the head: `HIDDEN` units (0: logistic regression), `STEPS` and
//!   `CONT_STEPS` (a fresh and a continued round), `WD`, `LR`, `FRESH=1` (a fresh head every round).
//! - `KNN=SHARE` takes that share of the picks by nearest-neighbour evidence (cosine to the nearest
//!   labelled positive less cosine to the nearest labelled negative).
//! - `START=1` labels one positive of each kind first: recall then measures how well the
//!   embeddings and the head exhaust known kinds, apart from finding them.
//! - `SNOW=K` puts the K nearest neighbours of every positive the model did not expect (shown
//!   below 0.5) first. `REPEATS=N` runs each draw with N training seeds.
//!
//! It prints, per draw and seed, the labels to the first positive, recall after 1, 1.5, 2 and 3 ×
//! #positives labels, and each kind's recall after 2 × with the label that found its first.

use std::collections::HashMap;
use std::path::Path;

use binann_core::RunDirFile;
use binann_core::embeddings::EmbeddingChunk;
use binann_core::manifest::Manifest;
use binann_model::{Head, TrainOptions};
use binann_selector::clusters::{Clusters, Projection, cluster_count};
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let labels: usize = args[1].parse()?;
    let every: usize = args[2].parse()?;
    let policy = args[3].clone();
    tch::set_num_threads(2);
    let repeats: u64 = std::env::var("REPEATS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    for (dir, rep) in args[4..].iter().flat_map(|d| (0..repeats).map(move |r| (d, r))) {
        tch::manual_seed(rep as i64);
        let dir = Path::new(dir);
        let (_, manifest) = Manifest::load(&dir.join("run/manifest.bin"))?;
        let n = manifest.len();
        let id_of: HashMap<&str, u32> = manifest.paths.iter().enumerate().map(|(i, p)| (p.as_str(), i as u32)).collect();
        let mut kind: Vec<Option<String>> = vec![None; n];
        for line in std::fs::read_to_string(dir.join("truth.csv"))?.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f[1] == "1" {
                kind[id_of[f[0]] as usize] = Some(f[2].to_owned());
            }
        }
        let dim = binann_model::EMBED_DIM;
        let mut x = vec![0f32; n * dim];
        for (path, _) in EmbeddingChunk::files(&dir.join("run/embeddings")) {
            let (_, chunk) = EmbeddingChunk::load(&path)?;
            anyhow::ensure!(chunk.dim as usize == dim, "{} holds {}-value embeddings, not {dim}", path.display(), chunk.dim);
            let v = chunk.floats();
            for (r, id) in chunk.ids.iter().enumerate() {
                x[*id as usize * dim..(*id as usize + 1) * dim].copy_from_slice(&v[r * dim..(r + 1) * dim]);
            }
        }
        let xt = Tensor::from_slice(&x).view([n as i64, dim as i64]);
        // The sketches the selector orders by.
        let sketch = Projection::random(dim).apply(&x);
        let clusters = Clusters::fit(&sketch, cluster_count(n), 1);
        let diverse = clusters.round_robin();

        let mut done = vec![false; n];
        let mut seq: Vec<u32> = Vec::new();
        let mut head: Option<Head> = None;
        // Unit-length rows, for nearest neighbours by cosine.
        let unit = &xt / xt.norm_scalaropt_dim(2, [1], true).clamp_min(1e-6);
        let snow: usize = std::env::var("SNOW").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut surprises: Vec<u32> = Vec::new();
        let mut shown: Vec<f32> = vec![f32::NAN; n];
        // `START=1`: the first positive of each kind (by id) is labelled first, so the replay
        // measures how well the loop exhausts the kinds it knows, not the luck of finding them.
        if std::env::var("START").is_ok() {
            let mut seen: Vec<&str> = Vec::new();
            for id in 0..n {
                if let Some(k) = kind[id].as_deref()
                    && !seen.contains(&k)
                {
                    seen.push(k);
                    done[id] = true;
                    seq.push(id as u32);
                }
            }
        }
        while seq.len() < labels {
            let positives = seq.iter().filter(|id| kind[**id as usize].is_some()).count();
            let next: Vec<u32> = if positives == 0 {
                diverse.iter().map(|&i| i as u32).filter(|id| !done[*id as usize]).take(every).collect()
            } else {
                let lab: Vec<i64> = seq.iter().map(|id| *id as i64).collect();
                let y: Vec<f32> = seq.iter().map(|id| if kind[*id as usize].is_some() { 1.0 } else { 0.0 }).collect();
                let xl = xt.index_select(0, &Tensor::from_slice(&lab));
                let env = |k: &str, d: f64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
                let (mut h, steps) = match head.take() {
                    Some(h) if env("FRESH", 0.0) == 0.0 => (h, env("CONT_STEPS", 50.0) as usize),
                    _ => (Head::with_hidden(Device::Cpu, env("HIDDEN", 64.0) as usize), env("STEPS", 200.0) as usize),
                };
                let opts = TrainOptions { steps, weight_decay: env("WD", 1e-2), learning_rate: env("LR", 3e-3), ..TrainOptions::default() };
                h.train(&xl, &Tensor::from_slice(&y), &opts);
                // Ranked by the logit, as the loop does: it still orders what the probability rounds to 0.
                let logits: Vec<f32> = Vec::<f32>::try_from(h.logits(&xt).to_kind(Kind::Float)).unwrap();
                head = Some(h);
                let unl: Vec<u32> = (0..n as u32).filter(|id| !done[*id as usize]).collect();
                let l: Vec<f32> = unl.iter().map(|id| logits[*id as usize]).collect();
                let p: Vec<f32> = l.iter().map(|l| binann_core::predictions::probability(*l)).collect();
                for (i, id) in unl.iter().enumerate() {
                    shown[*id as usize] = p[i];
                }
                let mut front: Vec<u32> = Vec::new();
                if snow > 0 {
                    for s in surprises.iter().rev() {
                        let sims = unit.mv(&unit.get(*s as i64));
                        let (_, top) = sims.topk(snow as i64 + 1, 0, true, true);
                        for nb in Vec::<i64>::try_from(top).unwrap() {
                            let nb = nb as u32;
                            if !done[nb as usize] && !front.contains(&nb) {
                                front.push(nb);
                            }
                        }
                    }
                }
                let mut order = rank(&policy, &unl, &l, &p, &clusters, &done, seq.len() as u64);
                // `KNN=SHARE`: that share of the picks by nearest-neighbour evidence, the cosine to
                // the nearest labelled positive less that to the nearest labelled negative.
                let knn_share = env("KNN", 0.0);
                if knn_share > 0.0 {
                    let pos: Vec<i64> = seq.iter().filter(|id| kind[**id as usize].is_some()).map(|id| *id as i64).collect();
                    let neg: Vec<i64> = seq.iter().filter(|id| kind[**id as usize].is_none()).map(|id| *id as i64).collect();
                    let u = unit.index_select(0, &Tensor::from_slice(&unl.iter().map(|i| *i as i64).collect::<Vec<_>>()));
                    let near = |ids: &[i64]| u.matmul(&unit.index_select(0, &Tensor::from_slice(ids)).tr()).amax([1i64], false);
                    let evidence: Vec<f32> = Vec::try_from(near(&pos) - near(&neg)).unwrap();
                    let mut by_evidence: Vec<usize> = (0..unl.len()).collect();
                    by_evidence.sort_by(|&a, &b| evidence[b].total_cmp(&evidence[a]));
                    let mut taken = vec![false; unl.len()];
                    let mut mixed = Vec::with_capacity(unl.len());
                    let (mut a, mut b) = (0, 0);
                    let mut credit = 0.0;
                    while mixed.len() < unl.len() {
                        credit += knn_share;
                        let from_knn = credit >= 1.0;
                        if from_knn {
                            credit -= 1.0;
                        }
                        let (list, cursor) = if from_knn { (&by_evidence, &mut b) } else { (&order, &mut a) };
                        while *cursor < list.len() && taken[list[*cursor]] {
                            *cursor += 1;
                        }
                        if let Some(&i) = list.get(*cursor) {
                            taken[i] = true;
                            mixed.push(i);
                        }
                    }
                    order = mixed;
                }
                let mut picked: Vec<u32> = front.into_iter().take(every).collect();
                for i in order {
                    if picked.len() >= every {
                        break;
                    }
                    if !picked.contains(&unl[i]) {
                        picked.push(unl[i]);
                    }
                }
                picked
            };
            for id in next {
                // A positive the model did not expect: shown below 0.5, or before any prediction (NaN).
                let expected = shown[id as usize] >= 0.5;
                if kind[id as usize].is_some() && !expected {
                    surprises.push(id);
                }
                done[id as usize] = true;
                seq.push(id);
            }
        }
        let total = kind.iter().filter(|k| k.is_some()).count();
        let recall_at = |m: f64| {
            let l = ((total as f64 * m) as usize).min(seq.len());
            seq[..l].iter().filter(|id| kind[**id as usize].is_some()).count() as f64 / total as f64
        };
        let first = seq.iter().position(|id| kind[*id as usize].is_some()).map(|p| p + 1);
        let mut per_kind: HashMap<&str, (usize, usize)> = HashMap::new();
        for k in kind.iter().flatten() {
            per_kind.entry(k).or_default().1 += 1;
        }
        let l2 = (2 * total).min(seq.len());
        for id in &seq[..l2] {
            if let Some(k) = &kind[*id as usize] {
                per_kind.get_mut(k.as_str()).unwrap().0 += 1;
            }
        }
        let mut pk: Vec<String> = per_kind
            .iter()
            .map(|(k, (f, t))| {
                let first = seq.iter().position(|id| kind[*id as usize].as_deref() == Some(*k)).map_or(0, |p| p + 1);
                format!("{k} {:.2} (first {first})", *f as f64 / *t as f64)
            })
            .collect();
        pk.sort();
        println!(
            "{} #{rep} {policy}: first {first:?}, recall 1x {:.3} 1.5x {:.3} 2x {:.3} 3x {:.3}; at 2x {}",
            dir.display(),
            recall_at(1.0),
            recall_at(1.5),
            recall_at(2.0),
            recall_at(3.0),
            pk.join(", ")
        );
    }
    Ok(())
}

/// Orders the unlabelled images (indices into their logits `l` and probabilities `p`).
fn rank(policy: &str, unl: &[u32], l: &[f32], p: &[f32], clusters: &Clusters, done: &[bool], round: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
    let parts: Vec<&str> = policy.split(':').collect();
    match parts[0] {
        "max" => idx,
        // The selector's own mix: `lib:SHARE`.
        "lib" => {
            let of = |id: u32| Some((clusters.assignment[id as usize], clusters.distance[id as usize]));
            let kinds = binann_selector::Kinds { of: &of, sizes: &clusters.sizes };
            let share: f64 = parts[1].parse().unwrap();
            binann_selector::select(unl, l, binann_selector::Strategy::Mix, share, binann_selector::Explore::Clusters, round, &kinds)
        }
        // Every `1/share`-th pick explores: the top image of the least-labelled cluster; below the
        // threshold, every pick does.
        "explore" => {
            let share: f64 = parts[1].parse().unwrap();
            let below: f32 = parts[2].parse().unwrap();
            let mut labelled = vec![0usize; clusters.sizes.len()];
            for (i, d) in done.iter().enumerate() {
                if *d {
                    labelled[clusters.assignment[i] as usize] += 1;
                }
            }
            let mut by_cluster: HashMap<u32, Vec<usize>> = HashMap::new();
            let mut central = idx.clone();
            if parts.get(3) == Some(&"centre") {
                central.sort_by(|&a, &b| clusters.distance[unl[a] as usize].total_cmp(&clusters.distance[unl[b] as usize]));
            }
            for &i in &central {
                by_cluster.entry(clusters.assignment[unl[i] as usize]).or_default().push(i);
            }
            let mut lists: Vec<(u32, Vec<usize>)> = by_cluster.into_iter().collect();
            if parts.get(4) == Some(&"small") {
                lists.sort_by_key(|(c, _)| (labelled[*c as usize], clusters.sizes[*c as usize], *c));
            } else {
                lists.sort_by_key(|(c, _)| (labelled[*c as usize], *c));
            }
            let mut explore = Vec::new();
            let longest = lists.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
            for turn in 0..longest.min(4) {
                for (_, m) in &lists {
                    if let Some(&i) = m.get(turn) {
                        explore.push(i);
                    }
                }
            }
            let mut taken = vec![false; p.len()];
            let mut out = Vec::with_capacity(p.len());
            let (mut e, mut x) = (0, 0);
            let period = (1.0 / share).round().max(1.0) as usize;
            while out.len() < 200 {
                let want_explore = (out.len() + 1) % period == 0 || x >= idx.len() || p[idx[x]] < below;
                let (src, list) = if want_explore && e < explore.len() { (&mut e, &explore) } else { (&mut x, &idx) };
                while *src < list.len() && taken[list[*src]] {
                    *src += 1;
                }
                if *src >= list.len() {
                    break;
                }
                taken[list[*src]] = true;
                out.push(list[*src]);
            }
            out.extend(idx.iter().filter(|&&i| !taken[i]));
            out
        }
        // Images below the threshold: round robin over clusters, fewest labelled first.
        "tail" => {
            let below: f32 = parts[1].parse().unwrap();
            let split = idx.iter().position(|&i| p[i] < below).unwrap_or(idx.len());
            let (head, tail) = idx.split_at(split);
            let mut labelled = vec![0usize; clusters.sizes.len()];
            for (i, d) in done.iter().enumerate() {
                if *d {
                    labelled[clusters.assignment[i] as usize] += 1;
                }
            }
            let mut by_cluster: HashMap<u32, Vec<usize>> = HashMap::new();
            for &i in tail {
                by_cluster.entry(clusters.assignment[unl[i] as usize]).or_default().push(i);
            }
            let mut lists: Vec<(u32, Vec<usize>)> = by_cluster.into_iter().collect();
            let order = parts.get(2).copied().unwrap_or("id");
            let top = |m: &Vec<usize>| m.iter().map(|&i| p[i]).fold(0f32, f32::max);
            match order {
                "id" => lists.sort_by_key(|(c, _)| (labelled[*c as usize], *c)),
                "prob" => lists.sort_by(|(c, a), (d, b)| labelled[*c as usize].cmp(&labelled[*d as usize]).then(top(b).total_cmp(&top(a)))),
                "share" => lists.sort_by(|(c, a), (d, b)| {
                    let sa = labelled[*c as usize] as f64 / clusters.sizes[*c as usize] as f64;
                    let sb = labelled[*d as usize] as f64 / clusters.sizes[*d as usize] as f64;
                    sa.total_cmp(&sb).then(top(b).total_cmp(&top(a)))
                }),
                "small" => lists.sort_by_key(|(c, _)| (labelled[*c as usize], clusters.sizes[*c as usize], *c)),
                o => panic!("unknown order {o}"),
            }
            let longest = lists.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
            let mut out = head.to_vec();
            for turn in 0..longest {
                for (_, m) in &lists {
                    if let Some(&i) = m.get(turn) {
                        out.push(i);
                    }
                }
            }
            out
        }
        other => panic!("unknown policy {other}"),
    }
}
