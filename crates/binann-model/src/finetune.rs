//! End-to-end fine-tuning: the whole backbone plus a one-logit head, all trainable.
//!
//! Only practical on a GPU (a CPU trains MobileNetV2 at under 10 images/s); the frozen-backbone
//! [`crate::Head`] is the interactive default.

use std::path::Path;

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

use crate::backbone::{BACKBONE_NAME, calibration_noise, load_features_weights};
use crate::checkpoint::{MODE_FINETUNE, ModelMeta, fill_var_store, read_checkpoint, require, require_meta, write_checkpoint};
use crate::error::{Error, Result};
use crate::mobilenet::{FEATURE_CHANNELS, MobileNetV2Features};

/// AdamW learning rate for all parameters. Small so the pretrained features survive; the head
/// needs no more, because Adam moves each of its 1280 weights by about the learning rate per
/// step, which already shifts the logit by ~lr × Σ|feature| (≈0.05 with the pretrained
/// features; 1e-3 made the loss oscillate).
const DEFAULT_LEARNING_RATE: f64 = 1e-4;
const WEIGHT_DECAY: f64 = 1e-4;
const HEAD_DROPOUT: f64 = 0.2;

/// Mirrors each image of an N×C×H×W batch left-right with probability ½.
pub(crate) fn random_horizontal_flip(batch: &Tensor) -> Tensor {
    let n = batch.size()[0];
    let flip = Tensor::rand([n, 1, 1, 1], (Kind::Float, batch.device())).lt(0.5);
    batch.flip([3i64]).where_self(&flip, batch)
}

/// MobileNetV2 backbone and a linear one-logit head trained together with AdamW.
///
/// Batch-norm layers keep their pretrained running statistics (they run in eval mode even while
/// training): the small, label-driven batches seen here would make batch statistics noisy.
pub struct FinetuneModel {
    vs: nn::VarStore,
    features: MobileNetV2Features,
    head: nn::Linear,
    optimizer: nn::Optimizer,
    input_size: u32,
    pos_weight: f32,
}

impl std::fmt::Debug for FinetuneModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinetuneModel")
            .field("device", &self.vs.device())
            .field("input_size", &self.input_size)
            .field("pos_weight", &self.pos_weight)
            .finish_non_exhaustive()
    }
}

impl FinetuneModel {
    /// Starts from the ImageNet backbone weights at `weights` and a fresh head.
    pub fn new(weights: &Path, input_size: u32, device: Device) -> Result<Self> {
        let mut model = Self::uninitialised(input_size, device);
        load_features_weights(&mut model.vs, weights)?;
        Ok(model)
    }

    /// A randomly initialised model (batch norm calibrated on noise), for tests and benchmarks.
    pub fn untrained(input_size: u32, device: Device) -> Self {
        let model = Self::uninitialised(input_size, device);
        model.features.calibrate_batch_norm(&calibration_noise(input_size, device));
        model
    }

    /// Layers with tch's default initialisation, to be overwritten by loaded weights.
    fn uninitialised(input_size: u32, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let features = MobileNetV2Features::new(&root);
        // A zero head starts at p = ½ for every image and, since the backbone's gradient flows
        // through the head's weights, leaves the pretrained features untouched until the head
        // has learned something: fine-tuning then starts stably instead of from random logits.
        let zero_head = nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true };
        let head = nn::linear(&root / "head", FEATURE_CHANNELS as i64, 1, zero_head);
        let optimizer =
            nn::AdamW { wd: WEIGHT_DECAY, ..Default::default() }.build(&vs, DEFAULT_LEARNING_RATE).expect("AdamW over a VarStore");
        Self { vs, features, head, optimizer, input_size, pos_weight: 1.0 }
    }

    /// Side of the square input images, in pixels.
    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Weight of positive examples in the loss (e.g. negatives / positives of the label set).
    pub fn set_pos_weight(&mut self, pos_weight: f32) {
        self.pos_weight = pos_weight;
    }

    /// Changes the AdamW learning rate (default 1e-4).
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.optimizer.set_lr(learning_rate);
    }

    fn logits(&self, images: &Tensor, train: bool) -> Tensor {
        // Batch norm stays in eval mode on purpose (see the type's docs); dropout follows `train`.
        self.features.pooled_t(&images.to_device(self.device()), false).dropout(HEAD_DROPOUT, train).apply(&self.head).squeeze_dim(-1)
    }

    /// One AdamW step on a batch of preprocessed images (N×3×S×S) with 0/1 labels (N), each
    /// image flipped horizontally with probability ½. Returns the batch loss.
    pub fn train_step(&mut self, batch: &Tensor, labels: &Tensor) -> f32 {
        let device = self.device();
        let batch = batch.to_device(device).to_kind(Kind::Float);
        let labels = labels.to_device(device).to_kind(Kind::Float).flatten(0, -1);
        let augmented = random_horizontal_flip(&batch);
        let pos_weight = Tensor::from_slice(&[self.pos_weight]).to_device(device);
        let loss =
            self.logits(&augmented, true).binary_cross_entropy_with_logits::<&Tensor>(&labels, None, Some(&pos_weight), Reduction::Mean);
        self.optimizer.backward_step(&loss);
        loss.double_value(&[]) as f32
    }

    /// All parameters and batch-norm statistics by name (`features.…` as in torchvision,
    /// `head.weight`, `head.bias`).
    pub fn variables(&self) -> std::collections::HashMap<String, Tensor> {
        self.vs.variables()
    }

    /// Probability of the positive class for each image of the batch (N, on the model's device).
    pub fn predict(&self, batch: &Tensor) -> Tensor {
        self.predict_logits(batch).sigmoid()
    }

    /// The logit of [`FinetuneModel::predict`], which still orders images whose probability
    /// rounds to exactly 0 or 1.
    pub fn predict_logits(&self, batch: &Tensor) -> Tensor {
        tch::no_grad(|| self.logits(&batch.to_kind(Kind::Float), false))
    }

    /// The backbone's embeddings (N×[`crate::EMBED_DIM`]) under the current fine-tuned weights.
    pub fn embed_batch(&self, batch: &Tensor) -> Tensor {
        tch::no_grad(|| self.features.embedding_t(&batch.to_device(self.device()).to_kind(Kind::Float), false))
    }

    /// Saves all weights and `meta` atomically; `meta` must describe this model (mode
    /// [`MODE_FINETUNE`], backbone [`BACKBONE_NAME`], this input size), else
    /// [`Error::MetaMismatch`].
    pub fn save(&self, path: &Path, meta: &ModelMeta) -> Result<()> {
        require_meta(
            path,
            &[
                ("mode", meta.mode.clone(), MODE_FINETUNE.to_owned()),
                ("backbone", meta.backbone.clone(), BACKBONE_NAME.to_owned()),
                ("input_size", meta.input_size.to_string(), self.input_size.to_string()),
            ],
        )?;
        let mut tensors: Vec<_> = self.vs.variables().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        write_checkpoint(path, &tensors, meta)
    }

    /// Loads a model saved by [`FinetuneModel::save`], refusing one trained for another backbone,
    /// input size or mode ([`Error::Checkpoint`]), and a backbone this crate does not implement.
    pub fn load(path: &Path, backbone: &str, input_size: u32, device: Device) -> Result<(FinetuneModel, ModelMeta)> {
        let (tensors, meta) = read_checkpoint(path, device)?;
        require(path, &meta, MODE_FINETUNE, Some((backbone, input_size)))?;
        if backbone != BACKBONE_NAME {
            return Err(Error::UnsupportedBackbone(backbone.to_owned()));
        }
        let model = Self::uninitialised(input_size, device);
        fill_var_store(&model.vs, &tensors, path)?;
        Ok((model, meta))
    }
}
