//! Seed images: with nothing but negative labels the trainer has nothing to learn a positive
//! from, and waits; with five example shoes from outside the folder (Fashion-MNIST's test split),
//! it trains, and the ranking leads with the folder's shoes.
//!
//! Needs `scripts/setup.sh` (Fashion-MNIST and the ImageNet weights in `.cache/`).

mod common;

use std::process::Command;

use binann_core::RunDirFile;
use binann_core::annotations::Label;
use binann_core::ranking::Ranking;
use common::{bin, labelled_run, run_ok, weights, workspace};

#[test]
fn seed_images_let_the_model_rank_before_the_first_positive_label() {
    let tmp = tempfile::tempdir().unwrap();
    // 600 images, a third of them shoes; the first 40 labelled, shoes skipped: negatives only.
    let (run, manifest) = labelled_run(tmp.path(), 600, 40, |_, shoe| if shoe { Label::Skip } else { Label::Negative });
    let data = tmp.path().join("data");
    let weights = weights();
    let env = [
        ("BINANN_RUNDIR", run.to_str().unwrap()),
        ("BINANN_DATADIR", data.to_str().unwrap()),
        ("BINANN_WEIGHTS", weights.to_str().unwrap()),
        ("BINANN_INPUT_SIZE", "64"),
        ("BINANN_DEVICE", "cpu"),
        ("RUST_LOG", "info"),
    ];
    let once = |name: &str| run_ok(Command::new(bin(name)).arg("--once").envs(env));
    let checkpoint = run.join("checkpoint.safetensors");

    once("binann-inferrer");
    let out = Command::new(bin("binann-trainer")).arg("--once").envs(env).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!checkpoint.exists(), "negatives alone must not make a model");
    assert!(log.contains("waiting for at least one positive (or seed image)"), "{log}");

    // Five shoes the folder does not hold, kept as the server keeps them.
    let extra = tmp.path().join("extra");
    let truth = tmp.path().join("extra.csv");
    run_ok(
        Command::new(bin("binann"))
            .args(["demo-data", "--count", "60", "--skip", "60000", "--positive", "shoe"])
            .arg("--source")
            .arg(workspace().join(".cache/fashion-mnist"))
            .arg("--out")
            .arg(&extra)
            .arg("--truth")
            .arg(&truth),
    );
    let shoes: Vec<String> =
        std::fs::read_to_string(&truth).unwrap().lines().skip(1).filter_map(truth_row).filter(|(_, shoe)| *shoe).map(|(p, _)| p).collect();
    assert!(shoes.len() >= 5, "{shoes:?}");
    for shoe in &shoes[..5] {
        let bytes = std::fs::read(extra.join(shoe)).unwrap();
        binann_core::seeds::add(&run.join("seeds"), &bytes, "png").unwrap();
    }

    once("binann-trainer");
    let meta = binann_model::checkpoint::read_meta(&checkpoint).expect("a model from the seed images and the negatives");
    let negatives = 40 - manifest.paths.iter().take(40).filter(|p| is_shoe(&data, p)).count() as u64;
    assert_eq!((meta.positives, meta.labels_used), (5, negatives + 5));
    once("binann-inferrer");
    once("binann-selector");
    let (_, ranking) = Ranking::load(&run.join("ranking.bin")).unwrap();
    assert!(ranking.model.as_ref().is_some_and(|m| m.positives_used == 5), "the ranking comes from that model: {}", ranking.selector);

    let unlabelled: Vec<&str> = ranking.ids.iter().filter(|id| **id >= 40).map(|id| &manifest.paths[*id as usize]).collect();
    let base = unlabelled.iter().filter(|p| is_shoe(&data, p)).count() as f64 / unlabelled.len() as f64;
    let top = &unlabelled[..60];
    let precision = top.iter().filter(|p| is_shoe(&data, p)).count() as f64 / top.len() as f64;
    println!("shoes among the unlabelled: {:.0} %; among the ranking's first 60: {:.0} %", base * 100.0, precision * 100.0);
    assert!(precision >= 0.8 && precision >= 2.0 * base, "first 60: {precision:.2} shoes, base rate {base:.2}");
}

/// Whether the demo image at `rel` is a shoe, from the truth file `labelled_run` wrote beside it.
fn is_shoe(data: &std::path::Path, rel: &str) -> bool {
    thread_local! {
        static TRUTH: std::cell::RefCell<Option<std::collections::HashMap<String, bool>>> = const { std::cell::RefCell::new(None) };
    }
    TRUTH.with(|t| {
        let mut t = t.borrow_mut();
        let truth = t.get_or_insert_with(|| {
            let text = std::fs::read_to_string(data.parent().unwrap().join("truth.csv")).unwrap();
            text.lines().skip(1).map(|l| truth_row(l).unwrap()).collect()
        });
        truth[rel]
    })
}

/// (path, positive?) of a truth file's row: `path,label,class` (demo paths hold no comma).
fn truth_row(line: &str) -> Option<(String, bool)> {
    let mut fields = line.split(',');
    Some((fields.next()?.to_owned(), fields.next()? == "1"))
}
