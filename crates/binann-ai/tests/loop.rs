//! The whole loop on real images: the four processes on 1,000 Fashion-MNIST images; ~100 labels
//! from the ground truth ("sneaker", ~10 %) on a random sample, through the HTTP API;
//! then the ranking's top 100 must hold well over the base rate of sneakers.
//!
//! Needs `scripts/setup.sh` (Fashion-MNIST and the ImageNet weights in `.cache/`).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use binann_core::RunDirFile;
use binann_core::ranking::Ranking;
use binann_testkit::{ChildGroup, server_url};
use common::{bin, weights, workspace};

#[test]
fn labels_make_the_ranking_find_sneakers() {
    let weights = weights();
    let fashion = workspace().join(".cache/fashion-mnist");
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, truth_csv) = (tmp.path().join("data"), tmp.path().join("run"), tmp.path().join("truth.csv"));
    let status = Command::new(bin("binann"))
        .args(["demo-data", "--count", "1000", "--positive", "sneaker"])
        .arg("--source")
        .arg(&fashion)
        .arg("--out")
        .arg(&data)
        .arg("--truth")
        .arg(&truth_csv)
        .status()
        .unwrap();
    assert!(status.success());
    let truth: HashMap<String, bool> = std::fs::read_to_string(&truth_csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split(',');
            (f.next().unwrap().to_owned(), f.next().unwrap() == "1")
        })
        .collect();
    let base_rate = truth.values().filter(|p| **p).count() as f64 / truth.len() as f64;

    let env = [
        ("BINANN_RUNDIR", run.to_str().unwrap()),
        ("BINANN_DATADIR", data.to_str().unwrap()),
        ("BINANN_WEIGHTS", weights.to_str().unwrap()),
        ("BINANN_INPUT_SIZE", "96"),
        ("BINANN_DEVICE", "cpu"),
        ("OMP_WAIT_POLICY", "PASSIVE"),
        ("BINANN_POLL_MS", "200"),
        ("RUST_LOG", "info"),
    ];
    let spawn = |name: &str, args: &[&str]| {
        Command::new(bin(name)).args(args).envs(env).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap()
    };
    let mut server = spawn("binann-server", &["--port", "0"]);
    let base = server_url(&mut server).unwrap();
    let _procs = ChildGroup(vec![server, spawn("binann-trainer", &[]), spawn("binann-inferrer", &[]), spawn("binann-selector", &[])]);

    // 100 labels from the ground truth on a fixed random sample (not in the served order: the
    // model would otherwise find most sneakers while labelling, leaving few for the ranking).
    let (_, manifest) = binann_core::manifest::Manifest::load(&run.join("manifest.bin")).unwrap();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let labelled: Vec<u32> = binann_core::ranking::default_order(manifest.len(), 12345).into_iter().take(100).collect();
    for &id in &labelled {
        let label = if truth[&manifest.paths[id as usize]] { "positive" } else { "negative" };
        let r = agent
            .post(&format!("{base}/api/annotations"))
            .set("X-Client", "sim")
            .send_json(serde_json::json!({"id": id, "label": label}))
            .unwrap();
        assert_eq!(r.status(), 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    let found = labelled.iter().filter(|id| truth[&manifest.paths[**id as usize]]).count();

    // Wait for a ranking from a model trained on all 100 labels, over every unlabelled image.
    let deadline = Instant::now() + Duration::from_secs(240);
    let ranking = loop {
        if let Ok((_, r)) = Ranking::load(&run.join("ranking.bin"))
            && r.model.as_ref().is_some_and(|m| m.labels_used == 100)
            && r.predicted == 900
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no ranking of all 900 unlabelled images from a model trained on the 100 labels within 4 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let top: Vec<u32> = ranking.ids.iter().copied().filter(|id| !labelled.contains(id)).take(100).collect();
    assert_eq!(top.len(), 100);
    let hits = top.iter().filter(|id| truth[&manifest.paths[**id as usize]]).count();
    let remaining = truth.values().filter(|p| **p).count() - found;
    println!(
        "base rate {:.1} %; positives among the 100 labels: {found}; sneakers in the ranking's top 100: {hits} (of {remaining} left)",
        base_rate * 100.0
    );
    assert!(hits >= 50, "only {hits} sneakers in the top 100 (base rate {:.0} %)", base_rate * 100.0);
    // The page's stats name the model trained on every label. A ranking from a checkpoint of one
    // label fewer was once served for a moment after one from the 100-label checkpoint, so the
    // stats are read until they settle, not once.
    let stats = loop {
        let stats: serde_json::Value = agent.get(&format!("{base}/api/stats")).call().unwrap().into_json().unwrap();
        if stats["model"]["trained_on"].as_u64() == Some(100) {
            break stats;
        }
        assert!(Instant::now() < deadline, "the stats never named a model trained on the 100 labels: {stats}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(stats["online"]["evaluated"].as_u64().unwrap() > 0, "{stats}");
}
