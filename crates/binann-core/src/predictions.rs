//! The inferrer's output: a probability for each unlabelled image, tagged with the checkpoint
//! that produced it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec::{self, FileError, FileKind};

/// What a checkpoint is, as far as the other processes and the page need to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The checkpoint's generation (the trainer increments it on every save).
    pub checkpoint_generation: u64,
    /// When the checkpoint was written (ms since the epoch).
    pub checkpoint_ms: u64,
    /// Human labels (positive + negative) it was trained on.
    pub labels_used: u64,
    /// Of which positive.
    pub positives_used: u64,
    /// "head" (frozen backbone) or "finetune".
    pub mode: String,
    /// Backbone name, e.g. "mobilenet_v2".
    pub backbone: String,
    /// Input size in pixels.
    pub input_size: u32,
    /// Training loss at save time.
    pub loss: f32,
}

/// Probabilities for (a shard of) the unlabelled images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    /// The model that produced them.
    pub model: ModelInfo,
    /// This file's shard number (0-based) and the number of shards.
    pub shard: (u32, u32),
    /// Image ids.
    pub ids: Vec<u32>,
    /// Probability that each image in `ids` is positive.
    pub probs: Vec<f32>,
    /// Images of this shard that could not be read (corrupt), with the reason.
    pub failed: Vec<(u32, String)>,
    /// When the predictions were finished (ms since the epoch).
    pub created_ms: u64,
}

impl Predictions {
    /// Loads a predictions file.
    pub fn load(path: &Path) -> Result<(u64, Self), FileError> {
        codec::read_file(path, FileKind::Predictions).map(|(h, p)| (h.generation, p))
    }
    /// Atomically writes a predictions file.
    pub fn save(&self, path: &Path, generation: u64) -> Result<(), FileError> {
        codec::write_file(path, FileKind::Predictions, generation, self)
    }
}
