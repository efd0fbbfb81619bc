//! The frozen backbone as an ONNX graph, written from the loaded weights, and run by ONNX Runtime.
//!
//! On a CPU, libtorch runs MobileNetV2 at about a quarter of the speed ONNX Runtime reaches with
//! the same weights on the same cores (depthwise convolutions and batch norms run one by one,
//! about 1.2 of 2 cores busy). ONNX Runtime fuses them and keeps every core busy, so the first
//! embedding pass, which bounds what the model can rank, runs there when it is available.
//!
//! - [`levels_graph`]: the graph of [`crate::Embedding::Levels`], the same numbers as libtorch's
//!   (every batch norm folded into its convolution), serialised as an ONNX model. It is made from
//!   the weights in memory, so it cannot disagree with them, and nothing needs Python or torch.
//! - [`OnnxBackbone`]: a session over that graph, used by [`crate::Backbone`] on the CPU.
//!
//! ONNX Runtime is loaded at run time ([`runtime_library`]: `BINANN_ONNXRUNTIME`, or the copy
//! `scripts/setup.sh` installs from the `onnxruntime` wheel into `.onnxruntime/`). OpenVINO runs
//! the same graph ([`crate::openvino_runtime`]); [`crate::cpu_runtime`] keeps the faster.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use prost::Message;
use tch::{Kind, Tensor};

use crate::cpu_runtime::{installed_library, run_streams, stream_threads};
use crate::mobilenet::{ConvBnRelu6, EMBED_DIM, EMBEDDING_LEVELS, MobileNetV2Features};

/// The subset of ONNX's protobuf schema (onnx/onnx.proto, field numbers as there) the graph needs.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(string, tag = "2")]
        pub producer_name: String,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    /// `type`: 2 INT, 7 INTS.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(int64, tag = "3")]
        pub i: i64,
        #[prost(int64, repeated, tag = "8")]
        pub ints: Vec<i64>,
        #[prost(int32, tag = "20")]
        pub r#type: i32,
    }

    /// `data_type` 1: float32, stored little-endian in `raw_data`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TensorTypeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorTypeProto {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    /// A named (symbolic) dimension when `dim_param` is set, otherwise `dim_value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
}

/// ONNX's float32 element type.
const FLOAT: i32 = 1;
/// The opset the graph is written in (every op used has had its current form since 13).
const OPSET: i64 = 17;
/// The model format version that goes with it.
const IR_VERSION: i64 = 8;
/// torch's batch norm epsilon (tch's default), folded into the convolutions.
const BN_EPS: f64 = 1e-5;
/// The input's name: N×3×S×S preprocessed images, any N and S.
pub const INPUT: &str = "images";
/// The output's name: N×[`EMBED_DIM`].
pub const OUTPUT: &str = "levels";

/// Builds the graph node by node.
struct Graph {
    nodes: Vec<proto::NodeProto>,
    initializers: Vec<proto::TensorProto>,
}

impl Graph {
    fn constant(&mut self, name: String, dims: Vec<i64>, values: &[f32]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(proto::TensorProto { dims, data_type: FLOAT, name: name.clone(), raw_data });
        name
    }

    fn node(&mut self, op_type: &str, input: Vec<String>, attribute: Vec<proto::AttributeProto>) -> String {
        let output = format!("{}_{}", op_type.to_ascii_lowercase(), self.nodes.len());
        self.named_node(op_type, input, attribute, output)
    }

    fn named_node(&mut self, op_type: &str, input: Vec<String>, attribute: Vec<proto::AttributeProto>, output: String) -> String {
        self.nodes.push(proto::NodeProto {
            input,
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op_type.to_owned(),
            attribute,
        });
        output
    }

    /// A convolution with `bn` folded in: w·γ/√(σ²+ε) and β − μ·γ/√(σ²+ε).
    fn conv_bn(&mut self, x: String, conv: &tch::nn::Conv2D, bn: &tch::nn::BatchNorm, stride: i64, groups: i64) -> String {
        let scale = bn.ws.as_ref().expect("batch norm has a weight") / (&bn.running_var + BN_EPS).sqrt();
        let weight = &conv.ws * scale.view([-1, 1, 1, 1]);
        let bias = bn.bs.as_ref().expect("batch norm has a bias") - &bn.running_mean * &scale;
        let dims = weight.size();
        let kernel = dims[2];
        let pad = (kernel - 1) / 2;
        let id = self.nodes.len();
        let w = self.constant(format!("w{id}"), dims.clone(), &values(&weight));
        let b = self.constant(format!("b{id}"), vec![dims[0]], &values(&bias));
        self.node(
            "Conv",
            vec![x, w, b],
            vec![
                ints("kernel_shape", vec![kernel, kernel]),
                ints("pads", vec![pad; 4]),
                ints("strides", vec![stride, stride]),
                int("group", groups),
            ],
        )
    }

    fn conv_bn_relu6(&mut self, x: String, layer: &ConvBnRelu6) -> String {
        let y = self.conv_bn(x, &layer.conv, &layer.bn, layer.stride, layer.groups);
        self.node("Clip", vec![y, "zero".into(), "six".into()], vec![])
    }

    /// Averaged over positions and scaled to unit length, as libtorch's `pooled_unit`.
    fn pooled_unit(&mut self, x: String) -> String {
        let pooled = self.node("GlobalAveragePool", vec![x], vec![]);
        let flat = self.node("Flatten", vec![pooled], vec![int("axis", 1)]);
        let length = self.node("ReduceL2", vec![flat.clone()], vec![ints("axes", vec![1]), int("keepdims", 1)]);
        let length = self.node("Max", vec![length, "epsilon".into()], vec![]);
        self.node("Div", vec![flat, length], vec![])
    }
}

fn int(name: &str, i: i64) -> proto::AttributeProto {
    proto::AttributeProto { name: name.to_owned(), i, ints: Vec::new(), r#type: 2 }
}

fn ints(name: &str, ints: Vec<i64>) -> proto::AttributeProto {
    proto::AttributeProto { name: name.to_owned(), i: 0, ints, r#type: 7 }
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).expect("a float tensor")
}

/// A dimension of a graph input or output: fixed, or named (any size).
enum Dim {
    Fixed(i64),
    Named(&'static str),
}

fn tensor_info(name: &str, dims: &[Dim]) -> proto::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => proto::Dimension { dim_value: Some(*v), dim_param: None },
            Dim::Named(p) => proto::Dimension { dim_value: None, dim_param: Some((*p).to_owned()) },
        })
        .collect();
    let tensor_type = proto::TensorTypeProto { elem_type: FLOAT, shape: Some(proto::TensorShapeProto { dim }) };
    proto::ValueInfoProto { name: name.to_owned(), r#type: Some(proto::TypeProto { tensor_type: Some(tensor_type) }) }
}

/// The ONNX model of `features`' [`crate::Embedding::Levels`] embedding (eval mode), serialised:
/// input [`INPUT`] (N×3×S×S), output [`OUTPUT`] (N×[`EMBED_DIM`]).
pub(crate) fn levels_graph(features: &MobileNetV2Features) -> Vec<u8> {
    tch::no_grad(|| {
        let mut g = Graph { nodes: Vec::new(), initializers: Vec::new() };
        g.constant("zero".into(), vec![], &[0.0]);
        g.constant("six".into(), vec![], &[6.0]);
        g.constant("epsilon".into(), vec![], &[1e-12]);
        let mut x = g.conv_bn_relu6(INPUT.to_owned(), &features.stem);
        let mut levels = Vec::new();
        for (i, block) in features.blocks.iter().enumerate() {
            let input = x.clone();
            let expanded = match &block.expand {
                Some(expand) => g.conv_bn_relu6(input.clone(), expand),
                None => input.clone(),
            };
            let depthwise = g.conv_bn_relu6(expanded, &block.depthwise);
            let projected = g.conv_bn(depthwise, &block.project, &block.project_bn, 1, 1);
            x = if block.residual { g.node("Add", vec![input, projected], vec![]) } else { projected };
            let channels = block.channels_out;
            let ends_stage = features.blocks.get(i + 1).is_none_or(|next| next.channels_out != channels);
            if ends_stage && EMBEDDING_LEVELS[..EMBEDDING_LEVELS.len() - 1].contains(&(channels as usize)) {
                levels.push(g.pooled_unit(x.clone()));
            }
        }
        let last = g.conv_bn_relu6(x, &features.head);
        levels.push(g.pooled_unit(last));
        g.named_node("Concat", levels, vec![int("axis", 1)], OUTPUT.to_owned());
        let graph = proto::GraphProto {
            node: g.nodes,
            name: "binann_mobilenet_v2_levels".into(),
            initializer: g.initializers,
            input: vec![tensor_info(INPUT, &[Dim::Named("batch"), Dim::Fixed(3), Dim::Named("height"), Dim::Named("width")])],
            output: vec![tensor_info(OUTPUT, &[Dim::Named("batch"), Dim::Fixed(EMBED_DIM as i64)])],
        };
        proto::ModelProto {
            ir_version: IR_VERSION,
            producer_name: "binann".into(),
            graph: Some(graph),
            opset_import: vec![proto::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        }
        .encode_to_vec()
    })
}

/// Where `scripts/setup.sh` installs ONNX Runtime: the `onnxruntime` wheel's contents, in
/// `.onnxruntime/` of the checkout this was built from.
const INSTALLED_RUNTIME_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.onnxruntime/onnxruntime/capi");

/// The ONNX Runtime library to load: `BINANN_ONNXRUNTIME` when set (empty: none), otherwise the
/// one `scripts/setup.sh` installed; or why there is none.
pub fn runtime_library() -> Result<PathBuf, String> {
    installed_library("ONNX Runtime", "BINANN_ONNXRUNTIME", INSTALLED_RUNTIME_DIR, "libonnxruntime.so.")
}

/// ONNX Runtime, loaded once per process: its environment, or why it could not be loaded.
fn environment() -> Result<&'static ort::environment::Environment, String> {
    static LOADED: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let library = runtime_library()?;
            ort::init_from(&library)
                .map_err(|e| format!("loading ONNX Runtime from {}: {e}", library.display()))?
                .with_name("binann")
                .build()
                .map_err(|e| format!("starting ONNX Runtime from {}: {e}", library.display()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The levels embedding in an ONNX Runtime session.
#[derive(Debug)]
pub struct OnnxBackbone {
    /// One session per stream; a batch is split among them, and they run at once.
    streams: Vec<Mutex<ort::session::Session>>,
    /// How many of the streams, the first ones, run at normal priority; the rest run at the
    /// lowest ([`crate::cpu_runtime::run_streams`]).
    own: usize,
}

impl OnnxBackbone {
    /// Sessions over `features`' graph using `threads` cores together, or why there are none
    /// (ONNX Runtime missing or refusing the graph): the caller then runs libtorch.
    ///
    /// One stream per core (up to [`crate::cpu_runtime::MAX_STREAMS`]), each session on one thread, rather than one
    /// session whose every layer is split across the cores: the layers of a small input are too
    /// small to split well.
    pub(crate) fn new(features: &MobileNetV2Features, threads: usize, idle: usize) -> Result<Self, String> {
        let environment = environment()?;
        let graph = levels_graph(features);
        let text = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
        let session = |threads: usize| {
            ort::session::Session::builder(environment)
                .map_err(|e| e.to_string())?
                .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
                .map_err(text)?
                .with_intra_threads(threads)
                .map_err(text)?
                .with_inter_threads(1)
                .map_err(text)?
                .commit_from_memory(&graph)
                .map(Mutex::new)
                .map_err(|e| format!("ONNX Runtime refused the backbone's graph: {e}"))
        };
        let (each, own) = stream_threads(threads, idle);
        let streams = each.into_iter().map(session).collect::<Result<_, _>>()?;
        Ok(Self { streams, own })
    }

    /// Embeds `count` preprocessed images of `side`×`side` (`pixels`: count×3×side×side values),
    /// split among the streams.
    pub fn embed(&self, pixels: &[f32], count: usize, side: usize) -> Result<Vec<f32>, String> {
        run_streams(&self.streams, self.own, pixels, count, side, |stream, part, images| run(stream, part, images, side))
    }
}

/// Runs one stream's session on `count` images.
fn run(stream: &Mutex<ort::session::Session>, pixels: &[f32], count: usize, side: usize) -> Result<Vec<f32>, String> {
    let input = ort::value::TensorRef::from_array_view(([count, 3, side, side], pixels)).map_err(|e| e.to_string())?;
    let mut session = stream.lock().unwrap_or_else(|p| p.into_inner());
    let outputs = session.run(ort::inputs![INPUT => input]).map_err(|e| e.to_string())?;
    let (shape, values) = outputs[OUTPUT].try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
    if shape.iter().product::<i64>() as usize != count * EMBED_DIM {
        return Err(format!("ONNX Runtime answered {shape:?} for {count} images"));
    }
    Ok(values.to_vec())
}
