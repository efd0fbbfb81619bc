//! Cross-module behaviour tests on tiny inputs (CPU, a few seconds in total).

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::checkpoint::tests::meta;
use crate::*;

const LATENT_DIMS: i64 = 8;

/// A fixed LATENT_DIMS×EMBED_DIM projection, from a plain LCG so that it does not depend on
/// libtorch's global RNG (which parallel tests share).
fn fixed_projection() -> Tensor {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let values: Vec<f32> = (0..LATENT_DIMS as usize * EMBED_DIM)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_slice(&values).view([LATENT_DIMS, EMBED_DIM as i64])
}

/// Embedding-like data: 1280 dims driven by a few latent factors (real embeddings are similarly
/// low-rank), plus a little independent noise.
fn embeddings_from_latent(latent: &Tensor) -> Tensor {
    let n = latent.size()[0];
    latent.matmul(&fixed_projection()) + 0.3 * Tensor::randn([n, EMBED_DIM as i64], (Kind::Float, Device::Cpu))
}

/// Labels that depend linearly on two latent factors.
fn separable(n: i64) -> (Tensor, Tensor) {
    let latent = Tensor::randn([n, LATENT_DIMS], (Kind::Float, Device::Cpu));
    let y = (latent.select(1, 0) + latent.select(1, 1)).gt(0.0).to_kind(Kind::Float);
    (embeddings_from_latent(&latent), y)
}

/// 5 % positives that overlap the negatives: an unweighted loss mostly predicts "negative".
fn imbalanced(n: i64) -> (Tensor, Tensor) {
    let y = Tensor::rand([n], (Kind::Float, Device::Cpu)).lt(0.05).to_kind(Kind::Float);
    let latent = Tensor::randn([n, LATENT_DIMS], (Kind::Float, Device::Cpu));
    let _ = latent.select(1, 0).g_add_(&(1.5 * &y));
    (embeddings_from_latent(&latent), y)
}

fn accuracy(probabilities: &Tensor, y: &Tensor) -> f64 {
    probabilities.ge(0.5).to_kind(Kind::Float).eq_tensor(y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
}

fn recall(probabilities: &Tensor, y: &Tensor) -> f64 {
    let hits = (probabilities.ge(0.5).to_kind(Kind::Float) * y).sum(Kind::Float).double_value(&[]);
    hits / y.sum(Kind::Float).double_value(&[])
}

#[test]
fn head_learns_a_separable_problem() {
    let _rng = crate::seeded_rng(1);
    let (x, y) = separable(600);
    let (x_test, y_test) = separable(400);
    for hidden in [0, DEFAULT_HIDDEN_UNITS] {
        let mut head = Head::with_hidden(Device::Cpu, hidden);
        let report = head.train(&x, &y, &TrainOptions::default());
        assert!(report.accuracy > 0.95, "hidden {hidden}: {report:?}");
        assert_eq!(report.steps, TrainOptions::default().steps);
        let test_accuracy = accuracy(&head.predict(&x_test), &y_test);
        assert!(test_accuracy > 0.9, "hidden {hidden}: held-out accuracy {test_accuracy}");
    }
}

#[test]
fn a_short_round_trains_on_rows_from_anywhere_in_a_large_set() {
    let _rng = crate::seeded_rng(3);
    // 20,000 rows: the first 15,000 negative, then alternating; positives have value 0 raised by 4.
    // 200 minibatches of 16 read 3,200 rows: taken in order, they would hold no positive.
    let n = 20_000;
    let y = Tensor::from_slice(&(0..n).map(|i| f32::from(u8::from(i >= 15_000 && i % 2 == 0))).collect::<Vec<_>>());
    let shift = Tensor::cat(&[(&y * 4.0).unsqueeze(1), Tensor::zeros([n, 7], (Kind::Float, Device::Cpu))], 1);
    let x = Tensor::randn([n, 8], (Kind::Float, Device::Cpu)) + shift;
    let mut head = Head::with_input(Device::Cpu, 8, 0);
    let report = head.train(&x, &y, &TrainOptions { steps: 200, batch_size: Some(16), learning_rate: 0.05, ..TrainOptions::default() });
    let probabilities = head.predict(&x.narrow(0, 15_000, 5_000));
    assert!(accuracy(&probabilities, &y.narrow(0, 15_000, 5_000)) > 0.95, "{report:?}");
}

#[test]
fn degenerate_label_sets_do_not_break_training() {
    let _rng = crate::seeded_rng(2);
    let (x, _) = separable(50);
    let mut head = Head::new(Device::Cpu);
    let all_positive = head.train(&x, &Tensor::ones([50], (Kind::Float, Device::Cpu)), &TrainOptions::default());
    assert_eq!(all_positive.pos_weight, 1.0);
    assert!(all_positive.loss.is_finite() && all_positive.accuracy == 1.0, "{all_positive:?}");
    let empty = Tensor::zeros([0, EMBED_DIM as i64], (Kind::Float, Device::Cpu));
    let report = Head::new(Device::Cpu).train(&empty, &Tensor::zeros([0], (Kind::Float, Device::Cpu)), &TrainOptions::default());
    assert_eq!(report.steps, 0);
}

#[test]
fn full_batch_training_also_learns() {
    let _rng = crate::seeded_rng(3);
    let (x, y) = separable(600);
    let mut head = Head::new(Device::Cpu);
    let opts = TrainOptions { batch_size: None, ..TrainOptions::default() };
    let report = head.train(&x, &y, &opts);
    assert!(report.accuracy > 0.95, "{report:?}");
}

/// The trainer continues one head over hundreds of rounds, and on labels it separates the logits
/// keep growing (to a loss of 1e-44 in a benchmark run) until most probabilities are exactly 0 or 1
/// in `f32`. The logits still order those rows, which is why the inferrer stores them.
#[test]
fn predicting_folds_the_standardisation_into_the_first_layer_without_changing_the_logits() {
    let _rng = crate::seeded_rng(3);
    // Embeddings far from zero mean and unit scale, so that the folding has something to fold.
    let (x, y) = separable(300);
    let x = 4.0 * x + 2.5;
    for hidden in [0, DEFAULT_HIDDEN_UNITS] {
        let mut head = Head::with_hidden(Device::Cpu, hidden);
        head.train(&x, &y, &TrainOptions::default());
        let folded = head.logits(&x);
        let trained_on = tch::no_grad(|| head.logits_of_standardized(&head.standardize(&x)));
        let scale = trained_on.abs().max().double_value(&[]).max(1.0);
        let error = (&folded - &trained_on).abs().max().double_value(&[]);
        assert!(error <= 1e-4 * scale, "hidden {hidden}: logits differ by {error} (largest {scale})");
        assert_eq!(folded.size(), [300], "one logit per row");
    }
}

#[test]
fn logits_order_what_saturated_probabilities_cannot() {
    let _rng = crate::seeded_rng(8);
    let (x, y) = separable(400);
    let (x_test, y_test) = separable(400);
    let mut head = Head::new(Device::Cpu);
    for _ in 0..20 {
        head.train(&x, &y, &TrainOptions { steps: 50, learning_rate: 3e-2, ..TrainOptions::default() });
    }
    let (probabilities, logits) = (head.predict(&x_test), head.logits(&x_test));
    assert!(accuracy(&probabilities, &y_test) > 0.9, "held-out accuracy {}", accuracy(&probabilities, &y_test));
    let saturated = probabilities.eq(0.0).logical_or(&probabilities.eq(1.0));
    let count = saturated.sum(Kind::Int64).int64_value(&[]);
    assert!(count >= 100, "only {count} of 400 probabilities are exactly 0 or 1");
    let distinct = |t: &Tensor| {
        let mut v = Vec::<f32>::try_from(t.masked_select(&saturated)).unwrap();
        v.sort_by(f32::total_cmp);
        v.dedup();
        v.len() as i64
    };
    assert!(distinct(&probabilities) <= 2, "the saturated probabilities are 0 and 1");
    assert!(distinct(&logits) > count * 9 / 10, "{} distinct logits among {count} saturated rows", distinct(&logits));
    assert!(logits.sigmoid().equal(&probabilities), "the probability is the logistic function of the logit");
}

#[test]
fn pos_weight_recovers_the_rare_class() {
    let _rng = crate::seeded_rng(4);
    let (x, y) = imbalanced(4000);
    let (x_test, y_test) = imbalanced(4000);
    for hidden in [0, DEFAULT_HIDDEN_UNITS] {
        let train = |pos_weight| {
            let mut head = Head::with_hidden(Device::Cpu, hidden);
            let report = head.train(&x, &y, &TrainOptions { pos_weight, ..TrainOptions::default() });
            (report, recall(&head.predict(&x_test), &y_test))
        };
        let (unweighted, unweighted_recall) = train(Some(1.0));
        let (auto, auto_recall) = train(None);
        let positives = y.sum(Kind::Float).double_value(&[]);
        let negatives_per_positive = (4000.0 - positives) / positives;
        assert!((auto.pos_weight as f64 - negatives_per_positive).abs() < 1e-3, "{auto:?}");
        assert_eq!(unweighted.pos_weight, 1.0);
        println!("hidden {hidden}: recall with pos_weight {auto_recall:.3}, without {unweighted_recall:.3}");
        assert!(
            auto_recall > unweighted_recall + 0.15 && auto_recall > 0.5,
            "hidden {hidden}: recall with pos_weight {auto_recall:.3}, without {unweighted_recall:.3}"
        );
    }
}

#[test]
fn head_save_load_reproduces_predictions_exactly() {
    let _rng = crate::seeded_rng(5);
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = separable(200);
    for hidden in [0, 16] {
        let mut head = Head::with_hidden(Device::Cpu, hidden);
        head.train(&x, &y, &TrainOptions { steps: 20, ..TrainOptions::default() });
        let path = dir.path().join(format!("head-{hidden}.safetensors"));
        head.save(&path, &meta(MODE_HEAD)).unwrap();
        let (loaded, loaded_meta) = Head::load(&path, Device::Cpu).unwrap();
        assert_eq!(loaded_meta, meta(MODE_HEAD));
        assert_eq!(loaded.hidden_units(), hidden);
        assert!(loaded.predict(&x).equal(&head.predict(&x)), "hidden {hidden}");
    }
}

#[test]
fn mismatched_checkpoints_are_refused() {
    let _rng = crate::seeded_rng(6);
    let dir = tempfile::tempdir().unwrap();
    let head_path = dir.path().join("head.safetensors");
    let head = Head::new(Device::Cpu);
    let err = head.save(&head_path, &meta(MODE_FINETUNE)).unwrap_err();
    assert!(matches!(&err, Error::MetaMismatch { field: "mode", in_meta, .. } if in_meta == MODE_FINETUNE), "{err}");
    head.save(&head_path, &meta(MODE_HEAD)).unwrap();

    let err = FinetuneModel::load(&head_path, BACKBONE_NAME, 112, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint { path, source: CheckpointError::WrongMode { found, expected: MODE_FINETUNE } }
            if *path == head_path && found == MODE_HEAD),
        "{err}"
    );

    let (_, head_meta) = Head::load(&head_path, Device::Cpu).unwrap();
    let err = check_compatible(&head_meta, BACKBONE_NAME, 224).unwrap_err();
    assert!(matches!(err, Error::Incompatible(Mismatch::InputSize { trained: 112, in_use: 224 })), "{err}");

    let model = FinetuneModel::untrained(32, Device::Cpu);
    let full_path = dir.path().join("full.safetensors");
    let full_meta = ModelMeta { input_size: 32, ..meta(MODE_FINETUNE) };
    let err = model.save(&full_path, &meta(MODE_FINETUNE)).unwrap_err();
    assert!(
        matches!(&err, Error::MetaMismatch { field: "input_size", in_meta, in_model, .. } if in_meta == "112" && in_model == "32"),
        "{err}"
    );
    let other_backbone = ModelMeta { backbone: "resnet18".into(), ..full_meta.clone() };
    let err = model.save(&full_path, &other_backbone).unwrap_err();
    assert!(matches!(&err, Error::MetaMismatch { field: "backbone", .. }), "{err}");
    assert!(!full_path.exists(), "a refused save writes nothing");
    model.save(&full_path, &full_meta).unwrap();
    let err = FinetuneModel::load(&full_path, BACKBONE_NAME, 64, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint { path, source: CheckpointError::Incompatible(Mismatch::InputSize { trained: 32, in_use: 64 }) }
            if *path == full_path),
        "{err}"
    );
    let err = FinetuneModel::load(&full_path, "resnet18", 32, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint { source: CheckpointError::Incompatible(Mismatch::Backbone { in_use, .. }), .. } if in_use == "resnet18"),
        "{err}"
    );
    let err = Head::load(&full_path, Device::Cpu).unwrap_err();
    assert!(matches!(&err, Error::Checkpoint { source: CheckpointError::WrongMode { expected: MODE_HEAD, .. }, .. }), "{err}");

    // A head checkpoint whose hidden layer has another width than its output layer expects.
    let wrong = dir.path().join("wrong-shape.safetensors");
    let zeros = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
    let dim = EMBED_DIM as i64;
    let mut tensors: Vec<(String, Tensor)> = vec![
        ("input.mean".into(), zeros(&[dim])),
        ("input.std".into(), zeros(&[dim])),
        ("hidden.weight".into(), zeros(&[16, dim])),
        ("hidden.bias".into(), zeros(&[16])),
        ("output.weight".into(), zeros(&[1, 8])),
        ("output.bias".into(), zeros(&[1])),
    ];
    crate::checkpoint::write_checkpoint(&wrong, &tensors, &meta(MODE_HEAD)).unwrap();
    let err = Head::load(&wrong, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint { source: CheckpointError::Shape { name, found, expected }, .. }
            if name == "output.weight" && *found == [1, 8] && *expected == [1, 16]),
        "{err}"
    );
    tensors.retain(|(name, _)| !name.starts_with("output."));
    tensors.push(("output.weight".into(), zeros(&[1, 16])));
    crate::checkpoint::write_checkpoint(&wrong, &tensors, &meta(MODE_HEAD)).unwrap();
    let err = Head::load(&wrong, Device::Cpu).unwrap_err();
    assert!(matches!(&err, Error::Checkpoint { source: CheckpointError::MissingVariable { name }, .. } if name == "output.bias"), "{err}");
}

fn write_test_images(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for (i, colour) in [[200u8, 30, 30], [30, 200, 30], [30, 30, 200]].into_iter().enumerate() {
        let path = dir.join(format!("img{i}.png"));
        image::RgbImage::from_fn(40, 30, |x, y| image::Rgb(colour.map(|c| c.wrapping_add((x * y) as u8)))).save(&path).unwrap();
        paths.push(path);
    }
    let corrupt = dir.join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    paths.insert(1, corrupt);
    paths.push(dir.join("missing.jpg"));
    paths
}

#[test]
fn embed_paths_keeps_order_and_isolates_bad_files() {
    let _rng = crate::seeded_rng(7);
    let dir = tempfile::tempdir().unwrap();
    let paths = write_test_images(dir.path());
    // Fixed random weights: with some draws an untrained network magnifies the different rounding
    // of batched and single convolutions past the bound below (about 1 run in 15 failed).
    let backbone = Backbone::untrained(32, Device::Cpu);
    let mut progress = Vec::new();
    let results = backbone.embed_paths(&paths, 2, |done| progress.push(done));
    assert_eq!(progress, [2, 4, 5]);
    assert_eq!(results.len(), 5);
    let err = results[1].as_ref().unwrap_err();
    assert!(matches!(err, Error::Image { path, source: ImageError::Decode(_) } if *path == paths[1]), "{err}");
    let err = results[4].as_ref().unwrap_err();
    assert!(matches!(err, Error::Image { path, source: ImageError::Io(_) } if *path == paths[4]), "{err}");

    // Each result is the embedding of its own image: compare with embedding each image alone.
    // (Batched and single convolutions round differently, so equality is only approximate.)
    let preprocess = backbone.preprocess();
    let alone: Vec<Vec<f32>> = [0, 2, 3]
        .iter()
        .map(|&i| {
            let pixels = preprocess.load_image(&paths[i]).unwrap();
            let embedding = backbone.embed_batch(&Tensor::from_slice(&pixels).view([1, 3, 32, 32]));
            Vec::<f32>::try_from(embedding.flatten(0, -1)).unwrap()
        })
        .collect();
    let distance = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt();
    for (k, &i) in [0, 2, 3].iter().enumerate() {
        let embedding = results[i].as_ref().unwrap();
        assert_eq!(embedding.len(), EMBED_DIM);
        let own = distance(embedding, &alone[k]);
        for (other, alone_other) in alone.iter().enumerate().filter(|&(o, _)| o != k) {
            let cross = distance(embedding, alone_other);
            assert!(own < 0.05 * cross, "image {i}: {own} from itself, {cross} from image #{other}");
        }
    }
}

#[test]
fn missing_weights_error_says_how_to_fetch_them() {
    let _rng = crate::seeded_rng(8);
    let err = Backbone::load(Path::new("/nonexistent/w.safetensors"), 224, Device::Cpu).unwrap_err();
    assert!(matches!(&err, Error::WeightsMissing { path } if path == Path::new("/nonexistent/w.safetensors")), "{err}");
    // The message is what a person sees first: it must say how to get them.
    assert!(err.to_string().contains("scripts/fetch-weights.sh"), "{err}");
}

#[test]
fn weights_that_are_no_mobilenet_are_refused() {
    let _rng = crate::seeded_rng(14);
    let dir = tempfile::tempdir().unwrap();
    let not_weights = dir.path().join("notes.safetensors");
    std::fs::write(&not_weights, b"not a safetensors file").unwrap();
    let err = Backbone::load(&not_weights, 64, Device::Cpu).unwrap_err();
    assert!(matches!(&err, Error::WeightsUnreadable { path, .. } if *path == not_weights), "{err}");

    // A valid safetensors file holding another network's variables: all 52 conv weights and
    // 52 x 4 batch-norm tensors of the features are missing.
    let other = dir.path().join("other.safetensors");
    Tensor::write_safetensors(&[("classifier.1.weight", Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)))], &other).unwrap();
    let err = Backbone::load(&other, 64, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::WeightsIncomplete { path, missing: 260, example } if *path == other && example.starts_with("features.")),
        "{err}"
    );
}

/// Four 32 px images, bright ones positive and dark ones negative, with noise.
fn bright_and_dark_batch() -> (Tensor, Tensor) {
    let labels = Tensor::from_slice(&[1f32, 0., 1., 0.]);
    let brightness = (labels.shallow_clone() * 2.0 - 1.0).view([4, 1, 1, 1]);
    (brightness + 0.3 * Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu)), labels)
}

fn snapshot(model: &FinetuneModel, name: &str) -> Tensor {
    model.variables()[name].copy()
}

#[test]
fn full_model_steps_train_everything_but_batch_norm_statistics() {
    let _rng = crate::seeded_rng(9);
    let mut model = FinetuneModel::untrained(32, Device::Cpu);
    let (images, labels) = bright_and_dark_batch();
    let watched = ["features.0.0.weight", "features.18.1.weight", "head.weight", "features.18.1.running_mean"];
    let before: Vec<_> = watched.iter().map(|name| snapshot(&model, name)).collect();
    for _ in 0..3 {
        assert!(model.train_step(&images, &labels).is_finite());
    }
    for (name, old) in watched.iter().zip(&before) {
        let changed = !snapshot(&model, name).equal(old);
        // Batch norm runs in eval mode while fine-tuning: its running statistics stay put.
        assert_eq!(changed, !name.ends_with("running_mean"), "{name}");
    }
    let probabilities = model.predict(&images);
    assert_eq!(probabilities.size(), [4]);
    assert!(probabilities.gt(0.0).all().int64_value(&[]) == 1 && probabilities.lt(1.0).all().int64_value(&[]) == 1);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.safetensors");
    let full_meta = ModelMeta { input_size: 32, ..meta(MODE_FINETUNE) };
    model.save(&path, &full_meta).unwrap();
    let (loaded, loaded_meta) = FinetuneModel::load(&path, BACKBONE_NAME, 32, Device::Cpu).unwrap();
    assert_eq!(loaded_meta, full_meta);
    assert!(loaded.predict(&images).equal(&probabilities));
}

#[test]
fn horizontal_flip_mirrors_whole_images_only() {
    let _rng = crate::seeded_rng(10);
    let batch = Tensor::randn([64, 3, 4, 5], (Kind::Float, Device::Cpu));
    let flipped = crate::finetune::random_horizontal_flip(&batch);
    let mut mirrored = 0;
    for i in 0..64 {
        let (original, out) = (batch.get(i), flipped.get(i));
        if out.equal(&original.flip([2i64])) {
            mirrored += 1;
        } else {
            assert!(out.equal(&original), "image {i} is neither kept nor mirrored");
        }
    }
    assert!((10..=54).contains(&mirrored), "{mirrored} of 64 mirrored");
}

/// The real converted weights. A missing file fails the test (a skipped test would pass while
/// checking nothing): `scripts/setup.sh` fetches them.
fn real_weights() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(DEFAULT_WEIGHTS_PATH);
    assert!(path.exists(), "{} is missing: run scripts/fetch-weights.sh (scripts/setup.sh does)", path.display());
    path
}

#[test]
fn real_weights_load_into_tch_mobilenet_with_no_missing_variable() {
    let _rng = crate::seeded_rng(11);
    let weights = real_weights();
    let mut vs = tch::nn::VarStore::new(Device::Cpu);
    let _net = tch::vision::mobilenet::v2(&vs.root(), 1000);
    let missing = vs.load_partial(&weights).unwrap();
    assert!(missing.is_empty(), "missing: {missing:?}");
    assert_eq!(vs.variables().len(), 262);
}

#[test]
fn real_weights_fine_tune_a_tiny_batch() {
    let _rng = crate::seeded_rng(12);
    let weights = real_weights();
    let mut model = FinetuneModel::new(&weights, 32, Device::Cpu).unwrap();
    let (images, labels) = bright_and_dark_batch();
    let batch_loss = |model: &FinetuneModel| {
        let p = model.predict(&images);
        p.binary_cross_entropy::<Tensor>(&labels, None, tch::Reduction::Mean).double_value(&[])
    };
    let before = batch_loss(&model);
    for _ in 0..20 {
        model.train_step(&images, &labels);
    }
    let after = batch_loss(&model);
    assert!(after < 0.75 * before, "loss on the training batch {before} → {after}");
}

#[test]
fn real_backbone_gives_distinct_embeddings_for_distinct_images() {
    let _rng = crate::seeded_rng(13);
    let weights = real_weights();
    let backbone = Backbone::load(&weights, 64, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = write_test_images(dir.path());
    let results = backbone.embed_paths(&[paths[0].clone(), paths[2].clone(), paths[0].clone()], 4, |_| {});
    let [a, b, a_again] = [0, 1, 2].map(|i| results[i].as_ref().unwrap().clone());
    assert_eq!(a, a_again);
    let distance: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt();
    let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(distance > 0.05 * norm, "distance {distance}, norm {norm}");
    // Five levels at unit length each; the last one pooled ReLU6 activations: non-negative.
    assert!((norm - 5f32.sqrt()).abs() < 1e-3, "norm {norm}");
    assert!(a[EMBED_DIM - crate::FEATURE_CHANNELS..].iter().all(|&v| v >= 0.0));
}
