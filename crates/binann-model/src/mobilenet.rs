//! MobileNetV2 feature extractor with torchvision's parameter names (`features.N...`), so the
//! converted torchvision state_dict loads into it directly.
//!
//! `tch::vision::mobilenet::v2` builds the same layers but only as a whole classifier behind an
//! opaque closure; this version stops at the last 1280-channel feature map and is made of plain
//! structs (no boxed closures), which keeps it simple to reuse for both the frozen backbone and
//! the end-to-end model.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// Channels of the final feature map, whose pooled values the end-to-end model's head reads.
pub const FEATURE_CHANNELS: usize = 1280;

/// The feature maps pooled into the embedding, by their channels: the ends of the 64-, 96-, 160-
/// and 320-channel stages and the final map.
///
/// The final map alone describes what ImageNet taught the network to tell apart; the stages
/// before it keep shape and texture the last layers discard, which is what separates kinds of
/// image ImageNet never had to: on Fashion-MNIST at 64 px a head over these levels found 0.915 of
/// two kinds of rare positives after 2 × their number of labels, against 0.89 from the final map
/// alone (docs/design.md, "Embeddings"), and 48–57 % of an ankle boot's 8 nearest images in the
/// 32-value sketches were ankle boots, against 38–51 % (three folders).
pub const EMBEDDING_LEVELS: [usize; 5] = [64, 96, 160, 320, FEATURE_CHANNELS];

/// Values per embedding: the channels of every level in [`EMBEDDING_LEVELS`].
pub const EMBED_DIM: usize = {
    let mut sum = 0;
    let mut i = 0;
    while i < EMBEDDING_LEVELS.len() {
        sum += EMBEDDING_LEVELS[i];
        i += 1;
    }
    sum
};

/// (expansion ratio, output channels, repeats, first stride) per stage, as in the paper.
const INVERTED_RESIDUAL_SETTINGS: [(i64, i64, usize, i64); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
const STEM_CHANNELS: i64 = 32;
/// torchvision's initialisation; pretrained weights replace it, but without it an untrained
/// network's activations vanish within a few blocks, which makes tests meaningless.
const CONV_INIT: nn::Init = nn::Init::Kaiming {
    dist: nn::init::NormalOrUniform::Normal,
    fan: nn::init::FanInOut::FanOut,
    non_linearity: nn::init::NonLinearity::ReLU,
};

fn conv_config(stride: i64, padding: i64, groups: i64) -> nn::ConvConfig {
    nn::ConvConfig { stride, padding, groups, bias: false, ws_init: CONV_INIT, ..Default::default() }
}

/// How batch norm behaves in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Batch statistics (and running statistics updated): training.
    Train,
    /// Running statistics: inference.
    Eval,
    /// Running statistics first set to this batch's statistics, then used.
    Calibrate,
}

impl Pass {
    fn from_train(train: bool) -> Self {
        if train { Pass::Train } else { Pass::Eval }
    }
}

fn batch_norm(bn: &nn::BatchNorm, xs: &Tensor, pass: Pass) -> Tensor {
    if pass == Pass::Calibrate {
        let dims = [0i64, 2, 3];
        tch::no_grad(|| {
            bn.running_mean.shallow_clone().copy_(&xs.mean_dim(dims.as_slice(), false, Kind::Float));
            bn.running_var.shallow_clone().copy_(&xs.var_dim(dims.as_slice(), false, false));
        });
    }
    xs.apply_t(bn, pass == Pass::Train)
}

/// Convolution, batch norm, ReLU6: torchvision's `Conv2dNormActivation`.
#[derive(Debug)]
pub(crate) struct ConvBnRelu6 {
    pub(crate) conv: nn::Conv2D,
    pub(crate) bn: nn::BatchNorm,
    /// The convolution's stride and groups (tch keeps its configuration private), for the ONNX
    /// graph ([`crate::onnx`]).
    pub(crate) stride: i64,
    pub(crate) groups: i64,
}

impl ConvBnRelu6 {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64) -> Self {
        Self {
            conv: nn::conv2d(p / 0, c_in, c_out, kernel, conv_config(stride, (kernel - 1) / 2, groups)),
            bn: nn::batch_norm2d(p / 1, c_out, Default::default()),
            stride,
            groups,
        }
    }

    fn forward(&self, xs: &Tensor, pass: Pass) -> Tensor {
        batch_norm(&self.bn, &xs.apply(&self.conv), pass).clamp(0.0, 6.0)
    }
}

/// Expand (1×1), depthwise (3×3), project (1×1, linear), with a skip when shapes allow.
#[derive(Debug)]
pub(crate) struct InvertedResidual {
    pub(crate) expand: Option<ConvBnRelu6>,
    pub(crate) depthwise: ConvBnRelu6,
    pub(crate) project: nn::Conv2D,
    pub(crate) project_bn: nn::BatchNorm,
    pub(crate) residual: bool,
    /// Channels of the block's output.
    pub(crate) channels_out: i64,
}

impl InvertedResidual {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64, expansion: i64) -> Self {
        let hidden = c_in * expansion;
        // torchvision numbers the sub-layers of `conv` consecutively, so everything shifts by
        // one when the expansion layer is absent.
        let expand = (expansion != 1).then(|| ConvBnRelu6::new(&(p / 0), c_in, hidden, 1, 1, 1));
        let next = expand.is_some() as i64;
        Self {
            expand,
            depthwise: ConvBnRelu6::new(&(p / next), hidden, hidden, 3, stride, hidden),
            project: nn::conv2d(p / (next + 1), hidden, c_out, 1, conv_config(1, 0, 1)),
            project_bn: nn::batch_norm2d(p / (next + 2), c_out, Default::default()),
            residual: stride == 1 && c_in == c_out,
            channels_out: c_out,
        }
    }

    fn forward(&self, xs: &Tensor, pass: Pass) -> Tensor {
        let expanded = match &self.expand {
            Some(expand) => expand.forward(xs, pass),
            None => xs.shallow_clone(),
        };
        let projected = self.depthwise.forward(&expanded, pass).apply(&self.project);
        let ys = batch_norm(&self.project_bn, &projected, pass);
        if self.residual { xs + ys } else { ys }
    }
}

/// MobileNetV2 `features`: N×3×H×W images to N×1280×(H/32)×(W/32) feature maps, or to the
/// multi-level embedding ([`MobileNetV2Features::embedding_t`]).
#[derive(Debug)]
pub(crate) struct MobileNetV2Features {
    pub(crate) stem: ConvBnRelu6,
    pub(crate) blocks: Vec<InvertedResidual>,
    pub(crate) head: ConvBnRelu6,
}

impl MobileNetV2Features {
    /// Creates the layers under `p / "features"`.
    pub(crate) fn new(p: &nn::Path) -> Self {
        let features = p / "features";
        let stem = ConvBnRelu6::new(&(&features / 0), 3, STEM_CHANNELS, 3, 2, 1);
        let mut blocks = Vec::new();
        let mut c_in = STEM_CHANNELS;
        for (expansion, c_out, repeats, first_stride) in INVERTED_RESIDUAL_SETTINGS {
            for i in 0..repeats {
                let stride = if i == 0 { first_stride } else { 1 };
                let block_path = &features / (blocks.len() + 1) / "conv";
                blocks.push(InvertedResidual::new(&block_path, c_in, c_out, stride, expansion));
                c_in = c_out;
            }
        }
        let head = ConvBnRelu6::new(&(&features / (blocks.len() + 1)), c_in, FEATURE_CHANNELS as i64, 1, 1, 1);
        Self { stem, blocks, head }
    }

    /// The embedding: each level of [`EMBEDDING_LEVELS`] averaged over its positions and scaled to
    /// unit length, concatenated (N×[`EMBED_DIM`]).
    ///
    /// Unit length per level gives every level the same weight, whatever its width and the scale
    /// of its activations, and needs no statistics of the folder (the embedding of an image does
    /// not change as more images arrive).
    pub(crate) fn embedding_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let pass = Pass::from_train(train);
        let pooled_unit = |map: &Tensor| {
            let pooled = map.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
            let length = pooled.norm_scalaropt_dim(2, [1i64].as_slice(), true).clamp_min(1e-12);
            pooled / length
        };
        let mut levels = Vec::with_capacity(EMBEDDING_LEVELS.len());
        let last = self.forward_watching(xs, pass, |i, ys| {
            let channels = ys.size()[1];
            let ends_stage = self.blocks.get(i + 1).is_none_or(|next| next.channels_out != channels);
            if ends_stage && EMBEDDING_LEVELS[..EMBEDDING_LEVELS.len() - 1].contains(&(channels as usize)) {
                levels.push(pooled_unit(ys));
            }
        });
        levels.push(pooled_unit(&last));
        Tensor::cat(&levels, 1)
    }

    /// Final feature map followed by global average pooling: N×[`FEATURE_CHANNELS`].
    pub(crate) fn pooled_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_t(xs, train).mean_dim([2i64, 3].as_slice(), false, Kind::Float)
    }

    /// Sets every batch norm's running statistics from `xs` (typically noise), layer by layer.
    ///
    /// A randomly initialised network in eval mode has identity batch norms and its activations
    /// shrink to ~1e-15 within a few blocks; calibrated, it behaves like a fresh torchvision
    /// model would with batch statistics. Only useful for untrained networks (tests, benches).
    pub(crate) fn calibrate_batch_norm(&self, xs: &Tensor) {
        let _ = tch::no_grad(|| self.forward(xs, Pass::Calibrate));
    }

    fn forward(&self, xs: &Tensor, pass: Pass) -> Tensor {
        self.forward_watching(xs, pass, |_, _| {})
    }

    /// [`Self::forward`], showing `watch` each block's index and output on the way.
    fn forward_watching(&self, xs: &Tensor, pass: Pass, mut watch: impl FnMut(usize, &Tensor)) -> Tensor {
        let mut ys = self.stem.forward(xs, pass);
        for (i, block) in self.blocks.iter().enumerate() {
            ys = block.forward(&ys, pass);
            watch(i, &ys);
        }
        self.head.forward(&ys, pass)
    }
}

impl ModuleT for MobileNetV2Features {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward(xs, Pass::from_train(train))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn variable_names_and_count_match_torchvision() {
        let _rng = crate::seeded_rng(100);
        let vs = nn::VarStore::new(Device::Cpu);
        let _features = MobileNetV2Features::new(&vs.root());
        let names = vs.variables();
        // torchvision's features have 52 conv/bn layers: 52 conv weights + 52 × 4 BN tensors.
        assert_eq!(names.len(), 52 + 52 * 4);
        for expected in [
            "features.0.0.weight",
            "features.0.1.running_var",
            "features.1.conv.0.0.weight",
            "features.1.conv.1.weight",
            "features.1.conv.2.bias",
            "features.2.conv.0.0.weight",
            "features.2.conv.3.running_mean",
            "features.17.conv.2.weight",
            "features.18.0.weight",
            "features.18.1.bias",
        ] {
            assert!(names.contains_key(expected), "missing {expected}");
        }
        assert_eq!(names["features.18.0.weight"].size(), [1280, 320, 1, 1]);
        assert_eq!(names["features.2.conv.1.0.weight"].size(), [96, 1, 3, 3]);
    }

    #[test]
    fn pooled_output_has_embedding_width() {
        let _rng = crate::seeded_rng(101);
        let vs = nn::VarStore::new(Device::Cpu);
        let features = MobileNetV2Features::new(&vs.root());
        let xs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let ys = tch::no_grad(|| features.pooled_t(&xs, false));
        assert_eq!(ys.size(), [2, FEATURE_CHANNELS as i64]);
    }

    #[test]
    fn the_embedding_is_every_level_pooled_at_unit_length_ending_with_the_final_map() {
        let _rng = crate::seeded_rng(103);
        let vs = nn::VarStore::new(Device::Cpu);
        let features = MobileNetV2Features::new(&vs.root());
        features.calibrate_batch_norm(&Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu)));
        let xs = Tensor::randn([3, 3, 64, 64], (Kind::Float, Device::Cpu));
        let embedding = tch::no_grad(|| features.embedding_t(&xs, false));
        assert_eq!(embedding.size(), [3, EMBED_DIM as i64]);
        assert_eq!(EMBED_DIM, 64 + 96 + 160 + 320 + 1280);
        let mut start = 0;
        for channels in EMBEDDING_LEVELS {
            let level = embedding.narrow(1, start, channels as i64);
            let lengths: Vec<f32> = Vec::try_from(level.norm_scalaropt_dim(2, [1i64].as_slice(), false)).unwrap();
            for length in lengths {
                assert!((length - 1.0).abs() < 1e-4, "level of {channels} channels has length {length}");
            }
            start += channels as i64;
        }
        // The last level is the network's own pooled features, only scaled.
        let pooled = tch::no_grad(|| features.pooled_t(&xs, false));
        let last = embedding.narrow(1, (EMBED_DIM - FEATURE_CHANNELS) as i64, FEATURE_CHANNELS as i64);
        let unit = &pooled / pooled.norm_scalaropt_dim(2, [1i64].as_slice(), true);
        assert!(last.allclose(&unit, 1e-4, 1e-5, false));
        // Each image's embedding depends on that image only (no batch statistics in eval).
        let alone = tch::no_grad(|| features.embedding_t(&xs.narrow(0, 1, 1), false));
        assert!(alone.allclose(&embedding.narrow(0, 1, 1), 1e-4, 1e-5, false));
    }

    #[test]
    fn calibration_keeps_untrained_activations_alive() {
        let _rng = crate::seeded_rng(102);
        let vs = nn::VarStore::new(Device::Cpu);
        let features = MobileNetV2Features::new(&vs.root());
        let xs = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let scale = |ys: Tensor| ys.abs().mean(Kind::Float).double_value(&[]);
        let before = scale(tch::no_grad(|| features.pooled_t(&xs, false)));
        features.calibrate_batch_norm(&xs);
        let after = scale(tch::no_grad(|| features.pooled_t(&xs, false)));
        assert!(before < 1e-3 && after > 0.05, "mean |activation| {before} → {after}");
    }
}
