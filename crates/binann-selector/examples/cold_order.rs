//! Where the first positives of each kind fall in the diverse cold-start order, against the
//! default shuffle: `cargo run -p binann-selector --example cold_order -- RUNDIR TRUTH.csv [K...]`
//! (TRUTH: path,label,class as `binann demo-data` writes it). A tool for choosing the clustering.

use std::collections::HashMap;

use binann_core::RunDirFile;
use binann_core::manifest::Manifest;
use binann_core::ranking::{DEFAULT_ORDER_SEED, default_order};
use binann_selector::clusters::{Clusters, SketchCache, cluster_count};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rundir = std::path::Path::new(&args[1]);
    let truth = std::fs::read_to_string(&args[2])?;
    let kind: HashMap<&str, &str> = truth
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1] == "1").then(|| (f[0], f[2]))
        })
        .collect();
    let (_, manifest) = Manifest::load(&rundir.join("manifest.bin"))?;
    let mut sketches = SketchCache::default();
    sketches.refresh(&rundir.join("embeddings"));
    let kind_of = |id: u32| manifest.path(id).and_then(|p| kind.get(p)).copied();
    let report = |name: &str, ids: &[u32]| {
        let mut firsts: HashMap<&str, usize> = HashMap::new();
        let mut tenth = None;
        let mut found = 0;
        for (i, id) in ids.iter().enumerate() {
            if let Some(k) = kind_of(*id) {
                firsts.entry(k).or_insert(i + 1);
                found += 1;
                if found == 10 && tenth.is_none() {
                    tenth = Some(i + 1);
                }
            }
        }
        let mut f: Vec<_> = firsts.into_iter().collect();
        f.sort();
        println!("{name:>24}: first of each kind {f:?}, tenth positive {tenth:?}");
    };
    println!("{} embedded images", sketches.len());
    let embedded: std::collections::HashSet<u32> = sketches.ids.iter().copied().collect();
    let shuffle: Vec<u32> = default_order(manifest.len(), DEFAULT_ORDER_SEED).into_iter().filter(|id| embedded.contains(id)).collect();
    report("default shuffle", &shuffle);
    // Farthest-first traversal over the first `pool` images of the shuffle.
    for pool in [1024usize, 2048, 4096, sketches.len()] {
        let rows: Vec<usize> = {
            let pos: HashMap<u32, usize> = sketches.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            shuffle.iter().take(pool).map(|id| pos[id]).collect()
        };
        let d2 = |a: usize, b: usize| -> f32 { sketches.row(a).iter().zip(sketches.row(b)).map(|(x, y)| (x - y) * (x - y)).sum() };
        let mut nearest = vec![f32::INFINITY; rows.len()];
        let mut order = Vec::new();
        let mut cur = 0usize;
        for _ in 0..rows.len().min(1500) {
            order.push(sketches.ids[rows[cur]]);
            nearest[cur] = -1.0;
            for (j, r) in rows.iter().enumerate() {
                if nearest[j] >= 0.0 {
                    nearest[j] = nearest[j].min(d2(rows[cur], *r));
                }
            }
            cur = (0..rows.len()).max_by(|a, b| nearest[*a].total_cmp(&nearest[*b])).unwrap();
        }
        report(&format!("farthest-first pool={pool}"), &order);
        for k in [pool / 64, pool / 16, pool / 8] {
            let vals: Vec<f32> = rows.iter().flat_map(|r| sketches.row(*r).to_vec()).collect();
            let c = Clusters::fit(&vals, k.max(8), 1);
            let order: Vec<u32> = c.round_robin().iter().map(|i| sketches.ids[rows[*i]]).collect();
            report(&format!("kmeans pool={pool} k={}", k.max(8)), &order);
        }
    }
    let ks: Vec<usize> =
        if args.len() > 3 { args[3..].iter().map(|k| k.parse().unwrap()).collect() } else { vec![cluster_count(sketches.len())] };
    for k in ks {
        for seed in 1..=3 {
            let c = Clusters::fit(&sketches.values, k, seed);
            let order: Vec<u32> = c.round_robin().iter().map(|i| sketches.ids[*i]).collect();
            report(&format!("k={k} seed={seed}"), &order);
        }
    }
    Ok(())
}
