//! The inferrer's output: a probability for each unlabelled image, tagged with the checkpoint
//! that produced it; one file per inferrer shard ([`files`]), read together with [`merge`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::RunDirFile;
use crate::codec::{self, FileKind};

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

impl codec::RunDirFile for Predictions {
    const KIND: FileKind = FileKind::Predictions;
}

/// True for the file name of a shard's predictions: `predictions.bin` or `predictions-K-of-N.bin`
/// (see [`crate::rundir::RunDir::predictions`]).
pub fn is_predictions_name(name: &str) -> bool {
    name.starts_with("predictions") && name.ends_with(".bin")
}

/// The prediction files of every shard in `rundir` (`predictions.bin`, `predictions-K-of-N.bin`).
pub fn files(rundir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(rundir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_predictions_name))
        .collect();
    files.sort();
    files
}

/// Merged predictions of all shards: ids, probabilities, and the newest model among them.
#[derive(Debug, Default)]
pub struct Merged {
    /// Image ids.
    pub ids: Vec<u32>,
    /// Their probabilities.
    pub probs: Vec<f32>,
    /// The newest model that contributed.
    pub model: Option<ModelInfo>,
    /// Files that could not be read, with the reason (kept out; their last good content is lost
    /// to this round only).
    pub problems: Vec<String>,
}

/// Reads and merges every shard's predictions. An id predicted by two shards keeps the newer.
pub fn merge(files: &[PathBuf]) -> Merged {
    let mut merged = Merged::default();
    let mut parts: Vec<Predictions> = Vec::new();
    for f in files {
        match Predictions::load(f) {
            Ok((_, p)) => parts.push(p),
            Err(e) => merged.problems.push(e.to_string()),
        }
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.model.checkpoint_generation));
    let mut seen = std::collections::HashSet::new();
    for p in parts {
        if merged.model.is_none() {
            merged.model = Some(p.model.clone());
        }
        for (id, prob) in p.ids.iter().zip(&p.probs) {
            if seen.insert(*id) {
                merged.ids.push(*id);
                merged.probs.push(*prob);
            }
        }
    }
    merged
}
