//! `BINANN_MODE=finetune` end to end on the CPU: the four processes on a small folder of two
//! clearly separable kinds of image (bright positives, dark negatives), labelled through the
//! server's API. The trainer must write finetune checkpoints, the inferrer predictions from them
//! and the selector a ranking; the predictions must separate the unlabelled images of the two
//! kinds, and nothing written (files, the trainer's log) may hold a NaN. (The trainer once logged
//! `accuracy=NaN` on every finetune round, and no test ran this mode.)
//!
//! Needs `scripts/setup.sh` (the ImageNet weights in `.cache/`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use binann_core::RunDirFile;
use binann_core::manifest::Manifest;
use binann_core::predictions::{Predictions, probability};
use binann_core::ranking::Ranking;
use binann_testkit::{ChildGroup, server_url};
use common::{bin, weights};

const IMAGES: usize = 40;
/// Mean probability of the unlabelled positives minus that of the unlabelled negatives (every
/// positive must also be above every negative).
const MARGIN: f32 = 0.5;

fn is_positive(index: usize) -> bool {
    index.is_multiple_of(4)
}

/// Bright (positive) and dark (negative) images of 24 to 40 pixels, each with its own texture.
fn write_folder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..IMAGES {
        let base: u8 = if is_positive(i) { 190 } else { 20 };
        let side = 24 + (i % 5) as u32 * 4;
        let img = image::RgbImage::from_fn(side, side, |x, y| {
            let t = ((x * (i as u32 + 3) + y * 5) % 29) as u8;
            image::Rgb([base + t, base + t / 2, base + ((x ^ y) % 13) as u8])
        });
        img.save(dir.join(format!("{i:02}.png"))).unwrap();
    }
}

#[test]
fn finetune_mode_learns_to_separate_two_kinds_end_to_end() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, trainer_log) = (tmp.path().join("data"), tmp.path().join("run"), tmp.path().join("trainer.log"));
    write_folder(&data);
    let env = [
        ("BINANN_RUNDIR", run.display().to_string()),
        ("BINANN_DATADIR", data.display().to_string()),
        ("BINANN_WEIGHTS", weights().display().to_string()),
        ("BINANN_MODE", "finetune".into()),
        ("BINANN_DEVICE", "cpu".into()),
        ("BINANN_INPUT_SIZE", "64".into()),
        // Several optimiser steps per round on the few labels (a round is an epoch).
        ("BINANN_BATCH", "4".into()),
        ("OMP_WAIT_POLICY", "PASSIVE".into()),
        ("BINANN_POLL_MS", "100".into()),
        ("RUST_LOG", "info".into()),
        ("NO_COLOR", "1".into()),
    ];
    let spawn = |name: &str, stderr: Stdio| {
        Command::new(bin(name)).envs(env.iter().map(|(k, v)| (k, v))).stdout(Stdio::piped()).stderr(stderr).spawn().unwrap()
    };
    let mut server = spawn("binann-server", Stdio::null());
    let base = server_url(&mut server).unwrap();
    let log = std::fs::File::create(&trainer_log).unwrap();
    let _procs = ChildGroup(vec![
        server,
        spawn("binann-trainer", Stdio::from(log)),
        spawn("binann-inferrer", Stdio::null()),
        spawn("binann-selector", Stdio::null()),
    ]);

    // Label half the positives and a third of the negatives, by id, as a person would.
    let (_, manifest) = Manifest::load(&run.join("manifest.bin")).expect("the server wrote the manifest");
    assert_eq!(manifest.len(), IMAGES);
    let index_of = |id: u32| -> usize { manifest.paths[id as usize].trim_end_matches(".png").parse().unwrap() };
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let positives: Vec<u32> = (0..IMAGES as u32).filter(|id| is_positive(index_of(*id))).take(5).collect();
    let negatives: Vec<u32> = (0..IMAGES as u32).filter(|id| !is_positive(index_of(*id))).take(10).collect();
    for (ids, label) in [(&positives, "positive"), (&negatives, "negative")] {
        for id in ids {
            let r = agent
                .post(&format!("{base}/api/annotations"))
                .set("X-Client", "person")
                .send_json(serde_json::json!({"id": id, "label": label}))
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let labels = (positives.len() + negatives.len()) as u64;
    let unlabelled = IMAGES - labels as usize;

    // Wait for a finetune checkpoint on every label, predictions of every unlabelled image from
    // one, a ranking from one, and predictions that separate the two kinds (the model keeps
    // training: the first rounds' may not yet).
    let deadline = started + Duration::from_secs(120);
    let mut last = String::from("nothing yet");
    let (meta, predictions, ranking, gap) = loop {
        let meta = binann_model::checkpoint::read_meta(&run.join("checkpoint.safetensors")).ok();
        let predictions = Predictions::load(&run.join("predictions.bin")).ok().map(|(_, p)| p);
        let ranking = Ranking::load(&run.join("ranking.bin")).ok().map(|(_, r)| r);
        let from_all = |mode: &str, used: u64| mode == binann_model::MODE_FINETUNE && used == labels;
        if let (Some(meta), Some(p), Some(r)) = (meta, predictions, ranking)
            && from_all(meta.mode.as_str(), meta.labels_used)
            && from_all(p.model.mode.as_str(), p.model.labels_used)
            && r.model.as_ref().is_some_and(|m| from_all(m.mode.as_str(), m.labels_used))
            && p.ids.len() == unlabelled
            && r.predicted == unlabelled as u64
        {
            let probs: Vec<f32> = p.logits.iter().map(|l| probability(*l)).collect();
            let mean = |positive: bool| {
                let ps: Vec<f32> =
                    p.ids.iter().zip(&probs).filter(|(id, _)| is_positive(index_of(**id)) == positive).map(|(_, q)| *q).collect();
                ps.iter().sum::<f32>() / ps.len() as f32
            };
            let gap = mean(true) - mean(false);
            let lowest_positive =
                p.ids.iter().zip(&probs).filter(|(id, _)| is_positive(index_of(**id))).map(|(_, q)| *q).fold(1.0, f32::min);
            let highest_negative =
                p.ids.iter().zip(&probs).filter(|(id, _)| !is_positive(index_of(**id))).map(|(_, q)| *q).fold(0.0, f32::max);
            if gap > MARGIN && lowest_positive > highest_negative {
                break (meta, p, r, gap);
            }
            last = format!(
                "checkpoint generation {}, mean p positive - negative {gap:.3}, lowest positive {lowest_positive:.3}, highest negative {highest_negative:.3}",
                meta.generation
            );
        }
        assert!(
            Instant::now() < deadline,
            "no predictions separating the two kinds by {MARGIN} within 2 minutes ({last}); trainer log:\n{}",
            std::fs::read_to_string(&trainer_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("finetune: generation {} separates the kinds by {gap:.3} after {:.1} s", meta.generation, started.elapsed().as_secs_f64());

    assert!(meta.loss.is_finite(), "checkpoint loss {}", meta.loss);
    assert!(predictions.logits.iter().all(|l| !l.is_nan()), "a NaN logit");
    assert!(ranking.probs.iter().all(|p| (0.0..=1.0).contains(p)), "a probability outside 0..1 (or NaN)");
    assert!(predictions.failed.is_empty(), "{:?}", predictions.failed);
    assert!(predictions.model.loss.is_finite() && ranking.model.as_ref().is_some_and(|m| m.loss.is_finite()));
    let mut ids: Vec<u32> = ranking.ids.clone();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), ranking.ids.len(), "an image twice in the ranking");
    // The server picks the ranking up on its next look at the run directory.
    let stats_deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats: serde_json::Value = agent.get(&format!("{base}/api/stats")).call().unwrap().into_json().unwrap();
        if stats["model"]["trained_on"].as_u64() == Some(labels) || Instant::now() > stats_deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stats["model"]["trained_on"].as_u64(), Some(labels), "{stats}");
    assert_eq!(stats["model"]["mode"].as_str(), Some(binann_model::MODE_FINETUNE), "{stats}");

    let log = std::fs::read_to_string(&trainer_log).unwrap();
    let rounds = log.lines().filter(|l| l.contains("checkpoint written")).count();
    assert!(rounds > 0, "the trainer logged no round:\n{log}");
    assert!(log.lines().filter(|l| l.contains("checkpoint written")).all(|l| l.contains("loss")), "{log}");
    assert!(!log.contains("NaN"), "the trainer logged a NaN:\n{log}");
}
