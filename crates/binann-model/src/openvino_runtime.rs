//! The frozen backbone in OpenVINO: the graph ONNX Runtime runs ([`crate::onnx::levels_graph`]),
//! read by OpenVINO's ONNX front end and compiled by its CPU plugin.
//!
//! On small inputs OpenVINO's CPU kernels are faster than ONNX Runtime's (at 64 px, about 1.15 ×
//! per core on the machine binann is measured on); on large inputs they are slower. Which one runs
//! is decided per backbone by a trial ([`crate::cpu_runtime`]).
//!
//! OpenVINO is loaded at run time ([`runtime_library`]: `BINANN_OPENVINO`, or the copy
//! `scripts/setup.sh` installs from the `openvino` wheel into `.openvino/`).

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use openvino::{CompiledModel, Core, DeviceType, ElementType, InferRequest, Model, PartialShape, RwPropertyKey, Shape, Tensor};

use crate::cpu_runtime::{installed_library, run_streams, stream_threads};
use crate::mobilenet::{EMBED_DIM, MobileNetV2Features};
use crate::onnx::levels_graph;

/// Where `scripts/setup.sh` installs OpenVINO: the `openvino` wheel's contents, in `.openvino/` of
/// the checkout this was built from.
const INSTALLED_RUNTIME_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.openvino/openvino/libs");

/// The OpenVINO C library to load: `BINANN_OPENVINO` when set (empty: none), otherwise the one
/// `scripts/setup.sh` installed; or why there is none.
pub fn runtime_library() -> Result<PathBuf, String> {
    installed_library("OpenVINO", "BINANN_OPENVINO", INSTALLED_RUNTIME_DIR, "libopenvino_c.so.")
}

/// Loads OpenVINO's C library once per process, or says why it could not.
fn load_library() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let library = runtime_library()?;
            openvino_sys::library::load_from(&library).map_err(|e| format!("loading OpenVINO from {}: {e}", library.display()))
        })
        .clone()
}

/// Batch sizes a stream keeps compiled: the inferrer's batch, its last short one, the trainer's.
const COMPILED_SHAPES: usize = 4;

/// One stream: its own core (its thread count is a property of the core's CPU device), the model
/// as read, and the model compiled for the batch sizes it met most recently.
struct Stream {
    core: Core,
    model: Model,
    /// (images, side) → the model compiled for it and its request, most recently used last
    /// (the request first: fields drop in order, a request before the model it runs). OpenVINO
    /// runs a static shape about 9 % faster than one with a dynamic batch, and compiles one in
    /// about 0.15 s.
    compiled: Vec<((usize, usize), InferRequest, CompiledModel)>,
}

/// The levels embedding in OpenVINO, one single-threaded stream per core as in
/// [`crate::onnx::OnnxBackbone`].
pub struct OpenVinoBackbone {
    streams: Vec<Mutex<Stream>>,
    /// How many of the streams, the first ones, run at normal priority; the rest run at the
    /// lowest ([`crate::cpu_runtime::run_streams`]).
    own: usize,
}

impl std::fmt::Debug for OpenVinoBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenVinoBackbone").field("streams", &self.streams.len()).finish()
    }
}

impl OpenVinoBackbone {
    /// Streams over `features`' graph using `threads` cores together, or why there are none
    /// (OpenVINO missing or refusing the graph).
    pub(crate) fn new(features: &MobileNetV2Features, threads: usize, idle: usize) -> Result<Self, String> {
        load_library()?;
        let graph = levels_graph(features);
        let stream = |threads: usize| -> Result<Mutex<Stream>, String> {
            let mut core = Core::new().map_err(|e| format!("starting OpenVINO: {e}"))?;
            for (key, value) in [
                (RwPropertyKey::InferenceNumThreads, threads.to_string()),
                (RwPropertyKey::NumStreams, "1".to_owned()),
                (RwPropertyKey::HintPerformanceMode, "LATENCY".to_owned()),
                // The same numbers as libtorch: no bf16 or f16 on CPUs that have them.
                (RwPropertyKey::HintInferencePrecision, "f32".to_owned()),
                // The streams share the cores with the decoder and the other processes.
                (RwPropertyKey::HintEnableCpuPinning, "NO".to_owned()),
            ] {
                core.set_property(&DeviceType::CPU, &key, &value).map_err(|e| format!("setting OpenVINO's {key:?} to {value}: {e}"))?;
            }
            let model = core.read_model_from_buffer(&graph, None).map_err(|e| format!("OpenVINO refused the backbone's graph: {e}"))?;
            Ok(Mutex::new(Stream { core, model, compiled: Vec::new() }))
        };
        let (each, own) = stream_threads(threads, idle);
        let streams = each.into_iter().map(stream).collect::<Result<_, _>>()?;
        Ok(Self { streams, own })
    }

    /// Embeds `count` preprocessed images of `side`×`side` (`pixels`: count×3×side×side values),
    /// split among the streams.
    pub fn embed(&self, pixels: &[f32], count: usize, side: usize) -> Result<Vec<f32>, String> {
        run_streams(&self.streams, self.own, pixels, count, side, |stream, part, images| {
            let mut stream = stream.lock().unwrap_or_else(|p| p.into_inner());
            stream.run(part, images, side)
        })
    }
}

impl Stream {
    /// Runs the model compiled for `count` images of `side` pixels, compiling it first if needed.
    fn run(&mut self, pixels: &[f32], count: usize, side: usize) -> Result<Vec<f32>, String> {
        let text = |e: openvino::InferenceError| e.to_string();
        let key = (count, side);
        let at = match self.compiled.iter().position(|(k, ..)| *k == key) {
            Some(at) => at,
            None => {
                if self.compiled.len() == COMPILED_SHAPES {
                    self.compiled.remove(0);
                }
                let (n, s) = (count as i64, side as i64);
                let shape = PartialShape::new_static(4, &[n, 3, s, s]).map_err(text)?;
                self.model.reshape_single_input(&shape).map_err(text)?;
                let mut compiled = self.core.compile_model(&self.model, DeviceType::CPU).map_err(text)?;
                let request = compiled.create_infer_request().map_err(text)?;
                self.compiled.push((key, request, compiled));
                self.compiled.len() - 1
            }
        };
        let entry = self.compiled.remove(at);
        self.compiled.push(entry);
        let request = &mut self.compiled.last_mut().expect("just pushed").1;
        let mut input =
            Tensor::new(ElementType::F32, &Shape::new(&[count as i64, 3, side as i64, side as i64]).map_err(text)?).map_err(text)?;
        input.get_data_mut::<f32>().map_err(text)?.copy_from_slice(pixels);
        request.set_input_tensor(&input).map_err(text)?;
        request.infer().map_err(text)?;
        let output = request.get_output_tensor().map_err(text)?;
        let values = output.get_data::<f32>().map_err(text)?;
        if values.len() != count * EMBED_DIM {
            return Err(format!("OpenVINO answered {} values for {count} images", values.len()));
        }
        Ok(values.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::calibration_noise;
    use tch::{Device, nn};

    #[test]
    fn a_stream_recompiles_as_batch_sizes_come_and_go() {
        let vs = nn::VarStore::new(Device::Cpu);
        let features = MobileNetV2Features::new(&vs.root());
        features.calibrate_batch_norm(&calibration_noise(64, Device::Cpu));
        // One stream: each batch size is a shape of its own in it.
        let backbone = OpenVinoBackbone::new(&features, 1, 0).expect("scripts/setup.sh installs OpenVINO");
        let image: Vec<f32> = (0..3 * 64 * 64).map(|i| (i % 97) as f32 / 48.0 - 1.0).collect();
        let embed = |n: usize| backbone.embed(&image.repeat(n), n, 64).expect("OpenVINO runs the batch");
        let alone = embed(1);
        // Six sizes, more than a stream keeps compiled; then the first again, after it was dropped.
        for n in (2..=6).chain([1]) {
            let rows = embed(n);
            assert_eq!(rows.len(), n * EMBED_DIM);
            for (i, row) in rows.chunks(EMBED_DIM).enumerate() {
                let off = row.iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(off < 1e-4, "image {i} of a batch of {n} is {off} away from the same image alone");
            }
        }
        let stream = backbone.streams[0].lock().unwrap();
        let kept: Vec<usize> = stream.compiled.iter().map(|((n, _), ..)| *n).collect();
        assert_eq!(kept, [4, 5, 6, 1], "the four most recent shapes, the newest last");
    }
}
