//! The backbone in ONNX Runtime and in OpenVINO makes the same embedding as in libtorch, on real
//! images: run directories, checkpoints and exported predictors made with one stay valid with the
//! others, whichever runtime a machine picks.

use std::io::Read;
use std::path::{Path, PathBuf};

use binann_model::{Backbone, DEFAULT_WEIGHTS_PATH, EMBED_DIM, EmbedResult, Runtime, RuntimeChoice, TIMING_RUNTIMES};
use tch::Device;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first `n` Fashion-MNIST test images as PNG files in `dir`, and a photo-like RGB image
/// larger than the input (resized on the way in). Missing data fails the test: scripts/setup.sh
/// fetches it.
fn real_images(dir: &Path, n: usize) -> Vec<PathBuf> {
    let gz = repo().join(".cache/fashion-mnist/t10k-images-idx3-ubyte.gz");
    assert!(gz.exists(), "{} is missing: run scripts/setup.sh", gz.display());
    let mut idx = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()).read_to_end(&mut idx).unwrap();
    let mut paths: Vec<PathBuf> = (0..n)
        .map(|i| {
            let pixels = idx[16 + i * 784..16 + (i + 1) * 784].to_vec();
            let path = dir.join(format!("fashion{i}.png"));
            image::GrayImage::from_raw(28, 28, pixels).unwrap().save(&path).unwrap();
            path
        })
        .collect();
    let photo = dir.join("photo.jpg");
    image::RgbImage::from_fn(400, 300, |x, y| image::Rgb([(x / 2) as u8, (y * 255 / 300) as u8, ((x * y) % 251) as u8]))
        .save(&photo)
        .unwrap();
    paths.push(photo);
    paths
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Each of `got` is `expected`'s embedding of the same image (cosine ≥ 0.9999).
fn assert_same(got: &[EmbedResult], expected: &[EmbedResult], images: &[PathBuf], size: u32, made_by: &str) {
    assert_eq!(got.len(), expected.len());
    for ((a, b), path) in got.iter().zip(expected).zip(images) {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        assert_eq!(a.len(), EMBED_DIM);
        let c = cosine(a, b);
        assert!(c >= 0.9999, "{} at {size} px in {made_by}: cosine {c}", path.display());
    }
}

#[test]
fn every_cpu_runtime_and_libtorch_make_the_same_embedding_of_real_images() {
    let weights = repo().join(DEFAULT_WEIGHTS_PATH);
    assert!(weights.exists(), "{} is missing: run scripts/setup.sh", weights.display());
    let dir = tempfile::tempdir().unwrap();
    let images = real_images(dir.path(), 24);
    // Two threads: ONNX Runtime runs two streams, each batch split between them (5 + 5, 3 + 2).
    tch::set_num_threads(2);
    for size in [64, 112, 224] {
        let torch = Backbone::load(&weights, size, Device::Cpu).unwrap().without_cpu_runtime();
        assert_eq!(torch.runtime().0, "libtorch");
        // Batches of 10 put images in batches of different sizes (10, 10, 5).
        let expected = torch.embed_paths(&images, 10, |_| {});
        // Backbone::load lets the two take turns on its first batches, then keeps the faster.
        let chosen = Backbone::load(&weights, size, Device::Cpu).unwrap();
        assert_eq!(chosen.runtime(), (TIMING_RUNTIMES, None));
        // Batches of 4: each runtime embeds some of these images while they are timed.
        assert_same(&chosen.embed_paths(&images, 4, |_| {}), &expected, &images, size, "the runtimes taking turns");
        let mut batches = images.len().div_ceil(4);
        while chosen.runtime().0 == TIMING_RUNTIMES {
            chosen.embed_paths(&images[..4], 4, |_| {});
            batches += 1;
            assert!(batches <= 42, "at {size} px: still timing after {batches} batches, each runtime's first and 20 timed");
        }
        assert!(Runtime::ALL.iter().any(|r| chosen.runtime() == (r.name(), None)), "at {size} px: {:?}", chosen.runtime());
        // A process that embeds a few images takes the first installed, untimed.
        let first = Backbone::load_with(&weights, size, Device::Cpu, RuntimeChoice::FirstInstalled).unwrap();
        assert_eq!(first.runtime(), (Runtime::ALL[0].name(), None));
        let mut fast = torch;
        for runtime in Runtime::ALL {
            fast = fast.with_cpu_runtime(RuntimeChoice::Only(runtime));
            assert_eq!(fast.runtime(), (runtime.name(), None), "scripts/setup.sh installs both runtimes");
            assert_same(&fast.embed_paths(&images, 10, |_| {}), &expected, &images, size, runtime.name());
        }
    }
    // The inferrer on 2 cores: one stream of its own and one at idle priority, each batch cut
    // into parts the two take in turn (3 + 3 + 3 + 1 of a batch of 10).
    tch::set_num_threads(1);
    binann_model::set_idle_streams(1);
    let torch = Backbone::load(&weights, 64, Device::Cpu).unwrap().without_cpu_runtime();
    let expected = torch.embed_paths(&images, 10, |_| {});
    let mut fast = torch;
    for runtime in Runtime::ALL {
        fast = fast.with_cpu_runtime(RuntimeChoice::Only(runtime));
        let made_by = format!("{} with an idle-priority stream", runtime.name());
        assert_same(&fast.embed_paths(&images, 10, |_| {}), &expected, &images, 64, &made_by);
    }
}
