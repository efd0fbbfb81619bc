//! Neural-network side of binann: image embeddings, the classifier trained on the user's labels,
//! and checkpoints. (The one-off conversion of the pretrained weights is `binann-weights`.)
//!
//! Module map:
//! - [`error`]: [`Error`], the one error type of the crate, and what it carries ([`CheckpointError`],
//!   [`Mismatch`], [`ImageError`]).
//! - [`device`]: [`DeviceChoice`] (`auto`/`cpu`/`cuda[:N]`) and [`resolve_device`].
//! - [`preprocess`]: [`Preprocess`], decoding with decompression-bomb limits, RGB, resize,
//!   ImageNet normalisation to CHW floats.
//! - `mobilenet` (private): MobileNetV2 feature layers with torchvision's parameter names.
//! - [`backbone`]: [`Backbone`], frozen pretrained MobileNetV2 → [`EMBED_DIM`]-d embeddings
//!   (pooled at [`EMBEDDING_LEVELS`]; [`Embedding`] names it, and the final map alone that
//!   predictors exported before still read),
//!   with [`Backbone::embed_paths`] overlapping decoding and inference ([`DecodeAhead`] for
//!   callers that feed it a batch at a time).
//! - [`cpu_runtime`]: [`CpuRuntime`], the backbone on a CPU in the faster of ONNX Runtime
//!   ([`onnx`], which also writes the backbone's ONNX graph) and OpenVINO ([`openvino_runtime`]),
//!   timed on the backbone's first batches.
//! - [`head`]: [`Head`], a small MLP (or logistic regression) on embeddings ([`TrainOptions`],
//!   [`TrainReport`]); the interactive "head" mode.
//! - [`finetune`]: [`FinetuneModel`], the whole network trained end to end ("finetune" mode, GPU).
//! - [`checkpoint`]: [`ModelMeta`], [`check_compatible`], atomic safetensors checkpoints.
//!
//! Its throughput figures come from `binann-embed-bench`, in the binann-bench crate.
//!
//! Training and CUDA run on libtorch through `tch`; `scripts/setup.sh` installs it (docs/deployment.md: "libtorch and the GPU box").

pub mod backbone;
pub mod checkpoint;
pub mod cpu_runtime;
pub mod device;
pub mod error;
pub mod finetune;
pub mod head;
mod mobilenet;
pub mod onnx;
pub mod openvino_runtime;
pub mod preprocess;

pub use backbone::{BACKBONE_NAME, Backbone, DEFAULT_WEIGHTS_PATH, DecodeAhead, EmbedResult, Embedding, TIMING_RUNTIMES, decode_batch};
pub use checkpoint::{MODE_FINETUNE, MODE_HEAD, ModelMeta, check_compatible};
pub use cpu_runtime::{CpuRuntime, Runtime, RuntimeChoice};
pub use device::{DeviceChoice, ParseDeviceError, resolve_device, set_idle_streams, set_threads, with_cpu_runtime_env};
pub use error::{CheckpointError, Error, ImageError, Mismatch};
pub use finetune::FinetuneModel;
pub use head::{DEFAULT_HIDDEN_UNITS, Head, TrainOptions, TrainReport};
pub use mobilenet::{EMBED_DIM, EMBEDDING_LEVELS, FEATURE_CHANNELS};
pub use preprocess::Preprocess;

#[cfg(test)]
mod tests;

#[cfg(test)]
/// libtorch has one global RNG, and cargo runs tests on parallel threads: a test that draws its
/// data or its initial weights while another draws too gets a different stream on each run, and
/// about one run in fifteen drew data that failed a bound. Every test that draws holds this lock and
/// seeds the RNG first, so each sees the same stream on every run, whatever runs beside it.
pub(crate) fn seeded_rng(seed: i64) -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    guard
}
