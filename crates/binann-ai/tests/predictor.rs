//! An exported predictor reproduces the inferrer's probabilities on the same images.
//! Needs `scripts/setup.sh` (Fashion-MNIST and the ImageNet weights in `.cache/`).

mod common;

use std::process::Command;

use binann_core::RunDirFile;
use binann_core::annotations::Label;
use binann_core::predictions::{Predictions, probability};
use binann_core::rundir::RunDir;
use common::{bin, labelled_run, run_ok, weights};

/// The AI processes' environment for `run`: the CPU at a 64 px input.
fn cpu_env(run: &std::path::Path, weights: &std::path::Path) -> [(&'static str, String); 5] {
    [
        ("BINANN_RUNDIR", run.display().to_string()),
        ("BINANN_WEIGHTS", weights.display().to_string()),
        ("BINANN_INPUT_SIZE", "64".to_owned()),
        ("BINANN_DEVICE", "cpu".to_owned()),
        ("OMP_WAIT_POLICY", "PASSIVE".to_owned()),
    ]
}

#[test]
fn exported_predictor_reproduces_the_inferrer() {
    let weights = weights();
    let tmp = tempfile::tempdir().unwrap();
    // A manifest and 40 labels from the ground truth, written as the server would.
    let (run, manifest) = labelled_run(tmp.path(), 80, 40, |_, positive| if positive { Label::Positive } else { Label::Negative });
    let data = tmp.path().join("data");
    let rundir = RunDir::open_existing(&run);
    let env = cpu_env(&run, &weights);
    run_ok(Command::new(bin("binann-trainer")).arg("--once").envs(env.clone()));
    run_ok(Command::new(bin("binann-inferrer")).arg("--once").envs(env.clone()));
    let (_, predictions) = Predictions::load(&rundir.predictions(0, 1)).unwrap();
    assert_eq!(predictions.ids.len(), 40, "every unlabelled image is predicted");

    // The same images split between two inferrer shards, merged by the selector, agree with one.
    let sharded = tmp.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    for f in ["BINANN-RUNDIR", "manifest.bin", "annotations.journal", "checkpoint.safetensors"] {
        std::fs::copy(run.join(f), sharded.join(f)).unwrap();
    }
    // Max-probability whatever the default strategy: the order checked below is the merge alone.
    let env2: Vec<_> = cpu_env(&sharded, &weights).into_iter().chain([("BINANN_SELECTOR", "max-probability".to_owned())]).collect();
    for shard in ["0/2", "1/2"] {
        run_ok(Command::new(bin("binann-inferrer")).args(["--once", "--shard", shard]).envs(env2.clone()));
    }
    run_ok(Command::new(bin("binann-selector")).arg("--once").envs(env2.clone()));
    let (_, ranking) = binann_core::ranking::Ranking::load(&sharded.join("ranking.bin")).unwrap();
    assert_eq!(ranking.predicted, 40);
    let one: std::collections::HashMap<u32, f32> =
        predictions.ids.iter().copied().zip(predictions.logits.iter().map(|l| probability(*l))).collect();
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
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(!err.status.success() && String::from_utf8_lossy(&err.stderr).contains("between 0 and 1"));
    run_ok(Command::new(bin("binann-predict")).arg("export").arg("--rundir").arg(&run).arg("--out").arg(&exported).envs(env.clone()));
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
    for (id, logit) in predictions.ids.iter().zip(&predictions.logits) {
        let p = probability(*logit);
        let q = applied[&manifest.paths[*id as usize]];
        assert!((p - q).abs() < 1e-4, "image {id}: inferrer {p}, exported predictor {q}");
    }

    // A predictor exported before the multi-level embedding (a head on the final map's 1280
    // values, its backbone named "mobilenet_v2") still applies, on the embedding it was made for.
    let older = tmp.path().join("older");
    std::fs::create_dir_all(&older).unwrap();
    std::fs::copy(moved.join("backbone.safetensors"), older.join("backbone.safetensors")).unwrap();
    let final_map = binann_model::Embedding::FinalMap;
    let backbone = binann_model::Backbone::load(&weights, 64, tch::Device::Cpu).unwrap().with_embedding(final_map);
    let files: Vec<std::path::PathBuf> = manifest.paths.iter().map(|p| data.join(p)).collect();
    let values: Vec<f32> = backbone.embed_paths(&files, 16, |_| {}).into_iter().flat_map(|r| r.unwrap()).collect();
    let x = tch::Tensor::from_slice(&values).view([files.len() as i64, 1280]);
    let y = tch::Tensor::from_slice(&(0..files.len()).map(|i| (i % 3 == 0) as u8 as f32).collect::<Vec<f32>>());
    let mut head = binann_model::Head::with_input(tch::Device::Cpu, 1280, 16);
    head.train(&x, &y, &binann_model::TrainOptions { steps: 100, ..Default::default() });
    let meta = binann_model::ModelMeta {
        backbone: final_map.name().to_owned(),
        input_size: 64,
        mode: binann_model::MODE_HEAD.to_owned(),
        generation: 1,
        labels_used: files.len() as u64,
        positives: 27,
        loss: 0.0,
        created_ms: 0,
    };
    head.save(&older.join("head.safetensors"), &meta).unwrap();
    let mut description: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(moved.join("predictor.json")).unwrap()).unwrap();
    description["backbone"] = "mobilenet_v2".into();
    std::fs::write(older.join("predictor.json"), description.to_string()).unwrap();
    let csv = run_ok(
        Command::new(bin("binann-predict")).args(["apply", "--device", "cpu"]).arg("--predictor").arg(&older).arg("--images").arg(&data),
    );
    let expected: Vec<f32> = Vec::try_from(head.predict(&x)).unwrap();
    let spread = expected.iter().cloned().fold(f32::MAX, f32::min)..expected.iter().cloned().fold(f32::MIN, f32::max);
    assert!(spread.end - spread.start > 0.5, "the older head's probabilities spread out: {spread:?}");
    let applied: std::collections::HashMap<&str, f32> =
        csv.lines().skip(1).map(|l| l.split(',').collect::<Vec<_>>()).map(|f| (f[0], f[1].parse().unwrap())).collect();
    for (path, p) in manifest.paths.iter().zip(&expected) {
        let q = applied[path];
        assert!((p - q).abs() < 1e-4, "{path}: the older head on the final map {p}, applied {q}");
    }
}

/// A head continued round after round on labels it separates grows its logits past ±100 (seen in
/// the loop: a loss of 1e-44), where every `f32` probability is exactly 0. The selector must still
/// hand the images out in the model's order, which only the logits keep: ordered by probability
/// (before format 4) they were ties, handed out by id.
#[test]
fn the_selector_ranks_by_logit_where_probabilities_are_all_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, manifest) = labelled_run(tmp.path(), 80, 40, |_, positive| if positive { Label::Positive } else { Label::Negative });
    let state = binann_core::annotations::AnnotationState::load(&run.join("annotations.journal")).unwrap();
    let ids: Vec<u32> = (0..manifest.len() as u32).filter(|id| !state.is_done(*id)).collect();
    assert_eq!(ids.len(), 40);
    // Logits from -200 to -239, in an order unrelated to the ids.
    let logits: Vec<f32> = ids.iter().map(|id| -200.0 - ((id * 17) % 40) as f32).collect();
    let model = binann_core::predictions::ModelInfo {
        checkpoint_generation: 9,
        checkpoint_ms: 0,
        labels_used: 40,
        positives_used: 20,
        mode: "head".into(),
        backbone: "mobilenet_v2".into(),
        input_size: 64,
        loss: 1e-44,
    };
    Predictions { model, shard: (0, 1), ids: ids.clone(), logits: logits.clone(), failed: vec![], created_ms: 0 }
        .save(&RunDir::open_existing(&run).predictions(0, 1), 1)
        .unwrap();
    run_ok(Command::new(bin("binann-selector")).arg("--once").env("BINANN_RUNDIR", &run).env("BINANN_SELECTOR", "max-probability"));
    let (_, ranking) = binann_core::ranking::Ranking::load(&run.join("ranking.bin")).unwrap();
    assert!(ranking.probs.iter().all(|p| *p == 0.0), "every probability rounds to 0: {:?}", ranking.probs);
    let mut by_logit: Vec<(f32, u32)> = logits.into_iter().zip(ids.iter().copied()).collect();
    by_logit.sort_by(|a, b| b.0.total_cmp(&a.0));
    let expected: Vec<u32> = by_logit.iter().map(|(_, id)| *id).collect();
    assert_ne!(expected, ids, "the logits' order must differ from the ids' for this test to show anything");
    assert_eq!(ranking.ids, expected, "the ranking follows the logits");
}

/// While the model calls nothing positive, half the places of a positives-first ranking go to the
/// images farthest from everything labelled: a kind of positive nobody has labelled yet is there,
/// and the model's best guesses among negatives would keep it last.
#[test]
fn the_selector_explores_where_nothing_is_labelled_while_the_model_calls_nothing_positive() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = labelled_run(tmp.path(), 80, 30, |_, positive| if positive { Label::Positive } else { Label::Negative });
    let rundir = RunDir::open_existing(&run);
    // Embeddings: ids 0..70 around one point, 70..80 (unlabelled) around another, far away.
    let dim = 16;
    let mut rows = Vec::new();
    for id in 0..80u32 {
        for j in 0..dim {
            let centre = if (id < 70 && j == 0) || (id >= 70 && j == 1) { 1.0 } else { 0.0 };
            rows.push(centre + 0.01 * ((id * 7 + j as u32 * 3) % 11) as f32);
        }
    }
    std::fs::create_dir_all(rundir.embeddings_dir()).unwrap();
    binann_core::embeddings::EmbeddingChunk {
        ids: (0..80).collect(),
        dim: dim as u32,
        model: "test".into(),
        values: binann_core::embeddings::EmbeddingChunk::pack(&rows),
        failed: vec![],
    }
    .save(&binann_core::embeddings::EmbeddingChunk::path(&rundir.embeddings_dir(), 0, 1, 0), 1)
    .unwrap();
    let unlabelled: Vec<u32> = (30..80).collect();
    let rank = |logits: Vec<f32>| {
        let model = binann_core::predictions::ModelInfo {
            checkpoint_generation: 2,
            checkpoint_ms: 0,
            labels_used: 30,
            positives_used: 10,
            mode: "head".into(),
            backbone: "mobilenet_v2".into(),
            input_size: 64,
            loss: 0.1,
        };
        Predictions { model, shard: (0, 1), ids: unlabelled.clone(), logits, failed: vec![], created_ms: 0 }
            .save(&rundir.predictions(0, 1), 1)
            .unwrap();
        run_ok(Command::new(bin("binann-selector")).arg("--once").env("BINANN_RUNDIR", &run).env("BINANN_SELECTOR", "max-probability"));
        binann_core::ranking::Ranking::load(&run.join("ranking.bin")).unwrap().1
    };
    // Every logit negative, the far images' lowest: by the model alone they would come last.
    let dry = rank(unlabelled.iter().map(|id| -5.0 - *id as f32).collect());
    assert!(dry.selector.contains("exploring"), "{}", dry.selector);
    let far_early = dry.ids[..10].iter().filter(|id| **id >= 70).count();
    assert!(far_early >= 2, "exploring picks from the unlabelled region among the first 10: {:?}", &dry.ids[..10]);
    let mut all = dry.ids.clone();
    all.sort_unstable();
    assert_eq!(all, unlabelled, "each unlabelled image once");
    // One image called positive: the model's order alone.
    let mut logits: Vec<f32> = unlabelled.iter().map(|id| -5.0 - *id as f32).collect();
    logits[0] = 3.0;
    let wet = rank(logits);
    assert_eq!(wet.selector, "max-probability");
    assert_eq!(wet.ids, unlabelled, "by logit, highest first");
}

/// `BINANN_HEAD_HIDDEN` shapes the head the trainer writes: 0 is a logistic regression (no hidden
/// layer), the default an MLP of `DEFAULT_HIDDEN_UNITS`; both load and separate the labels.
#[test]
fn the_trainer_builds_the_head_asked_for() {
    let weights = weights();
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = labelled_run(tmp.path(), 60, 30, |_, positive| if positive { Label::Positive } else { Label::Negative });
    for (hidden, expected) in [(Some("0"), 0), (None, binann_model::DEFAULT_HIDDEN_UNITS)] {
        let _ = std::fs::remove_file(run.join("checkpoint.safetensors"));
        let mut trainer = Command::new(bin("binann-trainer"));
        trainer.arg("--once").envs(cpu_env(&run, &weights));
        if let Some(h) = hidden {
            trainer.env("BINANN_HEAD_HIDDEN", h);
        }
        run_ok(&mut trainer);
        let (head, meta) = binann_model::Head::load(&run.join("checkpoint.safetensors"), tch::Device::Cpu).unwrap();
        assert_eq!(head.hidden_units(), expected, "BINANN_HEAD_HIDDEN={hidden:?}");
        assert_eq!(meta.labels_used, 30);
    }
}

/// A fine-tuned model, trained until its predictions differ from image to image, predicts the
/// same through an exported predictor as in this process, row by row: wrong weights (an untrained
/// head says ½ everywhere), other preprocessing, or rows out of order would each show. The folder
/// holds images of several sizes, an unreadable file between readable ones, and a name with a
/// comma and a quote, which must come back whole through the CSV.
#[test]
fn a_finetuned_model_exports_and_predicts_the_same() {
    const SIZE: u32 = 64;
    let tmp = tempfile::tempdir().unwrap();
    let (run, images) = (tmp.path().join("run"), tmp.path().join("images"));
    std::fs::create_dir_all(&images).unwrap();
    // Bright images are the positives, dark ones the negatives; each has its own size, aspect and
    // texture, so that resizing and normalisation matter.
    let mut names = Vec::new();
    for i in 0..10u32 {
        let bright = i % 2 == 0;
        let (w, h) = (24 + 7 * i, 20 + 5 * (9 - i));
        let base = if bright { 200 } else { 25 };
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let t = ((x * (i + 1) + y * 3) % 23) as u8;
            image::Rgb([base + t, base + (t / 2), base + ((x + y) % 11) as u8])
        });
        // Names sorted apart from their class, and one that needs quoting in a CSV.
        let name = if i == 3 { "dark, \"quoted\" 3.png".to_owned() } else { format!("{:02}-{}.png", (i * 7) % 10, i) };
        img.save(images.join(&name)).unwrap();
        names.push((name, bright));
    }
    std::fs::write(images.join("05-broken.png"), b"not a png").unwrap();

    // Train: AdamW steps on the ten images until bright and dark are told apart.
    let preprocess = binann_model::Preprocess { size: SIZE };
    let s = i64::from(SIZE);
    let pixels: Vec<tch::Tensor> =
        names.iter().map(|(n, _)| tch::Tensor::from_slice(&preprocess.load_image(&images.join(n)).unwrap()).view([3, s, s])).collect();
    let batch = tch::Tensor::stack(&pixels, 0);
    let ys = tch::Tensor::from_slice(&names.iter().map(|(_, b)| if *b { 1f32 } else { 0f32 }).collect::<Vec<_>>());
    // Dropout and the random flips draw from libtorch's global RNG: seeded, every run trains alike.
    // The trainer's learning rate: at 1e-3 one run in six wrecked the backbone's features, so
    // that every image gave the same prediction.
    tch::manual_seed(13);
    let mut model = binann_model::FinetuneModel::new(&weights(), SIZE, tch::Device::Cpu).unwrap();
    let predict = |model: &binann_model::FinetuneModel| -> Vec<f32> { Vec::try_from(model.predict(&batch)).unwrap() };
    let untrained = predict(&model);
    assert!(untrained.iter().all(|p| *p == 0.5), "the zero head says ½ everywhere before training: {untrained:?}");
    let mut steps = 0;
    let expected = loop {
        model.train_step(&batch, &ys);
        steps += 1;
        let p = predict(&model);
        let of_kind = |bright: bool| p.iter().zip(&names).filter(move |(_, (_, b))| *b == bright).map(|(p, _)| *p);
        let lowest_bright = of_kind(true).fold(1.0, f32::min);
        let highest_dark = of_kind(false).fold(0.0, f32::max);
        if lowest_bright > highest_dark + 0.2 {
            break p;
        }
        assert!(steps < 100, "bright and dark images not told apart after {steps} steps: {p:?}");
    };
    println!("trained in {steps} steps: {expected:?}");
    let spread = expected.iter().fold(0f32, |m, p| m.max(*p)) - expected.iter().fold(1f32, |m, p| m.min(*p));
    assert!(spread > 0.2, "predictions hardly differ between images: {expected:?}");
    let meta = binann_model::ModelMeta {
        backbone: binann_model::BACKBONE_NAME.into(),
        input_size: SIZE,
        mode: binann_model::MODE_FINETUNE.into(),
        generation: 1,
        labels_used: 10,
        positives: 5,
        loss: 0.5,
        created_ms: 0,
    };
    let rundir = RunDir::create_or_open(&run).unwrap();
    model.save(&rundir.checkpoint(), &meta).unwrap();

    let exported = tmp.path().join("predictor");
    run_ok(Command::new(bin("binann-predict")).arg("export").arg("--rundir").arg(&run).arg("--out").arg(&exported));
    assert!(exported.join("model.safetensors").exists());
    // Batches of three: the eleven files (one unreadable) span several batches.
    let out = run_ok(
        Command::new(bin("binann-predict"))
            .args(["apply", "--device", "cpu", "--batch", "3"])
            .arg("--predictor")
            .arg(&exported)
            .arg("--images")
            .arg(&images),
    );
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), ["path", "prob", "label", "error"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let paths: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    assert_eq!(paths, sorted, "rows in the folder's sorted order");
    assert_eq!(rows.len(), 11, "{out}");
    assert!(paths.contains(&"dark, \"quoted\" 3.png"), "the name with a comma and a quote came back whole: {paths:?}");
    for row in &rows {
        if &row[0] == "05-broken.png" {
            assert_eq!((&row[1], &row[2]), ("", ""), "{row:?}");
            assert!(!row[3].is_empty(), "an unreadable image says why: {row:?}");
            continue;
        }
        let i = names.iter().position(|(n, _)| n == &row[0]).unwrap_or_else(|| panic!("unknown path in {row:?}"));
        let got: f32 = row[1].parse().unwrap();
        assert!((expected[i] - got).abs() < 1e-5, "{}: in this process {}, exported predictor {got}", &row[0], expected[i]);
        assert_eq!(&row[2], if got >= 0.5 { "positive" } else { "negative" });
        assert_eq!(&row[3], "", "{row:?}");
    }
}
