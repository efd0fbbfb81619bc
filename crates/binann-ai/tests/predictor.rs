//! An exported predictor reproduces the inferrer's probabilities on the same images.
//! Needs `scripts/setup.sh` (Fashion-MNIST and the ImageNet weights in `.cache/`).

mod common;

use std::process::Command;

use binann_core::annotations::Label;
use binann_core::predictions::Predictions;
use binann_core::rundir::RunDir;
use common::{bin, labelled_run, run_ok, weights};

#[test]
fn exported_predictor_reproduces_the_inferrer() {
    let weights = weights();
    let tmp = tempfile::tempdir().unwrap();
    // A manifest and 40 labels from the ground truth, written as the server would.
    let (run, manifest) = labelled_run(tmp.path(), 80, 40, |_, positive| if positive { Label::Positive } else { Label::Negative });
    let data = tmp.path().join("data");
    let rundir = RunDir::open_existing(&run);
    let env = [
        ("BINANN_RUNDIR", run.to_str().unwrap()),
        ("BINANN_WEIGHTS", weights.to_str().unwrap()),
        ("BINANN_INPUT_SIZE", "64"),
        ("BINANN_DEVICE", "cpu"),
        ("OMP_WAIT_POLICY", "PASSIVE"),
    ];
    run_ok(Command::new(bin("binann-trainer")).arg("--once").envs(env));
    run_ok(Command::new(bin("binann-inferrer")).arg("--once").envs(env));
    let (_, predictions) = Predictions::load(&rundir.predictions(0, 1)).unwrap();
    assert_eq!(predictions.ids.len(), 40, "every unlabelled image is predicted");

    // The same images split between two inferrer shards, merged by the selector, agree with one.
    let sharded = tmp.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    for f in ["BINANN-RUNDIR", "manifest.bin", "annotations.journal", "checkpoint.safetensors"] {
        std::fs::copy(run.join(f), sharded.join(f)).unwrap();
    }
    let env2 = [
        ("BINANN_RUNDIR", sharded.to_str().unwrap()),
        ("BINANN_WEIGHTS", weights.to_str().unwrap()),
        ("BINANN_INPUT_SIZE", "64"),
        ("BINANN_DEVICE", "cpu"),
        ("OMP_WAIT_POLICY", "PASSIVE"),
    ];
    for shard in ["0/2", "1/2"] {
        run_ok(Command::new(bin("binann-inferrer")).args(["--once", "--shard", shard]).envs(env2));
    }
    run_ok(Command::new(bin("binann-selector")).arg("--once").envs(env2));
    let (_, ranking) = binann_core::ranking::Ranking::load(&sharded.join("ranking.bin")).unwrap();
    assert_eq!(ranking.predicted, 40);
    let one: std::collections::HashMap<u32, f32> = predictions.ids.iter().copied().zip(predictions.probs.iter().copied()).collect();
    for (id, p) in ranking.ids.iter().zip(&ranking.probs) {
        assert!((one[id] - p).abs() < 1e-4, "image {id}: one inferrer {}, shards {p}", one[id]);
    }
    assert!(ranking.probs.windows(2).all(|w| w[0] >= w[1]), "max-probability order");

    let exported = tmp.path().join("predictor");
    let err = Command::new(bin("binann-predict"))
        .args(["export", "--threshold", "2"])
        .arg("--rundir")
        .arg(&run)
        .arg("--out")
        .arg(&exported)
        .envs(env)
        .output()
        .unwrap();
    assert!(!err.status.success() && String::from_utf8_lossy(&err.stderr).contains("between 0 and 1"));
    run_ok(Command::new(bin("binann-predict")).arg("export").arg("--rundir").arg(&run).arg("--out").arg(&exported).envs(env));
    let description: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(exported.join("predictor.json")).unwrap()).unwrap();
    assert_eq!((description["input_size"].as_u64(), description["labels_used"].as_u64()), (Some(64), Some(40)));
    // The predictor is self-contained: move it away from the run directory first.
    let moved = tmp.path().join("moved");
    std::fs::rename(&exported, &moved).unwrap();
    let csv = run_ok(
        Command::new(bin("binann-predict")).args(["apply", "--device", "cpu"]).arg("--predictor").arg(&moved).arg("--images").arg(&data),
    );
    let applied: std::collections::HashMap<String, f32> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[1].parse().unwrap())
        })
        .collect();
    assert_eq!(applied.len(), 80);
    for (id, p) in predictions.ids.iter().zip(&predictions.probs) {
        let q = applied[&manifest.paths[*id as usize]];
        assert!((p - q).abs() < 1e-4, "image {id}: inferrer {p}, exported predictor {q}");
    }
}

#[test]
fn a_finetuned_model_exports_and_predicts_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, images) = (tmp.path().join("run"), tmp.path().join("images"));
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..5u8 {
        image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([i * 40, (x * 6) as u8, (y * 8) as u8]))
            .save(images.join(format!("{i}.png")))
            .unwrap();
    }
    let rundir = RunDir::create_or_open(&run).unwrap();
    let model = binann_model::FullModel::untrained(32, tch::Device::Cpu);
    let meta = binann_model::ModelMeta {
        backbone: binann_model::BACKBONE_NAME.into(),
        input_size: 32,
        mode: binann_model::MODE_FINETUNE.into(),
        generation: 1,
        labels_used: 10,
        positives: 2,
        loss: 0.5,
        created_ms: 0,
    };
    model.save(&rundir.checkpoint(), &meta).unwrap();
    let exported = tmp.path().join("predictor");
    run_ok(Command::new(bin("binann-predict")).arg("export").arg("--rundir").arg(&run).arg("--out").arg(&exported));
    assert!(exported.join("model.safetensors").exists());
    let csv = run_ok(
        Command::new(bin("binann-predict"))
            .args(["apply", "--device", "cpu"])
            .arg("--predictor")
            .arg(&exported)
            .arg("--images")
            .arg(&images),
    );
    let preprocess = binann_model::Preprocess { size: 32 };
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let pixels = preprocess.load_image(&images.join(f[0])).unwrap();
        let expected = model.predict(&tch::Tensor::from_slice(&pixels).view([1, 3, 32, 32])).double_value(&[0]) as f32;
        let got: f32 = f[1].parse().unwrap();
        assert!((expected - got).abs() < 1e-5, "{}: model {expected}, exported predictor {got}", f[0]);
    }
    assert_eq!(csv.lines().count(), 6);
}
