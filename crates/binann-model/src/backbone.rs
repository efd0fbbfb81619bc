//! The frozen, ImageNet-pretrained backbone that turns images into embeddings.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use tch::{Device, Kind, Tensor, nn};

use crate::cpu_runtime::{CpuRuntimes, Runtime, RuntimeChoice};
use crate::error::{Error, ImageError, Result};
use crate::mobilenet::{EMBED_DIM, FEATURE_CHANNELS, MobileNetV2Features};
use crate::preprocess::Preprocess;

/// Name recorded in checkpoints, predictions, embedding chunks and exported predictors for the
/// MobileNetV2 backbone and the embedding binann makes ([`Embedding::Levels`]).
pub const BACKBONE_NAME: &str = "mobilenet_v2_levels";

/// Which embedding a [`Backbone`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// Every level of [`crate::EMBEDDING_LEVELS`] pooled at unit length ([`EMBED_DIM`] values):
    /// what binann makes, recorded as [`BACKBONE_NAME`].
    Levels,
    /// The final feature map pooled ([`FEATURE_CHANNELS`] values), recorded as "mobilenet_v2":
    /// what binann made before the levels, kept so that predictors exported then still apply.
    FinalMap,
}

impl Embedding {
    /// The name checkpoints and predictors record for a model on this embedding.
    pub fn name(self) -> &'static str {
        match self {
            Embedding::Levels => BACKBONE_NAME,
            Embedding::FinalMap => "mobilenet_v2",
        }
    }

    /// The embedding a recorded backbone name stands for, if this build makes it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Embedding::Levels, Embedding::FinalMap].into_iter().find(|e| e.name() == name)
    }

    /// Values per embedding.
    pub fn dim(self) -> usize {
        match self {
            Embedding::Levels => EMBED_DIM,
            Embedding::FinalMap => FEATURE_CHANNELS,
        }
    }
}

/// What [`Backbone::runtime`] says while ONNX Runtime and OpenVINO take turns on its first
/// batches, before it keeps the faster.
pub const TIMING_RUNTIMES: &str = "onnxruntime or openvino (timing both on the first batches)";

/// Where `scripts/fetch-weights.sh` puts the converted ImageNet weights, relative to the repo root.
pub const DEFAULT_WEIGHTS_PATH: &str = ".cache/weights/mobilenet_v2.safetensors";

/// Outcome of embedding one image: its embedding, or why not: [`Error::Image`] (naming the file)
/// when it could not be decoded, [`Error::Embedding`] when the network failed on its batch.
pub type EmbedResult = Result<Vec<f32>, Error>;

/// MobileNetV2 features pooled at several levels ([`crate::EMBEDDING_LEVELS`]), in eval mode,
/// without gradients.
///
/// `Send` but not `Sync` (libtorch tensors are not); share it behind a `Mutex`.
#[derive(Debug)]
pub struct Backbone {
    // Owns the parameters that `features` refers to.
    _vs: nn::VarStore,
    features: MobileNetV2Features,
    preprocess: Preprocess,
    device: Device,
    /// What [`Backbone::embed_batch`] makes.
    embedding: Embedding,
    /// The same network in ONNX Runtime or OpenVINO, which runs the levels embedding of decoded
    /// images on the CPU when one is installed, or why none does ([`Backbone::runtime`]).
    cpu: std::result::Result<CpuRuntimes, String>,
}

impl Backbone {
    /// Loads ImageNet weights converted by `scripts/fetch-weights.sh` for inputs of
    /// `input_size`×`input_size` pixels.
    ///
    /// On the CPU the levels embedding of [`Backbone::embed_decoded`] (and so of
    /// [`Backbone::embed_paths`]) runs in the faster of ONNX Runtime and OpenVINO on this input
    /// size, timed on its first batches ([`crate::cpu_runtime`]), with as many threads as libtorch
    /// has: the same numbers (cosine ≥ 0.9999, tested), several times faster.
    pub fn load(weights: &Path, input_size: u32, device: Device) -> Result<Self> {
        Self::load_with(weights, input_size, device, RuntimeChoice::Fastest)
    }

    /// [`Backbone::load`], with the CPU runtime picked as `choice` says.
    pub fn load_with(weights: &Path, input_size: u32, device: Device, choice: RuntimeChoice) -> Result<Self> {
        let mut vs = nn::VarStore::new(device);
        let features = MobileNetV2Features::new(&vs.root());
        load_features_weights(&mut vs, weights)?;
        let backbone = Self::libtorch(vs, features, input_size, device, "libtorch runs the network on CUDA");
        Ok(if device == Device::Cpu { backbone.with_cpu_runtime(choice) } else { backbone })
    }

    /// The same backbone with the runtime `choice` picks running its levels embedding on the
    /// CPU; when none can be loaded, as it was, with the reason in [`Backbone::runtime`].
    pub fn with_cpu_runtime(self, choice: RuntimeChoice) -> Self {
        let threads = tch::get_num_threads().max(1) as usize;
        let cpu = CpuRuntimes::choose(choice, &self.features, threads, crate::device::idle_streams());
        Self { cpu, ..self }
    }

    /// The backbone's levels embedding as an ONNX model, as the CPU runtimes run it here.
    pub fn onnx_graph(&self) -> Vec<u8> {
        crate::onnx::levels_graph(&self.features)
    }

    /// The same backbone running everything in libtorch.
    pub fn without_cpu_runtime(self) -> Self {
        Self { cpu: Err("libtorch chosen".into()), ..self }
    }

    /// What runs the network on decoded images: "onnxruntime", "openvino" or "libtorch" (or
    /// [`TIMING_RUNTIMES`] while the first two take turns on the first batches), and, for
    /// libtorch on the CPU, why neither of the others does.
    pub fn runtime(&self) -> (&'static str, Option<&str>) {
        match (&self.cpu, self.embedding) {
            (Ok(cpu), Embedding::Levels) => (cpu.chosen().map_or(TIMING_RUNTIMES, Runtime::name), None),
            (Ok(_), Embedding::FinalMap) => ("libtorch", Some("the final-map embedding runs in libtorch")),
            (Err(why), _) => ("libtorch", Some(why.as_str())),
        }
    }

    /// A randomly initialised backbone (batch norm calibrated on noise): meaningless but
    /// non-degenerate embeddings, for tests and benchmarks only.
    pub fn untrained(input_size: u32, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let features = MobileNetV2Features::new(&vs.root());
        features.calibrate_batch_norm(&calibration_noise(input_size, device));
        Self::libtorch(vs, features, input_size, device, "an untrained backbone runs in libtorch unless asked")
    }

    /// A backbone of `features` making the levels embedding in libtorch, ONNX Runtime not used
    /// (`why`).
    fn libtorch(vs: nn::VarStore, features: MobileNetV2Features, input_size: u32, device: Device, why: &str) -> Self {
        Self {
            _vs: vs,
            features,
            preprocess: Preprocess { size: input_size },
            device,
            embedding: Embedding::Levels,
            cpu: Err(why.to_owned()),
        }
    }

    /// The same backbone making `embedding` instead (a backbone makes [`Embedding::Levels`] unless
    /// told otherwise).
    pub fn with_embedding(self, embedding: Embedding) -> Self {
        Self { embedding, ..self }
    }

    /// What [`Backbone::embed_batch`] makes.
    pub fn embedding(&self) -> Embedding {
        self.embedding
    }

    /// Side of the square input images, in pixels.
    pub fn input_size(&self) -> u32 {
        self.preprocess.size
    }

    /// The device the network runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The preprocessing that matches this backbone's input size.
    pub fn preprocess(&self) -> Preprocess {
        self.preprocess
    }

    /// Embeds a batch of preprocessed images: N×3×S×S (any device) to N×[`Embedding::dim`] on
    /// [`Backbone::device`].
    ///
    /// On the CPU the batch runs through the network a few images at a time ([`cpu_pass_size`]).
    pub fn embed_batch(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let images = images.to_device(self.device);
            let pass = if self.device == Device::Cpu { cpu_pass_size(self.preprocess.size) } else { i64::MAX };
            let count = images.size().first().copied().unwrap_or(0);
            let embed = |part: &Tensor| match self.embedding {
                Embedding::Levels => self.features.embedding_t(part, false),
                Embedding::FinalMap => self.features.pooled_t(part, false),
            };
            if count <= pass {
                return embed(&images);
            }
            let parts: Vec<Tensor> = images.split(pass, 0).iter().map(embed).collect();
            Tensor::cat(&parts, 0)
        })
    }

    /// Embeds image files, `batch` at a time, returning one result per path in order.
    ///
    /// While libtorch computes one batch, a separate thread decodes the next one in parallel
    /// (rayon), so decoding is mostly hidden behind the network. An unreadable or corrupt image
    /// yields an `Err` for that path only. `progress` gets the number of paths done so far after
    /// each batch.
    pub fn embed_paths(&self, paths: &[PathBuf], batch: usize, mut progress: impl FnMut(usize)) -> Vec<EmbedResult> {
        let batch = batch.max(1);
        let preprocess = self.preprocess;
        let mut results = Vec::with_capacity(paths.len());
        std::thread::scope(|scope| {
            // Rendezvous channel: the decoder works exactly one batch ahead of the network.
            let (decoded_tx, decoded_rx) = std::sync::mpsc::sync_channel::<Vec<EmbedResult>>(0);
            scope.spawn(move || {
                for chunk in paths.chunks(batch) {
                    let decoded = decode_batch(preprocess, chunk);
                    if decoded_tx.send(decoded).is_err() {
                        break;
                    }
                }
            });
            for decoded in decoded_rx {
                results.extend(self.embed_decoded(decoded));
                progress(results.len());
            }
        });
        results
    }

    /// Runs the network on the successfully decoded images of a batch (from [`decode_batch`] with
    /// this backbone's [`Backbone::preprocess`]), keeping errors in place.
    pub fn embed_decoded(&self, decoded: Vec<EmbedResult>) -> Vec<EmbedResult> {
        let pixels: Vec<f32> = decoded.iter().filter_map(|r| r.as_ref().ok()).flatten().copied().collect();
        if pixels.is_empty() {
            return decoded;
        }
        let side = self.preprocess.size as i64;
        let count = pixels.len() as i64 / (3 * side * side);
        let embedded = catch_unwind(AssertUnwindSafe(|| {
            // The CPU runtime first; a batch it fails on (it should not) goes to libtorch, which
            // makes the same numbers, rather than leaving its images without an embedding.
            let cpu_failed = match (&self.cpu, self.embedding) {
                (Ok(cpu), Embedding::Levels) => match cpu.embed(&pixels, count as usize, side as usize) {
                    Ok(values) => return Ok(values),
                    Err(why) => Some(why),
                },
                _ => None,
            };
            if let Some(why) = cpu_failed {
                tracing::warn!("a batch of {count} images failed in {why}; libtorch embeds it");
            }
            let input = Tensor::from_slice(&pixels).view([count, 3, side, side]);
            let output = self.embed_batch(&input).to_device(Device::Cpu).to_kind(Kind::Float);
            Ok(Vec::<f32>::try_from(output.flatten(0, -1))?)
        }))
        .unwrap_or_else(|panic| Err(Error::Panicked { what: "the network", message: panic_message(&panic) }));
        match embedded {
            Ok(values) => {
                let mut rows = values.chunks_exact(self.embedding.dim()).map(<[f32]>::to_vec);
                decoded.into_iter().map(|r| r.map(|_| rows.next().expect("one embedding per decoded image"))).collect()
            }
            // One cause for the whole batch, shared by each of its images.
            Err(reason) => {
                let reason = Arc::new(reason);
                decoded.into_iter().map(|r| r.and_then(|_| Err(Error::Embedding(Arc::clone(&reason))))).collect()
            }
        }
    }
}

/// Largest activation of one forward pass on the CPU, in bytes, that the allocator still recycles.
const CPU_PASS_BYTES: i64 = 20 << 20;

/// Images per forward pass on the CPU at `input_size` pixels.
///
/// libtorch allocates every activation afresh, and glibc serves allocations over 32 MiB with new
/// pages from the kernel, each zeroed and faulted in. MobileNetV2's largest activation is 96
/// channels at half the input side, 4.8 MB per image at 224 px: a batch of 32 in one pass asked
/// the kernel for gigabytes of fresh pages per batch, and on 2 cores it spent more time there
/// than in the network (500 small PNGs at 224 px: 25 s of system time beside 13 s of user time,
/// 18 images/s; 4 images per pass: 4 s and 9 s, 36 images/s). Passes whose largest activation
/// stays under 20 MiB get their memory back from the allocator.
pub fn cpu_pass_size(input_size: u32) -> i64 {
    let per_image = 96 * 4 * i64::from(input_size.div_ceil(2)).pow(2);
    (CPU_PASS_BYTES / per_image.max(1)).clamp(1, 256)
}

/// Decodes and preprocesses images in parallel (on rayon's pool), one result per path in order.
/// An unreadable image yields an `Err` naming the file, for that path only.
pub fn decode_batch(preprocess: Preprocess, paths: &[PathBuf]) -> Vec<EmbedResult> {
    paths.par_iter().map(|path| decode_one(preprocess, path)).collect()
}

/// A batch being decoded on other threads (see [`DecodeAhead::start`]) while the caller runs the
/// network on the previous one.
#[derive(Debug)]
pub struct DecodeAhead {
    paths: Vec<PathBuf>,
    job: std::thread::JoinHandle<Vec<EmbedResult>>,
}

impl DecodeAhead {
    /// Starts decoding `paths` in the background with [`decode_batch`].
    pub fn start(preprocess: Preprocess, paths: Vec<PathBuf>) -> Self {
        let owned = paths.clone();
        let job = std::thread::spawn(move || decode_batch(preprocess, &owned));
        Self { paths, job }
    }

    /// The paths being decoded.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Waits for the batch: one result per path, in order.
    pub fn finish(self) -> Vec<EmbedResult> {
        let count = self.paths.len();
        self.job.join().unwrap_or_else(|panic| {
            let message = panic_message(&panic);
            (0..count).map(|_| Err(Error::Panicked { what: "decoding", message: message.clone() })).collect()
        })
    }
}

/// Decodes one image, turning decoder panics into an [`Error::Image`] naming the file.
fn decode_one(preprocess: Preprocess, path: &Path) -> EmbedResult {
    // Image decoders have been known to panic on hostile input; one bad file must not take
    // the whole batch (or the server) down.
    catch_unwind(|| preprocess.load_image(path))
        .unwrap_or_else(|panic| Err(Error::Image { path: path.to_owned(), source: ImageError::Crashed(panic_message(&panic)) }))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Input for [`MobileNetV2Features::calibrate_batch_norm`] of an untrained network.
pub(crate) fn calibration_noise(input_size: u32, device: Device) -> Tensor {
    let side = input_size as i64;
    Tensor::randn([2, 3, side, side], (Kind::Float, device))
}

/// Loads converted torchvision weights into the `features.*` variables of `vs`.
pub(crate) fn load_features_weights(vs: &mut nn::VarStore, weights: &Path) -> Result<()> {
    if !weights.exists() {
        return Err(Error::WeightsMissing { path: weights.to_owned() });
    }
    let missing = vs.load_partial(weights).map_err(|source| Error::WeightsUnreadable { path: weights.to_owned(), source })?;
    let missing: Vec<_> = missing.into_iter().filter(|name| name.starts_with("features.")).collect();
    match missing.first() {
        Some(example) => Err(Error::WeightsIncomplete { path: weights.to_owned(), missing: missing.len(), example: example.clone() }),
        None => Ok(()),
    }
}
